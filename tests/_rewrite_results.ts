// Test helper: changes CQE results as the kernel posts them, for failures and short transfers
// the kernel gives only in circumstances a test cannot arrange (old kernels, limits, races).
import { native } from "../ffi/load.ts";
import { LIBURING_RING } from "../src/uring/layout.ts";

/**
 * Runs `fn` while every CQE result equal to `from` that the kernel posts is changed to `to`
 * (once per `times`). Patches the process's io_uring symbols and restores them after. Only CQEs
 * already posted when an `io_uring_enter` returns are seen: a request that completes later (in
 * io-wq, say) and is reaped without another enter keeps its result, so wait for every CQE to be
 * rewritten in one `doIo` (min = their number).
 */
export function withRewrittenResults(from: number, to: number, times: number, fn: () => void): number {
  const n = native!;
  // deno-lint-ignore no-explicit-any
  const uring = n.uring as unknown as Record<string, (...a: any[]) => number>;
  const init = uring.io_uring_queue_init_params, enter = uring.io_uring_enter, enter2 = uring.io_uring_enter2;
  const exit = uring.io_uring_queue_exit;
  const rings: Uint8Array[] = [];
  let left = times;
  const rewrite = () => {
    for (const ring of rings) {
      const dv = new DataView(ring.buffer, ring.byteOffset);
      const at = (off: number) => Number(dv.getBigUint64(off, true));
      const head = new Uint32Array(n.view(at(LIBURING_RING.cqKhead), 4))[0];
      const tail = new Uint32Array(n.view(at(LIBURING_RING.cqKtail), 4))[0];
      const mask = new Uint32Array(n.view(at(LIBURING_RING.cqKringMask), 4))[0];
      const cqes = new Int32Array(n.view(at(LIBURING_RING.cqCqes), 16 * (mask + 1)));
      for (let i = head; i !== tail && left > 0; i = (i + 1) >>> 0) {
        const res = ((i & mask) << 2) + 2;
        if (cqes[res] === from) {
          cqes[res] = to;
          left--;
        }
      }
    }
  };
  uring.io_uring_queue_init_params = (entries: number, ring: Uint8Array, params: Uint8Array) => {
    const r = init(entries, ring, params);
    if (r >= 0) rings.push(ring);
    return r;
  };
  // A ring torn down is unmapped: its CQ must never be read again (a read there segfaults, or
  // rewrites whatever was mapped at that address since).
  uring.io_uring_queue_exit = (ring: Uint8Array) => {
    const i = rings.indexOf(ring);
    if (i >= 0) rings.splice(i, 1);
    return exit(ring);
  };
  // deno-lint-ignore no-explicit-any
  uring.io_uring_enter = (...a: any[]) => {
    const r = enter(...a);
    rewrite();
    return r;
  };
  // deno-lint-ignore no-explicit-any
  uring.io_uring_enter2 = (...a: any[]) => {
    const r = enter2(...a);
    rewrite();
    return r;
  };
  try {
    fn();
  } finally {
    uring.io_uring_queue_init_params = init;
    uring.io_uring_enter = enter;
    uring.io_uring_enter2 = enter2;
    uring.io_uring_queue_exit = exit;
  }
  return times - left;
}
