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
    const dir = scratchDir();
    const path = join(dir, "limited.img");
    writeFileSync(path, new Uint8Array(0));
    const script = fileURLToPath(new URL("./_file_size_limit.ts", import.meta.url));
    const runtime = RUNTIME === "deno" ? [process.execPath, "run", "-A", script] : [process.execPath, script];
    // Deno's caches of its own (DENO_DIR) live under the limit too: once a suite has run, its V8
    // code cache is tens of MiB, and the SQLite checkpoint Deno writes into it as it exits went
    // past the limit. The library's listener had been removed by then, so Deno's signal thread
    // took SIGXFSZ's default action, ending the child after it had printed its result (1 run in
    // 5-7 on Linux 6.18 and 6.1; strace: pwrite64 at 11.8 MB into v8_code_cache_v2, EFBIG, then
    // the signal). A fresh DENO_DIR of the child's own stays a few MiB.
    const env = RUNTIME === "deno" ? { ...process.env, DENO_DIR: join(dir, "deno-dir") } : process.env;
    const r = spawnSync("prlimit", [`--fsize=${LIMIT}`, ...runtime, path, String(LIMIT)], {
      encoding: "utf8",
      timeout: 60_000,
      env,
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
