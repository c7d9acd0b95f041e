#!/usr/bin/env bash
# Runs test files on an older kernel: Debian 12's own (Linux 6.1) by default, or Debian 11's
# (5.10); or on Debian 13's (6.12), to tell the emulation's effects from an old kernel's. The
# suite otherwise only ever runs on the machine's kernel, and the library has many paths for
# kernels without a feature (no discard command before 6.12, no DEFER_TASKRUN before 6.1, no
# sparse buffer table or registered ring fds before 5.19/5.18, no timed waits before 5.11) that
# would never run for real. Too slow for `npm test` (software emulation): run it by hand,
# `npm run test:kernel -- [--kernel 6.1|5.10|6.12] [tests/x.test.ts ...]` (default: the whole
# suite), or after changing a fallback. BLKIO_KERNEL_TIMEOUT bounds each runtime's run in the
# guest (seconds, default 7200).
#
# How: Debian's stock kernel package (apt-get download, never installed) boots under qemu's TCG
# (no /dev/kvm needed; -cpu max has the AVX2 Bun needs) with a busybox initramfs. Its init
# loads the kernel's own modules (9p, virtio, ext4, overlay, loop, fuse), makes the host's root
# file system the guest's root (9p, read-only, with a writable overlay on top), mounts a fresh
# ext4 disk on /tmp (the tests' scratch files want a real block file system for O_DIRECT), a
# copy of the project, writable, at the copy's path, and tmpfs on /dev/shm and /run, then
# chroots, runs scripts/test.sh on those files, both runtimes, and powers off. Loop devices, FUSE
# and vhost-user all work in the guest: they are its own. Nothing of the host is changed but the
# project's .tmp/kernel (the kernels, initramfs, the copy and the outputs are kept there).
#
# Prints test.sh's summary and a per-file table for each runtime; exit status: test.sh's in
# the guest (non-zero if anything failed), or 2 when the guest did not finish.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd -P)

KERNEL=6.1
FILES=()
COMMAND=""
PREPARE=0
LIMIT=${BLKIO_KERNEL_TIMEOUT:-7200}
while [ $# -gt 0 ]; do
  case $1 in
    --kernel) KERNEL=$2; shift 2 ;;
    --kernel=*) KERNEL=${1#--kernel=}; shift ;;
    # A shell command to run in the guest (in the project) instead of the tests, to look into
    # what a kernel does: `--run 'fallocate -p -o 4096 -l 512 /tmp/f; od -An -tx1 /tmp/f'`.
    --run) COMMAND=$2; shift 2 ;;
    # Only fetch the kernel and make the initramfs (into .tmp/kernel/<version>), booting nothing.
    --prepare) PREPARE=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) FILES+=("$1"); shift ;;
  esac
done
case $KERNEL in
  6.1) SUITE="" ;;            # the host's own apt sources (Debian 12)
  5.10) SUITE=bullseye ;;     # Debian 11, from an apt configuration of its own
  # Debian 13's, a newer kernel under the same emulation: what fails on 6.1 and here too is the
  # emulation's doing (timing), not the kernel's.
  6.12) SUITE=trixie ;;
  *) echo "kernel_test: --kernel is 6.1, 5.10 or 6.12, not $KERNEL" >&2; exit 2 ;;
esac
for f in "${FILES[@]}"; do
  [ -f "$f" ] || { echo "kernel_test: no such test file: $f" >&2; exit 2; }
done

CACHE=.tmp/kernel/$KERNEL
mkdir -p "$CACHE"
log() { echo "kernel_test: $*" >&2; }
# One run per kernel at a time: a run replaces the cache's copy of the project and its outputs.
exec 9> "$CACHE/lock"
flock -n 9 || { log "another run on Linux $KERNEL is going on (.tmp/kernel/$KERNEL/lock)"; exit 2; }

# apt-get and apt-cache, for Debian 12 the host's own configuration; for another release a
# sources list, lists and package cache of its own under .tmp/kernel, so the host's stay as
# they are.
APT_OPTS=()
if [ -n "$SUITE" ]; then
  APT=.tmp/kernel/apt-$SUITE
  mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$APT/sources.d"
  cat > "$APT/sources.list" <<EOF
deb http://deb.debian.org/debian $SUITE main
deb http://deb.debian.org/debian-security $SUITE-security main
EOF
  APT_OPTS=(-o "Dir::Etc::SourceList=$ROOT/$APT/sources.list" -o "Dir::Etc::SourceParts=$ROOT/$APT/sources.d"
    -o "Dir::State::Lists=$ROOT/$APT/lists" -o "Dir::Cache=$ROOT/$APT/cache" -o "Dir::State::status=/dev/null")
fi

# 1. The kernel package: the newest linux-image-<KERNEL>.* apt knows, unpacked once.
if [ ! -f "$CACHE/vmlinuz" ]; then
  if [ -n "$SUITE" ] && [ ! -f "$APT/lists/.updated" ]; then
    apt-get "${APT_OPTS[@]}" update -qq && touch "$APT/lists/.updated"
  fi
  # The signed package (what a Debian machine boots; the same kernel as -unsigned's), named
  # linux-image-6.1.0-57-amd64 up to Debian 12, linux-image-6.12.118+deb13-amd64 from 13 on.
  pkg=$(apt-cache "${APT_OPTS[@]}" search --names-only "^linux-image-${KERNEL//./\\.}\.[0-9]+[-+][0-9a-z]+-amd64\$" |
    awk '{print $1}' | sort -V | tail -n1)
  [ -n "$pkg" ] || { log "apt knows no linux-image-$KERNEL.*-amd64 package (apt-get update?)"; exit 2; }
  log "downloading $pkg"
  rm -rf "$CACHE/deb" "$CACHE/tree" && mkdir -p "$CACHE/deb"
  # Into a directory apt's sandbox user may write (it warns, and works, otherwise).
  chmod 777 "$CACHE/deb"
  (cd "$CACHE/deb" && apt-get "${APT_OPTS[@]}" download -qq "$pkg")
  dpkg-deb -x "$CACHE"/deb/*.deb "$CACHE/tree"
  # Debian 13 has merged /usr: its modules are in /usr/lib/modules.
  if [ ! -d "$CACHE/tree/lib/modules" ]; then mkdir -p "$CACHE/tree/lib" && ln -s ../usr/lib/modules "$CACHE/tree/lib/modules"; fi
  # Newer kernels ship their modules xz-compressed, which busybox's depmod and insmod do not read.
  find "$CACHE/tree/lib/modules/" -name '*.ko.xz' -exec xz -d {} +
  # modules.dep is made by depmod when a kernel is installed, not shipped: busybox's makes it.
  /bin/busybox depmod -b "$CACHE/tree" "$(basename "$(echo "$CACHE"/tree/lib/modules/*)")"
  cp "$CACHE"/tree/boot/vmlinuz-* "$CACHE/vmlinuz"
  echo "$pkg $(dpkg-deb -f "$CACHE"/deb/*.deb Version)" > "$CACHE/package"
  rm -rf "$CACHE/deb"
fi

# 2. The initramfs: a static busybox, the kernel's modules init loads (each after those it
# depends on), and init. Made again when init or this script changes.
# ext4 asks the crypto API for crc32c at mount (a soft dependency modules.dep does not list).
MODULES=(virtio_pci virtio_blk 9pnet_virtio 9p crc32c_generic ext4 overlay loop fuse)
INITRAMFS=$CACHE/initramfs.cpio.gz
if [ ! -f "$INITRAMFS" ] || [ scripts/_kernel_test_init.sh -nt "$INITRAMFS" ] || [ "$0" -nt "$INITRAMFS" ]; then
  moddir=$(echo "$CACHE"/tree/lib/modules/*)
  [ -f "$moddir/modules.dep" ] || { log "no modules.dep under $CACHE/tree: remove $CACHE and run again"; exit 2; }
  stage=$CACHE/initramfs
  rm -rf "$stage" && mkdir -p "$stage"/{bin,modules,proc,sys,dev,lower,scratch,project,newroot}
  cp /bin/busybox "$stage/bin/busybox"
  order=()
  # Appends module $1 to `order` after what it depends on (modules.dep: "path: dep dep ...",
  # names with - or _ alike); one built into the kernel needs nothing.
  add() {
    local path dep seen
    path=$(awk -F: -v m="$1" '{ n = $1; sub(/.*\//, "", n); sub(/\.ko(\.[a-z]+)?$/, "", n); gsub(/-/, "_", n) }
      n == m { print $1; exit }' "$moddir/modules.dep")
    if [ -z "$path" ]; then
      grep -qE "/${1//_/[-_]}\.ko\$" "$moddir/modules.builtin" || { log "kernel $KERNEL has no module $1"; exit 2; }
      return 0
    fi
    for seen in "${order[@]}"; do [ "$seen" = "$path" ] && return 0; done
    for dep in $(awk -F': *' -v p="$path" '$1 == p { print $2; exit }' "$moddir/modules.dep"); do
      dep=$(basename "$dep")
      dep=${dep%%.ko*}
      add "${dep//-/_}"
    done
    order+=("$path")
  }
  for m in "${MODULES[@]}"; do add "$m"; done
  for path in "${order[@]}"; do
    name=$(basename "$path")
    case $name in
      *.ko.xz) xz -dc "$moddir/$path" > "$stage/modules/${name%.xz}" ;;
      *.ko.zst) zstd -qdc "$moddir/$path" > "$stage/modules/${name%.zst}" ;;
      *) cp "$moddir/$path" "$stage/modules/$name" ;;
    esac
    echo "${name%%.ko*}.ko" >> "$stage/modules/order"
  done
  cp scripts/_kernel_test_init.sh "$stage/init"
  chmod 755 "$stage/init"
  (cd "$stage" && find . | LC_ALL=C sort | /bin/busybox cpio -o -H newc 2> /dev/null) | gzip -1 > "$INITRAMFS"
  rm -rf "$stage"
  log "initramfs: $(tr '\n' ' ' < <(sed 's/\.ko$//' <(printf '%s\n' "${order[@]##*/}")))"
fi

[ "$PREPARE" = 0 ] || { log "Linux $KERNEL ready in $CACHE: $(cat "$CACHE/package")"; exit 0; }

# 3. The run: a copy of the project (the guest reads its files while it runs, for an hour or
# more: editing the checkout meanwhile must not change what it tests), a fresh scratch disk,
# the command for the guest, and the machine.
SNAP=$CACHE/project
rm -rf "$SNAP" && mkdir -p "$SNAP"
tar -C "$ROOT" --exclude=./.tmp --exclude=./node_modules --exclude=./dist -cf - . | tar -C "$SNAP" -xf -
ln -s "$(readlink -f node_modules)" "$SNAP/node_modules"
SNAP=$(cd "$SNAP" && pwd -P)
RUN=.tmp/kernel-run # in the copy
mkdir -p "$SNAP/$RUN"
DISK=$CACHE/scratch.img
rm -f "$DISK" && truncate -s 16G "$DISK"
mkfs.ext4 -q -F -E lazy_itable_init=1,lazy_journal_init=1 "$DISK"
trap 'rm -f "$DISK"' EXIT
{
  echo "# Written by scripts/kernel_test.sh; run by the guest's init in the project."
  echo "uname -a"
  echo 'echo "run.sh starts $(cut -d" " -f1 /proc/uptime) s after boot"'
  if [ -n "$COMMAND" ]; then
    printf '%s\n' "$COMMAND"
  else
    printf 'BLKIO_TEST_OUT=%q BLKIO_TEST_TIMEOUT=%q BLKIO_TEST_PER_FILE=1 BLKIO_TEST_NO_CHECK=1 bash scripts/test.sh' "$RUN" "$LIMIT"
    printf ' %q' "${FILES[@]}"
    printf ' 2>&1 | tee %q\nexit "${PIPESTATUS[0]}"\n' "$RUN/test.log"
  fi
} > "$SNAP/$RUN/run.sh"

log "booting $(cat "$CACHE/package") under qemu (TCG, slow: minutes per test file); follow it with tail -f $CACHE/console.log"
started=$(date +%s)
# The time limit covers the runners (each bounded by test.sh too) and the boot.
timeout --kill-after=30 $((2 * LIMIT + 600)) qemu-system-x86_64 \
  -accel tcg,thread=multi -cpu max -smp 2 -m 4G \
  -nodefaults -no-user-config -display none -serial stdio -no-reboot \
  -kernel "$CACHE/vmlinuz" -initrd "$INITRAMFS" \
  -append "console=ttyS0 panic=-1 loglevel=1 mitigations=off blkio_project=$SNAP blkio_run=$RUN" \
  -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
  -virtfs "local,path=$SNAP,mount_tag=project,security_model=none,multidevs=remap" \
  -drive "file=$DISK,if=virtio,format=raw,cache=unsafe,discard=unmap" \
  < /dev/null > "$CACHE/console.log" 2>&1 || true
# The outputs next to the console's, out of the copy (made again by the next run).
rm -rf "$CACHE/run" && cp -r "$SNAP/$RUN" "$CACHE/run"
log "the guest ran for $(($(date +%s) - started)) s; outputs in $CACHE/run, console: $CACHE/console.log"
RUN=$CACHE/run

if [ ! -f "$RUN/rc" ]; then
  log "the guest did not finish (time limit, panic or init failure); the console's end:"
  tail -n 30 "$CACHE/console.log" >&2
  exit 2
fi
echo "== Linux $KERNEL ($(cat "$CACHE/package")) =="
if [ -n "$COMMAND" ]; then
  sed -n '/^run.sh starts/,$p' "$CACHE/console.log" | sed '1d; /reboot: Power down/d'
  exit "$(cat "$RUN/rc")"
fi
sed -n '/^Per file, passed\/failed\/skipped:/,$p' "$RUN/test.log" 2> /dev/null ||
  tail -n 20 "$CACHE/console.log"
exit "$(cat "$RUN/rc")"
