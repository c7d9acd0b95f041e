// Worker side of faults.test.ts: reads 32 stamped blocks of a slow export into either plain
// Uint8Arrays (the Worker's heap) or a memory region, destroys the instance with the reads
// still in the kernel, and reports how long destroy() took and which buffers hold their block.
import { Blkio } from "../mod.ts";

const scope = globalThis as unknown as {
  onmessage: ((e: MessageEvent<{ path: string; memory: "plain" | "region" }>) => void) | null;
  postMessage(message: unknown): void;
};
const BLOCK = 4096;
const COUNT = 32;
const STRIDE = 256 * 1024;

scope.onmessage = ({ data: { path, memory } }) => {
  const b = Blkio.create("io_uring");
  b.setStr("path", path);
  b.setBool("direct", true);
  b.connect();
  b.start();
  const q = b.getQueue(0)!;
  const region = memory === "region" ? b.allocMemRegion(COUNT * BLOCK) : null;
  const bufs = Array.from(
    { length: COUNT },
    (_, i) => region?.bytes.subarray(i * BLOCK, (i + 1) * BLOCK) ?? new Uint8Array(BLOCK),
  );
  for (let i = 0; i < COUNT; i++) q.read(i * STRIDE, bufs[i], i);
  q.doIo([], 0, 0); // hand them to the kernel, reap nothing
  const t0 = performance.now();
  b.destroy();
  const destroyMs = performance.now() - t0;
  // Block i's first word is its block number (stampedImage in faults.test.ts). A region's
  // memory is no longer reachable after destroy (its ArrayBuffer is detached).
  const landed = region !== null
    ? null
    : bufs.filter((buf, i) =>
      new DataView(buf.buffer, buf.byteOffset).getUint32(0, true) === i * STRIDE / BLOCK
    )
      .length;
  scope.postMessage({ destroyMs, landed });
};
