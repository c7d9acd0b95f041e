#!/usr/bin/env node
// Installs what `npm run demo` and `npm test` need on a fresh Debian 12 + Node machine, and
// nothing when it is already there: the system packages (liburing2 via apt-get) and the two
// runtimes (deno and bun, npm devDependencies). Usage: node scripts/setup.mjs [--test] [--bench]
// [--kernel] (--kernel: what scripts/kernel_test.sh needs to boot an older kernel under qemu).
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import process from "node:process";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const forTests = process.argv.includes("--test");
const forBench = process.argv.includes("--bench");
const forKernel = process.argv.includes("--kernel");

// Debian package -> how to tell it is present. Packages marked `tests`, `bench` or `kernel`
// install only with --test, --bench or --kernel (any of them when several are marked).
const PACKAGES = [
  { name: "liburing2", present: () => hasLibrary("liburing.so.2"), tests: false },
  { name: "util-linux", present: () => hasCommand("losetup"), tests: true, bench: true },
  // qemu-storage-daemon: blkdebug behind a FUSE export for the fault-injection tests, and the
  // vhost-user-blk exports the virtio-blk-vhost-user driver tests run against.
  { name: "qemu-system-common", present: () => hasCommand("qemu-storage-daemon"), tests: true },
  // fio's io_uring engine, the C reference of `npm run bench`.
  { name: "fio", present: () => hasCommand("fio"), tests: false, bench: true },
  // bench/uring_loop.c, the same loop as blkio_bench in C, built by bench/run.mjs; and the C
  // helpers the tests build (a seccomp wrapper, a stand-in liburing, a FUSE daemon).
  { name: "gcc", present: () => hasCommand("cc"), tests: true, bench: true },
  // tests/fixtures/no_zero_range_fuse.c: a FUSE daemon that refuses FALLOC_FL_ZERO_RANGE.
  { name: "libfuse3-dev", present: () => existsSync("/usr/include/fuse3/fuse.h"), tests: true },
  // tests/fixtures/fake_vhost_user.py: a vhost-user-blk back-end that misbehaves on request.
  { name: "python3", present: () => hasCommand("python3"), tests: true },
  { name: "liburing-dev", present: () => existsSync("/usr/include/liburing.h"), tests: false, bench: true },
  // A page-cached file on XFS next to the one on ext4: XFS completes buffered writes inside
  // io_uring_enter, ext4 hands each one to a kernel thread.
  { name: "xfsprogs", present: () => hasCommand("mkfs.xfs"), tests: false, bench: true },
  // scripts/kernel_test.sh: the emulator (TCG, no /dev/kvm needed), a static busybox for the
  // guest's initramfs (init, insmod, cpio), and mkfs.ext4 for the guest's scratch disk.
  { name: "qemu-system-x86", present: () => hasCommand("qemu-system-x86_64"), tests: false, kernel: true },
  { name: "busybox-static", present: staticBusybox, tests: false, kernel: true },
  { name: "e2fsprogs", present: () => hasCommand("mkfs.ext4"), tests: false, kernel: true },
];

/** Whether /bin/busybox runs without a dynamic loader (busybox-static, not Debian's busybox). */
function staticBusybox() {
  if (!existsSync("/bin/busybox")) return false;
  const elf = readFileSync("/bin/busybox");
  // An ELF64 executable with a PT_INTERP program header (type 3) needs ld.so.
  const phoff = Number(elf.readBigUInt64LE(0x20)),
    size = elf.readUInt16LE(0x36),
    count = elf.readUInt16LE(0x38);
  for (let i = 0; i < count; i++) if (elf.readUInt32LE(phoff + i * size) === 3) return false;
  return true;
}

function hasLibrary(soname) {
  const r = spawnSync("ldconfig", ["-p"], { encoding: "utf8" });
  if (r.status === 0 && r.stdout.includes(soname)) return true;
  return ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib", "/lib"].some((d) =>
    existsSync(join(d, soname))
  );
}

function hasCommand(cmd) {
  return spawnSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" }).status === 0;
}

function aptInstall(names) {
  const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
  const prefix = isRoot ? [] : hasCommand("sudo") ? ["sudo", "-n"] : null;
  if (prefix === null || !hasCommand("apt-get")) {
    console.error(
      `setup: missing system packages: ${names.join(", ")}. Install them with your package manager ` +
        `(Debian/Ubuntu: apt-get install ${names.join(" ")}) and run again.`,
    );
    process.exit(1);
  }
  // sudo resets the environment: DEBIAN_FRONTEND goes through env(1) on its command line.
  const sudo = (args) =>
    prefix.length
      ? [prefix[0], [...prefix.slice(1), "env", "DEBIAN_FRONTEND=noninteractive", ...args]]
      : [args[0], args.slice(1)];
  const env = { DEBIAN_FRONTEND: "noninteractive" };
  aptGet(sudo(["apt-get", "update", "-qq"]), env);
  aptGet(
    sudo([
      "apt-get",
      "-o",
      "DPkg::Lock::Timeout=300",
      "install",
      "-y",
      "-qq",
      "--no-install-recommends",
      ...names,
    ]),
    env,
  );
}

/**
 * Runs apt-get. A freshly booted machine often has apt-daily or unattended-upgrades holding
 * apt's locks (`apt-get update` does not wait for its lists lock, whatever DPkg::Lock::Timeout
 * says): while the failure is a held lock, try again every 10 s for up to 5 minutes.
 */
function aptGet([cmd, args], env) {
  const deadline = Date.now() + 300_000;
  for (;;) {
    console.error(`setup: ${cmd} ${args.join(" ")}`);
    const r = spawnSync(cmd, args, {
      stdio: ["ignore", "inherit", "pipe"],
      encoding: "utf8",
      env: { ...process.env, ...env },
    });
    process.stderr.write(r.stderr ?? "");
    if (r.status === 0) return;
    // "are you root?" is the same message for a lock file it may not open: not worth waiting for.
    const held = /Could not get lock|Unable to acquire the dpkg frontend lock/.test(r.stderr ?? "") &&
      !/are you root\?/.test(r.stderr ?? "");
    if (held && Date.now() < deadline) {
      console.error("setup: another apt or dpkg holds its lock; trying again in 10 s");
      spawnSync("sleep", ["10"]);
      continue;
    }
    console.error(
      `setup: ${cmd} ${args.join(" ")} failed (${r.error?.message ?? `exit ${r.status ?? r.signal}`})`,
    );
    process.exit(1);
  }
}

const wanted = (p) =>
  (!p.tests && !p.bench && !p.kernel) || (p.tests && forTests) || (p.bench && forBench) ||
  (p.kernel && forKernel);
const missing = PACKAGES.filter((p) => wanted(p) && !p.present()).map((p) => p.name);
if (missing.length > 0) aptInstall(missing);

// The runtimes' own binaries, not node_modules/.bin links: .npmrc turns bin links off because
// `deno task` would run a linked `deno` binary as a JavaScript file.
const BINARIES = { deno: ["deno", "deno"], bun: ["bun", "bin", "bun.exe"] };
const bin = (name) => join(root, "node_modules", ...BINARIES[name]);
// The versions the lock file pins (else package.json's, without a range sign): a checkout that
// moved to other versions must not go on using the old binaries (`deno --version` prints
// "deno 2.9.6 (...)", `bun --version` "1.4.5").
const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
const lock = existsSync(join(root, "package-lock.json"))
  ? JSON.parse(readFileSync(join(root, "package-lock.json"), "utf8"))
  : {};
const pinned = Object.fromEntries(["deno", "bun"].map((name) => [
  name,
  lock.packages?.[`node_modules/${name}`]?.version ??
    String(pkg.devDependencies?.[name] ?? "").replace(/^[\^~=v]+/, ""),
]));
const works = (name) => {
  if (!existsSync(bin(name))) return false;
  const r = spawnSync(bin(name), ["--version"], { encoding: "utf8" });
  const version = /(\d+\.\d+\.\d+)/.exec(r.stdout ?? "")?.[1];
  return r.status === 0 && (pinned[name] === "" || version === pinned[name]);
};
if (!works("deno") || !works("bun")) {
  // In the project whatever the caller's directory; scripts on, whatever the npm config says:
  // the deno and bun packages fetch their binaries from them.
  console.error("setup: npm install (deno and bun)");
  const r = spawnSync("npm", ["install", "--no-audit", "--no-fund", "--ignore-scripts=false"], {
    cwd: root,
    stdio: "inherit",
  });
  if (r.status !== 0 || !works("deno") || !works("bun")) {
    console.error(
      `setup: deno ${pinned.deno} and bun ${pinned.bun} did not install from npm (see the output above)`,
    );
    process.exit(1);
  }
}
