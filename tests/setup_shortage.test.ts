// Set-up under a passing shortage (ENOMEM from a sysfs read or from io_uring's opcode probe):
// the step must fail saying so, never carry on as if the kernel or the device lacked something.
import { test } from "node:test";
import assert from "./_assert.ts";
import { existsSync, readdirSync, readlinkSync } from "node:fs";
import { release } from "node:os";
import { Blkio, BlkioError, type Completion } from "../mod.ts";
import { native } from "../ffi/load.ts";
import { EventfdRelay } from "../src/uring/eventfd_relay.ts";
import { newEventfd } from "../src/sys.ts";
import { cleanupAll, scratchDir, scratchFile, scratchLoop, skipIf } from "./_helpers.ts";
import { loopUnavailableReason } from "./_loop_device.ts";

const N = native!;
const ENOMEM = 12;

function setErrno(e: number): void {
  new Int32Array(N.view(N.libc.__errno_location(), 4))[0] = e;
}

/** Runs `fn` with `table[name]` replaced by `stub`; restores it after. */
function hooked<T>(table: object, name: string, stub: (...a: never[]) => unknown, fn: () => T): T {
  const t = table as Record<string, unknown>;
  const orig = t[name];
  t[name] = stub;
  try {
    return fn();
  } finally {
    t[name] = orig;
  }
}

function ringFds(): string[] {
  const out: string[] = [];
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`) === "anon_inode:[io_uring]") out.push(fd);
    } catch {
      // the fd readdir used
    }
  }
  return out;
}

const PROPS = ["request-alignment", "buf-alignment", "optimal-io-alignment", "mem-region-alignment"];

function describeConnect(path: string, direct: boolean, failReads: boolean): string {
  const b = Blkio.create("io_uring");
  try {
    b.setStr("path", path);
    b.setBool("direct", direct);
    const connect = () => b.connect();
    if (failReads) {
      hooked(N.libc, "read", () => (setErrno(ENOMEM), -1n), connect);
    } else connect();
    const ints = PROPS.map((p) => `${p}=${p === "mem-region-alignment" ? b.getUint64(p) : b.getInt(p)}`);
    return [...ints, `flush-needed=${b.getBool("flush-needed")}`].join(" ");
  } catch (e) {
    if (e instanceof BlkioError) return `error ${e.code}`;
    throw e;
  } finally {
    b.destroy();
  }
}

const loopWhy = loopUnavailableReason();
const targets: [string, () => string, boolean, string | null][] = [
  ["file+direct", () => scratchFile(1 << 20), true, null],
  ["loop+direct", () => scratchLoop(1 << 20), true, loopWhy],
];

for (const [name, make, direct, skip] of targets) {
  test(
    ...skipIf(
      `setup shortage: a sysfs read failing ENOMEM fails connect (${name}), never connects with other limits`,
      skip,
    ),
    () => {
      const path = make();
      const normal = describeConnect(path, direct, false);
      const short = describeConnect(path, direct, true);
      assert.ok(
        short === "error ENOMEM" || short === normal,
        `connect with sysfs reads failing ENOMEM gave "${short}", where it gives "${normal}"`,
      );
    },
  );
}

{
  test(
    ...skipIf(
      "setup shortage: a failed read of a device's write_cache never makes flush-needed false (loop+direct)",
      loopWhy,
    ),
    () => {
      const dev = scratchLoop(1 << 20);
      const b = Blkio.create("io_uring");
      try {
        b.setStr("path", dev);
        b.setBool("direct", true);
        const open = N.libc.open, read = N.libc.read;
        let cacheFd = -1;
        const decoder = new TextDecoder();
        let result: string;
        try {
          hooked(N.libc, "open", (p: Uint8Array, f: number, m: number) => {
            const fd = open(p, f, m);
            if (decoder.decode(p.subarray(0, p.indexOf(0))).endsWith("/queue/write_cache")) cacheFd = fd;
            return fd;
          }, () =>
            hooked(N.libc, "read", (fd: number, buf: Uint8Array, len: bigint) => {
              if (fd !== cacheFd) return read(fd, buf, len);
              setErrno(ENOMEM);
              return -1n;
            }, () => b.connect()));
          result = `flush-needed=${b.getBool("flush-needed")}`;
        } catch (e) {
          if (!(e instanceof BlkioError)) throw e;
          result = `error ${e.code}`;
        }
        assert.notEqual(cacheFd, -1, "connect read the device's write_cache");
        // The device has a volatile write cache (the tests' loop devices say "write back").
        assert.ok(result === "error ENOMEM" || result === "flush-needed=true", `connect gave ${result}`);
      } finally {
        b.destroy();
      }
    },
  );
}

test("setup shortage: an opcode probe failing for want of memory fails start, never leaves write zeroes ENOTSUP", () => {
  const path = scratchFile(1 << 20, 0x5a);
  const b = Blkio.create("io_uring");
  try {
    b.setStr("path", path);
    b.connect();
    const rings = ringFds().length;
    let started = true;
    try {
      // liburing's io_uring_get_probe_ring returns NULL when its malloc or the kernel's
      // IORING_REGISTER_PROBE fails (ENOMEM) as well as on kernels before 5.6.
      hooked(N.uring, "io_uring_get_probe_ring", () => 0, () => b.start());
    } catch (e) {
      assert.ok(e instanceof BlkioError && e.code === "ENOMEM", `start failed with ${e}`);
      assert.equal(ringFds().length, rings, "the failed start left an io_uring fd open");
      started = false;
      b.start();
    }
    const q = b.getQueue(0)!;
    q.writeZeroes(0, 4096, "z");
    const out: Completion[] = [];
    assert.equal(q.doIo(out, 1, 1), 1);
    assert.equal(
      out[0].ret,
      0,
      `write zeroes (started under the failed probe: ${started}): ${out[0].errorMsg}`,
    );
  } finally {
    b.destroy();
  }
});

test("setup shortage: a relay whose opcode probe fails for want of memory throws ENOMEM (retried), not null (given up)", async () => {
  const efd = newEventfd(N);
  try {
    const rings = ringFds().length;
    let relay: EventfdRelay | null = null;
    let error: unknown = null;
    try {
      relay = hooked(N.uring, "io_uring_get_probe_ring", () => 0, () => EventfdRelay.open(N, efd));
    } catch (e) {
      error = e;
    }
    await relay?.close();
    assert.ok(
      error instanceof BlkioError && error.code === "ENOMEM",
      `EventfdRelay.open gave ${
        relay === null && error === null ? "null (no relay for good)" : String(error)
      }`,
    );
    assert.equal(ringFds().length, rings, "the failed relay left its io_uring fd open");
  } finally {
    N.libc.close(efd);
  }
});

// O_DIRECT on tmpfs came with Linux 6.6: before, connect refuses it and never probes.
const [major, minor] = release().split(".").map(Number);
const PROBE_SKIP = major < 6 || (major === 6 && minor < 6)
  ? "O_DIRECT on tmpfs (a file without sysfs io_poll, which connect probes) needs Linux 6.6"
  : !existsSync("/dev/shm") && "no /dev/shm here: no tmpfs file";

test(
  ...skipIf(
    "setup shortage: an IOPOLL probe whose read never reached the kernel leaves no mapping behind",
    PROBE_SKIP,
  ),
  () => {
    // A file on tmpfs with O_DIRECT (Linux 6.6+): no sysfs io_poll behind it, so connect probes.
    const dir = "/dev/shm";
    const path = scratchFile(1 << 20, 0, scratchDir(dir));
    const live = new Map<number, bigint>();
    const mmap = N.libc.mmap, munmap = N.libc.munmap, enter2 = N.uring.io_uring_enter2;
    let failed = false;
    const b = Blkio.create("io_uring");
    try {
      b.setStr("path", path);
      b.setBool("direct", true);
      let outcome: string;
      try {
        hooked(N.libc, "mmap", (...a: Parameters<typeof mmap>) => {
          const r = mmap(...a);
          live.set(r, a[1]);
          return r;
        }, () =>
          hooked(N.libc, "munmap", (addr: number, len: bigint) => {
            live.delete(addr);
            return munmap(addr, len);
          }, () =>
            hooked(N.uring, "io_uring_enter2", (...a: Parameters<typeof enter2>) => {
              if (failed) return enter2(...a);
              failed = true;
              return -11; // EAGAIN: the kernel took no SQE
            }, () => b.connect())));
        outcome = "connected";
      } catch (e) {
        if (!(e instanceof BlkioError)) throw e;
        outcome = e.code;
      }
      assert.ok(failed, `connect (${outcome}) never ran the IOPOLL probe`);
      assert.deepEqual([...live.values()], [], `connect (${outcome}) left a mapping of the probe's memory`);
    } finally {
      b.destroy();
    }
  },
);

test("setup shortage: cleanup", () => cleanupAll());
