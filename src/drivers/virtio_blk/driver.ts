/**
 * The virtio-blk-vhost-user driver: a userspace virtio-blk driver talking to a vhost-user-blk
 * back-end (qemu-storage-daemon, SPDK, ...) over its Unix socket.
 *
 * connect() negotiates features and reads the config space; start() places the virtqueues in
 * one memfd-backed mapping, registers it with the back-end and hands over each ring with its
 * kick and call eventfds. Memory regions mapped afterwards are added to the back-end's memory
 * table (ADD_MEM_REG, or a re-sent SET_MEM_TABLE when the back-end lacks memory slots); every
 * I/O buffer must lie in one of them.
 *
 * @module
 */
import type { Native } from "../../../ffi/types.ts";
import type { Driver, DriverQueue } from "../../driver.ts";
import { BlkioError } from "../../errors.ts";
import { mapMemfd, type MemoryRegion } from "../../memory_region.ts";
import { PropertyTable } from "../../properties.ts";
import { queueCountRows } from "../../queue_count_rows.ts";
import { State } from "../../state.ts";
import { closeFd, errnoError, isShortage, newEventfd } from "../../sys.ts";
import { MemTable } from "./mem_table.ts";
import { DESTROY_DRAIN_MS, VirtioBlkQueue, type VirtioDeviceInfo } from "./queue.ts";
import {
  MAX_VRING_INDEX,
  MEM_TABLE_MAX_REGIONS,
  ProtocolFeature,
  type VhostMemRegion,
  VhostUserClient,
  WANTED_PROTOCOL_FEATURES,
} from "./vhost_user.ts";
import {
  type BlkConfig,
  CONFIG_SIZE,
  featureBit,
  parseConfig,
  SECTOR_SIZE,
  VirtioFeature,
  WANTED_FEATURES,
} from "./virtio_blk.ts";
import { MAX_QUEUE_SIZE, SplitVirtqueue, vringLayout } from "./virtqueue.ts";

const C = State.Created;
const K = State.Connected;
const INT_MAX = 2147483647;
const QUEUE_SIZE_DEFAULT = 256;
const U64_MAX = 2n ** 64n - 1n;
const F_DUPFD_CLOEXEC = 1030;
/** The largest logical block size QEMU lets a device have (its MAX_BLOCK_SIZE). */
const MAX_BLOCK_SIZE = 2 * 1024 * 1024;

/**
 * @internal Protocol features connect() does not negotiate even when offered. Tests set it to
 * run the fallbacks (SET_MEM_TABLE without memory slots, no REPLY_ACK) against a back-end that
 * offers everything.
 */
export const withheldProtocolFeatures: { mask: bigint } = { mask: 0n };

/** What connect() learned from the back-end. */
interface Connection {
  conn: VhostUserClient;
  /** Features the device offers, and the subset negotiated. */
  offered: bigint;
  features: bigint;
  protocolFeatures: bigint;
  /** Virtqueues the back-end supports (GET_QUEUE_NUM), or null without protocol MQ. */
  queueNum: number | null;
  /** Memory slots (GET_MAX_MEM_SLOTS), or the SET_MEM_TABLE limit. */
  memSlots: number;
  config: BlkConfig;
}

/** The shared mapping that holds every virtqueue of the instance. */
interface VringMemory {
  addr: number;
  len: number;
  fd: number;
  bytes: Uint8Array;
}

/** The virtio-blk-vhost-user driver instance. */
export class VirtioBlkVhostUserDriver implements Driver {
  readonly name = "virtio-blk-vhost-user";
  readonly properties: PropertyTable<this> = VIRTIO_BLK_VHOST_USER_PROPERTIES as unknown as PropertyTable<
    this
  >;
  readonly native: Native;
  path = "";
  readOnly = false;
  numQueues = 1;
  numPollQueues = 0;
  queueSize = QUEUE_SIZE_DEFAULT;
  #c: Connection | null = null;
  /** Set by beginDestroy(): the queues going now need no rings stopped one by one. */
  #destroying = false;
  /** Set by beginDestroy(): until when the queues wait for their requests, all together. */
  #drainUntil = -1;
  #vrings: VringMemory | null = null;
  /** Mapped memory regions, with fds duplicated so they outlive the caller's. */
  readonly #regions = new MemTable();
  /** Every queue start() made (a destroyed one has nothing in flight). */
  #queues: VirtioBlkQueue[] = [];

  constructor(native: Native) {
    this.native = native;
  }

  /** The connection; only called by properties readable from connected state. */
  get c(): Connection {
    return this.#c!;
  }

  /** Whether connect() has made the connection (stored properties keep their defaults before). */
  get connected(): boolean {
    return this.#c !== null;
  }

  /** Whether a negotiated feature is on. */
  has(bit: bigint): boolean {
    return (this.c.features & featureBit(bit)) !== 0n;
  }

  connect(): void {
    if (this.path === "") throw BlkioError.of("EINVAL", "One of path and fd must be set");
    const conn = new VhostUserClient(this.native, this.path);
    try {
      const offered = conn.getFeatures();
      if ((offered & featureBit(VirtioFeature.VERSION_1)) === 0n) {
        throw BlkioError.of(
          "ENOTSUP",
          "The vhost-user device does not offer VIRTIO_F_VERSION_1 (legacy devices are not supported)",
        );
      }
      let protocolFeatures = 0n;
      if ((offered & featureBit(VirtioFeature.VHOST_USER_PROTOCOL_FEATURES)) !== 0n) {
        protocolFeatures = conn.getProtocolFeatures() & WANTED_PROTOCOL_FEATURES &
          ~withheldProtocolFeatures.mask;
        conn.setProtocolFeatures(protocolFeatures);
        conn.replyAck = (protocolFeatures & (1n << ProtocolFeature.REPLY_ACK)) !== 0n;
      }
      const has = (f: bigint) => (protocolFeatures & (1n << f)) !== 0n;
      if (!has(ProtocolFeature.CONFIG)) {
        throw BlkioError.of(
          "ENOTSUP",
          "The vhost-user back-end does not offer VHOST_USER_PROTOCOL_F_CONFIG, needed to read the device configuration",
        );
      }
      conn.setOwner();
      const queueNum = has(ProtocolFeature.MQ) ? conn.getQueueNum() : null;
      const memSlots = has(ProtocolFeature.CONFIGURE_MEM_SLOTS)
        ? conn.getMaxMemSlots()
        : MEM_TABLE_MAX_REGIONS;
      const features = offered & WANTED_FEATURES;
      conn.setFeatures(features);
      const config = parseConfig(conn.getConfig(CONFIG_SIZE));
      this.#c = { conn, offered, features, protocolFeatures, queueNum, memSlots, config };
    } catch (e) {
      conn.close();
      throw e;
    }
  }

  /**
   * Logical block size: blk_size when offered and sane (a power of two from 512 to 2 MiB, the
   * range QEMU accepts for a logical block size), else 512, as Linux's virtio-blk driver does
   * with one it cannot use. A larger one made request-alignment overflow its int property and
   * max-transfer, below one block, 0.
   */
  blockSize(): number {
    const b = this.c.config.blkSize;
    return this.has(VirtioFeature.BLK_BLK_SIZE) && b >= SECTOR_SIZE && b <= MAX_BLOCK_SIZE &&
        (b & (b - 1)) === 0
      ? b
      : SECTOR_SIZE;
  }

  /**
   * max-queues: the device's num_queues with MQ (capped by GET_QUEUE_NUM), else 1, and at most
   * 256: vhost-user's SET_VRING_KICK and SET_VRING_CALL carry a queue's index in 8 bits, so a
   * 257th queue's eventfds replaced the first's and both queues never completed (hunt).
   */
  maxQueues(): number {
    const c = this.c;
    let n = this.has(VirtioFeature.BLK_MQ) ? Math.max(1, c.config.numQueues) : 1;
    if (c.queueNum !== null && c.queueNum > 0) n = Math.min(n, c.queueNum);
    return Math.min(n, MAX_VRING_INDEX + 1);
  }

  /**
   * max-segments: what a request's descriptors leave of the queue (header and status take two:
   * more iovecs than that failed EINVAL), and no more than the device's seg_max where it gives
   * one. libblkio says 1 without SEG_MAX but never enforced it: the queue is the one limit the
   * requests meet, and the property says what they meet (review).
   */
  maxSegments(): number {
    const segs = this.has(VirtioFeature.BLK_SEG_MAX) ? clampInt(this.c.config.segMax) : Infinity;
    return Math.max(1, Math.min(segs, this.queueSize - 2));
  }

  /** Memory regions the caller may map: one slot holds the virtqueues. */
  maxMemRegions(): number {
    return Math.max(0, this.c.memSlots - 1);
  }

  /** Whether the back-end takes memory regions one by one. */
  #memSlots(): boolean {
    return (this.c.protocolFeatures & (1n << ProtocolFeature.CONFIGURE_MEM_SLOTS)) !== 0n;
  }

  start(): { queues: DriverQueue[]; pollQueues: DriverQueue[] } {
    const c = this.c;
    const broken = c.conn.brokenReason;
    if (broken !== null) throw BlkioError.of("EIO", `The vhost-user connection is unusable: ${broken}`);
    const total = this.numQueues + this.numPollQueues;
    // In libblkio's order: the queue counts, then the device's read-only feature.
    if (total === 0) {
      throw BlkioError.of(
        "EINVAL",
        "At least one queue is needed: num-queues and num-poll-queues are 0 and this driver cannot add queues later",
      );
    }
    const max = this.maxQueues();
    if (total > max) {
      throw BlkioError.of(
        "EINVAL",
        `num-queues + num-poll-queues (${total}) exceeds max-queues (${max})`,
      );
    }
    if (!this.readOnly && (c.offered & featureBit(VirtioFeature.BLK_RO)) !== 0n) {
      // libblkio's message, with the remedy added; the bare one as the cause, as io_uring's
      // connect does, for a caller the remedy cannot help (blkio_copy's output must be written).
      const bare = BlkioError.of("EROFS", "Device is read-only");
      throw new BlkioError(bare.errno, `${bare.message}: set read-only to true to use it`, { cause: bare });
    }
    const layout = vringLayout(this.queueSize);
    const mem = this.#allocVrings(layout.total * total);
    const made: VirtioBlkQueue[] = [];
    // Every queue's kick and call eventfds, made before the back-end is told anything: a start
    // short of fds (EMFILE, ENFILE) then fails with the back-end untouched and can be retried.
    // Made after the memory table was sent, the first eventfd that failed broke the connection
    // for good (below), and start() said EIO until the instance was destroyed.
    const fds: number[] = [];
    let tableSent = false;
    try {
      for (let i = 0; i < 2 * total; i++) fds.push(newEventfd(this.native));
      this.#sendMemTable(mem);
      tableSent = true;
      const device = this.#deviceInfo();
      for (let i = 0; i < total; i++) {
        const poll = i >= this.numQueues;
        const off = i * layout.total;
        const vq = new SplitVirtqueue(
          mem.bytes.subarray(off, off + layout.total),
          mem.addr + off,
          this.queueSize,
        );
        const kickFd = fds[2 * i], callFd = fds[2 * i + 1];
        this.#setupVring(i, vq, kickFd, callFd);
        // libvhost-user signals a new call fd once ("in case of I/O hang after reconnecting");
        // with REPLY_ACK that has happened by now, so a fresh queue starts quiet.
        this.native.libc.read(callFd, this.native.alloc(8), 8n);
        made.push(
          new VirtioBlkQueue(this.native, {
            index: i,
            poll,
            vq,
            kickFd,
            callFd,
            device,
            memTable: this.#regions,
            conn: c.conn,
            onDestroy: (index) => this.#stopVring(index),
            drainDeadline: () =>
              this.#drainUntil >= 0 ? this.#drainUntil : performance.now() + DESTROY_DRAIN_MS,
          }),
        );
      }
    } catch (e) {
      // A queue made closes its own two (destroy).
      for (const fd of fds.slice(2 * made.length)) closeFd(this.native, fd);
      for (const q of made) q.destroy();
      if (tableSent) {
        // The back-end has the virtqueue memory in its table now, and qemu-storage-daemon
        // drops the connection when asked to remove it again; started again on top of it,
        // it completed no request. So the connection is done with.
        c.conn.markBroken(
          `start failed after the back-end was set up (${
            (e as Error).message
          }): destroy this instance and create another`,
        );
      }
      this.#freeVrings();
      throw e;
    }
    this.#queues = made;
    return { queues: made.slice(0, this.numQueues), pollQueues: made.slice(this.numQueues) };
  }

  /**
   * The longest read or write, in whole blocks: size_max times max-segments where the device
   * gives a size_max, and below 2^31 bytes always. libblkio says 0 (no limit) otherwise, but
   * qemu-storage-daemon (7.2) keeps a request's length in an int: a read of 2 GiB or more
   * never completed (helper's hunt: 2^31 - 512 bytes in 8 s, 2^31 never), and such a write failed EIO.
   */
  maxTransfer(): number {
    const cfg = this.c.config, ra = this.blockSize();
    // qemu-storage-daemon offers SIZE_MAX with a size_max of 0: no limit, as 0 is for the property.
    const device = this.has(VirtioFeature.BLK_SIZE_MAX) && cfg.sizeMax > 0
      ? cfg.sizeMax * this.maxSegments()
      : Infinity;
    // At least one block: 0 would read as "no limit" (libblkio's meaning) while refusing every
    // read. A device whose segments cannot hold a block then fails each request on
    // max-segment-len, which names the cause.
    return Math.max(ra, Math.floor(Math.min(device, 2 ** 31 - 1) / ra) * ra);
  }

  #deviceInfo(): VirtioDeviceInfo {
    const cfg = this.c.config;
    const ra = this.blockSize();
    // One request covers at most this many bytes (num_sectors is 32 bits), in whole blocks.
    const chunk = (sectors: number) => {
      const bytes = Math.min(sectors > 0 ? sectors * SECTOR_SIZE : 2 ** 31, 2 ** 31);
      return Math.max(ra, Math.floor(bytes / ra) * ra);
    };
    return {
      readOnly: this.readOnly,
      flush: this.has(VirtioFeature.BLK_FLUSH),
      discard: this.has(VirtioFeature.BLK_DISCARD),
      writeZeroes: this.has(VirtioFeature.BLK_WRITE_ZEROES),
      requestAlignment: ra,
      maxSegments: this.maxSegments(),
      maxSegmentLen: this.has(VirtioFeature.BLK_SIZE_MAX) ? cfg.sizeMax : 0,
      maxTransfer: this.maxTransfer(),
      discardChunk: chunk(cfg.maxDiscardSectors),
      writeZeroesChunk: chunk(cfg.maxWriteZeroesSectors),
      capacity: Number(cfg.capacity) * SECTOR_SIZE,
    };
  }

  #allocVrings(len: number): VringMemory {
    const n = this.native;
    const { fd, addr } = mapMemfd(n, "libblkio-vring", len);
    this.#vrings = { addr, len, fd, bytes: new Uint8Array(n.view(addr, len)) };
    return this.#vrings;
  }

  #freeVrings(): void {
    const m = this.#vrings;
    if (m === null) return;
    this.#vrings = null;
    const ab = m.bytes.buffer as ArrayBuffer;
    if (!(ab as { detached?: boolean }).detached) ab.transfer(0);
    this.native.libc.munmap(m.addr, BigInt(m.len));
    closeFd(this.native, m.fd);
  }

  #vringRegion(m: VringMemory): VhostMemRegion {
    return { addr: m.addr, len: m.len, fd: m.fd, fdOffset: 0 };
  }

  /** Makes the virtqueue memory (and any mapped regions) known to the back-end. */
  #sendMemTable(m: VringMemory): void {
    const conn = this.c.conn;
    if (this.#memSlots()) conn.addMemReg(this.#vringRegion(m));
    else conn.setMemTable([this.#vringRegion(m), ...this.#regions.all()]);
  }

  #setupVring(index: number, vq: SplitVirtqueue, kickFd: number, callFd: number): void {
    const conn = this.c.conn;
    conn.setVringNum(index, vq.size);
    conn.setVringBase(index, 0);
    conn.setVringAddr(index, vq.descAddr, vq.usedAddr, vq.availAddr);
    conn.setVringKick(index, kickFd);
    conn.setVringCall(index, callFd);
    // With protocol features negotiated rings start disabled; without, SET_VRING_ENABLE is invalid.
    if ((this.c.features & featureBit(VirtioFeature.VHOST_USER_PROTOCOL_FEATURES)) !== 0n) {
      conn.setVringEnable(index, true);
    }
  }

  #stopVring(index: number): void {
    const c = this.#c;
    if (c === null || c.conn.brokenReason !== null || this.#destroying) return;
    if ((c.features & featureBit(VirtioFeature.VHOST_USER_PROTOCOL_FEATURES)) === 0n) return;
    try {
      // removeQueue(): the default 10 s wait for the acknowledgement. A timeout ends the
      // control messages (a late reply would be taken for the next message's); the other
      // queues go on, as the back-end may (a busy back-end must not cost them their requests).
      c.conn.setVringEnable(index, false);
    } catch {
      // The back-end is gone or silent: nothing left to stop.
    }
  }

  readonly canAddQueues = false;

  addQueue(_poll: boolean): DriverQueue {
    throw BlkioError.of("ENOTSUP", "This driver cannot add queues after start (can-add-queues is false)");
  }

  memRegionAlignment(): number {
    return 1;
  }

  /** GET_CONFIG is a control message: a stopped back-end held the event loop 10 s. */
  capacityMayWait(): boolean {
    return true;
  }

  mapMemRegion(region: MemoryRegion, addr: number): void {
    const c = this.c;
    if (region.fd < 0) {
      throw BlkioError.of(
        "EINVAL",
        "Memory region must have an fd: the vhost-user back-end maps it from the fd (needs-mem-region-fd is true)",
      );
    }
    if (this.#regions.size >= this.maxMemRegions()) {
      throw BlkioError.of(
        "ENOSPC",
        `Too many memory regions mapped: max-mem-regions is ${this.maxMemRegions()}`,
      );
    }
    // SET_MEM_TABLE makes the back-end unmap and remap every region, under any request it
    // is working on: only safe while nothing is in flight.
    if (!this.#memSlots() && this.#queues.some((q) => q.inFlight > 0)) {
      throw BlkioError.of(
        "EBUSY",
        "Cannot map a memory region while requests are in flight: the vhost-user back-end lacks " +
          "memory slots (VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS), so the whole memory table is re-sent",
      );
    }
    // A private copy: the caller may close its fd once mapped, and unmapping needs it again.
    const fd = this.native.libc.fcntl(region.fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) {
      const errno = this.native.errno();
      // EMFILE here is this process's fd table, not the region's fd (leak hunt).
      throw errnoError(
        errno,
        isShortage(errno)
          ? `Duplicating memory region fd ${region.fd} failed (the driver keeps a copy while the region is mapped)`
          : `Memory region fd ${region.fd} cannot be used`,
      );
    }
    const desc: VhostMemRegion = { addr, len: region.len, fd, fdOffset: region.fdOffset };
    try {
      if (this.#memSlots()) c.conn.addMemReg(desc);
      else c.conn.setMemTable([this.#vringRegion(this.#vrings!), ...this.#regions.all(), desc]);
    } catch (e) {
      closeFd(this.native, fd);
      throw e;
    }
    this.#regions.add(region, desc);
  }

  unmapMemRegion(region: MemoryRegion, inUse: boolean): void {
    if (inUse) {
      // The back-end would go on writing there, into whatever is mapped at that address next;
      // a request still in a queue's backlog would fail for want of its region.
      throw BlkioError.of(
        "EBUSY",
        "Memory region is in use by requests in flight or queued: the back-end reads or writes it",
      );
    }
    const desc = this.#regions.remove(region);
    if (desc === null) return;
    const c = this.#c;
    try {
      // Without memory slots the back-end keeps the region until the next map re-sends the
      // table: harmless (new requests are checked against this driver's table), and it spares
      // requests in flight elsewhere the remapping of every region.
      if (c !== null && c.conn.brokenReason === null && this.#memSlots()) c.conn.remMemReg(desc);
    } catch {
      // A back-end that is gone no longer maps anything; unmapping cannot fail.
    } finally {
      closeFd(this.native, desc.fd);
    }
  }

  /**
   * destroy() closes the connection, which stops every ring: stopping them one by one first
   * waited for each acknowledgement, 10 s with a back-end that stopped answering.
   */
  beginDestroy(): void {
    this.#destroying = true;
    this.#drainUntil = performance.now() + DESTROY_DRAIN_MS;
  }

  destroy(): void {
    this.#c?.conn.close();
    this.#c = null;
    for (const d of this.#regions.all()) closeFd(this.native, d.fd);
    this.#freeVrings();
  }
}

type D = VirtioBlkVhostUserDriver;
const blk = (d: D): number => d.blockSize();
const clampInt = (n: number): number => Math.min(n, INT_MAX);

/** Every virtio-blk-vhost-user property, as libblkio 1.5 has them. */
export const VIRTIO_BLK_VHOST_USER_PROPERTIES: PropertyTable<D> = new PropertyTable<D>({
  "buf-alignment": {
    type: "int",
    doc: "Required alignment of buffer addresses and lengths (any)",
    readableFrom: K,
    get: () => 1,
  },
  "can-add-queues": {
    type: "bool",
    doc: "Whether addQueue() works (no: queues are fixed at start)",
    get: (d) => d.canAddQueues,
  },
  "can-grow": {
    type: "bool",
    doc: "Whether the device grows on writes past its end (never)",
    get: () => false,
  },
  "capacity": {
    type: "uint64",
    doc: "Size in bytes, read from the device's config space each time",
    readableFrom: K,
    get: (d) => {
      const sectors = parseConfig(d.c.conn.getConfig(CONFIG_SIZE)).capacity;
      const bytes = BigInt(SECTOR_SIZE) * sectors;
      if (bytes > U64_MAX) {
        throw BlkioError.of("EIO", `The device reports ${sectors} sectors, more bytes than 64 bits hold`);
      }
      return bytes;
    },
  },
  "discard-alignment": {
    type: "int",
    doc: "Discard start and length granularity",
    readableFrom: K,
    get: (d) => {
      const dsa = d.c.config.discardSectorAlignment;
      return d.has(VirtioFeature.BLK_DISCARD) && dsa > 0 ? clampInt(dsa * SECTOR_SIZE) : blk(d);
    },
  },
  "discard-alignment-offset": {
    type: "int",
    doc: "Offset of the first aligned block",
    readableFrom: K,
    get: (d) => (d.has(VirtioFeature.BLK_TOPOLOGY) ? clampInt(blk(d) * d.c.config.alignmentOffset) : 0),
  },
  "driver": {
    type: "str",
    doc: "The driver name",
    get: (d) => d.name,
  },
  "fd": {
    type: "int",
    doc: "Not supported by this driver (always -1; use path)",
    get: () => -1,
    unsupportedSet: "fd property not supported",
  },
  "flush-needed": {
    type: "bool",
    // A stored field in libblkio, as on io_uring: readable before connect, with its default.
    doc:
      "Whether completed writes need a flush to be durable (the device's write cache mode; true until connect)",
    get: (d) =>
      !d.connected
        ? true
        : d.has(VirtioFeature.BLK_CONFIG_WCE)
        ? d.c.config.writeback !== 0
        : d.has(VirtioFeature.BLK_FLUSH),
  },
  "max-discard-len": {
    type: "uint64",
    doc: "Largest discard the device takes in one request, 0 when unspecified (longer ones are split)",
    readableFrom: K,
    get: (d) => (d.has(VirtioFeature.BLK_DISCARD) ? BigInt(d.c.config.maxDiscardSectors) * 512n : 0n),
  },
  "max-mem-regions": {
    type: "uint64",
    doc: "Maximum number of mapped memory regions (the back-end's memory slots, less one for the virtqueues)",
    readableFrom: K,
    get: (d) => BigInt(d.maxMemRegions()),
  },
  "max-queue-size": {
    type: "int",
    doc: "Largest queue-size (the virtio maximum)",
    get: () => MAX_QUEUE_SIZE,
  },
  "max-queues": {
    type: "int",
    doc: "Maximum number of queues, poll queues included (the device's num_queues, at most 256)",
    readableFrom: K,
    get: (d) => d.maxQueues(),
  },
  "max-segment-len": {
    type: "int",
    doc: "Maximum length of one buffer or iovec, 0 for no limit (the device's size_max)",
    readableFrom: K,
    get: (d) => (d.has(VirtioFeature.BLK_SIZE_MAX) ? clampInt(d.c.config.sizeMax) : 0),
  },
  "max-segments": {
    type: "int",
    doc: "Maximum number of iovecs per request (queue-size less 2, and the device's seg_max)",
    readableFrom: K,
    get: (d) => d.maxSegments(),
  },
  "max-transfer": {
    type: "int",
    doc: "Maximum read/write length (size_max times max-segments, and below 2 GiB); longer ones are EINVAL",
    readableFrom: K,
    get: (d) => d.maxTransfer(),
  },
  "max-write-zeroes-len": {
    type: "uint64",
    doc: "Largest write zeroes the device takes in one request, 0 when unspecified (longer ones are split)",
    readableFrom: K,
    get: (
      d,
    ) => (d.has(VirtioFeature.BLK_WRITE_ZEROES) ? BigInt(d.c.config.maxWriteZeroesSectors) * 512n : 0n),
  },
  "may-pin-mem-regions": {
    type: "bool",
    doc: "Whether the back-end may pin memory region pages",
    get: () => true,
  },
  "mem-region-alignment": {
    type: "uint64",
    // A stored field in libblkio's virtio-blk driver (default 1, and 1 from vhost-user): readable
    // before connect.
    doc: "Required alignment of memory region addresses and lengths",
    get: () => 1n,
  },
  "needs-mem-region-fd": {
    type: "bool",
    doc: "Whether memory regions must be backed by an fd (yes: the back-end maps them)",
    get: () => true,
  },
  "needs-mem-regions": {
    type: "bool",
    doc: "Whether buffers must lie in mapped memory regions (yes)",
    get: () => true,
  },
  ...queueCountRows<D>(),
  "optimal-buf-alignment": {
    type: "int",
    doc: "Preferred buffer alignment (any)",
    readableFrom: K,
    get: () => 1,
  },
  "optimal-io-alignment": {
    type: "int",
    doc: "Preferred start and length alignment (the physical block size)",
    readableFrom: K,
    get: (d) => {
      const exp = d.has(VirtioFeature.BLK_TOPOLOGY) ? d.c.config.physicalBlockExp : 0;
      // A power of two, so a multiple of request-alignment even where the int caps it.
      return Math.min(blk(d) * 2 ** Math.min(exp, 20), 2 ** 30);
    },
  },
  "optimal-io-size": {
    type: "int",
    doc: "Preferred request length, 0 when unspecified",
    readableFrom: K,
    get: (d) => (d.has(VirtioFeature.BLK_TOPOLOGY) ? clampInt(blk(d) * d.c.config.optIoSize) : 0),
  },
  "path": {
    type: "str",
    doc: "The vhost-user-blk back-end's Unix socket",
    settableIn: [C],
    get: (d) => d.path,
    set: (d, v) => void (d.path = v),
  },
  "queue-size": {
    type: "int",
    doc: "Entries per virtqueue: a power of two up to max-queue-size",
    settableIn: [K],
    get: (d) => d.queueSize,
    set: (d, v) => {
      if (v <= 0 || v > MAX_QUEUE_SIZE || (v & (v - 1)) !== 0) {
        throw BlkioError.of(
          "EINVAL",
          `queue-size must be a power of two from 1 to ${MAX_QUEUE_SIZE}: received ${v}`,
        );
      }
      d.queueSize = v;
    },
  },
  "read-only": {
    type: "bool",
    doc: "Use the device read-only; writes then fail with EBADF (a read-only device needs it)",
    settableIn: [C],
    get: (d) => d.readOnly,
    set: (d, v) => void (d.readOnly = v),
  },
  "request-alignment": {
    type: "int",
    doc: "Required alignment of request start and length (the device's blk_size)",
    readableFrom: K,
    get: (d) => blk(d),
  },
  "supports-fua-natively": {
    type: "bool",
    doc: "Whether FUA writes are native (no: a write then a flush)",
    get: () => false,
  },
  "supports-poll-queues": {
    type: "bool",
    doc: "Whether poll queues work (yes: they busy-poll the used ring)",
    get: () => true,
  },
});
