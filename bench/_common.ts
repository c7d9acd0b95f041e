/**
 * What the bench tools share: their command line (options parsed one way, a usage mistake or a
 * target they cannot use ending the run with status 1 and a message, not a stack trace), the
 * median they report and the page-cached file they read.
 *
 * @module
 */
import { writeFileSync } from "node:fs";
import process from "node:process";

/**
 * A bad option (`withUsage`) or something the run cannot use (a path, a revision, root's rights):
 * {@link runTool} ends the run with status 1 and the message, after `main` has cleaned up.
 */
export class Refusal extends Error {
  constructor(message: string, readonly withUsage: boolean) {
    super(message);
  }
}

/** Stops the run for a usage mistake: the message, then the usage, on stderr; status 1. */
export function usage(error: string): never {
  throw new Refusal(error, true);
}

/** Stops the run for something it cannot use: the message alone on stderr; status 1. */
export function cannot(error: string): never {
  throw new Refusal(error, false);
}

/**
 * How an option is given: alone (`"flag"`), or with a value: any string, an integer > 0
 * (`"positive"`), an integer >= 0 (`"count"`), a finite number > 0 (`"number"`), or one of a
 * list of words.
 */
export type OptionKind = "flag" | "string" | "positive" | "count" | "number" | readonly string[];

/** The kinds {@link parseOptions} cannot tell from a default: a number's, a word list's. */
export type OptionKinds<O> = {
  [K in keyof O]?: O[K] extends number ? "positive" | "count" | "number"
    : O[K] extends string ? readonly O[K][]
    : never;
};

/**
 * The options in `argv`, or null for `--help` / `-h` (met before any mistake). Each field of
 * `defaults` is an option, named after it in lower case with dashes (`sizeMib`: `--size-mib`),
 * and taken as: a flag for a boolean; a positive integer for a number, or the kind `kinds` gives
 * it; any string for a string or null, or one of the words `kinds` gives. A name that is not an
 * option, a valued option last with no value, or a value not of its kind is a usage mistake
 * ({@link usage}) naming the option. A value is the next argument, whatever it looks like.
 */
export function parseOptions<O extends object>(
  argv: string[],
  defaults: O,
  kinds: OptionKinds<O> = {},
): O | null {
  const spec = new Map<string, [string, OptionKind]>();
  for (const [key, value] of Object.entries(defaults)) {
    const kind: OptionKind = (kinds as Record<string, OptionKind>)[key] ??
      (typeof value === "boolean" ? "flag" : typeof value === "number" ? "positive" : "string");
    spec.set(`--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`, [key, kind]);
  }
  const got = { ...defaults } as Record<string, unknown>;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--help" || a === "-h") return null;
    const option = spec.get(a);
    if (option === undefined) usage(`unrecognized option '${a}'`);
    const [key, kind] = option;
    if (kind === "flag") {
      got[key] = true;
      continue;
    }
    const v = argv[++i];
    if (v === undefined) usage(`${a} needs a value`);
    got[key] = optionValue(a, v, kind);
  }
  return got as O;
}

function optionValue(a: string, v: string, kind: Exclude<OptionKind, "flag">): string | number {
  if (kind === "string") return v;
  if (typeof kind !== "string") {
    if (kind.includes(v)) return v;
    usage(`invalid value for ${a}: ${v}`);
  }
  const n = Number(v);
  if (kind === "number") {
    if (Number.isFinite(n) && n > 0) return n;
    usage(`${a} needs a positive number`);
  }
  if (kind === "count") {
    if (Number.isInteger(n) && n >= 0 && v.trim() !== "") return n;
    usage(`${a} needs a non-negative integer`);
  }
  if (!Number.isInteger(n) || n <= 0) usage(`${a} needs a positive integer`);
  return n;
}

/**
 * Runs a bench tool's `main`. A {@link Refusal} ends the process with status 1 and
 * `<name>: <message>` on stderr, the usage after it for a usage mistake; it is caught here, not
 * where it is thrown, so that `main`'s `finally` blocks (temporary files, loop devices) run
 * first. Any other error is thrown on, stack and all: a fault of the tool or the library.
 */
export async function runTool(name: string, usageText: string, main: () => unknown): Promise<void> {
  try {
    await main();
  } catch (e) {
    if (!(e instanceof Refusal)) throw e;
    console.error(`${name}: ${e.message}${e.withUsage ? `\n${usageText}` : ""}`);
    process.exit(1);
  }
}

/** The median of `xs` (the mean of the middle two for an even count). */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * Writes `mib` MiB of random bytes to `path`. Written by this process, every page of it is in
 * the page cache afterwards. 64 KiB at a time: getRandomValues' limit.
 */
export function writePageCachedFile(path: string, mib: number): void {
  const data = new Uint8Array(mib << 20);
  for (let off = 0; off < data.length; off += 65536) crypto.getRandomValues(data.subarray(off, off + 65536));
  writeFileSync(path, data);
}
