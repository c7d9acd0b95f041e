// Child of errors.test.ts, run as root without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, so that
// file modes apply: connects to each path read-write and prints one JSON line, path → error.
// usage: _open_child.ts <path>...
import { BlkioError } from "../mod.ts";
import process from "node:process";
import { openInstance } from "./_child.ts";

const paths = process.argv.slice(process.argv.indexOf("--") + 1);
const got: Record<string, string> = {};
for (const path of paths) {
  try {
    openInstance(path, { start: false }).destroy();
    got[path] = "connected";
  } catch (e) {
    got[path] = e instanceof BlkioError ? `${e.code}: ${e.message}` : String(e);
  }
}
console.log(JSON.stringify(got));
