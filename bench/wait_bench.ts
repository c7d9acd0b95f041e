/**
 * The cost of one completion wait, side by side: the adapter's eventfd wait (Deno: poll(2) on
 * the blocking pool; Bun: the eventfd read on the event loop) against the EventfdRelay (the
 * eventfd relayed to a pipe the event loop watches). Each round trip signals an eventfd and
 * awaits the wakeup; rounds alternate the mechanisms and the medians are reported, with the
 * process CPU time per wait (all threads).
 *
 * Usage: deno run -A bench/wait_bench.ts [--waits 20000] [--rounds 5] [--json]
 *        bun bench/wait_bench.ts [same options]
 *
 * `--help` prints the options (USAGE below). A usage error exits 1 with the message and the usage
 * on stderr; a kernel that cannot relay an eventfd, 1 with the message.
 *
 * @module
 */
import process from "node:process";
import { loadError, native } from "../ffi/load.ts";
import type { Native } from "../ffi/types.ts";
import { newEventfd } from "../src/sys.ts";
import { EventfdRelay } from "../src/uring/eventfd_relay.ts";
import { cannot, median, parseOptions, runTool } from "./_common.ts";

interface Mechanism {
  name: string;
  wait(): Promise<void>;
  close(): Promise<void>;
}

interface Options {
  waits: number;
  rounds: number;
  json: boolean;
}

const USAGE = "Usage: wait_bench.ts [--waits 20000] [--rounds 5] [--json]";

/** The options, or null for `--help`. */
function parseArgs(argv: string[]): Options | null {
  return parseOptions<Options>(argv, { waits: 20000, rounds: 5, json: false });
}

/** `waits` round trips; returns [waits per second, CPU µs per wait]. */
async function round(n: Native, fd: number, m: Mechanism, waits: number): Promise<[number, number]> {
  const one = n.alloc(8);
  one[0] = 1;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < waits; i++) {
    n.libc.write(fd, one, 8n);
    await m.wait();
  }
  const secs = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  return [waits / secs, (cpu.user + cpu.system) / waits];
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  if (opts === null) {
    console.log(USAGE);
    return;
  }
  if (!native) throw loadError;
  const n = native;
  const fdA = newEventfd(n), fdR = newEventfd(n);
  const relay = EventfdRelay.open(n, fdR);
  if (relay === null) cannot("this kernel cannot relay an eventfd (io_uring POLL_ADD and WRITE: Linux 5.6+)");
  const mechanisms: [Mechanism, number][] = [
    [{
      name: n.runtime === "deno"
        ? "adapter: poll(2) on the blocking pool"
        : "adapter: eventfd read on the event loop",
      wait: () => n.waitEventfd(fdA),
      close: () => n.forgetEventfd(fdA),
    }, fdA],
    [{ name: "relay: pipe on the event loop", wait: () => relay.wait(), close: () => relay.close() }, fdR],
  ];
  const results = mechanisms.map(() => ({ rate: [] as number[], cpu: [] as number[] }));
  for (const [m, fd] of mechanisms) await round(n, fd, m, Math.min(2000, opts.waits)); // warm-up
  for (let r = 0; r < opts.rounds; r++) {
    for (let k = 0; k < mechanisms.length; k++) {
      const i = (k + r) % mechanisms.length; // the order rotates each round
      const [rate, cpu] = await round(n, mechanisms[i][1], mechanisms[i][0], opts.waits);
      results[i].rate.push(rate);
      results[i].cpu.push(cpu);
    }
  }
  for (const [m] of mechanisms) await m.close();
  n.libc.close(fdA);
  n.libc.close(fdR);
  const rows = mechanisms.map(([m], i) => ({
    mechanism: m.name,
    waitsPerSecond: Math.round(median(results[i].rate)),
    roundTripUs: +(1e6 / median(results[i].rate)).toFixed(2),
    cpuUsPerWait: +median(results[i].cpu).toFixed(2),
  }));
  if (opts.json) {
    console.log(JSON.stringify({ runtime: n.runtime, waits: opts.waits, rounds: opts.rounds, rows }));
    return;
  }
  console.log(`${n.runtime}: ${opts.rounds} rounds of ${opts.waits} waits, alternated; medians`);
  for (const r of rows) {
    console.log(
      `  ${r.mechanism.padEnd(42)} ${String(r.waitsPerSecond).padStart(8)} waits/s  ${
        r.roundTripUs.toFixed(2).padStart(7)
      } µs/round trip  ${r.cpuUsPerWait.toFixed(2).padStart(6)} µs CPU/wait`,
    );
  }
}

await runTool("wait_bench", USAGE, main);
