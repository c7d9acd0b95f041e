/**
 * Worker side of `workers.ts`: one thread, one BlockDevice (its own instance, file descriptor
 * and io_uring queue) on the shared path. It answers the main thread's requests one at a time;
 * see `workers.ts` for the protocol.
 *
 * @module
 */
import { BlockDevice } from "../mod.ts";

/** A request from the main thread. */
export type WorkerRequest =
  | { cmd: "open"; path: string; direct: boolean }
  | { cmd: "fill" | "check"; offset: number; len: number; seed: number }
  | { cmd: "randread"; seconds: number; depth: number }
  | { cmd: "close" };

/** The reply to one request. */
export interface WorkerReply {
  ok: boolean;
  error?: string;
  mismatches?: number;
  reads?: number;
  seconds?: number;
  /** The device's size in bytes ("open"). */
  capacity?: number;
}

const BS = 4096;
const scope = globalThis as unknown as {
  onmessage: ((e: MessageEvent<WorkerRequest>) => void) | null;
  postMessage(message: unknown): void;
};
let dev: BlockDevice | null = null;

/** Byte `j` of a range filled with `seed`. */
export function patternByte(seed: number, j: number): number {
  return (j * 7 + seed * 101 + (j >> 12)) & 0xff;
}

function device(): BlockDevice {
  if (dev === null) throw new Error("The device is not open");
  return dev;
}

async function handle(m: WorkerRequest): Promise<WorkerReply> {
  switch (m.cmd) {
    case "open":
      dev = await BlockDevice.open(m.path, { direct: m.direct });
      return { ok: true, capacity: Number(dev.capacity) };
    case "fill": {
      const d = device();
      const writes: Promise<void>[] = [];
      for (let o = 0; o < m.len; o += BS) {
        const buf = d.allocBuffer(BS);
        for (let j = 0; j < BS; j++) buf[j] = patternByte(m.seed, o + j);
        writes.push(d.write(m.offset + o, buf));
      }
      await Promise.all(writes);
      return { ok: true };
    }
    case "check": {
      const d = device();
      const buf = d.allocBuffer(m.len);
      await d.read(m.offset, buf);
      let mismatches = 0;
      for (let j = 0; j < m.len; j++) if (buf[j] !== patternByte(m.seed, j)) mismatches++;
      return { ok: true, mismatches };
    }
    case "randread": {
      const d = device();
      const blocks = Number(d.capacity / BigInt(BS));
      const bufs = Array.from({ length: m.depth }, () => d.allocBuffer(BS));
      let reads = 0;
      const start = performance.now();
      const end = start + m.seconds * 1000;
      await Promise.all(bufs.map(async (buf) => {
        while (performance.now() < end) {
          await d.read(Math.floor(Math.random() * blocks) * BS, buf);
          reads++;
        }
      }));
      return { ok: true, reads, seconds: (performance.now() - start) / 1000 };
    }
    case "close":
      await dev?.close();
      dev = null;
      return { ok: true };
  }
}

scope.onmessage = (e) => {
  handle(e.data).then(
    (reply) => scope.postMessage(reply),
    (err) => scope.postMessage({ ok: false, error: String(err?.message ?? err) }),
  );
};
// Bun loses messages sent to a Worker while a module of it is still loading asynchronously (a
// top-level await; the library itself loads synchronously): say when it listens.
scope.postMessage({ ok: true });
