// Worker side of block_device_workers.test.ts: opens its own BlockDevice on the path it is
// given (its own instance, fd and io_uring queue) and writes or verifies ranges on request.
import { BlockDevice } from "../mod.ts";

interface Request {
  cmd: "open" | "write" | "verify" | "close";
  path?: string;
  offset?: number;
  len?: number;
  seed?: number;
}

const CHUNK = 64 * 1024;
const scope = globalThis as unknown as {
  onmessage: ((e: MessageEvent<Request>) => void) | null;
  postMessage(message: unknown): void;
};
let dev: BlockDevice | null = null;

/** Byte j of the range written with `seed`. */
function byteAt(seed: number, j: number): number {
  return (j * 7 + seed * 101 + (j >> 12)) & 0xff;
}

async function handle(m: Request): Promise<unknown> {
  switch (m.cmd) {
    case "open":
      dev = await BlockDevice.open(m.path!, { direct: true });
      return { ok: true };
    case "write": {
      const d = dev!;
      const writes = [];
      for (let o = 0; o < m.len!; o += CHUNK) {
        const buf = d.allocBuffer(CHUNK);
        for (let j = 0; j < CHUNK; j++) buf[j] = byteAt(m.seed!, o + j);
        writes.push(d.write(m.offset! + o, buf));
      }
      await Promise.all(writes);
      return { ok: true };
    }
    case "verify": {
      const d = dev!;
      let mismatches = 0;
      const reads = [];
      for (let o = 0; o < m.len!; o += CHUNK) {
        const buf = d.allocBuffer(CHUNK);
        reads.push(
          d.read(m.offset! + o, buf).then(() => {
            for (let j = 0; j < CHUNK; j++) if (buf[j] !== byteAt(m.seed!, o + j)) mismatches++;
          }),
        );
      }
      await Promise.all(reads);
      return { ok: true, mismatches };
    }
    case "close":
      await dev?.close();
      dev = null;
      return { ok: true };
  }
}

// Messages that arrive while the module (and its top-level await) is still loading can be lost
// in Bun, so the main thread waits for this "ready" before it sends anything.
scope.onmessage = (e) => {
  handle(e.data).then(
    (reply) => scope.postMessage(reply),
    (err) => scope.postMessage({ ok: false, error: String(err?.stack ?? err) }),
  );
};
scope.postMessage({ ok: true, ready: true });
