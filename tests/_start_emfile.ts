// Child of fd.test.ts, run with a low RLIMIT_NOFILE: start() with more queues than the fd table
// has room for, so that a ring past the first few fails with EMFILE. The queues made before it
// must be closed. Prints one JSON line: the error, the fds left open that start() made, and
// whether start() then works with the fds given back. usage: _start_emfile.ts <path>
import { closeSync, readdirSync } from "node:fs";
import process from "node:process";
import { failure, fillFdTable, openInstance } from "./_child.ts";

const openFds = () => new Set(readdirSync("/proc/self/fd").map(Number));
const b = openInstance(process.argv.at(-1)!, { numQueues: 16, start: false });
const held = fillFdTable();
for (let i = 0; i < 4; i++) closeSync(held.pop()!); // room for a few rings, not 16
const before = openFds();
let code = "started";
try {
  b.start();
} catch (e) {
  code = failure(e).code;
}
for (const fd of held) closeSync(fd);
// Listed with the fds given back (the listing needs one); those start() left were free before.
const left = [...openFds()].filter((fd) => !before.has(fd));
let retried: string;
try {
  b.start();
  retried = `started with ${b.getInt("num-queues")} queues`;
} catch (e) {
  retried = failure(e).code;
}
b.destroy();
console.log(JSON.stringify({ held: held.length, code, left, retried }));
