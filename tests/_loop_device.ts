/**
 * Loop devices over tmpfs files, made one way for the tests, the fuzzer, the soak and the
 * benchmarks: 512-byte sectors, a backing file whose name carries the maker's pid (so that a
 * later run can tell a device left by a killed process and detach it), and no device whose
 * discard someone else's test turned off. Also loop devices over ramfs files, which have
 * neither discard nor write zeroes.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { unmount } from "./_fuse_fixture.ts";

/** A loop device and how to remove it. */
export interface LoopDevice {
  /** The device, `/dev/loopN`. */
  path: string;
  /** The file it is attached over. */
  backing: string;
  /** Detaches the device (and any passed over while attaching it); removes the backing file if made here. Idempotent. */
  detach(): void;
}

let serial = 0;

/** Why loop devices cannot be used here, or null when they can. */
export function loopUnavailableReason(): string | null {
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
 * A loop device over a new file in /dev/shm holding `contents`: those bytes, or that many bytes
 * of zeroes left sparse. `tag` goes into the file's name, after the pid. `sectorSize`: the
 * device's logical block size.
 */
export function tmpfsLoop(contents: Uint8Array | number, tag = "test", sectorSize = 512): LoopDevice {
  detachStaleLoops();
  const back = join("/dev/shm", `blkio-loop-${process.pid}-${tag}-${serial++}.img`);
  let loop: LoopDevice;
  try {
    writeFileSync(back, typeof contents === "number" ? new Uint8Array(0) : contents);
    if (typeof contents === "number") truncateSync(back, contents);
    loop = attachLoop(back, sectorSize);
  } catch (e) {
    // A write that failed half-way (ENOSPC on /dev/shm, EBADF from Deno's fd table) leaves the file.
    rmSync(back, { force: true });
    throw e;
  }
  return {
    path: loop.path,
    backing: back,
    detach: () => {
      try {
        loop.detach();
      } finally {
        rmSync(back, { force: true });
      }
    },
  };
}

/**
 * A loop device like {@link tmpfsLoop}'s, over a file on a ramfs mount of its own: ramfs has no
 * fallocate, so the loop device advertises neither discard nor write zeroes
 * (`discard_max_bytes` and `write_zeroes_max_bytes` 0), as many disks do. Every discard fails
 * EOPNOTSUPP, and the kernel zeroes a range by writing zero buffers unless told not to.
 */
export function bareLoop(contents: Uint8Array | number, tag = "test", sectorSize = 512): LoopDevice {
  detachStaleLoops();
  unmountStaleRamfs();
  const mount = mkdtempSync(join(tmpdir(), `blkio-ramfs-${process.pid}-`));
  let loop: LoopDevice | null = null;
  const detach = () => {
    try {
      loop?.detach();
    } finally {
      // The loop device lets go of its file a moment after it is detached: unmount retries.
      unmount(mount);
      rmSync(mount, { recursive: true, force: true });
    }
  };
  try {
    execFileSync("mount", ["-t", "ramfs", "-o", "mode=0700", "ramfs", mount], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    const back = join(mount, `blkio-loop-${process.pid}-${tag}-${serial++}.img`);
    writeFileSync(back, typeof contents === "number" ? new Uint8Array(0) : contents);
    if (typeof contents === "number") truncateSync(back, contents);
    loop = attachLoop(back, sectorSize);
    const queue = `/sys/block/${loop.path.slice(loop.path.lastIndexOf("/") + 1)}/queue`;
    for (const limit of ["discard_max_bytes", "write_zeroes_max_bytes"]) {
      const value = readFileSync(`${queue}/${limit}`, "utf8").trim();
      if (value !== "0") {
        throw new Error(`${loop.path} over ramfs has ${limit} ${value}: it is no bare device`);
      }
    }
    return { path: loop.path, backing: back, detach };
  } catch (e) {
    detach();
    throw e;
  }
}

/** Unmounts the ramfs mounts of {@link bareLoop} whose maker no longer exists (killed before its cleanup ran). */
function unmountStaleRamfs(): void {
  for (const line of readFileSync("/proc/self/mounts", "utf8").split("\n")) {
    const [, at, type] = line.split(" ");
    const pid = Number(/\/blkio-ramfs-(\d+)-[^/]*$/.exec(at ?? "")?.[1] ?? NaN);
    if (type !== "ramfs" || !Number.isInteger(pid) || pid === process.pid || alive(pid)) continue;
    unmount(at);
    rmSync(at, { recursive: true, force: true });
  }
}

/** Why ramfs loop devices ({@link bareLoop}) cannot be made here, or null when they can. */
export function bareLoopUnavailableReason(): string | null {
  const loop = loopUnavailableReason();
  if (loop !== null) return loop;
  return /\sramfs$/m.test(readFileSync("/proc/filesystems", "utf8")) ? null : "the kernel has no ramfs";
}

/**
 * A loop device over `back` (`sectorSize`-byte sectors, 512 unless told; the file stays). `back` may itself be a loop
 * device: a loop device over a block device takes its discard from the lower device's write
 * zeroes, which is how a test makes a device lose discard.
 */
export function attachLoop(back: string, sectorSize = 512): LoopDevice {
  const attached: string[] = [];
  let done = false;
  const detach = () => {
    if (done) return;
    done = true;
    let failure: unknown = null;
    for (const dev of attached.reverse()) {
      try {
        execFileSync("losetup", ["-d", dev], { stdio: "ignore" });
      } catch (e) {
        failure ??= e;
      }
    }
    if (failure !== null) throw failure;
  };
  try {
    for (let tries = 0;; tries++) {
      const dev = execFileSync("losetup", ["--find", "--show", "--sector-size", String(sectorSize), back], {
        encoding: "utf8",
      }).trim();
      attached.push(dev);
      // A capped device stays attached until detach(), so that --find passes over it.
      if (tries === 8 || !discardCapped(dev)) return { path: dev, backing: back, detach };
    }
  } catch (e) {
    detach();
    throw e;
  }
}

/**
 * Whether loop device `dev` had its discard turned off through sysfs (0 written to
 * discard_max_bytes, by someone else's test of a device without discard): the kernel keeps that
 * limit when the device is attached to another file, and refuses any other value until the device
 * is removed and added again (LOOP_CTL_REMOVE, LOOP_CTL_ADD).
 * Such a device discards and zeroes unlike a fresh one.
 */
function discardCapped(dev: string): boolean {
  const queue = `/sys/block/${dev.slice(dev.lastIndexOf("/") + 1)}/queue`;
  const read = (name: string) => Number(readFileSync(`${queue}/${name}`, "utf8").trim());
  return read("discard_max_bytes") === 0 && read("discard_max_hw_bytes") > 0;
}

/** The backing file of loop device `dev` as losetup lists it (sysfs), or null when detached. */
function loopBackingFile(dev: string): string | null {
  try {
    return readFileSync(`/sys/block/${dev.slice(dev.lastIndexOf("/") + 1)}/loop/backing_file`, "utf8").trim();
  } catch {
    return null;
  }
}

/** Whether process `pid` still exists. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as { code?: string }).code === "EPERM";
  }
}

/**
 * Detaches loop devices left behind by earlier runs: over deleted blkio-loop files, or made by
 * a process that no longer exists (killed before its cleanup ran).
 */
function detachStaleLoops(): void {
  let out = "";
  try {
    out = execFileSync("losetup", ["-l", "-n", "-O", "NAME,BACK-FILE"], { encoding: "utf8" });
  } catch {
    return;
  }
  for (const line of out.split("\n")) {
    const [name, ...rest] = line.trim().split(/\s+/);
    const back = rest.join(" ");
    if (!name || !back.includes("/blkio-loop-")) continue;
    const pid = Number(/\/blkio-loop-(\d+)-/.exec(back)?.[1] ?? NaN);
    const orphan = Number.isInteger(pid) && pid !== process.pid && !alive(pid);
    if (back.includes("(deleted)") || !existsSync(back) || orphan) {
      // Its owner may have detached it since the list was taken, and another process attached
      // the same device anew: detached by name, that device went from under its user (a helper's
      // fuzzer run lost its loop device while other test runs went on beside it). So only while
      // it is still over the file listed.
      if (loopBackingFile(name) !== back) continue;
      try {
        execFileSync("losetup", ["-d", name], { stdio: "ignore" });
      } catch {
        // already gone
      }
      if (orphan) rmSync(back, { force: true });
    }
  }
}
