// Child of errors.test.ts, run with a low RLIMIT_NOFILE: connect() when opening the target takes
// the last free fd, so the next file the library opens (sysfs, a probe ring) fails with EMFILE.
// Prints one JSON line: what connect did. usage: _connect_emfile.ts <path> <direct: true|false>
import { Blkio } from "../mod.ts";
import { closeSync } from "node:fs";
import process from "node:process";
import { failure, fillFdTable } from "./_child.ts";

const [path, direct] = process.argv.slice(-2);
const b = Blkio.create("io_uring");
b.setStr("path", path);
b.setBool("direct", direct === "true");
const held = fillFdTable();
closeSync(held.pop()!); // one left: for the target
let result: Record<string, unknown>;
try {
  b.connect();
  result = { connected: true, requestAlignment: b.getInt("request-alignment") };
} catch (e) {
  result = failure(e);
}
for (const fd of held) closeSync(fd);
b.destroy();
console.log(JSON.stringify({ held: held.length, ...result }));
