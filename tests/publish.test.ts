// JSR: the package must stay publishable (`deno publish --dry-run` works offline).
import { test } from "node:test";
import { skipIf } from "./_helpers.ts";
import assert from "./_assert.ts";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import process from "node:process";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const DENO = join(ROOT, "node_modules", "deno", "deno");
const NO_DENO = !existsSync(DENO) && "deno is not installed in node_modules";

/** Runs the project's deno with `args` in the checkout; fails the test unless it exits 0. */
function deno(args: string[]): string {
  const r = spawnSync(DENO, args, {
    cwd: ROOT,
    encoding: "utf8",
    env: { ...process.env, NO_COLOR: "1" },
    timeout: 120_000,
  });
  assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
  return r.stdout + r.stderr;
}

test(
  ...skipIf(
    "jsr: deno publish --dry-run succeeds",
    NO_DENO,
  ),
  () => {
    assert.match(deno(["publish", "--dry-run", "--allow-dirty"]), /Success Dry run complete/);
  },
);

test(
  ...skipIf(
    "jsr: deno doc --lint finds every public symbol documented",
    NO_DENO,
  ),
  () => {
    deno(["doc", "--lint", "mod.ts"]);
  },
);

test(
  ...skipIf(
    "types: the buffers the library allocates go to web APIs that take a BufferSource",
    NO_DENO,
  ),
  () => {
    // allocBuffer() and region.bytes are over plain ArrayBuffers: typed as Uint8Array<ArrayBufferLike>,
    // crypto.subtle, Blob and Response refused them at type level (TS2345) though they work.
    const dir = mkdtempSync(join(ROOT, ".tmp-types-"));
    try {
      const file = join(dir, "user.ts");
      writeFileSync(
        file,
        `import { Blkio, BlockDevice } from "../mod.ts";
export async function f(dev: BlockDevice, b: Blkio): Promise<void> {
  const buf = dev.allocBuffer(4096);
  await crypto.subtle.digest("SHA-256", buf);
  new Blob([buf]);
  new Response(b.allocMemRegion(4096).bytes);
}
`,
      );
      deno(["check", file]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
