// Child of errors.test.ts, run as root without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, so that
// file modes apply: connects to each path read-write and prints one JSON line, path → error.
// usage: _open_child.ts <path>...
import { Blkio, BlkioError } from "../mod.ts";
import process from "node:process";

const paths = process.argv.slice(process.argv.indexOf("--") + 1);
const got: Record<string, string> = {};
for (const path of paths) {
  using b = Blkio.create("io_uring");
  b.setStr("path", path);
  try {
    b.connect();
    got[path] = "connected";
  } catch (e) {
    got[path] = e instanceof BlkioError ? `${e.code}: ${e.message}` : String(e);
  }
}
console.log(JSON.stringify(got));
