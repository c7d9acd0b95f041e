// Child of errors.test.ts, run without CAP_IPC_LOCK under a low RLIMIT_MEMLOCK, where the kernel
// charges ring memory to that limit: started instances of one-entry rings fill the limit, then
// connect() with O_DIRECT to a file whose IOPOLL support must be probed (tmpfs: no block device's
// sysfs to ask). The probe's ring is as small as theirs and cannot be had: connect must fail with
// that shortage, not decide the file cannot poll. Prints one JSON line.
// usage: _connect_shortage.ts <path>
import { Blkio, BlkioError } from "../mod.ts";
import process from "node:process";

const path = process.argv.at(-1)!;
const held: Blkio[] = [];
let filled = "";
for (let i = 0; i < 1000 && filled === ""; i++) {
  const b = Blkio.create("io_uring");
  try {
    b.setStr("path", path);
    b.connect();
    b.setInt("num-entries", 1);
    b.start();
    held.push(b);
  } catch (e) {
    filled = e instanceof BlkioError ? e.code : String(e);
    b.destroy();
  }
}
const probe = Blkio.create("io_uring");
probe.setStr("path", path);
probe.setBool("direct", true);
let code = "connected", message = "";
try {
  probe.connect();
} catch (e) {
  code = e instanceof BlkioError ? e.code : String(e);
  message = (e as Error).message;
}
probe.destroy();
for (const b of held) b.destroy();
console.log(JSON.stringify({ held: held.length, filled, code, message }));
