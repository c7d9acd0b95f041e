/**
 * The fuzzer's targets: a scratch file (buffered or O_DIRECT) and, as root, a loop device over
 * a tmpfs file (buffered or O_DIRECT; 512-byte sectors, or 4 KiB for `loop-4k`), a loop device
 * over a ramfs file (`loop-bare`, buffered or O_DIRECT: a device without discard or write zeroes), a
 * qemu-storage-daemon vhost-user-blk export of a raw image (`vhost-user`), or a file on a FUSE
 * daemon whose reads now and then return fewer bytes than asked (`fuse-short`: the driver must go
 * on from where each stopped) or that fails what touches a few bad ranges with EIO (`fuse-eio`),
 * the export behind a blkdebug node with a few bad sectors (`vhost-eio`), or a file on a tmpfs
 * with no room to spare (`tmpfs-full`, buffered or O_DIRECT, which tmpfs takes from Linux 6.6:
 * writes into holes run out of room, often part-way, and the kernel reports that as a short count
 * the driver goes on from), each made fresh for one run with known contents, and removed afterwards.
 *
 * @module
 */
import { execFileSync, spawnSync } from "node:child_process";
import {
  closeSync,
  fsyncSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  realpathSync,
  rmSync,
  statfsSync,
  statSync,
  truncateSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import process from "node:process";
import { kernelAtLeast } from "./_fuzz_expect.ts";
import type { ReplayLog } from "./_fuzz_log.ts";
import type { Rng } from "./_fuzz_rng.ts";
import {
  bareLoop,
  bareLoopUnavailableReason,
  loopUnavailableReason,
  tmpfsLoop,
} from "../tests/_loop_device.ts";
import { fuseFixtureUnavailable, mountFuseFixture, unmount } from "../tests/_fuse_fixture.ts";
import { injectError } from "../tests/_blkdebug.ts";

const MiB = 1024 * 1024;

/** The target kinds, as `--target` takes them. */
export const TARGET_NAMES = [
  "file",
  "file+direct",
  "loop",
  "loop+direct",
  "loop-4k",
  "loop-4k+direct",
  "loop-bare",
  "loop-bare+direct",
  "vhost-user",
  "fuse-short",
  "tmpfs-full",
  "tmpfs-full+direct",
  "fuse-eio",
  "vhost-eio",
] as const;
export type TargetName = typeof TARGET_NAMES[number];

const TMPFS_MAGIC = 0x01021994;

/** The flushes loop device `dev` completed (field 16 of its stat; Linux 5.5 and later). */
function loopFlushes(dev: string): number {
  const fields = readFileSync(`/sys/block/${dev.slice(dev.lastIndexOf("/") + 1)}/stat`, "utf8").trim().split(
    /\s+/,
  );
  if (fields.length < 17) throw new Error(`no flush counter in /sys/block of ${dev} (Linux < 5.5)`);
  return Number(fields[15]);
}

/** One target made for a run. */
export interface FuzzTarget {
  name: TargetName;
  /** The driver: io_uring, or virtio-blk-vhost-user for `vhost-user`. */
  driver: "io_uring" | "virtio-blk-vhost-user";
  /** The driver's `path`: the file, the loop device, or the export's socket. */
  path: string;
  /** What node:fs reads to cross-check: `path`, or the export's raw image. */
  image: string;
  /** The back-end's process (vhost-user), or null. */
  pid: number | null;
  direct: boolean;
  isBlockDevice: boolean;
  /** Size in bytes when made, of the part the fuzzer uses (from `base`). */
  size: number;
  /**
   * Where that part starts: 0, or (`--base`) far into a sparse target of `base + size` bytes,
   * whose bytes below it nothing touches (requests go to `base` plus their offset in the model).
   */
  base: number;
  /** The device's logical block size (block devices: what write zeroes and discard align to). */
  blockSize: number;
  /**
   * O_DIRECT writes that could tear are refused before submission (a misaligned start or length,
   * or a piece finer than the DMA alignment): block devices, and files on a file system over one
   * (the library asks statx; tmpfs takes any alignment).
   */
  directWritesChecked: boolean;
  /**
   * `BlockDevice.capacity` stays what it was at open (reading the size may wait for a FUSE
   * daemon, so BlockDevice keeps the size it read at open: Driver.capacityMayWait).
   */
  capacityFixedAtOpen: boolean;
  /**
   * The file system runs out of room now and then (`tmpfs-full`): a write may fail ENOSPC after
   * it landed in part.
   */
  spaceLimited: boolean;
  /**
   * A block device without discard or write zeroes (`loop-bare`): every discard fails EOPNOTSUPP,
   * and a write zeroes is written as zero buffers by the kernel, or refused with NO_FALLBACK.
   */
  bareDevice: boolean;
  /**
   * Byte ranges `[start, end)` where requests fail EIO: the daemon's bad ranges (`fuse-eio`), or
   * the first byte of each bad sector (`vhost-eio`).
   */
  badRanges: readonly (readonly [number, number])[];
  /**
   * How many syncs the back-end has been asked for so far, or null where that cannot be seen: the
   * flushes a loop device completed (field 16 of /sys/block/loopN/stat), the fsyncs the FUSE
   * daemon of `fuse-short` logged. A flush, or a FUA write that succeeded, must have raised it.
   */
  syncs: (() => number) | null;
  /** Removes what was made (idempotent). */
  cleanup(): void;
}

function isRoot(): boolean {
  return typeof process.getuid === "function" && process.getuid() === 0;
}

/** Why `name` cannot be made here, or null. */
export function targetUnavailable(name: TargetName): string | null {
  if (name === "vhost-user" || name === "vhost-eio") {
    if (!isRoot()) return "the vhost-user export runs qemu-storage-daemon and needs root";
    if (spawnSync("sh", ["-c", `command -v ${QSD}`], { stdio: "ignore" }).status !== 0) {
      return `${QSD} is not installed (apt-get install qemu-system-common)`;
    }
    return null;
  }
  if (name === "fuse-short" || name === "fuse-eio") return fuseFixtureUnavailable();
  if (name.startsWith("tmpfs-full")) {
    if (!isRoot()) return "mounting a tmpfs needs root";
    if (spawnSync("sh", ["-c", "command -v mount && command -v umount"], { stdio: "ignore" }).status !== 0) {
      return "mount/umount are not installed";
    }
    // Before Linux 6.6 (Debian 12's 6.1), tmpfs refuses O_DIRECT: the open fails EINVAL.
    if (name === "tmpfs-full+direct" && !kernelAtLeast(6, 6)) return "O_DIRECT on tmpfs needs Linux 6.6";
    return null;
  }
  if (name.startsWith("loop-bare")) return bareLoopUnavailableReason();
  if (!name.startsWith("loop")) return null;
  return loopUnavailableReason();
}

/**
 * Whether target kind `name` can be made with a `base` (sparse below it): not a FUSE daemon's
 * file, a tmpfs whose room is the target's size, nor a loop device over ramfs.
 */
function takesBase(name: TargetName): boolean {
  return !name.startsWith("fuse-") && !name.startsWith("tmpfs-full") && !name.startsWith("loop-bare");
}

/** The targets that can be made with a `base`. */
export const BASE_TARGETS: readonly TargetName[] = TARGET_NAMES.filter(takesBase);

/**
 * Makes target `name` holding `initial` (its size), at `base` of a sparse target that much
 * longer. Files go in `dir` (default: the temp directory); a loop device's backing file goes in
 * /dev/shm.
 */
export function makeTarget(name: TargetName, initial: Uint8Array, dir = tmpdir(), base = 0): FuzzTarget {
  if (base === 0) return makeAtZero(name, initial, dir);
  if (!BASE_TARGETS.includes(name)) throw new Error(`a ${name} target cannot be made with a base`);
  if (base % 4096 !== 0) throw new Error(`base ${base} is not a multiple of 4096`);
  if (name === "vhost-user" || name === "vhost-eio") return startExport(name, initial, dir, base);
  const empty = new Uint8Array(0);
  const t = makeAtZero(name, empty, dir, base + initial.length);
  try {
    writeAt(t.image, initial, base);
  } catch (e) {
    t.cleanup();
    throw e;
  }
  return { ...t, size: initial.length, base };
}

function makeAtZero(name: TargetName, initial: Uint8Array, dir: string, sparse = 0): FuzzTarget {
  const direct = name.endsWith("+direct");
  if (name === "vhost-user" || name === "vhost-eio") return startExport(name, initial, dir);
  if (name === "fuse-short" || name === "fuse-eio") return fuseTarget(name, initial, dir);
  if (name.startsWith("tmpfs-full")) return fullTmpfs(name, initial, dir);
  if (name.startsWith("file")) {
    const scratch = mkdtempSync(join(dir, "blkio-fuzz-"));
    const path = join(scratch, "disk.img");
    writeFileSync(path, initial);
    if (sparse > 0) truncateSync(path, sparse);
    return ioUringTarget(
      name,
      path,
      false,
      initial.length,
      direct && statfsSync(scratch).type !== TMPFS_MAGIC,
      () => rmSync(scratch, { recursive: true, force: true }),
    );
  }
  if (name.startsWith("loop-bare")) {
    const loop = bareLoop(initial, "fuzz");
    return { ...ioUringTarget(name, loop.path, true, initial.length, direct, loop.detach), bareDevice: true };
  }
  const loop = tmpfsLoop(sparse > 0 ? sparse : initial, "fuzz", sectorSize(name));
  return ioUringTarget(name, loop.path, true, initial.length, direct, loop.detach);
}

/**
 * Where `fuse-eio` fails, in a target of `size` bytes: three ranges inside it, one of a 512-byte
 * sector, one across a page boundary at no sector boundary, one of two pages.
 */
function badRangesOf(size: number): [number, number][] {
  const at = (f: number) => Math.floor(size * f / 4096) * 4096;
  return [[at(0.25) + 512, at(0.25) + 1024], [at(0.5) + 3000, at(0.5) + 5200], [at(0.75), at(0.75) + 8192]];
}

/**
 * Where `vhost-eio` fails, in a target of `size` bytes: blkdebug fails every request that holds
 * the first byte of one of these sectors, three in the first MiB (at 30%, 55% and 80% of it) and,
 * on a target over 16 MiB, one at 30% of it, so that a long zeroing across that one fails
 * part-way, after its 16 MiB chunks above it were done.
 */
function badSectorsOf(size: number): number[] {
  const span = Math.min(MiB, size);
  const sectors = [0.3, 0.55, 0.8].map((f) => Math.floor(span * f / 512));
  if (size > 16 * MiB) sectors.push(Math.floor(size * 0.3 / 512));
  return sectors;
}

/**
 * A file on tests/fixtures/no_zero_range_fuse.c (every fallocate mode passed on), whose daemon
 * returns fewer bytes than asked in about one read in three (`fuse-short`; a short write cannot be
 * had: io_uring completes it with EIO), or fails whatever touches a few bad ranges with EIO
 * (`fuse-eio`); node:fs cross-checks its backing file.
 */
function fuseTarget(name: "fuse-short" | "fuse-eio", initial: Uint8Array, dir: string): FuzzTarget {
  const scratch = mkdtempSync(join(realpathSync(dir), "blkio-fuzz-fuse-"));
  const backing = join(scratch, "backing.img");
  writeFileSync(backing, initial);
  let fuse: ReturnType<typeof mountFuseFixture>;
  const remove = () => rmSync(scratch, { recursive: true, force: true });
  try {
    fuse = mountFuseFixture(scratch, backing, {
      zeroRange: true,
      shortReads: name === "fuse-short",
      badRanges: name === "fuse-eio" ? badRangesOf(initial.length) : undefined,
    });
  } catch (e) {
    remove();
    throw e;
  }
  const t = ioUringTarget(name, fuse.file, false, initial.length, false, () => {
    fuse.stop();
    remove();
  });
  return {
    ...t,
    image: backing,
    badRanges: name === "fuse-eio" ? badRangesOf(initial.length) : [],
    // fuse-eio fails every fsync it gets with nothing: its log is not read.
    syncs: name === "fuse-short" ? logCounter(fuse.log, "fsync") : null,
  };
}

/**
 * How many lines of log file `path` are `line` so far: each call reads only what was appended
 * since the last (the log grows all run, and is asked at every flush and FUA write).
 */
function logCounter(path: string, line: string): () => number {
  let count = 0, done = 0, tail = "";
  return () => {
    const fd = openSync(path, "r");
    try {
      const chunk = new Uint8Array(64 * 1024);
      for (let n; (n = readSync(fd, chunk, 0, chunk.length, done)) > 0; done += n) {
        const lines = (tail + new TextDecoder().decode(chunk.subarray(0, n))).split("\n");
        tail = lines.pop()!;
        for (const l of lines) if (l === line) count++;
      }
    } finally {
      closeSync(fd);
    }
    return count;
  };
}

/**
 * A file holding `initial` on a new tmpfs that a second file fills up (`tmpfs-full`): the only
 * room is what discards and write zeroes free by punching holes, so writes into holes and past
 * the end compete for it, and run out of it part-way. tmpfs takes any alignment with O_DIRECT,
 * so no write is refused up front.
 */
function fullTmpfs(name: TargetName, initial: Uint8Array, dir: string): FuzzTarget {
  const scratch = mkdtempSync(join(realpathSync(dir), "blkio-fuzz-full-"));
  const remove = () => rmSync(scratch, { recursive: true, force: true });
  const size = Math.ceil(initial.length / 4096) * 4096 + 1024 * 1024;
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", `size=${size},mode=0700`, "tmpfs", scratch], {
      stdio: ["ignore", "ignore", "pipe"],
    });
  } catch (e) {
    remove();
    throw e;
  }
  const path = join(scratch, "disk.img");
  let done = false;
  const cleanup = () => {
    if (done) return;
    done = true;
    unmount(scratch);
    remove();
  };
  try {
    writeFileSync(path, initial);
    fillUp(join(scratch, "ballast"));
  } catch (e) {
    cleanup();
    throw e;
  }
  return { ...ioUringTarget(name, path, false, initial.length, false, cleanup), spaceLimited: true };
}

/** Writes file `path` until its file system has no room left. */
function fillUp(path: string): void {
  const fd = openSync(path, "w");
  const chunk = new Uint8Array(64 * 1024);
  try {
    for (let at = 0;; at += 4096) {
      try {
        writeSync(fd, chunk, 0, 4096, at);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "ENOSPC") return;
        throw e;
      }
    }
  } finally {
    closeSync(fd);
  }
}

/** The logical block size of target kind `name`. */
function sectorSize(name: TargetName): number {
  return name.startsWith("loop-4k") ? 4096 : 512;
}

/**
 * Target `name` over `path`, a scratch file or loop device someone else made (and removes: the
 * test suite's helpers), after writing `initial` at its start. A file is cut to `initial`'s
 * length; a loop device must be exactly that long.
 */
export function adoptTarget(name: TargetName, path: string, initial: Uint8Array): FuzzTarget {
  if (
    name.startsWith("vhost-") || name.startsWith("fuse-") || name.startsWith("tmpfs-full") ||
    name.startsWith("loop-bare")
  ) {
    throw new Error(`a ${name} target is always made fresh`);
  }
  const isBlockDevice = statSync(path).isBlockDevice();
  if (isBlockDevice !== name.startsWith("loop")) throw new Error(`${path} is no target of kind ${name}`);
  if (isBlockDevice) {
    const dev = path.slice(path.lastIndexOf("/") + 1);
    const block = Number(readFileSync(`/sys/class/block/${dev}/queue/logical_block_size`, "utf8"));
    if (block !== sectorSize(name)) {
      throw new Error(`${path} has ${block}-byte sectors: no target of kind ${name}`);
    }
  }
  if (!isBlockDevice) writeFileSync(path, initial);
  else writeAt(path, initial, 0);
  const direct = name.endsWith("+direct");
  const checked = direct && (isBlockDevice || statfsSync(dirname(path)).type !== TMPFS_MAGIC);
  return ioUringTarget(name, path, isBlockDevice, initial.length, checked, () => {});
}

/** Writes `data` at `at` of file or device `path`, synced (before an O_DIRECT instance reads it). */
function writeAt(path: string, data: Uint8Array, at: number): void {
  const fd = openSync(path, "r+");
  try {
    for (let done = 0; done < data.length;) done += writeSync(fd, data, done, data.length - done, at + done);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** An io_uring target over `path` (a file or a loop device), read back through `path` itself. */
function ioUringTarget(
  name: TargetName,
  path: string,
  isBlockDevice: boolean,
  size: number,
  directWritesChecked: boolean,
  cleanup: () => void,
): FuzzTarget {
  const direct = name.endsWith("+direct");
  return {
    name,
    driver: "io_uring",
    path,
    image: path,
    pid: null,
    direct,
    isBlockDevice,
    size,
    base: 0,
    blockSize: sectorSize(name),
    directWritesChecked,
    capacityFixedAtOpen: name.startsWith("fuse-"),
    spaceLimited: false,
    bareDevice: false,
    badRanges: [],
    syncs: /^\/dev\/loop\d+$/.test(path) ? () => loopFlushes(path) : null,
    cleanup,
  };
}

const QSD = "qemu-storage-daemon";
const SLEEPER = new Int32Array(new SharedArrayBuffer(4));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, "utf8"));
  } catch {
    return false;
  }
}

/**
 * A qemu-storage-daemon exporting a raw image holding `initial` over vhost-user-blk (2 queues,
 * writable, page cache on: node:fs sees what it wrote), as tests/_vhost_user.ts makes them. The
 * cleanup continues a stopped daemon, ends it and removes the scratch directory. `vhost-eio` puts
 * a blkdebug node between the image and the export that fails every request holding one of a
 * few sectors' first byte with EIO (badSectorsOf), as a disk with bad sectors does. With a
 * `base`, the image is that much longer, sparse below `initial`, and the bad sectors move with it.
 */
function startExport(
  name: "vhost-user" | "vhost-eio",
  initial: Uint8Array,
  dir: string,
  base = 0,
): FuzzTarget {
  const scratch = mkdtempSync(join(realpathSync(dir), "blkio-fuzz-vhost-"));
  const image = join(scratch, "img.raw");
  const socket = join(scratch, "vhost.sock");
  const pidfile = join(scratch, "qsd.pid");
  const bad = name === "vhost-eio" ? badSectorsOf(initial.length) : [];
  let node = "file0";
  const blkdebug: string[] = [];
  try {
    writeFileSync(image, base === 0 ? initial : new Uint8Array(0));
    if (base > 0) {
      truncateSync(image, base + initial.length);
      writeAt(image, initial, base);
    }
    if (bad.length > 0) {
      const conf = join(scratch, "blkdebug.conf");
      const at = base / 512;
      writeFileSync(conf, bad.map((sector) => injectError({ errno: 5, sector: at + sector })).join("\n"));
      blkdebug.push("--blockdev", `driver=blkdebug,node-name=dbg0,config=${conf},image=file0`);
      node = "dbg0";
    }
    // With --daemonize the socket exists once the command returns.
    execFileSync(QSD, [
      "--blockdev",
      `driver=file,node-name=file0,filename=${image},cache.direct=off`,
      ...blkdebug,
      "--export",
      `type=vhost-user-blk,id=exp0,node-name=${node},addr.type=unix,addr.path=${socket},writable=on,num-queues=2`,
      "--daemonize",
      "--pidfile",
      pidfile,
    ], { stdio: ["ignore", "ignore", "pipe"], timeout: 30_000 });
  } catch (e) {
    rmSync(scratch, { recursive: true, force: true });
    throw e;
  }
  const pid = Number(readFileSync(pidfile, "utf8").trim());
  let done = false;
  return {
    name,
    driver: "virtio-blk-vhost-user",
    path: socket,
    image,
    pid,
    direct: false,
    isBlockDevice: true,
    size: initial.length,
    base,
    blockSize: 512,
    directWritesChecked: false,
    capacityFixedAtOpen: false,
    spaceLimited: false,
    bareDevice: false,
    badRanges: bad.map((sector) => [sector * 512, sector * 512 + 1] as const),
    syncs: null,
    cleanup: () => {
      if (done) return;
      done = true;
      try {
        if (alive(pid)) {
          process.kill(pid, "SIGCONT");
          process.kill(pid, "SIGTERM");
          const deadline = performance.now() + 2000;
          while (alive(pid) && performance.now() < deadline) Atomics.wait(SLEEPER, 0, 0, 10);
          if (alive(pid)) process.kill(pid, "SIGKILL");
        }
      } finally {
        rmSync(scratch, { recursive: true, force: true });
      }
    },
  };
}

/**
 * `[start, length]` pieces of at most `chunk` bytes that cover `[0, len)` apart from the target's
 * bad ranges (widened to whole blocks on a block device), in order: what a final read-back can
 * read without EIO.
 */
export function readableSpans(t: FuzzTarget, len: number, chunk: number): [number, number][] {
  const spans: [number, number][] = [];
  const a = t.isBlockDevice ? t.blockSize : 1;
  const bad = t.badRanges.map(([s, e]) => [s - s % a, Math.ceil(e / a) * a] as const)
    .sort((x, y) => x[0] - y[0]);
  let at = 0;
  for (const [s, e] of [...bad, [len, len] as const]) {
    for (const end = Math.min(s, len); at < end; at += Math.min(chunk, end - at)) {
      spans.push([at, Math.min(chunk, end - at)]);
    }
    at = Math.max(at, e);
  }
  return spans;
}

/**
 * Reads `len` bytes at `base` of `path` through node:fs, an independent path (past the end of a
 * file: zeroes).
 */
export function readThroughFs(path: string, len: number, base = 0): Uint8Array {
  const buf = new Uint8Array(len);
  const fd = openSync(path, "r");
  try {
    let done = 0;
    while (done < len) {
      const n = readSync(fd, buf, done, len - done, base + done);
      if (n === 0) break;
      done += n;
    }
  } finally {
    closeSync(fd);
  }
  return buf;
}

/**
 * Stops process `pid` (a vhost-user back-end) for 20-400 ms chosen by `rng`: SIGSTOP now, SIGCONT
 * from a background shell, so that the caller goes on meanwhile. Returns what failed, or null.
 */
export function pauseBackEnd(pid: number, rng: Rng, log: ReplayLog): string | null {
  const ms = rng.range(20, 400);
  const r = spawnSync("sh", ["-c", `kill -STOP ${pid} && (sleep ${ms / 1000}; kill -CONT ${pid}) &`], {
    stdio: "ignore",
  });
  if (r.status !== 0) return `SIGSTOP of the back-end ${pid} failed`;
  log.add(`back-end stopped for ${ms} ms`);
  return null;
}
