/**
 * blkio_copy — copy data between block devices and/or files, as libblkio's `blkio-copy`.
 *
 *   blkio_copy --input-blkio=<driver> <property>=<value> ... | --input-file=<path>
 *              --output-blkio=<driver> <property>=<value> ... | --output-file=<path>
 *
 * The input comes first; `<property>=<value>` arguments after an `--*-blkio` option configure
 * that instance. `--*-file` opens a file directly, without the library. At least one side must
 * be a blkio instance (its memory regions are the copy buffers). The copy runs in 128 KiB
 * chunks on queue 0 of each instance.
 *
 *   $ bun examples/blkio_copy.ts --input-blkio=io_uring path=disk.img --output-file=copy.img
 *
 * Differences from libblkio 1.5, all bug fixes: `--output-file` is created when missing
 * (O_CREAT, mode 0666 minus umask); exactly the input's length is written (libblkio rounds up
 * to 128 KiB — only an output with `request-alignment` > 1 still gets its last chunk rounded up
 * to that alignment, which it requires, the rest of that block read from the output first); the
 * output is flushed at the end (a flush request, or fsync for a file or block device); an
 * `--input-file` that is a block device is copied whole and a pipe or a procfs file read to its
 * end (fstat says 0 bytes for them); an input that shrinks during the copy fails it (libblkio
 * zero-fills); `/dev/stdin` and `/dev/stdout` are the inherited fds, used from their offsets and
 * left after what was copied, as cat leaves them (reopened, they lost `>>`'s O_APPEND, the offset,
 * and sockets); a missing name under /dev is not created; on a terminal a progress line is shown
 * on stderr; SIGINT, SIGTERM and SIGHUP stop the copy between two chunks and say how much of the
 * input the output holds (exit 130, 143, 129); a directory as `--input-file` is refused by name; and
 * `--help` exits 0 (after a usage error, the usage goes to stderr, not to stdout).
 * An existing output is overwritten in place, not truncated, as with a block device.
 *
 * @module
 */
import {
  closeSync,
  constants,
  fstatSync,
  fsync,
  openSync,
  read,
  readFileSync,
  readSync,
  write,
  writeSync,
} from "node:fs";
import { resolve } from "node:path";
import process from "node:process";
import { Blkio, BlkioError, type Completion, type Queue } from "../mod.ts";
import {
  commandArgs,
  die,
  errnoAndMsg,
  errorMsg,
  errorText,
  exit,
  exitWith,
  formatBytes,
  formatDuration,
  getoptLong,
  handlePropertyOption,
  printErr,
  printOut,
  Progress,
  retText,
  strerror,
} from "./_cli.ts";

const PROG = "blkio_copy";
const BLOCK_SIZE = 128 * 1024;

/**
 * Prints the usage and exits: on stdout with 0 for `--help`; after a usage error on stderr, beside
 * the message (stdout may be a pipe into another program), with status 1 as in libblkio.
 */
function usage(status = 1): never {
  (status === 0 ? printOut : printErr)(
    `Usage: ${PROG} --input-blkio=<driver> <property>=<value> ... |\n` +
      "          --input-file=<path>\n" +
      "          --output-blkio=<driver> <property>=<value> ... |\n" +
      "          --output-file=<path>\n" +
      "Copy data between blkio block devices and/or files.\n",
  );
  exit(status);
}

/** One end of the copy: a started blkio instance, or a file descriptor. */
interface End {
  blkio: Blkio | null;
  fd: number;
  /**
   * The fd is the process's stdin or stdout (`/dev/stdin`, `/dev/stdout`): used as inherited,
   * from its offset, as `cat` does. Reopening it lost the shell's O_APPEND (`>> log`: the copy
   * overwrote the log's start), its offset, and a socket (ENXIO).
   */
  inherited: boolean;
  /** The fd is a pipe, a terminal, a socket or a character device: read and written in order. */
  stream: boolean;
  /** Where the copy starts in a file or block device: an inherited fd's offset, else 0. */
  base: number;
  queue: Queue | null;
  /** The I/O buffer: the instance's memory region, or the other end's. */
  buf: Uint8Array | null;
  /** Request alignment the end needs (1 for files). */
  align: number;
  /** One aligned block after `buf` in the same region: the read half of a padded last write. */
  scratch: Uint8Array | null;
}

/** Connects and starts `b`, the copy's output when `output`; exits with libblkio's messages. */
function connectAndStart(b: Blkio, output: boolean): void {
  const why = output ? outputRefusal : errorMsg;
  try {
    b.connect();
  } catch (e) {
    die(`Unable to connect: ${why(e)}`);
  }
  try {
    b.start();
  } catch (e) {
    die(`Unable to start: ${why(e)}`);
  }
}

/**
 * Why the output instance could not be opened. For a read-only file system or device, or a file
 * this user may only read, the library's remedy is to set read-only: right for a reader, no help
 * for the output, which the copy writes. The library keeps the error it added the remedy to as
 * the cause; that is said instead, with what the output needs.
 */
function outputRefusal(e: unknown): string {
  if (!(e instanceof BlkioError) || (e.code !== "EROFS" && e.code !== "EACCES")) return errorMsg(e);
  const bare = e.cause instanceof BlkioError && e.cause.errno === e.errno ? e.cause.message : e.message;
  return e.code === "EROFS"
    ? `${bare}; the copy writes to its output, which must be on a writable file system or device`
    : `${bare}; the copy writes to its output, which this user must be allowed to write`;
}

/** What `--input-file` / `--output-file` opened. */
function kindOf(fd: number): "file" | "block device" | "stream" {
  try {
    const st = fstatSync(fd);
    return st.isFile() ? "file" : st.isBlockDevice() ? "block device" : "stream";
  } catch (e) {
    die(`fstat: ${errorText(e)}`);
  }
}

/** A block device's size, from sysfs (fstat gives 0 for it). */
function blockDeviceSize(fd: number): number {
  const dev = fstatSync(fd).rdev;
  // glibc's gnu_dev_major / gnu_dev_minor.
  const major = ((dev >>> 8) & 0xfff) | (Math.floor(dev / 2 ** 32) & ~0xfff);
  const minor = (dev & 0xff) | (Math.floor(dev / 4096) & ~0xff);
  try {
    return Number(readFileSync(`/sys/dev/block/${major}:${minor}/size`, "utf8")) * 512;
  } catch (e) {
    die(`size of block device ${major}:${minor}: ${errorText(e)}`);
  }
}

/**
 * Bytes to copy, or -1 for an input read to its end (a pipe, a character device, a regular file
 * whose size says 0, as procfs files do): fstat's size is 0 for those and for block devices, and
 * the copy used to stop there, exiting 0 after copying nothing.
 */
function capacity(end: End): number {
  if (end.blkio) {
    try {
      return Number(end.blkio.getUint64("capacity"));
    } catch (e) {
      die(`Failed to get capacity: ${errorMsg(e)}`);
    }
  }
  const kind = kindOf(end.fd);
  if (kind === "file") {
    const size = fstatSync(end.fd).size;
    if (size > 0) return Math.max(0, size - end.base); // an empty file reads nothing either way
  }
  return kind === "block device" ? Math.max(0, blockDeviceSize(end.fd) - end.base) : -1;
}

/** Allocates and maps the 128 KiB region of a blkio end and takes its queue 0. */
function setUpBuffer(end: End): void {
  const b = end.blkio!;
  let region;
  const align = Math.max(1, b.getInt("request-alignment"));
  try {
    const unit = Math.max(1, Number(b.getUint64("mem-region-alignment")));
    region = b.allocMemRegion(alignUp(BLOCK_SIZE + align, unit));
  } catch (e) {
    die(`blkio_alloc_mem_region: ${errorMsg(e)}`);
  }
  try {
    b.mapMemRegion(region);
  } catch (e) {
    die(`blkio_map_mem_region: ${errorMsg(e)}`);
  }
  end.buf = region.bytes.subarray(0, BLOCK_SIZE);
  end.scratch = region.bytes.subarray(BLOCK_SIZE, BLOCK_SIZE + align);
  end.queue = b.getQueue(0);
  end.align = align;
}

/** How often the copy loop lets the event loop run, so that signal handlers can. */
const YIELD_MS = 20;

/**
 * How far the copy got, for the signal handlers: `bytes` written, and `writing` bytes more whose
 * write was under way (a request in flight, or a stream write waiting).
 */
const copied = { bytes: 0, writing: 0, total: -1, flushing: false };

/**
 * Ends the program on SIGINT (130), SIGTERM (143) or SIGHUP (129), erasing the progress line and
 * saying how far the copy got. The handler runs only between chunks or while I/O waits, so the
 * output then holds the input's first `copied.bytes` bytes, perhaps part of the `copied.writing`
 * after them (the write was under way), and what it held before beyond; nothing was flushed, to
 * stop promptly.
 */
function stopped(signal: string, status: number): never {
  const { bytes, writing, total, flushing } = copied;
  exitWith(
    status,
    flushing
      ? `Stopped by ${signal} while flushing the output: all ${bytes} bytes were written, but may not ` +
        "all be on stable storage yet"
      : `Stopped by ${signal} after copying ${bytes}${total < 0 ? "" : ` of ${total}`} bytes: the ` +
        `output holds the input's first ${bytes} bytes (not flushed)` +
        (writing > 0 ? `, perhaps part of the ${writing} after them (their write was under way)` : "") +
        ", and beyond them what it held before",
  );
}

const completions: Completion[] = [{ userData: undefined, ret: 0, errorMsg: null }];

/** How long one wait for a request may last before the event loop gets a turn (signals). */
const WAIT_NS = 50_000_000;

/**
 * Submits one request already queued on `q` and waits for it; `what` names it in messages. A
 * promise only when the request takes longer than WAIT_NS: then the event loop gets a turn
 * every WAIT_NS (a wait that blocked until the request completed kept a device that stopped
 * answering from letting Ctrl-C end the copy). A request that completes sooner costs no await.
 */
function complete(q: Queue, what: string): Promise<void> | undefined {
  return reaped(q, what) ? undefined : completeLater(q, what);
}

async function completeLater(q: Queue, what: string): Promise<void> {
  do await new Promise((ok) => setImmediate(ok)); while (!reaped(q, what));
}

/** Waits up to WAIT_NS for the one request in flight on `q`; false when it is still in flight. */
function reaped(q: Queue, what: string): boolean {
  let n: number;
  try {
    n = q.doIo(completions, 1, 1, WAIT_NS);
  } catch (e) {
    if (e instanceof BlkioError && e.code === "ETIME") return false; // reaped by a later call
    die(`blkioq_do_io failed: ${errnoAndMsg(e)}`);
  }
  if (n !== 1) die(`blkioq_do_io failed: returned ${n}`);
  const c = completions[0];
  if (c.ret !== 0) die(`Unexpected ${what} completion.ret value ${retText(c.ret, c.errorMsg)}`);
  return true;
}

function alignUp(n: number, align: number): number {
  return Math.ceil(n / align) * align;
}

/**
 * Reads `len` bytes at `offset` into `buf`; returns how many there were (fewer only at the end),
 * as a promise only when the read took long ({@link complete}).
 */
function doRead(end: End, offset: number, len: number, buf: Uint8Array): number | Promise<number> {
  if (end.queue) {
    // Rounded up to request-alignment for O_DIRECT. A file's capacity need not be aligned (the
    // read returns zeroes past its end, and only `len` bytes are used); a device's part block at
    // the end (a loop device over a file whose size is not a multiple of its sector size) cannot
    // be read by anybody, and the read fails with a message that says so.
    end.queue.read(offset, buf.subarray(0, alignUp(len, end.align)));
    return complete(end.queue, "read")?.then(() => len) ?? len;
  }
  let done = 0;
  try {
    while (done < len) {
      // An inherited stdin is read in order from where it stands (the chunks come in order), so
      // its offset moves on as cat leaves it: the next command sharing it starts after the copy.
      const at = end.inherited ? null : end.base + offset + done;
      const n = readSync(end.fd, buf, done, len - done, at);
      if (n === 0) break;
      done += n;
    }
  } catch (e) {
    die(`${end.inherited ? "read" : "pread"}: ${errorText(e)}`);
  }
  // libblkio zero-pads a short read, which made a file cut during the copy into a zero-filled
  // "copy" that exited 0 (CLI review). One that shrank fails; one whose size says more than it
  // holds (sysfs: 4096) ends where its data does.
  if (done < len && sizeNow(end) < end.base + offset + len) shrank(sizeNow(end));
  return done;
}

/** The input's size now, as {@link capacity} read it at the start. */
function sizeNow(end: End): number {
  if (end.blkio) return capacity(end);
  return kindOf(end.fd) === "block device" ? blockDeviceSize(end.fd) : fstatSync(end.fd).size;
}

function shrank(size: number): never {
  die(`The input shrank during the copy, to ${size} bytes: the output holds a partial copy`);
}

/**
 * Reads a stream until `buf` is full or it ends; returns the bytes read. Asynchronously: a
 * stream may keep a read waiting for good (a terminal, an idle pipe), and a blocked readSync
 * kept Ctrl-C from ending the copy (the runtimes restart the read after the signal, and their
 * handler runs only from the event loop).
 */
async function readChunk(fd: number, buf: Uint8Array): Promise<number> {
  let done = 0;
  try {
    while (done < BLOCK_SIZE) {
      const n = await new Promise<number>((ok, fail) =>
        read(fd, buf, done, BLOCK_SIZE - done, null, (e, n) => e ? fail(e) : ok(n))
      );
      if (n === 0) break;
      done += n;
    }
  } catch (e) {
    die(`read: ${errorText(e)}`);
  }
  return done;
}

/** Writes all of `buf` to a stream, asynchronously for the reason {@link readChunk} gives. */
async function writeStream(fd: number, buf: Uint8Array): Promise<void> {
  let done = 0;
  copied.writing = buf.length;
  try {
    while (done < buf.length) {
      const n = await new Promise<number>((ok, fail) =>
        write(fd, buf, done, buf.length - done, null, (e, n) => e ? fail(e) : ok(n))
      );
      done += n;
      // A signal may come between two parts of a chunk.
      copied.bytes += n;
      copied.writing -= n;
    }
  } catch (e) {
    die(`pwrite: ${errorText(e)}`);
  }
}

/** Writes `len` bytes of `buf` at `offset`; a promise only when that takes long. */
function doWrite(end: End, offset: number, len: number, buf: Uint8Array): Promise<void> | undefined {
  if (end.queue) {
    if (alignUp(len, end.align) > len) return padAndWrite(end, offset, len, buf);
    return writeQueued(end.queue, offset, len, buf.subarray(0, len));
  }
  // A pipe has no offsets (pwrite fails ESPIPE): written in order.
  if (end.stream) return writeStream(end.fd, buf.subarray(0, len));
  let done = 0;
  // An inherited fd from its offset, and with its O_APPEND.
  try {
    while (done < len) done += writeSync(end.fd, buf, done, len - done, end.inherited ? null : offset + done);
  } catch (e) {
    die(`pwrite: ${errorText(e)}`);
  }
}

/**
 * The last chunk, for an output that takes only whole aligned blocks: the rest of its last block
 * is what the output holds there already, read first (zeroes past the end of a file). Zero
 * padding overwrote data beyond the copy on a device or a longer file.
 */
async function padAndWrite(end: End, offset: number, len: number, buf: Uint8Array): Promise<void> {
  const tail = len - (len % end.align);
  end.queue!.read(offset + tail, end.scratch!);
  await complete(end.queue!, "read of the output's last block");
  buf.set(end.scratch!.subarray(len - tail), len);
  await writeQueued(end.queue!, offset, len, buf.subarray(0, alignUp(len, end.align)));
}

/** Writes `data` (the chunk's `len` bytes, padded) at `offset` through `q`. */
function writeQueued(q: Queue, offset: number, len: number, data: Uint8Array): Promise<void> | undefined {
  q.write(offset, data);
  copied.writing = len; // for a signal handler that runs while the write waits
  const waiting = complete(q, "write");
  if (waiting) return waiting.then(() => void (copied.writing = 0));
  copied.writing = 0;
}

async function flush(end: End): Promise<void> {
  copied.flushing = true;
  if (end.queue) {
    end.queue.flush();
    await complete(end.queue, "flush");
    return;
  }
  // A pipe or a character device (/dev/null) has nothing to flush: fsync says EINVAL there.
  if (end.stream) return;
  // Asynchronously: an fsync of a large buffered copy may take long, and Ctrl-C should still
  // stop the program then.
  try {
    await new Promise<void>((ok, fail) => fsync(end.fd, (e) => e ? fail(e) : ok()));
  } catch (e) {
    die(`fsync: ${errorText(e)}`);
  }
}

/** The size of an output that cannot grow (a block device), or null when it can. */
function fixedSize(end: End): number | null {
  if (end.blkio) return end.blkio.getBool("can-grow") ? null : capacity(end);
  // An inherited fd writes from its offset: `{ head -c 1M; blkio_copy …; } > /dev/sdx` has
  // 1 MiB less room.
  return kindOf(end.fd) === "block device" ? Math.max(0, blockDeviceSize(end.fd) - end.base) : null;
}

async function copy(input: End, output: End): Promise<void> {
  const total = capacity(input);
  copied.total = total;
  // A larger input would overwrite the whole device and then fail (ENOSPC, EIO), leaving it
  // neither its old contents nor a copy (CLI hunt): refused before the first write.
  const room = total < 0 ? null : fixedSize(output);
  if (room !== null && total > room) {
    die(`The input (${total} bytes) is larger than the output (${room} bytes): nothing was copied`);
  }
  if (input.blkio) setUpBuffer(input);
  if (output.blkio) setUpBuffer(output);
  const inBuf = input.buf ?? output.buf!;
  const outBuf = output.buf ?? inBuf;

  const progress = new Progress();
  const started = performance.now();
  const show = (done: number, force = false): void => {
    if (!progress.enabled) return;
    const secs = (performance.now() - started) / 1000;
    const rate = secs > 0 ? done / secs : 0;
    if (total < 0) return progress.update(`${formatBytes(done)}  ${formatBytes(rate)}/s`, force);
    const pct = total > 0 ? (done / total) * 100 : 100;
    const eta = rate > 0 ? (total - done) / rate : NaN;
    progress.update(
      `${formatBytes(done)} / ${formatBytes(total)} (${pct.toFixed(1)}%)  ${formatBytes(rate)}/s  ETA ${
        formatDuration(eta)
      }`,
      force,
    );
  };

  process.on("SIGINT", () => stopped("SIGINT", 130));
  process.on("SIGTERM", () => stopped("SIGTERM", 143));
  // A closed terminal (or `kill -HUP`): the default action ended the copy without a word.
  process.on("SIGHUP", () => stopped("SIGHUP", 129));
  // A sized input in 128 KiB chunks; one read to its end (total < 0) in whole chunks while it
  // gives them, then what is left.
  let offset = 0, yielded = started;
  for (;;) {
    let len: number;
    if (total < 0) {
      len = await readChunk(input.fd, inBuf);
    } else {
      len = Math.min(BLOCK_SIZE, total - offset);
      if (len > 0) {
        const reading = doRead(input, offset, len, inBuf);
        len = typeof reading === "number" ? reading : await reading;
      }
    }
    if (len <= 0) break;
    if (inBuf !== outBuf) outBuf.set(inBuf.subarray(0, len));
    const writing = doWrite(output, offset, len, outBuf);
    if (writing) await writing; // only a slow request or a stream output waits
    offset += len;
    copied.bytes = offset;
    show(offset);
    if (len < BLOCK_SIZE) break;
    // The loop is synchronous apart from stream I/O, and a signal handler runs only from the
    // event loop: Ctrl-C ended nothing until the copy had finished (and without a handler, the
    // progress line was left half-drawn). A turn of the event loop every YIELD_MS costs a few
    // microseconds.
    if (performance.now() - yielded >= YIELD_MS) {
      await new Promise((ok) => setImmediate(ok));
      yielded = performance.now();
    }
  }
  // An instance reads zeroes past the end of a file, so a cut there shows only in its size.
  if (input.blkio && sizeNow(input) < total) shrank(sizeNow(input));
  await flush(output);
  show(offset, true);
  progress.clear();
}

/**
 * The inherited fd a path names (`/dev/stdout`, `/dev/fd/1`, `/proc/self/fd/1`), or -1 to open
 * the path. A pipe whose open file is non-blocking (another process set O_NONBLOCK on it, as
 * Node does on its children's pipes) is opened anew, which gives a blocking one: read or written
 * as it is, the copy failed EAGAIN as soon as the other end lagged, and a write retried after
 * EAGAIN doubled bytes on Deno (review). A pipe has no offset or O_APPEND to lose.
 */
function stdioFd(path: string, fd: 0 | 1): number {
  const names = fd === 0 ? ["/dev/stdin"] : ["/dev/stdout"];
  if (![...names, `/dev/fd/${fd}`, `/proc/self/fd/${fd}`].includes(path)) return -1;
  try {
    if (!fstatSync(fd).isFIFO()) return fd;
  } catch {
    return -1; // closed: opening the path says why
  }
  const flags = /^flags:\s*([0-7]+)$/m.exec(fdInfo(fd))?.[1];
  return flags !== undefined && (parseInt(flags, 8) & constants.O_NONBLOCK) !== 0 ? -1 : fd;
}

function fdInfo(fd: number): string {
  try {
    return readFileSync(`/proc/self/fdinfo/${fd}`, "utf8");
  } catch {
    return "";
  }
}

/** An fd's offset (node:fs has no lseek). */
function fdPosition(fd: number): number {
  return Number(/^pos:\s*(\d+)$/m.exec(fdInfo(fd))?.[1] ?? 0);
}

/**
 * Whether a path names a device: a missing one is a mistyped device name (/dev/sdx1), which
 * created would be a file in RAM that the copy fills and reports done. /dev/shm holds files.
 */
function isDevicePath(path: string): boolean {
  path = resolve(path); // also //dev/x, /dev/../dev/x, and x from /dev
  return path.startsWith("/dev/") && !path.startsWith("/dev/shm/");
}

function openFile(option: string, path: string, flags: number): number {
  if (isDevicePath(path)) flags &= ~constants.O_CREAT;
  let fd: number;
  try {
    fd = openSync(path, flags, 0o666);
  } catch (e) {
    // The options were right; the file was not: no usage text.
    const created = (flags & constants.O_WRONLY) !== 0 && (e as { code?: string }).code === "ENOENT";
    die(
      `${option}=${path}: ${errorText(e)}${
        created && isDevicePath(path) ? " (names under /dev are not created)" : ""
      }`,
    );
  }
  // A directory opens for reading: the copy then failed at its first read, with "read: Is a
  // directory", which named neither the option nor the path.
  if (fstatSync(fd).isDirectory()) die(`${option}=${path}: ${strerror("EISDIR")}`);
  return fd;
}

function createBlkio(option: string, driver: string): Blkio {
  try {
    return Blkio.create(driver);
  } catch (e) {
    // An unknown driver name is a usage mistake; anything else (no FFI permission, no liburing)
    // is not, and the usage text would bury it.
    if ((e as BlkioError).code !== "ENOENT") die(`${option}=${driver}: ${errorMsg(e)}`);
    printErr(`${option}=${driver}: ${errorMsg(e)}\n`);
    usage();
  }
}

async function main(argv: string[]): Promise<void> {
  let inBlkio: Blkio | null = null, inFd = -1, inInherited = false;
  // The output file is opened (and created) only once everything else worked: a bad option or
  // a failed connect must not leave an empty file behind.
  let outBlkio: Blkio | null = null, outPath: string | null = null, outFd = -1, outInherited = false;
  const rest: string[] = [];
  const spec = {
    progname: PROG,
    long: [
      { name: "help", hasArg: false },
      { name: "input-blkio", hasArg: true },
      { name: "input-file", hasArg: true },
      { name: "output-blkio", hasArg: true },
      { name: "output-file", hasArg: true },
    ],
    short: { h: "help" },
    inOrder: true,
  };
  const onlyOne = (side: string): never => {
    printErr(`Only one --${side}-* option is allowed\n`);
    usage();
  };
  const afterInput = (): void => {
    if (!inBlkio && inFd === -1) {
      printErr("--output-* must occur after an --input-* option\n");
      usage();
    }
    if (outBlkio || outPath !== null) onlyOne("output");
  };

  for (const ev of getoptLong(argv, spec, rest)) {
    if (ev.kind === "error") {
      printErr(`${ev.message}\n`);
      usage();
    }
    if (ev.kind === "arg") {
      if (outBlkio) handlePropertyOption(outBlkio, ev.value);
      else if (inBlkio && outPath === null) handlePropertyOption(inBlkio, ev.value);
      else {
        printErr(`unexpected option: ${ev.value}\n`);
        usage();
      }
      continue;
    }
    const value = ev.value ?? "";
    switch (ev.name) {
      case "help":
        usage(0);
        break;
      case "input-blkio":
        if (inBlkio || inFd !== -1) onlyOne("input");
        inBlkio = createBlkio("--input-blkio", value);
        // The copy only reads its input: opened read-only unless a `read-only=false` follows,
        // so that a read-only mount or export can be copied from (libblkio opens it read-write,
        // and fails there with EROFS) and a mistake cannot write to it (CLI hunt).
        inBlkio.setBool("read-only", true);
        break;
      case "input-file":
        if (inBlkio || inFd !== -1) onlyOne("input");
        inFd = stdioFd(value, 0);
        inInherited = inFd !== -1;
        if (!inInherited) inFd = openFile("--input-file", value, constants.O_RDONLY);
        break;
      case "output-blkio":
        afterInput();
        outBlkio = createBlkio("--output-blkio", value);
        break;
      case "output-file":
        afterInput();
        outPath = value;
        break;
    }
  }
  for (const arg of rest) {
    if (!outBlkio) {
      printErr(`unexpected option: ${arg}\n`);
      usage();
    }
    handlePropertyOption(outBlkio, arg);
  }

  if (!inBlkio && inFd === -1) {
    printErr("Missing --input-* option\n");
    usage();
  }
  if (!outBlkio && outPath === null) {
    printErr("Missing --output-* option\n");
    usage();
  }
  if (!inBlkio && !outBlkio) {
    // The copy buffers are memory regions, so one side must be a blkio instance.
    printErr("One of --input-blkio and --output-blkio must be given\n");
    usage();
  }

  if (inBlkio) connectAndStart(inBlkio, false);
  if (outBlkio) connectAndStart(outBlkio, true);
  if (outPath !== null) {
    outFd = stdioFd(outPath, 1);
    outInherited = outFd !== -1;
    if (!outInherited) outFd = openFile("--output-file", outPath, constants.O_WRONLY | constants.O_CREAT);
  }

  const end = (blkio: Blkio | null, fd: number, inherited: boolean): End => {
    const stream = fd !== -1 && kindOf(fd) === "stream";
    return {
      blkio,
      fd,
      inherited,
      stream,
      base: inherited && !stream ? fdPosition(fd) : 0,
      queue: null,
      buf: null,
      align: 1,
      scratch: null,
    };
  };
  await copy(end(inBlkio, inFd, inInherited), end(outBlkio, outFd, outInherited));

  if (inFd !== -1 && !inInherited) closeSync(inFd);
  if (outFd !== -1 && !outInherited) closeSync(outFd);
  (inBlkio as Blkio | null)?.destroy();
  (outBlkio as Blkio | null)?.destroy();
}

await main(commandArgs());
