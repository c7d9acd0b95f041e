/*
 * What one system call costs on this machine: the median over 9 runs of 200,000 getppid(2)
 * calls, in ns. bench/run.mjs prints it in its machine line, since it decides how much
 * batching pays: a request that needs its own io_uring_enter pays it in full (on bare metal
 * ~0.1 µs; on a VM whose guest kernel runs outside hardware virtualization, 10x that).
 *
 * Built by bench/run.mjs: cc -O2 -o .tmp/syscall_cost bench/syscall_cost.c
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "_clock.h"

int main(void) {
  enum { RUNS = 9, CALLS = 200000 };
  double ns[RUNS];
  for (int r = 0; r < RUNS; r++) {
    double t0 = now_ns();
    /* syscall(), not getppid(): libc may not cache it, but the call must reach the kernel. */
    for (int i = 0; i < CALLS; i++) syscall(SYS_getppid);
    ns[r] = (now_ns() - t0) / CALLS;
  }
  qsort(ns, RUNS, sizeof ns[0], cmp_double);
  printf("%.0f\n", ns[RUNS / 2]);
  return 0;
}
