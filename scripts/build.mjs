#!/usr/bin/env node
// Compiles the example tools (blkio_info, blkio_copy, blkio_bench) into single-file executables
// in dist/ with `bun build --compile` (works offline: Bun embeds its own binary). Runs under
// Node, Deno or Bun: `npm run build`, `deno task build`.
//
// The executables still load liburing.so.2 from the system at run time (apt-get install liburing2).
// blkio_bench's Worker script is compiled in as a second entry point.
//
//   node scripts/build.mjs [--outdir=<dir>] [blkio_info] [blkio_copy] [blkio_bench]
//
// --outdir puts the executables elsewhere than dist/ (relative to the current directory; the
// tests build into a scratch directory).
import { spawnSync } from "node:child_process";
import { mkdirSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const bun = join(root, "node_modules", "bun", "bin", "bun.exe");

const TOOLS = [
  { name: "blkio_info", entries: ["examples/blkio_info.ts"] },
  { name: "blkio_copy", entries: ["examples/blkio_copy.ts"] },
  { name: "blkio_bench", entries: ["examples/blkio_bench.ts", "examples/_bench_worker.ts"] },
];

const argv = process.argv.slice(2);
const outdirArg = argv.findLast((a) => a.startsWith("--outdir="));
const outdir = resolve(outdirArg ? outdirArg.slice("--outdir=".length) : join(root, "dist"));
const only = argv.filter((a) => !a.startsWith("--outdir="));
// A misspelt name (blkio-info) built nothing and exited 0.
const unknown = only.filter((a) => !TOOLS.some((t) => t.name === a));
if (unknown.length > 0) {
  console.error(
    `build: unknown tool ${unknown.map((a) => `"${a}"`).join(", ")}: ` +
      `the tools are ${TOOLS.map((t) => t.name).join(", ")}`,
  );
  process.exit(2);
}
mkdirSync(outdir, { recursive: true });
for (const tool of TOOLS) {
  if (only.length > 0 && !only.includes(tool.name)) continue;
  const outfile = join(outdir, tool.name);
  const shown = relative(root, outfile).startsWith("..") ? outfile : relative(root, outfile);
  const args = ["build", "--compile", ...tool.entries, "--outfile", outfile];
  console.error(`build: bun ${[...args.slice(0, -1), shown].join(" ")}`);
  const r = spawnSync(bun, args, { cwd: root, stdio: ["ignore", "inherit", "inherit"] });
  if (r.error || r.status !== 0) {
    console.error(`build: compiling ${tool.name} failed${r.error ? `: ${r.error.message}` : ""}`);
    process.exit(1);
  }
  const mib = statSync(outfile).size / 2 ** 20;
  console.error(`build: ${shown} (${mib.toFixed(1)} MiB)`);
}
