/**
 * The one error class of the library, and the named constructors the core uses.
 *
 * @module
 */
import { ERRNO, type ErrnoName, errnoName } from "./errno.ts";

/**
 * An error with a Linux errno, thrown by every call that libblkio reports with a negative
 * errno, and the rejection reason of failed `BlockDevice` requests.
 *
 * @example Catch a bad driver name
 * ```ts
 * import { Blkio, BlkioError } from "@blkio/blkio";
 * try {
 *   Blkio.create("no-such-driver");
 * } catch (e) {
 *   if (!(e instanceof BlkioError) || e.code !== "ENOENT") throw e;
 * }
 * ```
 */
export class BlkioError extends Error {
  /** The errno name, such as `"EINVAL"`. */
  readonly code: string;
  /** The positive errno value (ENOENT = 2). */
  readonly errno: number;

  /**
   * An error for the positive errno value `errno`; {@link code} is its name (`E<n>` for one
   * not in {@link ERRNO}).
   */
  constructor(errno: number, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "BlkioError";
    this.errno = errno;
    this.code = errnoName(errno);
  }

  /** Builds an error from an errno name, such as `BlkioError.of("EINVAL", "...")`. */
  static of(code: ErrnoName, message: string, options?: ErrorOptions): BlkioError {
    return new BlkioError(ERRNO[code], message, options);
  }
}

/** The property each error made by {@link propertyError} is about; not on the public shape. */
const PROPERTY_OF = new WeakMap<BlkioError, string>();

/**
 * An error about the value of property `property`, marked as such: a caller that takes the value
 * under another name (BlockDevice's `numEntries` for `num-entries`) names it in its own terms
 * without matching the message's text.
 */
export function propertyError(property: string, code: ErrnoName, message: string): BlkioError {
  const e = BlkioError.of(code, message);
  PROPERTY_OF.set(e, property);
  return e;
}

/** The property `e` is about, when {@link propertyError} made it. */
export function propertyOf(e: unknown): string | undefined {
  return e instanceof BlkioError ? PROPERTY_OF.get(e) : undefined;
}

/** Throws `EINVAL` with `message`. */
export function invalid(message: string): never {
  throw BlkioError.of("EINVAL", message);
}

/**
 * `EINVAL` for `new Blkio()` and the like from JavaScript, which TypeScript's `private` does not
 * stop: the instance would be missing what its factory gives it, and fail later with a TypeError.
 */
export function noConstructor(cls: string, factory: string): BlkioError {
  return BlkioError.of("EINVAL", `${cls} has no public constructor: use ${factory}`);
}

/** `ENODEV` "Device must be connected" (libblkio's text), with `detail` after it where given. */
export function mustBeConnected(detail?: string): BlkioError {
  return BlkioError.of("ENODEV", `Device must be connected${detail === undefined ? "" : `: ${detail}`}`);
}

/** `EBUSY` "Device must be started". */
export function mustBeStarted(): BlkioError {
  return BlkioError.of("EBUSY", "Device must be started");
}

/** `EBUSY` for a property set after its state. */
export function cannotSetIn(name: string, state: string): BlkioError {
  return BlkioError.of("EBUSY", `Cannot set property ${JSON.stringify(name)} in ${state} state`);
}

/** `EBADF` for any use of a destroyed instance. */
export function destroyed(): BlkioError {
  return BlkioError.of("EBADF", "The blkio instance has been destroyed");
}

/**
 * What a request or wait aborted through `signal` rejects with: the signal's reason when it is
 * an Error, else a DOMException named AbortError (as fetch does).
 */
export function abortReason(signal: AbortSignal): Error {
  const r: unknown = signal.reason;
  return r instanceof Error ? r : new DOMException("The operation was aborted", "AbortError");
}

/**
 * Adds `listener` for `signal`'s abort, or returns the EINVAL to reject with when the signal's
 * `addEventListener` throws (the caller's own, or a Proxy's on Bun): a request whose abort could
 * not be watched must not start as if it had been.
 */
export function listenAbort(signal: AbortSignal, listener: () => void): BlkioError | null {
  try {
    signal.addEventListener("abort", listener, { once: true });
    return null;
  } catch (e) {
    return BlkioError.of("EINVAL", `signal could not be listened to: ${e}`, { cause: e });
  }
}

/**
 * Removes an abort listener, called while completions are settled: a signal's method is the
 * caller's to replace, and a throw there must not cut that short (the completions after it were
 * lost). A listener left behind finds nothing to abort.
 */
export function unlistenAbort(signal: AbortSignal, listener: () => void): void {
  try {
    signal.removeEventListener("abort", listener);
  } catch {
    // the caller's own code threw: nothing of ours to undo
  }
}
