/**
 * What the child scripts share: the tests/_*.ts that a test runs as a process of its own, under a
 * limit it sets for that process alone (RLIMIT_MEMLOCK, RLIMIT_NOFILE, a pids cgroup, no
 * capabilities), and that print one JSON line. Only the library and node:fs, so that a child
 * under a thread or fd limit loads nothing it does not use (not _helpers.ts and its scratch
 * targets).
 *
 * @module
 */
import { Blkio, BlkioError } from "../mod.ts";
import { openSync, readFileSync } from "node:fs";

/** Properties of {@link openInstance}'s instance; the defaults are the driver's. */
export interface InstanceOptions {
  /** "io_uring" by default. */
  driver?: string;
  direct?: boolean;
  sqpoll?: boolean;
  numQueues?: number;
  numEntries?: number;
  /** false: connected only. */
  start?: boolean;
}

/**
 * An instance on `path`, connected and started. One that fails on the way is destroyed before
 * the error is thrown: a child counting how many instances a limit holds keeps none half made.
 */
export function openInstance(path: string, opts: InstanceOptions = {}): Blkio {
  const b = Blkio.create(opts.driver ?? "io_uring");
  try {
    b.setStr("path", path);
    if (opts.direct !== undefined) b.setBool("direct", opts.direct);
    if (opts.sqpoll !== undefined) b.setBool("sqpoll", opts.sqpoll);
    b.connect();
    if (opts.numQueues !== undefined) b.setInt("num-queues", opts.numQueues);
    if (opts.numEntries !== undefined) b.setInt("num-entries", opts.numEntries);
    if (opts.start !== false) b.start();
    return b;
  } catch (e) {
    b.destroy();
    throw e;
  }
}

/**
 * Makes and destroys `n` instances with `open`, one after another: how many were made, and the
 * messages of those that failed.
 */
export function openCycles(n: number, open: () => Blkio): { ok: number; failures: string[] } {
  const failures: string[] = [];
  let ok = 0;
  for (let i = 0; i < n; i++) {
    try {
      open().destroy();
      ok++;
    } catch (e) {
      failures.push((e as Error).message);
    }
  }
  return { ok, failures };
}

/** Opens /dev/null until this process's fd table is full; the fds it took, for the child to close. */
export function fillFdTable(): number[] {
  const held: number[] = [];
  try {
    for (;;) held.push(openSync("/dev/null", "r"));
  } catch {
    // the table is full
  }
  return held;
}

/** A failure as the children report it: the errno name of a BlkioError (else the error's text), and its message. */
export function failure(e: unknown): { code: string; message: string } {
  return { code: e instanceof BlkioError ? e.code : String(e), message: (e as Error).message };
}

/**
 * The cgroup this process is in now, in the hierarchy (v1's pids controller, or v2) holding
 * `cgroup`: where a child that moved itself into `cgroup` goes back to.
 */
export function homeCgroup(cgroup: string): string {
  const v1 = cgroup.startsWith("/sys/fs/cgroup/pids/");
  const line = readFileSync("/proc/self/cgroup", "utf8").split("\n")
    .find((l) => (v1 ? /^\d+:([^:]*,)?pids(,[^:]*)?:/ : /^0::/).test(l))!;
  return `${v1 ? "/sys/fs/cgroup/pids" : "/sys/fs/cgroup"}${line.slice(line.lastIndexOf(":") + 1)}`
    .replace(/\/$/, "");
}
