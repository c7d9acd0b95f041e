/**
 * Deno only: `Deno.FsFile` seek + read, reads only. An FsFile has one file position, so
 * concurrency comes from `depth` handles, one per lane. `Deno.open` has no way to ask for
 * O_DIRECT (and an FsFile cannot be made from an fd opened elsewhere), so the reads are
 * buffered, through the page cache of the file or block device.
 *
 * @module
 */
import { Histogram, lanes, measure, readJob } from "./_runner.mjs";

const job = readJob();
if (!("Deno" in globalThis)) throw new Error("Deno.FsFile needs Deno");
const files = [];
for (let i = 0; i < job.depth; i++) files.push(await Deno.open(job.path, { read: true }));
const bufs = files.map(() => new Uint8Array(new ArrayBuffer(job.bs)));
const hist = new Histogram();
const bs = job.bs;
await measure(
  job,
  hist,
  lanes(job, hist, bufs, async (buf, off, lane) => {
    const f = files[lane];
    await f.seek(off, Deno.SeekMode.Start);
    let got = 0;
    while (got < bs) {
      const n = await f.read(got === 0 ? buf : buf.subarray(got));
      if (n === null || n === 0) throw new Error(`Short read: ${got} of ${bs} bytes at ${off}`);
      got += n;
    }
  }),
  job.direct ? "buffered: O_DIRECT impossible" : "",
);
for (const f of files) f.close();
