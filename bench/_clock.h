/*
 * What the C benchmarks share: a monotonic clock in ns and a comparator for qsort of doubles
 * (their medians). Header-only, so that each benchmark still builds with one cc line.
 */
#ifndef BLKIO_BENCH_CLOCK_H
#define BLKIO_BENCH_CLOCK_H
#include <time.h>

static inline double now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e9 + t.tv_nsec;
}

static inline int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

#endif
