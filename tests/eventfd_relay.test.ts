// Waiting for completions from the event loop: the relay that turns an eventfd's signal into
// pipe data (how Deno waits without a pool thread), the adapters' pipe waits, and the choice
// CompletionWaiter makes between the relay and the adapter's own eventfd wait.
import { test } from "node:test";
import assert from "./_assert.ts";
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { spawnSync } from "node:child_process";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { loadError, native } from "../ffi/load.ts";
import type { Native } from "../ffi/types.ts";
import { BlkioError } from "../src/errors.ts";
import { closeFd, newEventfd } from "../src/sys.ts";
import { CompletionWaiter } from "../src/completion_waiter.ts";
import { EventfdRelay } from "../src/uring/eventfd_relay.ts";
import { IORING_OP } from "../src/uring/constants.ts";
import { withRefusedOnce } from "./_rewrite_results.ts";
import {
  assertClosesNoneOfOurs,
  cleanupAll,
  EMULATED,
  kernelAtLeast,
  scratchFile,
  skipIf,
  threadCpuMs,
} from "./_helpers.ts";
import { BlockDevice } from "../mod.ts";

const N = ((): Native => {
  assert.ok(native, String(loadError));
  return native;
})();

const ONE = new Uint8Array(new ArrayBuffer(8));
ONE[0] = 1;
const EAGAIN = 11;

function signal(fd: number): void {
  assert.equal(Number(N.libc.write(fd, ONE, 8n)), 8);
}

/** Whether the eventfd's counter is zero (a non-blocking read finds nothing). */
function isReset(fd: number): boolean {
  const buf = N.alloc(8);
  const r = Number(N.libc.read(fd, buf, 8n));
  if (r === 8) return false;
  assert.equal(N.errno(), EAGAIN);
  return true;
}

/** Resolves to "settled" if `p` settles within `ms`, else "pending" (p keeps running). */
function within(p: Promise<unknown>, ms: number): Promise<"settled" | "pending"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p.then(() => "settled" as const, () => "settled" as const),
    new Promise<"pending">((resolve) => (timer = setTimeout(() => resolve("pending"), ms))),
  ]).finally(() => clearTimeout(timer));
}

/** This process's io_uring and pipe fds (what a relay opens), by number. */
function ringsAndPipes(): Map<string, string> {
  const out = new Map<string, string>();
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      if (target === "anon_inode:[io_uring]" || target.startsWith("pipe:")) out.set(fd, target);
    } catch {
      // the fd readdir itself used, closed by now
    }
  }
  return out;
}

const ECANCELED = 125;

function openRelay(fd: number): EventfdRelay {
  const relay = EventfdRelay.open(N, fd);
  assert.ok(relay, "this kernel has io_uring POLL_ADD and WRITE (Linux 5.6+), so a relay opens");
  return relay;
}

test("eventfd relay: a wait ends only once the eventfd is signalled, and resets it", async () => {
  const fd = newEventfd(N);
  const relay = openRelay(fd);
  try {
    for (let round = 0; round < 3; round++) {
      const w = relay.wait();
      assert.equal(await within(w, 30), "pending", `round ${round}: the wait ended with no signal`);
      signal(fd);
      assert.equal(await within(w, 5000), "settled", `round ${round}: the signal did not end the wait`);
      await w;
      assert.ok(isReset(fd), "the counter was left set: the next wait would end at once");
    }
  } finally {
    await relay.close();
    N.libc.close(fd);
  }
});

test("eventfd relay: a signal given before the wait ends it at once; 2,000 waits in a row", async () => {
  const fd = newEventfd(N);
  const relay = openRelay(fd);
  try {
    signal(fd);
    signal(fd);
    assert.equal(await within(relay.wait(), 5000), "settled");
    assert.ok(isReset(fd));
    // Signalled from a timer, from a microtask, or before: every wait sees its own signal.
    for (let i = 0; i < 2000; i++) {
      const w = relay.wait();
      if (i % 3 === 0) signal(fd);
      else if (i % 3 === 1) queueMicrotask(() => signal(fd));
      else setTimeout(() => signal(fd), 0);
      await w;
    }
    assert.ok(isReset(fd));
  } finally {
    await relay.close();
    N.libc.close(fd);
  }
});

test("eventfd relay: a poll that fails (no such fd) rejects the wait with its error, never hangs", async () => {
  const relay = openRelay(999_999); // a number no file has here
  try {
    const w = relay.wait();
    assert.equal(await within(w, 5000), "settled", "the wait on a bad fd hung");
    await assert.rejects(w, (e: unknown) => e instanceof BlkioError && e.code === "EBADF");
  } finally {
    await relay.close();
  }
});

// Linux 5.10 fails the write linked to a poll that failed at submission, hard link or not
// (ECANCELED, both CQEs in when io_uring_enter returns): played here on any kernel by making the
// write a NOP that completes ECANCELED. The wait hung on 5.10 before the relay looked for it.
test("eventfd relay: a poll that fails at submission, its write cancelled (Linux 5.10), rejects the wait", async () => {
  let relay: EventfdRelay | undefined;
  let w: Promise<void> | undefined;
  try {
    // The relay's ring is made inside: the rewriting sees only rings made while it is on.
    const cancelled = withRefusedOnce(IORING_OP.WRITE, -ECANCELED, () => {
      relay = openRelay(999_999);
      w = relay.wait();
    });
    assert.ok(cancelled, "no write was cancelled");
    assert.equal(await within(w!, 5000), "settled", "the wait on a bad fd hung");
    await assert.rejects(w!, (e: unknown) => e instanceof BlkioError && e.code === "EBADF");
  } finally {
    await relay?.close();
  }
});

// Each wait's chain posts two CQEs; reaping them must also move the ring's CQ head, or after four
// waits the CQ is full and the kernel keeps every later CQE in its overflow list, for good.
// The ring's CQ head and tail are read from its fdinfo, which shows them from Linux 5.16 on.
test(
  ...skipIf(
    "eventfd relay: every wait reaps its completions (the ring's CQ ends empty)",
    !kernelAtLeast(5, 16) &&
      "io_uring's fdinfo shows the CQ's head and tail (CqHead, CqTail) from Linux 5.16 on",
  ),
  async () => {
    const fd = newEventfd(N);
    const before = ringsAndPipes();
    const relay = openRelay(fd);
    try {
      const ring = [...ringsAndPipes()].filter(([n, t]) => before.get(n) !== t && t.startsWith("anon_inode"));
      assert.equal(ring.length, 1, "the relay's ring");
      for (let i = 0; i < 10; i++) {
        signal(fd);
        await relay.wait();
      }
      const info = readFileSync(`/proc/self/fdinfo/${ring[0][0]}`, "utf8");
      const field = (name: string) => Number(new RegExp(`^${name}:\\s*(\\d+)`, "m").exec(info)?.[1]);
      assert.equal(field("CqTail"), 20, "two CQEs per wait");
      assert.equal(field("CqHead"), field("CqTail"), "completions left in the relay's CQ");
    } finally {
      await relay.close();
      closeFd(N, fd);
    }
  },
);

// Short of fds for the pipe (EMFILE): open throws, and the ring it had set up is closed, or each
// retry (CompletionWaiter tries again at every wait) leaves one more ring fd behind.
test("eventfd relay: an open that fails for want of a pipe closes its ring", () => {
  const noPipe = { ...N, libc: { ...N.libc, pipe2: () => -1 }, errno: () => 24 /* EMFILE */ } as Native;
  const fd = newEventfd(N);
  try {
    const before = ringsAndPipes();
    for (let i = 0; i < 3; i++) {
      assert.throws(
        () => EventfdRelay.open(noPipe, fd),
        (e: unknown) => e instanceof BlkioError && e.code === "EMFILE",
      );
    }
    const left = [...ringsAndPipes()].filter(([n, t]) => before.get(n) !== t && t.startsWith("anon_inode"));
    assert.deepEqual(left, [], "ring fds left open by failed opens");
  } finally {
    closeFd(N, fd);
  }
});

// io_uring_enter can fail for a while (EAGAIN, ENOMEM): that wait rejects with the error rather
// than waiting for a pipe write never submitted, and once enter works again the relay does too
// (each wait ends on a signal, and only on one).
test("eventfd relay: a failed io_uring_enter rejects that wait instead of hanging; later waits work", async () => {
  let fail = true;
  const enter = N.uring.io_uring_enter;
  const flaky = {
    ...N,
    uring: {
      ...N.uring,
      io_uring_enter: (...a: Parameters<typeof enter>) => fail ? -11 /* EAGAIN */ : enter(...a),
    },
  } as Native;
  const fd = newEventfd(N);
  const relay = EventfdRelay.open(flaky, fd)!;
  assert.ok(relay);
  try {
    // Three in a row: the ring has room for two chains.
    for (let i = 0; i < 3; i++) {
      const failed = relay.wait();
      failed.catch(() => {});
      assert.equal(await within(failed, 2000), "settled", "a wait whose enter failed hung");
      await assert.rejects(failed, (e: unknown) => e instanceof BlkioError && e.code === "EAGAIN");
    }
    fail = false;
    const w = relay.wait();
    assert.equal(await within(w, 30), "pending", "the wait ended with no signal");
    signal(fd);
    assert.equal(await within(w, 5000), "settled");
    await w;
    const next = relay.wait();
    assert.equal(await within(next, 30), "pending", "a second chain's write ended a wait with no signal");
    signal(fd);
    await next;
  } finally {
    await relay.close();
    closeFd(N, fd);
  }
});

// A relay closed before any wait reached the pipe (none yet, or the first one's io_uring_enter
// failed) closes its pipe's read end all the same: Native.forgetPipe "stops watching fd and closes
// it". FAILS ON DENO (library bug): ffi/deno.ts forgetPipe closes only an fd that waitPipe was
// called for, so this read end stays open for good.
test("eventfd relay: closed before any wait, it releases its ring and pipe", async () => {
  const fd = newEventfd(N);
  try {
    const before = ringsAndPipes();
    const relay = openRelay(fd);
    const mine = [...ringsAndPipes()].filter(([n, target]) => before.get(n) !== target);
    assert.equal(mine.length, 3, `a relay opens a ring and a pipe: ${JSON.stringify(mine)}`);
    await relay.close();
    const now = ringsAndPipes();
    for (const [n, target] of mine) assert.notEqual(now.get(n), target, `fd ${n} (${target}) left open`);
  } finally {
    closeFd(N, fd);
  }
});

test("eventfd relay: close releases its ring and pipe, and is idempotent", async () => {
  const fd = newEventfd(N);
  for (let i = 0; i < 20; i++) {
    // Opening is synchronous: what appears meanwhile is the relay's (the runtime's own fds
    // come and go with its event loop, so the whole table cannot be compared). By number and
    // target: Bun closes fds of its own on other threads, and the relay's pipe end once got a
    // number that had been another pipe's just before.
    const before = ringsAndPipes();
    const relay = openRelay(fd);
    const mine = [...ringsAndPipes()].filter(([n, target]) => before.get(n) !== target);
    assert.equal(mine.length, 3, `a relay opens a ring and a pipe: ${JSON.stringify(mine)}`);
    signal(fd);
    await relay.wait();
    await relay.close();
    await relay.close();
    await assert.rejects(relay.wait(), (e: unknown) => e instanceof BlkioError && e.code === "EBADF");
    const now = ringsAndPipes();
    for (const [n, target] of mine) {
      // Closed, or since reused for something else (a pipe's target names its inode).
      assert.ok(now.get(n) !== target || target.startsWith("anon_inode"), `fd ${n} (${target}) left open`);
      if (target.startsWith("anon_inode")) assert.equal(now.has(n), false, `ring fd ${n} left open`);
    }
  }
  N.libc.close(fd);
});

/** A new pipe's read and write ends (O_NONBLOCK, O_CLOEXEC). */
function pipe(): [number, number] {
  const fds = N.alloc(8);
  assert.equal(N.libc.pipe2(fds, 0o4000 | 0o2000000), 0);
  const v = new DataView(fds.buffer);
  return [v.getInt32(0, true), v.getInt32(4, true)];
}

test("pipe wait: data written with no wait pending ends the next wait at once", async () => {
  const [r, w] = pipe();
  try {
    assert.equal(Number(N.libc.write(w, ONE, 8n)), 8);
    assert.equal(await within(N.waitPipe(r), 5000), "settled");
    const next = N.waitPipe(r);
    assert.equal(await within(next, 30), "pending", "the data of one write ended two waits");
    assert.equal(Number(N.libc.write(w, ONE, 8n)), 8);
    assert.equal(await within(next, 5000), "settled");
  } finally {
    await N.forgetPipe(r);
    N.libc.close(w);
  }
  assert.equal(N.libc.fcntl(r, 1, /* F_GETFD */ 0), -1, "forgetPipe left the read end open");
});

// Data that comes while no wait is pending, once the pipe is watched, ends the next wait at once,
// and only that one.
test("pipe wait: data that came between waits ends one wait, not every later one", async () => {
  const [r, w] = pipe();
  try {
    assert.equal(Number(N.libc.write(w, ONE, 8n)), 8);
    await within(N.waitPipe(r), 5000); // the pipe is watched from now on
    assert.equal(Number(N.libc.write(w, ONE, 8n)), 8);
    await new Promise((resolve) => setTimeout(resolve, 50)); // read with no wait pending
    assert.equal(await within(N.waitPipe(r), 5000), "settled");
    const next = N.waitPipe(r);
    assert.equal(await within(next, 50), "pending", "one write ended two waits");
    assert.equal(Number(N.libc.write(w, ONE, 8n)), 8);
    assert.equal(await within(next, 5000), "settled");
  } finally {
    await N.forgetPipe(r);
    N.libc.close(w);
  }
});

// A wait that data already ends resolves in a later turn, never in the microtasks of the turn it
// was asked in: BlockDevice reaps when a wait ends, and a request made and aborted from those
// microtasks must still be its caller's (the BlockDevice fuzzer found it on Bun). Each wait here
// is asked once the data came with no wait pending: Deno's pipe waiter then holds it, Bun's
// stream may hold a chunk. Rounds in the same turn as the last wait's end and in a new one.
for (const kind of ["pipe", "eventfd"] as const) {
  test(`${kind} wait: one that data already ends resolves in a later turn, not in its own turn's microtasks`, async () => {
    const [r, w] = kind === "pipe" ? pipe() : [newEventfd(N), -1];
    const wait = () => kind === "pipe" ? N.waitPipe(r) : N.waitEventfd(r);
    const early: string[] = [];
    try {
      for (let round = 0; round < 40; round++) {
        signal(kind === "pipe" ? w : r);
        if (round % 2 === 0) await new Promise((resolve) => setTimeout(resolve, 5));
        let settled = false;
        const p = wait().then(() => (settled = true));
        for (let i = 0; i < 20; i++) await null;
        if (settled) early.push(`round ${round}`);
        assert.equal(await within(p, 5000), "settled", `round ${round}: the wait never ended`);
      }
    } finally {
      if (kind === "pipe") {
        await N.forgetPipe(r);
        N.libc.close(w);
      } else {
        await N.forgetEventfd(r);
        closeFd(N, r);
      }
    }
    assert.deepEqual(early, [], "waits that ended in the microtasks of the turn they were asked in");
  });
}

test("pipe wait: the write end closing rejects the pending wait and later ones, with no data seen as data", async () => {
  const [r, w] = pipe();
  try {
    const pending = N.waitPipe(r);
    const outcome = pending.then(() => "resolved", (e: Error) => e.message);
    assert.equal(await within(pending, 30), "pending");
    N.libc.close(w);
    assert.equal(await within(pending, 5000), "settled", "the closed write end left the wait pending");
    assert.match(await outcome, /closed/, "a wait ended by the write end closing counted as data");
    const later = N.waitPipe(r);
    assert.equal(await within(later, 5000), "settled", "a wait after the close hung");
    await assert.rejects(later, /closed/);
  } finally {
    await N.forgetPipe(r);
  }
  assert.equal(N.libc.fcntl(r, 1, /* F_GETFD */ 0), -1, "forgetPipe left the read end open");
});

// forgetPipe right after the first waitPipe: on Deno the waiter then exists, but has not yet
// adopted the fd (it does so once node:net is loaded, after an await). The fd must be closed
// all the same, and the wait must end rather than watch a closed fd.
test("pipe wait: forgetPipe before the first wait has taken the fd closes it, and the wait ends", async () => {
  const [r, w] = pipe();
  try {
    const wait = N.waitPipe(r).then(() => "resolved", (e: Error) => e.message);
    await N.forgetPipe(r);
    assert.equal(N.libc.fcntl(r, 1, /* F_GETFD */ 0), -1, "forgetPipe left the read end open");
    assert.equal(await within(wait, 5000), "settled", "the wait on a forgotten pipe hung");
  } finally {
    N.libc.close(w);
  }
});

// A process whose only pending work is a wait for completions must not exit under it (the
// caller's request would never settle). On Bun, a read on a reader taken again after the idle one
// was released does not keep the process alive by itself; on Deno, the unref'ed socket does not.
test("pipe wait: a pending wait keeps the process alive, also a later one on the same pipe", () => {
  const script = fileURLToPath(new URL("./_pipe_wait_alive.ts", import.meta.url));
  const args = N.runtime === "deno" ? ["run", "-A", script] : [script];
  const r = spawnSync(process.execPath, args, { encoding: "utf8", timeout: 20_000 });
  assert.equal(r.signal, null, `the process did not exit by itself: ${r.stderr}`);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /first wait ended/);
  assert.match(r.stdout, /second wait ended/, "the process exited with its wait pending");
});

/** One wait of `waiter` on `fd`, signalled from a timer; then checks the counter was reset. */
async function waitOnce(native: Native, kind: "relay" | "adapter"): Promise<void> {
  const fd = newEventfd(N);
  const waiter = new CompletionWaiter(native, fd);
  try {
    assert.equal(waiter.kind, kind);
    setTimeout(() => signal(fd), 5);
    await waiter.wait();
    assert.ok(isReset(fd));
  } finally {
    await waiter.close();
    N.libc.close(fd);
  }
}

test("completion waiter: the relay where the adapter's wait holds a thread (Deno), else the adapter", async () => {
  assert.equal(N.eventfdWaitUsesThread, N.runtime === "deno");
  await waitOnce(N, N.eventfdWaitUsesThread ? "relay" : "adapter");
});

test("completion waiter: without a usable io_uring for the relay it falls back to the adapter", async () => {
  // An adapter whose eventfd wait holds a thread, on a "kernel" where io_uring setup fails.
  const noUring = {
    ...N,
    eventfdWaitUsesThread: true,
    uring: { ...N.uring, io_uring_queue_init_params: () => -38 /* ENOSYS */ },
  } as Native;
  await waitOnce(noUring, "adapter");
});

// A queue's close closes its waiter: with a relay, that is the relay's ring and pipe, three fds
// per queue that a program adding and removing queues would otherwise run out of.
test("completion waiter: close releases the relay's ring and pipe", async () => {
  const relayed = { ...N, eventfdWaitUsesThread: true } as Native; // the relay on Bun too
  const fd = newEventfd(N);
  try {
    const before = ringsAndPipes();
    const waiter = new CompletionWaiter(relayed, fd);
    const mine = [...ringsAndPipes()].filter(([n, target]) => before.get(n) !== target);
    assert.equal(waiter.kind, "relay");
    assert.equal(mine.length, 3, `a relay opens a ring and a pipe: ${JSON.stringify(mine)}`);
    setTimeout(() => signal(fd), 5);
    await waiter.wait();
    await waiter.close();
    const now = ringsAndPipes();
    for (const [n, target] of mine) {
      // Closed, or since reused for something else (a pipe's target names its inode).
      assert.ok(now.get(n) !== target || target.startsWith("anon_inode"), `fd ${n} (${target}) left open`);
      if (target.startsWith("anon_inode")) assert.equal(now.has(n), false, `ring fd ${n} left open`);
    }
  } finally {
    closeFd(N, fd);
  }
});

// Short of fds (or memory) the relay cannot be made for now: the waiter fell back to the adapter's
// thread-holding wait for good. Now the wait rejects (the caller looks by itself meanwhile) and the
// next one tries the relay again.
test("completion waiter: short of fds for the relay, waits reject and the next one tries again", async () => {
  let failing = true;
  let adapterWaits = 0, rings = 0;
  const init = N.uring.io_uring_queue_init_params;
  const short = {
    ...N,
    eventfdWaitUsesThread: true,
    uring: {
      ...N.uring,
      io_uring_queue_init_params: (...a: Parameters<typeof init>) =>
        failing ? -24 /* EMFILE */ : (rings++, init(...a)),
    },
    waitEventfd: (fd: number) => (adapterWaits++, N.waitEventfd(fd)),
  } as Native;
  const fd = newEventfd(N);
  const waiter = new CompletionWaiter(short, fd);
  try {
    for (let i = 0; i < 2; i++) {
      const wait = waiter.wait();
      wait.catch(() => {});
      // The old fallback waited for the eventfd, which nothing signals here.
      assert.equal(await within(wait, 5000), "settled", "the wait fell back to a thread-holding wait");
      await assert.rejects(wait, (e: unknown) => e instanceof BlkioError && e.code === "EMFILE");
    }
    failing = false; // fds again
    setTimeout(() => signal(fd), 5);
    await waiter.wait();
    assert.equal(waiter.kind, "relay");
    assert.equal(adapterWaits, 0, "a thread-holding wait was used");
    assert.ok(isReset(fd));
    // That relay serves the later waits: none makes (and leaks) a ring and pipe of its own.
    for (let i = 0; i < 3; i++) {
      setTimeout(() => signal(fd), 5);
      await waiter.wait();
    }
    assert.equal(rings, 1, `the waits after the shortage made ${rings} relay rings`);
  } finally {
    await waiter.close();
    N.libc.close(fd);
  }
});

/** A full garbage collection now, where the runtime offers one (Bun; Deno with --expose-gc). */
function collectGarbage(): void {
  const g = globalThis as { Bun?: { gc(force: boolean): void }; gc?: () => void };
  if (g.Bun) g.Bun.gc(true);
  else g.gc?.();
}

interface StarvationRun {
  /** Why the run does not pass, or null if it does. */
  failure: string | null;
  what: string;
}

/**
 * One run of the starvation measurement: waits on an eventfd that a Worker signals every ~5 µs,
 * for 900 ms, while a 5 ms interval counts how long this thread ran between its ticks.
 */
async function starvationRun(): Promise<StarvationRun> {
  // A fast device's completions, from another thread. Bun ended each such wait within the
  // same event-loop turn, and that turn ran on: a 5 ms interval waited 40-220 ms for its turn.
  const fd = newEventfd(N);
  const w = new CompletionWaiter(N, fd);
  const worker = new Worker(new URL("./_eventfd_signaller.ts", import.meta.url).href, { type: "module" });
  const stop = new Int32Array(new SharedArrayBuffer(4));
  try {
    const messages: unknown[] = [];
    let notify = () => {};
    worker.onmessage = (e: MessageEvent) => {
      messages.push(e.data);
      notify();
    };
    const message = (k: number) =>
      new Promise<unknown>((resolve) => {
        const check = () => (messages.length > k ? resolve(messages[k]) : (notify = check));
        check();
      });
    assert.equal(await message(0), "ready");
    worker.postMessage({ fd, stop: stop.buffer });
    assert.equal(await message(1), "started");
    // What counts is how long this thread ran without the timer getting its turn: its time on
    // a CPU between ticks (schedstat), not the wall-clock gap, which also grows while a busy
    // machine leaves the thread waiting for a CPU.
    let ticks = 0, maxGap = 0, maxHeld = 0, excess = 0, last = performance.now(), lastRun = threadCpuMs();
    const timer = setInterval(() => {
      const now = performance.now(), run = threadCpuMs();
      maxGap = Math.max(maxGap, now - last);
      const held = run - lastRun; // wall-clock time where schedstat is missing
      maxHeld = Math.max(maxHeld, held);
      excess += Math.max(0, held - 10);
      last = now;
      lastRun = run;
      ticks++;
    }, 5);
    // Waits that ended in one event-loop turn, counted between runs of a setImmediate asked
    // after a wait ends: Native.waitEventfd's contract allows one, and a chain of waits that
    // holds the turn (the starvation) ends hundreds (Bun without the turn check: 76-389; with
    // only the 2 ms bound it had before, up to 90).
    let inTurn = 0, mostInTurn = 0, turnAsked = false;
    const turnEnded = () => {
      turnAsked = false;
      inTurn = 0;
    };
    const start = performance.now();
    let waits = 0;
    try {
      // 900 ms, longer (up to 5 s) until 2000 waits ended: a machine busy enough to keep this
      // thread or the signaller off a CPU ended 900 ms after only 566-911 (flake audit, load
      // 7-20). Measuring on a clock without that time instead (schedstat reads in the loop) made
      // the starvation vanish without the fix.
      for (
        let now = start;
        now < start + 900 || (waits < 2000 && now < start + 5000);
        now = performance.now()
      ) {
        await w.wait();
        waits++;
        mostInTurn = Math.max(mostInTurn, ++inTurn);
        if (!turnAsked) {
          turnAsked = true;
          setImmediate(turnEnded);
        }
        const work = performance.now() + 0.02; // what a drain of completions costs
        while (performance.now() < work);
      }
    } finally {
      clearInterval(timer);
      Atomics.store(stop, 0, 1);
    }
    const elapsed = performance.now() - start;
    assert.ok((await message(2) as number) > waits);
    const what = `${waits} waits; ${ticks} ticks of a 5 ms interval in ${elapsed.toFixed(0)} ms, ` +
      `longest gap ${maxGap.toFixed(1)} ms, ${maxHeld.toFixed(1)} ms of it running; ${
        excess.toFixed(0)
      } ms run beyond 10 ms a gap; at most ${mostInTurn} waits ended in one turn`;
    // About elapsed / 5 ticks when the loop turns freely (Bun 138-155 of ~180 here; without
    // the fix 38-98, with gaps of 33-224 ms, the thread running through them). Measured: 0 ms
    // beyond 10 ms a gap with the fix (up to 18 ms while the heap churns); 139-440 ms without
    // it (maxHeld 30-61 ms).
    // Not a matter of timing: fails the test at once, without the other runs.
    assert.ok(mostInTurn <= 1, `waits ended in the turn they were asked in: ${what}`);
    const failure = waits <= 1000
      ? "too few waits ended"
      : ticks < 20
      ? "too few ticks"
      : excess >= 50
      ? "the thread ran too long between ticks"
      : maxHeld >= 40
      ? "one gap ran too long"
      : null;
    return { failure, what };
  } finally {
    Atomics.store(stop, 0, 1);
    worker.terminate();
    await w.close();
    closeFd(N, fd);
  }
}

// It bounds how long the thread ran between timer ticks, which emulation multiplies: under
// qemu's TCG each event-loop turn took 6-10 ms and a clean run's thread ran up to 521 ms between
// ticks (Linux 6.1 and 6.12 guests), more than the starvation itself on the host.
const [starveName, starveSkip] = skipIf(
  "completion waiter: an eventfd signalled faster than the waits follow does not starve timers",
  EMULATED && "every instruction is emulated, and the time the thread runs is what it bounds",
);
test(
  starveName,
  { ...starveSkip, timeout: 60_000 },
  async () => {
    // The starvation this guards against held the thread in every run (300-440 ms beyond
    // 10 ms a gap; 2026-12-05). A chain of waits in one turn, its cause, fails a run at once;
    // since the code around the wait changed, the chain forms in some runs only (Bun without
    // the turn check, 2026-12-07: in 1 of 3), and the gaps stayed under these bounds. A clean
    // run can still lose a gap to a garbage collection of the large heap the whole suite leaves
    // behind (one Bun CI run failed so), so the test passes on the first of three runs that is
    // clean, and fails with all three's figures.
    const runs: string[] = [];
    for (let attempt = 0; attempt < 3; attempt++) {
      collectGarbage(); // so that a run is less likely to meet a full collection
      const run = await starvationRun();
      if (run.failure === null) return;
      runs.push(`${run.failure}: ${run.what}`);
    }
    assert.fail(`every run starved the timer:\n${runs.join("\n")}`);
  },
);

// EventfdRelay.close() is idempotent: a second call must not close the pipe's fd numbers again,
// which by then may be files the program opened since.
test("eventfd relay: a second close() closes none of the program's fds", async () => {
  const efd = newEventfd(N);
  const relay = openRelay(efd);
  const one = new Uint8Array(8);
  one[0] = 1;
  N.libc.write(efd, one, 8n);
  await relay.wait();
  await relay.close();
  try {
    await assertClosesNoneOfOurs("the second close()", () => relay.close());
  } finally {
    N.libc.close(efd);
  }
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Write ends of this process's pipes, by fd number. */
function pipeWriteEnds(): Set<number> {
  const out = new Set<number>();
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      if (!readlinkSync(`/proc/self/fd/${fd}`).startsWith("pipe:")) continue;
      const flags = parseInt(
        /flags:\s*([0-7]+)/.exec(readFileSync(`/proc/self/fdinfo/${fd}`, "utf8"))![1],
        8,
      );
      if ((flags & 3) === 1) out.add(Number(fd));
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

/**
 * Closes the pipe write end `w` the way the relay's pipe would lose its writer, keeping the fd
 * number taken (by /dev/null) so that the relay's later WRITEs touch nothing of ours.
 */
function loseWriter(w: number): void {
  const path = new TextEncoder().encode("/dev/null\0");
  const buf = N.alloc(path.length);
  buf.set(path);
  const nul = N.libc.open(buf, 1 /* O_WRONLY */ | 0o2000000, 0);
  assert.ok(nul >= 0);
  assert.equal(N.libc.close(w), 0);
  assert.equal(
    N.libc.fcntl(nul, 1030, /* F_DUPFD_CLOEXEC */ w),
    w,
    "the write end's number was taken meanwhile",
  );
  N.libc.close(nul);
}

// The relay's pipe waiter (Deno: a node:net socket) failing (an error, or EOF) made every later
// wait reject at once: the relay was never rebuilt, and the caller looked every 1 ms for good
// (review, helper-78).
test(
  ...skipIf(
    "eventfd relay: after the relay's pipe fails, the relay is rebuilt and waits work again",
    N.runtime !== "deno" && "the relay serves Deno's waits only",
  ),
  async () => {
    const relayed = { ...N, eventfdWaitUsesThread: true } as Native;
    const fd = newEventfd(N);
    const before = pipeWriteEnds();
    const waiter = new CompletionWaiter(relayed, fd);
    try {
      const mine = [...pipeWriteEnds()].filter((n) => !before.has(n));
      assert.equal(mine.length, 1, "the relay made one pipe");
      setTimeout(() => signal(fd), 5);
      await waiter.wait(); // the pipe is watched from now on
      loseWriter(mine[0]);
      await sleep(50); // the waiter sees the EOF
      let rejected = 0;
      for (let i = 0; i < 10; i++) {
        const w = waiter.wait();
        w.catch(() => {});
        setTimeout(() => signal(fd), 5);
        assert.equal(await within(w, 5000), "settled", "a wait hung");
        await w.then(() => {}, () => rejected++);
      }
      assert.ok(
        rejected <= 1,
        `${rejected} of 10 waits after the pipe failed rejected: the relay was not rebuilt`,
      );
    } finally {
      await waiter.close();
      N.libc.close(fd);
    }
  },
);

// The same seen from BlockDevice: once the relay pipe of its queue failed, each wait rejects at
// once and the device falls back to its 1 ms retry timer for every later request, for good.
test(
  ...skipIf(
    "eventfd relay: a failed relay pipe costs BlockDevice a wait or two, not a 1 ms timer for every later request",
    !N.eventfdWaitUsesThread && "only Deno relays its waits",
  ),
  async () => {
    const path = scratchFile(4 * 1024 * 1024, 7);
    const waitPipe = N.waitPipe;
    let calls = 0, rejections = 0;
    N.waitPipe = (fd: number) => {
      calls++;
      return waitPipe(fd).catch((e) => {
        rejections++;
        throw e;
      });
    };
    try {
      const before = pipeWriteEnds();
      const dev = await BlockDevice.open(path, { direct: true, queues: 1 });
      try {
        const buf = dev.allocBuffer(4096);
        // Until one read waits: most complete before a wait is armed (found inside the
        // submission, or by the look for completions that follows), and in one suite run none of
        // the first 20 waited.
        for (let i = 0; i < 2000 && calls === 0; i++) await dev.read((i % 1024) * 4096, buf);
        const mine = [...pipeWriteEnds()].filter((n) => !before.has(n));
        assert.equal(mine.length, 1, `the queue's relay made one pipe (${calls} pipe waits)`);
        loseWriter(mine[0]);
        await sleep(50);
        calls = rejections = 0;
        for (let i = 0; i < 200 || (calls === 0 && i < 2000); i++) {
          await dev.read((i % 1024) * 4096, buf);
          assert.equal(buf[0], 7);
        }
        assert.ok(calls > 0, "no waits were made (reads completed before any wait)");
        assert.ok(
          rejections <= 2,
          `${rejections} of ${calls} pipe waits rejected over 200 reads: retry timer for good`,
        );
      } finally {
        await dev.close();
      }
    } finally {
      N.waitPipe = waitPipe;
    }
  },
);

test("eventfd relay: cleanup scratch files", () => cleanupAll());
