#!/bin/bash
# PID 1 of the aarch64 guest scripts/arm64_test.sh boots (the kernel's init=, after Debian's own
# initramfs has mounted the root image). Mounts what the tests need, runs run.sh from the shared
# directory (9p, the host's .tmp/arm64/share: the project copy, the command and the outputs, seen
# live on the host), and powers off. Unlike kernel_test.sh's guest, the root is a Debian 12 arm64
# system of its own (debootstrap), not the host's: the host's binaries are x86_64.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
fail() {
  echo "arm64_test init: $*"
  sync
  poweroff -f
}
mount -t proc proc /proc 2> /dev/null
mount -t sysfs sysfs /sys 2> /dev/null
mount -t devtmpfs devtmpfs /dev 2> /dev/null
mount -o remount,rw / || fail "cannot remount the root read-write"
for m in 9pnet_virtio 9p loop fuse overlay; do modprobe "$m" || echo "arm64_test init: modprobe $m failed"; done
mkdir -p /share
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=mmap share /share ||
  fail "cannot mount the shared directory (9p)"
# A fresh ext4 on the second disk as /tmp: the tests' scratch files want a real block file
# system for O_DIRECT (tmpfs takes O_DIRECT only from Linux 6.6).
mkfs.ext4 -q -F -E lazy_itable_init=1,lazy_journal_init=1 /dev/vdb || fail "mkfs.ext4 /dev/vdb failed"
mount -t ext4 /dev/vdb /tmp || fail "cannot mount the scratch disk"
chmod 1777 /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup && echo +pids > /sys/fs/cgroup/cgroup.subtree_control
mount -t fusectl fusectl /sys/fs/fuse/connections 2> /dev/null
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
[ -e /dev/stdin ] || ln -s /proc/self/fd/0 /dev/stdin
[ -e /dev/stdout ] || ln -s /proc/self/fd/1 /dev/stdout
[ -e /dev/stderr ] || ln -s /proc/self/fd/2 /dev/stderr
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=755 tmpfs /run
ip link set lo up
hostname arm64-guest

# BLKIO_TEST_EMULATED: every instruction is emulated (tests/_helpers.ts's EMULATED), as in
# kernel_test.sh's guest.
env -i PATH="$PATH" HOME=/root TERM=dumb NO_COLOR=1 BLKIO_TEST_EMULATED=1 \
  /bin/bash -c "cd /share/project && bash /share/run.sh" > /share/run.out 2>&1
echo "$?" > /share/rc
dmesg > /share/dmesg.log
sync
umount /share
poweroff -f
