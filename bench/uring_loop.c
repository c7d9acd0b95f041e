/*
 * The C yardstick of bench/run.mjs next to fio: the loop blkio_bench runs, written directly
 * against liburing. `depth` requests in flight; one io_uring_submit_and_wait(min 1) per turn
 * (blkio's doIo(min 1)), every ready completion reaped and resubmitted at once. Same ring
 * setup flags as the io_uring driver (on a tmpfs file without O_DIRECT COOP_TASKRUN |
 * TASKRUN_FLAG | SINGLE_ISSUER | DEFER_TASKRUN, else COOP_TASKRUN | TASKRUN_FLAG, where the
 * kernel has them),
 * page-aligned malloc'd buffers, and the registrations the driver makes: the file (fixed file
 * 0), the buffers (READ_FIXED / WRITE_FIXED, as blkio_bench's buffers live in a mapped memory
 * region) and the ring fd, each where the kernel takes it. Without them this loop measured what
 * registration saves as if it were the cost of JavaScript.
 *
 * It shows what this machine gives a C program doing the same thing, so the distance between
 * blkio and C is measured apart from the distance between this loop and fio's.
 *
 * Usage: uring_loop '<job json>' with the bench/_runner.mjs job fields (rampSeconds optional: a
 * warm-up whose I/O is not counted, as the other contenders have); prints the runner line
 * {"ios":…,"seconds":…,"usrUs":…,"sysUs":…,"p50Us":…,"p99Us":…,"note":""}.
 * Built by bench/run.mjs: cc -O2 -o .tmp/uring_loop bench/uring_loop.c -luring
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <linux/magic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#ifndef IORING_SETUP_COOP_TASKRUN
#define IORING_SETUP_COOP_TASKRUN (1U << 8)
#endif
#ifndef IORING_SETUP_TASKRUN_FLAG
#define IORING_SETUP_TASKRUN_FLAG (1U << 9)
#endif
#ifndef IORING_SETUP_SINGLE_ISSUER
#define IORING_SETUP_SINGLE_ISSUER (1U << 12)
#endif
#ifndef IORING_SETUP_DEFER_TASKRUN
#define IORING_SETUP_DEFER_TASKRUN (1U << 13)
#endif

struct job {
  char path[4096];
  char rw[16];
  unsigned long bs, depth, seconds;
  double ramp_seconds;
  unsigned long long size;
  int direct;
};

/* The job JSON is written by bench/run.mjs: flat, keys quoted, no escapes in the values. */
static const char *field(const char *json, const char *key) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\":", key);
  const char *p = strstr(json, pat);
  if (!p) {
    fprintf(stderr, "uring_loop: job has no \"%s\"\n", key);
    exit(2);
  }
  return p + strlen(pat);
}

/* A number field that may be missing (0 then). */
static double opt_num_field(const char *json, const char *key) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\":", key);
  const char *p = strstr(json, pat);
  return p ? strtod(p + strlen(pat), NULL) : 0;
}

static void str_field(const char *json, const char *key, char *out, size_t cap) {
  const char *p = field(json, key);
  if (*p != '"') {
    fprintf(stderr, "uring_loop: \"%s\" is not a string\n", key);
    exit(2);
  }
  const char *end = strchr(p + 1, '"');
  size_t n = end ? (size_t)(end - p - 1) : 0;
  if (!end || n >= cap) {
    fprintf(stderr, "uring_loop: bad \"%s\"\n", key);
    exit(2);
  }
  memcpy(out, p + 1, n);
  out[n] = 0;
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static double tv_us(struct timeval tv) { return tv.tv_sec * 1e6 + tv.tv_usec; }

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

/* xorshift64*: cheap offsets without libc's random() lock. */
static uint64_t rng = 0x9E3779B97F4A7C15ULL;
static uint64_t next_rand(void) {
  rng ^= rng >> 12;
  rng ^= rng << 25;
  rng ^= rng >> 27;
  return rng * 0x2545F4914F6CDD1DULL;
}

/* Whether the file and the buffers are registered with the ring (set once in main). */
static int fixed_file, fixed_bufs;

/* Queues request `i` (buffer i) at the next offset: sequential (wrapping) or random. */
static void queue_one(struct io_uring *ring, const struct job *j, int fd, char *mem, unsigned long i,
                      int write, int seq) {
  static unsigned long long cursor;
  unsigned long long blocks = j->size / j->bs;
  unsigned long long off = (seq ? cursor++ % blocks : next_rand() % blocks) * j->bs;
  struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
  int target = fixed_file ? 0 : fd;
  if (fixed_bufs && write) io_uring_prep_write_fixed(sqe, target, mem + i * j->bs, j->bs, off, 0);
  else if (fixed_bufs) io_uring_prep_read_fixed(sqe, target, mem + i * j->bs, j->bs, off, 0);
  else if (write) io_uring_prep_write(sqe, target, mem + i * j->bs, j->bs, off);
  else io_uring_prep_read(sqe, target, mem + i * j->bs, j->bs, off);
  if (fixed_file) sqe->flags |= IOSQE_FIXED_FILE;
  io_uring_sqe_set_data64(sqe, i);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: uring_loop '<job json>'\n");
    return 2;
  }
  struct job j;
  str_field(argv[1], "path", j.path, sizeof j.path);
  str_field(argv[1], "rw", j.rw, sizeof j.rw);
  j.bs = strtoul(field(argv[1], "bs"), NULL, 10);
  j.depth = strtoul(field(argv[1], "depth"), NULL, 10);
  j.seconds = strtoul(field(argv[1], "seconds"), NULL, 10);
  j.size = strtoull(field(argv[1], "size"), NULL, 10);
  j.ramp_seconds = opt_num_field(argv[1], "rampSeconds");
  j.direct = strncmp(field(argv[1], "direct"), "true", 4) == 0;
  int write = strcmp(j.rw, "randwrite") == 0;
  int seq = strcmp(j.rw, "read") == 0;
  if (j.bs == 0 || j.depth == 0 || j.size < j.bs) {
    fprintf(stderr, "uring_loop: bad job\n");
    return 2;
  }
  rng ^= (uint64_t)getpid() << 17;

  int fd = open(j.path, (write ? O_RDWR : O_RDONLY) | (j.direct ? O_DIRECT : 0));
  if (fd < 0) {
    fprintf(stderr, "uring_loop: open %s: %s\n", j.path, strerror(errno));
    return 1;
  }
  struct io_uring ring;
  struct io_uring_params p;
  unsigned entries = j.depth < 128 ? 128 : (unsigned)j.depth;
  /* The io_uring driver's flag sets for a queue waited on in doIo, best first (the kernel
   * refuses flags it does not know with EINVAL): DEFER_TASKRUN only on a file on tmpfs without
   * O_DIRECT, as the driver does (defersTaskWork in src/drivers/io_uring/queue.ts). */
  struct statfs sfs;
  int tmpfs_file = !j.direct && fstatfs(fd, &sfs) == 0 && sfs.f_type == TMPFS_MAGIC;
  const unsigned flag_sets[] = {
      IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_SINGLE_ISSUER |
          IORING_SETUP_DEFER_TASKRUN,
      IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
      0,
  };
  int r = -EINVAL;
  for (unsigned k = tmpfs_file ? 0 : 1; k < sizeof flag_sets / sizeof flag_sets[0] && r == -EINVAL; k++) {
    memset(&p, 0, sizeof p);
    p.flags = flag_sets[k];
    r = io_uring_queue_init_params(entries, &ring, &p);
  }
  if (r < 0) {
    fprintf(stderr, "uring_loop: io_uring_queue_init_params: %s\n", strerror(-r));
    return 1;
  }
  char *mem;
  if (posix_memalign((void **)&mem, 4096, j.bs * j.depth) != 0) return 1;
  for (unsigned long i = 0; i < j.bs * j.depth; i++) mem[i] = (char)next_rand();
  /* Best effort, as the driver: each registration the kernel refuses leaves the plain way. */
  if (!getenv("URING_LOOP_PLAIN")) {
    fixed_file = io_uring_register_files(&ring, &fd, 1) == 0;
    struct iovec iov = {mem, j.bs * j.depth};
    fixed_bufs = io_uring_register_buffers(&ring, &iov, 1) == 0;
    io_uring_register_ring_fd(&ring);
  }
  double *started = calloc(j.depth, sizeof *started);
  size_t lat_cap = 1 << 20, lat_n = 0;
  uint32_t *lat = malloc(lat_cap * sizeof *lat);
  if (!started || !lat) return 1;

  struct rusage ru0, ru1;
  getrusage(RUSAGE_SELF, &ru0);
  double t0 = now_s(), t = t0;
  /* With a warm-up, the deadline is set when it ends and what it did is dropped. */
  int ramping = j.ramp_seconds > 0;
  double deadline = t0 + (ramping ? j.ramp_seconds : (double)j.seconds);
  unsigned long long ios = 0;
  for (unsigned long i = 0; i < j.depth; i++) queue_one(&ring, &j, fd, mem, i, write, seq);
  for (unsigned long i = 0; i < j.depth; i++) started[i] = t0;
  for (;;) {
    if (t >= deadline) {
      if (!ramping) break;
      ramping = 0;
      ios = 0;
      lat_n = 0;
      getrusage(RUSAGE_SELF, &ru0);
      t0 = t;
      deadline = t0 + (double)j.seconds;
    }
    r = io_uring_submit_and_wait(&ring, 1);
    if (r < 0 && r != -EINTR) {
      fprintf(stderr, "uring_loop: io_uring_submit_and_wait: %s\n", strerror(-r));
      return 1;
    }
    t = now_s();
    struct io_uring_cqe *cqe;
    unsigned head, seen = 0;
    io_uring_for_each_cqe(&ring, head, cqe) {
      unsigned long i = (unsigned long)io_uring_cqe_get_data64(cqe);
      if (cqe->res != (int)j.bs) {
        fprintf(stderr, "uring_loop: request failed: %d\n", cqe->res);
        return 1;
      }
      if (lat_n == lat_cap) {
        lat_cap *= 2;
        lat = realloc(lat, lat_cap * sizeof *lat);
        if (!lat) return 1;
      }
      lat[lat_n++] = (uint32_t)((t - started[i]) * 1e9);
      queue_one(&ring, &j, fd, mem, i, write, seq);
      started[i] = t;
      seen++;
    }
    io_uring_cq_advance(&ring, seen);
    ios += seen;
  }
  double secs = t - t0;
  getrusage(RUSAGE_SELF, &ru1);
  qsort(lat, lat_n, sizeof *lat, cmp_u32);
  double p50 = lat_n ? lat[lat_n / 2] / 1e3 : 0, p99 = lat_n ? lat[(size_t)(lat_n * 0.99)] / 1e3 : 0;
  printf("{\"ios\":%llu,\"seconds\":%.6f,\"usrUs\":%.0f,\"sysUs\":%.0f,\"p50Us\":%.2f,\"p99Us\":%.2f,"
         "\"note\":\"\"}\n",
         ios, secs, tv_us(ru1.ru_utime) - tv_us(ru0.ru_utime), tv_us(ru1.ru_stime) - tv_us(ru0.ru_stime),
         p50, p99);
  io_uring_queue_exit(&ring);
  return 0;
}
