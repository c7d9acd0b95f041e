// The split virtqueue of the virtio-blk-vhost-user driver, with the device played by the test:
// layout, descriptor chains, the available and used rings, index wrap-around, notification
// flags, and a device returning a descriptor that is not in flight; the status byte a device
// writes as a virtio-blk queue's completion; the memory table's lookup. Needs no back-end.
import { test } from "node:test";
import assert from "./_assert.ts";
import { SplitVirtqueue, vringLayout } from "../src/drivers/virtio_blk/virtqueue.ts";
import { MemTable } from "../src/drivers/virtio_blk/mem_table.ts";
import { VirtioBlkQueue } from "../src/drivers/virtio_blk/queue.ts";
import type { VhostUserClient } from "../src/drivers/virtio_blk/vhost_user.ts";
import { type Completion, Op } from "../src/completion.ts";
import { CompletionBacklog } from "../src/completion_backlog.ts";
import { newEventfd } from "../src/sys.ts";
import { native } from "../ffi/load.ts";

const BASE = 0x7f0000000000; // a plausible mapping address (above 2^32, below 2^53)

/** The device's view of one queue over the same memory. */
class FakeDevice {
  readonly #v: DataView;
  readonly #l: ReturnType<typeof vringLayout>;
  #lastAvail = 0;
  #usedIdx = 0;
  /** The head descriptor of each chain {@link takeAvail} has returned, in order. */
  readonly heads: number[] = [];

  constructor(mem: Uint8Array, size: number) {
    this.#v = new DataView(mem.buffer, mem.byteOffset, mem.byteLength);
    this.#l = vringLayout(size);
  }

  /** Chains made available since the last call: each a list of [addr, len, writable]. */
  takeAvail(): [number, number, boolean][][] {
    const v = this.#v, l = this.#l;
    const idx = v.getUint16(l.avail + 2, true);
    const chains: [number, number, boolean][][] = [];
    while (this.#lastAvail !== idx) {
      let d = v.getUint16(l.avail + 4 + 2 * (this.#lastAvail % l.size), true);
      this.heads.push(d);
      const chain: [number, number, boolean][] = [];
      for (;;) {
        const o = l.desc + 16 * d;
        const flags = v.getUint16(o + 12, true);
        chain.push([Number(v.getBigUint64(o, true)), v.getUint32(o + 8, true), (flags & 2) !== 0]);
        if ((flags & 1) === 0) break;
        d = v.getUint16(o + 14, true);
      }
      chains.push(chain);
      this.#lastAvail = (this.#lastAvail + 1) & 0xffff;
    }
    return chains;
  }

  /** Returns chain `head` with `len` bytes written. */
  use(head: number, len: number): void {
    const v = this.#v, l = this.#l;
    const e = l.used + 4 + 8 * (this.#usedIdx % l.size);
    v.setUint32(e, head, true);
    v.setUint32(e + 4, len, true);
    this.#usedIdx = (this.#usedIdx + 1) & 0xffff;
    v.setUint16(l.used + 2, this.#usedIdx, true);
  }

  setNoNotify(on: boolean): void {
    this.#v.setUint16(this.#l.used, on ? 1 : 0, true);
  }

  get availFlags(): number {
    return this.#v.getUint16(this.#l.avail, true);
  }
}

function make(size: number): { vq: SplitVirtqueue; dev: FakeDevice; mem: Uint8Array } {
  const mem = new Uint8Array(new ArrayBuffer(vringLayout(size).total));
  return { vq: new SplitVirtqueue(mem, BASE, size), dev: new FakeDevice(mem, size), mem };
}

test("virtqueue: layout is aligned as virtio 1.x requires and fits the header slots", () => {
  for (const size of [1, 2, 16, 256, 1024, 32768]) {
    const l = vringLayout(size);
    assert.equal(l.desc % 16, 0);
    assert.equal(l.avail, 16 * size);
    assert.equal(l.used % 4, 0);
    assert.ok(l.used >= l.avail + 6 + 2 * size, "used ring after the avail ring and used_event");
    assert.ok(l.headers >= l.used + 6 + 8 * size, "headers after the used ring and avail_event");
    assert.equal(l.total % 4096, 0);
    assert.ok(l.total >= l.headers + 64 * size);
  }
});

test("virtqueue: chains reach the device with addresses, lengths, directions; used entries free them", () => {
  const { vq, dev } = make(8);
  assert.equal(vq.descAddr, BASE);
  assert.equal(vq.numFree, 8);
  vq.push(BASE + 0x1000, 16, false);
  vq.push(2 ** 40 + 7, 4096, true); // a 64-bit address, odd
  vq.push(BASE + 0x1020, 1, true);
  const head = vq.commit();
  assert.equal(vq.numFree, 5);
  assert.equal(vq.unpublished, 1);
  assert.deepEqual(dev.takeAvail(), [], "nothing visible before publish");
  assert.equal(vq.publish(), true, "the device wants a kick");
  assert.equal(vq.unpublished, 0);
  const [chain] = dev.takeAvail();
  assert.deepEqual(chain.slice(), [[BASE + 0x1000, 16, false], [2 ** 40 + 7, 4096, true], [
    BASE + 0x1020,
    1,
    true,
  ]]);
  assert.equal(vq.usedPending, 0);
  assert.equal(vq.popUsed(), -1);
  dev.use(head, 4097);
  assert.equal(vq.usedPending, 1);
  assert.equal(vq.popUsed(), head);
  assert.equal(vq.lastUsedLen, 4097);
  assert.equal(vq.numFree, 8);
  assert.equal(vq.popUsed(), -1);
});

test("virtqueue: out-of-order completion and 70,000 requests across the 16-bit index wrap", () => {
  const { vq, dev } = make(16);
  let inFlight: number[] = [];
  let done = 0;
  for (let round = 0; done < 70_000; round++) {
    while (vq.numFree >= 3) {
      vq.push(BASE, 16, false);
      vq.push(BASE + 64, 512, true);
      vq.push(BASE + 32, 1, true);
      inFlight.push(vq.commit());
    }
    vq.publish();
    const chains = dev.takeAvail();
    assert.equal(chains.length, inFlight.length);
    // The device returns them in reverse, a different order each round.
    const order = round % 2 ? inFlight.slice().reverse() : inFlight.slice();
    for (const h of order) dev.use(h, 513);
    for (let k = 0; k < order.length; k++) {
      const h = vq.popUsed();
      assert.equal(h, order[k]);
      done++;
    }
    inFlight = [];
    assert.equal(vq.numFree, 16);
  }
});

test("virtqueue: notification flags in both directions", () => {
  const { vq, dev } = make(4);
  vq.push(BASE, 16, false);
  vq.push(BASE + 16, 1, true);
  vq.commit();
  dev.setNoNotify(true);
  assert.equal(vq.publish(), false, "the device is polling: no kick");
  assert.equal(vq.publish(), false, "nothing new to publish");
  dev.setNoNotify(false);
  vq.push(BASE, 16, false);
  vq.push(BASE + 16, 1, true);
  vq.commit();
  assert.equal(vq.publish(), true);
  assert.equal(vq.interrupts, true);
  vq.setInterrupts(false);
  assert.equal(dev.availFlags, 1);
  assert.equal(vq.interrupts, false);
  vq.setInterrupts(true);
  assert.equal(dev.availFlags, 0);
});

test("virtqueue: a device returning a descriptor not in flight is detected", () => {
  const { vq, dev } = make(4);
  vq.push(BASE, 16, false);
  vq.push(BASE + 16, 1, true);
  const head = vq.commit();
  vq.publish();
  dev.takeAvail();
  dev.use(3, 0); // never handed out as a head
  assert.throws(() => vq.popUsed(), RangeError);
  // One past the last descriptor: no chain's length is recorded there, and taking it as one would
  // put a descriptor that does not exist on the free list.
  dev.use(4, 0);
  assert.throws(() => vq.popUsed(), RangeError);
  assert.equal(vq.numFree, 2, "nothing was freed");
  dev.use(head, 1);
  assert.equal(vq.popUsed(), head);
  dev.use(head, 1); // twice
  assert.throws(() => vq.popUsed(), RangeError);
});

// The device says how a request went in the status byte at the end of its chain: VIRTIO_BLK_S_UNSUPP
// is a request the device does not do (-ENOTSUP, which callers may handle by doing without), not
// an I/O error (-EIO, for IOERR and any value virtio does not define).
test("virtio-blk queue: the status byte the device writes is the completion (UNSUPP is -ENOTSUP)", () => {
  const { vq, dev, mem } = make(8);
  const conn = {
    brokenReason: null,
    hungUpReason: null,
    socketFd: -1,
    checkHangup: () => false,
    markBroken: () => {},
    markHungUp: () => {},
    peerState: () => "unknown",
    hungUpAt: -1,
  };
  const q = new VirtioBlkQueue(native!, {
    index: 0,
    poll: true,
    vq,
    kickFd: newEventfd(native!),
    callFd: newEventfd(native!),
    device: {
      readOnly: false,
      flush: true,
      discard: false,
      writeZeroes: false,
      requestAlignment: 512,
      maxSegments: 0,
      maxSegmentLen: 0,
      maxTransfer: 2 ** 31 - 512,
      discardChunk: 1 << 20,
      capacity: 1 << 30,
      writeZeroesChunk: 1 << 20,
    },
    memTable: new MemTable(),
    conn: conn as unknown as VhostUserClient,
    onDestroy: () => {},
    drainDeadline: () => performance.now() + 1000,
  });
  q.completions = new CompletionBacklog();
  const EIO = -5, ENOTSUP = -95;
  const cases: [number, number, RegExp | null][] = [
    [0, 0, null],
    [1, EIO, /I\/O error/],
    [2, ENOTSUP, /does not support this request/],
    [7, EIO, /invalid status \(7\)/],
  ];
  for (const [status, ret, msg] of cases) {
    assert.equal(q.tryEnqueue(Op.Flush, 0, null, null, 0, status, 0), true);
    q.enter(0, -1); // publishes
    const [chain] = dev.takeAvail();
    const [statusAddr, len, writable] = chain[chain.length - 1];
    assert.ok(len === 1 && writable, "the chain ends with the status byte");
    mem[statusAddr - BASE] = status;
    dev.use(dev.heads[dev.heads.length - 1], 1);
    const out: Completion[] = [];
    assert.equal(q.reap(out, 0, 1), 1);
    assert.equal(out[0].userData, status);
    assert.equal(out[0].ret, ret, `status ${status}`);
    if (msg === null) assert.equal(out[0].errorMsg, null);
    else assert.match(out[0].errorMsg ?? "", msg);
  }
  q.destroy(); // closes the eventfds
});

test("mem table: a range whose memory JS detached no longer counts as mapped", () => {
  // The back-end still maps the old memory; memory at that address since is not it, so a
  // buffer there must be refused (EINVAL), not translated into the old region.
  const table = new MemTable();
  const bytes = new Uint8Array(new ArrayBuffer(8192));
  const own = bytes.buffer;
  const region = { bytes, len: 8192, fd: -1, fdOffset: 0 };
  table.add(region, { addr: BASE, len: 8192, fd: -1, fdOffset: 0 });
  assert.equal(table.contains(own, BASE + 4096, 4096), true);
  assert.equal(table.contains(own, BASE + 4096, 4097), false);
  // Another ArrayBuffer said to be at the same addresses is not the region's memory as far as
  // in-use checks go (they compare ArrayBuffers): refused.
  assert.equal(table.contains(new ArrayBuffer(8192), BASE + 4096, 4096), false);
  (bytes.buffer as ArrayBuffer).transfer(0);
  assert.equal(table.contains(own, BASE + 4096, 4096), false);
  assert.equal(table.contains(own, BASE, 1), false);
  table.remove(region);
  assert.equal(table.size, 0);
});

// A device that returns a chain the driver committed to the available ring but has not published
// (it read past the published index) returns something not in flight: popUsed must refuse it, as
// it refuses unknown ids. Taking it would free descriptors the driver is about to publish.
test("virtqueue: virtqueue: a committed but unpublished chain returned by the device is refused", () => {
  const size = 8;
  const mem = new Uint8Array(new ArrayBuffer(vringLayout(size).total));
  const vq = new SplitVirtqueue(mem, 0x7f0000000000, size);
  const l = vringLayout(size);
  const v = new DataView(mem.buffer);
  const use = (idx: number, head: number) => {
    const e = l.used + 4 + 8 * (idx % size);
    v.setUint32(e, head, true);
    v.setUint32(e + 4, 0, true);
    v.setUint16(l.used + 2, idx + 1, true);
  };
  vq.push(0x7f0000100000, 512, true);
  const a = vq.commit();
  vq.publish();
  vq.push(0x7f0000200000, 512, true);
  const b = vq.commit(); // committed, not published
  assert.equal(vq.unpublished, 1);
  use(0, a);
  assert.equal(vq.popUsed(), a);
  use(1, b);
  assert.throws(() => vq.popUsed(), RangeError, "popUsed took back a chain that was never published");
});

// A used index moved by more than the device has chains: the entries in between hold stale heads
// (zeroes on a fresh ring), and descriptor 0, the first chain's head, is the next chain's too
// (freed first onto the free list). Taken as entries, they returned the next chain before the
// device had seen it, its buffers handed back while the device was yet to write them (review-74).
test("virtqueue: a used index moved ahead or back of the chains in flight is refused", () => {
  const size = 8;
  for (const move of [+1, -1]) {
    const mem = new Uint8Array(new ArrayBuffer(vringLayout(size).total));
    const vq = new SplitVirtqueue(mem, BASE, size);
    const l = vringLayout(size);
    const v = new DataView(mem.buffer);
    const chain = () => {
      vq.push(BASE + 0x1000, 16, false);
      vq.push(BASE + 0x1010, 1, true);
      const head = vq.commit();
      vq.publish();
      return head;
    };
    const a = chain();
    // The device returns a, and its used index moves one further (or back) than that.
    v.setUint32(l.used + 4, a, true);
    v.setUint16(l.used + 2, move > 0 ? 2 : 1, true);
    const seen: number[] = [];
    assert.throws(() => {
      seen.push(vq.popUsed());
      if (move < 0) v.setUint16(l.used + 2, 0, true); // back to before a
      const b = chain();
      assert.equal(b, a, "the next chain has the same head");
      seen.push(vq.popUsed());
    }, RangeError);
    assert.ok(seen.length <= 1, `the chain the device has not seen came back: ${JSON.stringify(seen)}`);
  }
});
