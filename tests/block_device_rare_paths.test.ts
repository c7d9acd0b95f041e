// BlockDevice's rare paths (found by a review, helper-75): what a failed submission, close() and
// the completion waits leave behind, and a caller's code running in the middle of them.
import { test } from "node:test";
import assert from "./_assert.ts";
import { BlkioError, BlockDevice } from "../mod.ts";
import { native } from "../ffi/load.ts";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { cleanupAll, scratchDir, scratchFile, skipIf } from "./_helpers.ts";
import { fuseFixtureUnavailable, mountFuseFixture, sleepMs } from "./_fuse_fixture.ts";
import { qsdSkipReason, startExport } from "./_vhost_user.ts";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

const MiB = 1 << 20;
const EAGAIN = 11;
const EINVAL = 22;

/**
 * Runs `fn` while `fail(toSubmit)` may make the device rings' io_uring_enter return an errno
 * (not the eventfd relay's: Deno waits through a ring of its own). Asynchronous, unlike
 * withHookedEnters: the failure must hit a drain the event loop runs.
 */
async function withFailingEnters(
  fail: (toSubmit: number, ring: number) => number | undefined,
  fn: () => Promise<void>,
) {
  // deno-lint-ignore no-explicit-any
  const u = native!.uring as unknown as Record<string, (...a: any[]) => number>;
  const enter = u.io_uring_enter, enter2 = u.io_uring_enter2;
  // deno-lint-ignore no-explicit-any
  const wrap = (call: (...a: any[]) => number) => (...a: any[]) => {
    // The caller's frames only (Deno adds the async ones): Ring.enter, called by the driver.
    if (new Error().stack!.split("\n").slice(0, 6).some((l) => l.includes("drivers/io_uring/queue.ts"))) {
      const r = fail(a[1], a[0]);
      if (r !== undefined) return r;
    }
    return call(...a);
  };
  u.io_uring_enter = wrap(enter);
  u.io_uring_enter2 = wrap(enter2);
  try {
    await fn();
  } finally {
    u.io_uring_enter = enter;
    u.io_uring_enter2 = enter2;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// A drain reaps completions, then submits what the backlog put in the slots they freed; when that
// io_uring_enter fails (EAGAIN, EBUSY: "nothing was lost, try again shortly"), doIo puts the
// completions back in the queue and throws. The retry only submitted (doIo with max 0) and the
// eventfd was not signalled again: the completions stayed there until some later request
// completed. Here the later requests go to a FUSE daemon that stopped answering: a read that had
// completed never settled.
test(
  ...skipIf(
    "BlockDevice: completions taken back by a drain whose submission failed are settled without another completion",
    fuseFixtureUnavailable(),
  ),
  async () => {
    const dir = scratchDir();
    const backing = join(dir, "backing.img");
    writeFileSync(backing, new Uint8Array(16 * MiB).fill(0x5a));
    const f = mountFuseFixture(dir, backing);
    const dev = await BlockDevice.open(f.file, { numEntries: 1, direct: true });
    const n = 6;
    const bufs = Array.from({ length: n }, () => dev.allocBuffer(4096));
    const settled = bufs.map(() => false);
    let armed = false, failed = 0, settledBefore = 0;
    let reads: Promise<unknown>[] = [];
    try {
      await withFailingEnters((toSubmit) => {
        // The first submission after a completion freed the ring's one slot.
        if (!armed || toSubmit === 0) return undefined;
        settledBefore = settled.filter((x) => x).length;
        armed = false;
        failed++;
        process.kill(f.pid, "SIGSTOP"); // from now on the daemon answers nothing
        return -EAGAIN;
      }, async () => {
        // The daemon holds the reads the ring takes (submitted from a microtask; the rest waits
        // in the backlog) until the device waits on its completion fd (the look for completions
        // after the submission, a setImmediate, comes before this one). They then complete
        // together, and the wait's wakeup reaps them all.
        process.kill(f.pid, "SIGSTOP");
        reads = bufs.map((b, i) => dev.read(i * MiB, b).then(() => void (settled[i] = true)));
        await Promise.resolve();
        await new Promise<void>((r) => setImmediate(r));
        armed = true;
        process.kill(f.pid, "SIGCONT");
        sleepMs(300);
        const t0 = performance.now();
        while (failed === 0 && performance.now() - t0 < 5000) await sleep(5);
        assert.equal(failed, 1, "the submission after the first completion was never made");
        await sleep(500);
      });
      assert.equal(settledBefore, 0, "a read settled before the submission failed");
      // The reads the daemon answered before it stopped have their data: they completed.
      const done = bufs.map((b) => b.every((x) => x === 0x5a));
      assert.ok(done[0] && !done[n - 1], `completed: ${done}`);
      assert.deepEqual(settled, done, "reads that completed never settled");
    } finally {
      process.kill(f.pid, "SIGCONT");
      await Promise.allSettled(reads);
      await dev.close();
      f.stop();
    }
  },
);

// close() waits a second for aborted requests a back-end still has, then destroys the device. The
// wait for their completions was armed again while it did (the wakeup that close() provoked
// re-armed it, as requests were still pending), and the waiter was then closed under it, which
// Native.forgetEventfd forbids. Through the relay (Deno) and on Bun that left a promise behind;
// through the adapter's eventfd wait, which Deno uses where the relay cannot be made (Linux < 5.6,
// io_uring refused by seccomp or io_uring_disabled: the vhost-user driver needs no io_uring), it
// left poll(2) blocked on the destroyed eventfd in Deno's blocking pool: the process never exited.
for (const wait of ["default", "adapter"]) {
  test(
    ...skipIf(
      `BlockDevice: the process exits after close() gave up on aborted requests (${wait} wait)`,
      qsdSkipReason(),
    ),
    async () => {
      // 2 requests a second: most of the 16 reads are still in the back-end when they are aborted.
      const exp = startExport({ size: 8 * MiB, numQueues: 1, iops: 2 });
      try {
        const script = fileURLToPath(new URL("./_close_aborted_child.ts", import.meta.url));
        const runtime = "Bun" in globalThis ? [script] : ["run", "-A", script];
        const child = spawn(process.execPath, [...runtime, exp.socket, "virtio-blk-vhost-user", wait], {
          stdio: ["ignore", "pipe", "pipe"],
        });
        let stdout = "", stderr = "";
        child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
        child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
        const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
        /** Until stdout matches `pattern` or the child exits: whether it matched, or "pending" after `ms`. */
        const printed = (pattern: RegExp, ms: number) =>
          within(
            ms,
            new Promise<boolean>((resolve) => {
              const look = () => pattern.test(stdout) && resolve(true);
              child.stdout.on("data", look);
              exited.then(() => resolve(pattern.test(stdout)));
              look();
            }),
          );
        // Each step is timed from the one before, not the child's start: under qemu's TCG (10-30
        // times slower) starting Deno and the library alone took 4-13 s of what was a 15 s limit
        // on the whole child, which was killed before close() returned. From open to close()'s
        // return is mostly close()'s own 1 s wait (2.1 s on the host, 2.6-3.2 s under TCG), and
        // an exit milliseconds; the hang this guards against never ends.
        try {
          assert.equal(await printed(/"opened"/, 120_000), true, `open() did not return: ${stderr}`);
          assert.equal(await printed(/"closedMs"/, 15_000), true, `close() did not return: ${stderr}`);
          const gone = await within(5_000, exited);
          assert.notEqual(gone, "pending", `the process did not exit 5 s after close() returned: ${stdout}`);
          assert.equal(child.signalCode, null, stderr);
          assert.equal(child.exitCode, 0, stderr);
        } finally {
          if (child.exitCode === null && child.signalCode === null) {
            child.kill("SIGKILL");
            await exited;
          }
        }
      } finally {
        exp.stop();
      }
    },
  );
}

// The signal was checked first, then the iovecs read (the caller's code: a getter, a Proxy), then
// the abort listener added: a signal that code aborted meanwhile never fired it, and the request
// resolved although its signal had aborted before readv returned.
test("BlockDevice: a signal aborted while the request's arguments are read rejects it", async () => {
  const path = scratchFile(MiB, 3);
  await using dev = await BlockDevice.open(path);
  const buf = dev.allocBuffer(4096);
  const ac = new AbortController();
  const iovecs: Uint8Array[] = [];
  Object.defineProperty(iovecs, 0, {
    get() {
      ac.abort();
      return buf;
    },
    enumerable: true,
  });
  const outcome = await dev.readv(0, iovecs, { signal: ac.signal }).then(() => "resolved", (e) => e.name);
  assert.equal(outcome, "AbortError");
  await dev.released(buf);
});

/** `p`, or "pending" when it has not settled within `ms`. */
function within<T>(ms: number, p: Promise<T>): Promise<T | "pending"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"pending">((r) => (timer = setTimeout(() => r("pending"), ms)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** A signal whose removeEventListener throws, as the caller's own code may (a patched method). */
function throwingSignal(): AbortSignal {
  const signal = new AbortController().signal;
  Object.defineProperty(signal, "removeEventListener", {
    value: () => {
      throw new Error("the caller's removeEventListener threw");
    },
  });
  return signal;
}

// A request that completes stops watching its signal, and a released() wait that ends stops
// watching its own: both call the signal's removeEventListener, in the middle of settling the
// completions one drain reaped. When that threw, the completions after it were lost (their
// promises never settled, close() waited for ever), and the error escaped from the event loop's
// callback (Bun ended the process).
for (const where of ["request", "released"]) {
  test(`BlockDevice: a signal whose removeEventListener throws loses no completion (${where})`, async () => {
    const path = scratchFile(MiB, 3);
    const dev = await BlockDevice.open(path);
    const bufs = Array.from({ length: 8 }, () => dev.allocBuffer(4096));
    const signal = throwingSignal();
    const reads = bufs.map((b, i) =>
      dev.read(i * 4096, b, where === "request" && i === 0 ? { signal } : undefined).then(
        () => "resolved",
        (e) => String(e),
      )
    );
    const wait = where === "released"
      ? dev.released(bufs[0], { signal }).then(() => "released", (e) => String(e))
      : Promise.resolve("released");
    assert.deepEqual(await within(3000, Promise.all(reads)), bufs.map(() => "resolved"));
    assert.equal(await within(3000, wait), "released");
    assert.equal(await within(3000, dev.close().then(() => "closed")), "closed");
  });
}

/**
 * A signal whose addEventListener, the caller's own code, throws (`throws`) or aborts the signal
 * before adding the listener (`aborts`): the listener then never fires.
 */
function listeningSignal(kind: "throws" | "aborts"): AbortSignal {
  const ac = new AbortController();
  const signal = ac.signal;
  Object.defineProperty(signal, "addEventListener", {
    value(this: AbortSignal, ...args: Parameters<AbortSignal["addEventListener"]>) {
      if (kind === "throws") throw new Error("the caller's addEventListener threw");
      ac.abort();
      return EventTarget.prototype.addEventListener.apply(this, args);
    },
  });
  return signal;
}

/** What a call did: "threw" synchronously, "resolved", or its rejection. */
async function outcomeOf(call: () => Promise<unknown>): Promise<unknown> {
  let p: Promise<unknown>;
  try {
    p = call();
  } catch (e) {
    return `threw ${e}`;
  }
  return await p.then(() => "resolved", (e) => e);
}

// The abort listener was added after the request was queued. When the signal's addEventListener
// threw, read() threw although its request went on (a caller that took the throw for a failed
// read would reuse a buffer the kernel still filled); when it aborted the signal, the request ran
// as if it had not been. The listener now comes first: either way the request rejects and never
// reaches the device.
for (const kind of ["throws", "aborts"] as const) {
  for (const op of ["read", "write"] as const) {
    test(`BlockDevice: a ${op} whose signal's addEventListener ${kind} rejects and never starts`, async () => {
      const path = scratchFile(MiB);
      writeFileSync(path, new Uint8Array(MiB).fill(0x5a));
      const dev = await BlockDevice.open(path);
      try {
        const buf = dev.allocBuffer(4096).fill(0xc3);
        const signal = listeningSignal(kind);
        const outcome = await outcomeOf(() =>
          op === "read" ? dev.read(0, buf, { signal }) : dev.write(0, buf, { signal })
        );
        if (kind === "throws") {
          assert.ok(outcome instanceof BlkioError, `outcome: ${outcome}`);
          assert.equal(outcome.code, "EINVAL");
          assert.match(outcome.message, /signal could not be listened to/);
        } else assert.equal((outcome as Error).name, "AbortError", `outcome: ${outcome}`);
        // Nothing in flight uses the buffer, and later requests on the same queue do not take
        // the first one with them.
        await dev.released(buf);
        const other = dev.allocBuffer(4096);
        await dev.read(4096, other);
        await dev.flush();
        assert.equal(other[0], 0x5a);
        assert.ok(buf.every((b) => b === 0xc3), "the read reached the buffer");
        assert.ok(
          readFileSync(path).subarray(0, 4096).every((b) => b === 0x5a),
          "the write reached the file",
        );
        // The device still takes requests with a signal.
        await dev.read(0, buf, { signal: new AbortController().signal });
        assert.equal(buf[0], 0x5a);
      } finally {
        await dev.close();
      }
    });
  }
}

// released() added its listener inside the promise's executor: a throwing addEventListener made it
// reject with the caller's error, and left the signal's watch behind without a listener.
test("BlockDevice: released() with a signal whose addEventListener throws rejects EINVAL", async () => {
  const path = scratchFile(MiB, 3);
  await using dev = await BlockDevice.open(path);
  const buf = dev.allocBuffer(4096);
  const read = dev.read(0, buf);
  const outcome = await outcomeOf(() => dev.released(buf, { signal: listeningSignal("throws") }));
  assert.ok(outcome instanceof BlkioError, `outcome: ${outcome}`);
  assert.equal(outcome.code, "EINVAL");
  await read;
  await dev.released(buf, { signal: new AbortController().signal });
});

// A Proxy of an AbortSignal passes instanceof; on Bun its `aborted` and addEventListener throw
// (ERR_INVALID_THIS), and read() and released() threw synchronously. They now reject EINVAL there;
// Deno's AbortSignal works through a Proxy.
test("BlockDevice: a Proxy of an AbortSignal never makes a request or released() throw", async () => {
  const path = scratchFile(MiB, 3);
  await using dev = await BlockDevice.open(path);
  const buf = dev.allocBuffer(4096);
  const ac = new AbortController();
  const signal = new Proxy(ac.signal, {});
  const pending = dev.read(4096, buf);
  for (const call of [() => dev.read(0, buf, { signal }), () => dev.released(buf, { signal })]) {
    const outcome = await outcomeOf(call);
    if ("Bun" in globalThis) {
      assert.ok(outcome instanceof BlkioError, `outcome: ${outcome}`);
      assert.equal(outcome.code, "EINVAL");
    } else assert.equal(outcome, "resolved");
  }
  await pending;
});

// io_uring_enter failing for good (EINVAL, EBADF: nothing that passes) left a queue's requests
// pending for ever, retried every millisecond (697 enters in 500 ms on Deno), with nothing to tell
// the caller. They now reject with the error, and later requests go to the other queues.
test("BlockDevice: a queue whose io_uring_enter fails for good rejects its requests, and so do later ones", async () => {
  const path = scratchFile(MiB, 3);
  const dev = await BlockDevice.open(path);
  const bufs = Array.from({ length: 8 }, () => dev.allocBuffer(4096));
  let enters = 0;
  await withFailingEnters(() => (enters++, -EINVAL), async () => {
    const reads = bufs.map((b, i) => dev.read(i * 4096, b).then(() => "resolved", (e) => e));
    const outcomes = await within(2000, Promise.all(reads));
    assert.notEqual(outcomes, "pending", `the reads never settled (${enters} enters)`);
    for (const e of outcomes as unknown[]) {
      assert.ok(e instanceof BlkioError, `outcome: ${e}`);
      assert.equal(e.code, "EINVAL");
      assert.match(e.message, /^Read at offset \d+ failed: EINVAL \(the device's queue 0 failed: /);
    }
    const tried = enters;
    await sleep(50);
    assert.ok(enters - tried <= 1, `${enters - tried} more enters after the queue failed`);
    const later = await within(1000, dev.write(0, bufs[0]).then(() => "resolved", (e) => e));
    assert.ok(later instanceof BlkioError && later.code === "EINVAL", `later: ${later}`);
    assert.match(later.message, /every queue failed/);
    assert.equal(await within(3000, dev.close().then(() => "closed")), "closed");
  });
  assert.notEqual(await within(1000, dev.released(bufs[0]).then(() => "released", (e) => e.code)), "pending");
});

test("BlockDevice: requests go to the queues left when one's io_uring_enter fails for good", async () => {
  const path = scratchFile(MiB, 3);
  await using dev = await BlockDevice.open(path, { queues: 2 });
  const bufs = Array.from({ length: 16 }, () => dev.allocBuffer(4096));
  let failing = -1;
  await withFailingEnters((toSubmit, ring) => {
    if (failing < 0 && toSubmit > 0) failing = ring;
    return ring === failing ? -EINVAL : undefined;
  }, async () => {
    // Spread over both queues: those on the failing one reject, the others read the file.
    const first = await within(
      2000,
      Promise.all(bufs.map((b, i) => dev.read(i * 4096, b).then(() => "resolved", (e) => e.code))),
    );
    assert.notEqual(first, "pending");
    const failed = (first as string[]).filter((o) => o === "EINVAL").length;
    assert.ok(failed > 0 && failed < 16, `outcomes: ${first}`);
    assert.equal(
      failed + (first as string[]).filter((o) => o === "resolved").length,
      16,
      `outcomes: ${first}`,
    );
    // Later requests all go to the queue left.
    const later = await within(
      2000,
      Promise.all(bufs.map((b, i) => dev.read(i * 4096, b).then(() => "resolved"))),
    );
    assert.deepEqual(later, bufs.map(() => "resolved"));
    assert.ok(bufs.every((b) => b.every((x) => x === 3)), "wrong data");
  });
});

test("block_device_rare_paths: cleanup scratch files", () => cleanupAll());
