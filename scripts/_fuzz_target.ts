/**
 * The fuzzer's targets: a scratch file (buffered or O_DIRECT) and, as root, a loop device over
 * a tmpfs file (buffered or O_DIRECT), each made fresh for one run with known contents, and
 * removed afterwards.
 *
 * @module
 */
import { execFileSync } from "node:child_process";
import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdtempSync,
  openSync,
  readSync,
  rmSync,
  statfsSync,
  statSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import process from "node:process";

/** The target kinds, as `--target` takes them. */
export const TARGET_NAMES = ["file", "file+direct", "loop", "loop+direct"] as const;
export type TargetName = typeof TARGET_NAMES[number];

const TMPFS_MAGIC = 0x01021994;

/** One target made for a run. */
export interface FuzzTarget {
  name: TargetName;
  path: string;
  direct: boolean;
  isBlockDevice: boolean;
  /** Size in bytes when made. */
  size: number;
  /**
   * O_DIRECT writes that could tear are refused before submission (a misaligned start or length,
   * or a piece finer than the DMA alignment): block devices, and files on a file system over one
   * (the library asks statx; tmpfs takes any alignment).
   */
  directWritesChecked: boolean;
  /** Removes what was made (idempotent). */
  cleanup(): void;
}

/** Why `name` cannot be made here, or null. */
export function targetUnavailable(name: TargetName): string | null {
  if (!name.startsWith("loop")) return null;
  if (typeof process.getuid !== "function" || process.getuid() !== 0) {
    return "loop devices need root (losetup)";
  }
  if (!existsSync("/dev/loop-control")) return "no /dev/loop-control (loop driver not loaded)";
  try {
    execFileSync("losetup", ["--version"], { stdio: "ignore" });
  } catch {
    return "losetup (util-linux) is not installed";
  }
  return null;
}

/**
 * Makes target `name` holding `initial` (its size). Files go in `dir` (default: the temp
 * directory); a loop device's backing file goes in /dev/shm.
 */
export function makeTarget(name: TargetName, initial: Uint8Array, dir = tmpdir()): FuzzTarget {
  const direct = name.endsWith("+direct");
  if (name.startsWith("file")) {
    const scratch = mkdtempSync(join(dir, "blkio-fuzz-"));
    const path = join(scratch, "disk.img");
    writeFileSync(path, initial);
    return {
      name,
      path,
      direct,
      isBlockDevice: false,
      size: initial.length,
      directWritesChecked: direct && statfsSync(scratch).type !== TMPFS_MAGIC,
      cleanup: () => rmSync(scratch, { recursive: true, force: true }),
    };
  }
  // The name carries the pid, as tests/_helpers.ts's do, so a later run can tell it is stale.
  const back = join("/dev/shm", `blkio-loop-${process.pid}-fuzz-${Date.now()}.img`);
  writeFileSync(back, initial);
  let dev: string;
  try {
    dev = execFileSync("losetup", ["--find", "--show", "--sector-size", "512", back], { encoding: "utf8" })
      .trim();
  } catch (e) {
    rmSync(back, { force: true });
    throw e;
  }
  let done = false;
  return {
    name,
    path: dev,
    direct,
    isBlockDevice: true,
    size: initial.length,
    directWritesChecked: direct,
    cleanup: () => {
      if (done) return;
      done = true;
      try {
        execFileSync("losetup", ["-d", dev], { stdio: "ignore" });
      } finally {
        rmSync(back, { force: true });
      }
    },
  };
}

/**
 * Target `name` over `path`, a scratch file or loop device someone else made (and removes: the
 * test suite's helpers), after writing `initial` at its start. A file is cut to `initial`'s
 * length; a loop device must be exactly that long.
 */
export function adoptTarget(name: TargetName, path: string, initial: Uint8Array): FuzzTarget {
  const isBlockDevice = statSync(path).isBlockDevice();
  if (isBlockDevice !== name.startsWith("loop")) throw new Error(`${path} is no target of kind ${name}`);
  if (!isBlockDevice) writeFileSync(path, initial);
  else {
    const fd = openSync(path, "r+");
    try {
      for (let done = 0; done < initial.length;) {
        done += writeSync(fd, initial, done, initial.length - done, done);
      }
      // Written back before an O_DIRECT instance reads it.
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }
  const direct = name.endsWith("+direct");
  return {
    name,
    path,
    direct,
    isBlockDevice,
    size: initial.length,
    directWritesChecked: direct && (isBlockDevice || statfsSync(dirname(path)).type !== TMPFS_MAGIC),
    cleanup: () => {},
  };
}

/**
 * Reads `len` bytes at 0 of `path` through node:fs, an independent path (past the end of a
 * file: zeroes).
 */
export function readThroughFs(path: string, len: number): Uint8Array {
  const buf = new Uint8Array(len);
  const fd = openSync(path, "r");
  try {
    let done = 0;
    while (done < len) {
      const n = readSync(fd, buf, done, len - done, done);
      if (n === 0) break;
      done += n;
    }
  } finally {
    closeSync(fd);
  }
  return buf;
}
