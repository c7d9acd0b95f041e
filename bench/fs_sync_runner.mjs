/**
 * The synchronous `fs.readSync` / `fs.writeSync` (pread/pwrite on the JS thread, one request at
 * a time whatever the iodepth), for context: they block the event loop.
 *
 * @module
 */
import fs from "node:fs";
import {
  buffers,
  Histogram,
  isWrite,
  measure,
  offsets,
  openFlags,
  readJob,
  sampleEvery,
} from "./_runner.mjs";

const job = readJob();
const fd = fs.openSync(job.path, openFlags(job));
const [buf] = buffers(fd, job, 1);
const hist = new Histogram();
const write = isWrite(job);
const bs = job.bs;
const next = offsets(job);
const every = sampleEvery(job);
const io = () => {
  const off = next();
  const n = write ? fs.writeSync(fd, buf, 0, bs, off) : fs.readSync(fd, buf, 0, bs, off);
  if (n !== bs) throw new Error(`Short transfer: ${n} of ${bs} bytes at ${off}`);
};
await measure(job, hist, (deadline) => {
  let done = 0;
  for (let k = 0;; k++) {
    if (k % every !== 0) {
      io();
      done++;
      continue;
    }
    // Timed, as one request in `every` of blkio_bench's; the deadline is checked on these.
    const t = performance.now();
    if (t >= deadline) return done;
    io();
    const ms = performance.now() - t;
    hist.add(ms);
    hist.inCallMs += ms; // all of it: the call returns when the I/O is done
    done++;
  }
}, "synchronous: blocks the event loop; iodepth 1");
fs.closeSync(fd);
