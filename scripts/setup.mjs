#!/usr/bin/env node
// Installs what `npm run demo` and `npm test` need on a fresh Debian 12 + Node machine, and
// nothing when it is already there: the system packages (liburing2 via apt-get) and the two
// runtimes (deno and bun, npm devDependencies). Usage: node scripts/setup.mjs [--test] [--bench]
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import process from "node:process";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const forTests = process.argv.includes("--test");
const forBench = process.argv.includes("--bench");

// Debian package -> how to tell it is present. Packages marked `tests` or `bench` install only
// with --test or --bench (either when both are marked).
const PACKAGES = [
  { name: "liburing2", present: () => hasLibrary("liburing.so.2"), tests: false },
  { name: "util-linux", present: () => hasCommand("losetup"), tests: true, bench: true },
  // qemu-storage-daemon: blkdebug behind a FUSE export for the fault-injection tests, and the
  // vhost-user-blk exports the virtio-blk-vhost-user driver tests run against.
  { name: "qemu-system-common", present: () => hasCommand("qemu-storage-daemon"), tests: true },
  // fio's io_uring engine, the C reference of `npm run bench`.
  { name: "fio", present: () => hasCommand("fio"), tests: false, bench: true },
  // bench/uring_loop.c, the same loop as blkio_bench in C, built by bench/run.mjs.
  { name: "gcc", present: () => hasCommand("cc"), tests: false, bench: true },
  { name: "liburing-dev", present: () => existsSync("/usr/include/liburing.h"), tests: false, bench: true },
  // A page-cached file on XFS next to the one on ext4: XFS completes buffered writes inside
  // io_uring_enter, ext4 hands each one to a kernel thread.
  { name: "xfsprogs", present: () => hasCommand("mkfs.xfs"), tests: false, bench: true },
];

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

function run(cmd, args, env = {}) {
  console.error(`setup: ${cmd} ${args.join(" ")}`);
  execFileSync(cmd, args, { stdio: "inherit", env: { ...process.env, ...env } });
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
  const sudo = (
    args,
  ) => (prefix.length ? [prefix[0], [...prefix.slice(1), ...args]] : [args[0], args.slice(1)]);
  const env = { DEBIAN_FRONTEND: "noninteractive" };
  // A freshly booted machine often has apt-daily or unattended-upgrades holding apt's locks:
  // wait for them (up to 5 minutes) instead of failing at once.
  const wait = ["-o", "DPkg::Lock::Timeout=300"];
  for (let attempt = 1;; attempt++) {
    try {
      run(...sudo(["apt-get", ...wait, "update", "-qq"]), env);
      break;
    } catch (e) {
      if (attempt === 3) throw e;
      console.error("setup: apt-get update failed (another apt holding its lists?); trying again in 20 s");
      spawnSync("sleep", ["20"]);
    }
  }
  run(...sudo(["apt-get", ...wait, "install", "-y", "-qq", "--no-install-recommends", ...names]), env);
}

const wanted = (p) => (!p.tests && !p.bench) || (p.tests && forTests) || (p.bench && forBench);
const missing = PACKAGES.filter((p) => wanted(p) && !p.present()).map((p) => p.name);
if (missing.length > 0) aptInstall(missing);

// The runtimes' own binaries, not node_modules/.bin links: .npmrc turns bin links off because
// `deno task` would run a linked `deno` binary as a JavaScript file.
const BINARIES = { deno: ["deno", "deno"], bun: ["bun", "bin", "bun.exe"] };
const bin = (name) => join(root, "node_modules", ...BINARIES[name]);
// The versions package.json pins: a checkout that moved to other versions must not go on using
// the old binaries (`deno --version` prints "deno 2.9.6 (...)", `bun --version` "1.4.5").
const pinned = JSON.parse(readFileSync(join(root, "package.json"), "utf8")).devDependencies;
const works = (name) => {
  if (!existsSync(bin(name))) return false;
  const r = spawnSync(bin(name), ["--version"], { encoding: "utf8" });
  return r.status === 0 && new RegExp(`(^|\\s)${pinned[name].replaceAll(".", "\\.")}(\\s|$)`).test(r.stdout);
};
if (!works("deno") || !works("bun")) {
  // In the project whatever the caller's directory; scripts on, whatever the npm config says:
  // the deno and bun packages fetch their binaries from them.
  execFileSync("npm", ["install", "--no-audit", "--no-fund", "--ignore-scripts=false"], {
    cwd: root,
    stdio: "inherit",
  });
  if (!works("deno") || !works("bun")) {
    console.error(
      `setup: deno ${pinned.deno} and bun ${pinned.bun} did not install from npm (see the output above)`,
    );
    process.exit(1);
  }
}
