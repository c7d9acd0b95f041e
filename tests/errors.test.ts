// BlkioError, the errno table and errnoName: the error model of libblkio (negative errno plus a
// message) as a JS exception.
import { test } from "node:test";
import assert from "./_assert.ts";
import { childWithoutUnavailable, kernelAtLeast, runChild, skipIf } from "./_helpers.ts";
import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, statfsSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { LIBURING_SONAME, LIBURING_SYMBOLS } from "../ffi/symbols.ts";
import { Blkio, BlkioError, ERRNO, errnoName, errnoText } from "../mod.ts";
import { errnoError, readText } from "../src/sys.ts";
import { requireNative } from "../src/native.ts";

/** Every Linux errno value (asm-generic/errno-base.h and errno.h; x86_64 and arm64 use them). */
const LINUX: Record<string, number> = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  ENOEXEC: 8,
  EBADF: 9,
  ECHILD: 10,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  ENOTBLK: 15,
  EBUSY: 16,
  EEXIST: 17,
  EXDEV: 18,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  ENFILE: 23,
  EMFILE: 24,
  ENOTTY: 25,
  ETXTBSY: 26,
  EFBIG: 27,
  ENOSPC: 28,
  ESPIPE: 29,
  EROFS: 30,
  EMLINK: 31,
  EPIPE: 32,
  EDOM: 33,
  ERANGE: 34,
  EDEADLK: 35,
  ENAMETOOLONG: 36,
  ENOLCK: 37,
  ENOSYS: 38,
  ENOTEMPTY: 39,
  ELOOP: 40,
  ENOMSG: 42,
  EIDRM: 43,
  ECHRNG: 44,
  EL2NSYNC: 45,
  EL3HLT: 46,
  EL3RST: 47,
  ELNRNG: 48,
  EUNATCH: 49,
  ENOCSI: 50,
  EL2HLT: 51,
  EBADE: 52,
  EBADR: 53,
  EXFULL: 54,
  ENOANO: 55,
  EBADRQC: 56,
  EBADSLT: 57,
  EBFONT: 59,
  ENOSTR: 60,
  ENODATA: 61,
  ETIME: 62,
  ENOSR: 63,
  ENONET: 64,
  ENOPKG: 65,
  EREMOTE: 66,
  ENOLINK: 67,
  EADV: 68,
  ESRMNT: 69,
  ECOMM: 70,
  EPROTO: 71,
  EMULTIHOP: 72,
  EDOTDOT: 73,
  EBADMSG: 74,
  EOVERFLOW: 75,
  ENOTUNIQ: 76,
  EBADFD: 77,
  EREMCHG: 78,
  ELIBACC: 79,
  ELIBBAD: 80,
  ELIBSCN: 81,
  ELIBMAX: 82,
  ELIBEXEC: 83,
  EILSEQ: 84,
  ERESTART: 85,
  ESTRPIPE: 86,
  EUSERS: 87,
  ENOTSOCK: 88,
  EDESTADDRREQ: 89,
  EMSGSIZE: 90,
  EPROTOTYPE: 91,
  ENOPROTOOPT: 92,
  EPROTONOSUPPORT: 93,
  ESOCKTNOSUPPORT: 94,
  EOPNOTSUPP: 95,
  EPFNOSUPPORT: 96,
  EAFNOSUPPORT: 97,
  EADDRINUSE: 98,
  EADDRNOTAVAIL: 99,
  ENETDOWN: 100,
  ENETUNREACH: 101,
  ENETRESET: 102,
  ECONNABORTED: 103,
  ECONNRESET: 104,
  ENOBUFS: 105,
  EISCONN: 106,
  ENOTCONN: 107,
  ESHUTDOWN: 108,
  ETOOMANYREFS: 109,
  ETIMEDOUT: 110,
  ECONNREFUSED: 111,
  EHOSTDOWN: 112,
  EHOSTUNREACH: 113,
  EALREADY: 114,
  EINPROGRESS: 115,
  ESTALE: 116,
  EUCLEAN: 117,
  ENOTNAM: 118,
  ENAVAIL: 119,
  EISNAM: 120,
  EREMOTEIO: 121,
  EDQUOT: 122,
  ENOMEDIUM: 123,
  EMEDIUMTYPE: 124,
  ECANCELED: 125,
  ENOKEY: 126,
  EKEYEXPIRED: 127,
  EKEYREVOKED: 128,
  EKEYREJECTED: 129,
  EOWNERDEAD: 130,
  ENOTRECOVERABLE: 131,
  ERFKILL: 132,
  EHWPOISON: 133,
  // glibc's alias, the name libblkio's texts use.
  ENOTSUP: 95,
};

/** The codes libblkio's API and test suite use (libblkio.md §2). */
const LIBBLKIO_CODES = [
  "ENOENT",
  "EINVAL",
  "ENOTTY",
  "EACCES",
  "ENODEV",
  "EBUSY",
  "EROFS",
  "ENOTSUP",
  "EOVERFLOW",
  "ETIME",
  "EINTR",
  "EBADF",
  "ENOSYS",
  "ENOMEM",
  "EIO",
] as const;

test("BlkioError: name, code, errno, message, and an Error", () => {
  const e = new BlkioError(22, "Something was invalid");
  assert.ok(e instanceof Error);
  assert.ok(e instanceof BlkioError);
  assert.equal(e.name, "BlkioError");
  assert.equal(e.code, "EINVAL");
  assert.equal(e.errno, 22);
  assert.equal(e.message, "Something was invalid");
  assert.equal(typeof e.stack, "string");
  assert.match(String(e), /^BlkioError: Something was invalid/);
  assert.equal(Object.prototype.toString.call(e), "[object Error]");
});

test("BlkioError.of: builds from an errno name", () => {
  for (const code of LIBBLKIO_CODES) {
    const e = BlkioError.of(code, `problem ${code}`);
    assert.equal(e.errno, LINUX[code]);
    // ENOTSUP and EOPNOTSUPP share 95; the name reported is ENOTSUP, as in libblkio's texts.
    assert.equal(e.code, code);
    assert.equal(e.message, `problem ${code}`);
  }
  assert.equal(BlkioError.of("EOPNOTSUPP", "x").code, "ENOTSUP");
  assert.equal(BlkioError.of("EOPNOTSUPP", "x").errno, 95);
});

test("BlkioError: keeps a cause", () => {
  const cause = new Error("inner");
  const e = BlkioError.of("EIO", "outer", { cause });
  assert.equal(e.cause, cause);
});

test("BlkioError: an unknown errno still makes a usable error", () => {
  const e = new BlkioError(4095, "odd");
  assert.equal(e.errno, 4095);
  assert.equal(e.code, "E4095");
  assert.ok(e instanceof Error);
});

test("ERRNO: Linux values for every name", () => {
  for (const [name, value] of Object.entries(ERRNO)) {
    assert.equal(value, LINUX[name], `${name}`);
  }
  for (const code of LIBBLKIO_CODES) assert.ok(code in ERRNO, `${code} in ERRNO`);
});

test("errnoName: known values map back to their names", () => {
  const table: Record<string, number> = ERRNO;
  for (const [name, value] of Object.entries(ERRNO)) {
    const back = errnoName(value);
    // Aliases (EOPNOTSUPP/ENOTSUP) share a value; the name must be one of them.
    assert.equal(table[back], value, `errnoName(${value}) = ${back}, for ${name}`);
    if (Object.values(ERRNO).filter((v) => v === value).length === 1) assert.equal(back, name);
  }
  assert.equal(errnoName(95), "ENOTSUP");
  assert.equal(errnoName(2), "ENOENT");
  assert.equal(errnoName(62), "ETIME");
});

test("errnoError: every errno of the table gets its text, as strerror gives it", () => {
  // An EFBIG from a write past RLIMIT_FSIZE read "...: EFBIG" with nothing after it.
  for (const [name, errno] of Object.entries(ERRNO)) {
    const e = errnoError(errno, "Doing it failed");
    assert.equal(e.errno, errno);
    assert.match(e.message, new RegExp(`^Doing it failed: ${errnoName(errno)} \\([A-Z][^)]+\\)$`), name);
  }
  assert.equal(errnoText("EPIPE"), "Broken pipe"); // node:fs codes too, for the tools' messages
  // ENFILE can come from open, memfd_create or eventfd (connect, allocMemRegion): it was "E23".
  assert.equal(new BlkioError(23, "x").code, "ENFILE");
  assert.equal(errnoText(23), "Too many open files in system");
  assert.equal(errnoText(122), "Disk quota exceeded");
  assert.equal(errnoText("EWHATEVER"), null);
  // The table is a plain object: names it inherits from Object.prototype are no errno names.
  for (const inherited of ["toString", "constructor", "hasOwnProperty"]) {
    assert.equal(errnoText(inherited), null);
  }
  assert.equal(errnoText(4095), null);
  assert.equal(
    errnoError(27, "Write at offset 0 failed").message,
    "Write at offset 0 failed: EFBIG (File too large)",
  );
});

test("errnoName: unknown values", () => {
  assert.equal(errnoName(0), "E0");
  assert.equal(errnoName(3), "E3");
  assert.equal(errnoName(9999), "E9999");
  assert.equal(errnoName(-22), "E-22");
});

// readText reads sysfs attributes; one that opens but cannot be read (read(2) fails) must come
// back as "not there", never as the 4095 NUL bytes of a buffer read with a length of -1.
test("readText: a file that opens but whose read fails is null", () => {
  const dir = mkdtempSync(join(tmpdir(), "blkio-test-"));
  try {
    // A directory opens O_RDONLY; read(2) then fails with EISDIR.
    assert.equal(readText(requireNative(), dir), null);
    writeFileSync(join(dir, "attr"), "512\n");
    assert.equal(readText(requireNative(), join(dir, "attr")), "512\n");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("BlkioError: thrown by the library with errno and code consistent", () => {
  using b = Blkio.create("io_uring");
  const cases: [() => unknown, string][] = [
    [() => Blkio.create("foo"), "ENOENT"],
    [() => b.getInt("direct"), "ENOTTY"],
    [() => b.setStr("driver", "x"), "EACCES"],
    [() => b.start(), "ENODEV"],
    [() => b.connect(), "EINVAL"],
  ];
  for (const [fn, code] of cases) {
    try {
      fn();
      assert.fail(`expected ${code}`);
    } catch (e) {
      assert.ok(e instanceof BlkioError, String(e));
      assert.equal(e.code, code);
      assert.equal(e.errno, ERRNO[code as keyof typeof ERRNO]);
      assert.equal(errnoName(e.errno), code);
      assert.ok(e.message.length > 0);
    }
  }
});

test(
  ...skipIf(
    "Blkio.create without FFI permission (or with it for named libraries only): ENOENT for an unknown driver name, ELIBACC saying what to run",
    "Deno" in globalThis ? null : "Bun has no permission system: FFI is always allowed",
  ),
  () => {
    // The name is checked before the native libraries are loaded, so a typo reads as one.
    const script = `
      import { Blkio } from ${JSON.stringify(new URL("../mod.ts", import.meta.url).href)};
      for (const name of ["nope", "io_uring"]) {
        try { Blkio.create(name); console.log(name, "created"); }
        catch (e) { console.log(name, e.code); }
      }`;
    const r = spawnSync(process.execPath, ["run", "--allow-read", "--allow-env", "-"], {
      input: script,
      encoding: "utf8",
      timeout: 60_000,
    });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split("\n"), ["nope ENOENT", "io_uring ELIBACC"]);
    // Permission for the libraries by name makes Deno look for them in the current directory:
    // the error must say what to run instead, not only that a file was missing.
    const messages = `
      import { Blkio } from ${JSON.stringify(new URL("../mod.ts", import.meta.url).href)};
      try { Blkio.create("io_uring"); } catch (e) { console.log(e.code, e.message); }`;
    const scoped = [
      ["--allow-ffi=libc.so.6,liburing.so.2"],
      ["--allow-ffi=/nowhere/libc.so.6"],
      ["--allow-ffi", "--deny-ffi=liburing.so.2"],
    ];
    for (const ffi of scoped) {
      const s = spawnSync(process.execPath, ["run", "--allow-read", "--allow-env", ...ffi, "-"], {
        input: messages,
        encoding: "utf8",
        timeout: 60_000,
      });
      assert.equal(s.status, 0, s.stderr);
      assert.match(
        s.stdout,
        /^ELIBACC .*run Deno with --allow-ffi, without a list and without --deny-ffi/,
        `${ffi}: ${s.stdout}`,
      );
      assert.doesNotMatch(s.stdout, /(Could not open library: ){2}/, `${ffi}: a repeated prefix`);
    }
  },
);

/** Why a C compiler cannot be used here to build `what`, or null when `cc` works. */
function ccUnavailable(what: string): string | null {
  const r = spawnSync("cc", ["--version"], { encoding: "utf8" });
  return r.status === 0 ? null : `no C compiler (cc) to build ${what}`;
}

test(
  ...skipIf(
    "loading against a liburing older than 2.3 says which version is needed",
    ccUnavailable("a stand-in for an old liburing"),
  ),
  () => {
    // liburing 2.1 and 2.2 (Ubuntu 22.04's liburing2) lack io_uring_enter and io_uring_enter2:
    // both runtimes then refuse the whole library. A stand-in with every other symbol this
    // library binds plays that version.
    const dir = mkdtempSync(join(tmpdir(), "blkio-old-liburing-"));
    try {
      const names = Object.keys(LIBURING_SYMBOLS).filter((n) => !n.startsWith("io_uring_enter"));
      writeFileSync(join(dir, "stub.c"), names.map((n) => `int ${n}(void) { return -38; }\n`).join(""));
      const cc = spawnSync(
        "cc",
        ["-shared", "-fPIC", "-o", join(dir, LIBURING_SONAME), join(dir, "stub.c")],
        {
          encoding: "utf8",
        },
      );
      assert.equal(cc.status, 0, cc.stderr);
      const script = `
        const { loadError } = await import(${
        JSON.stringify(new URL("../ffi/load.ts", import.meta.url).href)
      });
        console.log(loadError?.message);`;
      const argv = "Deno" in globalThis ? ["run", "-A", "-"] : ["-"];
      const r = spawnSync(process.execPath, argv, {
        input: script,
        encoding: "utf8",
        timeout: 60_000,
        env: { ...process.env, LD_LIBRARY_PATH: dir },
      });
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /liburing\.so\.2 is too old: blkio needs liburing 2\.3 or later/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);

/** The directory liburing.so.2 is loaded from (resolved), or null. */
function liburingDir(): string | null {
  const r = spawnSync("sh", ["-c", `ldconfig -p | grep -m1 '${LIBURING_SONAME} ' | sed 's/.*=> //'`], {
    encoding: "utf8",
  });
  const path = r.stdout.trim();
  if (path === "") return null;
  const real = spawnSync("realpath", [path], { encoding: "utf8" }).stdout.trim();
  return real === "" ? null : real.slice(0, real.lastIndexOf("/"));
}

/** Runs `fn` with a new temporary directory, removed afterwards. */
function inTempDir(prefix: string, fn: (dir: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  try {
    fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// Without CAP_IPC_LOCK the kernel charges ring memory to RLIMIT_MEMLOCK (64 KiB is a common
// default), and gives a closed ring's share back only once its exit work has run: making and
// destroying instances one at a time failed ENOMEM 401 times in 500 (leak hunt). The charge is
// the user's (root's, here), not the process's: two suites running these children at the same
// time share one limit, and can fail each other.
test(
  ...skipIf(
    "ring setup under a 64 KiB RLIMIT_MEMLOCK: instances made one after another all start, and the limit is named when it is reached",
    childWithoutUnavailable("CAP_IPC_LOCK", ["setpriv", "prlimit"]),
  ),
  () =>
    inTempDir("blkio-memlock-", (dir) => {
      const path = join(dir, "disk.img");
      writeFileSync(path, new Uint8Array(1 << 20));
      const got = runChild("_memlock_child.ts", [path, "300"], [
        "setpriv",
        "--bounding-set",
        "-ipc_lock",
        "prlimit",
        "--memlock=65536",
      ]);
      assert.equal(got.ok, 300, `${got.failed} of 300 failed: ${JSON.stringify(got.failures)}`);
      // A kernel that does not charge rings to the limit holds all 64 at once: nothing to name.
      if (got.limit !== null) {
        assert.equal(got.limit.code, "ENOMEM");
        assert.match(
          got.limit.message,
          /RLIMIT_MEMLOCK, 65536 bytes here\) of a process without CAP_IPC_LOCK/,
        );
        assert.ok(got.held >= 1, "one instance fits in 64 KiB");
      } else assert.equal(got.held, 64);
    }),
);

// connect() with O_DIRECT probes IOPOLL with a ring of its own where no block device's sysfs
// says (a file on tmpfs). A shortage there is the process's, not the file's: connect must fail
// with it, where taking it for "cannot poll" left supports-poll-queues false and a later start
// with poll queues failing for the wrong reason (helper-64's audit, gap D16). The limit is filled
// with rings as small as the probe's, so that exactly the probe's ring cannot be had.
const SHM_SKIP = (() => {
  // O_DIRECT on tmpfs came with Linux 6.6: before, connect refuses it and never probes.
  if (!kernelAtLeast(6, 6)) {
    return "O_DIRECT on tmpfs (a file without sysfs io_poll, which connect probes) needs Linux 6.6";
  }
  try {
    return statfsSync("/dev/shm").type === 0x01021994 ? null : "/dev/shm is not a tmpfs";
  } catch {
    return "no /dev/shm";
  }
})();
test(
  ...skipIf(
    "connect with O_DIRECT: a ring shortage at the IOPOLL probe fails connect with ENOMEM, not as a file that cannot poll",
    childWithoutUnavailable("CAP_IPC_LOCK", ["setpriv", "prlimit"]) ?? SHM_SKIP,
  ),
  () => {
    const dir = mkdtempSync(join("/dev/shm", "blkio-probe-"));
    try {
      const path = join(dir, "disk.img");
      writeFileSync(path, new Uint8Array(1 << 20));
      const got = runChild("_connect_shortage.ts", [path], [
        "setpriv",
        "--bounding-set",
        "-ipc_lock",
        "prlimit",
        "--memlock=65536",
      ]);
      assert.equal(got.filled, "ENOMEM", JSON.stringify(got));
      assert.ok(got.held >= 1, JSON.stringify(got));
      assert.equal(got.code, "ENOMEM", JSON.stringify(got));
      assert.match(got.message, /io_uring_queue_init_params\(1\) failed: ENOMEM .*RLIMIT_MEMLOCK/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);

// A file that may not be written says how to open it for reading only; one that may not be read
// either does not (read-only would be refused the same way: new-user walkthrough).
test(
  ...skipIf(
    "connect: EACCES suggests read-only only where the file can be read",
    childWithoutUnavailable("CAP_DAC_OVERRIDE", ["setpriv"]),
  ),
  () =>
    inTempDir("blkio-dac-", (dir) => {
      const readable = join(dir, "readable.img"), closed = join(dir, "closed.img");
      writeFileSync(readable, new Uint8Array(4096));
      writeFileSync(closed, new Uint8Array(4096));
      chmodSync(readable, 0o444);
      chmodSync(closed, 0o000);
      const got = runChild("_open_child.ts", ["--", readable, closed], [
        "setpriv",
        "--bounding-set",
        "-dac_override,-dac_read_search",
      ]);
      assert.match(got[readable], /^EACCES: Failed to open .*; to open it for reading only, set read-only/);
      assert.match(got[closed], /^EACCES: Failed to open ".*closed\.img": EACCES \(Permission denied\)$/);
    }),
);

function hideUnavailable(): string | null {
  if (typeof process.getuid !== "function" || process.getuid() !== 0) {
    return "hiding a system library takes a mount namespace, which needs root";
  }
  if (spawnSync("sh", ["-c", "command -v unshare"]).status !== 0) return "no unshare(1)";
  return liburingDir() === null ? `${LIBURING_SONAME} is not in ldconfig's cache` : null;
}

test(
  ...skipIf("without liburing installed, both runtimes say which package to install", hideUnavailable()),
  () => {
    // In a mount namespace of its own, the child sees the library directory without liburing (a
    // tree of links to everything else). Bun then also tries the name in the current directory,
    // and says so: that must not read as Deno's permission trouble.
    const libDir = liburingDir()!;
    const dir = mkdtempSync(join(tmpdir(), "blkio-no-liburing-"));
    try {
      const hide = `set -e
        mkdir "$T/orig" "$T/fake"
        mount --bind "$LIBDIR" "$T/orig"
        cp -rs "$T/orig/." "$T/fake/"
        rm -f "$T/fake/"liburing.so*
        mount --bind "$T/fake" "$LIBDIR"
        exec "$@"`;
      writeFileSync(
        join(dir, "child.ts"),
        `import { Blkio } from ${JSON.stringify(new URL("../mod.ts", import.meta.url).href)};
        try { Blkio.create("io_uring"); console.log("created"); } catch (e) { console.log(e.code, e.message); }`,
      );
      const argv = "Deno" in globalThis ? ["run", "-A", "child.ts"] : ["child.ts"];
      const r = spawnSync("unshare", ["-m", "bash", "-c", hide, "hide", process.execPath, ...argv], {
        cwd: dir,
        encoding: "utf8",
        timeout: 60_000,
        env: { ...process.env, T: dir, LIBDIR: libDir },
      });
      assert.equal(r.status, 0, r.stderr);
      assert.match(
        r.stdout.trim(),
        /^ELIBACC liburing\.so\.2 could not be loaded: install the liburing2 package \(apt-get install liburing2\)$/,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);

test(
  ...skipIf(
    "Deno: answering A at Deno's FFI prompt loads the libraries",
    !("Deno" in globalThis)
      ? "Bun has no permission system: FFI is always allowed"
      : spawnSync("sh", ["-c", "command -v script"]).status !== 0
      ? "no script(1) to give the prompt a terminal"
      : null,
  ),
  () => {
    // Deno prompts only on a terminal, and drops what was typed before the prompt: `script` gives
    // the child a pseudo-terminal, and "A" is typed every 250 ms until the child is done.
    const dir = mkdtempSync(join(tmpdir(), "blkio-ffi-prompt-"));
    try {
      writeFileSync(
        join(dir, "child.ts"),
        `import { Blkio } from ${JSON.stringify(new URL("../mod.ts", import.meta.url).href)};
        try { using b = Blkio.create("io_uring"); console.log("created", b.driver); }
        catch (e) { console.log("failed", e.code, e.message); }`,
      );
      const typing = "for i in $(seq 1 120); do sleep 0.25; printf 'A\\n'; done";
      const r = spawnSync(
        "bash",
        [
          "-c",
          `(${typing}) | script -qfec "$0 run --allow-read --allow-env child.ts" /dev/null`,
          process.execPath,
        ],
        { cwd: dir, encoding: "utf8", timeout: 60_000 },
      );
      assert.match(r.stdout, /Granted all ffi access/, r.stdout);
      assert.match(r.stdout, /created io_uring/, r.stdout);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);

// A seccomp filter that fails io_uring_setup(2) with the errno given, then runs the command.
const NO_URING_C = `#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(int argc, char **argv) {
  struct sock_filter f[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_io_uring_setup, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (strcmp(argv[1], "EPERM") ? ENOSYS : EPERM)),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = { sizeof f / sizeof f[0], f };
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) return 111;
  execv(argv[2], argv + 2);
  return 112;
}
`;

// libblkio's blkio_create fails with ENOSYS where io_uring is unavailable; create used to succeed
// and start() failed, with EPERM where the kernel or a container refuses io_uring.
test(
  ...skipIf(
    'create("io_uring") where io_uring_setup fails ENOSYS or EPERM: ENOSYS saying why',
    ccUnavailable("a seccomp wrapper"),
  ),
  () => {
    const dir = mkdtempSync(join(tmpdir(), "blkio-no-uring-"));
    try {
      const wrapper = join(dir, "no_uring");
      writeFileSync(`${wrapper}.c`, NO_URING_C);
      const cc = spawnSync("cc", ["-o", wrapper, `${wrapper}.c`], { encoding: "utf8" });
      assert.equal(cc.status, 0, cc.stderr);
      const script = `
        const { Blkio } = await import(${JSON.stringify(new URL("../mod.ts", import.meta.url).href)});
        try {
          Blkio.create("io_uring");
          console.log("created");
        } catch (e) {
          console.log(e.code, e.message);
        }
        Blkio.create("virtio-blk-vhost-user").destroy(); // needs no io_uring
        console.log("vhost-user created");`;
      const argv = "Deno" in globalThis ? ["run", "-A", "-"] : ["-"];
      for (
        const [errno, why] of [["ENOSYS", /the kernel has no io_uring/], [
          "EPERM",
          /kernel refuses it/,
        ]] as const
      ) {
        const r = spawnSync(wrapper, [errno, process.execPath, ...argv], {
          input: script,
          encoding: "utf8",
          timeout: 60_000,
        });
        assert.equal(r.status, 0, `${errno}: status ${r.status} ${r.stderr}`);
        assert.match(r.stdout, /^ENOSYS io_uring is not available: /, errno);
        assert.match(r.stdout, why, errno);
        assert.match(r.stdout, new RegExp(`failed: ${errno}`), errno);
        assert.match(r.stdout, /vhost-user created/, errno);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
