/**
 * Bun only: `Bun.file(path).slice(off, off + bs).arrayBuffer()` with `depth` concurrent promises
 * (reads only). Each read allocates its result; Bun reads into memory it allocates itself, so
 * O_DIRECT is impossible (a `Bun.file(fd)` over an O_DIRECT fd fails with EINVAL): the reads are
 * buffered, through the page cache of the file or block device.
 *
 * @module
 */
import { Histogram, lanes, measure, readJob } from "./_runner.mjs";

const job = readJob();
if (!("Bun" in globalThis)) throw new Error("Bun.file needs Bun");
// deno-lint-ignore no-undef
const file = Bun.file(job.path);
const hist = new Histogram();
const bs = job.bs;
const slots = Array.from({ length: job.depth }, () => new Uint8Array(0));
await measure(
  job,
  hist,
  lanes(job, hist, slots, async (_buf, off) => {
    const ab = await file.slice(off, off + bs).arrayBuffer();
    if (ab.byteLength !== bs) throw new Error(`Short read: ${ab.byteLength} of ${bs} bytes at ${off}`);
  }),
  job.direct ? "buffered: O_DIRECT impossible" : "",
);
