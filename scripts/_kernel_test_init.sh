#!/bin/busybox sh
# PID 1 of the guest scripts/kernel_test.sh boots (it is the initramfs's /init). Builds the
# guest's root out of the host's, runs the test command the host left in the project, and
# powers off. The host passes two values on the kernel command line, which the kernel hands to
# init as environment variables: blkio_project (the project's path, where it is mounted in the
# guest too) and blkio_run (the run's directory inside the project: run.sh, the outputs).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

# Whatever goes wrong, the machine must power off, or the host waits for its time limit.
fail() {
  echo "kernel_test init: $*"
  poweroff -f
}

while read -r m; do insmod "/modules/$m" || fail "insmod $m failed"; done < /modules/order

# The host's root (read-only) under a writable overlay whose upper layer is on the scratch disk;
# the scratch disk's own ext4 as /tmp (buffered and O_DIRECT files, as on the host); the
# project, writable, at its own path. 9p: msize large enough for big reads of the runtimes'
# binaries; the host root does not change under the guest, so it may be cached.
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=loose,ro hostroot /lower ||
  fail "cannot mount the host's root (9p)"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=mmap project /project ||
  fail "cannot mount the project (9p)"
mount -t ext4 /dev/vda /scratch || fail "cannot mount the scratch disk"
mkdir -p /scratch/upper /scratch/work /scratch/tmp
chmod 1777 /scratch/tmp
mount -t overlay overlay -o lowerdir=/lower,upperdir=/scratch/upper,workdir=/scratch/work /newroot ||
  fail "cannot mount the overlay root"
R=/newroot
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
# cgroup v2 with the pids controller, for the tests that limit a child's threads.
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup && echo +pids > $R/sys/fs/cgroup/cgroup.subtree_control
mount -t fusectl fusectl $R/sys/fs/fuse/connections 2> /dev/null
mount --move /dev $R/dev
# devtmpfs has no /dev/fd: bash's process substitution (<(...)) needs it; nor /dev/stdin,
# /dev/stdout and /dev/stderr, which udev or systemd make elsewhere (blkio_copy's tests write
# to /dev/stdout).
ln -s /proc/self/fd $R/dev/fd
ln -s /proc/self/fd/0 $R/dev/stdin
ln -s /proc/self/fd/1 $R/dev/stdout
ln -s /proc/self/fd/2 $R/dev/stderr
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts
mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm
mount -t tmpfs -o mode=755 tmpfs $R/run
mount --bind /scratch/tmp $R/tmp
mkdir -p "$R$blkio_project" && mount --move /project "$R$blkio_project" || fail "cannot place the project"
ip link set lo up

# run.sh writes its own outputs into the run directory; its exit status goes there too.
# BLKIO_TEST_EMULATED tells the tests that bound how long the thread ran (not slept) that every
# instruction is emulated (qemu's TCG, 10-30 times slower): tests/_helpers.ts's EMULATED.
chroot $R /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  HOME=/root TERM=dumb NO_COLOR=1 BLKIO_TEST_EMULATED=1 /bin/bash -c "cd '$blkio_project' && bash '$blkio_run/run.sh'"
echo "$?" > "$R$blkio_project/$blkio_run/rc"
# The kernel's messages (the console shows only emergencies, so as not to split test lines).
dmesg > "$R$blkio_project/$blkio_run/dmesg.log"

# Let go of everything before powering off: the project's outputs must reach the host.
sync
umount "$R$blkio_project" || echo "kernel_test init: the project is still busy; synced, powering off"
poweroff -f
