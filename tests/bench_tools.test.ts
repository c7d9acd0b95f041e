// bench/ab_bench.ts, the in-process A/B of a git revision against the working tree that the
// levers in BENCHMARKS.md were measured with: it runs on this runtime and reports sane figures.
// The other bench tools (block_device_bench, layers_bench, wait_bench, alloc_check): their
// command line, which they share with ab_bench (bench/_common.ts), and a short run of each.
import { test } from "node:test";
import assert from "./_assert.ts";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { loopUnavailableReason, RUNTIME, skipIf } from "./_helpers.ts";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

function gitSkipReason(): string | null {
  const r = spawnSync("git", ["-C", ROOT, "rev-parse", "--verify", "HEAD"], { encoding: "utf8" });
  if (r.error) return `git is not installed (${r.error.message})`;
  if (r.status !== 0) {
    return `${ROOT} is not a git checkout with a commit: ab_bench extracts its base with git archive`;
  }
  return null;
}
const SKIP = gitSkipReason();

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs bench/<name>.ts with `args` on the runtime running this test. */
function benchTool(name: string, args: string[]): Run {
  const script = join(ROOT, "bench", `${name}.ts`);
  const argv = RUNTIME === "deno" ? ["run", "-A", script, ...args] : [script, ...args];
  const r = spawnSync(process.execPath, argv, { cwd: ROOT, encoding: "utf8", timeout: 120_000 });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function abBench(args: string[]): Run {
  return benchTool("ab_bench", args);
}

test(...skipIf("ab_bench: HEAD against the working tree, both orders, sane figures", SKIP), () => {
  for (const order of ["AB", "BA"]) {
    const r = abBench(["--rounds", "2", "--requests", "2000", "--size-mib", "8", "--order", order, "--json"]);
    assert.equal(r.status, 0, r.stderr);
    const res = JSON.parse(r.stdout);
    assert.equal(res.runtime, RUNTIME);
    assert.equal(res.order, order);
    assert.equal(res.base, "HEAD");
    // A 4 KiB page-cached read with its system call takes between 0.3 µs and 1 ms anywhere.
    for (const k of ["baseNs", "newNs"]) assert.ok(res[k] > 300 && res[k] < 1e6, `${k} ${res[k]}`);
    assert.ok(res.ratio > 0.2 && res.ratio < 5, `ratio ${res.ratio}`);
  }
});

test(
  ...skipIf("ab_bench: 8 KiB random writes at iodepth 8, and sequential reads through BlockDevice", SKIP),
  () => {
    const common = ["--rounds", "2", "--requests", "2000", "--size-mib", "8", "--iodepth", "8", "--json"];
    for (const extra of [["--rw", "write", "--bs", "8192"], ["--event", "--seq"]]) {
      const r = abBench([...common, ...extra]);
      assert.equal(r.status, 0, r.stderr);
      const res = JSON.parse(r.stdout);
      assert.equal(res.iodepth, 8);
      assert.equal(res.rw, extra[0] === "--rw" ? "write" : "read");
      assert.equal(res.event, extra[0] === "--event");
      assert.equal(res.bs, extra[0] === "--rw" ? 8192 : 4096);
      assert.equal(res.seq, extra[0] === "--event");
      for (const k of ["baseNs", "newNs"]) assert.ok(res[k] > 100 && res[k] < 1e6, `${k} ${res[k]}`);
      assert.ok(res.ratio > 0.2 && res.ratio < 5, `ratio ${res.ratio}`);
    }
  },
);

/** Why ab_bench cannot drop the page cache here, or null. */
function dropCachesSkipReason(): string | null {
  if (SKIP !== null) return SKIP;
  if (typeof process.getuid !== "function" || process.getuid() !== 0) {
    return "not root: --drop-caches writes /proc/sys/vm/drop_caches";
  }
  return null;
}

test(
  ...skipIf("ab_bench: --drop-caches reads a file cold every round", dropCachesSkipReason()),
  () => {
    const dir = mkdtempSync(join(tmpdir(), "blkio-abtest-"));
    try {
      const path = join(dir, "cold.img");
      writeFileSync(path, new Uint8Array(4 << 20).fill(7));
      const r = abBench([
        "--path",
        path,
        "--drop-caches",
        "--seq",
        "--bs",
        "131072",
        "--iodepth",
        "4",
        "--rounds",
        "2",
        "--requests",
        "64",
        "--json",
      ]);
      assert.equal(r.status, 0, r.stderr);
      const res = JSON.parse(r.stdout);
      assert.equal(res.dropCaches, true);
      assert.equal(res.bs, 131072);
      for (const k of ["baseNs", "newNs"]) assert.ok(res[k] > 100 && res[k] < 1e8, `${k} ${res[k]}`);
      assert.ok(res.ratio > 0.1 && res.ratio < 10, `ratio ${res.ratio}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);

/** ab_bench's temporary directories (where it extracts the base revision) now in the tmpdir. */
function abDirs(): string[] {
  return readdirSync(tmpdir()).filter((name) => name.startsWith("blkio-ab-"));
}

// ab_bench exited 2 where every other tool exits 1 (examples.test.ts' "every tool" tests, which
// take ab_bench's --help and an unknown option), and printed no usage.
test(
  ...skipIf(
    "ab_bench: bad options exit 1 with the usage, an unusable revision or path with the reason alone, leaving nothing behind",
    SKIP,
  ),
  () => {
    const before = new Set(abDirs());
    const refused = (args: string[], reason: RegExp, withUsage: boolean) => {
      const r = abBench(args);
      assert.equal(r.status, 1, `${args.join(" ")}: ${r.stderr}`);
      assert.equal(r.stdout, "", args.join(" "));
      assert.match(r.stderr, reason);
      assert.equal(/^Usage: ab_bench\.ts /m.test(r.stderr), withUsage, `${args.join(" ")}: ${r.stderr}`);
    };
    refused(["--rounds", "0"], /^ab_bench: --rounds needs a positive integer\nUsage: /, true);
    refused(["--order", "CA"], /^ab_bench: invalid value for --order: CA\nUsage: /, true);
    refused(["--bs", "1000"], /^ab_bench: --bs needs a multiple of 512\nUsage: /, true);
    refused(["--direct"], /^ab_bench: --direct needs --path/, true);
    refused(["--rounds"], /^ab_bench: --rounds needs a value\nUsage: /, true);
    refused(
      ["--path", "/no/such/file", "--rounds", "1", "--requests", "10"],
      /cannot use --path \/no\/such\/file: ENOENT/,
      false,
    );
    refused(
      ["--base", "no-such-revision-here", "--rounds", "1", "--requests", "10"],
      /git archive no-such-revision-here failed/,
      false,
    );
    // The bad --path was found after the base revision had been extracted.
    assert.deepEqual(abDirs().filter((name) => !before.has(name)), [], "temporary directories left behind");
  },
);

// --- the other bench tools' command line ---------------------------------------------------

/**
 * Each tool's options as its usage synopsis writes them (the default after the name, the
 * default first of the words), and bad option values with the message each must give.
 */
const TOOLS: Record<string, { options: string[]; bad: [string[], string][] }> = {
  block_device_bench: {
    options: ["--seconds 2", "--rounds 5", "--depth 32", "--size-mib 256", "--path DEVICE", "--json"],
    bad: [
      [["--seconds", "0"], "--seconds needs a positive number"],
      [["--depth", "x"], "--depth needs a positive integer"],
      [["--json", "--rounds"], "--rounds needs a value"],
    ],
  },
  layers_bench: {
    options: [
      "--requests 100000",
      "--rounds 9",
      "--size-mib 256",
      "--kernel real|fake|fake-syscall",
      "--json",
    ],
    bad: [
      [["--kernel", "virtual"], "invalid value for --kernel: virtual"],
      [["--requests", "1.5"], "--requests needs a positive integer"],
    ],
  },
  wait_bench: {
    options: ["--waits 20000", "--rounds 5", "--json"],
    bad: [
      [["--waits", "-1"], "--waits needs a positive integer"],
      [["--rounds"], "--rounds needs a value"],
    ],
  },
  alloc_check: {
    options: [
      "--path FILE",
      "--requests 5000000",
      "--depth 32",
      "--warmup 500000",
      "--probe 1000000",
      "--driver io_uring|virtio-blk-vhost-user",
      "--json",
    ],
    bad: [
      [["--path", "/dev/null", "--driver", "nvme"], "invalid value for --driver: nvme"],
      [["--path", "/dev/null", "--warmup", "-1"], "--warmup needs a non-negative integer"],
      [["--depth", "0", "--path", "/dev/null"], "--depth needs a positive integer"],
      [["--requests", "10"], "missing --path (the file or device to read)"],
    ],
  },
};

/**
 * The options in a usage synopsis: its lines from the one with "Usage:" for as long as they
 * are indented (or, in a doc comment, ` * ` then indented), each option with the word after it.
 */
function synopsisOptions(text: string): string[] {
  const lines = text.split("\n").map((l) => l.replace(/^ \* ?/, ""));
  const start = lines.findIndex((l) => l.startsWith("Usage:"));
  assert.ok(start >= 0, `no "Usage:" in ${JSON.stringify(text.slice(0, 200))}`);
  let end = start + 1;
  while (end < lines.length && /^\s+\S/.test(lines[end])) end++;
  const found = lines.slice(start, end).join(" ").match(/--[a-z-]+(?: (?!-)[^\s[\]]+)?/g) ?? [];
  return [...new Set(found)].sort();
}

/** A run refused with status 1: a one-line message, then the usage when `withUsage`, on stderr. */
function refused(name: string, args: string[], message: string, withUsage: boolean): void {
  const r = benchTool(name, args);
  const what = `${name} ${args.join(" ")}: ${r.stderr}`;
  assert.equal(r.status, 1, what);
  assert.equal(r.stdout, "", what);
  assert.doesNotMatch(r.stderr, /^\s+at /m, `stack trace: ${what}`);
  const lines = r.stderr.split("\n");
  assert.equal(lines[0], `${name}: ${message}`, what);
  if (withUsage) assert.match(lines[1], new RegExp(`^Usage: ${name}\\.ts `), what);
  else assert.equal(r.stderr, `${name}: ${message}\n`, what);
}

// Before, none of the four knew --help: each threw "Unknown option" with a stack trace.
test("bench tools: --help and -h print every option with its default on stdout, as the doc comment does, and exit 0", () => {
  for (const [name, { options }] of Object.entries(TOOLS)) {
    for (const flag of ["--help", "-h"]) {
      const r = benchTool(name, [flag]);
      assert.equal(r.status, 0, `${name} ${flag}: ${r.stderr}`);
      assert.equal(r.stderr, "", `${name} ${flag}`);
      assert.match(r.stdout, new RegExp(`^Usage: ${name}\\.ts `), `${name} ${flag}`);
      assert.deepEqual(synopsisOptions(r.stdout), [...options].sort(), `${name} ${flag}: ${r.stdout}`);
    }
    const doc = readFileSync(join(ROOT, "bench", `${name}.ts`), "utf8").split("@module")[0];
    assert.deepEqual(synopsisOptions(doc), [...options].sort(), `${name}: the doc comment's usage`);
  }
});

// Before: an uncaught Error with its stack trace and no usage; block_device_bench and
// alloc_check took a bad number (`--depth x`) as NaN and went on.
test("bench tools: an unknown option or a bad value exits 1 with a line naming the option and the usage on stderr, no stack trace", () => {
  for (const [name, { bad }] of Object.entries(TOOLS)) {
    refused(name, ["--bogus"], "unrecognized option '--bogus'", true);
    for (const [args, message] of bad) refused(name, args, message, true);
  }
});

test("bench tools: a --path that cannot be opened exits 1 with the reason alone", () => {
  refused(
    "block_device_bench",
    ["--path", "/no/such/device", "--seconds", "0.1", "--rounds", "1"],
    `cannot use --path /no/such/device: Failed to open "/no/such/device": ENOENT (No such file or directory)`,
    false,
  );
  refused(
    "alloc_check",
    ["--path", "/no/such/file", "--requests", "10"],
    `cannot use --path /no/such/file: Failed to open "/no/such/file": ENOENT (No such file or directory)`,
    false,
  );
});

test("bench tools: short runs of layers_bench, wait_bench and alloc_check print their JSON", () => {
  const json = (name: string, args: string[]) => {
    const r = benchTool(name, [...args, "--json"]);
    assert.equal(r.status, 0, `${name}: ${r.stderr}`);
    return JSON.parse(r.stdout);
  };
  const layers = json("layers_bench", "--kernel fake --size-mib 1 --requests 500 --rounds 1".split(" "));
  assert.equal(layers.runtime, RUNTIME);
  assert.equal(layers.rows.length, 3);
  for (const row of layers.rows) assert.ok(row.nsPerRequest > 0, JSON.stringify(row));
  const waits = json("wait_bench", ["--waits", "200", "--rounds", "1"]);
  assert.equal(waits.runtime, RUNTIME);
  assert.equal(waits.rows.length, 2);
  for (const row of waits.rows) assert.ok(row.waitsPerSecond > 0, JSON.stringify(row));
  const dir = mkdtempSync(join(tmpdir(), "blkio-alloctest-"));
  try {
    const path = join(dir, "file.img");
    writeFileSync(path, new Uint8Array(1 << 20).fill(3));
    const alloc = json("alloc_check", [
      "--path",
      path,
      ..."--requests 5000 --warmup 0 --probe 2048 --depth 4".split(" "),
    ]);
    assert.equal(alloc.runtime, RUNTIME);
    assert.equal(alloc.requests, 5000);
    assert.equal(alloc.depth, 4);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test(
  ...skipIf("bench tools: a short run of block_device_bench on its own loop device", loopUnavailableReason()),
  () => {
    const r = benchTool("block_device_bench", "--size-mib 4 --seconds 0.1 --rounds 1 --json".split(" "));
    assert.equal(r.status, 0, r.stderr);
    const res = JSON.parse(r.stdout);
    assert.equal(res.device, "loop over tmpfs (4 MiB)");
    assert.equal(res.rounds, 1);
    assert.ok(res.syncMedianIops > 0 && res.asyncMedianIops > 0, r.stdout);
  },
);
