/**
 * What the three example tools share: GNU `getopt_long` argument parsing (permuting, or
 * returning non-options in order), libblkio's property-assignment messages, `strerror` texts,
 * synchronous stdout/stderr writes, and the progress line shown on a terminal.
 *
 * Only `node:` modules are used here, so the tools run unchanged on Deno and on Bun.
 *
 * @module
 */
import { readFileSync, writeSync } from "node:fs";
import process from "node:process";
import { isatty } from "node:tty";
import { type Blkio, BlkioError, errnoName, errnoText } from "../mod.ts";

/**
 * The command-line arguments after the program (and script) name. Both runtimes decode argv as
 * UTF-8, turning bytes that are not into U+FFFD: a file name that is not UTF-8 then named
 * another file (`disk\xe9.img` became `disk\uFFFD.img`, which a copy created or overwrote).
 * Such an argument ends the program instead; the raw bytes come from /proc/self/cmdline.
 */
export function commandArgs(): string[] {
  const args = process.argv.slice(2);
  const mangled = notUtf8Arguments();
  for (const arg of args) {
    if (mangled.has(arg)) {
      die(
        `Argument ${
          JSON.stringify(arg)
        } is not valid UTF-8, which this runtime cannot pass on: give a path ` +
          "through a symlink with a UTF-8 name",
      );
    }
  }
  return args;
}

/** The arguments of this process that are not valid UTF-8, as the runtime decoded them. */
function notUtf8Arguments(): Set<string> {
  const found = new Set<string>();
  let raw: Uint8Array;
  try {
    raw = readFileSync("/proc/self/cmdline");
  } catch {
    return found; // no /proc: nothing to compare with
  }
  const strict = new TextDecoder("utf-8", { fatal: true }), lossy = new TextDecoder();
  for (let start = 0; start < raw.length;) {
    let end = raw.indexOf(0, start);
    if (end < 0) end = raw.length;
    const bytes = raw.subarray(start, end);
    try {
      strict.decode(bytes);
    } catch {
      found.add(lossy.decode(bytes));
    }
    start = end + 1;
  }
  return found;
}

const encoder = new TextEncoder();

function writeAll(fd: number, text: string): void {
  const bytes = encoder.encode(text);
  let done = 0;
  while (done < bytes.length) {
    try {
      done += writeSync(fd, bytes, done, bytes.length - done);
    } catch (e) {
      const code = (e as { code?: string }).code;
      // The reader went away (`| head -1`, `| grep -q`): end quietly with the status a C tool
      // killed by SIGPIPE shows (128 + 13). Both runtimes ignore SIGPIPE, so the write fails
      // EPIPE instead, which ended the tools with an uncaught error and its stack trace.
      if (code === "EPIPE") exit(141);
      // A pipe left non-blocking by the parent: wait for room rather than lose output.
      if (code === "EAGAIN") continue;
      // Any other failure (`> results.json` on a full disk, /dev/full): said in a line, as
      // coreutils do, not as an uncaught error with its stack trace; status 1.
      if (fd !== 2) {
        try {
          writeSync(2, encoder.encode(`write error: ${errorText(e)}\n`));
        } catch {
          // stderr is gone too: the status tells
        }
      }
      exit(1);
    }
  }
}

/** Writes `text` to stdout, synchronously (nothing is lost when the process exits next). */
export function printOut(text: string): void {
  writeAll(1, text);
}

/** Writes `text` to stderr, synchronously. */
export function printErr(text: string): void {
  writeAll(2, text);
}

/** Ends the process with `code`. */
export function exit(code: number): never {
  process.exit(code);
}

/**
 * Prints `message` and a newline on stderr and exits with status 1. A progress line on the
 * terminal is erased first: the message was written after it, on the same line, with the
 * line's stale figures in front of it.
 */
export function die(message: string): never {
  exitWith(1, message);
}

/** {@link die} with another exit status (128 + n after signal n, as a shell shows it). */
export function exitWith(status: number, message: string): never {
  shownProgress?.clear();
  printErr(`${message}\n`);
  exit(status);
}

/** glibc's `strerror()` text for an errno name such as `"EINVAL"`. */
export function strerror(code: string | undefined, errno?: number): string {
  const text = code ? errnoText(code) : null;
  if (text !== null) return text;
  return `Unknown error ${errno ?? code ?? ""}`.trimEnd();
}

/**
 * A failed completion as a person reads it: `-28 (No space left on device)`, with the library's
 * errorMsg when it has one (the bare number was all the tools printed).
 */
export function retText(ret: number, errorMsg: string | null = null): string {
  return `${ret} (${strerror(errnoName(-ret), -ret)}${errorMsg ? `: ${errorMsg}` : ""})`;
}

/** `strerror` of a BlkioError or a node:fs error, else the error's message. */
export function errorText(e: unknown): string {
  const err = e as { code?: unknown; errno?: unknown; message?: unknown };
  const text = typeof err?.code === "string" ? errnoText(err.code) : null;
  if (text !== null) return text;
  return String(err?.message ?? e);
}

/** The library's message for a failure (libblkio's `blkio_get_error_msg()`). */
export function errorMsg(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** libblkio's `strerror(-ret): blkio_get_error_msg()` pair for a caught error. */
export function errnoAndMsg(e: unknown): string {
  if (e instanceof BlkioError) return `${strerror(e.code, e.errno)}: ${e.message}`;
  return `${errorText(e)}: ${errorMsg(e)}`;
}

/** Sets `property` to `value` as text, exiting with libblkio's message when that fails. */
export function assignProperty(b: Blkio, property: string, value: string): void {
  try {
    b.setStr(property, value);
  } catch (e) {
    die(`Failed to assign "${value}" to "${property}": ${errnoAndMsg(e)}`);
  }
}

/**
 * Sets `props` (values as text) on `b`, read-only too when `readOnly`, and connects it.
 * Properties that can only be set once connected (`num-entries`, `queue-size`) are set right
 * after connect, so a tool takes every property on one command line. `fail` reports an error
 * with libblkio's wording and does not return.
 */
export function setPropertiesAndConnect(
  b: Blkio,
  props: readonly (readonly [string, string])[],
  readOnly: boolean,
  fail: (message: string) => never,
): void {
  const later: (readonly [string, string])[] = [];
  const assign = ([k, v]: readonly [string, string], deferable: boolean) => {
    try {
      b.setStr(k, v);
    } catch (e) {
      if (deferable && e instanceof BlkioError && e.code === "ENODEV") later.push([k, v]);
      else fail(`Failed to assign "${v}" to "${k}": ${errnoAndMsg(e)}`);
    }
  };
  for (const p of props) assign(p, true);
  if (readOnly) {
    try {
      b.setBool("read-only", true);
    } catch (e) {
      fail(`Failed to set read-only: ${errnoAndMsg(e)}`);
    }
  }
  try {
    b.connect();
  } catch (e) {
    fail(`Unable to connect: ${errorMsg(e)}`);
  }
  for (const p of later) assign(p, false);
}

/** Handles a `<property>=<value>` argument; exits when the `=` is missing. */
export function handlePropertyOption(b: Blkio, option: string): void {
  const eq = option.indexOf("=");
  if (eq < 0) die(`${option}: missing property value`);
  assignProperty(b, option.slice(0, eq), option.slice(eq + 1));
}

/** A long option for {@link getoptLong}. */
export interface LongOption {
  name: string;
  hasArg: boolean;
}

/** What {@link getoptLong} yields, in command-line order. */
export type OptEvent =
  | { kind: "option"; name: string; value: string | undefined }
  | { kind: "arg"; value: string }
  | { kind: "error"; message: string };

/** How {@link getoptLong} parses. */
export interface GetoptSpec {
  /** Program name used in error messages (C's argv[0]). */
  progname: string;
  long: readonly LongOption[];
  /** Single-letter options without arguments, each mapped to a long option name (`{ h: "help" }`). */
  short: Readonly<Record<string, string>>;
  /**
   * `true`: non-options come back as `arg` events where they stand (optstring "-…").
   * `false`: GNU permutation — options anywhere, non-options afterwards in `rest`.
   */
  inOrder: boolean;
}

/**
 * GNU `getopt_long` over `argv`: long options as `--name=value`, `--name value` or any
 * unambiguous prefix, `--` ends the options. Option events come first, as C reads them; the
 * arguments left for the program after the loop (C's `argv[optind..]`) are pushed into `rest`
 * once the generator is done. Error events carry glibc's message.
 */
export function* getoptLong(argv: readonly string[], spec: GetoptSpec, rest: string[]): Generator<OptEvent> {
  const later: string[] = [];
  let i = 0;
  for (; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--") {
      i++;
      break;
    }
    if (!arg.startsWith("-") || arg === "-") {
      if (spec.inOrder) yield { kind: "arg", value: arg };
      else later.push(arg);
      continue;
    }
    if (arg.startsWith("--")) {
      const body = arg.slice(2);
      const eq = body.indexOf("=");
      const name = eq < 0 ? body : body.slice(0, eq);
      const exact = spec.long.find((o) => o.name === name);
      const matches = exact ? [exact] : spec.long.filter((o) => o.name.startsWith(name));
      if (matches.length === 0) {
        yield { kind: "error", message: `${spec.progname}: unrecognized option '--${body}'` };
        continue;
      }
      if (matches.length > 1) {
        const names = matches.map((o) => ` '--${o.name}'`).join("");
        yield {
          kind: "error",
          message: `${spec.progname}: option '--${body}' is ambiguous; possibilities:${names}`,
        };
        continue;
      }
      const opt = matches[0];
      if (!opt.hasArg) {
        if (eq >= 0) {
          yield {
            kind: "error",
            message: `${spec.progname}: option '--${opt.name}' doesn't allow an argument`,
          };
        } else {
          yield { kind: "option", name: opt.name, value: undefined };
        }
        continue;
      }
      if (eq >= 0) {
        yield { kind: "option", name: opt.name, value: body.slice(eq + 1) };
      } else if (i + 1 < argv.length) {
        yield { kind: "option", name: opt.name, value: argv[++i] };
      } else {
        yield { kind: "error", message: `${spec.progname}: option '--${opt.name}' requires an argument` };
      }
      continue;
    }
    for (const ch of arg.slice(1)) {
      const name = Object.hasOwn(spec.short, ch) ? spec.short[ch] : undefined;
      if (name === undefined) yield { kind: "error", message: `${spec.progname}: invalid option -- '${ch}'` };
      else yield { kind: "option", name, value: undefined };
    }
  }
  rest.push(...later, ...argv.slice(i));
}

/** What {@link lastOptions} found on a command line. */
export interface ParsedOptions {
  /** Each option given, with its last value (`undefined` for one without an argument). */
  options: Map<string, string | undefined>;
  /** The arguments that are not options, in order. */
  rest: string[];
  /** glibc's message for the first bad option, or null. */
  error: string | null;
}

/**
 * {@link getoptLong} for a tool that only wants each option's value. A repeated option takes
 * its last value, as getopt tools and the libblkio tools here do (`--iodepth=1 --iodepth=4` is
 * 4): demo took the first and silently dropped the rest, while the others took the last.
 */
export function lastOptions(argv: readonly string[], spec: GetoptSpec): ParsedOptions {
  const options = new Map<string, string | undefined>();
  const rest: string[] = [];
  for (const ev of getoptLong(argv, { ...spec, inOrder: false }, rest)) {
    if (ev.kind === "error") return { options, rest, error: ev.message };
    if (ev.kind === "option") options.set(ev.name, ev.value);
  }
  return { options, rest, error: null };
}

/**
 * A positive decimal number written out in digits (`2`, `0.5`; an integer when `integer`), else
 * null. `Number()` also took "", " 4", "0x10", "1e3" and "Infinity" (as 0, 4, 16, 1000 and
 * infinity); a unit suffix (`4k`) is refused.
 */
export function positiveNumber(text: string | undefined, integer: boolean): number | null {
  if (text === undefined || !(integer ? /^\d+$/ : /^\d+(\.\d+)?$/).test(text)) return null;
  const v = Number(text);
  return v > 0 && Number.isFinite(v) ? v : null;
}

/**
 * C's `strtoul(text, NULL, 10)` as the tools use it: leading digits (after blanks and a sign),
 * 0 when there are none, and a negative number wrapping to a huge value.
 */
export function strtoul(text: string): number {
  const m = /^[ \t\n\v\f\r]*([+-]?)(\d+)/.exec(text);
  if (!m) return 0;
  const v = Number(m[2]);
  return m[1] === "-" && v !== 0 ? Number.MAX_VALUE : v;
}

/** C's `printf("%.Nf", x)`, including `nan` and `inf`. */
export function fixed(x: number, digits: number): string {
  if (Number.isNaN(x)) return "nan";
  if (!Number.isFinite(x)) return x > 0 ? "inf" : "-inf";
  return x.toFixed(digits);
}

/** `1536` → `"1.5 KiB"`. */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let u = 0;
  while (n >= 1024 && u < units.length - 1) {
    n /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${n.toFixed(1)} ${units[u]}`;
}

/** Seconds as `m:ss` or `h:mm:ss`. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "--:--";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const mm = h > 0 ? String(m).padStart(2, "0") : String(m);
  return `${h > 0 ? `${h}:` : ""}${mm}:${String(r).padStart(2, "0")}`;
}

/** The {@link Progress} whose line is on the terminal now, for {@link die} to erase. */
let shownProgress: Progress | null = null;

/**
 * A one-line progress display on stderr, redrawn in place at most a few times a second, and
 * only when stderr is a terminal (nothing at all is written otherwise).
 */
export class Progress {
  readonly enabled: boolean;
  #last = -Infinity;
  #shown = false;

  constructor(enabled: boolean = isatty(2)) {
    this.enabled = enabled;
  }

  /** Redraws the line with `text` (skipped when the last redraw was under 200 ms ago). */
  update(text: string, force = false): void {
    if (!this.enabled) return;
    const now = performance.now();
    if (!force && now - this.#last < 200) return;
    this.#last = now;
    this.#shown = true;
    shownProgress = this;
    printErr(`\r${text}\x1b[K`);
  }

  /** Erases the line, leaving the cursor where the line started. */
  clear(): void {
    if (!this.enabled || !this.#shown) return;
    this.#shown = false;
    if (shownProgress === this) shownProgress = null;
    printErr("\r\x1b[K");
  }
}
