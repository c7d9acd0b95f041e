/**
 * A split virtqueue (virtio 1.x §2.7) in memory shared with the device: the descriptor table,
 * the available ring the driver fills and the used ring the device fills, plus one small
 * request-header slot per entry (virtio-blk's out header, discard/write-zeroes segment and
 * status byte must also lie in memory the device can reach).
 *
 * Fields are read and written through typed arrays over the shared mapping; virtio 1.x is
 * little-endian, as are the hosts this runs on (x86_64, arm64). The available index is
 * published and the used index read with Atomics, which orders them against the plain
 * descriptor and ring accesses around them.
 *
 * @module
 */

/** Descriptor flags. */
const DESC_F_NEXT = 1;
const DESC_F_WRITE = 2;
/** Available ring flag: the driver does not want used-buffer notifications. */
const AVAIL_F_NO_INTERRUPT = 1;
/** Used ring flag: the device does not want available-buffer notifications (kicks). */
const USED_F_NO_NOTIFY = 1;

/** Bytes of request-header memory per queue entry (out header, segment, status byte). */
export const HEADER_SLOT_SIZE = 64;
/** Offsets inside a header slot. */
export const HEADER_OUTHDR = 0;
export const HEADER_SEGMENT = 16;
export const HEADER_STATUS = 32;

/** The virtio maximum queue size. */
export const MAX_QUEUE_SIZE = 32768;

/** Where each part of a queue of `size` entries lies, relative to the queue's base. */
export interface VringLayout {
  size: number;
  desc: number;
  avail: number;
  used: number;
  headers: number;
  /** Bytes the queue takes, a multiple of 4096. */
  total: number;
}

const align = (n: number, a: number): number => Math.ceil(n / a) * a;

/** The memory layout of a queue of `size` entries (a power of two). */
export function vringLayout(size: number): VringLayout {
  const desc = 0;
  const avail = desc + 16 * size;
  // flags, idx, ring[size], used_event
  const used = align(avail + 4 + 2 * size + 2, 64);
  // flags, idx, ring[size] of {id, len}, avail_event
  const headers = align(used + 4 + 8 * size + 2, 64);
  const total = align(headers + HEADER_SLOT_SIZE * size, 4096);
  return { size, desc, avail, used, headers, total };
}

/** One split virtqueue over `mem` (which starts at native address `addr`). */
export class SplitVirtqueue {
  readonly size: number;
  /** Native addresses of the three parts, for SET_VRING_ADDR. */
  readonly descAddr: number;
  readonly availAddr: number;
  readonly usedAddr: number;
  /** Native address and bytes of the request-header slots. */
  readonly headersAddr: number;
  readonly headers: Uint8Array;
  readonly #desc32: Uint32Array;
  readonly #desc16: Uint16Array;
  readonly #avail: Uint16Array;
  readonly #used16: Uint16Array;
  readonly #used32: Uint32Array;
  readonly #mask: number;
  /** Free list and chain links (the driver's copy; the device never changes descriptors). */
  readonly #next: Uint16Array;
  readonly #chainLen: Uint16Array;
  /** The driver's copy of the available ring's entries: the device can write the shared one. */
  readonly #availHeads: Uint16Array;
  /** 1 for the head of a chain added to the available ring and not yet published. */
  readonly #unpublishedHead: Uint8Array;
  #freeHead = 0;
  #numFree: number;
  #availIdx = 0;
  #published = 0;
  #lastUsed = 0;
  /** Chains published and not yet returned: the most used entries the device can have added. */
  #outstanding = 0;
  #chainHead = -1;
  #chainTail = -1;
  #chainCount = 0;
  /** Length the device reported for the last entry {@link popUsed} returned. */
  lastUsedLen = 0;

  constructor(mem: Uint8Array, addr: number, size: number) {
    const l = vringLayout(size);
    if (mem.byteLength < l.total) {
      throw new RangeError(`Virtqueue memory is too small: ${mem.byteLength} < ${l.total}`);
    }
    const ab = mem.buffer, o = mem.byteOffset;
    this.size = size;
    this.#mask = size - 1;
    this.descAddr = addr + l.desc;
    this.availAddr = addr + l.avail;
    this.usedAddr = addr + l.used;
    this.headersAddr = addr + l.headers;
    this.headers = new Uint8Array(ab, o + l.headers, HEADER_SLOT_SIZE * size);
    this.#desc32 = new Uint32Array(ab, o + l.desc, 4 * size);
    this.#desc16 = new Uint16Array(ab, o + l.desc, 8 * size);
    this.#avail = new Uint16Array(ab, o + l.avail, 3 + size);
    this.#used16 = new Uint16Array(ab, o + l.used, 2);
    this.#used32 = new Uint32Array(ab, o + l.used, 1 + 2 * size);
    mem.fill(0, 0, l.total);
    this.#next = new Uint16Array(size);
    for (let i = 0; i < size; i++) this.#next[i] = i + 1;
    this.#chainLen = new Uint16Array(size);
    this.#availHeads = new Uint16Array(size);
    this.#unpublishedHead = new Uint8Array(size);
    this.#numFree = size;
  }

  /** Descriptors not in use. */
  get numFree(): number {
    return this.#numFree;
  }

  /** Entries added to the available ring but not yet published to the device. */
  get unpublished(): number {
    return (this.#availIdx - this.#published) & 0xffff;
  }

  /** Used entries the device has returned that {@link popUsed} has not taken yet. */
  get usedPending(): number {
    return (Atomics.load(this.#used16, 1) - this.#lastUsed) & 0xffff;
  }

  /**
   * Appends one buffer to the chain being built (the caller checked {@link numFree}).
   * `writable`: the device writes it (read data, status) rather than reads it.
   */
  push(addr: number, len: number, writable: boolean): void {
    const d = this.#freeHead;
    // Popping in free-list order means the chain is already linked through #next.
    this.#freeHead = this.#next[d];
    this.#numFree--;
    const i = d << 2;
    this.#desc32[i] = addr >>> 0;
    this.#desc32[i + 1] = (addr / 4294967296) >>> 0;
    this.#desc32[i + 2] = len >>> 0;
    this.#desc16[(d << 3) + 6] = writable ? DESC_F_WRITE : 0;
    if (this.#chainTail >= 0) {
      const t = this.#chainTail << 3;
      this.#desc16[t + 6] |= DESC_F_NEXT;
      this.#desc16[t + 7] = d;
    } else {
      this.#chainHead = d;
    }
    this.#chainTail = d;
    this.#chainCount++;
  }

  /** Ends the chain and adds its head to the available ring (unpublished); returns the head. */
  commit(): number {
    const head = this.#chainHead;
    this.#chainLen[head] = this.#chainCount;
    this.#avail[2 + (this.#availIdx & this.#mask)] = head;
    this.#availHeads[this.#availIdx & this.#mask] = head;
    this.#unpublishedHead[head] = 1;
    this.#availIdx = (this.#availIdx + 1) & 0xffff;
    this.#chainHead = this.#chainTail = -1;
    this.#chainCount = 0;
    return head;
  }

  /**
   * Makes added entries visible to the device. Returns whether the device wants a kick: the
   * Atomics store is a full barrier, so the flag read after it cannot miss the device turning
   * notifications back on after it last looked at the ring.
   */
  publish(): boolean {
    if (this.#availIdx === this.#published) return false;
    for (let i = this.#published; i !== this.#availIdx; i = (i + 1) & 0xffff) {
      this.#unpublishedHead[this.#availHeads[i & this.#mask]] = 0;
    }
    this.#outstanding += (this.#availIdx - this.#published) & 0xffff;
    Atomics.store(this.#avail, 1, this.#availIdx);
    this.#published = this.#availIdx;
    return (Atomics.load(this.#used16, 0) & USED_F_NO_NOTIFY) === 0;
  }

  /**
   * Takes the next used entry: returns its chain head (the descriptors are free again) and
   * sets {@link lastUsedLen}, or returns -1 when there is none. Throws RangeError when the
   * device returns a head that is not in flight.
   */
  popUsed(): number {
    const idx = Atomics.load(this.#used16, 1);
    if (this.#lastUsed === idx) return -1;
    // More used entries than chains the device has: the index ran ahead (or back, which reads
    // as nearly 65536 ahead). The entries it skipped hold stale heads, one of which may be a
    // chain in flight now that the device has not finished: taking it hands its buffers back
    // while the device still writes them.
    const pending = (idx - this.#lastUsed) & 0xffff;
    if (pending > this.#outstanding) {
      throw new RangeError(
        `The device's used index ${idx} is ${pending} entries ahead, with ${this.#outstanding} requests in flight`,
      );
    }
    const e = 1 + ((this.#lastUsed & this.#mask) << 1);
    const head = this.#used32[e];
    this.lastUsedLen = this.#used32[e + 1];
    this.#lastUsed = (this.#lastUsed + 1) & 0xffff;
    // Published chains only: one added to the available ring but not yet published is not the
    // device's to return (it read past the index the driver published).
    if (head >= this.size || this.#chainLen[head] === 0 || this.#unpublishedHead[head] !== 0) {
      throw new RangeError(`The device returned descriptor ${head}, which is not in flight`);
    }
    this.#outstanding--;
    this.#freeChain(head);
    return head;
  }

  /**
   * Whether the device's used index is further ahead than the chains it has (see
   * {@link popUsed}); checked before publishing, when no entry may be pending to pop.
   */
  get usedOverrun(): boolean {
    return ((Atomics.load(this.#used16, 1) - this.#lastUsed) & 0xffff) > this.#outstanding;
  }

  /** Returns the descriptors of the chain at `head` to the free list. */
  #freeChain(head: number): void {
    const n = this.#chainLen[head];
    this.#chainLen[head] = 0;
    let tail = head;
    for (let k = 1; k < n; k++) tail = this.#next[tail];
    this.#next[tail] = this.#freeHead;
    this.#freeHead = head;
    this.#numFree += n;
  }

  /**
   * Takes back the chains added to the available ring but not published (the device never saw
   * them) and returns their heads. Their descriptors are free again, and {@link popUsed} refuses
   * those heads from now on: a device that read past the published index and returned one would
   * otherwise complete a request that was already given up (its slot long reused).
   */
  retractUnpublished(): number[] {
    const heads: number[] = [];
    for (let i = this.#published; i !== this.#availIdx; i = (i + 1) & 0xffff) {
      const head = this.#availHeads[i & this.#mask];
      heads.push(head);
      this.#unpublishedHead[head] = 0;
      this.#freeChain(head);
    }
    this.#availIdx = this.#published;
    return heads;
  }

  /** Asks the device for (or not for) used-buffer notifications; advisory. */
  setInterrupts(enabled: boolean): void {
    Atomics.store(this.#avail, 0, enabled ? 0 : AVAIL_F_NO_INTERRUPT);
  }

  /** Whether used-buffer notifications are requested. */
  get interrupts(): boolean {
    return (this.#avail[0] & AVAIL_F_NO_INTERRUPT) === 0;
  }
}
