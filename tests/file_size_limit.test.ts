// RLIMIT_FSIZE: a write that starts at or past the limit raises SIGXFSZ in the thread that makes
// it. io_uring makes O_DIRECT writes, and the library its memfd ftruncate, in the JS thread;
// Node and Bun ignore the signal, Deno's default was to end the process. Every such request must
// fail with EFBIG instead, on both runtimes.
import { test } from "node:test";
import assert from "./_assert.ts";
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { cleanupAll, RUNTIME, scratchDir, skipIf } from "./_helpers.ts";

const LIMIT = 8 * 1024 * 1024;

function prlimitMissing(): string | null {
  const r = spawnSync("prlimit", ["--version"], { encoding: "utf8" });
  return r.status === 0 ? null : "prlimit (util-linux) is not installed";
}

test(
  ...skipIf(
    "RLIMIT_FSIZE: writes at and across the limit and a larger memory region fail with EFBIG",
    prlimitMissing(),
  ),
  () => {
    const path = join(scratchDir(), "limited.img");
    writeFileSync(path, new Uint8Array(0));
    const script = fileURLToPath(new URL("./_file_size_limit.ts", import.meta.url));
    const runtime = RUNTIME === "deno" ? [process.execPath, "run", "-A", script] : [process.execPath, script];
    const r = spawnSync("prlimit", [`--fsize=${LIMIT}`, ...runtime, path, String(LIMIT)], {
      encoding: "utf8",
      timeout: 60_000,
    });
    assert.equal(r.signal, null, `the child was killed by ${r.signal}: ${r.stderr}`);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout.trim().split("\n").at(-1)!), {
      atLimit: -27,
      across: -27,
      blockDevice: "EFBIG",
      region: "EFBIG",
    });
  },
);

test("file_size_limit: cleanup scratch targets", () => cleanupAll());
