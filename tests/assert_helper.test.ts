// The suite's assert (tests/_assert.ts): node:assert/strict, with byte arrays compared by the
// helper. A failed comparison of byte arrays made Deno's assert build a diff until the machine ran
// out of memory (24 GiB for two 1 MiB arrays), so a data bug showed as a killed test run.
import { test } from "node:test";
import helper from "./_assert.ts";
import strict from "node:assert/strict";

// Annotated here: when deno check is given the test files without mod.ts, TypeScript took the
// default import of _assert.ts for a name without a type annotation in this file (TS2775 on the
// assertion calls below), though the module declares one.
const assert: typeof strict = helper;

test("assert: byte arrays that differ fail at once, saying how many bytes and where the first is", () => {
  const a = new Uint8Array(1 << 20), b = new Uint8Array(1 << 20);
  b[5] = 7;
  b[900] = 1;
  const t0 = performance.now();
  strict.throws(
    () => assert.deepEqual(a, b, "region"),
    (e: unknown) =>
      e instanceof strict.AssertionError &&
      e.message === "region: 2 of 1048576 bytes differ, the first at 5: 0x00, expected 0x07",
  );
  strict.ok(performance.now() - t0 < 2000, "a failed comparison of 1 MiB took seconds");
  strict.throws(() => assert.deepEqual(a.subarray(1), a), /lengths differ: 1048575 bytes, expected 1048576/);
  strict.throws(() => assert.notDeepEqual(a, a.slice()), /the bytes are the same/);
});

test("assert: equal byte arrays pass, and everything else is node:assert/strict's", () => {
  assert.deepEqual(new Uint8Array([1, 2]), new Uint8Array([1, 2]));
  assert.notDeepEqual(new Uint8Array([1, 2]), new Uint8Array([1, 3]));
  // Not both plain Uint8Arrays of one kind: strict rules (a Uint16Array is not a Uint8Array).
  strict.throws(() => assert.deepEqual(new Uint16Array([1]), new Uint8Array([1])), strict.AssertionError);
  strict.throws(() => assert.deepEqual([1], [2]), strict.AssertionError);
  assert.deepEqual({ a: [1] }, { a: [1] });
  assert.equal(assert.rejects, strict.rejects);
  assert(true);
});
