// Child of block_device.test.ts, run with a low RLIMIT_NOFILE: every wait of a BlockDevice's
// queue fails at once (the fd table full: Deno cannot make its relay, Bun its eventfd reader),
// and the device looks for completions by itself. Requests made in a continuation and aborted
// from a microtask queued right after the call must still reject with the abort's reason.
// Prints one JSON line. usage: _wait_fails_microtask.ts <path of an O_DIRECT-capable file>
import { BlockDevice } from "../mod.ts";
import { closeSync } from "node:fs";
import process from "node:process";
import { fillFdTable } from "./_child.ts";

const path = process.argv.at(-1)!;
const dev = await BlockDevice.open(path, { direct: true });
const blocks = Math.min(256, Number(dev.capacity) / 4096);
const into = dev.allocBuffer(4096);
const bufs = Array.from({ length: 8 }, () => dev.allocBuffer(4096));
const held = fillFdTable();
const reason = new Error("stop");
let probes = 0;
const wrong: string[] = [];
const until = performance.now() + 1500;
const probe = async (hops: number): Promise<void> => {
  for (let i = 0; i < hops; i++) await null;
  const ac = new AbortController();
  const n = probes++;
  const at = (n % blocks) * 4096 + (n % 2 === 1 ? 512 + 100 : 0); // odd ones misaligned: EINVAL
  const p = dev.read(at, into, { signal: ac.signal }).then(
    () => "resolved",
    (e) => e === reason ? null : `rejected with ${e}`,
  );
  queueMicrotask(() => ac.abort(reason));
  const what = await p;
  if (what !== null) wrong.push(`read at ${at} ${what}`);
};
const loader = async (i: number): Promise<void> => {
  const probing: Promise<void>[] = [];
  for (let k = 0; performance.now() < until; k++) {
    await dev.read(((i * 37 + k) % blocks) * 4096, bufs[i]);
    probing.push(probe(k % 4));
  }
  await Promise.all(probing);
};
await Promise.all(bufs.map((_, i) => loader(i)));
held.forEach((fd) => closeSync(fd));
await dev.close();
console.log(JSON.stringify({ held: held.length, probes, wrong: wrong.length, first: wrong.slice(0, 3) }));
