// Child of faults.test.ts: waits on a slow device (a throttled FUSE export, 4 IOPS) while another
// process sends this one SIGWINCH, 300 ms into each wait. Two doIoInterruptible waits for all 16
// reads (the first submits them in the same call, the second starts with some back), then doIo
// for all of them. Prints one JSON line of what it saw.
// usage: _signal_wait.ts <path> <sqpoll: true|false>
import { BlkioError, type Completion } from "../mod.ts";
import { spawn } from "node:child_process";
import process from "node:process";
import { openInstance } from "./_child.ts";

const [path, sqpoll] = process.argv.slice(-2);
const MiB = 1 << 20;
const COUNT = 16;

// SIGWINCH: its default action is to ignore it, so a late one cannot end the process. The
// listener makes the runtime catch it, and a caught signal interrupts a blocking system call.
let handled = 0;
process.on("SIGWINCH", () => handled++);

/** Sends this process SIGWINCH from another one after `ms` (this thread is blocked meanwhile). */
function signalIn(ms: number) {
  return spawn("sh", ["-c", `sleep ${ms / 1000}; kill -WINCH ${process.pid}`], { stdio: "ignore" });
}

const b = openInstance(path, { direct: true, sqpoll: sqpoll === "true" });
const q = b.getQueue(0)!;
const bufs: Uint8Array[] = [];
for (let i = 0; i < COUNT; i++) {
  bufs.push(b.allocMemRegion(4096).bytes);
  q.read(i * MiB / 2, bufs[i], i); // 512 KiB apart: the image is 8 MiB
}
const out: Completion[] = [];
const senders = [];
const interruptible: { code: string; ms: number }[] = [];
for (let round = 0; round < 2; round++) {
  senders.push(signalIn(300));
  const t0 = performance.now();
  let code = "none";
  try {
    code = `returned ${q.doIoInterruptible(out, COUNT, COUNT, 20_000_000_000n)}`;
  } catch (e) {
    code = e instanceof BlkioError ? e.code : String(e);
  }
  interruptible.push({ code, ms: Math.round(performance.now() - t0) });
}

// doIo waits on through a signal; every read completes once, with its block's data (each 4 KiB
// block of the image starts with its index, little-endian).
senders.push(signalIn(300));
const failed: number[] = [], wrongData: number[] = [];
let completed = 0;
while (completed < COUNT && interruptible.every((r) => r.code === "EINTR")) {
  const n = q.doIo(out, 1, COUNT - completed, 20_000_000_000n);
  for (let i = 0; i < n; i++) {
    const id = out[i].userData as number;
    if (out[i].ret !== 0) failed.push(id);
    else if (new DataView(bufs[id].buffer, bufs[id].byteOffset).getUint32(0, true) !== id * MiB / 2 / 4096) {
      wrongData.push(id);
    }
  }
  completed += n;
}
const leftOver = q.doIo([], 0);
for (const c of senders) if (c.exitCode === null) c.kill("SIGKILL");
b.destroy();
// Let the runtime run the listener (Deno may merge signals that arrived while it was blocked).
for (let i = 0; i < 100 && handled === 0; i++) await new Promise((r) => setTimeout(r, 10));
console.log(JSON.stringify({ interruptible, doIo: { completed, failed, wrongData, leftOver }, handled }));
process.exit(0);
