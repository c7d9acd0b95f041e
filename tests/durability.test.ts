// Durability: once a FUA write or a flush has completed, `kill -9` of the process loses nothing.
// A child process (the same runtime running tests/fixtures/durable_writer.ts) writes blocks to
// a file on the default temp file system (ext4 on the test machines), half with FUA and half
// plainly followed by a flush, checks every completion, prints "done" and waits. The parent
// kills it with SIGKILL as soon as it reads "done", then a fresh read through node:fs verifies
// every block.
//
// Page-cache data survives a process kill anyway, so what this proves is that the library keeps
// no data of its own that a kill could lose (no user-space write buffering, no deferred
// submission after a completion is reported), and that FUA and flush complete with 0 on a real
// file system (RWF_DSYNC and fdatasync reached the file system and succeeded).
import { test } from "node:test";
import assert from "./_assert.ts";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import {
  cleanupAll,
  loopFlushes,
  loopUnavailableReason,
  RUNTIME,
  scratchFile,
  scratchLoop,
  skipIf,
  startOn,
} from "./_helpers.ts";
import { type Completion, ReqFlags } from "../mod.ts";
import {
  DURABLE_BLOCK,
  DURABLE_FLUSH_BLOCKS,
  DURABLE_FUA_BLOCKS,
  durablePattern,
} from "./fixtures/durable_pattern.ts";

const HERE = dirname(fileURLToPath(import.meta.url));
const WRITER = join(HERE, "fixtures", "durable_writer.ts");
const TOTAL = DURABLE_FUA_BLOCKS + DURABLE_FLUSH_BLOCKS;

interface ChildResult {
  rets: Record<string, number>;
  signal: string | null;
  stderr: string;
}

/** Runs the writer on `path` and SIGKILLs it the moment it prints "done". */
function runWriter(path: string, mode: "direct" | "buffered"): Promise<ChildResult> {
  const args = RUNTIME === "deno" ? ["run", "-A", WRITER, path, mode] : [WRITER, path, mode];
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "", stderr = "";
  let rets: Record<string, number> | null = null;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`writer did not print "done" within 60 s; stderr: ${stderr}`));
    }, 60_000);
    child.stdout.setEncoding("utf8");
    child.stderr.setEncoding("utf8");
    child.stdout.on("data", (chunk: string) => {
      stdout += chunk;
      const line = stdout.split("\n").find((l) => l.endsWith(" done"));
      if (line !== undefined && rets === null) {
        child.kill("SIGKILL"); // right away: nothing of the child runs after its completions
        rets = JSON.parse(line.slice(0, -" done".length)).rets;
      }
    });
    child.stderr.on("data", (chunk: string) => (stderr += chunk));
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("exit", (_code, signal) => {
      clearTimeout(timer);
      if (rets === null) reject(new Error(`writer exited (${signal ?? _code}) before "done": ${stderr}`));
      else resolve({ rets, signal, stderr });
    });
  });
}

for (const mode of ["buffered", "direct"] as const) {
  test(`durability: FUA writes and flushed writes survive kill -9 of the writer [${mode}]`, async () => {
    // The file starts as 0xee everywhere, so a lost write cannot look like a written block.
    const path = scratchFile(TOTAL * DURABLE_BLOCK, 0xee);
    const result = await runWriter(path, mode);
    assert.equal(result.signal, "SIGKILL", "the writer must end by SIGKILL, not on its own");

    // Every request completed with 0: FUA (RWF_DSYNC) and flush (fdatasync) succeeded.
    assert.equal(Object.keys(result.rets).length, TOTAL + 1, JSON.stringify(result.rets));
    for (const [what, ret] of Object.entries(result.rets)) assert.equal(ret, 0, `${what}: ret ${ret}`);
    assert.equal(result.rets["flush"], 0);

    // A fresh read by another path (node:fs in this process) finds every block.
    const data = readFileSync(path);
    assert.equal(data.length, TOTAL * DURABLE_BLOCK);
    for (let i = 0; i < TOTAL; i++) {
      const got = new Uint8Array(data.buffer, data.byteOffset + i * DURABLE_BLOCK, DURABLE_BLOCK);
      assert.deepEqual(got, durablePattern(i), `block ${i} (${i < DURABLE_FUA_BLOCKS ? "FUA" : "flushed"})`);
    }
  });
}

// The test above cannot tell whether FUA or a flush reached the device: a killed process loses
// no page-cache data either way. A loop device counts the flushes it completes (field 16 of
// /sys/block/loopN/stat): each FUA request and each flush must raise it, a plain write must not.
const LOOP_SKIP = loopUnavailableReason();

for (const direct of [true, false]) {
  const mode = direct ? "direct" : "buffered";
  test(
    ...skipIf(
      `durability: FUA writes, FUA write zeroes and flushes reach the device as flushes [${mode}]`,
      LOOP_SKIP,
    ),
    () => {
      const dev = scratchLoop(4 * 1024 * 1024);
      using b = startOn({ path: dev, direct });
      const q = b.getQueue(0)!;
      const region = b.allocMemRegion(8192);
      b.mapMemRegion(region);
      const block = region.bytes.subarray(0, 4096).fill(0x42);
      const cases: [string, (ud: string) => void, boolean][] = [
        ["plain write", (ud) => q.write(0, block, ud), false],
        ["FUA write", (ud) => q.write(4096, block, ud, ReqFlags.FUA), true],
        ["FUA writev", (ud) => q.writev(8192, [block], ud, ReqFlags.FUA), true],
        ["flush", (ud) => q.flush(ud), true],
        ["FUA write zeroes", (ud) => q.writeZeroes(65536, 4096, ud, ReqFlags.FUA), true],
      ];
      for (const [what, submit, flushes] of cases) {
        const before = loopFlushes(dev);
        submit(what);
        const out: Completion[] = [];
        assert.equal(q.doIo(out, 1, 1, 10_000_000_000n), 1);
        assert.equal(out[0].ret, 0, `${what}: ${out[0].errorMsg}`);
        const delta = loopFlushes(dev) - before;
        if (flushes) assert.ok(delta >= 1, `${what}: the device saw no flush`);
        else assert.equal(delta, 0, `${what}: the device saw ${delta} flushes`);
      }
    },
  );
}

test("durability: cleanup scratch files", () => cleanupAll());
