// Child of fd.test.ts, run with a low RLIMIT_NOFILE: start() with more queues than the fd table
// has room for, so that a ring past the first few fails with EMFILE. The queues made before it
// must be closed. Prints one JSON line: the error, the fds left open that start() made, and
// whether start() then works with the fds given back, and a flush on its first queue after.
// usage: _start_emfile.ts [driver] <path> (io_uring, 16 queues; another driver: 4 queues)
import { closeSync, readdirSync } from "node:fs";
import process from "node:process";
import type { Completion } from "../mod.ts";
import { failure, fillFdTable, openInstance } from "./_child.ts";

const openFds = () => new Set(readdirSync("/proc/self/fd").map(Number));
const driver = process.argv.length > 3 ? process.argv.at(-2)! : "io_uring";
const b = openInstance(process.argv.at(-1)!, {
  driver,
  numQueues: driver === "io_uring" ? 16 : 4,
  start: false,
});
const held = fillFdTable();
for (let i = 0; i < 4; i++) closeSync(held.pop()!); // room for a few queues' fds, not all
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
let flush: number | string = "not started";
try {
  b.start();
  retried = `started with ${b.getInt("num-queues")} queues`;
  const q = b.getQueue(0)!, out: Completion[] = [];
  q.flush("flush");
  flush = q.doIo(out, 1, 1, 10_000_000_000n) === 1 ? out[0].ret : "no completion";
} catch (e) {
  retried = failure(e).code;
}
b.destroy();
console.log(JSON.stringify({ held: held.length, code, left, retried, flush }));
