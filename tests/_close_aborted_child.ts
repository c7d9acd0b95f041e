// Child of block_device_rare_paths.test.ts: closes a device whose aborted reads a throttled back-end
// still has, then must exit by itself. Prints what happened as JSON.
import { BlockDevice } from "../mod.ts";
import process from "node:process";
import { native } from "../ffi/load.ts";

const [socket, driver, wait] = process.argv.slice(2);
// The adapter's own eventfd wait, as where the relay cannot be made (Linux < 5.6).
if (wait === "adapter") (native as { eventfdWaitUsesThread: boolean }).eventfdWaitUsesThread = false;
const t0 = performance.now();
const dev = await BlockDevice.open(socket, { driver });
console.log(JSON.stringify({ opened: true }));
const bufs = Array.from({ length: 16 }, () => dev.allocBuffer(4096));
const ac = new AbortController();
const reads = bufs.map((b, i) => dev.read(i * 4096, b, { signal: ac.signal }));
await new Promise((r) => setTimeout(r, 50));
ac.abort();
const settled = await Promise.allSettled(reads);
await dev.close();
console.log(JSON.stringify({
  closedMs: Math.round(performance.now() - t0),
  rejected: settled.filter((r) => r.status === "rejected").length,
}));
