// Test helper: changes CQE results as the kernel posts them, for failures and short transfers
// the kernel gives only in circumstances a test cannot arrange (old kernels, limits, races).
import { native } from "../ffi/load.ts";
import { LIBURING_RING, PROBE, SQE } from "../src/uring/layout.ts";
import { IO_URING_OP_SUPPORTED, IORING_ENTER_GETEVENTS, IORING_OP } from "../src/uring/constants.ts";
import { Ring } from "../src/uring/ring.ts";

const ECANCELED = 125;

/**
 * Runs `fn` while every CQE result equal to `from` that the kernel posts is changed to `to`
 * (once per `times`). Patches the process's io_uring symbols and restores them after. Only CQEs
 * already posted when an `io_uring_enter` returns are seen: a request that completes later (in
 * io-wq, say) and is reaped without another enter keeps its result, so wait for every CQE to be
 * rewritten in one `doIo` (min = their number). Returns how many were rewritten.
 */
export function withRewrittenResults(from: number, to: number, times: number, fn: () => void): number {
  let left = times;
  intercept(fn, () => {}, (ring) => {
    const head = u32At(ring, LIBURING_RING.cqKhead)[0], tail = u32At(ring, LIBURING_RING.cqKtail)[0];
    const mask = u32At(ring, LIBURING_RING.cqKringMask)[0];
    const cqes = new Int32Array(native!.view(addressAt(ring, LIBURING_RING.cqCqes), 16 * (mask + 1)));
    for (let i = head; i !== tail && left > 0; i = (i + 1) >>> 0) {
      const res = ((i & mask) << 2) + 2;
      if (cqes[res] === from) {
        cqes[res] = to;
        left--;
      }
    }
  });
  return times - left;
}

/**
 * Runs `fn` while `res` decides the result of each new CQE the kernel posts (it is given the
 * kernel's and returns the one the library sees), and `fail`, asked before each `io_uring_enter`
 * with its `to_submit`, may make that call return a negative errno without entering the kernel.
 * Like {@link withRewrittenResults}, only CQEs posted by the time an enter returns are seen.
 */
export function withHookedEnters(
  hooks: { res?: (res: number) => number; fail?: (toSubmit: number) => number | undefined },
  fn: () => void,
): void {
  const res = hooks.res;
  const after = res === undefined ? () => {} : newCqes((cqes, at) => {
    cqes.setInt32(at + 8, res(cqes.getInt32(at + 8, true)), true);
  });
  intercept(fn, () => {}, after, hooks.fail);
}

/**
 * Runs `fn` while the first request of opcode `op` (IORING_OP_*) handed to the kernel after the
 * first `skip` of them is not carried out, and completes with ECANCELED: as io-wq cancels a request
 * it found no worker thread for (a thread limit). See {@link withRefusedOnce}.
 */
export function withCancelledOnce(op: number, fn: () => void, skip = 0): boolean {
  return refuse(op, -ECANCELED, fn, skip, 1) === 1;
}

/**
 * Like {@link withCancelledOnce} for the first `times` requests of opcode `op` (a request that
 * goes again is a new one each time). Returns how many were cancelled.
 */
export function withCancelled(op: number, times: number, fn: () => void): number {
  return refuse(op, -ECANCELED, fn, 0, times);
}

/**
 * Runs `fn` while the first request of opcode `op` (IORING_OP_*) handed to the kernel after the
 * first `skip` of them is not carried out, and completes with `res`: as a kernel that refuses it
 * before doing anything (EOPNOTSUPP: an opcode this kernel does not do for the file) or io-wq
 * cancelling it (ECANCELED). Its SQE becomes a NOP (nothing is done) and that NOP's CQE, told by
 * its user_data, gets `res`. Returns whether a request was so refused. Like
 * {@link withRewrittenResults}, only CQEs posted by the time an enter returns are seen.
 */
export function withRefusedOnce(op: number, res: number, fn: () => void, skip = 0): boolean {
  return refuse(op, res, fn, skip, 1) === 1;
}

/** {@link refuse}: the first `times` requests of opcode `op` complete with `res`. Returns how many did. */
export function withRefused(op: number, res: number, times: number, fn: () => void): number {
  return refuse(op, res, fn, 0, times);
}

/**
 * {@link withRefusedOnce} for up to `times` requests, one at a time: the next of opcode `op` is
 * taken only once the CQE of the one before has been rewritten (a request that goes again keeps
 * its user_data). Returns how many were refused.
 */
function refuse(op: number, res: number, fn: () => void, skip: number, times: number): number {
  let userData: bigint | null = null, refused = 0;
  const before = pendingSqes((sqes, at) => {
    if (userData !== null || refused >= times || sqes.getUint8(at) !== op || skip-- > 0) return;
    sqes.setUint8(at, 0); // IORING_OP_NOP
    sqes.setUint32(at + 28, 0); // op flags: a NOP's own since Linux 6.10
    userData = sqes.getBigUint64(at + 32, true);
  });
  intercept(
    fn,
    before,
    newCqes((cqes, at) => {
      if (userData !== null && cqes.getBigUint64(at, true) === userData) {
        cqes.setInt32(at + 8, res, true);
        userData = null;
        refused++;
      }
    }),
  );
  return refused;
}

/**
 * Runs `fn` while `cut`, given the byte count of each read or write (READ, WRITE, READV, WRITEV,
 * READ_FIXED, WRITE_FIXED) handed to the kernel, may return a smaller one (at least 1) that the
 * kernel is then asked for instead: its SQE's length, or its iovecs after that many bytes, are cut
 * before the kernel sees them. So the kernel really transfers only that much and says so, as a
 * short transfer does: a read leaves the rest of its buffer as it was, a write the rest of the
 * file (a rewritten result would claim a short transfer the kernel had done whole). The iovecs are
 * the library's, written anew for each try. Returns how many were cut.
 */
export function withShortTransfers(cut: (len: number) => number | undefined, fn: () => void): number {
  const RW: number[] = [IORING_OP.READ, IORING_OP.WRITE, IORING_OP.READ_FIXED, IORING_OP.WRITE_FIXED];
  const RWV: number[] = [IORING_OP.READV, IORING_OP.WRITEV];
  let cuts = 0;
  intercept(
    fn,
    pendingSqes((sqes, at) => {
      const op = sqes.getUint8(at);
      if (RW.includes(op)) {
        const to = cut(sqes.getUint32(at + 24, true));
        if (to === undefined) return;
        sqes.setUint32(at + 24, to, true);
        cuts++;
      } else if (RWV.includes(op)) {
        const count = sqes.getUint32(at + 24, true);
        if (count === 0) return;
        const iov = new DataView(native!.view(Number(sqes.getBigUint64(at + 16, true)), 16 * count));
        let total = 0;
        for (let k = 0; k < count; k++) total += Number(iov.getBigUint64(16 * k + 8, true));
        let left = cut(total);
        if (left === undefined) return;
        for (let k = 0; k < count; k++) {
          const len = Number(iov.getBigUint64(16 * k + 8, true));
          if (left <= len) {
            iov.setBigUint64(16 * k + 8, BigInt(left), true);
            sqes.setUint32(at + 24, k + 1, true);
            break;
          }
          left -= len;
        }
        cuts++;
      }
    }),
    () => {},
  );
  return cuts;
}

/** IORING_OP_MSG_RING (Linux 5.18), which the library never sends. */
const IORING_OP_MSG_RING = 40;

/**
 * Runs `fn(fill)`, where `fill()` has the kernel post completions that belong to no request
 * (user_data 0xffffffff: no slot) to the CQ of every ring set up in `fn` so far until it is full,
 * and returns how many: IORING_OP_MSG_RING, sent from a ring of the test's own. So the kernel
 * keeps the completions of a queue's own requests aside (a CQ overflow), as a miscount in the
 * library would have it. `fill` throws if the kernel refused a message (before Linux 5.18:
 * EINVAL). Not for a ring with DEFER_TASKRUN, whose messages wait for its own thread.
 */
export function withForeignCqes(fn: (fill: () => number) => void): void {
  // Made before the interception, which would count it among the rings to post to.
  const own = new Ring(native!, 8, 0);
  try {
    intercept(
      (rings) => {
        fn(() => {
          let posted = 0;
          for (const ring of rings) {
            const fd = new DataView(ring.buffer, ring.byteOffset).getInt32(LIBURING_RING.ringFd, true);
            const room = u32At(ring, LIBURING_RING.cqKringEntries)[0] -
              ((u32At(ring, LIBURING_RING.cqKtail)[0] - u32At(ring, LIBURING_RING.cqKhead)[0]) >>> 0);
            for (let left = room; left > 0;) {
              const batch = Math.min(left, own.sqSpace());
              for (let k = 0; k < batch; k++) {
                const at = own.sqes.byteOffset + own.nextSqe() * SQE.size;
                const sqe = new DataView(own.sqes.buffer, at, SQE.size);
                for (let b = 0; b < SQE.size; b += 4) sqe.setUint32(b, 0);
                sqe.setUint8(SQE.opcode, IORING_OP_MSG_RING);
                sqe.setInt32(SQE.fd, fd, true); // the target ring; addr 0: IORING_MSG_DATA
                sqe.setBigUint64(SQE.off, 0xffff_ffffn, true); // the user_data it posts there
              }
              const r = own.enter(batch, IORING_ENTER_GETEVENTS, -1);
              if (r !== batch) throw new Error(`MSG_RING: io_uring_enter returned ${r}, not ${batch}`);
              for (let h = own.cqHead(); h !== own.cqTail(); h = (h + 1) >>> 0) {
                const res = own.cqesRes[((h & own.cqMask) << 2) + 2];
                if (res < 0) throw new Error(`MSG_RING failed: ${res}`);
              }
              own.setCqHead(own.cqTail());
              left -= batch;
              posted += batch;
            }
          }
          return posted;
        });
      },
      () => {},
      () => {},
    );
  } finally {
    own.close();
  }
}

/**
 * Runs `fn` and counts the SQEs of opcode `op` (IORING_OP_*) that its `io_uring_enter` calls hand
 * to the kernel: those between the kernel's SQ head and the tail published before the call (the
 * driver's SQ index array is the identity).
 */
export function countSubmitted(op: number, fn: () => void): number {
  let count = 0;
  intercept(
    fn,
    pendingSqes((sqes, at) => {
      if (sqes.getUint8(at) === op) count++;
    }),
    () => {},
  );
  return count;
}

/**
 * A `before` of {@link intercept} that calls `each` once for every SQE an `io_uring_enter` is
 * about to hand the kernel (`at`: its offset in `sqes`): those between the kernel's SQ head and
 * the tail published before the call (the driver's SQ index array is the identity), each once
 * though another ring's enter found it pending too.
 */
function pendingSqes(each: (sqes: DataView, at: number) => void): (ring: Uint8Array) => void {
  const R = LIBURING_RING;
  return newEntries(R.sqKhead, R.sqKtail, R.sqKringMask, R.sqSqes, 64, each);
}

/**
 * An `after` of {@link intercept} that calls `each` once for every CQE the kernel has posted since
 * (`at`: its offset in `cqes`; user_data at `at`, res at `at + 8`), though another ring's enter
 * found it too.
 */
function newCqes(each: (cqes: DataView, at: number) => void): (ring: Uint8Array) => void {
  const R = LIBURING_RING;
  return newEntries(R.cqKhead, R.cqKtail, R.cqKringMask, R.cqCqes, 16, each);
}

/**
 * Calls `each` for the entries of one of a ring's queues (`size` bytes each) between its head and
 * tail (offsets of liburing's pointers to them), from where the last call for that ring stopped.
 */
function newEntries(
  headAt: number,
  tailAt: number,
  maskAt: number,
  arrayAt: number,
  size: number,
  each: (entries: DataView, at: number) => void,
): (ring: Uint8Array) => void {
  const done = new Map<Uint8Array, number>();
  return (ring) => {
    const head = u32At(ring, headAt)[0], tail = u32At(ring, tailAt)[0], mask = u32At(ring, maskAt)[0];
    const entries = new DataView(native!.view(addressAt(ring, arrayAt), size * (mask + 1)));
    const from = done.get(ring);
    const start = from !== undefined && ((tail - from) >>> 0) <= ((tail - head) >>> 0) ? from : head;
    for (let i = start; i !== tail; i = (i + 1) >>> 0) each(entries, (i & mask) * size);
    done.set(ring, tail);
  };
}

function addressAt(ring: Uint8Array, off: number): number {
  return Number(new DataView(ring.buffer, ring.byteOffset).getBigUint64(off, true));
}

function u32At(ring: Uint8Array, off: number): Uint32Array {
  return new Uint32Array(native!.view(addressAt(ring, off), 4));
}

/**
 * Runs `fn` with `before` and `after` called for every live ring (liburing's struct io_uring)
 * around each `io_uring_enter` (unless `fail` returns the call's result instead), then restores
 * the process's io_uring symbols.
 */
function intercept(
  fn: (rings: readonly Uint8Array[]) => void,
  before: (ring: Uint8Array) => void,
  after: (ring: Uint8Array) => void,
  fail?: (toSubmit: number) => number | undefined,
): void {
  const n = native!;
  // deno-lint-ignore no-explicit-any
  const uring = n.uring as unknown as Record<string, (...a: any[]) => number>;
  const init = uring.io_uring_queue_init_params, enter = uring.io_uring_enter, enter2 = uring.io_uring_enter2;
  const exit = uring.io_uring_queue_exit;
  const rings: Uint8Array[] = [];
  uring.io_uring_queue_init_params = (entries: number, ring: Uint8Array, params: Uint8Array) => {
    const r = init(entries, ring, params);
    if (r >= 0) rings.push(ring);
    return r;
  };
  // A ring torn down is unmapped: its memory must never be read again (a read there segfaults,
  // or sees whatever was mapped at that address since).
  uring.io_uring_queue_exit = (ring: Uint8Array) => {
    const i = rings.indexOf(ring);
    if (i >= 0) rings.splice(i, 1);
    return exit(ring);
  };
  // deno-lint-ignore no-explicit-any
  const wrap = (call: (...a: any[]) => number) => (...a: any[]) => {
    const failed = fail?.(a[1]);
    if (failed !== undefined) return failed;
    for (const ring of rings) before(ring);
    const r = call(...a);
    for (const ring of rings) after(ring);
    return r;
  };
  uring.io_uring_enter = wrap(enter);
  uring.io_uring_enter2 = wrap(enter2);
  try {
    fn(rings);
  } finally {
    uring.io_uring_queue_init_params = init;
    uring.io_uring_enter = enter;
    uring.io_uring_enter2 = enter2;
    uring.io_uring_queue_exit = exit;
  }
}

/**
 * Runs `fn` while the rings set up in it find opcode `op` unsupported when they probe, as on a
 * kernel without it (IORING_OP_URING_CMD before Linux 5.19): liburing's probe is changed before
 * the library reads it.
 */
export function withoutOpcode(op: number, fn: () => void): void {
  const restore = hideOpcode(op);
  try {
    fn();
  } finally {
    restore();
  }
}

/**
 * From now on, rings set up find opcode `op` unsupported when they probe (see {@link withoutOpcode});
 * returns the function that ends it. For a whole process: the fuzzer's `--no-discard-command`.
 */
export function hideOpcode(op: number): () => void {
  const n = native!;
  const uring = n.uring as unknown as { io_uring_get_probe_ring: (ring: Uint8Array) => number };
  const probe = uring.io_uring_get_probe_ring;
  uring.io_uring_get_probe_ring = (ring) => {
    const p = probe(ring);
    if (p === 0) return p;
    const count = new Uint8Array(n.view(p, PROBE.header))[PROBE.opsLen];
    if (op < count) {
      const body = new Uint8Array(n.view(p, PROBE.header + count * PROBE.opSize));
      body[PROBE.header + op * PROBE.opSize + PROBE.opFlags] &= ~IO_URING_OP_SUPPORTED;
    }
    return p;
  };
  return () => {
    uring.io_uring_get_probe_ring = probe;
  };
}
