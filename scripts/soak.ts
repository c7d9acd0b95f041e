/**
 * Data-integrity soak: mixed reads and writes (also vectored, FUA and flushes) of 4 KiB to
 * 128 KiB at random block offsets, through one queue per target, cycling the queue depth
 * through 1..128 (above the ring's 64 entries the request backlog takes the rest). Every 4 KiB
 * block written carries its own offset, a generation and a checksum of its contents; every block
 * read is checked against them and against the generation the model expects (the last write
 * that completed there). Two requests never overlap while one of them is a write, so the
 * expected content of a read is always known. At the end every block is read once more through
 * the library and once through node:fs (an independent path), and heap size and the number of
 * open fds are compared with their values at the start.
 *
 * Targets: a regular file in the default temp directory (buffered I/O), and, as root, a loop
 * device over a /dev/shm file opened with O_DIRECT.
 *
 * Usage (runs on both runtimes; not part of the quick test suite):
 *   deno run -A scripts/soak.ts [--requests N] [--seconds S] [--seed N] [--json]
 *   bun scripts/soak.ts [--requests N] ...
 * `--requests` is the total over all targets (default 2,000,000); `--seconds` stops earlier (each target gets an equal share of it, after filling the target).
 *
 * @module
 */
import { execFileSync } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readdirSync, readSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import v8 from "node:v8";
import vm from "node:vm";
import { Blkio, type Completion, ReqFlags } from "../mod.ts";
import { tmpfsLoop } from "../tests/_loop_device.ts";

const BLOCK = 4096;
const WORDS = BLOCK / 4;
const MAX_BLOCKS = 32; // 128 KiB
const MAX_DEPTH = 128;
const DEPTHS = [1, 2, 4, 8, 16, 32, 64, 128, 96, 48, 24, 12, 6, 3, 128, 100, 77, 33, 5];

/** What one soak run is asked to do. */
export interface SoakOptions {
  /** Requests over all targets. */
  requests: number;
  /** Stop early after this many seconds (0: no limit). */
  seconds?: number;
  /** Bytes per target (default 64 MiB). */
  size?: number;
  seed?: number;
  /** Which targets (default: both where possible). */
  targets?: ("file" | "loop")[];
  /** Progress lines on stderr. */
  verbose?: boolean;
}

/** The figures of one target. */
export interface TargetReport {
  target: string;
  /** The seed of this target's request stream (rerun with it to repeat a failure). */
  seed: number;
  requests: number;
  reads: number;
  writes: number;
  flushes: number;
  bytes: number;
  blocksVerified: number;
  mismatches: number;
  failures: number;
  firstProblems: string[];
  seconds: number;
}

/** The figures of a whole run. */
export interface SoakReport {
  runtime: string;
  /** Whether heap figures come after forced full collections. */
  gcForced: boolean;
  requests: number;
  mismatches: number;
  failures: number;
  heapStart: number;
  heapEnd: number;
  fdsStart: number;
  fdsEnd: number;
  seconds: number;
  targets: TargetReport[];
}

// ---------------------------------------------------------------------------------------------

/** xorshift32: the payload generator and the workload's random source. */
function xorshift(x: number): number {
  x ^= x << 13;
  x ^= x >>> 17;
  x ^= x << 5;
  return x >>> 0;
}

function seedOf(block: number, gen: number): number {
  return (Math.imul(block + 1, 0x9e3779b1) ^ Math.imul(gen + 1, 0x85ebca77)) >>> 0 || 1;
}

/** Writes block `block`'s stamp for generation `gen` into `w[at..at+1024)`. */
export function stamp(w: Uint32Array, at: number, block: number, gen: number): void {
  const off = block * BLOCK;
  w[at] = off >>> 0;
  w[at + 1] = (off / 4294967296) >>> 0;
  w[at + 2] = gen;
  let x = seedOf(block, gen);
  let h = 0x811c9dc5;
  for (let i = at + 4, end = at + WORDS; i < end; i++) {
    x = xorshift(x);
    w[i] = x;
    h = Math.imul(h ^ x, 0x01000193);
  }
  w[at + 3] = h >>> 0;
}

/** Why `w[at..]` is not block `block` at generation `gen`, or null when it is. */
export function check(w: Uint32Array, at: number, block: number, gen: number): string | null {
  const off = block * BLOCK;
  const gotOff = w[at] + w[at + 1] * 4294967296;
  if (gotOff !== off) return `block ${block}: stamped with offset ${gotOff}, expected ${off}`;
  let h = 0x811c9dc5;
  for (let i = at + 4, end = at + WORDS; i < end; i++) h = Math.imul(h ^ w[i], 0x01000193);
  if (h >>> 0 !== w[at + 3]) {
    return `block ${block}: checksum ${h >>> 0} != stamped ${w[at + 3]} (torn or corrupt)`;
  }
  if (w[at + 2] !== gen) {
    return `block ${block}: generation ${w[at + 2]}, expected ${gen} (stale or lost write)`;
  }
  return null;
}

/** A full collection: Bun.gc, the global gc (--expose-gc), or V8's gc reached through node:vm. */
function findGc(): (() => void) | null {
  const g = globalThis as { gc?: () => void; Bun?: { gc(force: boolean): void } };
  if (g.Bun) return () => g.Bun!.gc(true);
  if (typeof g.gc === "function") return g.gc;
  try {
    v8.setFlagsFromString("--expose-gc");
    const fn = vm.runInNewContext("gc");
    if (typeof fn === "function") return fn as () => void;
  } catch {
    // no way to force a collection: the figures are then upper bounds
  }
  return null;
}
const GC = findGc();

/** heapUsed after full collections (when they can be forced). */
export function heapUsed(): number {
  for (let i = 0; i < 3; i++) GC?.();
  return process.memoryUsage().heapUsed;
}

function openFdCount(): number {
  return readdirSync("/proc/self/fd").length;
}

function isRoot(): boolean {
  return typeof process.getuid === "function" && process.getuid() === 0;
}

interface Target {
  name: string;
  path: string;
  direct: boolean;
  /** Where node:fs reads the same bytes. */
  backing: string;
  cleanup: () => void;
}

function makeFile(size: number): Target {
  const dir = mkdtempSync(join(tmpdir(), "blkio-soak-"));
  const path = join(dir, "disk.img");
  writeFileSync(path, new Uint8Array(0));
  execFileSync("truncate", ["-s", String(size), path]);
  return {
    name: "file (buffered)",
    path,
    direct: false,
    backing: path,
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

function makeLoop(size: number): Target {
  const loop = tmpfsLoop(size, "soak");
  return {
    name: "loop device (O_DIRECT)",
    path: loop.path,
    direct: true,
    backing: loop.backing,
    cleanup: loop.detach,
  };
}

/**
 * Runs `requests` requests against `t`, for at most `millis` ms (0: no limit) counted from the
 * end of the first fill; returns its report.
 */
function soakTarget(
  t: Target,
  size: number,
  requests: number,
  millis: number,
  seed: number,
  verbose: boolean,
): TargetReport {
  const blocks = size / BLOCK;
  const report: TargetReport = {
    target: t.name,
    seed,
    requests: 0,
    reads: 0,
    writes: 0,
    flushes: 0,
    bytes: 0,
    blocksVerified: 0,
    mismatches: 0,
    failures: 0,
    firstProblems: [],
    seconds: 0,
  };
  const problem = (text: string, mismatch: boolean) => {
    if (mismatch) report.mismatches++;
    else report.failures++;
    if (report.firstProblems.length < 10) report.firstProblems.push(text);
  };
  const t0 = performance.now();
  const b = Blkio.create("io_uring");
  try {
    b.setStr("path", t.path);
    b.setBool("direct", t.direct);
    b.connect();
    b.setInt("num-entries", 64);
    b.start();
    const q = b.getQueue(0)!;

    // Fixed resources: one 128 KiB buffer per possible request, and completion objects. Every
    // third slot's buffer is in a region that is not mapped, so single-buffer requests take the
    // plain READ/WRITE path too, not only the registered-buffer one (both aligned for O_DIRECT).
    const region = b.allocMemRegion(MAX_DEPTH * MAX_BLOCKS * BLOCK);
    b.mapMemRegion(region);
    const plain = b.allocMemRegion(MAX_DEPTH * MAX_BLOCKS * BLOCK);
    const regionOf = (slot: number) => slot % 3 === 2 ? plain : region;
    const wordsIn = [region, plain].map((r) =>
      new Uint32Array(r.bytes.buffer, r.bytes.byteOffset, r.len / 4)
    );
    const wordsOf = (slot: number) => wordsIn[slot % 3 === 2 ? 1 : 0];
    const out: Completion[] = Array.from(
      { length: MAX_DEPTH },
      () => ({ userData: 0, ret: 0, errorMsg: null }),
    );
    const gens = new Uint32Array(blocks); // generation of the last completed write of each block
    const busy = new Int16Array(blocks); // >0: readers in flight, -1: a writer in flight
    // Per slot: what is in flight there.
    const kind = new Uint8Array(MAX_DEPTH); // 0 free, 1 read, 2 write, 3 flush
    const first = new Int32Array(MAX_DEPTH);
    const count = new Int32Array(MAX_DEPTH);
    const gen = new Uint32Array(MAX_DEPTH);
    const freeSlots: number[] = [];
    for (let s = MAX_DEPTH - 1; s >= 0; s--) freeSlots.push(s);
    let rnd = seed >>> 0 || 1;
    const random = (n: number): number => {
      rnd = xorshift(rnd);
      return rnd % n;
    };
    let nextGen = 1;
    let inFlight = 0;

    const bytesOf = (slot: number, n: number): Uint8Array =>
      regionOf(slot).bytes.subarray(slot * MAX_BLOCKS * BLOCK, slot * MAX_BLOCKS * BLOCK + n * BLOCK);
    const split = (buf: Uint8Array, n: number): Uint8Array[] => {
      // 2 to 4 iovecs on 4 KiB boundaries.
      const parts = Math.min(n, 2 + random(3));
      const iov: Uint8Array[] = [];
      let at = 0;
      for (let p = 0; p < parts; p++) {
        const len = p === parts - 1 ? n - at : 1 + random(n - at - (parts - 1 - p));
        iov.push(buf.subarray(at * BLOCK, (at + len) * BLOCK));
        at += len;
      }
      return iov;
    };

    const submitWrite = (slot: number, start: number, n: number): void => {
      const g = nextGen++;
      const base = slot * MAX_BLOCKS * WORDS;
      for (let i = 0; i < n; i++) stamp(wordsOf(slot), base + i * WORDS, start + i, g);
      for (let i = 0; i < n; i++) busy[start + i] = -1;
      kind[slot] = 2;
      first[slot] = start;
      count[slot] = n;
      gen[slot] = g;
      const buf = bytesOf(slot, n);
      const r = random(100);
      const flags = r < 5 ? ReqFlags.FUA : 0;
      if (r >= 90 && n > 1) q.writev(start * BLOCK, split(buf, n), slot, flags);
      else q.write(start * BLOCK, buf, slot, flags);
    };
    const submitRead = (slot: number, start: number, n: number): void => {
      for (let i = 0; i < n; i++) busy[start + i]++;
      kind[slot] = 1;
      first[slot] = start;
      count[slot] = n;
      const buf = bytesOf(slot, n);
      buf.fill(0xdb); // never mistaken for a stamp
      if (random(10) === 0 && n > 1) q.readv(start * BLOCK, split(buf, n), slot);
      else q.read(start * BLOCK, buf, slot);
    };
    const complete = (c: Completion): void => {
      const slot = c.userData as number;
      const k = kind[slot], start = first[slot], n = count[slot];
      if (k === 0) {
        // Nothing of this slot is in flight: the library reported a completion twice.
        problem(`completion of slot ${slot} with nothing in flight there (reported twice?)`, true);
        return;
      }
      if (c.ret !== 0) {
        problem(
          `${["", "read", "write", "flush"][k]} at block ${start} x${n}: ret ${c.ret} ${c.errorMsg}`,
          false,
        );
      }
      if (k === 1) {
        const base = slot * MAX_BLOCKS * WORDS;
        for (let i = 0; i < n; i++) {
          if (c.ret === 0) {
            const why = check(wordsOf(slot), base + i * WORDS, start + i, gens[start + i]);
            if (why !== null) problem(why, true);
            report.blocksVerified++;
          }
          busy[start + i]--;
        }
        report.reads++;
        report.bytes += n * BLOCK;
      } else if (k === 2) {
        for (let i = 0; i < n; i++) {
          if (c.ret === 0) gens[start + i] = gen[slot];
          busy[start + i] = 0;
        }
        report.writes++;
        report.bytes += n * BLOCK;
      } else {
        report.flushes++;
      }
      kind[slot] = 0;
      freeSlots.push(slot);
      inFlight--;
      report.requests++;
    };
    const drain = (min: number): void => {
      const got = q.doIo(out, min, MAX_DEPTH, 60_000_000_000n);
      for (let i = 0; i < got; i++) complete(out[i]);
    };

    // Fill the whole target once (these writes are not counted as soak requests).
    for (let start = 0; start < blocks;) {
      while (inFlight < 32 && start < blocks) {
        const n = Math.min(MAX_BLOCKS, blocks - start);
        submitWrite(freeSlots.pop()!, start, n);
        inFlight++;
        start += n;
      }
      drain(1);
    }
    while (inFlight > 0) drain(1);
    report.requests =
      report.reads =
      report.writes =
      report.bytes =
        0;
    // The time share starts here, not before the fill: where filling the target took longer than
    // the share (16 MiB buffered, on emulated arm64: over its 2 s share of soak.test.ts), it did
    // no soak requests at all, and the time limit cut the soak rather than bounding it.
    const deadline = millis ? performance.now() + millis : 0;

    const phaseLen = Math.max(200, Math.floor(requests / (DEPTHS.length * 4)));
    let submitted = 0;
    let lastLog = performance.now();
    while (submitted < requests && (deadline === 0 || performance.now() < deadline)) {
      const depth = DEPTHS[Math.floor(submitted / phaseLen) % DEPTHS.length];
      while (inFlight < depth && submitted < requests) {
        const n = 1 + random(MAX_BLOCKS);
        const isWrite = random(2) === 0;
        let start = -1;
        for (let tries = 0; tries < 8 && start < 0; tries++) {
          const s = random(blocks - n + 1);
          let ok = true;
          for (let i = 0; i < n && ok; i++) ok = isWrite ? busy[s + i] === 0 : busy[s + i] >= 0;
          if (ok) start = s;
        }
        if (start < 0) break; // crowded: let something complete first
        const slot = freeSlots.pop()!;
        if (random(200) === 0) {
          kind[slot] = 3;
          first[slot] = 0;
          count[slot] = 0;
          q.flush(slot);
        } else if (isWrite) {
          submitWrite(slot, start, n);
        } else {
          submitRead(slot, start, n);
        }
        inFlight++;
        submitted++;
      }
      drain(1);
      if (verbose && performance.now() - lastLog > 10_000) {
        lastLog = performance.now();
        process.stderr.write(`  ${t.name}: ${report.requests} requests, ${report.mismatches} mismatches\n`);
      }
    }
    while (inFlight > 0) drain(1);

    // Final pass: every block, through the library and through node:fs.
    for (let start = 0; start < blocks;) {
      while (inFlight < 32 && start < blocks) {
        const n = Math.min(MAX_BLOCKS, blocks - start);
        submitRead(freeSlots.pop()!, start, n);
        inFlight++;
        start += n;
      }
      drain(1);
    }
    while (inFlight > 0) drain(1);
    report.requests -= Math.ceil(blocks / MAX_BLOCKS);
    report.reads -= Math.ceil(blocks / MAX_BLOCKS);
    report.bytes -= size;
    // Everything was reaped: a completion still to come was reported twice or made up.
    const extra = q.doIo(out, 0, MAX_DEPTH);
    if (extra !== 0) problem(`${extra} completions after every request had completed`, true);
    b.unmapMemRegion(region);
    verifyByFs(t.backing, blocks, gens, report, problem);
  } finally {
    b.destroy();
  }
  report.seconds = (performance.now() - t0) / 1000;
  return report;
}

function verifyByFs(
  path: string,
  blocks: number,
  gens: Uint32Array,
  report: TargetReport,
  problem: (text: string, mismatch: boolean) => void,
): void {
  const fd = openSync(path, "r");
  try {
    const chunk = new Uint8Array(MAX_BLOCKS * BLOCK);
    const w = new Uint32Array(chunk.buffer);
    for (let start = 0; start < blocks; start += MAX_BLOCKS) {
      const n = Math.min(MAX_BLOCKS, blocks - start);
      let got = 0;
      while (got < n * BLOCK) {
        const r = readSync(fd, chunk, got, n * BLOCK - got, start * BLOCK + got);
        if (r === 0) break;
        got += r;
      }
      for (let i = 0; i < n; i++) {
        const why = got >= (i + 1) * BLOCK
          ? check(w, i * WORDS, start + i, gens[start + i])
          : `block ${start + i}: short file`;
        if (why !== null) problem(`node:fs: ${why}`, true);
        report.blocksVerified++;
      }
    }
  } finally {
    closeSync(fd);
  }
}

/** Runs the soak; never throws for data problems (they are counted in the report). */
export function soak(opts: SoakOptions): SoakReport {
  const size = opts.size ?? 64 * 1024 * 1024;
  const names = opts.targets ?? (isRoot() ? ["file", "loop"] : ["file"]);
  const seed = opts.seed ?? 1;
  const t0 = performance.now();
  // The runtimes open fds of their own on first use of a child process (Bun: an epoll set, an
  // eventfd; a copy of stderr once process.stderr is used): use both before counting, so only
  // the library's fds are seen.
  execFileSync("true", [], { stdio: "ignore" });
  execFileSync("true", [], { encoding: "utf8" });
  process.stderr.write("");
  const heapStart = heapUsed();
  const fdsStart = openFdCount();
  const reports: TargetReport[] = [];
  for (let i = 0; i < names.length; i++) {
    const t = names[i] === "loop" ? makeLoop(size) : makeFile(size);
    try {
      const share = Math.floor(opts.requests / names.length) + (i === 0 ? opts.requests % names.length : 0);
      if (opts.verbose) process.stderr.write(`soak: ${t.name} ${t.path}, ${share} requests\n`);
      // Each target gets its share of the time: one deadline for all let a slow first target
      // use it up, and the next then did no requests at all.
      const millis = opts.seconds ? (opts.seconds * 1000) / names.length : 0;
      reports.push(soakTarget(t, size, share, millis, seed + i, !!opts.verbose));
    } finally {
      t.cleanup();
    }
  }
  return {
    runtime: "Bun" in globalThis ? `bun ${process.versions.bun}` : `deno ${process.versions.deno}`,
    gcForced: GC !== null,
    requests: reports.reduce((s, r) => s + r.requests, 0),
    mismatches: reports.reduce((s, r) => s + r.mismatches, 0),
    failures: reports.reduce((s, r) => s + r.failures, 0),
    heapStart,
    heapEnd: heapUsed(),
    fdsStart,
    fdsEnd: openFdCount(),
    seconds: (performance.now() - t0) / 1000,
    targets: reports,
  };
}

function main(): void {
  const args = process.argv.slice(2);
  const opt = (name: string, def: number): number => {
    const i = args.indexOf(name);
    return i >= 0 ? Number(args[i + 1]) : def;
  };
  const report = soak({
    requests: opt("--requests", 2_000_000),
    seconds: opt("--seconds", 0),
    seed: opt("--seed", 1),
    verbose: !args.includes("--json"),
  });
  if (args.includes("--json")) {
    process.stdout.write(JSON.stringify(report, null, 2) + "\n");
  } else {
    const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;
    process.stdout.write(
      `soak on ${report.runtime}: ${report.requests} requests in ${report.seconds.toFixed(1)} s, ` +
        `${report.mismatches} mismatches, ${report.failures} failed requests\n` +
        `heap ${mib(report.heapStart)} -> ${
          mib(report.heapEnd)
        }, open fds ${report.fdsStart} -> ${report.fdsEnd}\n`,
    );
    for (const r of report.targets) {
      process.stdout.write(
        `  ${r.target}: ${r.requests} requests (${r.reads} reads, ${r.writes} writes, ${r.flushes} flushes), ` +
          `${
            (r.bytes / 2 ** 30).toFixed(1)
          } GiB, ${r.blocksVerified} blocks verified, ${r.mismatches} mismatches, ` +
          `${r.seconds.toFixed(1)} s\n`,
      );
      for (const p of r.firstProblems) process.stdout.write(`    ${p}\n`);
    }
  }
  if (report.mismatches > 0 || report.failures > 0) process.exitCode = 1;
}

if ((import.meta as { main?: boolean }).main) main();
