// Child of cancel.test.ts: moves itself into the pids cgroup <cgroup> (made by the test, root
// only) and caps it at the threads it has, so that io_uring cannot start a worker thread (io-wq)
// for the requests it hands to one: buffered writes to ext4 that cannot go at once, flushes,
// write zeroes. Prints one JSON line; goes back to its own cgroup before.
// usage: _no_worker_child.ts <path> <cgroup dir> <mode>
// - held: the cap stays while requests go through a Queue and a BlockDevice, then is lifted and
//   the queue used again;
// - passing-queue: a shell started before the cap lifts it 150 ms after the requests went (doIo);
// - passing-device: a timer lifts it 150 ms after BlockDevice requests went.
import { BlockDevice, type Completion } from "../mod.ts";
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import process from "node:process";
import { failure, homeCgroup, openInstance } from "./_child.ts";

const [path, cgroup, mode] = process.argv.slice(-3);

const home = homeCgroup(cgroup);

const BS = 4096;
const b = openInstance(path);
const q = b.getQueue(0)!;
const out: Completion[] = Array.from({ length: 8 }, () => ({ userData: null, ret: 0, errorMsg: null }));

// Everything the runtime makes threads for lazily happens before the cap (Bun aborted without
// this); a read of the page cache goes at once, so io-wq starts no worker.
{
  const dev = await BlockDevice.open(path);
  await dev.read(0, dev.allocBuffer(BS));
  await dev.close();
}
(globalThis as { Bun?: { gc(sync: boolean): void } }).Bun?.gc(true);
const go = `${path}.go`;
if (mode === "passing-queue") {
  // Out of the cgroup (started before the move): lifts the cap 150 ms after `go` appears.
  spawn(
    "sh",
    ["-c", `while [ ! -e ${go} ]; do sleep 0.01; done; sleep 0.15; echo max > ${cgroup}/pids.max`],
    {
      stdio: "ignore",
    },
  );
}
await new Promise((r) => setTimeout(r, 300));

/** The requests of a batch, with what they completed with and how long the batch took. */
function batch(n: number): { ms: number; got: Record<string, { ret: number; msg: string | null }> } {
  const t0 = performance.now();
  let done = 0;
  const got: Record<string, { ret: number; msg: string | null }> = {};
  while (done < n) {
    const k = q.doIo(out, 1, out.length);
    for (let i = 0; i < k; i++) got[String(out[i].userData)] = { ret: out[i].ret, msg: out[i].errorMsg };
    done += k;
  }
  return { ms: Math.round(performance.now() - t0), got };
}

async function settle(p: Promise<void>): Promise<{ code: string; message: string } | null> {
  try {
    await p;
    return null;
  } catch (e) {
    return failure(e);
  }
}

const result: Record<string, unknown> = {};
writeFileSync(`${cgroup}/cgroup.procs`, String(process.pid));
try {
  writeFileSync(`${cgroup}/pids.max`, readFileSync(`${cgroup}/pids.current`, "utf8").trim());
  if (mode === "held") {
    q.write(0, new Uint8Array(BS).fill(0xa1), "write");
    q.writev(2 * BS, [new Uint8Array(BS).fill(0xa2), new Uint8Array(BS).fill(0xa3)], "writev");
    q.flush("flush");
    q.writeZeroes(8 * BS, BS, "writeZeroes");
    result.queue = batch(4);
    // One the caller cancels is the caller's: no retry, no word about threads.
    q.write(12 * BS, new Uint8Array(BS).fill(0xa4), "cancelled");
    q.cancel("cancelled");
    result.cancelled = batch(1);
    const dev = await BlockDevice.open(path);
    const t0 = performance.now();
    const [write, flush] = await Promise.all([
      settle(dev.write(16 * BS, dev.allocBuffer(BS).fill(0xc3))),
      settle(dev.flush()),
    ]);
    result.device = { ms: Math.round(performance.now() - t0), write, flush };
    await dev.close();
    const data = readFileSync(path);
    result.landed = [0, 2 * BS, 3 * BS, 12 * BS, 16 * BS].filter((o) => data[o] !== 0).length;
    result.zeroed = data[8 * BS] === 0;
    // The cap lifted, the same queue works.
    writeFileSync(`${cgroup}/pids.max`, "max");
    q.write(0, new Uint8Array(BS).fill(0xd4), "write");
    q.flush("flush");
    result.after = batch(2);
    result.afterData = readFileSync(path)[0];
  } else if (mode === "passing-queue") {
    writeFileSync(go, "");
    q.write(0, new Uint8Array(BS).fill(0xa1), "write");
    q.flush("flush");
    result.queue = batch(2);
    result.landed = readFileSync(path)[0] === 0xa1;
  } else {
    const dev = await BlockDevice.open(path);
    setTimeout(() => writeFileSync(`${cgroup}/pids.max`, "max"), 150);
    const t0 = performance.now();
    const [write, flush] = await Promise.all([
      settle(dev.write(0, dev.allocBuffer(BS).fill(0xc3))),
      settle(dev.flush()),
    ]);
    result.device = { ms: Math.round(performance.now() - t0), write, flush };
    await dev.close();
    result.landed = readFileSync(path)[0] === 0xc3;
  }
} finally {
  writeFileSync(`${cgroup}/pids.max`, "max");
  writeFileSync(`${home}/cgroup.procs`, String(process.pid));
  b.destroy();
}
console.log(JSON.stringify(result));
