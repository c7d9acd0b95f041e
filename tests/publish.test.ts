// JSR: the package must stay publishable (`deno publish --dry-run` works offline).
import { test } from "node:test";
import { skipIf } from "./_helpers.ts";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
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
