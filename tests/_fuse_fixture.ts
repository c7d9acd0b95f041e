/**
 * tests/fixtures/no_zero_range_fuse.c, built and mounted: a FUSE file system of one file kept in
 * a backing file. By default its daemon refuses FALLOC_FL_ZERO_RANGE (as a daemon without that
 * mode does); `zeroRange` passes it on, and `shortReads` makes reads now and then return fewer
 * bytes than asked (never none), as FUSE daemons, network file systems among them, may;
 * `badRanges` fail with EIO (or `badErrno`). Used by tests/faults.test.ts, tests/cancel.test.ts and
 * the fuzzer's `fuse-short` and `fuse-eio` targets.
 *
 * @module
 */
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

/** Why the fixture cannot be built and mounted here, or null. */
export function fuseFixtureUnavailable(): string | null {
  if (typeof process.getuid !== "function" || process.getuid() !== 0) return "FUSE mounts need root";
  if (!existsSync("/dev/fuse")) return "no /dev/fuse";
  if (spawnSync("sh", ["-c", "command -v cc"], { stdio: "ignore" }).status !== 0) {
    return "no C compiler (cc) to build the FUSE daemon";
  }
  if (!existsSync("/usr/include/fuse3/fuse.h")) return "no libfuse3 headers (apt-get install libfuse3-dev)";
  return null;
}

export interface FuseFixtureOptions {
  /** Pass FALLOC_FL_ZERO_RANGE on instead of refusing it. */
  zeroRange?: boolean;
  /** About one read in three returns fewer bytes than asked (seeded: the same each run). */
  shortReads?: boolean;
  /**
   * Byte ranges `[start, end)` (up to 16) where every read, write and fallocate fails with EIO,
   * touching nothing, as on a disk with bad sectors (the file is then direct_io). Each read or
   * write refused so is logged ("refused read", "refused write").
   */
  badRanges?: readonly (readonly [number, number])[];
  /** The errno the bad ranges fail with, EIO (5) by default. */
  badErrno?: number;
  /** More options for the daemon (`-o attr_timeout=0`). */
  fuseOptions?: string[];
}

export interface FuseFixture {
  /** The file on the mount. */
  file: string;
  pid: number;
  /**
   * Each fallocate mode the daemon was asked for, one a line, "fsync" for each fsync, and each
   * read or write of a bad range it refused.
   */
  log: string;
  /** Resumes the daemon if it was stopped and unmounts (idempotent). */
  stop(): void;
}

/** Builds the daemon in `dir` and mounts it over `backing` at `dir`/mnt. */
export function mountFuseFixture(dir: string, backing: string, o: FuseFixtureOptions = {}): FuseFixture {
  const bin = join(dir, "no_zero_range_fuse");
  const source = fileURLToPath(new URL("./fixtures/no_zero_range_fuse.c", import.meta.url));
  // The daemon keeps 16: more would be left out without a word, and the fuzzer's model then wrong.
  if ((o.badRanges?.length ?? 0) > 16) throw new Error("the FUSE fixture takes at most 16 bad ranges");
  execFileSync("cc", ["-O2", "-o", bin, source, "-I/usr/include/fuse3", "-lfuse3", "-lpthread"]);
  const mnt = join(dir, "mnt");
  mkdirSync(mnt);
  const log = join(dir, "modes.log");
  const env = {
    ...process.env,
    ...(o.zeroRange ? { FUSE_FIXTURE_ZERO_RANGE: "1" } : {}),
    ...(o.shortReads ? { FUSE_FIXTURE_SHORT_READS: "1" } : {}),
    ...(o.badRanges ? { FUSE_FIXTURE_BAD: o.badRanges.map(([s, e]) => `${s}-${e}`).join(",") } : {}),
    ...(o.badErrno !== undefined ? { FUSE_FIXTURE_BAD_ERRNO: String(o.badErrno) } : {}),
  };
  // The daemon mounts, then goes to the background: not a child of this process, whose
  // runtime's own child processes (one that resumes it, say) died before they ran when a
  // stopped daemon was the test process's child (seen on Bun and Deno).
  execFileSync(bin, [backing, log, mnt, "-s", ...(o.fuseOptions ?? [])], { env });
  const pid = daemonOf(bin);
  let stopped = false;
  return {
    file: join(mnt, "disk.img"),
    pid,
    log,
    stop() {
      if (stopped) return;
      stopped = true;
      try {
        process.kill(pid, "SIGCONT"); // a test that failed may have left it stopped
      } catch {
        // gone already
      }
      unmount(mnt);
    },
  };
}

/** The pid of the process running `bin` (its /proc/PID/exe). */
function daemonOf(bin: string): number {
  for (const entry of readdirSync("/proc")) {
    if (!/^[0-9]+$/.test(entry)) continue;
    try {
      if (readlinkSync(`/proc/${entry}/exe`) === bin) return Number(entry);
    } catch {
      // not ours to read, or gone
    }
  }
  throw new Error(`no process runs ${bin}`);
}

export function sleepMs(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

export function isMounted(path: string): boolean {
  for (const line of readFileSync("/proc/self/mountinfo", "utf8").split("\n")) {
    if (line.split(" ")[4] === path) return true;
  }
  return false;
}

/**
 * Unmounts `path`, retrying while it is busy: io_uring tears rings down in a kernel worker, so
 * the files they used stay open for a moment after the instance is destroyed.
 */
export function unmount(path: string): void {
  for (let i = 0; i < 100 && isMounted(path); i++) {
    if (spawnSync("umount", [path], { stdio: "ignore" }).status === 0) return;
    sleepMs(50);
  }
  if (isMounted(path)) spawnSync("umount", ["-l", path], { stdio: "ignore" });
}
