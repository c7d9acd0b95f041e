/*
 * What a system call takes from the code that runs after it, on this machine: the return stack,
 * the indirect-branch predictor and the TLB, measured apart.
 *
 * - depth D: a chain of D non-inlined calls with, at its bottom, getppid(2) (sys) or a volatile
 *   store (none), then the D returns. The returns of frames made before a system call can only
 *   be predicted if the return-stack buffer survived it; if it did not, each one mispredicts.
 * - indirect K: getppid (or the store), then K calls through a table of function pointers to K
 *   distinct functions, in the same order every time (perfectly predictable unless the
 *   indirect predictor was flushed). indirect 0 is the control: nothing after the call.
 * - spread N: getppid (or the store), then a dependent walk through N cache lines, one line (at
 *   a random offset) in each of N distinct pages, the same lines every time, warm in L1 unless
 *   something evicted them. One load waits for the last, as JavaScript's object graphs do, so no
 *   prefetcher hides a miss.
 * - packed N: the same walk through N lines that fill N / 64 whole pages: as many lines, few
 *   pages. spread against packed tells a flushed TLB (each new page a page walk) from an
 *   emptied L1 cache (each line a miss).
 *
 * Every row alternates with the others for ROUNDS rounds. Printed: the median ns per iteration
 * without and with the system call, and what the system call added to the code around it: sys -
 * none - the call's own cost, which is taken from the rows with the same frames around the call
 * (depth 1 for the depth rows, indirect 0 for the others), median and [min, max] over the rounds.
 *
 * Build and run: cc -O2 -o .tmp/after_syscall bench/after_syscall.c && .tmp/after_syscall
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "_clock.h"

enum { ROUNDS = 9, ITERS = 100000, K_MAX = 256, PAGES = 1024, LINES_PER_PAGE = 64 };

static volatile int sink;
static int use_syscall;

static void bottom(void) {
  if (use_syscall) syscall(SYS_getppid);
  else sink++;
}

__attribute__((noinline)) static int chain(int d) {
  if (d == 0) {
    bottom();
    return 1;
  }
  int r = chain(d - 1);
  __asm__ volatile("" ::: "memory"); /* keeps the call a real call, not a tail call */
  return r + 1;
}

/* K_MAX distinct targets, each on its own cache line. */
#define FN(i) \
  __attribute__((noinline, aligned(64))) static int f##i(int x) { __asm__ volatile(""); return x + i; }
#define FN8(i) FN(i##0) FN(i##1) FN(i##2) FN(i##3) FN(i##4) FN(i##5) FN(i##6) FN(i##7)
#define FN64(i) FN8(i##0) FN8(i##1) FN8(i##2) FN8(i##3) FN8(i##4) FN8(i##5) FN8(i##6) FN8(i##7)
FN64(1) FN64(2) FN64(3) FN64(4)
#define P8(i) f##i##0, f##i##1, f##i##2, f##i##3, f##i##4, f##i##5, f##i##6, f##i##7,
#define P64(i) P8(i##0) P8(i##1) P8(i##2) P8(i##3) P8(i##4) P8(i##5) P8(i##6) P8(i##7)
static int (*const targets[K_MAX])(int) = {P64(1) P64(2) P64(3) P64(4)};
static int (*table[K_MAX])(int);

__attribute__((noinline)) static int indirect(int k) {
  int x = 0;
  for (int i = 0; i < k; i++) x = table[i](x);
  return x;
}

/* The walks: PAGES pages of 64-byte lines, page-aligned, linked in a cycle by link_walk. */
static struct line {
  struct line *next;
  char pad[64 - sizeof(struct line *)];
} lines[PAGES * LINES_PER_PAGE] __attribute__((aligned(4096)));
static int page_order[PAGES], line_order[PAGES * LINES_PER_PAGE];
/* Where the walk stands: each walk goes on from where the last one stopped, so that without a
 * system call between them walks do not overlap either (the baseline is N dependent L1 hits). */
static struct line *cursor;

static unsigned seed = 12345;
static unsigned next_random(void) {
  seed = seed * 1103515245u + 12345u;
  return seed >> 8;
}

static void shuffle(int *xs, int n) {
  for (int i = 0; i < n; i++) xs[i] = i;
  for (int i = n - 1; i > 0; i--) {
    int j = (int)(next_random() % (unsigned)(i + 1)), t = xs[i];
    xs[i] = xs[j];
    xs[j] = t;
  }
}

/* Links n lines in a random order: one in each of n distinct pages (spread), or all the lines of
 * the first n / 64 pages (packed). */
static void link_walk(int n, int packed) {
  static int pick[PAGES * LINES_PER_PAGE];
  int k = 0;
  if (packed) {
    for (int i = 0; i < PAGES * LINES_PER_PAGE && k < n; i++) {
      if (line_order[i] < n) pick[k++] = line_order[i];
    }
  } else {
    for (int i = 0; i < n; i++) {
      pick[k++] = page_order[i] * LINES_PER_PAGE + (int)(next_random() % LINES_PER_PAGE);
    }
  }
  for (int i = 0; i < n; i++) lines[pick[i]].next = &lines[pick[(i + 1) % n]];
  cursor = &lines[pick[0]];
}

__attribute__((noinline)) static void walk(int n) {
  struct line *p = cursor;
  for (int i = 0; i < n; i++) p = p->next;
  cursor = p;
}

struct row {
  const char *kind;
  int n, sys;
  double ns[ROUNDS];
};

static double run(const struct row *r) {
  use_syscall = r->sys;
  if (r->kind[0] == 's' || r->kind[0] == 'p') link_walk(r->n, r->kind[0] == 'p');
  double t0 = now_ns();
  if (r->kind[0] == 'd') {
    for (int i = 0; i < ITERS; i++) chain(r->n);
  } else if (r->kind[0] == 's' || r->kind[0] == 'p') {
    for (int i = 0; i < ITERS; i++) {
      bottom();
      walk(r->n);
    }
  } else {
    for (int i = 0; i < ITERS; i++) {
      bottom();
      sink += indirect(r->n);
    }
  }
  return (now_ns() - t0) / ITERS;
}

static double median(const double *xs) {
  double s[ROUNDS];
  for (int i = 0; i < ROUNDS; i++) s[i] = xs[i];
  qsort(s, ROUNDS, sizeof s[0], cmp_double);
  return s[ROUNDS / 2];
}

int main(void) {
  /* Fixed shuffles, so that targets and lines do not lie in address order. */
  for (int i = 0; i < K_MAX; i++) table[i] = targets[(i * 37) % K_MAX];
  shuffle(page_order, PAGES);
  shuffle(line_order, PAGES * LINES_PER_PAGE);
  static const int depths[] = {1, 8, 16, 32, 48};
  static const int ks[] = {0, 16, 64, 256};
  static const int ws[] = {16, 64, 256};
  enum {
    ND = sizeof depths / sizeof depths[0],
    NK = sizeof ks / sizeof ks[0],
    NW = sizeof ws / sizeof ws[0],
    NS = ND + NK + 2 * NW, /* rows per side */
    NR = 2 * NS,
    CONTROL = ND, /* indirect 0 */
  };
  struct row rows[NR];
  int n = 0;
  for (int s = 0; s < 2; s++) {
    for (int i = 0; i < ND; i++) rows[n++] = (struct row){"depth", depths[i], s, {0}};
    for (int i = 0; i < NK; i++) rows[n++] = (struct row){"indirect", ks[i], s, {0}};
    for (int i = 0; i < NW; i++) rows[n++] = (struct row){"spread", ws[i], s, {0}};
    for (int i = 0; i < NW; i++) rows[n++] = (struct row){"packed", ws[i], s, {0}};
  }
  for (int i = 0; i < NR; i++) run(&rows[i]); /* warm-up */
  for (int round = 0; round < ROUNDS; round++) {
    for (int i = 0; i < NR; i++) {
      struct row *r = &rows[round % 2 ? NR - 1 - i : i];
      r->ns[round] = run(r);
    }
  }
  /* The call's own cost, with the frames of each kind of row around it. */
  double call_depth = median(rows[NS].ns) - median(rows[0].ns);
  double call_flat = median(rows[NS + CONTROL].ns) - median(rows[CONTROL].ns);
  printf("system call alone: %.0f ns (depth 1), %.0f ns (indirect 0)\n", call_depth, call_flat);
  printf("%-9s %4s %10s %10s %12s %20s\n", "row", "n", "none ns", "sys ns", "added ns", "[min, max] a round");
  for (int i = 0; i < NS; i++) {
    double call = i < ND ? call_depth : call_flat;
    double added[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) added[r] = rows[i + NS].ns[r] - rows[i].ns[r] - call;
    double lo = added[0], hi = added[0];
    for (int r = 1; r < ROUNDS; r++) {
      if (added[r] < lo) lo = added[r];
      if (added[r] > hi) hi = added[r];
    }
    double none = median(rows[i].ns), sys = median(rows[i + NS].ns);
    printf("%-9s %4d %10.1f %10.1f %12.1f %9.0f, %8.0f\n", rows[i].kind, rows[i].n, none, sys,
           sys - none - call, lo, hi);
  }
  return 0;
}
