/**
 * The front-end side of the vhost-user protocol (QEMU docs/interop/vhost-user.rst): the control
 * messages that hand a virtio device's memory and virtqueues to a back-end process over a Unix
 * socket. Every message is `u32 request, u32 flags, u32 size` then `size` payload bytes, all
 * little-endian; file descriptors travel as SCM_RIGHTS ancillary data.
 *
 * Calls are synchronous. With REPLY_ACK negotiated every message that has no reply of its own
 * asks for one, so a call returns only once the back-end has applied it (a memory region is
 * usable as soon as `addMemReg` returns). Once a message fails in any way (no reply in time, an
 * unexpected one) no further message is sent: the byte stream can no longer be trusted. That
 * says nothing about the virtqueues, which the back-end may go on serving: only a hang-up
 * (`hungUpReason`) ends them.
 *
 * @module
 */
import type { Native } from "../../../ffi/types.ts";
import { BlkioError } from "../../errors.ts";
import { closedByPeer, MAX_FDS, UnixSocket } from "./unix_socket.ts";
import { ERRNO } from "../../errno.ts";
import { readText } from "../../sys.ts";

/** Front-end request codes. */
export const VhostUserRequest = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  SET_MEM_TABLE: 5,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  GET_CONFIG: 24,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
} as const;

/** The highest queue index SET_VRING_KICK and SET_VRING_CALL can carry (8 bits of their u64). */
export const MAX_VRING_INDEX = 0xff;
const REQUEST_NAMES = new Map<number, string>(Object.entries(VhostUserRequest).map(([k, v]) => [v, k]));

/** Protocol feature bits (GET/SET_PROTOCOL_FEATURES). */
export const ProtocolFeature = {
  /** GET_QUEUE_NUM works. */
  MQ: 0n,
  /** The NEED_REPLY flag asks for a u64 status reply. */
  REPLY_ACK: 3n,
  /** GET_CONFIG / SET_CONFIG work. */
  CONFIG: 9n,
  /** GET_MAX_MEM_SLOTS, ADD_MEM_REG and REM_MEM_REG work. */
  CONFIGURE_MEM_SLOTS: 15n,
} as const;

/** The protocol features this client uses when the back-end offers them. */
export const WANTED_PROTOCOL_FEATURES: bigint = (1n << ProtocolFeature.MQ) |
  (1n << ProtocolFeature.REPLY_ACK) | (1n << ProtocolFeature.CONFIG) |
  (1n << ProtocolFeature.CONFIGURE_MEM_SLOTS);

const VERSION = 0x1;
const FLAG_REPLY = 0x4;
const FLAG_NEED_REPLY = 0x8;
/** kill(2): no such process. */
const ESRCH = 3;
/**
 * How long an answer of peerState() other than "exited" stands. A broken queue asks on every
 * reap, and an application polling doIo(min 0) in a loop would otherwise pay a kill(2) and a
 * /proc read each time; an exit is then seen up to this much later.
 */
const PEER_STATE_MS = 10;
const HEADER_SIZE = 12;
/** SET_VRING_KICK/CALL: no fd follows, the back-end must poll instead. */
const VRING_NOFD = 0x100;
/** How many regions SET_MEM_TABLE can carry (one fd each). */
export const MEM_TABLE_MAX_REGIONS = MAX_FDS;
/** Largest reply payload accepted (GET_CONFIG's 256-byte config space plus its header). */
const MAX_REPLY = 4096;

/** One region of the memory table: `len` bytes at `addr`, backed by `fd` at `fdOffset`. */
export interface VhostMemRegion {
  addr: number;
  len: number;
  fd: number;
  fdOffset: number;
}

/**
 * How long (ms) the back-end may take to accept the connection and to answer each message.
 * libblkio waits without limit; a back-end stopped or serving another client then hung the
 * caller for good. Not part of the API: tests shorten it to see timeouts in a second.
 */
export const vhostUserTimeouts = { replyMs: 10_000 };

/** A vhost-user connection to one back-end device. */
export class VhostUserClient {
  readonly #native: Native;
  readonly #sock: UnixSocket;
  readonly #timeoutMs: number;
  #replyAck = false;
  #broken: string | null = null;
  #hungUp: string | null = null;
  #hungUpAt = -1;
  #peerState: "exited" | "alive" | "unknown" | null = null;
  #peerStateAt = 0;
  /** Whether a reply came yet: a silent back-end at the first message may be busy with another client. */
  #answered = false;

  /**
   * Connects to the back-end's socket at `path`. `timeoutMs` bounds the connect and every wait
   * for a reply.
   */
  constructor(native: Native, path: string, timeoutMs: number = vhostUserTimeouts.replyMs) {
    this.#native = native;
    this.#sock = new UnixSocket(native, path, timeoutMs);
    this.#timeoutMs = timeoutMs;
  }

  /** The socket fd, for polling hang-ups; -1 once closed. */
  get socketFd(): number {
    return this.#sock.fd;
  }

  /** Why no more messages can be sent, or null while they can. */
  get brokenReason(): string | null {
    return this.#broken;
  }

  /**
   * Why the back-end is gone (it closed the connection, or it was closed here), or null. Only
   * then are requests it has not returned known never to come back.
   */
  get hungUpReason(): string | null {
    return this.#hungUp;
  }

  /**
   * What became of the back-end's process: "exited" (gone, or a zombie: it maps no memory of
   * this process any more, and nothing it had can still be written), "alive", or "unknown" (its
   * pid not visible here). kill(pid, 0) tells whether it exists, whatever /proc lets this process
   * see (hidepid), and /proc whether it is a zombie; /proc unreadable counts as alive.
   */
  peerState(): "exited" | "alive" | "unknown" {
    const now = performance.now();
    if (this.#peerState === "exited") return "exited"; // for good: a reused pid is another process
    if (this.#peerState !== null && now - this.#peerStateAt < PEER_STATE_MS) return this.#peerState;
    this.#peerStateAt = now;
    return this.#peerState = this.#askPeerState();
  }

  #askPeerState(): "exited" | "alive" | "unknown" {
    const pid = this.#sock.peerPid, n = this.#native;
    if (pid <= 0) return "unknown";
    if (n.libc.kill(pid, 0) < 0 && n.errno() === ESRCH) return "exited";
    let stat: string | null = null;
    try {
      stat = readText(n, `/proc/${pid}/stat`);
    } catch {
      // short of fds: as if unreadable
    }
    if (stat === null) return "alive";
    // "pid (comm) S ...": the name may hold spaces and parentheses; the state follows the last ")".
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state === "Z" || state === "X" ? "exited" : "alive";
  }

  /** When the hang-up was found (a performance.now() time), or -1. */
  get hungUpAt(): number {
    return this.#hungUpAt;
  }

  /** Records that no more messages can be sent (first reason wins). */
  markBroken(reason: string): void {
    this.#broken ??= reason;
  }

  /** Records that the back-end is gone (first reason wins). */
  markHungUp(reason: string): void {
    if (this.#hungUp === null) this.#hungUpAt = performance.now();
    this.#hungUp ??= reason;
    this.markBroken(reason);
  }

  /**
   * Whether the back-end has hung up (checked without blocking). The late reply to a message
   * whose wait timed out may be waiting to be read: that is not a hang-up, and the back-end may
   * still be serving the virtqueues.
   */
  checkHangup(): boolean {
    if (this.#hungUp !== null) return true;
    if (this.#sock.fd < 0) {
      this.markHungUp("The vhost-user connection was closed");
      return true;
    }
    try {
      if (this.#sock.hungUp()) this.markHungUp("The vhost-user back-end closed the connection");
    } catch (e) {
      this.markHungUp((e as Error).message);
    }
    return this.#hungUp !== null;
  }

  /** Use REPLY_ACK from now on (after it was negotiated). */
  set replyAck(on: boolean) {
    this.#replyAck = on;
  }

  #header(request: number, flags: number, size: number): Uint8Array {
    const msg = new Uint8Array(HEADER_SIZE + size);
    const v = new DataView(msg.buffer);
    v.setUint32(0, request, true);
    v.setUint32(4, flags, true);
    v.setUint32(8, size, true);
    return msg;
  }

  #fail(e: unknown, request: number): never {
    const name = REQUEST_NAMES.get(request) ?? `request ${request}`;
    // ENOTCONN: the back-end closed the connection (closedByPeer). Anything else (no reply in
    // time, a reply that does not fit) leaves it possibly alive, and the virtqueues with it.
    if (e instanceof BlkioError && e.errno === ERRNO.ENOTCONN) this.markHungUp(e.message);
    if (e instanceof BlkioError && this.#broken === null) this.markBroken(e.message);
    if (e instanceof BlkioError) {
      throw new BlkioError(e.errno, `vhost-user ${name} failed: ${e.message}`, { cause: e });
    }
    throw e;
  }

  #checkUsable(): void {
    if (this.#broken === null) return;
    // ENOTCONN once the back-end is gone; EIO when it may be alive but a message failed.
    const errno = this.#hungUp !== null ? closedByPeer().errno : ERRNO.EIO;
    throw new BlkioError(errno, `The vhost-user connection is not usable: ${this.#broken}`);
  }

  /** Sends one message; `payload` is filled by `fill` (a DataView over the payload bytes). */
  #send(
    request: number,
    size: number,
    fill: ((v: DataView) => void) | null,
    fds: readonly number[],
    flags: number,
  ) {
    const msg = this.#header(request, VERSION | flags, size);
    if (fill !== null) fill(new DataView(msg.buffer, HEADER_SIZE, size));
    this.#sock.send(msg, fds);
  }

  /** Reads the reply to `request`; returns a copy of its payload. */
  #reply(request: number): Uint8Array {
    const deadline = performance.now() + this.#timeoutMs;
    const silence = `The vhost-user back-end did not answer within ${this.#timeoutMs} ms` +
      (this.#answered
        ? ""
        : " (back-ends such as qemu-storage-daemon serve one client at a time: is another one connected?)");
    const h = new DataView(this.#sock.recv(HEADER_SIZE, deadline, silence).slice().buffer);
    const got = h.getUint32(0, true), flags = h.getUint32(4, true), size = h.getUint32(8, true);
    if (got !== request || (flags & FLAG_REPLY) === 0 || (flags & 0x3) !== VERSION || size > MAX_REPLY) {
      throw BlkioError.of(
        "EIO",
        `Unexpected reply from the back-end: request ${got}, flags 0x${flags.toString(16)}, size ${size}`,
      );
    }
    const payload = size === 0 ? new Uint8Array(0) : this.#sock.recv(size, deadline, silence).slice();
    this.#answered = true;
    return payload;
  }

  /** A request whose reply carries data. */
  #query(request: number, size = 0, fill: ((v: DataView) => void) | null = null): Uint8Array {
    this.#checkUsable();
    try {
      this.#send(request, size, fill, [], 0);
      return this.#reply(request);
    } catch (e) {
      this.#fail(e, request);
    }
  }

  /**
   * A request without reply data. With REPLY_ACK it waits for the back-end's status; without,
   * for the reply to a GET_FEATURES sent after it: messages are handled in order, so that reply
   * means this one was applied (a new memory region must be known before a kick uses it).
   */
  #command(
    request: number,
    size: number,
    fill: ((v: DataView) => void) | null,
    fds: readonly number[] = [],
  ): void {
    this.#checkUsable();
    let status = 0n;
    try {
      this.#send(request, size, fill, fds, this.#replyAck ? FLAG_NEED_REPLY : 0);
      if (!this.#replyAck) {
        this.#send(VhostUserRequest.GET_FEATURES, 0, null, [], 0);
        this.#reply(VhostUserRequest.GET_FEATURES);
        return;
      }
      const r = this.#reply(request);
      status = r.byteLength >= 8 ? new DataView(r.buffer).getBigUint64(0, true) : 1n;
    } catch (e) {
      this.#fail(e, request);
    }
    if (status !== 0n) {
      throw BlkioError.of(
        "EIO",
        `The vhost-user back-end rejected ${REQUEST_NAMES.get(request)} (status ${status})`,
      );
    }
  }

  #u64(request: number): bigint {
    const r = this.#query(request);
    if (r.byteLength < 8) throw BlkioError.of("EIO", `Short reply to ${REQUEST_NAMES.get(request)}`);
    return new DataView(r.buffer).getBigUint64(0, true);
  }

  /** GET_FEATURES: the device's virtio feature bits. */
  getFeatures(): bigint {
    return this.#u64(VhostUserRequest.GET_FEATURES);
  }

  /** SET_FEATURES: the features the driver accepts. */
  setFeatures(features: bigint): void {
    this.#command(VhostUserRequest.SET_FEATURES, 8, (v) => v.setBigUint64(0, features, true));
  }

  /** GET_PROTOCOL_FEATURES. */
  getProtocolFeatures(): bigint {
    return this.#u64(VhostUserRequest.GET_PROTOCOL_FEATURES);
  }

  /** SET_PROTOCOL_FEATURES (never acknowledged: REPLY_ACK is not in force yet). */
  setProtocolFeatures(features: bigint): void {
    this.#checkUsable();
    try {
      this.#send(VhostUserRequest.SET_PROTOCOL_FEATURES, 8, (v) => v.setBigUint64(0, features, true), [], 0);
    } catch (e) {
      this.#fail(e, VhostUserRequest.SET_PROTOCOL_FEATURES);
    }
  }

  /** SET_OWNER: this connection owns the device. */
  setOwner(): void {
    this.#command(VhostUserRequest.SET_OWNER, 0, null);
  }

  /** GET_QUEUE_NUM (protocol feature MQ): how many virtqueues the back-end supports. */
  getQueueNum(): number {
    return Number(this.#u64(VhostUserRequest.GET_QUEUE_NUM));
  }

  /** GET_MAX_MEM_SLOTS (CONFIGURE_MEM_SLOTS): how many memory regions may be added. */
  getMaxMemSlots(): number {
    return Number(this.#u64(VhostUserRequest.GET_MAX_MEM_SLOTS));
  }

  /** GET_CONFIG (protocol feature CONFIG): `size` bytes of the device config space. */
  getConfig(size: number): Uint8Array {
    const r = this.#query(VhostUserRequest.GET_CONFIG, 12 + size, (v) => {
      v.setUint32(0, 0, true); // offset
      v.setUint32(4, size, true);
      v.setUint32(8, 0, true); // flags: front-end access
    });
    // A back-end that cannot read the config answers with an empty payload.
    if (r.byteLength < 12 + size) {
      throw BlkioError.of("EIO", `The vhost-user back-end could not read ${size} bytes of config space`);
    }
    return r.subarray(12, 12 + size);
  }

  /** SET_MEM_TABLE: replaces the whole memory table (at most 8 regions). */
  setMemTable(regions: readonly VhostMemRegion[]): void {
    if (regions.length > MEM_TABLE_MAX_REGIONS) {
      throw BlkioError.of("ENOSPC", `SET_MEM_TABLE carries at most ${MEM_TABLE_MAX_REGIONS} regions`);
    }
    this.#command(VhostUserRequest.SET_MEM_TABLE, 8 + 32 * regions.length, (v) => {
      v.setUint32(0, regions.length, true);
      regions.forEach((r, i) => writeRegion(v, 8 + 32 * i, r));
    }, regions.map((r) => r.fd));
  }

  /** ADD_MEM_REG (CONFIGURE_MEM_SLOTS): adds one region. */
  addMemReg(region: VhostMemRegion): void {
    this.#command(VhostUserRequest.ADD_MEM_REG, 40, (v) => writeRegion(v, 8, region), [region.fd]);
  }

  /**
   * REM_MEM_REG (CONFIGURE_MEM_SLOTS): removes one region. The fd goes along: some back-ends
   * (libvhost-user before QEMU 9.0) insist on exactly one.
   */
  remMemReg(region: VhostMemRegion): void {
    this.#command(VhostUserRequest.REM_MEM_REG, 40, (v) => writeRegion(v, 8, region), [region.fd]);
  }

  /** SET_VRING_NUM: the size of virtqueue `index`. */
  setVringNum(index: number, num: number): void {
    this.#vringState(VhostUserRequest.SET_VRING_NUM, index, num);
  }

  /** SET_VRING_BASE: the avail index the back-end starts from. */
  setVringBase(index: number, base: number): void {
    this.#vringState(VhostUserRequest.SET_VRING_BASE, index, base);
  }

  /** SET_VRING_ENABLE. */
  setVringEnable(index: number, enable: boolean): void {
    this.#vringState(VhostUserRequest.SET_VRING_ENABLE, index, enable ? 1 : 0);
  }

  #vringState(request: number, index: number, num: number): void {
    this.#command(request, 8, (v) => {
      v.setUint32(0, index, true);
      v.setUint32(4, num, true);
    });
  }

  /**
   * SET_VRING_ADDR: where virtqueue `index` lives, as front-end virtual addresses (which this
   * driver also uses as "guest physical" addresses: its memory table maps them 1:1).
   */
  setVringAddr(index: number, desc: number, used: number, avail: number): void {
    this.#command(VhostUserRequest.SET_VRING_ADDR, 40, (v) => {
      v.setUint32(0, index, true);
      v.setUint32(4, 0, true); // flags: no dirty logging
      v.setBigUint64(8, BigInt(desc), true);
      v.setBigUint64(16, BigInt(used), true);
      v.setBigUint64(24, BigInt(avail), true);
      v.setBigUint64(32, 0n, true); // log address
    });
  }

  /** SET_VRING_KICK: the eventfd the driver writes to announce new requests. */
  setVringKick(index: number, fd: number): void {
    this.#vringFd(VhostUserRequest.SET_VRING_KICK, index, fd);
  }

  /** SET_VRING_CALL: the eventfd the back-end writes when it used buffers. */
  setVringCall(index: number, fd: number): void {
    this.#vringFd(VhostUserRequest.SET_VRING_CALL, index, fd);
  }

  #vringFd(request: number, index: number, fd: number): void {
    // The index has 8 bits in this message: a larger one would name another queue.
    if (index > MAX_VRING_INDEX) throw BlkioError.of("EINVAL", `vhost-user cannot address queue ${index}`);
    const value = BigInt(index) | (fd < 0 ? BigInt(VRING_NOFD) : 0n);
    this.#command(request, 8, (v) => v.setBigUint64(0, value, true), fd < 0 ? [] : [fd]);
  }

  /** Closes the connection; the back-end then resets the device. Idempotent. */
  close(): void {
    this.markHungUp("The vhost-user connection was closed");
    this.#sock.close();
  }
}

/** struct VhostUserMemoryRegion: guest address, size, user address, mmap offset. */
function writeRegion(v: DataView, off: number, r: VhostMemRegion): void {
  v.setBigUint64(off, BigInt(r.addr), true);
  v.setBigUint64(off + 8, BigInt(r.len), true);
  v.setBigUint64(off + 16, BigInt(r.addr), true);
  v.setBigUint64(off + 24, BigInt(r.fdOffset), true);
}
