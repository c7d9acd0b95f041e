// node:assert/strict, with deepEqual and notDeepEqual of two byte arrays compared here. Deno's
// assert builds a diff of the two arrays when they differ: 2 s and 570 MiB for two 4 KiB arrays,
// and a test comparing 1 MiB ran out of memory (24 GiB) instead of failing. Failures now say how
// many bytes differ and where the first one is.
import strict from "node:assert/strict";

type Message = string | Error;

/** Both plain Uint8Arrays of the same kind (a Buffer against a Uint8Array is left to node:assert). */
function bothBytes(a: unknown, b: unknown): a is Uint8Array {
  return a instanceof Uint8Array && b instanceof Uint8Array &&
    Object.getPrototypeOf(a) === Object.getPrototypeOf(b);
}

/** Where `a` and `b` differ, as a sentence, or null when they are the same bytes. */
function difference(a: Uint8Array, b: Uint8Array): string | null {
  if (a.length !== b.length) return `lengths differ: ${a.length} bytes, expected ${b.length}`;
  let first = -1, count = 0;
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) {
      if (first < 0) first = i;
      count++;
    }
  }
  if (count === 0) return null;
  const hex = (v: number) => `0x${v.toString(16).padStart(2, "0")}`;
  return `${count} of ${a.length} bytes differ, the first at ${first}: ${hex(a[first])}, expected ${
    hex(b[first])
  }`;
}

function fail(message: Message | undefined, what: string): never {
  if (message instanceof Error) throw message;
  // No actual/expected: the runtimes would print a diff of them after the message.
  throw new strict.AssertionError({ message: message === undefined ? what : `${message}: ${what}` });
}

/** node:assert's call signatures, loosened for forwarding (the exported type is strict's own). */
type Forward = (...args: unknown[]) => void;

function deepEqual(actual: unknown, expected: unknown, message?: Message): void {
  if (!bothBytes(actual, expected)) return (strict.deepEqual as Forward)(actual, expected, message);
  const what = difference(actual, expected as Uint8Array);
  if (what !== null) fail(message, what);
}

function notDeepEqual(actual: unknown, expected: unknown, message?: Message): void {
  if (!bothBytes(actual, expected)) return (strict.notDeepEqual as Forward)(actual, expected, message);
  if (difference(actual, expected as Uint8Array) === null) fail(message, "the bytes are the same");
}

/** strict, with the byte-array comparisons above in place of its own. */
function withByteComparisons(): typeof strict {
  return Object.assign(
    (value: unknown, message?: Message) => (strict as unknown as Forward)(value, message),
    strict,
    { deepEqual, deepStrictEqual: deepEqual, notDeepEqual, notDeepStrictEqual: notDeepEqual },
  ) as unknown as typeof strict;
}

const assert: typeof strict = withByteComparisons();

export default assert;
