/**
 * The fuzzer's replay log (the last steps, printed with a failure) and the error a failed check
 * throws.
 *
 * @module
 */
import { BlkioError } from "../mod.ts";

/** A model mismatch: what the library did differs from what the model allows. */
export class FuzzFailure extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FuzzFailure";
  }
}

/**
 * The run was asked to stop (`RunOptions.stop`: a signal, or the fuzzer's output gone): not a
 * failure. It ends the run between two steps, which removes its target as after a failure.
 */
export class FuzzStopped extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FuzzStopped";
  }
}

/** Throws FuzzStopped once `stop` is aborted. */
export function checkStop(stop: AbortSignal | undefined): void {
  if (stop?.aborted) throw new FuzzStopped(`stopped: ${String(stop.reason)}`);
}

/**
 * What is wrong with `got` as the BlkioError `code` whose message matches `msg` that a call of
 * `what` had to throw or reject with, or null (both run modes check bad input with it).
 */
export function errorMismatch(what: string, got: unknown, code: string, msg?: RegExp): string | null {
  if (!(got instanceof BlkioError)) return `${what}: expected BlkioError ${code}, got ${String(got)}`;
  if (got.code !== code) return `${what}: expected ${code}, got ${got.code}: ${got.message}`;
  if (got.message.length === 0) return `${what}: ${code} with an empty message`;
  if (msg && !msg.test(got.message)) return `${what}: ${code} message "${got.message}" !~ ${msg}`;
  return null;
}

/** The last `capacity` log lines, and optionally every line as it is written (verbose). */
export class ReplayLog {
  readonly #lines: string[] = [];
  readonly #capacity: number;
  readonly #echo: ((line: string) => void) | null;
  /** The step the lines are written for. */
  step = 0;

  constructor(capacity = 60, echo: ((line: string) => void) | null = null) {
    this.#capacity = capacity;
    this.#echo = echo;
  }

  /** Records one line for the current step. */
  add(text: string): void {
    const line = `${String(this.step).padStart(6)}  ${text}`;
    this.#lines.push(line);
    if (this.#lines.length > this.#capacity) this.#lines.shift();
    this.#echo?.(line);
  }

  /** The lines kept, oldest first. */
  lines(): readonly string[] {
    return this.#lines;
  }
}
