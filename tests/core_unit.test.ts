// Unit tests of the pure core, with no device and no real I/O: SQE writers against liburing's
// io_uring_prep_* layouts, both backlogs, flag checks, the property engine, and the Queue's doIo
// loop driven by a scripted fake driver queue.
import { test } from "node:test";
import assert from "./_assert.ts";
import { BlkioError } from "../src/errors.ts";
import { ERRNO } from "../src/errno.ts";
import { type Completion, flagsError, newCompletion, Op, type OpValue, ReqFlags } from "../src/completion.ts";
import { CompletionBacklog } from "../src/completion_backlog.ts";
import { RequestBacklog, type RequestSink } from "../src/request_backlog.ts";
import { checkBool, checkInt, checkUint64, PropertyTable } from "../src/properties.ts";
import { State, type StateValue } from "../src/state.ts";
import { closeQueue, newQueue, type Queue, queueUsesBuffer } from "../src/queue.ts";
import type { DriverQueue } from "../src/driver.ts";
import type { Native } from "../ffi/types.ts";
import { cString, oDirect, oDirectFor } from "../src/sys.ts";
import { CQE, IOVEC, PARAMS, SQE, TIMESPEC } from "../src/uring/layout.ts";
import {
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  IORING_FSYNC_DATASYNC,
  IORING_OP,
  IOSQE_FIXED_FILE,
} from "../src/uring/constants.ts";
import {
  prepCancel,
  prepCmdDiscard,
  prepFadvise,
  prepFallocate,
  prepFdatasync,
  prepRead,
  prepReadv,
  prepRw,
  prepSyncFileRange,
  prepWrite,
  prepWritev,
  setRwFlags,
  setSqeFlags,
  setUserData,
} from "../src/uring/sqe.ts";
import { assertErrno } from "./_helpers.ts";

const { EINVAL, EINTR, ETIME, EBUSY, ENOTSUP } = ERRNO;

// --- SQE writers ---

interface SqeFields {
  opcode: number;
  flags?: number;
  fd: number;
  off: number | bigint;
  addr: number | bigint;
  len: number;
  rwFlags?: number;
  userData?: number | bigint;
}

/** The 64 bytes liburing 2.3 leaves in an SQE after io_uring_prep_rw and friends. */
function expectedSqe(f: SqeFields): Uint8Array {
  const out = new Uint8Array(SQE.size);
  const v = new DataView(out.buffer);
  v.setUint8(SQE.opcode, f.opcode);
  v.setUint8(SQE.flags, f.flags ?? 0);
  v.setInt32(SQE.fd, f.fd, true);
  v.setBigUint64(SQE.off, BigInt(f.off), true);
  v.setBigUint64(SQE.addr, BigInt(f.addr), true);
  v.setUint32(SQE.len, f.len, true);
  v.setUint32(SQE.rwFlags, f.rwFlags ?? 0, true);
  v.setBigUint64(SQE.userData, BigInt(f.userData ?? 0), true);
  return out;
}

/** An SQE array of `n` slots filled with garbage, as a reused ring would be. */
function sqeArray(n = 4): { sq: Uint32Array; bytes: Uint8Array } {
  const bytes = new Uint8Array(new ArrayBuffer(SQE.size * n)).fill(0xa5);
  return { sq: new Uint32Array(bytes.buffer), bytes };
}

function slot(bytes: Uint8Array, i: number): Uint8Array {
  return bytes.subarray(i * SQE.size, (i + 1) * SQE.size);
}

function assertUntouched(bytes: Uint8Array, ...slots: number[]): void {
  for (const i of slots) assert.ok(slot(bytes, i).every((x) => x === 0xa5), `slot ${i} was touched`);
}

test("layout: SQE/CQE/params/iovec/timespec offsets match the kernel UAPI", () => {
  assert.deepEqual(
    { ...SQE },
    { size: 64, opcode: 0, flags: 1, fd: 4, off: 8, addr: 16, len: 24, rwFlags: 28, userData: 32 },
  );
  assert.deepEqual({ ...CQE }, { size: 16, userData: 0, res: 8, flags: 12 });
  assert.equal(PARAMS.size, 120);
  assert.deepEqual({ ...IOVEC }, { size: 16, base: 0, len: 8 });
  assert.deepEqual({ ...TIMESPEC }, { size: 16, sec: 0, nsec: 8 });
  assert.equal(IORING_OP.READV, 1);
  assert.equal(IORING_OP.WRITEV, 2);
  assert.equal(IORING_OP.FSYNC, 3);
  assert.equal(IORING_OP.ASYNC_CANCEL, 14);
  assert.equal(IORING_OP.FALLOCATE, 17);
  assert.equal(IORING_OP.READ, 22);
  assert.equal(IORING_OP.WRITE, 23);
});

test("sqe: prepRead writes io_uring_prep_read's bytes, 64-bit values split across 2^32", () => {
  const { sq, bytes } = sqeArray();
  const off = 2 ** 40 + 512 + 7;
  const addr = 0x7fff_dead_b000 + 16;
  prepRead(sq, 1, 5, addr, 4096, off);
  assert.deepEqual(slot(bytes, 1), expectedSqe({ opcode: IORING_OP.READ, fd: 5, off, addr, len: 4096 }));
  assertUntouched(bytes, 0, 2, 3);
  const v = new DataView(bytes.buffer, SQE.size);
  assert.equal(v.getUint32(SQE.off, true), 512 + 7);
  assert.equal(v.getUint32(SQE.off + 4, true), 256);
  assert.equal(v.getBigUint64(SQE.addr, true), BigInt(addr));
});

test("sqe: offsets and addresses at the 32-bit and 53-bit edges", () => {
  for (const off of [0, 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, 2 ** 52 + 3, 2 ** 53 - 1]) {
    const { sq, bytes } = sqeArray(1);
    prepWrite(sq, 0, 0, off, 0xffffffff, off);
    assert.deepEqual(
      slot(bytes, 0),
      expectedSqe({ opcode: IORING_OP.WRITE, fd: 0, off, addr: off, len: 0xffffffff }),
      `value ${off}`,
    );
    const v = new DataView(bytes.buffer);
    assert.equal(v.getBigUint64(SQE.off, true), BigInt(off));
  }
});

test("sqe: prepReadv/prepWritev take the iovec array address and count", () => {
  const { sq, bytes } = sqeArray();
  prepReadv(sq, 0, 3, 0x5555_0000_1000, 3, 4096);
  prepWritev(sq, 3, 2, 0x1000, 1024, 2 ** 33);
  assert.deepEqual(
    slot(bytes, 0),
    expectedSqe({ opcode: IORING_OP.READV, fd: 3, off: 4096, addr: 0x5555_0000_1000, len: 3 }),
  );
  assert.deepEqual(
    slot(bytes, 3),
    expectedSqe({ opcode: IORING_OP.WRITEV, fd: 2, off: 2 ** 33, addr: 0x1000, len: 1024 }),
  );
  assertUntouched(bytes, 1, 2);
});

test("sqe: prepFdatasync is io_uring_prep_fsync(IORING_FSYNC_DATASYNC)", () => {
  const { sq, bytes } = sqeArray();
  prepFdatasync(sq, 2, 7);
  assert.deepEqual(
    slot(bytes, 2),
    expectedSqe({ opcode: IORING_OP.FSYNC, fd: 7, off: 0, addr: 0, len: 0, rwFlags: IORING_FSYNC_DATASYNC }),
  );
  assertUntouched(bytes, 0, 1, 3);
});

test("sqe: prepFallocate puts the length in addr and the mode in len", () => {
  const { sq, bytes } = sqeArray();
  const len = 2 ** 33 + 4096;
  const off = 2 ** 35 + 512;
  const mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
  prepFallocate(sq, 1, 0, mode, off, len);
  assert.deepEqual(
    slot(bytes, 1),
    expectedSqe({ opcode: IORING_OP.FALLOCATE, fd: 0, off, addr: len, len: mode }),
  );
  const v = new DataView(bytes.buffer, SQE.size);
  assert.equal(v.getBigUint64(SQE.addr, true), BigInt(len));
  assert.equal(v.getUint32(SQE.len, true), 3);
});

test("sqe: prepCancel is io_uring_prep_cancel64 (fd -1, target in addr)", () => {
  const { sq, bytes } = sqeArray(1);
  prepCancel(sq, 0, 1234);
  assert.deepEqual(
    slot(bytes, 0),
    expectedSqe({ opcode: IORING_OP.ASYNC_CANCEL, fd: -1, off: 0, addr: 1234, len: 0 }),
  );
});

test("sqe: setUserData, setRwFlags and setSqeFlags touch only their fields", () => {
  const { sq, bytes } = sqeArray();
  prepRead(sq, 1, 0, 0x10000, 512, 0);
  setUserData(sq, 1, 0xfffffffe);
  setRwFlags(sq, 1, 0x12);
  setSqeFlags(sq, 1, IOSQE_FIXED_FILE);
  assert.deepEqual(
    slot(bytes, 1),
    expectedSqe({
      opcode: IORING_OP.READ,
      flags: IOSQE_FIXED_FILE,
      fd: 0,
      off: 0,
      addr: 0x10000,
      len: 512,
      rwFlags: 0x12,
      userData: 0xfffffffe,
    }),
  );
  // Setting flags again replaces them and keeps opcode and ioprio.
  const v = new DataView(bytes.buffer, SQE.size);
  v.setUint16(2, 0x4003, true); // ioprio
  setSqeFlags(sq, 1, 0x84);
  assert.equal(v.getUint8(SQE.opcode), IORING_OP.READ);
  assert.equal(v.getUint8(SQE.flags), 0x84);
  assert.equal(v.getUint16(2, true), 0x4003);
  // A new prep clears everything a previous request left, user_data included.
  prepRw(sq, 1, IORING_OP.WRITE, 4, 8, 16, 32);
  assert.deepEqual(
    slot(bytes, 1),
    expectedSqe({ opcode: IORING_OP.WRITE, fd: 4, off: 32, addr: 8, len: 16 }),
  );
  assertUntouched(bytes, 0, 2, 3);
});

// --- RequestBacklog ---

interface Taken {
  op: OpValue;
  start: number;
  buf: Uint8Array | null;
  iov: readonly Uint8Array[] | null;
  len: number;
  ud: unknown;
  flags: number;
}

/** A sink that takes requests while `accept()` says so. */
function sink(accept: (ud: unknown) => boolean = () => true): RequestSink & { taken: Taken[] } {
  const taken: Taken[] = [];
  return {
    taken,
    tryEnqueue(op, start, buf, iov, len, ud, flags) {
      if (!accept(ud)) return false;
      taken.push({ op, start, buf, iov, len, ud, flags });
      return true;
    },
  };
}

function pushN(bl: RequestBacklog, from: number, to: number): void {
  for (let i = from; i < to; i++) {
    const buf = i % 2 === 0 ? new Uint8Array(1 + (i % 5)) : null;
    const iov = i % 2 === 1 ? [new Uint8Array(2), new Uint8Array(3)] : null;
    bl.push((i % 7) as OpValue, i * 512, buf, iov, i * 3, { i }, i & 7);
  }
}

function assertTaken(t: Taken, i: number): void {
  assert.equal((t.ud as { i: number }).i, i);
  assert.equal(t.op, i % 7);
  assert.equal(t.start, i * 512);
  assert.equal(t.len, i * 3);
  assert.equal(t.flags, i & 7);
  if (i % 2 === 0) {
    assert.equal(t.buf?.byteLength, 1 + (i % 5));
    assert.equal(t.iov, null);
  } else {
    assert.equal(t.buf, null);
    assert.equal(t.iov?.length, 2);
  }
}

test("request backlog: FIFO order with every field kept", () => {
  const bl = new RequestBacklog();
  pushN(bl, 0, 10);
  assert.equal(bl.length, 10);
  const s = sink();
  assert.equal(bl.process(s), 10);
  assert.equal(bl.length, 0);
  s.taken.forEach(assertTaken);
  assert.equal(bl.process(s), 0);
});

test("request backlog: grows past 64 while wrapped around, order kept", () => {
  const bl = new RequestBacklog();
  pushN(bl, 0, 50);
  let budget = 40;
  const s = sink(() => budget-- > 0);
  assert.equal(bl.process(s), 40);
  assert.equal(bl.length, 10);
  pushN(bl, 50, 300); // wraps at 64, then grows to 128 and 256 with head > 0
  assert.equal(bl.length, 260);
  budget = Infinity;
  assert.equal(bl.process(s), 260);
  assert.equal(s.taken.length, 300);
  s.taken.forEach(assertTaken);
  // Reuse after emptying, across the wrap point again.
  for (let round = 0; round < 3; round++) {
    pushN(bl, 0, 100);
    const s2 = sink();
    assert.equal(bl.process(s2), 100);
    s2.taken.forEach(assertTaken);
  }
});

test("request backlog: process() stops at the first refused request and resumes there", () => {
  const bl = new RequestBacklog();
  pushN(bl, 0, 12);
  const refuse = new Set([5, 9]);
  const s = sink((ud) => !refuse.delete((ud as { i: number }).i));
  assert.equal(bl.process(s), 5);
  assert.equal(bl.length, 7);
  assert.equal(bl.process(s), 4); // 5..8, refuses 9
  assert.equal(bl.process(s), 3);
  assert.equal(bl.length, 0);
  s.taken.forEach(assertTaken);
  // A sink that refuses everything changes nothing.
  pushN(bl, 0, 3);
  assert.equal(bl.process(sink(() => false)), 0);
  assert.equal(bl.length, 3);
});

test("request backlog: drain() hands back userData in order; usesBuffer() sees waiting buffers", () => {
  const bl = new RequestBacklog();
  const a = new Uint8Array(new ArrayBuffer(16));
  const b = new Uint8Array(new ArrayBuffer(16));
  const c = new Uint8Array(new ArrayBuffer(16));
  bl.push(Op.Read, 0, a.subarray(4), null, 12, "a", 0);
  bl.push(Op.Readv, 0, null, [c, b.subarray(8)], 24, "bc", 0);
  assert.ok(bl.usesBuffer(a.buffer));
  assert.ok(bl.usesBuffer(b.buffer));
  assert.ok(bl.usesBuffer(c.buffer));
  assert.ok(!bl.usesBuffer(new ArrayBuffer(16)));
  const seen: unknown[] = [];
  bl.drain((ud) => seen.push(ud));
  assert.deepEqual(seen, ["a", "bc"]);
  assert.equal(bl.length, 0);
  assert.ok(!bl.usesBuffer(a.buffer));
});

// remove() indexes a long backlog by userData. A request pushed after that with a userData
// already waiting must make it give the index up: replacing the entry would make remove() take
// the newer request instead of the oldest, and leave the older one impossible to remove (cancel()
// would say there is no such request).
test("request backlog: a userData pushed again once the index is built is removed oldest first, then again", () => {
  const bl = new RequestBacklog();
  const older = new Uint8Array(new ArrayBuffer(8)), newer = new Uint8Array(new ArrayBuffer(8));
  for (let i = 0; i < 100; i++) bl.push(Op.Read, i * 512, i === 5 ? older : null, null, 8, i, 0);
  assert.equal(bl.remove(99), true); // more than 64 waiting: this builds the index
  bl.push(Op.Read, 0, newer, null, 8, 5, 0);
  assert.equal(bl.remove(5), true);
  assert.ok(!bl.usesBuffer(older.buffer) && bl.usesBuffer(newer.buffer), "the oldest went first");
  assert.equal(bl.remove(5), true, "the newer request with userData 5 still waited");
  assert.ok(!bl.usesBuffer(newer.buffer));
  assert.equal(bl.remove(5), false);
  assert.equal(bl.length, 98);
  const s = sink();
  assert.equal(bl.process(s), 98);
  assert.ok(!s.taken.some((t) => t.ud === 5 || t.ud === 99));
});

// grow() copies only the live entries and leaves removed ones behind: the count of removed
// entries must start again from 0, or length stays short by one per mark for good (a Queue would
// then never hand its last waiting request to the driver).
test("request backlog: length stays right when it grows with a removed entry inside", () => {
  const bl = new RequestBacklog();
  for (let i = 0; i < 64; i++) bl.push(Op.Read, i * 512, null, null, 0, i, 0);
  assert.equal(bl.remove(10), true); // a mark in the middle: all 64 slots stay taken
  bl.push(Op.Read, 0, null, null, 0, "new", 0); // full: grows
  assert.equal(bl.length, 64);
  const s = sink();
  assert.equal(bl.process(s), 64);
  assert.deepEqual(s.taken.map((t) => t.ud), [...[...Array(64).keys()].filter((i) => i !== 10), "new"]);
  assert.equal(bl.length, 0);
});

// --- CompletionBacklog ---

test("completion backlog: fill in order, bounded by max, reusing Completion objects", () => {
  const cb = new CompletionBacklog();
  let pushes = 0;
  cb.onPush = () => pushes++;
  cb.push("a", -5, "first");
  cb.push("b", 0, null);
  cb.push("c", -22, "third");
  assert.equal(pushes, 3);
  assert.equal(cb.length, 3);
  const keep = newCompletion();
  const out: Completion[] = [keep];
  assert.equal(cb.fill(out, 0, 2), 2);
  assert.equal(out[0], keep);
  assert.deepEqual(out.slice(0, 2), [
    { userData: "a", ret: -5, errorMsg: "first" },
    { userData: "b", ret: 0, errorMsg: null },
  ]);
  assert.equal(cb.length, 1);
  assert.equal(cb.fill(out, 2, 10), 3);
  assert.deepEqual(out[2], { userData: "c", ret: -22, errorMsg: "third" });
  assert.equal(cb.length, 0);
  assert.equal(cb.fill(out, 0, 10), 0);
  // Drained, then used again: nothing of the first round comes back.
  cb.push("d", 0, null);
  assert.equal(cb.length, 1);
  assert.equal(cb.fill(out, 0, 10), 1);
  assert.deepEqual(out[0], { userData: "d", ret: 0, errorMsg: null });
  assert.equal(cb.fill(out, 0, 10), 0);
});

test("completion backlog: unfilled completions come back first, in order", () => {
  const cb = new CompletionBacklog();
  for (const x of ["a", "b", "c", "d"]) cb.push(x, 0, null);
  const out: Completion[] = [];
  assert.equal(cb.fill(out, 0, 2), 2);
  // Two more that came from the ring in the same doIo.
  out.push({ userData: "r1", ret: 1, errorMsg: null }, { userData: "r2", ret: 2, errorMsg: "m" });
  cb.unfill(out, 4);
  assert.equal(cb.length, 6);
  cb.push("e", 0, null);
  const again: Completion[] = [];
  assert.equal(cb.fill(again, 0, 100), 7);
  assert.deepEqual(again.map((c) => c.userData), ["a", "b", "r1", "r2", "c", "d", "e"]);
  assert.deepEqual(again[3], { userData: "r2", ret: 2, errorMsg: "m" });
  cb.unfill(again, 0);
  assert.equal(cb.length, 0);
  // unfill into an empty backlog after a partial fill keeps the order too.
  cb.push("x", 0, null);
  cb.push("y", 0, null);
  cb.push("z", 0, null);
  const o2: Completion[] = [];
  cb.fill(o2, 0, 1);
  cb.unfill(o2, 1);
  const o3: Completion[] = [];
  cb.fill(o3, 0, 10);
  assert.deepEqual(o3.map((c) => c.userData), ["x", "y", "z"]);
});

// A doIo that throws (an unwritable out entry, say) does not reach the forgetOut at its end: the
// entries it collected are another array's, and the next call's first fill must drop them, or an
// object of the old array that now sits in the new one counts as a repeat of itself.
test("completion backlog: a fill at 0 forgets the entries an earlier call that threw collected", () => {
  const cb = new CompletionBacklog();
  const first = Array.from({ length: 40 }, newCompletion);
  for (let n = 0; n < 40; n++) assert.ok(cb.deliver(first, n, n, 0, null), `first call, entry ${n}`);
  // No forgetOut: that call threw. The next one gets a new array, with first[5] moved to its end
  // and holes from 33 on (filled with new objects, so no entry is compared until the moved one).
  const second: Completion[] = Array.from({ length: 33 }, newCompletion);
  second.length = 40;
  second[40] = first[5];
  assert.equal(cb.fill(second, 0, 41), 0);
  for (let n = 0; n <= 40; n++) {
    assert.ok(cb.deliver(second, n, `again ${n}`, 0, null), `second call, entry ${n}`);
  }
  assert.equal(cb.badOut, -1);
  assert.equal(first[5].userData, "again 40");
});

// --- flags ---

test("flagsError: libblkio's messages per request type", () => {
  const FUA = "BLKIO_REQ_FUA is invalid for this request type";
  const NO_UNMAP = "BLKIO_REQ_NO_UNMAP is invalid for this request type";
  const NO_FALLBACK = "BLKIO_REQ_NO_FALLBACK is invalid for this request type";
  const BITS = "unsupported bits in request flags";
  const { FUA: F, NO_UNMAP: U, NO_FALLBACK: N } = ReqFlags;
  const table: [OpValue, number, string | null][] = [
    [Op.Read, 0, null],
    [Op.Read, F, FUA],
    [Op.Read, U, NO_UNMAP],
    [Op.Read, N, NO_FALLBACK],
    [Op.Readv, F, FUA],
    [Op.Readv, U, NO_UNMAP],
    [Op.Readv, N, NO_FALLBACK],
    [Op.Writev, U, NO_UNMAP],
    [Op.Write, N, NO_FALLBACK],
    [Op.Write, F, null],
    [Op.Write, U, NO_UNMAP],
    [Op.Writev, F, null],
    [Op.Writev, N, NO_FALLBACK],
    [Op.WriteZeroes, F | U | N, null],
    [Op.Discard, F, FUA],
    [Op.Discard, U, NO_UNMAP],
    [Op.Discard, N, NO_FALLBACK],
    [Op.Flush, F | U, FUA],
    [Op.Flush, U | N, NO_UNMAP],
    [Op.Flush, 0, null],
    [Op.Read, 8, BITS],
    [Op.WriteZeroes, F | 16, BITS],
    [Op.Write, 0x80000000, BITS],
    [Op.Write, 0xffffffff, BITS],
  ];
  for (const [op, flags, want] of table) assert.equal(flagsError(op, flags), want, `op ${op} flags ${flags}`);
});

// --- PropertyTable ---

interface FakeDriver {
  name: string;
  num: number;
  qsize: number;
  flag: boolean;
  cap: bigint | null;
  label: string;
}

function fakeTable(): PropertyTable<FakeDriver> {
  return new PropertyTable<FakeDriver>({
    name: { type: "str", doc: "driver name", get: (d) => d.name },
    num: {
      type: "int",
      doc: "created only",
      settableIn: [State.Created],
      get: (d) => d.num,
      set: (d, v) => {
        if (v < 0) throw BlkioError.of("EINVAL", "num must be >= 0");
        d.num = v;
      },
    },
    qsize: {
      type: "int",
      doc: "connected only",
      readableFrom: State.Connected,
      settableIn: [State.Connected],
      get: (d) => d.qsize,
      set: (d, v) => void (d.qsize = v),
    },
    flag: {
      type: "bool",
      doc: "created or connected",
      settableIn: [State.Created, State.Connected],
      get: (d) => d.flag,
      set: (d, v) => void (d.flag = v),
    },
    cap: {
      type: "uint64",
      doc: "device size",
      readableFrom: State.Connected,
      get: (d) => d.cap!,
    },
    label: {
      type: "str",
      doc: "any text",
      settableIn: [State.Created],
      get: (d) => d.label,
      set: (d, v) => void (d.label = v),
    },
  });
}

function fakeDriver(): FakeDriver {
  return { name: "fake", num: 1, qsize: 8, flag: false, cap: 4096n, label: "" };
}

const C = State.Created, K = State.Connected, S = State.Started;

test("property table: unknown names, wrong types, and non-string names", () => {
  const t = fakeTable(), d = fakeDriver();
  assertErrno(() => t.get(d, C, "nope", "int"), "ENOENT", /nope/);
  assertErrno(() => t.set(d, C, "nope", "int", 1, checkInt), "ENOENT");
  assertErrno(() => t.getStr(d, C, "nope"), "ENOENT");
  assertErrno(() => t.setStr(d, C, "nope", "1"), "ENOENT");
  assertErrno(() => t.get(d, C, "num", "bool"), "ENOTTY", /not a bool/);
  assertErrno(() => t.get(d, C, "flag", "int"), "ENOTTY", /not an int/);
  assertErrno(() => t.get(d, K, "cap", "int"), "ENOTTY", /not an int/);
  assertErrno(() => t.set(d, C, "name", "int", 3, checkInt), "ENOTTY");
  assertErrno(() => t.get(d, C, 5 as unknown as string, "int"), "EINVAL");
  assert.equal(t.has("num"), true);
  assert.equal(t.has("nope"), false);
});

test("property table: state checks ENODEV / EBUSY / EACCES", () => {
  const t = fakeTable(), d = fakeDriver();
  // Reading before the state it becomes available in.
  assertErrno(() => t.get(d, C, "cap", "uint64"), "ENODEV", /connected/);
  assertErrno(() => t.getStr(d, C, "qsize"), "ENODEV");
  assert.equal(t.get(d, K, "cap", "uint64"), 4096n);
  assert.equal(t.get(d, S, "cap", "uint64"), 4096n);
  // Read-only, in every state.
  for (const st of [C, K, S] as StateValue[]) {
    assertErrno(() => t.set(d, st, "cap", "uint64", 1n, checkUint64), "EACCES", /read-only/);
    assertErrno(() => t.setStr(d, st, "name", "x"), "EACCES", /read-only/);
  }
  // Created-only.
  t.set(d, C, "num", "int", 4, checkInt);
  assert.equal(d.num, 4);
  assertErrno(() => t.set(d, K, "num", "int", 5, checkInt), "EBUSY", /connected/);
  assertErrno(() => t.set(d, S, "num", "int", 5, checkInt), "EBUSY", /started/);
  // Connected-only.
  assertErrno(() => t.set(d, C, "qsize", "int", 16, checkInt), "ENODEV");
  t.set(d, K, "qsize", "int", 16, checkInt);
  assert.equal(d.qsize, 16);
  assertErrno(() => t.set(d, S, "qsize", "int", 32, checkInt), "EBUSY", /started/);
  // Both.
  t.set(d, C, "flag", "bool", true, checkBool);
  t.set(d, K, "flag", "bool", false, checkBool);
  assertErrno(() => t.set(d, S, "flag", "bool", true, checkBool), "EBUSY");
  assert.equal(d.flag, false);
  // Errors of the row's own setter pass through.
  assertErrno(() => t.set(d, C, "num", "int", -1, checkInt), "EINVAL", /num/);
  assert.equal(d.num, 4);
});

test("property table: getStr/setStr format and parse every type", () => {
  const t = fakeTable(), d = fakeDriver();
  assert.equal(t.getStr(d, C, "flag"), "false");
  assert.equal(t.getStr(d, C, "num"), "1");
  assert.equal(t.getStr(d, K, "cap"), "4096");
  assert.equal(t.getStr(d, C, "name"), "fake");
  t.setStr(d, C, "flag", "true");
  assert.equal(d.flag, true);
  t.setStr(d, C, "num", "+12");
  assert.equal(d.num, 12);
  t.setStr(d, C, "num", "2147483647");
  assert.equal(d.num, 2147483647);
  t.setStr(d, C, "label", "with spaces, =, and ünïcode");
  assert.equal(d.label, "with spaces, =, and ünïcode");
  for (const bad of ["yes", "1", "TRUE", "", " true"]) {
    assertErrno(() => t.setStr(d, C, "flag", bad), "EINVAL");
  }
  for (const bad of ["", "1.5", "0x10", "1e3", "2147483648", "-2147483649", "12abc", " 1"]) {
    assertErrno(() => t.setStr(d, C, "num", bad), "EINVAL");
  }
  assertErrno(() => t.setStr(d, C, "num", 5 as unknown as string), "EINVAL");
  assert.equal(d.num, 2147483647);
  // Parsing comes before the state check, as in libblkio's Property::set_str; text that parses
  // still meets the state check.
  assertErrno(() => t.setStr(d, K, "num", "garbage"), "EINVAL");
  assertErrno(() => t.setStr(d, K, "num", "3"), "EBUSY");
});

test("property table: describe() per state, sorted by name", () => {
  const t = fakeTable();
  const created = t.describe(C);
  assert.deepEqual(created.map((p) => p.name), ["cap", "flag", "label", "name", "num", "qsize"]);
  const by = (list: typeof created) => Object.fromEntries(list.map((p) => [p.name, p]));
  const c = by(created), k = by(t.describe(K)), s = by(t.describe(S));
  assert.deepEqual(
    { type: c.cap.type, readable: c.cap.readable, writable: c.cap.writable, settableIn: c.cap.settableIn },
    { type: "uint64", readable: false, writable: false, settableIn: [] },
  );
  assert.equal(c.cap.readableFrom, "connected");
  assert.equal(k.cap.readable, true);
  assert.deepEqual(c.num.settableIn, ["created"]);
  assert.equal(c.num.writable, true);
  assert.equal(k.num.writable, false);
  assert.deepEqual(c.flag.settableIn, ["created", "connected"]);
  assert.equal(k.flag.writable, true);
  assert.equal(s.flag.writable, false);
  assert.equal(c.qsize.readable, false);
  assert.equal(c.qsize.writable, false);
  assert.equal(k.qsize.writable, true);
  assert.equal(c.name.readable, true);
  assert.equal(c.name.type, "str");
  assert.equal(c.name.doc, "driver name");
  for (const p of t.describe(S)) assert.equal(p.writable, false, p.name);
});

// --- Queue.doIo against a scripted fake driver queue ---

interface FakeReq {
  op: OpValue;
  ud: unknown;
  buf: Uint8Array | null;
  iov: readonly Uint8Array[] | null;
}

/** What one enter() call does: submit everything, complete `complete` requests, return `ret`. */
interface Step {
  complete?: number | "all";
  ret?: number;
}

class FakeQueue implements DriverQueue {
  completions!: CompletionBacklog;
  readonly completionFd: number;
  readonly isPollQueue: boolean;
  readonly cap: number;
  prepared: FakeReq[] = [];
  submitted: FakeReq[] = [];
  done: { req: FakeReq; ret: number }[] = [];
  enqueued: unknown[] = [];
  /**
   * userData of requests the driver has no room for yet however few it holds: virtio-blk refuses
   * a request needing more descriptors than are free, where a smaller one would still fit.
   */
  noRoomFor = new Set<unknown>();
  enters: { min: number; timeoutNs: number }[] = [];
  script: Step[] = [];
  unsupportedOp: OpValue | null = null;
  destroyed = 0;
  fdEnabled = true;
  fdUsed = 0;

  constructor(opts: { cap?: number; poll?: boolean; completionFd?: number } = {}) {
    this.cap = opts.cap ?? 64;
    this.isPollQueue = opts.poll ?? false;
    this.completionFd = opts.completionFd ?? -1;
  }

  get inFlight(): number {
    return this.prepared.length + this.submitted.length + this.done.length;
  }

  get pendingSubmit(): number {
    return this.prepared.length;
  }

  tryEnqueue(
    op: OpValue,
    _start: number,
    buf: Uint8Array | null,
    iov: readonly Uint8Array[] | null,
    _len: number,
    ud: unknown,
  ): boolean {
    if (this.inFlight >= this.cap || this.noRoomFor.has(ud)) return false;
    this.enqueued.push(ud);
    if (op === this.unsupportedOp) {
      this.completions.push(ud, -ENOTSUP, "request not supported for this driver");
      return true;
    }
    this.prepared.push({ op, ud, buf, iov });
    return true;
  }

  /** The device finishes `k` submitted requests on its own (no enter). */
  finish(k: number | "all", ret = 0): void {
    const n = k === "all" ? this.submitted.length : Math.min(k, this.submitted.length);
    for (const req of this.submitted.splice(0, n)) this.done.push({ req, ret });
  }

  reap(out: Completion[], n: number, max: number): number {
    while (n < max && this.done.length > 0) {
      const { req, ret } = this.done.shift()!;
      // The driver contract: the request is released first, then delivered; stop on refusal.
      if (!this.completions.deliver(out, n, req.ud, ret, null)) break;
      n++;
    }
    return n;
  }

  enter(min: number, timeoutNs: number): number {
    this.enters.push({ min, timeoutNs });
    this.submitted.push(...this.prepared.splice(0));
    const step = this.script.shift() ?? { complete: "all" };
    this.finish(step.complete ?? 0);
    return step.ret ?? 0;
  }

  useCompletionFd(): void {
    this.fdUsed++;
  }

  setCompletionFdEnabled(enabled: boolean): void {
    this.fdEnabled = enabled;
  }

  usesBuffer(buffer: ArrayBufferLike): boolean {
    const all = [...this.prepared, ...this.submitted, ...this.done.map((d) => d.req)];
    return all.some((r) => r.buf?.buffer === buffer || (r.iov ?? []).some((b) => b.buffer === buffer));
  }

  cancel(userData: unknown): boolean {
    return [...this.prepared, ...this.submitted].some((r) => r.ud === userData);
  }

  destroy(): void {
    this.destroyed++;
  }
}

const NO_NATIVE = {} as unknown as Native;

function queueWith(opts: ConstructorParameters<typeof FakeQueue>[0] = {}): { q: Queue; dq: FakeQueue } {
  const dq = new FakeQueue(opts);
  return { q: newQueue(NO_NATIVE, dq), dq };
}

function uds(out: Completion[], n: number): unknown[] {
  return out.slice(0, n).map((c) => c.userData);
}

const buf = () => new Uint8Array(new ArrayBuffer(8));

test("queue: requests go to the driver in order and complete through doIo", () => {
  const { q, dq } = queueWith();
  for (let i = 0; i < 5; i++) q.read(i * 8, buf(), i);
  assert.deepEqual(dq.enqueued, [0, 1, 2, 3, 4]);
  const out: Completion[] = [];
  assert.equal(q.doIo(out, 5), 5);
  assert.deepEqual(uds(out, 5), [0, 1, 2, 3, 4]);
  assert.equal(dq.enters.length, 1);
  assert.equal(dq.enters[0].min, 5);
  assert.equal(dq.enters[0].timeoutNs, -1);
  // Nothing outstanding: min 0 returns at once without entering the kernel.
  assert.equal(q.doIo(out, 0), 0);
  assert.equal(dq.enters.length, 1);
});

test("queue: ETIME from enter loses no completion", () => {
  const { q, dq } = queueWith();
  for (const x of ["a", "b", "c"]) q.read(0, buf(), x);
  dq.script.push({ complete: 1, ret: -ETIME });
  const out: Completion[] = [];
  assertErrno(() => q.doIo(out, 3, 3, 1_000_000), "ETIME");
  // The one reaped before the timeout comes first, without waiting.
  const n = q.doIo(out, 1, 3);
  assert.deepEqual(uds(out, n), ["a"]);
  assert.equal(q.doIo(out, 2, 2), 2);
  assert.deepEqual(uds(out, 2), ["b", "c"]);
  assertErrno(() => q.doIo(out, 1, 1), "EINVAL");
});

test("queue: a timeout of 0 expires with ETIME when too few completed, keeping them", () => {
  const { q, dq } = queueWith();
  for (const x of ["a", "b"]) q.read(0, buf(), x);
  dq.script.push({ complete: 1, ret: 0 });
  const out: Completion[] = [];
  assertErrno(() => q.doIo(out, 2, 2, 0), "ETIME");
  assert.equal(dq.enters[0].timeoutNs, 0);
  assert.equal(q.doIo(out, 2, 2), 2);
  assert.deepEqual(uds(out, 2), ["a", "b"]);
  // ETIME with enough completions already is success.
  q.read(0, buf(), "c");
  dq.script.push({ complete: "all", ret: -ETIME });
  assert.equal(q.doIo(out, 1, 1, 5), 1);
  assert.deepEqual(uds(out, 1), ["c"]);
});

test("queue: EINTR is retried by doIo and thrown by doIoInterruptible, nothing lost", () => {
  const { q, dq } = queueWith();
  for (const x of ["a", "b"]) q.read(0, buf(), x);
  dq.script.push({ complete: 0, ret: -EINTR }, { complete: 0, ret: -EINTR });
  const out: Completion[] = [];
  assert.equal(q.doIo(out, 2), 2);
  assert.deepEqual(uds(out, 2), ["a", "b"]);
  assert.equal(dq.enters.length, 3);

  for (const x of ["c", "d", "e"]) q.read(0, buf(), x);
  dq.script.push({ complete: 1, ret: -EINTR });
  assertErrno(() => q.doIoInterruptible(out, 3, 3), "EINTR");
  const n = q.doIoInterruptible(out, 3, 3);
  assert.equal(n, 3);
  assert.deepEqual(uds(out, 3), ["c", "d", "e"]);
});

test("queue: a doIo that throws leaves out as it was, so a retry with the same arguments works", () => {
  const { q, dq } = queueWith();
  for (const x of ["a", "b", "c"]) q.read(0, buf(), x);
  dq.script.push({ complete: 1, ret: -ETIME }, { complete: 1, ret: -ETIME });
  const out: Completion[] = [];
  assertErrno(() => q.doIo(out, 3, undefined, 1000), "ETIME");
  assert.equal(out.length, 0);
  assertErrno(() => q.doIo(out, 3, undefined, 1000), "ETIME");
  assert.equal(out.length, 0);
  assert.equal(q.doIo(out, 3, undefined, 1000), 3);
  assert.deepEqual(uds(out, 3), ["a", "b", "c"]);
  // A preallocated array keeps its length and objects either way.
  const pre = [newCompletion(), newCompletion()];
  const objs = [...pre];
  q.read(0, buf(), "d");
  dq.script.push({ complete: 0, ret: -EINTR });
  assertErrno(() => q.doIoInterruptible(pre, 2), "EINVAL");
  assertErrno(() => q.doIoInterruptible(pre, 1), "EINTR");
  assert.equal(pre.length, 2);
  assert.equal(q.doIoInterruptible(pre, 1), 1);
  assert.deepEqual([pre[0], pre[1]], objs);
});

test("queue: other enter errors are thrown with their errno, nothing lost", () => {
  const { q, dq } = queueWith();
  for (const x of ["a", "b"]) q.read(0, buf(), x);
  dq.script.push({ complete: 1, ret: -EBUSY });
  const out: Completion[] = [];
  assertErrno(() => q.doIo(out, 2), "EBUSY");
  assert.equal(out.length, 0);
  assert.equal(q.doIo(out, 2), 2);
  assert.deepEqual(uds(out, 2), ["a", "b"]);
});

test("queue: min > outstanding → EINVAL with nothing lost", () => {
  const { q, dq } = queueWith();
  const out: Completion[] = [];
  assertErrno(() => q.doIo(out, 1), "EINVAL", /outstanding/);
  q.read(0, buf(), "bad", 0x100); // library-made completion
  q.read(0, buf(), "r1");
  q.read(0, buf(), "r2");
  q.doIo(out, 0, 0); // submits
  dq.finish("all"); // the device completes both before the next doIo
  assertErrno(() => q.doIo(out, 4), "EINVAL", /outstanding/);
  assertErrno(() => q.doIo(out, 10, 10), "EINVAL");
  const n = q.doIo(out, 3);
  assert.equal(n, 3);
  assert.deepEqual(uds(out, 3), ["bad", "r1", "r2"]);
  assert.equal(out[0].ret, -EINVAL);
  assert.equal(out[0].errorMsg, "unsupported bits in request flags");
  assertErrno(() => q.doIo(out, 1), "EINVAL");
});

test("queue: FIFO through the request backlog when the driver refuses", () => {
  const { q, dq } = queueWith({ cap: 2 });
  for (let i = 0; i < 4; i++) q.read(0, buf(), i);
  assert.deepEqual(dq.enqueued, [0, 1]);
  const out: Completion[] = [];
  // One reaped frees a slot: the backlog moves, in order.
  assert.equal(q.doIo(out, 1, 1), 1);
  assert.deepEqual(uds(out, 1), [0]);
  assert.deepEqual(dq.enqueued, [0, 1, 2]);
  // The driver is full again with 3 still waiting: new requests join the backlog behind it (the
  // driver having room for one while the backlog is not empty is the next test).
  q.read(0, buf(), 4);
  q.flush(5);
  assert.deepEqual(dq.enqueued, [0, 1, 2]);
  // min counts requests still in the backlog: this must wait, not fail with EINVAL.
  assert.equal(q.doIo(out, 5, 5), 5);
  assert.deepEqual(uds(out, 5), [1, 2, 3, 4, 5]);
  assert.deepEqual(dq.enqueued, [0, 1, 2, 3, 4, 5]);
});

// With a driver limited by count, a request behind the backlog never finds room anyway. One the
// driver refuses by size (virtio: descriptors) leaves room for a smaller request behind it, which
// must still wait its turn rather than go straight to the driver, ahead of the one refused.
test("queue: a request does not overtake one waiting in the backlog, even when the driver has room for it", () => {
  const { q, dq } = queueWith({ cap: 8 });
  dq.noRoomFor.add("big");
  q.read(0, buf(), "first");
  q.readv(0, [buf(), buf(), buf()], "big"); // refused: waits in the backlog
  q.read(0, buf(), "small"); // the driver would take it
  assert.deepEqual(dq.enqueued, ["first"]);
  dq.noRoomFor.delete("big");
  const out: Completion[] = [];
  assert.equal(q.doIo(out, 3, 3), 3);
  assert.deepEqual(uds(out, 3), ["first", "big", "small"]);
  assert.deepEqual(dq.enqueued, ["first", "big", "small"]);
});

// A cancel leaves a mark in the request backlog. A grow while it is there must not leave the
// backlog's length short: the last waiting request would never reach the driver, and doIo would
// fail with EINVAL while it still waited.
test("queue: after a cancel in the backlog and a grow, every request reaches the driver; then min 1 is EINVAL", () => {
  const { q, dq } = queueWith({ cap: 1 });
  for (let i = 0; i < 65; i++) q.read(0, buf(), i); // 1 in the driver, 64 fill the backlog
  assert.equal(q.cancel(30), true);
  q.read(0, buf(), 65); // the mark still holds a slot: the backlog grows
  const got = reapAllFrom(q, 66);
  assert.deepEqual([...got].sort((a, b) => (a as number) - (b as number)), [...Array(66).keys()]);
  assert.deepEqual(dq.enqueued, [...Array(66).keys()].filter((i) => i !== 30));
  // Nothing outstanding: EINVAL at once (the timeout only bounds a spin).
  assertErrno(() => q.doIo([], 1, 1, 1_000_000_000), "EINVAL");
});

test("queue: many more requests than the driver holds, reaped in small batches", () => {
  const { q, dq } = queueWith({ cap: 3 });
  const total = 200;
  for (let i = 0; i < total; i++) q.write(0, buf(), i);
  const seen: unknown[] = [];
  const out: Completion[] = [newCompletion(), newCompletion()];
  while (seen.length < total) {
    const n = q.doIo(out, 1);
    assert.ok(n >= 1 && n <= 2);
    seen.push(...uds(out, n));
  }
  assert.deepEqual(seen, [...Array(total).keys()]);
  assert.deepEqual(dq.enqueued, seen);
});

test("queue: library-made completions come out in order, each once", () => {
  const { q, dq } = queueWith();
  dq.unsupportedOp = Op.Discard;
  q.read(0, buf(), "g1");
  q.read(0, buf(), "b1", ReqFlags.FUA);
  q.discard(0, 512, "d1");
  q.write(0, buf(), "g2", ReqFlags.FUA);
  q.flush("b2", ReqFlags.NO_UNMAP);
  q.writeZeroes(0, 512, "b3", 1 << 5);
  q.discard(0, 512, "d2");
  const all = [];
  const out: Completion[] = [];
  while (all.length < 7) {
    const n = q.doIo(out, 1);
    for (let i = 0; i < n; i++) all.push({ ...out[i] });
  }
  const order = all.map((c) => c.userData);
  assert.equal(new Set(order).size, 7);
  const lib = order.filter((u) => typeof u === "string" && /^[bd]/.test(u));
  assert.deepEqual(lib, ["b1", "d1", "b2", "b3", "d2"]);
  assert.ok(order.indexOf("g1") < order.indexOf("g2"));
  const by = Object.fromEntries(all.map((c) => [c.userData as string, c]));
  assert.equal(by.b1.errorMsg, "BLKIO_REQ_FUA is invalid for this request type");
  assert.equal(by.b2.errorMsg, "BLKIO_REQ_NO_UNMAP is invalid for this request type");
  assert.equal(by.b3.errorMsg, "unsupported bits in request flags");
  assert.equal(by.d1.ret, -ENOTSUP);
  assert.equal(by.d1.errorMsg, "request not supported for this driver");
  assert.equal(by.g2.ret, 0);
  assert.equal(by.g2.errorMsg, null);
});

test("queue: doIo argument checks", () => {
  const { q } = queueWith();
  q.read(0, buf(), "x");
  const out: Completion[] = [];
  assertErrno(() => q.doIo(null as unknown as Completion[], 0), "EINVAL");
  assertErrno(() => q.doIo(out, -1), "EINVAL");
  assertErrno(() => q.doIo(out, 1.5), "EINVAL");
  assertErrno(() => q.doIo(out, "1" as unknown as number), "EINVAL");
  assertErrno(() => q.doIo(out, 2, 1), "EINVAL");
  assertErrno(() => q.doIo(out, 0, -1), "EINVAL");
  assertErrno(() => q.doIo(out, 0, 1, -1), "EINVAL");
  assertErrno(() => q.doIo(out, 0, 1, NaN), "EINVAL");
  assertErrno(() => q.doIo(out, 0, 1, -1n), "EINVAL");
  assertErrno(() => q.doIo(Object.freeze([]) as unknown as Completion[], 0, 1), "EINVAL");
  // A preallocated array bounds max by its length; its objects are reused.
  const pre = [newCompletion()];
  const first = pre[0];
  assert.equal(q.doIo(pre, 1), 1);
  assert.equal(pre[0], first);
  assert.equal(pre.length, 1);
  assert.equal(first.userData, "x");
});

test("queue: an out entry that refuses a completion → EINVAL, and every completion still comes exactly once", () => {
  const throwingSetter = newCompletion();
  Object.defineProperty(throwingSetter, "ret", {
    set() {
      throw new Error("no");
    },
  });
  const refusing = new Proxy(newCompletion(), {
    set() {
      throw new Error("no");
    },
  });
  const frozen = Object.freeze(newCompletion());
  const bad: [string, unknown, RegExp][] = [
    ["frozen", frozen, /out\[2\] must be a writable Completion object: received Object/],
    ["a number", 7, /out\[2\] must be a writable Completion object: received 7/],
    [
      "a Proxy that refuses writes",
      refusing,
      /out\[2\] must be a writable Completion object: received Object/,
    ],
    ["an object whose ret setter throws", throwingSetter, /out\[2\] must be a writable Completion object/],
  ];
  for (const [what, entry, msg] of bad) {
    const { q, dq } = queueWith();
    for (let i = 0; i < 5; i++) q.read(i * 8, buf(), i);
    q.doIo([], 0, 0);
    dq.finish("all");
    const out = [newCompletion(), newCompletion(), entry as Completion, newCompletion(), newCompletion()];
    const before = out.slice();
    assertErrno(() => q.doIo(out, 5, 5), "EINVAL", msg);
    assert.deepEqual(out, before, what);
    // Fixed, the next call returns all five, each once: the refused one was kept, not lost.
    const got = reapAllFrom(q, 5);
    assert.deepEqual(got.sort(), [0, 1, 2, 3, 4], what);
    assert.equal(dq.inFlight, 0, what);
  }
});

test("queue: an out entry that is the same object as an earlier one → EINVAL, and no completion is lost", () => {
  const one = newCompletion();
  const a = newCompletion(), b = newCompletion();
  const many = Array.from({ length: 48 }, newCompletion);
  many[40] = many[3]; // beyond the 32 entries checked by a scan: the set's path
  const cases: [string, number, Completion[], RegExp][] = [
    [
      "an array filled with one object",
      5,
      new Array(5).fill(one),
      /out\[1\] is the same Completion object as out\[0\]/,
    ],
    [
      "an entry repeated further on",
      5,
      [a, b, newCompletion(), a, newCompletion()],
      /out\[3\] is the same Completion object as out\[0\]/,
    ],
    ["the same beyond 32 entries", 48, many, /out\[40\] is the same Completion object as out\[3\]/],
  ];
  for (const [what, count, out, msg] of cases) {
    const { q, dq } = queueWith();
    for (let i = 0; i < count; i++) q.read(i * 8, buf(), i);
    q.doIo([], 0, 0);
    dq.finish("all");
    const before = out.slice();
    assertErrno(() => q.doIo(out, count, count), "EINVAL", msg);
    assert.deepEqual(out, before, `${what}: out as it was`);
    // With distinct entries the next call returns every completion, each once.
    assert.deepEqual(reapAllFrom(q, count).sort((x, y) => (x as number) - (y as number)), [
      ...Array(count).keys(),
    ], what);
    assert.equal(dq.inFlight, 0, what);
  }
  // Completions the queue made itself (from its backlog) are checked the same way.
  const { q, dq } = queueWith();
  dq.unsupportedOp = Op.Discard;
  q.discard(0, 8, "made 1");
  q.discard(8, 8, "made 2");
  assertErrno(() => q.doIo([one, one], 2, 2), "EINVAL", /out\[1\] is the same Completion object as out\[0\]/);
  const out: Completion[] = [];
  assert.equal(q.doIo(out, 2), 2);
  assert.deepEqual(uds(out, 2), ["made 1", "made 2"]);
  // Beyond 32 entries too, with the entries moved around between calls (a set that kept the
  // last call's entries would see the moved ones as repeated).
  const big = Array.from({ length: 40 }, newCompletion);
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 40; i++) q.read(i * 8, buf(), round * 100 + i);
    assert.equal(q.doIo(big, 40, 40), 40);
    assert.deepEqual(uds(big, 40), Array.from({ length: 40 }, (_, i) => round * 100 + i));
    big.push(...big.splice(0, 7));
  }
  // The same array again in the next call is fine: only entries of one call must differ.
  const reused = [newCompletion(), newCompletion()];
  for (let round = 0; round < 3; round++) {
    q.read(0, buf(), `r${round}a`);
    q.read(8, buf(), `r${round}b`);
    assert.equal(q.doIo(reused, 2, 2), 2);
    assert.deepEqual(uds(reused, 2), [`r${round}a`, `r${round}b`]);
  }
});

test("queue: a completion from the backlog that an out entry refuses stays first in line", () => {
  const { q, dq } = queueWith();
  dq.unsupportedOp = Op.Discard;
  q.discard(0, 8, "made");
  q.read(0, buf(), "read");
  q.doIo([], 0, 0);
  dq.finish("all");
  assertErrno(() => q.doIo([Object.freeze(newCompletion())], 1, 1), "EINVAL", /out\[0\]/);
  // A frozen array with a hole cannot take a new Completion either.
  // deno-lint-ignore no-sparse-arrays
  assertErrno(
    () => q.doIo(Object.freeze([,]) as unknown as Completion[], 1, 1),
    "EINVAL",
    /out\[0\].*received undefined/,
  );
  const out: Completion[] = [];
  assert.equal(q.doIo(out, 2), 2);
  assert.deepEqual(uds(out, 2), ["made", "read"]);
});

/** Reaps `count` completions one doIo at a time; returns their userData. */
function reapAllFrom(q: Queue, count: number): unknown[] {
  const got: unknown[] = [];
  const out: Completion[] = [];
  while (got.length < count) {
    const n = q.doIo(out, 1);
    got.push(...uds(out, n));
  }
  return got;
}

test("queue: poll queues enter once for min 0, and refuse doIoInterruptible", () => {
  const { q, dq } = queueWith({ poll: true });
  assert.equal(q.isPollQueue, true);
  const out: Completion[] = [];
  assert.equal(q.doIo(out, 0), 0);
  assert.equal(dq.enters.length, 1);
  assert.equal(dq.enters[0].min, 0);
  q.read(0, buf(), "p");
  assertErrno(() => q.doIoInterruptible(out, 1), "ENOTSUP");
  assert.equal(q.doIo(out, 1), 1);
  assert.deepEqual(uds(out, 1), ["p"]);
});

test("queue: completions the library makes signal the completion fd", () => {
  const writes: { fd: number; value: number; len: bigint }[] = [];
  const fake = {
    alloc: (n: number) => new Uint8Array(new ArrayBuffer(n)),
    libc: {
      write: (fd: number, b: Uint8Array, len: bigint) => {
        writes.push({
          fd,
          value: new DataView(b.buffer, b.byteOffset).getBigUint64(0, true) as unknown as number,
          len,
        });
        return len;
      },
    },
  } as unknown as Native;
  const dq = new FakeQueue({ completionFd: 42 });
  const q = newQueue(fake, dq);
  q.read(0, buf(), "bad", 0x40);
  q.read(0, buf(), "good");
  assert.equal(writes.length, 1);
  assert.deepEqual(writes[0], { fd: 42, value: 1n, len: 8n });
  q.setCompletionFdEnabled(false);
  assert.equal(dq.fdEnabled, false);
  assertErrno(() => q.setCompletionFdEnabled("no" as unknown as boolean), "EINVAL");
  assert.equal(dq.fdUsed, 0, "the library's own writes do not make the driver signal the fd");
  assert.equal(q.completionFd, 42);
  assert.equal(dq.fdUsed, 1, "taking the fd tells the driver to signal it");
});

test("queue: usesBuffer covers requests in the driver and in the backlog", () => {
  const { q } = queueWith({ cap: 1 });
  const a = buf(), b = buf(), c = buf();
  q.read(0, a, "a"); // in the driver
  q.readv(0, [b.subarray(2)], "b"); // in the backlog
  assert.ok(queueUsesBuffer(q, a.buffer));
  assert.ok(queueUsesBuffer(q, b.buffer));
  assert.ok(!queueUsesBuffer(q, c.buffer));
  assert.equal(q.doIo([], 2), 2);
  assert.ok(!queueUsesBuffer(q, a.buffer));
  assert.ok(!queueUsesBuffer(q, b.buffer));
});

test("queue: shutting a queue down is the instance's, not a public method", () => {
  // A public q.close("x") looked like API and shut the queue down for good.
  const { q } = queueWith();
  for (const name of ["close", "usesBuffer"]) assert.equal(name in q, false, `Queue has ${name}`);
});

test("queue: a closed queue throws EBADF with the reason, and closes its driver queue once", () => {
  const { q, dq } = queueWith();
  closeQueue(q, "The queue has been removed");
  closeQueue(q, "again");
  assert.equal(dq.destroyed, 1);
  assertErrno(() => q.read(0, buf()), "EBADF", /removed/);
  assertErrno(() => q.flush(), "EBADF");
  assertErrno(() => q.doIo([], 0), "EBADF");
  assertErrno(() => q.completionFd, "EBADF");
  assert.equal(queueUsesBuffer(q, new ArrayBuffer(1)), false);
});

// --- O_DIRECT by architecture ---------------------------------------------------------------

test("sys: O_DIRECT has each architecture's own value (arm64 would otherwise get O_DIRECTORY)", () => {
  assert.equal(oDirectFor("x86_64"), 0o40000);
  assert.equal(oDirectFor("aarch64"), 0o200000);
  assert.equal(oDirectFor("riscv64"), 0o40000);
  assert.equal(oDirectFor("ppc64le"), null, "big-endian: the structs are read little-endian, not supported");
  assert.equal(oDirectFor("sparc64"), null);
  assert.equal(oDirectFor("constructor"), null, "no inherited keys");
  assert.throws(
    () => oDirect({ arch: "sparc64" } as unknown as Native),
    (e: unknown) => e instanceof BlkioError && e.code === "ENOTSUP" && /sparc64/.test(e.message),
  );
});

// open(2) and statx(2) read the path up to a NUL: without one in its own allocation, they read on
// into whatever memory follows.
test("sys: cString ends the string with a NUL of its own", () => {
  const native = { alloc: (len: number) => new Uint8Array(new ArrayBuffer(len)) } as unknown as Native;
  const bytes = new TextEncoder().encode("/dev/disk/by-id/é");
  const c = cString(native, "/dev/disk/by-id/é");
  assert.equal(c.length, bytes.length + 1);
  assert.deepEqual(c.subarray(0, bytes.length), bytes);
  assert.equal(c[bytes.length], 0);
});

// io_uring_prep_cmd_discard: the length is a u64 in addr3; a discard of 4 GiB or more must keep
// its upper half (else 2^32 + 4096 bytes discard 4096, and exactly 4 GiB discards nothing).
test("sqe: prepCmdDiscard writes the 64-bit length (and offset) in both halves", () => {
  const sqes = new Uint32Array(16 * 2);
  const len = 2 ** 32 + 4096, offset = 3 * 2 ** 32 + 512;
  prepCmdDiscard(sqes, 1, 7, offset, len);
  const b = 16;
  assert.equal(sqes[b + 1], 7, "fd");
  assert.equal(sqes[b + 4] + sqes[b + 5] * 2 ** 32, offset, "offset in addr");
  assert.equal(sqes[b + 12], 4096, "len, lower half");
  assert.equal(sqes[b + 13], 1, "len, upper half");
});

// sync_file_range and fadvise take a 32-bit length: a range of 4 GiB or more goes to the end of
// the file (length 0), as documented, never the length modulo 2^32 (the write-back before a
// write zeroes of 4 GiB + 4 KiB covered 4 KiB).
test("sqe: prepSyncFileRange/prepFadvise turn a length of 2^32 or more into 0 (to the end)", () => {
  const sqes = new Uint32Array(16);
  for (
    const prep of [
      (len: number) => prepSyncFileRange(sqes, 0, 3, 8192, len),
      (len: number) => prepFadvise(sqes, 0, 3, 8192, len, 4),
    ]
  ) {
    prep(4096);
    assert.equal(sqes[6], 4096);
    prep(2 ** 32 + 4096);
    assert.equal(sqes[6], 0, "a length past 32 bits must become 0 (to the end of the file)");
    prep(2 ** 32);
    assert.equal(sqes[6], 0);
    assert.equal(sqes[2], 8192, "offset");
  }
});
