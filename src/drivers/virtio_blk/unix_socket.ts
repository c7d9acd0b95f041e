/**
 * A connected AF_UNIX stream socket with file descriptor passing (SCM_RIGHTS), the transport of
 * vhost-user. All calls block, with a deadline where the peer could keep them waiting: connect
 * (a back-end whose listen queue is full), and reads (a silent back-end).
 *
 * Struct layouts are those of LP64 Linux (x86_64, arm64): `struct msghdr` 56 bytes, `struct
 * cmsghdr` header 16 bytes, `struct iovec` 16 bytes, `struct sockaddr_un` 110 bytes.
 *
 * @module
 */
import type { Native } from "../../../ffi/types.ts";
import { BlkioError } from "../../errors.ts";
import { ERRNO } from "../../errno.ts";
import { closeFd, errnoError, fileTypeName, S_IFMT, S_IFSOCK, statPath } from "../../sys.ts";

const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
const SOCK_NONBLOCK = 0o4000;
const F_GETFL = 3;
const F_SETFL = 4;
const O_NONBLOCK = 0o4000;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;
const SO_PEERCRED = 17;
const MSG_NOSIGNAL = 0x4000;
const MSG_CMSG_CLOEXEC = 0x40000000;
const POLLIN = 1;
const POLLERR = 0x8;
const POLLHUP = 0x10;
const POLLNVAL = 0x20;
const POLLRDHUP = 0x2000;
/** How often a connect to a back-end whose listen queue is full is tried again. */
const CONNECT_RETRY_MS = 10;
const SUN_PATH_MAX = 108;
/** At most this many fds travel with one message (vhost-user's limit). */
export const MAX_FDS = 8;
const CMSG_HDR = 16;
const CONTROL_LEN = CMSG_HDR + MAX_FDS * 4;

/**
 * Why a connect to `path` was refused, for a newcomer: the kernel says ECONNREFUSED both for a
 * socket no back-end listens on (it exited and left the file) and for a path that is no socket
 * at all (a disk image given to this driver instead of io_uring).
 */
function refusedBecause(native: Native, path: string): string {
  let type: number;
  try {
    type = statPath(native, path).mode & S_IFMT;
  } catch {
    return "no back-end listens there";
  }
  if (type === S_IFSOCK) {
    return "no back-end listens on it (the back-end that made it has exited or closed it)";
  }
  return `it is ${fileTypeName(type) ?? "of another type"}, not a socket (files and block devices are ` +
    "opened with the io_uring driver)";
}

const EPIPE = 32;
const ECONNRESET = 104;

const ENCODER = new TextEncoder();

/** poll(2) revents that mean the peer is gone (POLLRDHUP only when asked for). */
export const HANG_UP = POLLERR | POLLHUP | POLLNVAL | POLLRDHUP;
/** The poll(2) events that report a hang-up without reporting data waiting to be read. */
export const POLL_HANG_UP = POLLRDHUP;

/** The error of every operation on a connection the back-end has closed. */
export function closedByPeer(): BlkioError {
  return BlkioError.of("ENOTCONN", "The vhost-user back-end closed the connection");
}

/**
 * The process id of the peer of connected socket `fd` (struct ucred's pid), or 0 when not known:
 * getsockopt failed, or the peer is in a PID namespace this process cannot see.
 */
function peerPid(native: Native, fd: number): number {
  const cred = native.alloc(12), len = native.alloc(4);
  new DataView(len.buffer).setUint32(0, 12, true);
  if (native.libc.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, len) < 0) return 0;
  return Math.max(0, new DataView(cred.buffer).getInt32(0, true));
}

/** A stream socket connected to a Unix socket path. */
export class UnixSocket {
  readonly #native: Native;
  #fd: number;
  readonly #msghdr: Uint8Array;
  readonly #msgView: DataView;
  readonly #iov: Uint8Array;
  readonly #iovView: DataView;
  readonly #iovAddr: number;
  readonly #control: Uint8Array;
  readonly #controlView: DataView;
  readonly #controlAddr: number;
  readonly #pollfd: Uint8Array;
  readonly #pollView: DataView;
  #buf: Uint8Array;
  #bufAddr: number;
  /** The peer's process id when it connected (SO_PEERCRED), or 0 when not known here. */
  readonly peerPid: number;

  /**
   * Connects to `path` (close-on-exec); throws BlkioError with connect(2)'s errno. A back-end
   * that is not accepting (its listen queue full: a stopped process, or one serving another
   * client whose earlier attempts still queue there) gets `timeoutMs`, then ETIMEDOUT. A
   * blocking connect(2) waited for it without limit.
   */
  constructor(native: Native, path: string, timeoutMs: number) {
    this.#native = native;
    const name = ENCODER.encode(path);
    if (name.length === 0 || name.length >= SUN_PATH_MAX) {
      throw BlkioError.of(
        "EINVAL",
        `Socket path must be 1 to ${SUN_PATH_MAX - 1} bytes long: ${JSON.stringify(path)} is ${name.length}`,
      );
    }
    const addr = native.alloc(2 + SUN_PATH_MAX);
    new DataView(addr.buffer).setUint16(0, AF_UNIX, true);
    addr.set(name, 2);
    const fd = native.libc.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) throw errnoError(native.errno(), "socket(AF_UNIX) failed");
    this.#pollfd = native.alloc(8);
    this.#pollView = new DataView(this.#pollfd.buffer);
    try {
      this.#connect(fd, addr, 2 + name.length + 1, path, timeoutMs);
      // The rest of the protocol blocks (with deadlines on reads).
      const fl = native.libc.fcntl(fd, F_GETFL, 0);
      if (fl < 0 || native.libc.fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
        throw errnoError(native.errno(), "fcntl() on the vhost-user socket failed");
      }
    } catch (e) {
      closeFd(native, fd);
      throw e;
    }
    this.#fd = fd;
    this.peerPid = peerPid(native, fd);
    this.#msghdr = native.alloc(56);
    this.#msgView = new DataView(this.#msghdr.buffer);
    this.#iov = native.alloc(16);
    this.#iovView = new DataView(this.#iov.buffer);
    this.#iovAddr = native.addressOf(this.#iov.buffer as ArrayBuffer);
    this.#control = native.alloc(CONTROL_LEN);
    this.#controlView = new DataView(this.#control.buffer);
    this.#controlAddr = native.addressOf(this.#control.buffer as ArrayBuffer);
    this.#buf = native.alloc(4096);
    this.#bufAddr = native.addressOf(this.#buf.buffer as ArrayBuffer);
  }

  /**
   * connect(2) without blocking: a Unix stream socket connects at once or, when the listen
   * queue is full, fails EAGAIN (never EINPROGRESS), so it is tried again until the deadline.
   */
  #connect(fd: number, addr: Uint8Array, len: number, path: string, timeoutMs: number): void {
    const n = this.#native, deadline = performance.now() + timeoutMs;
    for (;;) {
      if (n.libc.connect(fd, addr, len) === 0) return;
      const errno = n.errno();
      if (errno !== ERRNO.EAGAIN && errno !== ERRNO.EINTR) {
        const e = errnoError(errno, `Failed to connect to vhost-user socket ${JSON.stringify(path)}`);
        if (errno !== ERRNO.ECONNREFUSED) throw e;
        throw new BlkioError(errno, `${e.message}: ${refusedBecause(n, path)}`);
      }
      const left = deadline - performance.now();
      if (left <= 0) {
        throw BlkioError.of(
          "ETIMEDOUT",
          `The vhost-user back-end at ${
            JSON.stringify(path)
          } did not accept the connection within ${timeoutMs} ms ` +
            "(its listen queue is full: is it stopped, or serving another client? back-ends such as " +
            "qemu-storage-daemon serve one client at a time)",
        );
      }
      n.libc.poll(this.#pollfd, 0n, Math.min(CONNECT_RETRY_MS, Math.ceil(left)));
    }
  }

  /** The socket fd, or -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  #scratch(len: number): void {
    if (this.#buf.byteLength >= len) return;
    this.#buf = this.#native.alloc(Math.max(len, this.#buf.byteLength * 2));
    this.#bufAddr = this.#native.addressOf(this.#buf.buffer as ArrayBuffer);
  }

  #live(): number {
    if (this.#fd < 0) throw BlkioError.of("ENOTCONN", "The vhost-user socket is closed");
    return this.#fd;
  }

  /**
   * Sends all of `bytes`, passing `fds` with the first byte. Fails with the errno of
   * sendmsg(2); ENOTCONN once the peer is gone (never SIGPIPE).
   */
  send(bytes: Uint8Array, fds: readonly number[] = []): void {
    const fd = this.#live();
    if (fds.length > MAX_FDS) {
      throw BlkioError.of("EINVAL", `At most ${MAX_FDS} fds can be passed in one message: got ${fds.length}`);
    }
    const n = this.#native;
    this.#scratch(bytes.byteLength);
    this.#buf.set(bytes);
    let done = 0;
    let withFds = fds.length > 0;
    while (done < bytes.byteLength) {
      this.#setIov(this.#bufAddr + done, bytes.byteLength - done);
      this.#setMsg(withFds ? fds : null);
      const r = Number(n.libc.sendmsg(fd, this.#msghdr, MSG_NOSIGNAL));
      if (r < 0) {
        const errno = n.errno();
        if (errno === ERRNO.EINTR) continue;
        if (errno === EPIPE || errno === ECONNRESET) throw closedByPeer();
        throw errnoError(errno, "Sending a vhost-user message failed");
      }
      done += r;
      withFds = false;
    }
  }

  /**
   * Receives exactly `len` bytes into a buffer it returns (valid until the next call), all of
   * them by `deadline` (a performance.now() time; `silence` says what it means when they do not
   * come: EIO). Any fds the peer sends are closed. EOF → ENOTCONN.
   */
  recv(len: number, deadline: number, silence: string): Uint8Array {
    const fd = this.#live();
    const n = this.#native;
    this.#scratch(len);
    let done = 0;
    while (done < len) {
      if (this.poll(deadline) === 0) throw BlkioError.of("EIO", silence);
      this.#setIov(this.#bufAddr + done, len - done);
      this.#setMsg(null, true);
      const r = Number(n.libc.recvmsg(fd, this.#msghdr, MSG_CMSG_CLOEXEC));
      if (r < 0) {
        const errno = n.errno();
        if (errno === ERRNO.EINTR || errno === ERRNO.EAGAIN) continue;
        if (errno === ECONNRESET) throw closedByPeer();
        throw errnoError(errno, "Receiving a vhost-user message failed");
      }
      this.#closeReceivedFds();
      if (r === 0) throw closedByPeer();
      done += r;
    }
    return this.#buf.subarray(0, len);
  }

  /**
   * poll(2) for readability (or hang-up) until `deadline`, a performance.now() time (< 0: none);
   * returns the revents (0 once the deadline passed). An interrupted wait goes on for what is
   * left: restarted with the whole timeout, a signal every few seconds kept it waiting for good.
   */
  poll(deadline: number): number {
    return this.#poll(POLLIN, deadline);
  }

  /**
   * Whether the peer has hung up (closed or reset the connection), without waiting. Data waiting
   * to be read is not a hang-up: the late reply to a message whose wait timed out can be.
   */
  hungUp(): boolean {
    return (this.#poll(POLLRDHUP, 0) & HANG_UP) !== 0;
  }

  #poll(events: number, deadline: number): number {
    const fd = this.#live();
    const v = this.#pollView;
    for (;;) {
      v.setInt32(0, fd, true);
      v.setInt16(4, events, true);
      v.setInt16(6, 0, true);
      const ms = deadline < 0
        ? -1
        : Math.max(0, Math.min(Math.ceil(deadline - performance.now()), 0x7fffffff));
      const r = this.#native.libc.poll(this.#pollfd, 1n, ms);
      if (r >= 0) return r === 0 ? 0 : v.getInt16(6, true);
      const errno = this.#native.errno();
      if (errno !== ERRNO.EINTR) throw errnoError(errno, "poll() on the vhost-user socket failed");
    }
  }

  #setIov(addr: number, len: number): void {
    this.#iovView.setBigUint64(0, BigInt(addr), true);
    this.#iovView.setBigUint64(8, BigInt(len), true);
  }

  #setMsg(fds: readonly number[] | null, receive = false): void {
    const m = this.#msgView;
    m.setBigUint64(0, 0n, true); // msg_name
    m.setUint32(8, 0, true); // msg_namelen
    m.setBigUint64(16, BigInt(this.#iovAddr), true); // msg_iov
    m.setBigUint64(24, 1n, true); // msg_iovlen
    m.setInt32(48, 0, true); // msg_flags
    if (receive) {
      this.#control.fill(0);
      m.setBigUint64(32, BigInt(this.#controlAddr), true);
      m.setBigUint64(40, BigInt(CONTROL_LEN), true);
      return;
    }
    if (fds === null || fds.length === 0) {
      m.setBigUint64(32, 0n, true);
      m.setBigUint64(40, 0n, true);
      return;
    }
    const c = this.#controlView;
    const dataLen = fds.length * 4;
    c.setBigUint64(0, BigInt(CMSG_HDR + dataLen), true); // cmsg_len = CMSG_LEN(n)
    c.setInt32(8, SOL_SOCKET, true);
    c.setInt32(12, SCM_RIGHTS, true);
    for (let i = 0; i < fds.length; i++) c.setInt32(CMSG_HDR + 4 * i, fds[i], true);
    m.setBigUint64(32, BigInt(this.#controlAddr), true);
    // msg_controllen = CMSG_SPACE(n): the data rounded up to 8 bytes.
    m.setBigUint64(40, BigInt(CMSG_HDR + ((dataLen + 7) & ~7)), true);
  }

  /** Closes fds that arrived with a message: the driver never expects any. */
  #closeReceivedFds(): void {
    const controlLen = Number(this.#msgView.getBigUint64(40, true));
    let off = 0;
    const c = this.#controlView;
    while (off + CMSG_HDR <= controlLen) {
      const len = Number(c.getBigUint64(off, true));
      if (len < CMSG_HDR) break;
      if (c.getInt32(off + 8, true) === SOL_SOCKET && c.getInt32(off + 12, true) === SCM_RIGHTS) {
        for (let p = off + CMSG_HDR; p + 4 <= off + len; p += 4) closeFd(this.#native, c.getInt32(p, true));
      }
      off += (len + 7) & ~7;
    }
  }

  /** Closes the socket; idempotent. */
  close(): void {
    if (this.#fd >= 0) closeFd(this.#native, this.#fd);
    this.#fd = -1;
  }
}
