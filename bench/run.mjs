#!/usr/bin/env node
/**
 * Side by side: blkio (examples/blkio_bench.ts on Deno and on Bun, submitting its way and fio's
 * way), fio's io_uring engine, the same loop in C on liburing (bench/uring_loop.c) and the
 * JavaScript built-ins, on the same targets in the same run. `npm run bench` runs it.
 *
 * For each workload every contender runs once per round, in a new random order each round
 * (seeded), so slow drifts of a shared machine hit them all alike; the table
 * shows the medians of the rounds. Targets: a loop device over a tmpfs file (O_DIRECT) and a
 * page-cached regular file in the temp directory (buffered). Then the allocation check
 * (bench/alloc_check.ts) runs on both runtimes. Results go to stdout, to the section "Side by
 * side with fio and the built-ins" of BENCHMARKS.md (the rest of the file is kept) and, raw, to
 * .tmp/bench-side-by-side.json.
 *
 * Needs root for the loop device (without it the O_DIRECT rows are skipped).
 *
 * Usage: npm run bench [-- options]   (installs what is missing first)
 *        node bench/run.mjs [--seconds 1] [--ramp-seconds 0.5] [--rounds 5] [--size-mib 512]
 *                           [--only <text>] [--alloc-requests 5000000] [--no-alloc] [--no-report]
 *                           [--cpu <list>]
 *
 * `--cpu 0` runs every contender under `taskset -c 0`, all on the same CPU(s). On the 2-vCPU VMs
 * here each vCPU runs at one of two speeds that the host decides and changes over time (the C
 * loop's page-cached reads at iodepth 1: ~370k IOPS or ~250k), and a process lands on either, so
 * unpinned rounds at iodepth 1 scatter by a third; pinned, most rounds agree within a few
 * percent (BENCHMARKS.md, twentieth session). Kernel threads a contender
 * starts (io-wq) inherit the pinning, so it changes the iodepth-32 rows where they work: an
 * option for comparing, not the default; the SQPOLL rows are left out (their kernel thread would
 * spin on the same CPU).
 *
 * Every contender first runs its workload for `--ramp-seconds` without counting it (fio's
 * `ramp_time`; blkio_bench's `--ramp-time`; the runners' and the C loop's `rampSeconds`), so the
 * JavaScript contenders are measured compiled, not while their JIT warms up.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { xorshift32 } from "./_runner.mjs";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const DENO = join(ROOT, "node_modules", "deno", "deno");
const BUN = join(ROOT, "node_modules", "bun", "bin", "bun.exe");
const SECTION = "## Side by side with fio and the built-ins";

function parseArgs(argv) {
  const o = {
    seconds: 1,
    rampSeconds: 0.5,
    rounds: 5,
    sizeMiB: 512,
    only: null,
    allocRequests: 5_000_000,
    alloc: true,
    report: true,
    cpu: null,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      const v = argv[++i];
      if (v === undefined) throw new TypeError(`Option ${a} needs a value`);
      return v;
    };
    if (a === "--seconds") o.seconds = Math.max(1, Math.round(Number(next())));
    else if (a === "--ramp-seconds") {
      o.rampSeconds = Number(next());
      if (!(o.rampSeconds >= 0)) throw new TypeError("--ramp-seconds needs a number >= 0");
    } else if (a === "--rounds") o.rounds = Math.max(1, Number(next()));
    else if (a === "--size-mib") o.sizeMiB = Number(next());
    else if (a === "--only") o.only = next();
    else if (a === "--alloc-requests") o.allocRequests = Number(next());
    else if (a === "--no-alloc") o.alloc = false;
    else if (a === "--no-report") o.report = false;
    else if (a === "--cpu") {
      o.cpu = next();
      // taskset itself judges the list (0-7:2 is one) and whether those CPUs exist, before any
      // setup: with a bad one every measurement would fail after minutes of preparation.
      const r = spawnSync("taskset", ["-c", o.cpu, "true"], { encoding: "utf8" });
      if (r.status !== 0) {
        throw new TypeError(`--cpu ${o.cpu}: ${(r.stderr || r.error?.message || "").trim()}`);
      }
    } else throw new TypeError(`Unknown option "${a}"`);
  }
  return o;
}

const opts = parseArgs(process.argv.slice(2));

// --- setup -------------------------------------------------------------------------------------

function hasCommand(cmd) {
  return spawnSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" }).status === 0;
}

// `npm run bench` runs scripts/setup.mjs --bench first (liburing, fio, the runtimes).
if (!hasCommand("fio") || !existsSync(DENO) || !existsSync(BUN)) {
  console.error(
    "bench: fio, deno or bun is missing: run `node scripts/setup.mjs --bench` (or `npm run bench`)",
  );
  process.exit(1);
}

function firstLine(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  return r.status === 0 ? r.stdout.split("\n")[0].trim() : "unknown";
}

function machine() {
  const cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  const model = /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? "unknown";
  return {
    nproc: firstLine("nproc", []),
    model,
    kernel: os.release(),
    memGiB: (os.totalmem() / 2 ** 30).toFixed(1),
    node: process.version,
    deno: firstLine(DENO, ["--version"]),
    bun: firstLine(BUN, ["--version"]),
    fio: firstLine("fio", ["--version"]),
    liburing: firstLine("dpkg-query", ["-W", "-f", "${Version}", "liburing2"]),
    idle: idleDescription(),
    /** ns per system call, from bench/syscall_cost.c (set once it is built: buildHelpers). */
    syscall: null,
  };
}

/**
 * How an idle vCPU waits: it decides what a wake-up costs, which dominates iodepth 1 on a VM
 * (see BENCHMARKS.md: guest halt polling).
 */
function idleDescription() {
  const read = (p) => existsSync(p) ? readFileSync(p, "utf8").trim() : null;
  const driver = read("/sys/devices/system/cpu/cpuidle/current_driver") ?? "none";
  // The haltpoll module's setting only acts through its cpuidle driver: without a driver the
  // idle loop halts at once, whatever the module parameter says.
  if (driver !== "haltpoll") return `cpuidle driver ${driver} (an idle vCPU halts at once)`;
  const pollNs = read("/sys/module/haltpoll/parameters/guest_halt_poll_ns");
  return `cpuidle driver haltpoll, guest halt polling ${
    pollNs === null || pollNs === "0" ? "off" : `up to ${pollNs} ns`
  }`;
}

// --- targets -----------------------------------------------------------------------------------

const cleanups = [];
function cleanup() {
  for (const f of cleanups.splice(0).reverse()) {
    try {
      f();
    } catch (e) {
      console.error(`bench: cleanup: ${e.message}`);
    }
  }
}
process.on("exit", cleanup);
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    cleanup();
    process.exit(130);
  });
}

/**
 * Writes `mib` MiB of random data in 4 KiB blocks, as the 4 KiB workloads write. The block size
 * decides the page cache's folio size on ext4 (large folios since Linux 6.16), and with it what
 * a 4 KiB buffered write costs there: on a file written in 1 MiB blocks every contender, fio
 * included, did 40k-230k random writes a second at iodepth 32 (the kernel's own work, ~25 µs
 * CPU per write), against 650k-950k for the C loop on one written in 4 KiB blocks; reads and
 * XFS move far less (BENCHMARKS.md).
 */
function fillRandom(path, mib) {
  execFileSync("dd", ["if=/dev/urandom", `of=${path}`, "bs=4k", `count=${mib * 256}`, "status=none"]);
}

/** A file on tmpfs: read buffered itself, and the backing file of the loop device. */
function makeShm(mib) {
  if (!existsSync("/dev/shm")) return null;
  const path = `/dev/shm/blkio-bench-side-${process.pid}.img`;
  cleanups.push(() => rmSync(path, { force: true }));
  fillRandom(path, mib);
  return { path, direct: false, size: mib * 2 ** 20, what: `file on tmpfs (${path})` };
}

function makeLoop(shm) {
  const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
  if (!isRoot || !hasCommand("losetup") || shm === null) return null;
  const dev = execFileSync("losetup", ["--find", "--show", shm.path], { encoding: "utf8" }).trim();
  cleanups.push(() => execFileSync("losetup", ["-d", dev]));
  return { path: dev, direct: true, size: shm.size, what: `loop device over a tmpfs file (${dev})` };
}

/**
 * Reads a file through, so all of it is in the page cache. Done before every measurement of a
 * page-cached target, not once: a kernel may page out what was not touched for a while (the
 * VM of 2026-12-04 runs DAMON's reclaim, which pages out memory idle for 60 s), and the first
 * round after minutes of other workloads then read from the disk.
 */
function pageIn(path) {
  execFileSync("sh", ["-c", `cat "${path}" > /dev/null`]);
}

function makeFile(mib) {
  const path = join(os.tmpdir(), `blkio-bench-side-${process.pid}.img`);
  cleanups.push(() => rmSync(path, { force: true }));
  fillRandom(path, mib);
  const fsType = firstLine("sh", ["-c", `df --output=fstype "${path}" | tail -n 1`]);
  return {
    path,
    direct: false,
    size: mib * 2 ** 20,
    what: `page-cached file on ${fsType} (${path})`,
    warm: () => pageIn(path),
  };
}

/**
 * A page-cached file on XFS, made on a loop device over a tmpfs file (root, losetup and mkfs.xfs
 * needed; `npm run bench` installs xfsprogs). XFS completes buffered writes without blocking, so
 * io_uring does them inside the system call; ext4 hands each one to an io-wq thread.
 */
function makeXfs(mib) {
  const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
  if (!isRoot || !hasCommand("losetup") || !hasCommand("mkfs.xfs") || !existsSync("/dev/shm")) return null;
  const backing = `/dev/shm/blkio-bench-xfs-${process.pid}.img`;
  cleanups.push(() => rmSync(backing, { force: true }));
  // Room for the file, the log and the metadata (sparse on tmpfs: only what is written counts).
  execFileSync("truncate", ["-s", `${mib * 2 + 320}M`, backing]);
  const dev = execFileSync("losetup", ["--find", "--show", backing], { encoding: "utf8" }).trim();
  cleanups.push(() => execFileSync("losetup", ["-d", dev]));
  execFileSync("mkfs.xfs", ["-q", "-f", dev]);
  const dir = mkdtempSync(join(os.tmpdir(), "blkio-bench-xfs-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  execFileSync("mount", [dev, dir]);
  cleanups.push(() => execFileSync("umount", [dir]));
  const path = join(dir, "file.img");
  fillRandom(path, mib);
  return {
    path,
    direct: false,
    size: mib * 2 ** 20,
    what: `page-cached file on xfs (${path}, on a loop device over a tmpfs file)`,
    warm: () => pageIn(path),
  };
}

// --- contenders --------------------------------------------------------------------------------

/**
 * At iodepth 1 blkio_bench and the built-in runners time one request in this many (the C loop
 * and fio time every one, with the CPU's time stamp counter): `performance.now()` costs Deno
 * 0.3-0.5 µs right after a system call, a tenth of a page-cached read. For those reads, 32:
 * blkio_bench's loop in one process, Deno, 3 runs, took 45-160 ns less a request (1.5-5%) than
 * at 8, and a 1 s round at 250k IOPS still times ~8,000 requests, enough for a p99. The slower
 * rows (35k-60k IOPS: the loop device, tmpfs, writes through io-wq) time one in 4, so that their
 * rounds time ~8,000 too (at one in 32 their p99 moved by ±15% with the sample's start alone);
 * the clock read is ~1% of such a request. The timed ones run a little slower for their colder
 * clock reads (p50 +0.1 µs against 1 in 8, BENCHMARKS.md): pessimistic, not flattering. At
 * iodepth > 1 everything is timed (one clock read per batch already costs nothing).
 */
function latencySample(w) {
  if (w.depth !== 1) return 1;
  return w.target === "file" && w.rw === "randread" ? 32 : 4;
}

const RUNTIME_CMD = {
  node: (script) => [process.execPath, [script]],
  deno: (script) => [DENO, ["run", "-A", script]],
  bun: (script) => [BUN, [script]],
};
const NAME = { node: "Node", deno: "Deno", bun: "Bun" };

/**
 * blkio_bench on `runtime`. `batch`: its --iodepth-batch (null: libblkio's way, everything
 * queued goes with the next wait; 1: each request is submitted when queued, fio's default).
 * `event`: --event, the requests go through the promise layer (BlockDevice) on the event loop.
 */
function blkio(runtime, batch = null, event = false, sqpoll = false) {
  const label = event
    ? `${NAME[runtime]}, --event: BlockDevice`
    : sqpoll
    ? `${NAME[runtime]}, sqpoll=true`
    : batch === null
    ? NAME[runtime]
    : `${NAME[runtime]}, --iodepth-batch=${batch}`;
  return {
    name: `blkio (${label})`,
    blkio: runtime,
    label,
    sqpoll,
    async: true,
    command(w, t) {
      const [cmd, args] = RUNTIME_CMD[runtime](join(ROOT, "examples", "blkio_bench.ts"));
      return [cmd, [
        ...args,
        `--runtime=${opts.seconds}`,
        `--ramp-time=${opts.rampSeconds}`,
        `--iodepth=${w.depth}`,
        `--readwrite=${w.rw}`,
        `--blocksize=${w.bs}`,
        ...(batch === null ? [] : [`--iodepth-batch=${batch}`]),
        ...(event ? ["--event"] : []),
        // At iodepth 1 one clock read per request is a tenth of the request on Deno (below).
        ...(!event && latencySample(w) > 1 ? [`--latency-sample=${latencySample(w)}`] : []),
        "--latency-percentiles",
        "--cpu-usage",
        "io_uring",
        `path=${t.path}`,
        `direct=${t.direct}`,
        ...(sqpoll ? ["sqpoll=true"] : []),
      ]];
    },
    parse(stdout) {
      const a = JSON.parse(stdout).aggregate;
      const iops = a.kiops * 1000;
      return {
        iops,
        cpuUs: (a.cpu_usr_us + a.cpu_sys_us) / (iops * opts.seconds),
        p50: a.p50_lat_us,
        p99: a.p99_lat_us,
        note: "",
      };
    },
  };
}

/**
 * fio's own usr/sys figures cover its job thread only, not the io_uring worker threads (io-wq)
 * the kernel hands blocking requests to (buffered writes on ext4, for one): its CPU time is
 * taken for the whole process instead, with the shell's `times`, less what starting and
 * stopping fio costs (measured once, on a one-block job: FIO_BASELINE_S).
 */
const FIO_WRAPPER = 'fio "$@"; s=$?; times >&2; exit $s';
let FIO_BASELINE_S = 0;

/** `times`' second line: the user and system time of the children, in seconds. */
function childTimes(stderr) {
  const lines = stderr.trim().split("\n");
  const m = /^(\d+)m([\d.]+)s (\d+)m([\d.]+)s$/.exec(lines[lines.length - 1].trim());
  if (!m) throw new Error("no times output");
  return Number(m[1]) * 60 + Number(m[2]) + Number(m[3]) * 60 + Number(m[4]);
}

function measureFioBaseline(t) {
  const runs = [];
  for (let i = 0; i < 3; i++) {
    const r = spawnSync("sh", [
      "-c",
      FIO_WRAPPER,
      "sh",
      "--name=baseline",
      `--filename=${t.path}`,
      "--ioengine=io_uring",
      "--rw=read",
      "--bs=4k",
      "--size=4k",
      "--invalidate=0",
      "--output-format=json",
    ], { encoding: "utf8" });
    if (r.status === 0) runs.push(childTimes(r.stderr));
  }
  return runs.length > 0 ? median(runs) : 0;
}

/**
 * fio's io_uring engine with its defaults, the issue's yardstick; or, `batched`, told to submit
 * the way blkio_bench does by default (everything queued in one `io_uring_enter`, waiting for
 * at least one completion), shown for context at iodepth > 1: where a system call is dear,
 * fio's default of one `io_uring_enter` per request is what decides its row.
 */
function fio(kind) {
  return {
    name: {
      default: "fio io_uring",
      batched: "fio io_uring (batched)",
      sqpoll: "fio io_uring (sqthread_poll)",
    }[kind],
    fio: kind === "default",
    fioBatched: kind === "batched",
    fioSqpoll: kind === "sqpoll",
    command: (w, t) => fioCommand(w, t, kind),
    parse: parseFio,
  };
}
const FIO = fio("default");
const FIO_BATCHED = fio("batched");
/**
 * fio with a kernel thread polling its SQ (`--sqthread_poll=1`; its job thread then spins on the
 * CQ), the like-for-like reference of blkio with its opt-in `sqpoll` property, at iodepth 1.
 */
const FIO_SQPOLL = fio("sqpoll");

function fioCommand(w, t, kind) {
  const batch = kind === "batched"
    ? [
      `--iodepth_batch_submit=${w.depth}`,
      "--iodepth_batch_complete_min=1",
      `--iodepth_batch_complete_max=${w.depth}`,
    ]
    : kind === "sqpoll"
    ? ["--sqthread_poll=1"]
    : [];
  return ["sh", [
    "-c",
    FIO_WRAPPER,
    "sh",
    "--name=bench",
    `--filename=${t.path}`,
    "--ioengine=io_uring",
    `--rw=${w.rw}`,
    `--bs=${w.bs}`,
    `--iodepth=${w.depth}`,
    `--direct=${t.direct ? 1 : 0}`,
    `--size=${t.size}`,
    "--invalidate=0", // keep the page cache: the buffered target is the page-cached file
    "--norandommap", // plain random offsets, as every other contender uses
    "--randrepeat=0",
    "--time_based",
    `--runtime=${opts.seconds}`,
    `--ramp_time=${Math.round(opts.rampSeconds * 1000)}ms`,
    "--lat_percentiles=1",
    "--clat_percentiles=0",
    "--percentile_list=50:99",
    "--output-format=json",
    ...batch,
  ]];
}

function parseFio(stdout, stderr) {
  const job = JSON.parse(stdout.slice(stdout.indexOf("{"))).jobs[0];
  const d = job.read.total_ios > 0 ? job.read : job.write;
  const pct = d.lat_ns.percentile ?? {};
  const jobThread = ((job.usr_cpu + job.sys_cpu) / 100) * job.job_runtime / 1000;
  // The process's times cover the ramp too: its share is taken off at the steady rate.
  const measured = opts.seconds / (opts.seconds + opts.rampSeconds);
  const whole = Math.max((childTimes(stderr) - FIO_BASELINE_S) * measured, jobThread);
  return {
    iops: d.iops,
    cpuUs: whole * 1e6 / d.total_ios,
    p50: (pct["50.000000"] ?? 0) / 1000,
    p99: (pct["99.000000"] ?? 0) / 1000,
    note: "",
  };
}

/** The job a runner (bench/_runner.mjs, bench/uring_loop.c) takes as its last argument. */
function jobArg(w, t) {
  const job = {
    path: t.path,
    rw: w.rw,
    bs: w.bs,
    depth: w.depth,
    direct: t.direct,
    seconds: opts.seconds,
    rampSeconds: opts.rampSeconds,
    size: t.size,
    latencySample: latencySample(w),
  };
  return JSON.stringify(job);
}

/** The one JSON line a runner prints, as a measurement. */
function parseRunnerLine(stdout) {
  const r = JSON.parse(stdout.trim().split("\n").pop());
  return {
    iops: r.ios / r.seconds,
    cpuUs: (r.usrUs + r.sysUs) / r.ios,
    p50: r.p50Us,
    p99: r.p99Us,
    inCallShare: r.inCallShare ?? null,
    note: r.note,
  };
}

function runner(kind, runtime, label, flags) {
  return {
    name: `${label} (${NAME[runtime]})`,
    ...flags,
    command(w, t) {
      const [cmd, args] = RUNTIME_CMD[runtime](join(ROOT, "bench", `${kind}_runner.mjs`));
      return [cmd, [...args, jobArg(w, t)]];
    },
    parse: parseRunnerLine,
  };
}

/**
 * The C helpers, built once per run into .tmp/ when a C compiler and liburing's headers are
 * there (`npm run bench` installs them): bench/uring_loop.c, the loop blkio_bench runs, in C;
 * bench/syscall_cost.c, what one system call costs here (for the machine line).
 */
const URING_LOOP = join(ROOT, ".tmp", "uring_loop");
const SYSCALL_COST = join(ROOT, ".tmp", "syscall_cost");
let uringLoopBuilt = false;
function buildC(out, source, libs) {
  mkdirSync(dirname(out), { recursive: true });
  const r = spawnSync("cc", ["-O2", "-o", out, join(ROOT, "bench", source), ...libs], { encoding: "utf8" });
  if (r.status !== 0) console.error(`bench: building bench/${source} failed:\n${r.stderr}`);
  return r.status === 0;
}
/** Builds both; returns the ns a system call costs (null when it could not be measured). */
function buildHelpers() {
  if (!hasCommand("cc") || !existsSync("/usr/include/liburing.h")) {
    console.error("bench: cc or liburing.h missing: the C liburing loop is left out");
    return null;
  }
  uringLoopBuilt = buildC(URING_LOOP, "uring_loop.c", ["-luring"]);
  return buildC(SYSCALL_COST, "syscall_cost.c", []) ? firstLine(SYSCALL_COST, []) : null;
}

const URING_LOOP_CONTENDER = {
  name: "C liburing loop",
  cloop: true,
  command(w, t) {
    return [URING_LOOP, [jobArg(w, t)]];
  },
  parse: parseRunnerLine,
};

function contenders(w) {
  const write = w.rw === "randwrite";
  const list = [blkio("deno"), blkio("bun")];
  // With one request in flight both submission ways are the same.
  if (w.depth > 1) list.push(blkio("deno", 1), blkio("bun", 1));
  // The promise API against the built-in promise APIs, with many requests in flight.
  if (w.depth > 1) list.push(blkio("deno", null, true), blkio("bun", null, true));
  list.push(FIO);
  if (w.depth > 1) list.push(FIO_BATCHED);
  // The opt-in SQPOLL mode against fio's, where it matters most: one request at a time. Not
  // with --cpu: the SQPOLL thread inherits the pinning and spins on the submitter's CPU (fio
  // went from 390k to 147 IOPS).
  if (w.depth === 1 && opts.cpu === null) {
    list.push(blkio("deno", null, false, true), blkio("bun", null, false, true), FIO_SQPOLL);
  }
  if (uringLoopBuilt) list.push(URING_LOOP_CONTENDER);
  const fh = write ? "FileHandle.write" : "FileHandle.read";
  for (const rt of ["node", "deno", "bun"]) {
    list.push(runner("fs_promises", rt, fh, { builtin: true, async: true }));
  }
  if (!write) {
    list.push(runner("bun_file", "bun", "Bun.file().slice()", { builtin: true, async: true }));
    list.push(runner("deno_fsfile", "deno", "Deno.FsFile seek+read", { builtin: true, async: true }));
  }
  // Synchronous calls do one request at a time: shown at iodepth 1 only, for context.
  if (w.depth === 1) {
    const sync = write ? "fs.writeSync" : "fs.readSync";
    for (const rt of ["node", "deno", "bun"]) {
      list.push(runner("fs_sync", rt, sync, { builtin: true, sync: true }));
    }
  }
  return list;
}

// --- workloads ---------------------------------------------------------------------------------

const WORKLOADS = [];
for (const target of ["loop", "file"]) {
  for (const rw of ["randread", "randwrite"]) {
    for (const depth of [1, 32]) WORKLOADS.push({ target, rw, bs: 4096, depth });
  }
}
// The same buffered writes on XFS, which does them without blocking (see makeXfs).
for (const depth of [1, 32]) WORKLOADS.push({ target: "xfs", rw: "randwrite", bs: 4096, depth });
WORKLOADS.push({ target: "loop", rw: "read", bs: 128 * 1024, depth: 8 });
// tmpfs cannot complete a buffered io_uring read inline (no IOCB_NOWAIT): each goes to an io-wq
// worker thread, and pread wins. Shown for that reason.
WORKLOADS.push({ target: "shm", rw: "randread", bs: 4096, depth: 1 });

function workloadId(w) {
  const kind = { loop: "direct", shm: "tmpfs", xfs: "buffered-xfs" }[w.target] ?? "buffered";
  return `${w.rw}-${w.bs / 1024}k-d${w.depth}-${kind}`;
}

function workloadTitle(w, t) {
  const kind = w.rw === "read" ? "sequential read" : w.rw === "randread" ? "random read" : "random write";
  const io = t.direct ? "O_DIRECT" : "buffered";
  return `${w.bs / 1024} KiB ${kind}, iodepth ${w.depth}, ${io}, ${t.what.replace(/ \(.*\)$/, "")}`;
}

// --- running -----------------------------------------------------------------------------------

function measureOnce(c, w, t) {
  const [cmd, args] = c.command(w, t);
  const pinned = opts.cpu === null ? [cmd, args] : ["taskset", ["-c", opts.cpu, cmd, ...args]];
  const r = spawnSync(pinned[0], pinned[1], {
    cwd: ROOT,
    encoding: "utf8",
    timeout: (opts.seconds + 60) * 1000,
    maxBuffer: 1 << 24,
    env: { ...process.env, NO_COLOR: "1" },
  });
  if (r.status !== 0) {
    // The line that says what went wrong: a JavaScript error's own line, not its last stack frame.
    const lines = (r.stderr || r.error?.message || `exit ${r.status}`).trim().split("\n");
    const why = lines.findLast((l) => /error|Error|failed|EINVAL|ENO[A-Z]+/.test(l) && !/^\s+at /.test(l)) ??
      lines.at(-1);
    return { error: why.trim() };
  }
  try {
    return c.parse(r.stdout, r.stderr);
  } catch (e) {
    return { error: `unreadable output: ${e.message}` };
  }
}

function median(xs) {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function fmtIops(x) {
  if (!Number.isFinite(x)) return "–";
  return x >= 1e5 ? `${(x / 1000).toFixed(0)}k` : x >= 1e3 ? `${(x / 1000).toFixed(1)}k` : x.toFixed(0);
}

function fmt(x, digits = 1) {
  return Number.isFinite(x) ? x.toFixed(digits) : "–";
}

function runAll(targets) {
  const selected = WORKLOADS.filter((w) =>
    targets[w.target] && (!opts.only || workloadId(w).includes(opts.only))
  );
  const total = selected.reduce((n, w) => n + contenders(w).length, 0) * opts.rounds;
  let step = 0;
  const results = [];
  for (const w of selected) {
    const t = targets[w.target];
    const list = contenders(w);
    const runs = list.map(() => []);
    // A new random order each round (seeded, so a run can be repeated): a fixed rotation always
    // puts the same contender after the same other one, and whatever one leaves behind (dirty
    // pages being written back, a warm CPU) would always fall on the same next one.
    const random = xorshift32(0x9e3779b9 ^ (w.depth * 131 + w.bs));
    for (let round = 0; round < opts.rounds; round++) {
      const order = list.map((_, i) => i);
      for (let i = order.length - 1; i > 0; i--) {
        const j = Math.floor(random() * (i + 1));
        [order[i], order[j]] = [order[j], order[i]];
      }
      for (let k = 0; k < list.length; k++) {
        const idx = order[k];
        const c = list[idx];
        t.warm?.();
        const m = measureOnce(c, w, t);
        runs[idx].push(m);
        step++;
        const shown = m.error ? `error: ${m.error}` : `${fmtIops(m.iops)} IOPS`;
        console.error(`[${step}/${total}] ${workloadId(w)} round ${round + 1}: ${c.name}: ${shown}`);
      }
    }
    const rows = list.map((c, i) => {
      const ok = runs[i].filter((m) => !m.error);
      return {
        name: c.name,
        blkio: c.blkio ?? null,
        label: c.label ?? null,
        fio: !!c.fio,
        fioBatched: !!c.fioBatched,
        fioSqpoll: !!c.fioSqpoll,
        sqpoll: !!c.sqpoll,
        cloop: !!c.cloop,
        builtin: !!c.builtin,
        async: !!c.async,
        sync: !!c.sync,
        rounds: ok.length,
        iops: median(ok.map((m) => m.iops)),
        cpuUs: median(ok.map((m) => m.cpuUs)),
        p50: median(ok.map((m) => m.p50)),
        p99: median(ok.map((m) => m.p99)),
        inCallShare: ok.every((m) => typeof m.inCallShare === "number")
          ? median(ok.map((m) => m.inCallShare))
          : null,
        note: ok[0]?.note ?? "",
        errors: runs[i].filter((m) => m.error).map((m) => m.error),
        samples: ok.map((m) => m.iops),
      };
    });
    results.push({ id: workloadId(w), title: workloadTitle(w, t), workload: w, rows });
  }
  markLoopBlockers(results);
  return results;
}

/**
 * An "asynchronous" built-in that does the I/O inside the call, before returning its promise,
 * blocks the event loop for it: the issue's 2x target counts only those that keep the loop
 * free. Told apart at iodepth 1, where a request's latency is its own (at higher depths it also
 * waits behind the other requests' calls): half or more of it spent in the call marks the
 * built-in, for that access pattern and target, at every depth.
 */
function markLoopBlockers(results) {
  for (const res of results) {
    const w = res.workload;
    const d1 = results.find((o) =>
      o.workload.depth === 1 && o.workload.target === w.target && o.workload.rw === w.rw &&
      o.workload.bs === w.bs
    );
    if (!d1) continue;
    for (const r of res.rows.filter((x) => x.builtin && x.async)) {
      const share = d1.rows.find((x) => x.name === r.name)?.inCallShare;
      if (typeof share !== "number" || share < 0.5) continue;
      r.async = false;
      const what = `I/O inside the call (${
        fmt(share * 100, 0)
      }% of its latency at iodepth 1): blocks the event loop`;
      r.note = r.note ? `${r.note}; ${what}` : what;
    }
  }
}

function runAllocCheck(file) {
  const out = [];
  for (const rt of ["deno", "bun"]) {
    file.warm?.();
    const [cmd, args] = RUNTIME_CMD[rt](join(ROOT, "bench", "alloc_check.ts"));
    console.error(`alloc check: ${NAME[rt]}, ${opts.allocRequests} requests...`);
    const r = spawnSync(cmd, [
      ...args,
      "--path",
      file.path,
      "--requests",
      String(opts.allocRequests),
      "--json",
    ], {
      cwd: ROOT,
      encoding: "utf8",
      timeout: 15 * 60 * 1000,
    });
    if (r.status !== 0) {
      out.push({ runtime: rt, error: (r.stderr || `exit ${r.status}`).trim().split("\n").slice(-1)[0] });
      continue;
    }
    try {
      out.push(JSON.parse(r.stdout.trim().split("\n").pop()));
    } catch (e) {
      out.push({ runtime: rt, error: `unreadable output: ${e.message}` });
    }
  }
  return out;
}

// --- report ------------------------------------------------------------------------------------

function workloadTable(res) {
  const fio = res.rows.find((r) => r.fio);
  const lines = [
    `#### ${res.title}`,
    "",
    "| contender | IOPS | vs fio | CPU µs/IO | p50 µs | p99 µs | note |",
    "|---|--:|--:|--:|--:|--:|---|",
  ];
  for (const r of res.rows) {
    const ratio = fio && Number.isFinite(fio.iops) ? `${fmt(r.iops / fio.iops, 2)}x` : "–";
    let note = r.note;
    if (r.errors.length > 0) {
      note = `${note ? note + "; " : ""}${r.errors.length} failed run(s): ${r.errors[0]}`;
    }
    const name = r.blkio ? `**${r.name}**` : r.name;
    lines.push(
      `| ${name} | ${fmtIops(r.iops)} | ${ratio} | ${fmt(r.cpuUs, 2)} | ${fmt(r.p50)} | ${
        fmt(r.p99)
      } | ${note} |`,
    );
  }
  return lines.join("\n");
}

/** The issue's targets, checked for every workload and blkio runtime. */
function targetRows(results) {
  const rows = [];
  for (const res of results) {
    const fio = res.rows.find((r) => r.fio);
    const allAsyncBuiltins = res.rows.filter((r) => r.builtin && r.async);
    const asyncBuiltins = allAsyncBuiltins.filter((r) => Number.isFinite(r.iops));
    const best = asyncBuiltins.reduce((a, b) => (a === null || b.iops > a.iops ? b : a), null);
    // A built-in with failed rounds could have been the best: no verdict against the rest then.
    const builtinFailures = allAsyncBuiltins.reduce((n, r) => n + r.errors.length, 0);
    const cloop = res.rows.find((r) => r.cloop);
    const fioBatched = res.rows.find((r) => r.fioBatched);
    const context = (r, row) => row && Number.isFinite(row.iops) ? `${fmt(r.iops / row.iops, 2)}x` : "–";
    const fioSqpoll = res.rows.find((r) => r.fioSqpoll);
    for (const r of res.rows.filter((x) => x.blkio)) {
      // blkio with sqpoll=true is held against fio with --sqthread_poll=1, like for like.
      const ref = r.sqpoll ? fioSqpoll : fio;
      const vsFio = r.iops / ref.iops;
      // A verdict needs every round of both: a row with failed rounds says how many instead.
      const verdict = (failed) => (ok) => failed > 0 ? `? (${failed} failed run(s))` : ok ? "✓" : "✗";
      const mark = verdict(r.errors.length + ref.errors.length);
      const label = r.sqpoll ? `${r.label} (vs fio --sqthread_poll=1)` : r.label;
      const cells = [`${res.id}`, label, `${fmt(vsFio, 2)}x ${mark(vsFio >= 1)}`];
      cells.push(context(r, fioBatched), context(r, cloop));
      if (res.workload.depth === 32 && best) {
        const v = r.iops / best.iops;
        cells.push(`${fmt(v, 2)}x vs ${best.name} ${verdict(r.errors.length + builtinFailures)(v >= 2)}`);
      } else cells.push("–");
      if (res.workload.depth === 1) {
        const v = r.p99 / ref.p99;
        cells.push(`${fmt(r.p99)} / ${fmt(ref.p99)} µs = ${fmt(v, 2)} ${mark(v <= 1.1)}`);
      } else cells.push("–");
      rows.push(`| ${cells.join(" | ")} |`);
    }
  }
  return [
    "| workload | blkio on | IOPS vs fio (≥ 1.0x) | IOPS vs fio batched (context) | IOPS vs C liburing loop (context) | vs best async built-in (iodepth 32, ≥ 2x) | p99 vs fio (iodepth 1, ≤ 1.10) |",
    "|---|---|---|---|---|---|---|",
    ...rows,
  ].join("\n");
}

function allocTable(alloc) {
  const lines = [
    "| runtime | requests | time | heap after warm-up GC | heap at end (GC) | growth | allocated per request |",
    "|---|--:|--:|--:|--:|--:|--:|",
  ];
  for (const a of alloc) {
    if (a.error) {
      lines.push(`| ${NAME[a.runtime]} | failed: ${a.error} ||||||`);
      continue;
    }
    const ok = Math.abs(a.growthBytes) < 2 ** 20 ? "✓" : "✗";
    lines.push(
      `| ${NAME[a.runtime]} | ${a.requests.toLocaleString("en")} | ${fmt(a.seconds)} s | ${
        (a.heapBefore / 2 ** 20).toFixed(2)
      } MiB | ${(a.heapAfter / 2 ** 20).toFixed(2)} MiB | ${a.growthBytes} bytes ${ok} | ${
        a.probeBytesPerRequest === null
          ? `not measurable (${fmt(a.calibrationBytes, 0)} bytes seen a step of the calibration loop)`
          : `${fmt(a.probeBytesPerRequest, 2)} bytes (calibration loop: ${fmt(a.calibrationBytes, 0)})`
      } |`,
    );
  }
  return lines.join("\n");
}

function report(m, targets, results, alloc, minutes) {
  const t = Object.values(targets).filter(Boolean);
  const parts = [
    SECTION,
    "",
    "Written by `npm run bench` (bench/run.mjs); edit the harness, not this section.",
    "",
    `Machine: ${m.nproc} vCPU (${m.model}), ${m.memGiB} GiB, Linux ${m.kernel}, ${m.idle}` +
    `${m.syscall === null ? "" : `, ${m.syscall} ns per system call (bench/syscall_cost.c)`}. ` +
    `Runtimes: Node ${m.node}, ` +
    `${m.deno.replace(/ \(.*/, "")}, Bun ${m.bun}; ${m.fio}; liburing ${m.liburing}. ` +
    `Targets: ${
      t.map((x) => x.what.replace(/ \(.*\)$/, "")).join("; ")
    } (${opts.sizeMiB} MiB each, filled with ` +
    `random data written in 4 KiB blocks: on ext4 that keeps the page cache's folios small, see below). ${opts.rounds} rounds of ${opts.seconds} s per contender, alternated (a new random order ` +
    `each round); medians shown.${
      opts.cpu === null
        ? ""
        : ` Every contender ran pinned to CPU ${opts.cpu} (\`taskset -c ${opts.cpu}\`, \`--cpu\`).`
    }${
      opts.rampSeconds > 0
        ? ` Each measurement follows a ${opts.rampSeconds} s warm-up of the same workload that is not ` +
          "counted (fio's `ramp_time`, blkio_bench `--ramp-time`), so JavaScript is measured compiled."
        : ""
    } The full run took ${minutes.toFixed(1)} min.`,
    "",
    "Noise: the machine has 2 shared vCPUs, so single runs can vary by 2x and more (at iodepth 1 on the " +
    "loop device above all: see below); only the medians of alternated rounds are comparable, and only " +
    "within one table. CPU µs/IO is user+sys time of the whole process (every thread: thread pools and io_uring " +
    "workers included) per completed request: `process.cpuUsage()` over the measured interval for the " +
    "JavaScript contenders (blkio_bench `--cpu-usage`), and for fio the shell's `times` for the whole fio " +
    `run less ${(FIO_BASELINE_S * 1000).toFixed(0)} ms measured for starting and stopping fio, ` +
    "less the warm-up's share at the same rate (fio's own " +
    "usr/sys % leaves out the io-wq worker threads). Latency is from " +
    "submission to the completion being seen by the program (fio: `lat`, submission included).",
    "",
    "Contenders: **blkio** is `examples/blkio_bench.ts` (a Worker that waits in `doIo(min 1)`, buffers " +
    "in a mapped memory region). At iodepth 1 it and the built-in runners time one request in 32 on " +
    "page-cached reads and one in 4 elsewhere (`--latency-sample`; p50 and p99 come from that sample, " +
    "IOPS count every request): Deno's `performance.now()` costs 0.3-0.5 µs right after a system call, " +
    "where fio reads the CPU's time stamp counter. By default it submits as libblkio's blkio-bench does: the requests that " +
    "replace completed ones go to the kernel with the next wait, one `io_uring_enter` per turn. fio's " +
    "default (`iodepth_batch_submit=1`) submits each request as soon as it is queued, so at iodepth > 1 " +
    "blkio also runs with `--iodepth-batch=1`, the same way; both rows are shown. At iodepth > 1 the " +
    "`--event` rows send the requests through the promise API, `BlockDevice`, on the event loop of the " +
    "Worker (`iodepth` loops each awaiting one request at a time), the way the built-ins are driven. fio runs `--ioengine=io_uring` with its defaults plus " +
    "`--norandommap --invalidate=0`, the yardstick of the targets; at iodepth > 1 **fio io_uring (batched)** " +
    "is shown too, for context: fio told to submit the way blkio does by default " +
    "(`--iodepth_batch_submit=<iodepth> --iodepth_batch_complete_min=1 --iodepth_batch_complete_max=<iodepth>`), " +
    "since where a system call is dear, fio's default of one `io_uring_enter` per request decides its row. " +
    "At iodepth 1 the opt-in SQPOLL mode runs too: **blkio (…, sqpoll=true)** (a kernel thread takes the " +
    "submissions; a wait watches the completion queue up to 50 µs before it sleeps) against **fio io_uring " +
    "(sqthread_poll)** (`--sqthread_poll=1`; fio's thread then spins on the completion queue), like for " +
    "like in the targets table. Both keep two CPUs busy, all of this machine's: the rows show what the " +
    "mode does where cores are spare, not a default. " +
    "The built-ins are `bench/*_runner.mjs` with `iodepth` concurrent " +
    "promises (`Deno.FsFile`: one handle per promise), opened with `fs.constants.O_DIRECT` where the API " +
    "allows it. **C liburing loop** is `bench/uring_loop.c`: blkio_bench's loop written in C against " +
    "liburing (one `io_uring_submit_and_wait(1)` per turn, every ready completion resubmitted, the driver's " +
    "ring flags and registrations: the file, the buffers (READ_FIXED / WRITE_FIXED) and the ring fd; CPU from `getrusage`), so that what JavaScript costs is seen apart from " +
    "what fio's engine does differently. The synchronous calls are shown at iodepth 1 for context (they block the event loop). " +
    "The runners also time each call up to the moment it returns its promise: a promise-returning built-in that " +
    "spends half or more of its iodepth-1 latency there does the I/O inside the call and blocks the event loop, " +
    "so it is not counted as asynchronous for the 2x target (its note says so). " +
    "The XFS tables write to a page-cached file on XFS (on a loop device over a tmpfs file): XFS completes " +
    "buffered writes without blocking, so io_uring does them inside the system call, where ext4 hands every " +
    "one to an io-wq thread. Every file is written in 4 KiB blocks before the run: ext4 (Linux 6.16+) caches a " +
    "file written in large blocks in large folios, and 4 KiB writes into those cost the kernel ~25 µs each, " +
    "whoever submits them (40k-230k IOPS for every contender at iodepth 32, fio included; measured in " +
    "BENCHMARKS.md). " +
    "The last table reads a file on tmpfs buffered: tmpfs cannot complete a buffered io_uring read " +
    "inline (no IOCB_NOWAIT), so the kernel hands every one to an io-wq worker thread, while pread " +
    "copies straight from the page cache; io_uring (fio as well as blkio) loses there at iodepth 1.",
    "",
    "### Targets",
    "",
    targetRows(results),
    "",
    "### Medians",
    "",
    results.map(workloadTable).join("\n\n"),
    "",
  ];
  if (alloc) {
    parts.push(
      "### Allocation check",
      "",
      `\`bench/alloc_check.ts\`: ${
        opts.allocRequests.toLocaleString("en")
      } 4 KiB random reads at iodepth 32 ` +
        "on the page-cached file through `Queue.read` / `doIo` (no Worker), buffers in a mapped memory " +
        "region. Heap is `process.memoryUsage().heapUsed` after a forced GC (Bun: `Bun.gc(true)`; Deno: " +
        "`--expose-gc` set through node:v8, `gc` from node:vm). Target: growth under 1 MiB. The last column " +
        `samples \`heapUsed\` every 1,024 requests across ${
          (alloc.find((a) => !a.error)?.probeRequests ?? 0).toLocaleString("en")
        } requests and divides its rises by the requests, leaving out the samples a collection came ` +
        "between (the heap fell); each sample costs ~0.3 bytes a request. Whether `heapUsed` shows " +
        "allocation between collections is checked on a loop that allocates an object, an array and a " +
        "string a step (the calibration; ~150 bytes on V8): JSC's (Bun) shows too little of it, so no figure " +
        "is given there. Offsets come from xorshift32, not `Math.random()`, which allocates a 16-byte heap " +
        "number per call on V8.",
      "",
      allocTable(alloc),
      "",
    );
  }
  return parts.join("\n");
}

function writeSection(text) {
  const path = join(ROOT, "BENCHMARKS.md");
  let doc = existsSync(path) ? readFileSync(path, "utf8") : "# Benchmarks\n";
  const start = doc.indexOf(`${SECTION}\n`);
  if (start >= 0) {
    const rest = doc.slice(start + SECTION.length);
    const m = /\n## /.exec(rest);
    const end = m ? start + SECTION.length + m.index + 1 : doc.length;
    doc = doc.slice(0, start) + text + (m ? "\n" : "") + doc.slice(end);
  } else {
    doc = doc.replace(/\n*$/, "\n\n") + text;
  }
  writeFileSync(path, doc.replace(/\n*$/, "\n"));
}

// --- main --------------------------------------------------------------------------------------

const began = performance.now();
const m = machine();
console.error(`bench: making targets (${opts.sizeMiB} MiB each)...`);
const shm = makeShm(opts.sizeMiB);
const targets = { loop: makeLoop(shm), file: makeFile(opts.sizeMiB), shm, xfs: makeXfs(opts.sizeMiB) };
FIO_BASELINE_S = measureFioBaseline(targets.file);
m.syscall = buildHelpers();
if (targets.loop === null) {
  console.error("bench: not root (or no losetup): skipping the O_DIRECT loop device rows");
}
if (targets.xfs === null) {
  console.error("bench: not root (or no losetup or mkfs.xfs): skipping the XFS rows");
}
const results = runAll(targets);
const alloc = opts.alloc ? runAllocCheck(targets.file) : null;
cleanup();
const minutes = (performance.now() - began) / 60000;
const text = report(m, targets, results, alloc, minutes);
console.log(text);
mkdirSync(join(ROOT, ".tmp"), { recursive: true });
writeFileSync(
  join(ROOT, ".tmp", "bench-side-by-side.json"),
  JSON.stringify({ machine: m, opts, results, alloc }, null, 2),
);
if (opts.report && opts.only === null) {
  writeSection(text);
  // The repository keeps its Markdown in `deno fmt` form (tables aligned, lines wrapped).
  spawnSync(DENO, ["fmt", "--quiet", join(ROOT, "BENCHMARKS.md")], { cwd: ROOT, stdio: "ignore" });
  console.error("bench: wrote BENCHMARKS.md");
}
