/**
 * node:fs/promises `FileHandle.read` / `FileHandle.write` with `depth` concurrent promises on one
 * handle (the thread pool of the runtime does the I/O). O_DIRECT works in Node, Deno and Bun:
 * the handle is opened with numeric flags.
 *
 * @module
 */
import fsp from "node:fs/promises";
import { buffers, Histogram, isWrite, lanes, measure, openFlags, readJob } from "./_runner.mjs";

const job = readJob();
const fh = await fsp.open(job.path, openFlags(job));
const bufs = buffers(fh.fd, job, job.depth);
const hist = new Histogram();
const write = isWrite(job);
const bs = job.bs;
await measure(
  job,
  hist,
  lanes(job, hist, bufs, async (buf, off) => {
    const r = write ? await fh.write(buf, 0, bs, off) : await fh.read(buf, 0, bs, off);
    const n = write ? r.bytesWritten : r.bytesRead;
    if (n !== bs) throw new Error(`Short transfer: ${n} of ${bs} bytes at ${off}`);
  }),
);
await fh.close();
