/**
 * Deno only: a watcher thread for eventfds. Deno has no way to watch a foreign fd on its event
 * loop, and a `nonblocking` FFI call costs a round trip through Deno's blocking thread pool
 * (about 40 µs on the reference VM, several context switches). Instead, one
 * `node:worker_threads` Worker per JS thread sits in a synchronous poll(2) over every watched
 * eventfd; when one is signalled it resets the counter and bumps that fd's sequence number in
 * a SharedArrayBuffer, and the waiting thread's `Atomics.waitAsync` resolves (about 5 µs).
 *
 * The Worker is unref'ed, so it never keeps the process alive by itself; a waiting thread keeps
 * a timer ref'ed while it waits.
 *
 * Shared layout (Int32Array): GEN, the slot table version the main side bumps on every change;
 * ACK, the version the watcher has rebuilt its poll set from; then per slot an fd (-1 = free)
 * and a sequence number.
 *
 * @module
 */
import type { Native } from "./types.ts";

/** How many eventfds one watcher polls; more fall back to `nonblocking` poll calls. */
export const WATCHER_SLOTS = 64;
const GEN = 0;
const ACK = 1;
const FD = 8;
const SEQ = FD + WATCHER_SLOTS;
/** Int32 elements of the shared block. */
export const WATCHER_WORDS = SEQ + WATCHER_SLOTS;

const POLLIN = 1;
const POLLERR = 8;
const POLLNVAL = 32;

/** What the watcher Worker is started with. */
export interface WatcherData {
  shared: SharedArrayBuffer;
  controlFd: number;
}

/** The watcher thread's loop (runs in the Worker, which the process simply drops at exit). */
export function runWatcher(native: Native, data: WatcherData): void {
  const ctl = new Int32Array(data.shared);
  const { poll, read } = native.libc;
  const pollfds = new Uint8Array(new ArrayBuffer(8 * (WATCHER_SLOTS + 1)));
  const pv = new DataView(pollfds.buffer);
  const slotAt = new Int32Array(WATCHER_SLOTS + 1);
  /** An fd poll reported closed, skipped until its slot changes (a bug elsewhere, not a spin). */
  const dead = new Int32Array(WATCHER_SLOTS).fill(-1);
  const counter = new Uint8Array(new ArrayBuffer(8));
  const add = (i: number, fd: number) => {
    pv.setInt32(i * 8, fd, true); // struct pollfd { int fd; short events; short revents; }
    pv.setInt16(i * 8 + 4, POLLIN, true);
    pv.setInt16(i * 8 + 6, 0, true);
  };
  for (;;) {
    const gen = Atomics.load(ctl, GEN);
    add(0, data.controlFd);
    let n = 1;
    for (let k = 0; k < WATCHER_SLOTS; k++) {
      const fd = Atomics.load(ctl, FD + k);
      if (fd < 0 || dead[k] === fd) continue;
      slotAt[n] = k;
      add(n++, fd);
    }
    Atomics.store(ctl, ACK, gen);
    Atomics.notify(ctl, ACK);
    if (poll(pollfds, BigInt(n), -1) <= 0) continue; // EINTR
    if (pv.getInt16(6, true) !== 0) read(data.controlFd, counter, 8n);
    for (let i = 1; i < n; i++) {
      const revents = pv.getInt16(i * 8 + 6, true);
      if (revents === 0) continue;
      const k = slotAt[i];
      if ((revents & (POLLNVAL | POLLERR)) !== 0) {
        dead[k] = pv.getInt32(i * 8, true);
        continue;
      }
      // Zero when the main thread read the counter first: it has seen the signal itself.
      if (read(pv.getInt32(i * 8, true), counter, 8n) > 0n) {
        Atomics.add(ctl, SEQ + k, 1);
        Atomics.notify(ctl, SEQ + k);
      }
    }
  }
}

type WaitAsync = (
  ta: Int32Array,
  index: number,
  value: number,
  timeout?: number,
) => { async: false; value: string } | { async: true; value: Promise<string> };
const waitAsync = (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync;
const RESOLVED = Promise.resolve();
const ONE = new Uint8Array(new ArrayBuffer(8));
ONE[0] = 1;

/** The main-thread side: registers eventfds with the watcher and waits on their sequences. */
export class EventfdWatcher {
  readonly #native: Native;
  readonly #ctl: Int32Array;
  readonly #controlFd: number;
  readonly #slots = new Map<number, number>();
  readonly #seen = new Int32Array(WATCHER_SLOTS);
  readonly #settled: (() => void)[] = [];
  readonly #keepAlive: { ref(): void; unref(): void };
  #waiting = 0;

  constructor(native: Native, shared: SharedArrayBuffer, controlFd: number, keepAlive: { ref(): void; unref(): void }) {
    this.#native = native;
    this.#ctl = new Int32Array(shared);
    this.#controlFd = controlFd;
    this.#keepAlive = keepAlive;
    for (let k = 0; k < WATCHER_SLOTS; k++) {
      this.#ctl[FD + k] = -1;
      this.#settled.push(() => {
        this.#seen[k] = Atomics.load(this.#ctl, SEQ + k);
        if (--this.#waiting === 0) this.#keepAlive.unref();
      });
    }
  }

  /** Whether `fd` has (or can get) a slot. */
  canWatch(fd: number): boolean {
    return this.#slots.has(fd) || this.#slots.size < WATCHER_SLOTS;
  }

  /** Resolves once `fd` was signalled since the last wait on it (see Native.waitEventfd). */
  wait(fd: number): Promise<void> {
    const ctl = this.#ctl;
    let k = this.#slots.get(fd);
    if (k === undefined) k = this.#register(fd);
    const cur = Atomics.load(ctl, SEQ + k);
    if (cur !== this.#seen[k]) {
      this.#seen[k] = cur;
      return RESOLVED;
    }
    const r = waitAsync(ctl, SEQ + k, cur);
    if (!r.async) {
      this.#seen[k] = Atomics.load(ctl, SEQ + k);
      return RESOLVED;
    }
    if (this.#waiting++ === 0) this.#keepAlive.ref();
    return r.value.then(this.#settled[k]);
  }

  #register(fd: number): number {
    let k = 0;
    while (Atomics.load(this.#ctl, FD + k) >= 0) k++;
    this.#slots.set(fd, k);
    this.#seen[k] = Atomics.load(this.#ctl, SEQ + k);
    Atomics.store(this.#ctl, FD + k, fd);
    this.#changed();
    return k;
  }

  #changed(): number {
    const gen = Atomics.add(this.#ctl, GEN, 1) + 1;
    this.#native.libc.write(this.#controlFd, ONE, 8n);
    return gen;
  }

  /** Wakes every wait, for when the watcher thread died (the next waits use another way). */
  releaseAll(): void {
    for (let k = 0; k < WATCHER_SLOTS; k++) {
      Atomics.add(this.#ctl, SEQ + k, 1);
      Atomics.notify(this.#ctl, SEQ + k);
    }
  }

  /** Stops watching `fd`; resolves once the watcher no longer polls it (then it may be closed). */
  async forget(fd: number): Promise<void> {
    const k = this.#slots.get(fd);
    if (k === undefined) return;
    this.#slots.delete(fd);
    Atomics.store(this.#ctl, FD + k, -1);
    const gen = this.#changed();
    for (let tries = 0; tries < 100; tries++) {
      const ack = Atomics.load(this.#ctl, ACK);
      if (ack - gen >= 0) return;
      const r = waitAsync(this.#ctl, ACK, ack, 50);
      if (r.async) await r.value;
    }
  }
}
