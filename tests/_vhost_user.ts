/**
 * qemu-storage-daemon exports for the virtio-blk-vhost-user tests: a raw image file in a
 * scratch directory exported as a vhost-user-blk Unix socket. Every daemon a test file starts is
 * stopped when the file ends (cleanupAll, or process exit), also after a failure.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { atExit } from "./_helpers.ts";

export const QSD = "qemu-storage-daemon";
const SLEEPER = new Int32Array(new SharedArrayBuffer(4));

function hasCommand(cmd: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" }).status === 0;
}

/** Why vhost-user exports cannot be made here, or undefined when they can. */
export function qsdSkipReason(): string | undefined {
  if (typeof process.getuid !== "function" || process.getuid() !== 0) {
    return "the vhost-user tests run qemu-storage-daemon and need root";
  }
  if (!hasCommand(QSD)) return `${QSD} is not installed (apt-get install qemu-system-common)`;
  return undefined;
}

/** One running export. */
export interface VhostUserExport {
  /** The vhost-user socket: the driver's `path`. */
  socket: string;
  /** The raw image behind it (read it directly to cross-check). */
  image: string;
  size: number;
  pid: number;
  /** Whether the daemon still runs. */
  alive(): boolean;
  /** SIGKILL, and wait until the process is gone. */
  kill(): void;
  /** SIGTERM (SIGKILL after 2 s) and remove the scratch directory; idempotent. */
  stop(): void;
}

const running: VhostUserExport[] = [];

/** Stops every daemon this test file started. Safe to call twice. */
export function stopAllExports(): void {
  for (const e of running.splice(0)) {
    try {
      e.stop();
    } catch {
      // best effort: a leftover daemon must not fail the run
    }
  }
}
atExit(stopAllExports);
// A runner stopped by a signal (a CI timeout) skips "exit": stop the daemons, then die as asked.
for (const [sig, code] of [["SIGINT", 130], ["SIGTERM", 143], ["SIGHUP", 129]] as const) {
  process.once(sig, () => {
    stopAllExports();
    process.exit(code);
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie (not yet reaped by init) is as good as gone.
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, "utf8"));
  } catch {
    return false;
  }
}

function waitGone(pid: number, ms: number): boolean {
  const deadline = performance.now() + ms;
  while (alive(pid)) {
    if (performance.now() > deadline) return false;
    Atomics.wait(SLEEPER, 0, 0, 10);
  }
  return true;
}

/** Options of {@link startExport}. */
export interface ExportOptions {
  size?: number;
  writable?: boolean;
  numQueues?: number;
  /** Initial contents (default: zeroes, as a sparse file). */
  fill?: (image: Uint8Array) => void;
  /** Throttle the export to this many requests per second (slow requests on demand). */
  iops?: number;
  /** Let discards and write zeroes that may unmap free the image's blocks (`discard=unmap`). */
  unmap?: boolean;
  /** A blkdebug configuration (its file's text) between the image and the export: injected errors. */
  blkdebug?: string;
}

/**
 * Starts a daemon exporting a new raw image of `size` bytes over vhost-user-blk with
 * `numQueues` queues.
 */
export function startExport(opts: ExportOptions = {}): VhostUserExport {
  const size = opts.size ?? 8 << 20;
  const dir = mkdtempSync(join(tmpdir(), "blkio-vhost-"));
  const image = join(dir, "img.raw");
  const socket = join(dir, "vhost.sock");
  const pidfile = join(dir, "qsd.pid");
  if (opts.fill) {
    const data = new Uint8Array(size);
    opts.fill(data);
    writeFileSync(image, data);
  } else {
    writeFileSync(image, "");
    execFileSync("truncate", ["-s", String(size), image]);
  }
  const writable = opts.writable ?? true;
  const args = [
    "--blockdev",
    `driver=file,node-name=file0,filename=${image},cache.direct=off${writable ? "" : ",read-only=on"}` +
    (opts.unmap ? ",discard=unmap" : ""),
  ];
  let node = "file0";
  if (opts.blkdebug !== undefined) {
    const conf = join(dir, "blkdebug.conf");
    writeFileSync(conf, opts.blkdebug);
    args.push("--blockdev", `driver=blkdebug,node-name=dbg0,config=${conf},image=${node}`);
    node = "dbg0";
  }
  if (opts.iops !== undefined) {
    args.push("--object", `throttle-group,id=tg0,limits.iops-total=${opts.iops}`);
    args.push("--blockdev", `driver=throttle,node-name=thr0,throttle-group=tg0,file=${node}`);
    node = "thr0";
  }
  args.push(
    "--export",
    `type=vhost-user-blk,id=exp0,node-name=${node},addr.type=unix,addr.path=${socket},` +
      `writable=${writable ? "on" : "off"},num-queues=${opts.numQueues ?? 2}`,
    "--daemonize",
    "--pidfile",
    pidfile,
  );
  try {
    // With --daemonize the socket exists once the command returns.
    execFileSync(QSD, args, { stdio: ["ignore", "ignore", "pipe"], timeout: 30_000 });
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    const stderr = (e as { stderr?: Buffer }).stderr?.toString() ?? "";
    throw new Error(`${QSD} failed to start: ${stderr || (e as Error).message}`);
  }
  const pid = Number(readFileSync(pidfile, "utf8").trim());
  let stopped = false;
  const exp: VhostUserExport = {
    socket,
    image,
    size,
    pid,
    alive: () => alive(pid),
    kill() {
      if (alive(pid)) process.kill(pid, "SIGKILL");
      waitGone(pid, 5000);
    },
    stop() {
      if (stopped) return;
      stopped = true;
      if (alive(pid)) {
        process.kill(pid, "SIGTERM");
        if (!waitGone(pid, 2000)) {
          process.kill(pid, "SIGKILL");
          waitGone(pid, 2000);
        }
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  running.push(exp);
  if (!existsSync(socket)) {
    exp.stop();
    throw new Error(`${QSD} did not create ${socket}`);
  }
  return exp;
}
