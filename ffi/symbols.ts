// deno-lint-ignore-file camelcase
/**
 * Every native symbol the library calls, declared once in a neutral vocabulary.
 *
 * The adapters (`deno.ts`, `bun.ts`) translate this table mechanically; nothing else in the
 * project spells a C signature. Types:
 * - `i32`/`u32`: JS numbers.
 * - `i64`/`u64`: bigints in and out (Deno takes the fast path only for bigints).
 * - `ptr`: an address as a JS number (user-space addresses fit in 2^53 on x86_64 and arm64).
 * - `buf`: a `Uint8Array` whose memory the callee reads or writes during the call, or `null`.
 *
 * @module
 */

/** The neutral parameter and result types. */
export type NativeType = "i32" | "u32" | "i64" | "u64" | "ptr" | "buf" | "void";

/** One C function. */
export interface SymbolDef {
  readonly params: readonly NativeType[];
  readonly result: NativeType;
  /**
   * The call may block for long. Adapters bind it synchronously as usual and, where the runtime
   * can run a foreign call off the JS thread (Deno's `nonblocking`), also as an awaitable
   * variant for their own use (see `Native.waitEventfd`).
   */
  readonly nonblocking?: boolean;
}

/** liburing.so.2 (Debian package `liburing2`): ring setup, probing, registration, submit/wait. */
export const LIBURING_SYMBOLS = {
  // int io_uring_queue_init_params(unsigned entries, struct io_uring *ring, struct io_uring_params *p)
  io_uring_queue_init_params: { params: ["u32", "buf", "buf"], result: "i32" },
  // void io_uring_queue_exit(struct io_uring *ring)
  io_uring_queue_exit: { params: ["buf"], result: "void" },
  // struct io_uring_probe *io_uring_get_probe_ring(struct io_uring *ring)
  io_uring_get_probe_ring: { params: ["buf"], result: "ptr" },
  // void io_uring_free_probe(struct io_uring_probe *probe)
  io_uring_free_probe: { params: ["ptr"], result: "void" },
  // int io_uring_register_files(struct io_uring *ring, const int *files, unsigned nr_files)
  io_uring_register_files: { params: ["buf", "buf", "u32"], result: "i32" },
  // int io_uring_register_buffers_sparse(struct io_uring *ring, unsigned nr)  -- Linux 5.19
  io_uring_register_buffers_sparse: { params: ["buf", "u32"], result: "i32" },
  // int io_uring_register_buffers_update_tag(struct io_uring *ring, unsigned off,
  //                                          const struct iovec *iovecs, const __u64 *tags, unsigned nr)
  io_uring_register_buffers_update_tag: { params: ["buf", "u32", "buf", "buf", "u32"], result: "i32" },
  // int io_uring_register_eventfd(struct io_uring *ring, int fd)
  io_uring_register_eventfd: { params: ["buf", "i32"], result: "i32" },
  // int io_uring_register_ring_fd(struct io_uring *ring)  -- 1 when registered; Linux 5.18
  io_uring_register_ring_fd: { params: ["buf"], result: "i32" },
  // int io_uring_enter(unsigned fd, unsigned to_submit, unsigned min_complete, unsigned flags,
  //                    sigset_t *sig)  -- returns -errno
  // Never `nonblocking`, nor io_uring_enter2: `fd` may be a registered ring index (Ring), which
  // means something only on the thread that registered it, the JS thread.
  io_uring_enter: { params: ["u32", "u32", "u32", "u32", "buf"], result: "i32" },
  // int io_uring_enter2(unsigned fd, unsigned to_submit, unsigned min_complete, unsigned flags,
  //                     sigset_t *sig /* struct io_uring_getevents_arg * with EXT_ARG */, size_t sz)
  io_uring_enter2: { params: ["u32", "u32", "u32", "u32", "buf", "u64"], result: "i32" },
} as const satisfies Record<string, SymbolDef>;

/** libc.so.6: files, memory, eventfds. These return -1 and set errno on failure. */
export const LIBC_SYMBOLS = {
  // int open(const char *pathname, int flags, mode_t mode)
  open: { params: ["buf", "i32", "u32"], result: "i32" },
  // int close(int fd)
  close: { params: ["i32"], result: "i32" },
  // int fcntl(int fd, int cmd, int arg)
  fcntl: { params: ["i32", "i32", "i32"], result: "i32" },
  // int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *buf)
  // (one layout on every architecture, unlike struct stat)
  statx: { params: ["i32", "buf", "i32", "u32", "buf"], result: "i32" },
  // int fstatfs(int fd, struct statfs *buf)
  fstatfs: { params: ["i32", "buf"], result: "i32" },
  // off_t lseek(int fd, off_t offset, int whence)
  lseek: { params: ["i32", "i64", "i32"], result: "i64" },
  // ssize_t read(int fd, void *buf, size_t count)
  read: { params: ["i32", "buf", "u64"], result: "i64" },
  // ssize_t write(int fd, const void *buf, size_t count)
  write: { params: ["i32", "buf", "u64"], result: "i64" },
  // long sysconf(int name)
  sysconf: { params: ["i32"], result: "i64" },
  // int memfd_create(const char *name, unsigned int flags)
  memfd_create: { params: ["buf", "u32"], result: "i32" },
  // int ftruncate(int fd, off_t length)
  ftruncate: { params: ["i32", "i64"], result: "i32" },
  // int posix_fadvise(int fd, off_t offset, off_t len, int advice) -- returns the error number
  // itself (0 on success), not -1 and errno
  posix_fadvise: { params: ["i32", "i64", "i64", "i32"], result: "i32" },
  // void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset)
  mmap: { params: ["ptr", "u64", "i32", "i32", "i32", "i64"], result: "ptr" },
  // int munmap(void *addr, size_t length)
  munmap: { params: ["ptr", "u64"], result: "i32" },
  // int eventfd(unsigned int initval, int flags)
  eventfd: { params: ["u32", "i32"], result: "i32" },
  // int pipe2(int pipefd[2], int flags)
  pipe2: { params: ["buf", "i32"], result: "i32" },
  // int poll(struct pollfd *fds, nfds_t nfds, int timeout)
  poll: { params: ["buf", "u64", "i32"], result: "i32", nonblocking: true },
  // int socket(int domain, int type, int protocol)
  socket: { params: ["i32", "i32", "i32"], result: "i32" },
  // int connect(int sockfd, const struct sockaddr *addr, socklen_t addrlen)
  connect: { params: ["i32", "buf", "u32"], result: "i32" },
  // ssize_t sendmsg(int sockfd, const struct msghdr *msg, int flags)
  sendmsg: { params: ["i32", "buf", "i32"], result: "i64" },
  // ssize_t recvmsg(int sockfd, struct msghdr *msg, int flags)
  recvmsg: { params: ["i32", "buf", "i32"], result: "i64" },
  // int getsockopt(int sockfd, int level, int optname, void *optval, socklen_t *optlen)
  getsockopt: { params: ["i32", "i32", "i32", "buf", "buf"], result: "i32" },
  // int kill(pid_t pid, int sig)  -- sig 0: whether the process exists
  kill: { params: ["i32", "i32"], result: "i32" },
  // pid_t getpid(void), pid_t gettid(void) (glibc 2.30)
  getpid: { params: [], result: "i32" },
  gettid: { params: [], result: "i32" },
  // int *__errno_location(void)
  __errno_location: { params: [], result: "ptr" },
} as const satisfies Record<string, SymbolDef>;

/** Shared object names as dlopen(3) resolves them. */
export const LIBURING_SONAME = "liburing.so.2";
export const LIBC_SONAME = "libc.so.6";
