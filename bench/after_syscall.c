/*
 * What a system call takes from the code that runs after it, on this machine: the return stack
 * and the indirect-branch predictor, measured apart.
 *
 * - depth D: a chain of D non-inlined calls with, at its bottom, getppid(2) (sys) or a volatile
 *   store (none), then the D returns. The returns of frames made before a system call can only
 *   be predicted if the return-stack buffer survived it; if it did not, each one mispredicts.
 * - indirect K: getppid (or the store), then K calls through a table of function pointers to K
 *   distinct functions, in the same order every time (perfectly predictable unless the
 *   indirect predictor was flushed).
 * - spread N: getppid (or the store), then a dependent walk through N cache lines scattered over
 *   a 256 KiB buffer (64 pages), the same lines every time (warm in L1 for N up to 512 unless
 *   something evicted them): one load waits for the last, as JavaScript's object graphs do, so
 *   no prefetcher hides a miss.
 * - packed N: the same walk through the first N lines of the buffer only (N / 64 pages): what
 *   a walk costs when it touches few pages. spread against packed tells a flushed TLB (each new
 *   page a page walk) from an emptied L1 cache (each line a miss).
 *
 * Every row alternates with the others for ROUNDS rounds; the median ns per iteration is
 * printed, and for the sys rows the cost over (none row + the depth-1 sys row's system call):
 * what the system call added to the code around it.
 *
 * Build and run: cc -O2 -o .tmp/after_syscall bench/after_syscall.c && .tmp/after_syscall
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

enum { ROUNDS = 9, ITERS = 100000, K_MAX = 256 };

static volatile int sink;
static int use_syscall;

static double now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e9 + t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

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

/* The walks: LINES cache lines of 64 bytes, linked in a cycle by link_chase. */
enum { LINES = 4096 };
static struct line {
  struct line *next;
  char pad[64 - sizeof(struct line *)];
} lines[LINES] __attribute__((aligned(64)));
static int order[LINES];
/* Where the walk stands: each walk goes on from where the last one stopped, so that without a
 * system call between them walks do not overlap either (the baseline is N dependent L1 hits). */
static struct line *cursor;

/* Links `n` lines taken in the shuffled order: any n of them (spread), or only lines 0..n-1. */
static void link_chase(int n, int packed) {
  static int pick[LINES];
  int k = 0;
  for (int i = 0; i < LINES && k < n; i++) {
    if (!packed || order[i] < n) pick[k++] = order[i];
  }
  for (int i = 0; i < n; i++) lines[pick[i]].next = &lines[pick[(i + 1) % n]];
  cursor = &lines[pick[0]];
}

__attribute__((noinline)) static void chase(int n) {
  struct line *p = cursor;
  for (int i = 0; i < n; i++) p = p->next;
  cursor = p;
}

__attribute__((noinline)) static int indirect(int k) {
  int x = 0;
  for (int i = 0; i < k; i++) x = table[i](x);
  return x;
}

struct row {
  const char *kind;
  int n, sys;
  double ns[ROUNDS];
};

static double run(const struct row *r) {
  use_syscall = r->sys;
  double t0 = now_ns();
  if (r->kind[0] == 'd') {
    for (int i = 0; i < ITERS; i++) chain(r->n);
  } else if (r->kind[0] == 's' || r->kind[0] == 'p') {
    link_chase(r->n, r->kind[0] == 'p');
    for (int i = 0; i < ITERS; i++) {
      bottom();
      chase(r->n);
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
  /* A fixed shuffle, so that the targets do not lie in address order. */
  for (int i = 0; i < K_MAX; i++) table[i] = targets[(i * 37) % K_MAX];
  /* A fixed shuffle of the lines (LCG), so the walk jumps around the buffer. */
  unsigned seed = 12345;
  for (int i = 0; i < LINES; i++) order[i] = i;
  for (int i = LINES - 1; i > 0; i--) {
    seed = seed * 1103515245u + 12345u;
    int j = (int)((seed >> 8) % (unsigned)(i + 1)), t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  static const int depths[] = {1, 8, 16, 32, 48};
  static const int ks[] = {0, 16, 64, 256};
  static const int cs[] = {16, 64, 256, 1024};
  enum {
    ND = sizeof depths / sizeof depths[0],
    NK = sizeof ks / sizeof ks[0],
    NC = sizeof cs / sizeof cs[0],
    NS = ND + NK + 2 * NC, /* rows per side */
    NR = 2 * NS,
  };
  struct row rows[NR];
  int n = 0;
  for (int s = 0; s < 2; s++) {
    for (int i = 0; i < ND; i++) rows[n++] = (struct row){"depth", depths[i], s, {0}};
    for (int i = 0; i < NK; i++) rows[n++] = (struct row){"indirect", ks[i], s, {0}};
    for (int i = 0; i < NC; i++) rows[n++] = (struct row){"spread", cs[i], s, {0}};
    for (int i = 0; i < NC; i++) rows[n++] = (struct row){"packed", cs[i], s, {0}};
  }
  for (int i = 0; i < NR; i++) run(&rows[i]); /* warm-up */
  for (int round = 0; round < ROUNDS; round++) {
    for (int i = 0; i < NR; i++) {
      struct row *r = &rows[round % 2 ? NR - 1 - i : i];
      r->ns[round] = run(r);
    }
  }
  /* The system call alone: the depth-1 sys row less the depth-1 none row. */
  double call = median(rows[NS].ns) - median(rows[0].ns);
  printf("system call alone: %.0f ns (getppid at depth 1, less the same loop without it)\n", call);
  printf("%-9s %4s %12s %12s %16s\n", "row", "n", "none ns", "sys ns", "sys added ns");
  for (int i = 0; i < NS; i++) {
    double none = median(rows[i].ns), sys = median(rows[i + NS].ns);
    printf("%-9s %4d %12.1f %12.1f %16.1f\n", rows[i].kind, rows[i].n, none, sys, sys - none - call);
  }
  return 0;
}
