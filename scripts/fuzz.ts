/**
 * Random API-sequence fuzzer. Each step picks a random action of the public API (instance
 * lifecycle, properties in every state, memory regions, queues added and removed, reads, writes,
 * vectored I/O, flushes, write zeroes with every flag combination, discards, FUA, buffers in and
 * out of mapped regions, empty, misaligned and out-of-range requests, bursts beyond the ring,
 * cancels, `doIo` with assorted min/max/timeouts and `out` arrays, completion fds, poll queues
 * where the target has them) and checks the result against a model:
 *
 * - the instance's state and properties, and the errno of every call the state refuses;
 * - memory regions (allocated, mapped, freed, in use by requests);
 * - the requests outstanding on each queue: each completes exactly once, on its own queue, with
 *   its own userData (`Object.is`; odd ones too: NaN, -0, 2^64, bigints past 2^64, frozen objects,
 *   functions, Proxies; some shared by several requests) and a ret (and errorMsg) the semantics
 *   allow (`scripts/_fuzz_expect.ts`); cancel() matches by `===` (0 and -0 alike, NaN never);
 * - the expected bytes of the target (`scripts/_fuzz_disk.ts`): a completed write defines them,
 *   writes that overlapped in flight make a range unknown until a later completed write, and
 *   every successful read must agree. At the end the whole target is read back through a fresh
 *   instance and through node:fs.
 *
 * Targets are made fresh for each run and removed afterwards: a scratch file (`file`,
 * `file+direct`) and, as root, a loop device over a tmpfs file (`loop`, `loop+direct`) and a
 * qemu-storage-daemon vhost-user-blk export of a raw image (`vhost-user`: the
 * virtio-blk-vhost-user driver; the image is read through node:fs at the end). `--pauses` stops
 * the export's daemon (SIGSTOP) now and then for up to 400 ms: its requests must complete late
 * and right.
 *
 * The first mismatch ends the run with the seed, the step, the command that replays it and the
 * last steps of a replay log (the bytes a wrong read found are traced to the write they came
 * from). Each step draws from a random stream of its own, made from the seed and the step
 * number, so the same command makes the same choices; what the kernel has completed by the time
 * of a `doIo(min 0)` can still differ between runs, so a failure that depends on timing may take
 * a few replays. `tests/fuzz.test.ts` runs a bounded version in the suite.
 *
 * `--api block-device` fuzzes the Promise API instead (`_fuzz_block_device.ts`): many concurrent
 * requests of every kind over several queues and beyond small rings, buffers from `allocBuffer`
 * (some over 512 KiB) and plain memory, aborts before a request is made, while it is queued and
 * in flight, `released()` on aborted requests' buffers (which must not change afterwards), bad
 * arguments (each with its documented code), `close()` with requests in flight
 * (every promise must have settled, once, when it resolves; EBADF afterwards) and reopening, with
 * the same expected outcomes, disk model and final read-back. Its completions arrive on the event
 * loop, so a seed repeats its choices but not always its interleaving.
 *
 * Files: `_fuzz_run.ts` (the actions and checks), `_fuzz_block_device.ts` (the same for
 * BlockDevice), `_fuzz_range.ts` (where requests go), `_fuzz_effect.ts` (what a completed
 * request does to the model), `_fuzz_expect.ts` (what each request may
 * complete with: the semantics, and the known open bugs), `_fuzz_disk.ts` (expected contents),
 * `_fuzz_request.ts` (requests in flight and their overlaps), `_fuzz_props.ts` (properties),
 * `_fuzz_buffers.ts`, `_fuzz_target.ts`, `_fuzz_history.ts`, `_fuzz_log.ts`, `_fuzz_rng.ts`.
 *
 * Usage:
 *   deno run -A scripts/fuzz.ts [--api sync|block-device] [--steps N] [--seconds S] [--seed N]
 *     [--target file|file+direct|loop|loop+direct|loop-4k|loop-4k+direct|loop-bare|loop-bare+direct
 *       |vhost-user|fuse-short|tmpfs-full|tmpfs-full+direct|fuse-eio|vhost-eio[,...]]
 *     [--size BYTES] [--base BYTES] [--dir DIR] [--pauses] [--no-discard-command] [--verbose] [--json]
 *   bun scripts/fuzz.ts ...
 *
 * - `--steps` per run (default 5000). Without `--seconds`: one run per target.
 * - `--seconds`: runs with seeds `seed`, `seed + 1`, ... over the targets in turn until the time
 *   is up; every failure is reported, and the exit status is 1 if there was one.
 * - `--seed` (default: from the clock, printed), `--size` of each target (default 1 MiB; from
 *   4 MiB, some requests are larger than one bio), `--base`: the fuzzer's part of the target
 *   starts this far in (a multiple of 4096; the file, loop (not `loop-bare`) and vhost targets:
 *   BASE_TARGETS), which is made that much longer and sparse below it: `--base 4294443008`
 *   (4 GiB - 512 KiB) puts requests below, across and above 4 GiB (offsets a driver that kept
 *   32 bits of would get wrong), while the model holds only `--size` bytes. `--dir` where file
 *   targets go (default: the temp directory; /dev/shm for tmpfs, whose queues defer task work),
 *   `--verbose` prints every step. `--no-discard-command` hides io_uring's block device commands
 *   (IORING_OP_URING_CMD) from the library, as on a kernel before 5.19: it discards block devices
 *   the way it must before Linux 6.12, as holes.
 * - SIGINT, SIGTERM, SIGHUP or SIGPIPE, or a reader of stdout or stderr gone (`2>&1 | head -1`),
 *   ends the run after its current step: its target is removed (FUSE mount, loop device,
 *   qemu-storage-daemon, scratch files), the runs so far are summed up, and the status is 128 +
 *   the signal's number (141 for a reader gone). A second signal removes the target at once.
 *
 * @module
 */
import { writeSync } from "node:fs";
import process from "node:process";
import { setTimeout as later } from "node:timers";
import { requireNative } from "../src/native.ts";
import { IORING_OP } from "../src/uring/constants.ts";
import { hideOpcode } from "../tests/_rewrite_results.ts";
import { kernel } from "./_fuzz_expect.ts";
import { FuzzFailure, FuzzStopped, ReplayLog } from "./_fuzz_log.ts";
import { Rng } from "./_fuzz_rng.ts";
import { runFuzz, type RunOptions, type RunStats } from "./_fuzz_run.ts";
import { type BlockDeviceStats, runBlockDeviceFuzz } from "./_fuzz_block_device.ts";
import {
  adoptTarget,
  BASE_TARGETS,
  type FuzzTarget,
  makeTarget,
  TARGET_NAMES,
  type TargetName,
  targetUnavailable,
} from "./_fuzz_target.ts";

export { TARGET_NAMES, type TargetName, targetUnavailable } from "./_fuzz_target.ts";

/** What one fuzz run is asked to do. */
export interface FuzzRunOptions {
  target: TargetName;
  seed: number;
  steps: number;
  /** Stop early at this `performance.now()` (0: no limit). */
  deadline?: number;
  /** Bytes of the target (default 1 MiB). */
  size?: number;
  /**
   * Where in the target the fuzzer's part starts (default 0): with a base, a target that much
   * longer is made, sparse below it (BASE_TARGETS), and every request goes that far in.
   */
  base?: number;
  /** Directory of file targets. */
  dir?: string;
  /**
   * A scratch file or loop device to use instead of making one (its size must be `size`; it is
   * not removed afterwards).
   */
  path?: string;
  /** Print every step. */
  verbose?: boolean;
  /** SIGSTOP / SIGCONT the vhost-user back-end now and then. */
  pauses?: boolean;
  /** IORING_OP_URING_CMD was hidden from the library for the whole process (`--no-discard-command`). */
  noDiscardCommand?: boolean;
  /** The API fuzzed: the synchronous Blkio/Queue API (default), or BlockDevice. */
  api?: FuzzApi;
  /** Once aborted, the run ends after its current step, removes its target and throws FuzzStopped. */
  stop?: AbortSignal;
}

/** The APIs the fuzzer drives, as `--api` takes them. */
export const FUZZ_APIS = ["sync", "block-device"] as const;
export type FuzzApi = typeof FUZZ_APIS[number];

/** The result of one run (`S`: the figures of its API's run). */
export interface FuzzRunReport<S = RunStats> {
  runtime: string;
  target: TargetName;
  seed: number;
  stats: S | null;
  seconds: number;
  /** Null, or the failure: message, step, replay command and the last steps. */
  failure: string | null;
}

/** The runtime this runs on, with its version. */
export const RUNTIME = "Bun" in globalThis ? `bun ${process.versions.bun}` : `deno ${process.versions.deno}`;

/** The command that repeats a run up to `steps` steps. */
function replayCommand(o: FuzzRunOptions, steps: number): string {
  const runner = "Bun" in globalThis ? "bun scripts/fuzz.ts" : "deno run -A scripts/fuzz.ts";
  const extra = `${o.size ? ` --size ${o.size}` : ""}${o.base ? ` --base ${o.base}` : ""}` +
    `${o.dir ? ` --dir ${o.dir}` : ""}` +
    `${o.pauses ? " --pauses" : ""}${o.noDiscardCommand ? " --no-discard-command" : ""}`;
  const api = o.api === "block-device" ? " --api block-device" : "";
  return `${runner}${api} --target ${o.target} --seed ${o.seed} --steps ${steps}${extra} --verbose`;
}

/** Targets made and not removed yet: what a stop that cannot wait for the run removes. */
const live = new Set<FuzzTarget>();

/** The target, initial contents and replay log of one run. */
function prepare(o: FuzzRunOptions): { initial: Uint8Array; log: ReplayLog; target: FuzzTarget } {
  const size = o.size ?? 1024 * 1024;
  const initial = new Uint8Array(size);
  new Rng(o.seed ^ 0x5eed).fill(initial);
  const log = new ReplayLog(150, o.verbose ? (line) => emit(2, `${line}\n`) : null);
  if (o.base && o.path !== undefined) throw new Error("a target made elsewhere takes no base");
  const target = o.path !== undefined
    ? adoptTarget(o.target, o.path, initial)
    : makeTarget(o.target, initial, o.dir, o.base ?? 0);
  live.add(target);
  return { initial, log, target };
}

/** Removes the target of a run (idempotent). */
function remove(target: FuzzTarget): void {
  try {
    target.cleanup();
  } finally {
    live.delete(target);
  }
}

/** The report of a failed run: what differed, where, the replay command and the last steps. */
function failureText(o: FuzzRunOptions, log: ReplayLog, e: FuzzFailure): string {
  const api = o.api === "block-device" ? ", BlockDevice API" : "";
  return `FUZZ FAILURE on ${RUNTIME}${api}, target ${o.target}, seed ${o.seed}, step ${log.step}:\n` +
    `  ${e.message}\n` +
    `replay: ${replayCommand(o, log.step + 1)}\n` +
    `last steps:\n${log.lines().map((l) => `  ${l}`).join("\n")}`;
}

/**
 * Runs the fuzzer once against a fresh target; never rejects for a model mismatch (FuzzStopped
 * when `o.stop` ended it).
 */
export async function fuzzOnce(o: FuzzRunOptions): Promise<FuzzRunReport> {
  const t0 = performance.now();
  const { initial, log, target } = prepare(o);
  let stats: RunStats | null = null;
  let failure: string | null = null;
  try {
    stats = await runFuzz(runOptions(o, initial, log, target));
  } catch (e) {
    failure = failureOf(e, o, log);
  } finally {
    remove(target);
  }
  return report(o, t0, stats, failure);
}

/** What a run of either mode takes. */
function runOptions(o: FuzzRunOptions, initial: Uint8Array, log: ReplayLog, target: FuzzTarget): RunOptions {
  return {
    target,
    initial,
    seed: o.seed,
    steps: o.steps,
    deadline: o.deadline ?? 0,
    log,
    pauses: o.pauses,
    stop: o.stop,
  };
}

/** The text of a model mismatch `e` (anything else is rethrown). */
function failureOf(e: unknown, o: FuzzRunOptions, log: ReplayLog): string {
  if (!(e instanceof FuzzFailure)) throw e;
  return failureText(o, log, e);
}

function report<S>(o: FuzzRunOptions, t0: number, stats: S | null, failure: string | null): FuzzRunReport<S> {
  return {
    runtime: RUNTIME,
    target: o.target,
    seed: o.seed,
    stats,
    seconds: (performance.now() - t0) / 1000,
    failure,
  };
}

/**
 * Runs the BlockDevice (Promise API) fuzzer once against a fresh target
 * (`scripts/_fuzz_block_device.ts`); never rejects for a model mismatch.
 */
export async function fuzzBlockDeviceOnce(o: FuzzRunOptions): Promise<FuzzRunReport<BlockDeviceStats>> {
  const t0 = performance.now();
  const opts = { ...o, api: "block-device" as const };
  const { initial, log, target } = prepare(opts);
  let stats: BlockDeviceStats | null = null;
  let failure: string | null = null;
  try {
    stats = await runBlockDeviceFuzz(runOptions(o, initial, log, target));
  } catch (e) {
    failure = failureOf(e, opts, log);
  } finally {
    remove(target);
  }
  return report(o, t0, stats, failure);
}

const USAGE =
  `Usage: deno run -A scripts/fuzz.ts [--api sync|block-device] [--steps N] [--seconds S] [--seed N]
    [--target ${TARGET_NAMES.join("|")}[,...]]
    [--size BYTES] [--base BYTES] [--dir DIR] [--pauses] [--no-discard-command] [--verbose] [--json]
  bun scripts/fuzz.ts ...
Options and targets: the comment at the top of scripts/fuzz.ts, and RELIABILITY.md.
`;
const VALUE_OPTIONS = ["api", "steps", "seconds", "seed", "target", "size", "base", "dir"];
const FLAG_OPTIONS = ["verbose", "json", "pauses", "no-discard-command", "help"];

/**
 * The options of `argv`. An unknown one is an error: `--help` and misspellings were taken for
 * options with a value and ignored, and the whole default campaign ran.
 */
function parseArgs(argv: string[]): Map<string, string> {
  const args = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) throw new Error(`unexpected argument ${a}`);
    const eq = a.indexOf("=");
    const name = eq > 0 ? a.slice(2, eq) : a.slice(2);
    if (FLAG_OPTIONS.includes(name) && eq < 0) args.set(name, "true");
    else if (!VALUE_OPTIONS.includes(name)) throw new Error(`unknown option ${a}\n${USAGE}`);
    else if (eq > 0) args.set(name, a.slice(eq + 1));
    else args.set(name, argv[++i] ?? "");
  }
  return args;
}

/** The writes that failed and may have landed in part, where there were any. */
function failedWrites(n: number): string {
  return n > 0 ? `${n} writes failed, maybe in part, ` : "";
}

/** One line of figures for a run that passed. */
function summary(r: FuzzRunReport | FuzzRunReport<BlockDeviceStats>, api: FuzzApi): string {
  const mib = (n: number) => (n / 1048576).toFixed(1);
  const head = `  ${r.target} seed ${r.seed}: `;
  if (api === "block-device") {
    const s = (r as FuzzRunReport<BlockDeviceStats>).stats!;
    return `${head}${s.steps} steps, ${s.requests} requests (${s.settled} settled, ${s.failedRequests} ` +
      `rejected as the model allows, ${s.aborts} aborted, ${s.lateAborts} aborted too late, ${s.released} released early), ` +
      `${s.badInputs} bad inputs, ${s.opens} opens, ${s.closes} closes with ${s.closedInFlight} in flight, ` +
      `at most ${s.maxPending} pending, ${mib(s.bytesRead)} MiB read (${mib(s.bytesCompared)} MiB compared ` +
      `with the model), ${s.noBuffer} requests short of a buffer, ${failedWrites(s.failedWrites)}` +
      `${s.pauses ? `${s.pauses} back-end pauses, ` : ""}` +
      `${s.syncsChecked ? `${s.syncsChecked} flushes and FUA writes seen to sync, ` : ""}${
        r.seconds.toFixed(1)
      } s\n`;
  }
  const s = (r as FuzzRunReport).stats!;
  return `${head}${s.steps} steps, ${s.requests} requests, ${s.completions} completions, ${s.doIo} doIo, ` +
    `${s.instances} instances, ${mib(s.bytesRead)} MiB read (${mib(s.bytesCompared)} MiB compared with the ` +
    `model), ${s.noBuffer} requests short of a buffer, ${failedWrites(s.failedWrites)}` +
    `${s.pauses ? `${s.pauses} back-end pauses, ` : ""}` +
    `${s.syncsChecked ? `${s.syncsChecked} flushes and FUA writes seen to sync, ` : ""}` +
    `${s.farReads ? `${s.farReads} reads far past the end, ` : ""}` +
    `${s.shared} requests sharing a userData (${s.sharedGroups} groups, ${s.sharedCancels} cancels), ` +
    `${s.oddUserData} with an odd userData (${s.missCancels} cancels that had to find none), ` +
    `${r.seconds.toFixed(1)} s\n`;
}

/**
 * The signals that stop a campaign, with the status it then exits with (128 + the signal's
 * number, as a shell shows a process the signal ended).
 */
const STOP_SIGNALS = { SIGHUP: 129, SIGINT: 130, SIGPIPE: 141, SIGTERM: 143 } as const;
type StopSignal = keyof typeof STOP_SIGNALS;

/** How long a stopped campaign's run may take to end before its target is removed under it. */
const STOP_GRACE_MS = 20_000;

/**
 * How a campaign ends early: on a signal, or once a reader of its output has gone (`| head -1`),
 * the run ends after its current step and removes its target as after a failure (FUSE mount,
 * loop device, qemu-storage-daemon, scratch files), and the process exits with the signal's
 * status. A second signal, or a run that has not ended within STOP_GRACE_MS, removes the
 * targets at once.
 */
class Stopper {
  readonly #controller = new AbortController();
  readonly #handlers: [StopSignal, () => void][] = [];
  #watch: ReturnType<typeof setInterval> | null = null;
  by: StopSignal | null = null;

  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** Listens for the signals, and watches stdout and stderr for a reader gone. */
  listen(): void {
    for (const sig of Object.keys(STOP_SIGNALS) as StopSignal[]) {
      const handler = () => this.stop(sig);
      process.on(sig, handler);
      this.#handlers.push([sig, handler]);
    }
    // Both runtimes ignore SIGPIPE: a reader gone shows as EPIPE on the next write, which may
    // be a run's summary minutes away. poll(2) says so at once.
    this.#watch = setInterval(() => {
      for (const fd of closedOutputs()) {
        gone.add(fd);
        this.stop("SIGPIPE");
      }
    }, 100);
  }

  /** Stops the campaign (the second time: at once). */
  stop(sig: StopSignal): void {
    if (this.by !== null) return forceStop(sig);
    this.by = sig;
    this.#controller.abort(sig);
    emit(2, `fuzz: ${sig}: stopping after this step, then removing the target\n`);
    later(() => forceStop(sig), STOP_GRACE_MS).unref();
  }

  /** Stops listening (the process can end). */
  close(): void {
    for (const [sig, handler] of this.#handlers.splice(0)) process.off(sig, handler);
    if (this.#watch !== null) clearInterval(this.#watch);
  }
}

/** Removes every target made and not removed yet, and exits with `sig`'s status. */
function forceStop(sig: StopSignal): never {
  for (const t of live) {
    try {
      remove(t);
    } catch {
      // the others still go
    }
  }
  process.exit(STOP_SIGNALS[sig]);
}

/** POLLERR, POLLHUP: the write end of a pipe without readers, a socket whose peer closed. */
const POLLERR = 0x8, POLLHUP = 0x10;

/** Which of stdout and stderr lost their reader (a pipe or socket whose other end closed). */
function closedOutputs(): (1 | 2)[] {
  const native = requireNative();
  const fds = native.alloc(16); // struct pollfd { int fd; short events; short revents; } x 2
  const v = new DataView(fds.buffer);
  v.setInt32(0, 1, true);
  v.setInt32(8, 2, true);
  if (native.libc.poll(fds, 2n, 0) <= 0) return [];
  return ([1, 2] as const).filter((_, i) => (v.getInt16(i * 8 + 6, true) & (POLLERR | POLLHUP)) !== 0);
}

/** Outputs whose reader has gone: nothing more is written to them. */
const gone = new Set<number>();
const encoder = new TextEncoder();

/** Set by main: where a reader gone is reported. */
let stopper: Stopper | null = null;

/**
 * Writes `text` to stdout (1) or stderr (2) synchronously. A reader gone stops the campaign, as
 * SIGPIPE would: both runtimes ignore SIGPIPE, so the write fails EPIPE instead.
 */
function emit(fd: 1 | 2, text: string): void {
  if (gone.has(fd)) return;
  const bytes = encoder.encode(text);
  for (let done = 0; done < bytes.length;) {
    try {
      done += writeSync(fd, bytes, done, bytes.length - done);
    } catch (e) {
      const code = (e as { code?: string }).code;
      // A pipe left non-blocking by the parent: wait for room rather than lose output.
      if (code === "EAGAIN") continue;
      gone.add(fd);
      if (code === "EPIPE") stopper?.stop("SIGPIPE");
      return;
    }
  }
}

async function main(): Promise<void> {
  stopper = new Stopper();
  stopper.listen();
  try {
    await campaign(stopper);
  } finally {
    stopper.close();
  }
}

/** The runs the command line asks for. */
async function campaign(stop: Stopper): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.has("help")) {
    emit(1, USAGE);
    return;
  }
  const num = (name: string, def: number) => {
    const v = args.has(name) ? Number(args.get(name)) : def;
    if (!Number.isSafeInteger(v) || v < 0) throw new Error(`--${name} must be a non-negative integer`);
    return v;
  };
  const api = (args.get("api") ?? "sync") as FuzzApi;
  if (!FUZZ_APIS.includes(api)) throw new Error(`--api must be one of ${FUZZ_APIS.join(", ")}`);
  const seed = num("seed", Date.now() % 1_000_000);
  const steps = num("steps", 5000);
  const seconds = num("seconds", 0);
  const size = num("size", 1024 * 1024);
  const base = num("base", 0);
  const dir = args.get("dir");
  const verbose = args.has("verbose");
  const pauses = args.has("pauses");
  const noDiscardCommand = args.has("no-discard-command");
  if (noDiscardCommand) {
    hideOpcode(IORING_OP.URING_CMD);
    kernel.discardCommand = false;
  }
  const json = args.has("json");
  const asked = (args.get("target") ?? TARGET_NAMES.join(",")).split(",") as TargetName[];
  for (const t of asked) if (!TARGET_NAMES.includes(t)) throw new Error(`unknown target ${t}`);
  const targets = asked.filter((t) => {
    const why = base > 0 && !BASE_TARGETS.includes(t) ? "it takes no --base" : targetUnavailable(t);
    if (why !== null) emit(2, `fuzz: skipping ${t}: ${why}\n`);
    return why === null;
  });
  if (targets.length === 0) throw new Error("no target can be made here");
  const end = seconds > 0 ? performance.now() + seconds * 1000 : 0;
  const reports: (FuzzRunReport | FuzzRunReport<BlockDeviceStats>)[] = [];
  const what = api === "block-device" ? " (BlockDevice API)" : "";
  if (!json) emit(2, `fuzz on ${RUNTIME}${what}: seed ${seed}, ${steps} steps a run\n`);
  let stopped = "";
  for (let k = 0;; k++) {
    if (seconds > 0 ? performance.now() >= end : k >= targets.length) break;
    if (stop.by !== null) break;
    const target = targets[k % targets.length];
    const runSeed = seconds > 0 ? seed + Math.floor(k / targets.length) : seed;
    const o: FuzzRunOptions = {
      target,
      seed: runSeed,
      steps,
      deadline: end,
      size,
      base,
      dir,
      verbose,
      pauses,
      noDiscardCommand,
      api,
      stop: stop.signal,
    };
    let r: FuzzRunReport | FuzzRunReport<BlockDeviceStats>;
    try {
      r = api === "block-device" ? await fuzzBlockDeviceOnce(o) : await fuzzOnce(o);
    } catch (e) {
      if (!(e instanceof FuzzStopped)) throw e;
      stopped = `, stopped by ${stop.by} in the run of ${target} seed ${runSeed} (its target removed)`;
      break;
    }
    reports.push(r);
    if (!json) emit(2, r.failure === null ? summary(r, api) : `${r.failure}\n\n`);
  }
  const failures = reports.filter((r) => r.failure !== null).length;
  const total = (f: (s: RunStats | BlockDeviceStats) => number) =>
    reports.reduce((n, r) => n + (r.stats ? f(r.stats) : 0), 0);
  if (json) {
    const stoppedBy = stop.by;
    emit(
      1,
      JSON.stringify({ runtime: RUNTIME, api, seed, runs: reports, failures, stoppedBy }, null, 2) + "\n",
    );
  } else {
    const settled = api === "block-device"
      ? `${total((s) => (s as BlockDeviceStats).settled)} settled, ${
        total((s) => (s as BlockDeviceStats).aborts)
      } aborted`
      : `${total((s) => (s as RunStats).completions)} completions`;
    emit(
      1,
      `fuzz on ${RUNTIME}${what}: ${reports.length} runs, ${total((s) => s.steps)} steps, ` +
        `${total((s) => s.requests)} requests, ${settled}, ${failures} failed${stopped}\n`,
    );
  }
  if (failures > 0) process.exitCode = 1;
  if (stop.by !== null) process.exitCode = STOP_SIGNALS[stop.by];
}

if ((import.meta as { main?: boolean }).main) await main();
