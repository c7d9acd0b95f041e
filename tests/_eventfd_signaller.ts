// Worker side of eventfd_relay.test.ts's starvation test: signals an eventfd of the main
// thread as fast as a device completing I/O would (every ~5 µs) until told to stop.
import { native } from "../ffi/load.ts";
import { signalEventfd } from "../src/sys.ts";

const scope = globalThis as unknown as {
  onmessage: ((e: MessageEvent<{ fd: number; stop: SharedArrayBuffer }>) => void) | null;
  postMessage(message: unknown): void;
};

scope.onmessage = (e) => {
  const fd = e.data.fd;
  const stop = new Int32Array(e.data.stop);
  signalEventfd(native!, fd);
  scope.postMessage("started");
  let signals = 1;
  while (Atomics.load(stop, 0) === 0) {
    signalEventfd(native!, fd);
    signals++;
    const pause = performance.now() + 0.005;
    while (performance.now() < pause);
  }
  scope.postMessage(signals);
};
// Messages posted to a Bun worker before its module has run can be lost: the test waits for this.
scope.postMessage("ready");
