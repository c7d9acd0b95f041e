/**
 * A stand-in for the kernel side of io_uring, for bench/layers_bench.ts `--kernel fake`: it
 * replaces `io_uring_enter` in the loaded native symbol table with a JavaScript function that
 * completes every submitted SQE at once (result = its length, no data moved), so what the
 * library's JavaScript costs per request can be measured without a system call's noise, and,
 * with `syscall`, with one cheap system call (close(-1)) per enter instead of a real read: the
 * difference shows how much slower the same JavaScript runs right after a system call.
 *
 * Only for benchmarks: it patches the process-wide symbol table, so every ring set up after
 * {@link installFakeKernel} in this process uses it.
 *
 * @module
 */
import type { Native } from "../ffi/types.ts";
import { LIBURING_RING } from "../src/uring/layout.ts";

interface FakeRing {
  /** The liburing struct io_uring it was read from. */
  struct: Uint8Array;
  enterFd: number;
  sqHead: Uint32Array;
  sqTail: Uint32Array;
  sqMask: number;
  sqes: Uint32Array;
  cqTail: Uint32Array;
  cqMask: number;
  cqes: Uint32Array;
}

function ringViews(n: Native, struct: Uint8Array): FakeRing {
  const dv = new DataView(struct.buffer, struct.byteOffset);
  const addr = (off: number) => Number(dv.getBigUint64(off, true));
  const u32 = (off: number, count = 1) => new Uint32Array(n.view(addr(off), 4 * count));
  const sqEntries = u32(LIBURING_RING.sqKringEntries)[0];
  const cqEntries = u32(LIBURING_RING.cqKringEntries)[0];
  return {
    struct,
    enterFd: dv.getInt32(LIBURING_RING.enterRingFd, true),
    sqHead: u32(LIBURING_RING.sqKhead),
    sqTail: u32(LIBURING_RING.sqKtail),
    sqMask: u32(LIBURING_RING.sqKringMask)[0],
    sqes: new Uint32Array(n.view(addr(LIBURING_RING.sqSqes), 64 * sqEntries)),
    cqTail: u32(LIBURING_RING.cqKtail),
    cqMask: u32(LIBURING_RING.cqKringMask)[0],
    cqes: new Uint32Array(n.view(addr(LIBURING_RING.cqCqes), 16 * cqEntries)),
  };
}

/**
 * From now on, rings set up in this process complete their SQEs in JavaScript. `syscall`: make
 * one real (failing, cheap) system call per enter as well.
 */
export function installFakeKernel(n: Native, syscall: boolean): void {
  // deno-lint-ignore no-explicit-any
  const uring = n.uring as unknown as Record<string, (...a: any[]) => number>;
  const setUp: Uint8Array[] = [];
  const byFd = new Map<number, FakeRing>();
  const init = uring.io_uring_queue_init_params;
  uring.io_uring_queue_init_params = (entries: number, ring: Uint8Array, params: Uint8Array) => {
    const r = init(entries, ring, params);
    if (r >= 0) setUp.push(ring);
    return r;
  };
  let last: FakeRing | undefined;
  // A ring that goes must go from here too: its enter fd (a registered ring index, or the ring
  // fd) is reused by the next ring set up, and its views would then point into unmapped memory
  // (the library sets up short-lived rings of its own, to probe the kernel). Kept, that made
  // this bench segfault in about half the runs on Deno and in every run on Bun.
  const exit = uring.io_uring_queue_exit;
  uring.io_uring_queue_exit = (ring: Uint8Array): number => {
    const i = setUp.indexOf(ring);
    if (i >= 0) setUp.splice(i, 1);
    for (const [fd, v] of byFd) if (v.struct === ring) byFd.delete(fd);
    if (last?.struct === ring) last = undefined;
    return exit(ring);
  };
  uring.io_uring_enter = (fd: number, toSubmit: number): number => {
    let r = last !== undefined && last.enterFd === fd ? last : byFd.get(fd);
    if (r === undefined) {
      // The enter fd (a registered ring index or the ring fd) is known once liburing set it.
      for (const s of setUp.splice(0)) {
        const v = ringViews(n, s);
        byFd.set(v.enterFd, v);
      }
      r = byFd.get(fd);
      if (r === undefined) throw new Error(`fake kernel: unknown ring ${fd}`);
    }
    last = r;
    let head = r.sqHead[0];
    const tail = r.sqTail[0];
    let cqTail = r.cqTail[0];
    let k = 0;
    for (; head !== tail && k < toSubmit; head = (head + 1) >>> 0, k++) {
      const sqe = (head & r.sqMask) << 4;
      const cqe = (cqTail & r.cqMask) << 2;
      r.cqes[cqe] = r.sqes[sqe + 8]; // user_data
      r.cqes[cqe + 1] = r.sqes[sqe + 9];
      r.cqes[cqe + 2] = r.sqes[sqe + 6]; // res = len
      r.cqes[cqe + 3] = 0;
      cqTail = (cqTail + 1) >>> 0;
    }
    Atomics.store(r.sqHead, 0, head);
    Atomics.store(r.cqTail, 0, cqTail);
    if (syscall) n.libc.close(-1);
    return k;
  };
}
