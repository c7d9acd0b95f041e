/**
 * The synchronous `fs.readSync` / `fs.writeSync` (pread/pwrite on the JS thread, one request at
 * a time whatever the iodepth), for context: they block the event loop.
 *
 * @module
 */
import fs from "node:fs";
import { buffers, Histogram, isWrite, measure, offsets, openFlags, readJob } from "./_runner.mjs";

const job = readJob();
const fd = fs.openSync(job.path, openFlags(job));
const [buf] = buffers(fd, job, 1);
const hist = new Histogram();
const write = isWrite(job);
const bs = job.bs;
const next = offsets(job);
await measure(job, hist, (deadline) => {
  let done = 0;
  for (;;) {
    const t = performance.now();
    if (t >= deadline) return done;
    const off = next();
    const n = write ? fs.writeSync(fd, buf, 0, bs, off) : fs.readSync(fd, buf, 0, bs, off);
    if (n !== bs) throw new Error(`Short transfer: ${n} of ${bs} bytes at ${off}`);
    const ms = performance.now() - t;
    hist.add(ms);
    hist.inCallMs += ms; // all of it: the call returns when the I/O is done
    done++;
  }
}, "synchronous: blocks the event loop; iodepth 1");
fs.closeSync(fd);
