// Child of errors.test.ts, run with a low RLIMIT_NOFILE: connect() when opening the target takes
// the last free fd, so the next file the library opens (sysfs, a probe ring) fails with EMFILE.
// Prints one JSON line: what connect did. usage: _connect_emfile.ts <path> <direct: true|false>
import { Blkio, BlkioError } from "../mod.ts";
import { closeSync, openSync } from "node:fs";
import process from "node:process";

const [path, direct] = process.argv.slice(-2);
const b = Blkio.create("io_uring");
b.setStr("path", path);
b.setBool("direct", direct === "true");
const held: number[] = [];
try {
  for (;;) held.push(openSync("/dev/null", "r"));
} catch {
  // the table is full
}
closeSync(held.pop()!); // one left: for the target
let result: Record<string, unknown>;
try {
  b.connect();
  result = { connected: true, requestAlignment: b.getInt("request-alignment") };
} catch (e) {
  result = { code: e instanceof BlkioError ? e.code : String(e), message: (e as Error).message };
}
for (const fd of held) closeSync(fd);
b.destroy();
console.log(JSON.stringify({ held: held.length, ...result }));
