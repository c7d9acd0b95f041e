#!/usr/bin/env bash
# Runs test files on aarch64: an emulated arm64 machine (qemu-system-aarch64, TCG, -M virt -cpu max
# without SVE, 2 vCPUs, 4 GiB) booting Debian 12's arm64 kernel (6.1) on a Debian 12 arm64 root,
# with the aarch64 builds of the runtime versions package.json pins. The library has one value per
# architecture (O_DIRECT, src/sys.ts) and reads kernel structs through typed views, which only a
# real arm64 kernel and the runtimes' arm64 FFI can check. Very slow (every instruction emulated):
# by hand, `bash scripts/arm64_test.sh [tests/x.test.ts ...]` (default: the files below, most basic
# first). Each file runs on Deno, then on Bun, before the next, so a run cut short by
# BLKIO_ARM64_TIMEOUT (seconds for the whole guest, default 7200) has covered the same files on
# both. Deno runs with --no-check (its type check takes minutes emulated; the source is the one
# checked on the host).
#
# Needs on the host (Debian 12): qemu-system-arm, debootstrap, npm, and, for the first run only
# (debootstrap's second stage runs arm64 binaries), qemu-user-static with its aarch64 binfmt
# handler registered (/proc/sys/fs/binfmt_misc/qemu-aarch64); see the message below if it is not.
# Nothing of the host is changed but the project's .tmp/arm64: the root file system (rootfs/,
# root.img), the runtimes (npm/), the shared directory the guest mounts over 9p (share/: the
# project copy, run.sh, the outputs) and the console log.
#
# Prints the per-file tables; exit status: run.sh's in the guest (non-zero if a file failed),
# or 2 when the guest did not finish.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd -P)
W=.tmp/arm64
mkdir -p "$W"
LIMIT=${BLKIO_ARM64_TIMEOUT:-7200}
# The CPU model. With SVE (plain -cpu max), Bun 1.4.5 crashed at random in this emulation (QEMU
# 7.2): segfaults at NaN-boxed values taken for pointers, a JavaScriptCore assertion, a TypeError
# thrown by a strict comparison, in 6 of 21 files; with sve=off, or as neoverse-n1 (an Armv8.2
# server core without SVE, Graviton 2's), the same files passed, and Deno's results were the same
# either way. So SVE is off by default: BLKIO_ARM64_CPU=max,pauth-impdef=on plays the crashes again.
# -cpu max's pointer authentication with the architected algorithm (QARMA) is slow to emulate;
# pauth-impdef keeps the feature with a cheaper one.
CPU=${BLKIO_ARM64_CPU:-max,pauth-impdef=on,sve=off}
# More environment for the tests in the guest, NAME=value words (BUN_JSC_useJIT=0, say, to run
# Bun's JavaScriptCore without its JITs).
GUEST_ENV=${BLKIO_ARM64_GUEST_ENV:-}
# A shell command to run in the guest (in the project) after the versions, instead of the tests,
# to look into what happens there: BLKIO_ARM64_RUN='python3 tests/fixtures/fake_vhost_user.py ...'.
COMMAND=${BLKIO_ARM64_RUN:-}
log() { echo "arm64_test: $*" >&2; }
exec 9> "$W/lock"
flock -n 9 || { log "another run is going on ($W/lock)"; exit 2; }

FILES=("$@")
if [ ${#FILES[@]} -eq 0 ]; then
  for f in read write fd queues mem_regions fixed_buffers properties flags buffers registered_ring \
    completion_fd eventfd_relay block_device discard write_zeroes durability virtio_blk virtqueue \
    cancel lifecycle bad_input; do FILES+=("tests/$f.test.ts"); done
  for f in tests/*.test.ts; do
    case " ${FILES[*]} " in *" $f "*) ;; *) FILES+=("$f") ;; esac
  done
fi
for f in "${FILES[@]}"; do [ -f "$f" ] || { log "no such test file: $f"; exit 2; }; done

DENO_VERSION=$(node -p 'require("./package.json").devDependencies.deno')
BUN_VERSION=$(node -p 'require("./package.json").devDependencies.bun')

# 1. The runtimes: npm's aarch64 packages of the pinned versions (npm pack: no install scripts).
if [ ! -f "$W/npm/deno/deno" ] || [ ! -f "$W/npm/bun/bin/bun" ] || [ "$(cat "$W/npm/versions" 2> /dev/null)" != "$DENO_VERSION $BUN_VERSION" ]; then
  rm -rf "$W/npm" && mkdir -p "$W/npm/deno" "$W/npm/bun"
  (cd "$W/npm" && npm pack -q "@deno/linux-arm64-glibc@$DENO_VERSION" "@oven/bun-linux-aarch64@$BUN_VERSION" > /dev/null)
  tar -C "$W/npm/deno" --strip-components=1 -xzf "$W"/npm/deno-linux-arm64-glibc-*.tgz
  tar -C "$W/npm/bun" --strip-components=1 -xzf "$W"/npm/oven-bun-linux-aarch64-*.tgz
  echo "$DENO_VERSION $BUN_VERSION" > "$W/npm/versions"
fi

# 2. The root file system: Debian 12 arm64 with what the tests call (losetup, mkfs.ext4, a C
# compiler and libfuse3 for the FUSE fixture, qemu-storage-daemon for vhost-user, python3 and not
# python3-minimal, which has no mmap module for the fake vhost-user back-end, strace) and the
# kernel, whose postinst makes the initramfs that mounts the root.
RFS=$W/rootfs
if [ ! -f "$RFS/.done" ]; then
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || {
    log "debootstrap's second stage runs arm64 binaries: apt-get install qemu-user-static, then (without"
    log "systemd or binfmt-support to do it) mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc &&"
    log "cat /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register"
    exit 2
  }
  rm -rf "$RFS"
  # debootstrap resolves no virtual packages (libfuse3-dev's libselinux-dev): the base system and
  # the kernel from it, the rest from apt in the chroot (under qemu-user; the kernel's postinst
  # makes the initramfs there, several minutes). These two commands are the steps that made the
  # root of the first runs (2026-12-07), by hand, one at a time; the block was then run end to end
  # as written, from no .tmp/arm64, on 2026-12-07 (2 host vCPUs, nice 19): 22 minutes, 14 for
  # debootstrap and 8 for apt, half of it making the initramfs (about 6 minutes in each). apt's
  # "E: Can not write log (Is /dev/pts mounted?)" there is harmless.
  debootstrap --arch=arm64 --variant=minbase --include=linux-image-arm64,kmod,util-linux,mount,e2fsprogs \
    bookworm "$RFS" http://deb.debian.org/debian
  chroot "$RFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive sh -c \
    'apt-get update -qq && apt-get install -y -q --no-install-recommends liburing2 fuse3 libfuse3-dev gcc libc6-dev \
      pkg-config qemu-system-common qemu-block-extra procps iproute2 busybox xz-utils python3 strace git &&
     apt-get clean'
  touch "$RFS/.done"
fi
cp "$ROOT/scripts/_arm64_test_init.sh" "$RFS/usr/local/sbin/blkio-arm64-init"
chmod 755 "$RFS/usr/local/sbin/blkio-arm64-init"
rm -rf "$RFS/opt/deno" "$RFS/opt/bun"
cp -a "$W/npm/deno" "$RFS/opt/deno"
cp -a "$W/npm/bun" "$RFS/opt/bun"
# The root image, made again from the tree each run (the tree is what is kept): ext4, 2 GiB free.
rm -f "$W/root.img"
mkfs.ext4 -q -F -L blkroot -d "$RFS" "$W/root.img" $(($(du -sm "$RFS" | cut -f1) + 2048))M
KVER=$(basename "$(ls -d "$RFS"/lib/modules/* | sort -V | tail -n1)")

# 3. The shared directory: a copy of the project (the guest reads it for hours: editing the
# checkout meanwhile must not change what it tests) with node_modules pointing at the arm64
# runtimes in the guest's /opt, and run.sh.
SH=$W/share
rm -rf "$SH" && mkdir -p "$SH/project/node_modules/deno" "$SH/project/node_modules/bun/bin" "$SH/out"
tar -C "$ROOT" --exclude=./.tmp --exclude=./node_modules --exclude=./dist -cf - . | tar -C "$SH/project" -xf -
ln -s /opt/deno/deno "$SH/project/node_modules/deno/deno"
ln -s /opt/bun/bin/bun "$SH/project/node_modules/bun/bin/bun.exe"
# And the type declarations (no code, the same on every architecture): the tests that type-check
# (publish: deno publish, deno check) resolve npm:@types/node from node_modules, and failed with
# "Could not find a matching package for 'npm:@types/node'" without them.
for p in @types bun-types undici-types; do
  [ ! -d "node_modules/$p" ] || cp -RL "node_modules/$p" "$SH/project/node_modules/"
done
{
  echo "# Written by scripts/arm64_test.sh; run by the guest's init in the project."
  echo 'set -u; uname -a; echo "liburing: $(dpkg-query -W liburing2)"'
  echo 'echo "deno: $(node_modules/deno/deno --version | head -n1)"; echo "bun: $(node_modules/bun/bin/bun.exe --version)"'
  [ -z "$GUEST_ENV" ] || echo "export $GUEST_ENV; echo 'guest environment: $GUEST_ENV'"
  echo 'echo "run.sh starts $(cut -d" " -f1 /proc/uptime) s after boot"; rc=0'
  [ -z "$COMMAND" ] || { printf '%s\n' "$COMMAND"; FILES=(); }
  for f in "${FILES[@]}"; do
    n=$(basename "$f" .test.ts)
    printf 'echo "=== %s $(date -u +%%T)"; s=$SECONDS\n' "$f"
    printf 'BLKIO_TEST_OUT=/share/out/%s BLKIO_TEST_TIMEOUT=3600 BLKIO_TEST_PER_FILE=1 BLKIO_TEST_NO_CHECK=1 bash scripts/test.sh %q > /share/out/%s.log 2>&1 || rc=1\n' "$n" "$f" "$n"
    printf 'echo "$(sed -n "/^Per file/,\\$p" /share/out/%s.log | sed -n 3p) ($((SECONDS - s)) s)"; sync\n' "$n"
  done
  echo 'exit $rc'
} > "$SH/run.sh"

# 4. The machine. The disks are PCI devices, probed in slot order: vda the root, vdb the
# scratch disk (made ext4 by the guest).
rm -f "$W/scratch.img" && truncate -s 16G "$W/scratch.img"
trap 'rm -f "$ROOT/$W/scratch.img"' EXIT
log "booting Linux $KVER (arm64, TCG, -cpu $CPU); follow it with tail -f $W/console.log $W/share/run.out"
started=$(date +%s)
timeout --kill-after=30 "$LIMIT" qemu-system-aarch64 \
  -M virt -cpu "$CPU" -accel tcg,thread=multi -smp 2 -m 4G \
  -nodefaults -no-user-config -display none -serial "file:$W/console.log" -no-reboot \
  -kernel "$RFS/boot/vmlinuz-$KVER" -initrd "$RFS/boot/initrd.img-$KVER" \
  -append "console=ttyAMA0 root=/dev/vda rw rootfstype=ext4 init=/usr/local/sbin/blkio-arm64-init panic=-1 loglevel=4" \
  -drive "file=$W/root.img,if=none,id=root,format=raw,cache=unsafe" -device virtio-blk-pci,drive=root,addr=0x4 \
  -drive "file=$W/scratch.img,if=none,id=scratch,format=raw,cache=unsafe,discard=unmap" -device virtio-blk-pci,drive=scratch,addr=0x5 \
  -fsdev "local,id=share,path=$SH,security_model=none,multidevs=remap" -device virtio-9p-pci,fsdev=share,mount_tag=share,addr=0x6 \
  < /dev/null > "$W/qemu.log" 2>&1 || true
log "the guest ran for $(($(date +%s) - started)) s; outputs in $SH/out, $SH/run.out"
cat "$SH/run.out" 2> /dev/null || true
[ -f "$SH/rc" ] || { log "the guest did not finish (time limit, panic or init failure); the console's end:"; tail -n 30 "$W/console.log" >&2; exit 2; }
exit "$(cat "$SH/rc")"
