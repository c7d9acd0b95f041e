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

test(
  ...skipIf(
    "jsr: deno publish --dry-run succeeds",
    !existsSync(DENO) && "deno is not installed in node_modules",
  ),
  () => {
    const r = spawnSync(DENO, ["publish", "--dry-run", "--allow-dirty"], {
      cwd: ROOT,
      encoding: "utf8",
      env: { ...process.env, NO_COLOR: "1" },
      timeout: 120_000,
    });
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout + r.stderr, /Success Dry run complete/);
  },
);

test(
  ...skipIf(
    "jsr: deno doc --lint finds every public symbol documented",
    !existsSync(DENO) && "deno is not installed in node_modules",
  ),
  () => {
    const r = spawnSync(DENO, ["doc", "--lint", "mod.ts"], {
      cwd: ROOT,
      encoding: "utf8",
      env: { ...process.env, NO_COLOR: "1" },
      timeout: 120_000,
    });
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
  },
);

test(
  ...skipIf(
    "types: the buffers the library allocates go to web APIs that take a BufferSource",
    !existsSync(DENO) && "deno is not installed in node_modules",
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
      const r = spawnSync(DENO, ["check", file], {
        cwd: ROOT,
        encoding: "utf8",
        env: { ...process.env, NO_COLOR: "1" },
        timeout: 120_000,
      });
      assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
