// Child of errors.test.ts, run without CAP_IPC_LOCK under a low RLIMIT_MEMLOCK, where the kernel
// charges ring memory to that limit: started instances of one-entry rings fill the limit, then
// connect() with O_DIRECT to a file whose IOPOLL support must be probed (tmpfs: no block device's
// sysfs to ask). The probe's ring is as small as theirs and cannot be had: connect must fail with
// that shortage, not decide the file cannot poll. Prints one JSON line.
// usage: _connect_shortage.ts <path>
import type { Blkio } from "../mod.ts";
import process from "node:process";
import { failure, openInstance } from "./_child.ts";

const path = process.argv.at(-1)!;
const held: Blkio[] = [];
let filled = "";
for (let i = 0; i < 1000 && filled === ""; i++) {
  try {
    held.push(openInstance(path, { numEntries: 1 }));
  } catch (e) {
    filled = failure(e).code;
  }
}
let code = "connected", message = "";
try {
  openInstance(path, { direct: true, start: false }).destroy();
} catch (e) {
  ({ code, message } = failure(e));
}
for (const b of held) b.destroy();
console.log(JSON.stringify({ held: held.length, filled, code, message }));
