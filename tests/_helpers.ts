/**
 * Test helpers shared by every test file: scratch targets (a regular file and a loop device
 * over a tmpfs file, each buffered and O_DIRECT), errno assertions, and driving a queue to
 * completion. Runs unchanged under `deno test` and `bun test`.
 *
 * Tests are flat top-level `test()` calls (both runners count them the same way) and decide
 * skips when they are registered, with a reason.
 */
import assert from "./_assert.ts";
import { test } from "node:test";
import {
  closeSync,
  existsSync,
  fstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  rmdirSync,
  rmSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { execFileSync, spawnSync } from "node:child_process";
import { release, tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { Blkio, BlkioError, type Completion, ReqFlags } from "../mod.ts";
import { attachLoop as attachLoopDevice, loopUnavailableReason, tmpfsLoop } from "./_loop_device.ts";
import { native } from "../ffi/load.ts";

/** A device under test. */
export interface Target {
  /** Short label used in test names: "file", "file+direct", "loop", "loop+direct". */
  name: string;
  path: string;
  direct: boolean;
  isBlockDevice: boolean;
  /** Size in bytes when created. */
  size: number;
}

/** The runtime running the tests. */
export const RUNTIME = "Bun" in globalThis ? "bun" : "deno";

/**
 * Whether every instruction is emulated (scripts/kernel_test.sh's guest under qemu's TCG, which
 * sets BLKIO_TEST_EMULATED=1): there the thread runs 10-30 times longer for the same work, so a
 * bound on how long code ran (not on how long it slept) measures the emulation, not the library.
 */
export const EMULATED = process.env.BLKIO_TEST_EMULATED === "1";

const cleanups: (() => void)[] = [];

/**
 * Removes every scratch file and loop device made since the last call. Safe to call twice.
 * `bun test` runs all files in one process with one instance of this module, so each file's
 * cleanup test must remove what that file made, not only the first file's.
 */
export function cleanupAll(): void {
  for (const f of cleanups.splice(0).reverse()) {
    try {
      f();
    } catch {
      // best effort: a leftover scratch file must not fail the run
    }
  }
}

/**
 * Runs `fn` when the test process ends. Deno's test runner never emits the process's "exit"; it
 * dispatches "unload" at the end of each file, also when a filter left the file's cleanup test out.
 */
export function atExit(fn: () => void): void {
  process.on("exit", fn);
  if ("Deno" in globalThis) globalThis.addEventListener("unload", fn);
}
atExit(cleanupAll);

/** A new scratch directory in `parent`, the default temp file system by default (removed at the end). */
export function scratchDir(parent = tmpdir()): string {
  const dir = mkdtempSync(join(parent, "blkio-test-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A new file of `size` bytes filled with `fill` (default zeroes) in a scratch directory. */
export function scratchFile(size = 2 * 1024 * 1024, fill = 0, dir = scratchDir()): string {
  const path = join(dir, "disk.img");
  writeFileSync(path, new Uint8Array(size).fill(fill));
  return path;
}

export { loopUnavailableReason };

/**
 * A loop device over a new tmpfs file of `size` bytes of zeroes (`sectorSize`-byte sectors),
 * written out or, when `sparse`, a hole (sizes beyond memory).
 */
export function scratchLoop(size = 8 * 1024 * 1024, sparse = false, sectorSize = 512): string {
  const loop = tmpfsLoop(sparse ? size : new Uint8Array(size), "test", sectorSize);
  cleanups.push(loop.detach);
  return loop.path;
}

/**
 * A loop device over `back` (512-byte sectors), detached at the cleanup. `back` may itself be a
 * loop device: a loop device over a block device takes its discard from the lower device's write
 * zeroes, which is how a test makes a device lose discard.
 */
export function attachLoop(back: string): string {
  const loop = attachLoopDevice(back);
  cleanups.push(loop.detach);
  return loop.path;
}

/**
 * Makes loop device `dev` (over a tmpfs file) lose write zeroes, as a disk does after a failed
 * WRITE SAME: the loop device passes a NO_UNMAP zeroing (ZERO_RANGE) to its file, which cannot,
 * and turns write zeroes off. Instances connected before keep what they saw at connect.
 */
export function loseWriteZeroes(dev: string): void {
  assert.ok(dropWriteZeroes(dev), `${dev} kept write zeroes: nothing to test`);
}

/**
 * What {@link loseWriteZeroes} does, without the assertion: whether the device lost write zeroes,
 * as sysfs says (not the library, whose refusals some tests are about).
 */
export function dropWriteZeroes(dev: string): boolean {
  {
    using b = startOn({ path: dev, direct: false });
    const q = b.getQueue(0)!;
    q.writeZeroes(0, 4096, "drop", ReqFlags.NO_UNMAP);
    reap(q, 1);
  }
  return writeZeroesMaxBytes(dev) === 0;
}

let keepsWriteZeroes: string | null | undefined;

/**
 * Why no loop device can be made to lose write zeroes here ({@link loseWriteZeroes}), or null.
 * A loop device turns write zeroes off once its file refused one only since Linux 6.10 (commit
 * "loop: Disable fallocate() zero and discard if not supported"); before, it goes on advertising
 * them and fails each NO_UNMAP zeroing of a tmpfs file. Asked of a loop device, once a process.
 */
export function loseWriteZeroesUnavailableReason(): string | null {
  if (keepsWriteZeroes !== undefined) return keepsWriteZeroes;
  keepsWriteZeroes = loopUnavailableReason();
  if (keepsWriteZeroes !== null) return keepsWriteZeroes;
  const loop = tmpfsLoop(1 << 16, "keeps-zeroes");
  try {
    keepsWriteZeroes = dropWriteZeroes(loop.path) ? null : `the loop devices of Linux ${release()} keep ` +
      "write zeroes after their file refused one (turned off from 6.10 on): no device can lose them";
  } finally {
    loop.detach();
  }
  return keepsWriteZeroes;
}

/** Whether the running kernel is Linux `major`.`minor` or later (os.release()). */
export function kernelAtLeast(major: number, minor: number): boolean {
  const [a, b] = release().split(".").map((p) => parseInt(p, 10));
  return a > major || (a === major && b >= minor);
}

/**
 * Runs `fn` while every open(2) of the library fails EMFILE, as at the process's fd limit: sysfs,
 * /proc and a second open file of a target cannot be opened meanwhile. Restores open after.
 */
export function withoutFreeFds<T>(fn: () => T): T {
  const n = native!;
  const libc = n.libc as { open: typeof n.libc.open };
  const open = libc.open, errno = n.errno;
  try {
    libc.open = () => -1;
    (n as { errno: () => number }).errno = () => 24;
    return fn();
  } finally {
    libc.open = open;
    (n as { errno: () => number }).errno = errno;
  }
}

/** Block device `dev`'s sysfs write_zeroes_max_bytes (0: it has no write zeroes command of its own). */
export function writeZeroesMaxBytes(dev: string): number {
  return Number(
    readFileSync(`/sys/block/${dev.slice(dev.lastIndexOf("/") + 1)}/queue/write_zeroes_max_bytes`, "utf8"),
  );
}

/**
 * How many flushes block device `dev` has completed (field 16 of /sys/block/<dev>/stat, Linux
 * 5.5 and later): whether FUA and flush requests reached the device shows nowhere else.
 */
export function loopFlushes(dev: string): number {
  const name = dev.slice(dev.lastIndexOf("/") + 1);
  const fields = readFileSync(`/sys/block/${name}/stat`, "utf8").trim().split(/\s+/);
  if (fields.length < 17) throw new Error(`no flush counter in /sys/block/${name}/stat (Linux < 5.5)`);
  return Number(fields[15]);
}

/**
 * The name and options of a test that is skipped when `why` gives a reason. Neither runner
 * prints a skip's reason (Deno lists the test as "ignored", Bun as "(skip) name"), so it goes in
 * the name. Skips are decided here, when the test is registered: a `t.skip()` inside the test
 * counts as a pass on Deno.
 *
 * @example `test(...skipIf("reads a loop device", loopUnavailableReason()), () => {...})`
 */
export function skipIf(
  name: string,
  why: string | null | undefined | false,
): [string, { skip: string | false }] {
  return why ? [`${name} (skipped: ${why})`, { skip: why }] : [name, { skip: false }];
}

/** Why a tmpfs cannot be mounted here (not root), or null. */
export const MOUNT_SKIP = typeof process.getuid === "function" && process.getuid() === 0
  ? null
  : "mounting a tmpfs needs root";

/**
 * Runs `fn` with a 1 MiB tmpfs mounted read-only on a new scratch directory, holding `files`
 * (name to contents); unmounts it afterwards (retried while the kernel still holds it busy).
 */
export async function withReadOnlyMount(
  files: Record<string, Uint8Array>,
  fn: (dir: string) => Promise<void> | void,
): Promise<void> {
  const dir = scratchDir();
  execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", dir]);
  try {
    for (const [name, data] of Object.entries(files)) writeFileSync(join(dir, name), data);
    execFileSync("mount", ["-o", "remount,ro", dir]);
    await fn(dir);
  } finally {
    for (let i = 0; i < 50 && spawnSync("umount", [dir]).status !== 0; i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/**
 * Runs the tests' child script `script` (a file name in tests/) on this runtime behind `wrapper`
 * (a command that runs what follows it, such as `prlimit --nofile=256`) with `args`, and returns
 * the last line it printed, parsed as JSON. The child must exit 0.
 */
// deno-lint-ignore no-explicit-any
export function runChild(script: string, args: string[], wrapper: string[] = []): any {
  const path = new URL(`./${script}`, import.meta.url).pathname;
  const runtime = "Bun" in globalThis ? [process.execPath, path] : [process.execPath, "run", "-A", path];
  const [cmd, ...rest] = [...wrapper, ...runtime, ...args];
  const r = spawnSync(cmd, rest, { encoding: "utf8", timeout: 120_000 });
  assert.equal(r.status, 0, `${script}: ${r.error ?? r.stderr}`);
  return JSON.parse(r.stdout.trim().split("\n").at(-1)!);
}

/** Why a child cannot be run as root without `caps` (with util-linux's `tools`), or null. */
export function childWithoutUnavailable(caps: string, tools: string[]): string | null {
  if (typeof process.getuid !== "function" || process.getuid() !== 0) {
    return `dropping ${caps} from a child's bounding set needs root`;
  }
  for (const tool of tools) {
    if (spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0) return `no ${tool}(1) (util-linux)`;
  }
  return null;
}

/** Where a pids cgroup can be made (cgroup v1's pids hierarchy, or v2 with pids), or why not. */
export function pidsCgroupBase(): { base: string } | { skip: string } {
  if (typeof process.getuid !== "function" || process.getuid() !== 0) {
    return { skip: "making a pids cgroup needs root" };
  }
  if (existsSync("/sys/fs/cgroup/pids/cgroup.procs")) return { base: "/sys/fs/cgroup/pids" };
  try {
    const v2 = readFileSync("/sys/fs/cgroup/cgroup.subtree_control", "utf8");
    if (v2.split(/\s+/).includes("pids")) return { base: "/sys/fs/cgroup" };
  } catch {
    // no cgroup v2 at /sys/fs/cgroup
  }
  return { skip: "no pids cgroup controller to make a cgroup in" };
}

/**
 * Runs `fn` with a new pids cgroup `<base>/<name>-<pid>` (for a child to move into), removed
 * after: a child's threads may still be leaving it, so its removal is tried for a second.
 */
export function inPidsCgroup<T>(base: string, name: string, fn: (dir: string) => T): T {
  const dir = `${base}/${name}-${process.pid}`;
  mkdirSync(dir);
  try {
    return fn(dir);
  } finally {
    for (let i = 0; i < 50; i++) {
      try {
        rmdirSync(dir);
        break;
      } catch {
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
      }
    }
  }
}

/**
 * The targets device tests run against: a regular file (buffered and O_DIRECT) and, as root,
 * a loop device over tmpfs (buffered and O_DIRECT). Where loop devices cannot be used, a
 * skipped test says so (`announce`: register it; false inside a test).
 */
export function targets(size = 8 * 1024 * 1024, announce = true): Target[] {
  const file = scratchFile(size);
  const out: Target[] = [
    { name: "file", path: file, direct: false, isBlockDevice: false, size },
    { name: "file+direct", path: file, direct: true, isBlockDevice: false, size },
  ];
  const why = loopUnavailableReason();
  if (why !== null && announce) {
    test(...skipIf("the loop-device variants of this file's tests", why), () => {});
  }
  if (why === null) {
    const dev = scratchLoop(size);
    out.push(
      { name: "loop", path: dev, direct: false, isBlockDevice: true, size },
      { name: "loop+direct", path: dev, direct: true, isBlockDevice: true, size },
    );
  }
  return out;
}

/** Creates, configures and connects an io_uring instance for `t` (not started). */
export function connectTo(t: Pick<Target, "path" | "direct">, opts: { readOnly?: boolean } = {}): Blkio {
  const b = Blkio.create("io_uring");
  b.setStr("path", t.path);
  b.setBool("direct", t.direct);
  if (opts.readOnly) b.setBool("read-only", true);
  b.connect();
  return b;
}

/** Connects and starts an instance for `t`. */
export function startOn(
  t: Pick<Target, "path" | "direct">,
  opts: { readOnly?: boolean; numQueues?: number; numEntries?: number } = {},
): Blkio {
  const b = connectTo(t, opts);
  if (opts.numQueues !== undefined) b.setInt("num-queues", opts.numQueues);
  if (opts.numEntries !== undefined) b.setInt("num-entries", opts.numEntries);
  b.start();
  return b;
}

/**
 * A buffer of `len` bytes aligned to `align` (for O_DIRECT), from a memory region when the
 * instance is given, else over-allocated JS memory.
 */
export function alignedBuffer(b: Blkio, len: number): Uint8Array {
  const align = Math.max(Number(b.getUint64("mem-region-alignment")), 4096);
  const size = Math.ceil(len / align) * align;
  return b.allocMemRegion(size).bytes.subarray(0, len);
}

/** Asserts that `fn` throws BlkioError with `code` and a non-empty message. */
export function assertErrno(fn: () => unknown, code: string, message?: RegExp): BlkioError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof BlkioError, `expected BlkioError ${code}, got ${caught}`);
  assert.equal(caught.code, code, `expected ${code}, got ${caught.code}: ${caught.message}`);
  assert.ok(caught.message.length > 0, "error message must not be empty");
  if (message) assert.match(caught.message, message);
  return caught;
}

/** Runs `doIo` until `count` completions arrived; returns them in arrival order. */
export function reap(
  q: { doIo(out: Completion[], min: number, max?: number): number },
  count: number,
): Completion[] {
  const all: Completion[] = [];
  const out: Completion[] = [];
  while (all.length < count) {
    const n = q.doIo(out, 1, Math.min(64, count - all.length));
    for (let i = 0; i < n; i++) all.push({ ...out[i] });
  }
  return all;
}

/**
 * Sector-stamped contents: block s starts with s (u32 LE), then bytes derived from s, so a block
 * read from the wrong place or half-written shows.
 */
export function stamped(blocks: number, blockLen: number): Uint8Array {
  const data = new Uint8Array(blocks * blockLen);
  const dv = new DataView(data.buffer);
  for (let s = 0; s < blocks; s++) {
    const o = s * blockLen;
    for (let j = 4; j < blockLen; j++) data[o + j] = (s * 13 + j) & 0xff;
    dv.setUint32(o, s, true);
  }
  return data;
}

/** Reads the whole file or device at `path` with node:fs (for cross-checks). */
export function pread(path: string, offset: number, len: number): Uint8Array {
  const fd = openSync(path, "r");
  try {
    const buf = new Uint8Array(len);
    let done = 0;
    while (done < len) {
      const n = readSyncAt(fd, buf, done, offset + done);
      if (n === 0) break;
      done += n;
    }
    return buf;
  } finally {
    closeSync(fd);
  }
}

function readSyncAt(fd: number, buf: Uint8Array, off: number, pos: number): number {
  return readSync(fd, buf, off, buf.length - off, pos);
}

/** Writes `data` at `offset` of `path` with node:fs (for cross-checks). */
export function pwrite(path: string, offset: number, data: Uint8Array): void {
  const fd = openSync(path, "r+");
  try {
    let done = 0;
    while (done < data.length) done += writeSync(fd, data, done, data.length - done, offset + done);
  } finally {
    closeSync(fd);
  }
}

/** This thread's time spent waiting for a CPU so far in ms (/proc/thread-self/schedstat), or 0 if unknown. */
function runQueueMs(): number {
  try {
    const ns = Number(readFileSync("/proc/thread-self/schedstat", "utf8").split(" ")[1]);
    return Number.isFinite(ns) ? ns / 1e6 : 0;
  } catch {
    return 0;
  }
}

/**
 * This thread's time on a CPU so far in ms (/proc/thread-self/schedstat), or wall-clock time where
 * the kernel does not say: how long computation took, whatever else the machine was running.
 */
export function threadCpuMs(): number {
  try {
    const ns = Number(readFileSync("/proc/thread-self/schedstat", "utf8").split(" ")[0]);
    if (Number.isFinite(ns)) return ns / 1e6;
  } catch {
    // no schedstat: fall back to wall-clock time
  }
  return performance.now();
}

/**
 * A clock in ms that stands still while this thread waits for a CPU: wall-clock time less the
 * time the scheduler kept the thread runnable but off every CPU. On an idle machine it runs with
 * performance.now(); on a busy one (2 vCPUs shared with other work) it counts only what the
 * thread ran or slept by itself, which is what a limit on how long something held the thread
 * must measure. It reads schedstat at most once a millisecond (a read costs 50-80 µs).
 */
export function threadClock(): () => number {
  let wall = -Infinity, queued = 0;
  return () => {
    const now = performance.now();
    if (now - wall >= 1) {
      wall = now;
      queued = runQueueMs();
    }
    return now - queued;
  };
}

/** This thread's time on a CPU and waiting for one so far in ms (/proc/thread-self/schedstat), or null if unknown. */
function schedMs(): [number, number] | null {
  try {
    const [run, queued] = readFileSync("/proc/thread-self/schedstat", "utf8").split(" ").map(Number);
    return Number.isFinite(run) && Number.isFinite(queued) ? [run / 1e6, queued / 1e6] : null;
  } catch {
    return null;
  }
}

/**
 * A 5 ms interval that counts its ticks and its largest gap until stopped: how long the event
 * loop was held. `maxGap` is wall-clock time; `maxHeld` is the same gap on {@link threadClock},
 * without the time a busy machine kept this thread from a CPU; `maxBlocked` is the longest
 * time between two ticks that the thread neither ran nor waited for a CPU (asleep in a system
 * call: a submission that waits in the kernel), which does not grow on a slow machine (qemu's
 * TCG, where the time the thread runs grows 10-30 times); wall-clock time where the kernel does
 * not say. Each counts the stretch from the last tick to stop(), so an event loop held for the
 * whole watch shows as one long gap.
 */
export function watchInterval(): {
  ticks: number;
  maxGap: number;
  maxHeld: number;
  maxBlocked: number;
  stop(): void;
} {
  let last = performance.now(), lastSched = schedMs();
  const gap = () => {
    const now = performance.now(), sched = schedMs();
    const wall = now - last;
    const run = sched && lastSched ? sched[0] - lastSched[0] : 0;
    const queued = sched && lastSched ? sched[1] - lastSched[1] : 0;
    w.maxGap = Math.max(w.maxGap, wall);
    w.maxHeld = Math.max(w.maxHeld, wall - queued);
    w.maxBlocked = Math.max(w.maxBlocked, wall - run - queued);
    last = now;
    lastSched = sched;
  };
  const w = {
    ticks: 0,
    maxGap: 0,
    maxHeld: 0,
    maxBlocked: 0,
    stop: () => {
      clearInterval(timer);
      gap();
    },
  };
  const timer = setInterval(() => {
    gap();
    w.ticks++;
  }, 5);
  return w;
}

/**
 * Runs `again` (a second close or destroy) with the fd numbers just freed taken by 64 files of
 * the program's own, and asserts it closed none of them: an fd closed twice closes whatever file
 * got that number since.
 */
export async function assertClosesNoneOfOurs(what: string, again: () => unknown): Promise<void> {
  const fds: number[] = [];
  for (let i = 0; i < 64; i++) fds.push(openSync("/dev/null", "r"));
  try {
    await again();
    for (const fd of fds) assert.doesNotThrow(() => fstatSync(fd), `fd ${fd} was closed by ${what}`);
  } finally {
    for (const fd of fds) {
      try {
        closeSync(fd);
      } catch {
        // already closed by `again`: the assertion above failed
      }
    }
  }
}
