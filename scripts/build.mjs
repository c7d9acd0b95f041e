#!/usr/bin/env node
// Compiles the example tools (blkio_info, blkio_copy, blkio_bench) into single-file executables
// in dist/ with `bun build --compile` (works offline: Bun embeds its own binary). Runs under
// Node, Deno or Bun: `npm run build`, `deno task build`.
//
// The executables still load liburing.so.2 from the system at run time (apt-get install liburing2).
// blkio_bench's Worker script is compiled in as a second entry point.
import { spawnSync } from "node:child_process";
import { mkdirSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const bun = join(root, "node_modules", "bun", "bin", "bun.exe");

const TOOLS = [
  { name: "blkio_info", entries: ["examples/blkio_info.ts"] },
  { name: "blkio_copy", entries: ["examples/blkio_copy.ts"] },
  { name: "blkio_bench", entries: ["examples/blkio_bench.ts", "examples/_bench_worker.ts"] },
];

const only = process.argv.slice(2);
mkdirSync(join(root, "dist"), { recursive: true });
for (const tool of TOOLS) {
  if (only.length > 0 && !only.includes(tool.name)) continue;
  const outfile = join("dist", tool.name);
  const args = ["build", "--compile", ...tool.entries, "--outfile", outfile];
  console.error(`build: bun ${args.join(" ")}`);
  const r = spawnSync(bun, args, { cwd: root, stdio: ["ignore", "inherit", "inherit"] });
  if (r.error || r.status !== 0) {
    console.error(`build: compiling ${tool.name} failed${r.error ? `: ${r.error.message}` : ""}`);
    process.exit(1);
  }
  const mib = statSync(join(root, outfile)).size / 2 ** 20;
  console.error(`build: ${outfile} (${mib.toFixed(1)} MiB)`);
}
