/**
 * Helpers for the I/O request tests (write, write_zeroes, flags, queue_full, poll_queues,
 * completion_fd, timeout, growing_file): moving data in and out of a target by a path that
 * works with O_DIRECT, bounded waits, and reading a completion eventfd on both runtimes.
 */
import assert from "./_assert.ts";
import { readFileSync, readSync } from "node:fs";
import type { Blkio, Completion, Queue } from "../mod.ts";
import { requireNative } from "../src/native.ts";
import { alignedBuffer, pread, pwrite, RUNTIME, type Target } from "./_helpers.ts";

export const PAGE = 4096;
const EAGAIN = 11;
const SLEEPER = new Int32Array(new SharedArrayBuffer(4));

/** Sleeps the thread for `ms` milliseconds. */
export function sleepMs(ms: number): void {
  Atomics.wait(SLEEPER, 0, 0, ms);
}

/** A deterministic byte pattern: byte i of the pattern with `seed`. */
export function pattern(len: number, seed: number): Uint8Array {
  const p = new Uint8Array(len);
  for (let i = 0; i < len; i++) p[i] = (i * 31 + seed * 17 + (i >> 9)) & 0xff;
  return p;
}

/**
 * Reaps `count` completions with doIo(min 1), failing (ETIME) rather than hanging when the
 * queue stops producing them for `timeoutMs`. Returns copies in arrival order.
 */
export function reapAll(q: Queue, count: number, max = 64, timeoutMs = 20_000): Completion[] {
  const all: Completion[] = [];
  const out: Completion[] = [];
  while (all.length < count) {
    const n = q.doIo(out, 1, Math.min(max, count - all.length), BigInt(timeoutMs) * 1_000_000n);
    assert.ok(n >= 1, `doIo(min 1) returned ${n}`);
    for (let i = 0; i < n; i++) all.push({ ...out[i] });
  }
  return all;
}

/** Runs one request to completion and asserts it succeeded. */
export function runOk(q: Queue, submit: (userData: unknown) => void, what: string): void {
  const tag = { what };
  submit(tag);
  const [c] = reapAll(q, 1, 1);
  assert.equal(c.userData, tag, `${what}: completion of another request`);
  assert.equal(c.ret, 0, `${what}: ret ${c.ret} ${c.errorMsg}`);
  assert.equal(c.errorMsg, null, `${what}: errorMsg on success`);
}

/**
 * Puts `data` at `offset` of the target by a route independent of the request under test:
 * node:fs for buffered targets; for O_DIRECT targets, node:fs too (the kernel writes the page
 * cache back before a direct read of the range).
 */
export function putData(t: Target, offset: number, data: Uint8Array): void {
  pwrite(t.path, offset, data);
}

/**
 * Reads `len` bytes at `offset`: through node:fs on buffered targets (cross-check by another
 * path), through a library read into an aligned buffer on O_DIRECT targets (a buffered read
 * could see stale page cache there).
 */
export function getData(t: Target, b: Blkio, q: Queue, offset: number, len: number): Uint8Array {
  if (!t.direct) return pread(t.path, offset, len);
  const buf = alignedBuffer(b, len);
  buf.fill(0xee);
  runOk(q, (ud) => q.read(offset, buf, ud), `read back ${len} at ${offset}`);
  return buf.slice();
}

/** The `flags:` field of /proc/self/fdinfo/<fd> (octal). */
export function fdinfoFlags(fd: number): number {
  const text = readFileSync(`/proc/self/fdinfo/${fd}`, "utf8");
  const m = /^flags:\s*([0-7]+)$/m.exec(text);
  assert.ok(m, `no flags line in fdinfo of ${fd}: ${text}`);
  return parseInt(m[1], 8);
}

/**
 * Tries to read the 8-byte eventfd counter of `fd` once: its value, or 0n when it is not
 * readable (EAGAIN). Bun's node:fs takes raw fds; Deno's node:fs only takes its own resource
 * ids, so there the library's libc binding reads it.
 */
export function tryReadEventfd(fd: number): bigint {
  const buf = new Uint8Array(8);
  if (RUNTIME === "bun") {
    try {
      assert.equal(readSync(fd, buf, 0, 8, null), 8);
    } catch (e) {
      if ((e as { code?: string }).code === "EAGAIN") return 0n;
      throw e;
    }
    return new DataView(buf.buffer).getBigUint64(0, true);
  }
  const native = requireNative();
  const r = native.libc.read(fd, buf, 8n);
  if (r === 8n) return new DataView(buf.buffer).getBigUint64(0, true);
  const errno = native.errno();
  if (r < 0n && errno === EAGAIN) return 0n;
  throw new Error(`read(eventfd ${fd}) returned ${r}, errno ${errno}`);
}

/** Waits until eventfd `fd` is readable and reads it (resets it); fails after `timeoutMs`. */
export function waitEventfd(fd: number, timeoutMs = 10_000): bigint {
  const deadline = performance.now() + timeoutMs;
  for (let spins = 0;; spins++) {
    const v = tryReadEventfd(fd);
    if (v > 0n) return v;
    assert.ok(performance.now() < deadline, `completion fd ${fd} not readable after ${timeoutMs} ms`);
    if (spins > 100) sleepMs(1);
  }
}
