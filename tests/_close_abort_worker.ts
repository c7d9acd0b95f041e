// For faults.test.ts: in a Worker, reads 32 blocks of a slow export into plain Uint8Arrays,
// aborts them all, closes the BlockDevice, then reports whether any buffer changed afterwards.
import { BlockDevice } from "../mod.ts";

const scope = globalThis as unknown as {
  onmessage: ((e: MessageEvent<{ path: string }>) => void) | null;
  postMessage(message: unknown): void;
};
const BLOCK = 4096;
const COUNT = 32;
const STRIDE = 256 * 1024;

scope.onmessage = async ({ data: { path } }) => {
  const dev = await BlockDevice.open(path);
  const ac = new AbortController();
  const bufs = Array.from({ length: COUNT }, () => new Uint8Array(BLOCK));
  const ps = bufs.map((b, i) => dev.read(i * STRIDE, b, { signal: ac.signal }).catch(() => {}));
  await new Promise((r) => setTimeout(r, 50));
  ac.abort();
  await Promise.all(ps);
  const t0 = performance.now();
  await dev.close();
  const closeMs = performance.now() - t0;
  const snap = bufs.map((b) => b.slice());
  await new Promise((r) => setTimeout(r, 8000));
  const changed = bufs.filter((b, i) => b.some((x, k) => x !== snap[i][k])).length;
  scope.postMessage({ closeMs, changed });
};
