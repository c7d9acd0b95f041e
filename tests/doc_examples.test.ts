// Every @example block of mod.ts and src/ runs on Bun as well: `deno test --doc` runs them on
// Deno only (there these tests are skipped, so each runtime registers the same ones). The
// README's TypeScript examples that import the package run on both, on a scratch disk image.
import { test } from "node:test";
import assert from "./_assert.ts";
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync, statfsSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import process from "node:process";
import { fileURLToPath, pathToFileURL } from "node:url";
import { cleanupAll, kernelAtLeast, RUNTIME, scratchDir, skipIf } from "./_helpers.ts";

/** statfs f_type of tmpfs. */
const TMPFS_MAGIC = 0x01021994;
const ROOT = fileURLToPath(new URL("..", import.meta.url));
const MOD = pathToFileURL(join(ROOT, "mod.ts")).href;

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith(".ts") ? [join(dir, e.name)] : []
  );
}

/** The ```ts blocks that follow an @example tag in JSDoc, with where they start. */
function examples(path: string): { where: string; code: string }[] {
  const lines = readFileSync(path, "utf8").split("\n");
  const found: { where: string; code: string }[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (!/^\s*\*\s*@example\b/.test(lines[i])) continue;
    const open = lines.findIndex((l, k) => k > i && /^\s*\*\s*```ts\s*$/.test(l));
    const close = lines.findIndex((l, k) => k > open && /^\s*\*\s*```\s*$/.test(l));
    assert.ok(open > i && close > open, `${path}:${i + 1}: an @example without a ts block`);
    const code = lines.slice(open + 1, close).map((l) => l.replace(/^\s*\* ?/, "")).join("\n");
    found.push({ where: `${relative(ROOT, path)}:${i + 1}`, code });
    i = close;
  }
  return found;
}

const ALL = [join(ROOT, "mod.ts"), ...sources(join(ROOT, "src"))].flatMap(examples);

/** The README's ```ts blocks that import the package. */
const README = [...readFileSync(join(ROOT, "README.md"), "utf8").matchAll(/^```ts\n([\s\S]*?)^```$/gm)]
  .map((m) => m[1])
  .filter((code) => code.includes('from "@blkio/blkio"'));

/** A scratch directory on tmpfs, or null: examples' temp files must work there too (many /tmp are). */
const TMPFS = statfsSync("/dev/shm", { bigint: false }).type === TMPFS_MAGIC ? scratchDir("/dev/shm") : null;

/**
 * Runs `code` with the package mapped to this checkout's mod.ts, and `tmpdir()` at `tmp`
 * (default: the runner's); fails with its output.
 */
function run(where: string, code: string, tmp?: string): void {
  const dir = scratchDir();
  const file = join(dir, "example.ts");
  writeFileSync(join(dir, "disk.img"), new Uint8Array(64 << 20));
  const text = code.replaceAll('"@blkio/blkio"', JSON.stringify(MOD)).replaceAll(
    "/tmp/disk.img",
    join(dir, "disk.img"),
  );
  writeFileSync(file, text);
  // Deno: what the README says it needs, --allow-ffi (the library opens files through it).
  // The @examples write their own scratch files with node:fs (and read TMPDIR): as under
  // `deno test -A --doc`, they get every permission.
  const args = RUNTIME === "deno" ? ["run", tmp === undefined ? "--allow-ffi" : "-A", file] : [file];
  const env = tmp === undefined ? process.env : { ...process.env, TMPDIR: tmp };
  const r = spawnSync(process.execPath, args, { encoding: "utf8", timeout: 60_000, env });
  assert.equal(r.status, 0, `${where}:\n${r.stdout}${r.stderr}`);
}

test("doc examples: there are some, and each imports the package", () => {
  assert.ok(ALL.length >= 10, `${ALL.length} examples found`);
  assert.ok(README.length >= 2, `${README.length} README examples found`);
  for (const e of ALL) assert.match(e.code, /from "@blkio\/blkio"/, e.where);
});

for (const e of ALL) {
  test(
    ...skipIf(`doc example ${e.where} runs`, RUNTIME === "deno" && "deno test --doc runs it on Deno"),
    () => run(e.where, e.code),
  );
}

// The ReqFlags example zeroed a range with NO_UNMAP, which tmpfs cannot do (-EOPNOTSUPP): it
// failed where /tmp is tmpfs, and only Deno's `deno test --doc` ran it, with /tmp on ext4 here.
// tmpfs takes O_DIRECT from Linux 6.6 on: before, an example that asks for it cannot open its
// file there (EINVAL), as the library says (Debian 12's 6.1: the three with `direct: true`).
for (const e of ALL) {
  test(
    ...skipIf(
      `doc example ${e.where} runs with its temp files on tmpfs`,
      TMPFS === null ? "/dev/shm is not tmpfs" : /direct: true/.test(e.code) && !kernelAtLeast(6, 6) &&
        "it asks for O_DIRECT, which tmpfs has from Linux 6.6",
    ),
    () => run(e.where, e.code, TMPFS!),
  );
}

README.forEach((code, i) => {
  test(`README example ${i + 1} (${code.split("\n")[0]}) runs`, () => run(`README example ${i + 1}`, code));
});

test("doc_examples: cleanup scratch files", () => cleanupAll());
