/**
 * What `BlockDevice.released` needs: the buffers of each read and write from its submission
 * to its completion, by request id, and the callers waiting for the requests that use some
 * memory to end. An aborted request's promise rejects at once while the device may still fill or
 * send its buffer; this says when it no longer can.
 *
 * @module
 */
import { usesAbandoned } from "./abandoned.ts";
import { eachRange, usesRange } from "./buffers.ts";
import { abortReason, BlkioError, listenAbort, unlistenAbort } from "./errors.ts";

/** A caller waiting for the requests that used its buffer to end. */
interface ReleaseWait {
  /** The ids of those requests still in the device. */
  readonly ids: Set<number>;
  readonly resolve: () => void;
  readonly reject: (reason: unknown) => void;
  readonly signal: AbortSignal | null;
}

/**
 * The buffers of the requests in flight over one ArrayBuffer, sorted by start (parallel arrays):
 * valid until the next submission.
 */
interface RangeIndex {
  ids: number[];
  args: unknown[];
  starts: number[];
  ends: number[];
  /** The longest range: those that can overlap [s, e) start in (s - maxLen, e). */
  maxLen: number;
}

/** Bytes of one ArrayBuffer: [start, end). */
export interface ByteRange {
  buffer: ArrayBufferLike;
  start: number;
  end: number;
}

function abandonedError(closed: boolean): BlkioError {
  return BlkioError.of(
    "EBUSY",
    (closed
      ? "The block device was closed while an aborted request still used this buffer"
      : "The device gave up on a request that used this buffer (a vhost-user back-end that hung up " +
        "or corrupted its virtqueue)") +
      ": the device may still read or write it, for as long as the process runs",
  );
}

/** The buffers of a device's requests in flight, and the waits for them to end. */
export class BufferReleases {
  /**
   * The buffer or iovecs of each read or write in flight, by request id (null for other
   * requests and free ids). The device pushes a null for each new id.
   */
  readonly args: unknown[] = [];
  readonly #waits = new Set<ReleaseWait>();
  /** The waits on each request id (entries of waits that ended are skipped). */
  readonly #waitsOn = new Map<number, ReleaseWait[]>();
  /**
   * One abort listener per signal, as for requests: a listener per wait on one shared signal made
   * each add and remove scan the signal's list.
   */
  readonly #watches = new Map<AbortSignal, { listener: () => void; waits: Set<ReleaseWait> }>();
  /**
   * The buffers of requests in flight by ArrayBuffer; null after a submission, undefined once a
   * wait scanned since (a second one builds it).
   */
  #index: Map<ArrayBufferLike, RangeIndex> | null | undefined = null;
  /** Buffers of requests the driver gave up on while the device may still use them. */
  readonly #abandoned: { arg: unknown; closed: boolean }[] = [];

  /** Request `id` was handed to a queue with `arg` (its buffer or iovecs, or null). */
  submitted(id: number, arg: unknown): void {
    this.args[id] = arg;
    if (this.#index !== null) this.#index = null;
  }

  /** Request `id` completed with `ret`. */
  ended(id: number, ret: number): void {
    const arg = this.args[id];
    if (arg === null) return;
    this.args[id] = null;
    // A failed request's buffers may have been abandoned by the driver (a back-end that hung up
    // or corrupted its ring may still use them): never released.
    if (ret < 0 || this.#waitsOn.size > 0) this.#ended(id, ret < 0 && usesAbandoned(arg) ? arg : null, false);
  }

  /**
   * Resolves once the requests in flight now that use a byte of `r` have ended; rejects with
   * EBUSY for memory the device may keep using, and with `signal`'s reason when it aborts first.
   * `dead`: the device is closed (what it still has then, it never gives back).
   */
  wait(r: ByteRange, signal: AbortSignal | null, dead: boolean): Promise<void> {
    for (const a of this.#abandoned) {
      if (usesRange(a.arg, r.buffer, r.start, r.end)) return Promise.reject(abandonedError(a.closed));
    }
    const ids = this.#idsUsing(r.buffer, r.start, r.end);
    if (ids.size === 0) return Promise.resolve();
    // Closed, with an aborted request the device never returned: it never will.
    if (dead) return Promise.reject(abandonedError(true));
    return new Promise<void>((resolve, reject) => {
      const w: ReleaseWait = { ids, resolve, reject, signal };
      if (signal !== null) {
        const g = this.#watches.get(signal);
        if (g !== undefined) g.waits.add(w);
        else {
          const waits = new Set([w]);
          const listener = () => {
            this.#watches.delete(signal);
            for (const x of waits) this.#endWait(x, abortReason(signal));
          };
          const failed = listenAbort(signal, listener);
          if (failed !== null) return reject(failed);
          this.#watches.set(signal, { listener, waits });
        }
      }
      this.#waits.add(w);
      for (const id of ids) {
        const ws = this.#waitsOn.get(id);
        if (ws === undefined) this.#waitsOn.set(id, [w]);
        else ws.push(w);
      }
    });
  }

  /**
   * The device was destroyed: what it still had was either abandoned with it (the device may
   * still use it: EBUSY) or returned or let go (never sent, or back before its drain ended).
   */
  closed(): void {
    const args = this.args;
    for (let id = 0; id < args.length; id++) {
      const arg = args[id];
      if (arg === null) continue;
      args[id] = null;
      this.#ended(id, usesAbandoned(arg) ? arg : null, true);
    }
    for (const w of [...this.#waits]) this.#endWait(w, abandonedError(true));
    this.#index = null; // it holds buffers
  }

  /** The ids of the requests in flight that use a byte of `buffer` in [start, end). */
  #idsUsing(buffer: ArrayBufferLike, start: number, end: number): Set<number> {
    const ids = new Set<number>();
    const args = this.args;
    if (this.#index === null) {
      // The first call since a submission scans; a second one builds the index (many calls in a
      // row, one per buffer, were quadratic: 32,000 took 36 s).
      this.#index = undefined;
      for (let id = 0; id < args.length; id++) {
        if (args[id] !== null && usesRange(args[id], buffer, start, end)) ids.add(id);
      }
      return ids;
    }
    this.#index ??= this.#buildIndex();
    const e = this.#index.get(buffer);
    if (e === undefined) return ids;
    const starts = e.starts, from = start - e.maxLen;
    let lo = 0, hi = starts.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (starts[mid] <= from) lo = mid + 1;
      else hi = mid;
    }
    for (let k = lo; k < starts.length && starts[k] < end; k++) {
      // Requests that completed since are gone from `args` (an id reused means a submission,
      // which dropped the index).
      if (e.ends[k] > start && args[e.ids[k]] === e.args[k]) ids.add(e.ids[k]);
    }
    return ids;
  }

  #buildIndex(): Map<ArrayBufferLike, RangeIndex> {
    const index = new Map<ArrayBufferLike, RangeIndex>();
    const args = this.args;
    for (let id = 0; id < args.length; id++) {
      const arg = args[id];
      if (arg === null) continue;
      eachRange(arg, (buffer, start, end) => {
        let e = index.get(buffer);
        if (e === undefined) index.set(buffer, e = { ids: [], args: [], starts: [], ends: [], maxLen: 0 });
        e.ids.push(id);
        e.args.push(arg);
        e.starts.push(start);
        e.ends.push(end);
        if (end - start > e.maxLen) e.maxLen = end - start;
      });
    }
    for (const e of index.values()) {
      const order = e.starts.map((_, k) => k).sort((a, b) => e.starts[a] - e.starts[b]);
      e.ids = order.map((k) => e.ids[k]);
      e.args = order.map((k) => e.args[k]);
      e.starts = order.map((k) => e.starts[k]);
      e.ends = order.map((k) => e.ends[k]);
    }
    return index;
  }

  /**
   * After request `id` ended: settles the waits it was the last request of, or, when the device
   * may still use its buffers (`abandoned`, the request's arg), rejects its waits.
   */
  #ended(id: number, abandoned: unknown, closed: boolean): void {
    if (abandoned !== null) this.#abandoned.push({ arg: abandoned, closed });
    const ws = this.#waitsOn.get(id);
    if (ws === undefined) return;
    this.#waitsOn.delete(id);
    for (const w of ws) {
      if (!w.ids.delete(id)) continue; // a wait that ended already
      if (abandoned !== null) this.#endWait(w, abandonedError(closed));
      else if (w.ids.size === 0) this.#endWait(w, null);
    }
  }

  /** Settles wait `w`: resolved when `error` is null, else rejected with it. */
  #endWait(w: ReleaseWait, error: unknown): void {
    if (!this.#waits.delete(w)) return;
    w.ids.clear();
    const g = w.signal === null ? undefined : this.#watches.get(w.signal);
    if (g !== undefined && g.waits.delete(w) && g.waits.size === 0) {
      this.#watches.delete(w.signal!);
      unlistenAbort(w.signal!, g.listener);
    }
    if (error === null) w.resolve();
    else w.reject(error);
  }
}
