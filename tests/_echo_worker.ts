// Worker of block_device_workers.test.ts: imports the library, then answers every message. It
// posts nothing first: a message sent before the library loaded must still reach it.
import { DRIVER_NAMES } from "../mod.ts";

const scope = globalThis as unknown as {
  onmessage: ((e: MessageEvent<number>) => void) | null;
  postMessage(message: unknown): void;
};
scope.onmessage = (e) => scope.postMessage({ echo: e.data, drivers: DRIVER_NAMES.length });
