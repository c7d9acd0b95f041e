// Child of fd.test.ts, run with a low RLIMIT_NOFILE: start() with more queues than the fd table
// has room for, so that a ring past the first few fails with EMFILE. The queues made before it
// must be closed. Prints one JSON line: the error, the fds left open that start() made, and
// whether start() then works with the fds given back. usage: _start_emfile.ts <path>
import { Blkio, BlkioError } from "../mod.ts";
import { closeSync, openSync, readdirSync } from "node:fs";
import process from "node:process";

const openFds = () => new Set(readdirSync("/proc/self/fd").map(Number));
const b = Blkio.create("io_uring");
b.setStr("path", process.argv.at(-1)!);
b.connect();
b.setInt("num-queues", 16);
const held: number[] = [];
try {
  for (;;) held.push(openSync("/dev/null", "r"));
} catch {
  // the table is full
}
for (let i = 0; i < 4; i++) closeSync(held.pop()!); // room for a few rings, not 16
const before = openFds();
let code = "started";
try {
  b.start();
} catch (e) {
  code = e instanceof BlkioError ? e.code : String(e);
}
for (const fd of held) closeSync(fd);
// Listed with the fds given back (the listing needs one); those start() left were free before.
const left = [...openFds()].filter((fd) => !before.has(fd));
let retried: string;
try {
  b.start();
  retried = `started with ${b.getInt("num-queues")} queues`;
} catch (e) {
  retried = e instanceof BlkioError ? e.code : String(e);
}
b.destroy();
console.log(JSON.stringify({ held: held.length, code, left, retried }));
