// bench/ab_bench.ts, the in-process A/B of a git revision against the working tree that the
// levers in BENCHMARKS.md were measured with: it runs on this runtime and reports sane figures.
import { test } from "node:test";
import assert from "./_assert.ts";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { RUNTIME, skipIf } from "./_helpers.ts";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const SCRIPT = join(ROOT, "bench", "ab_bench.ts");

function gitSkipReason(): string | null {
  const r = spawnSync("git", ["-C", ROOT, "rev-parse", "--verify", "HEAD"], { encoding: "utf8" });
  if (r.error) return `git is not installed (${r.error.message})`;
  if (r.status !== 0) {
    return `${ROOT} is not a git checkout with a commit: ab_bench extracts its base with git archive`;
  }
  return null;
}
const SKIP = gitSkipReason();

function abBench(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const argv = RUNTIME === "deno" ? ["run", "-A", SCRIPT, ...args] : [SCRIPT, ...args];
  const r = spawnSync(process.execPath, argv, { cwd: ROOT, encoding: "utf8", timeout: 120_000 });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
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
