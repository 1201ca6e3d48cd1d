/* shim.c — LD_PRELOAD recorder for the power-cut test: logs every write, flush and
 * directory change the processes it is preloaded into make under $PC_ROOT to the trace
 * file $PC_TRACE, in one total order across all of them, together with the
 * acknowledgements the workloads report through pc_ack().
 *
 * Each record: u8 type, u64 inode, u64 offset, u32 length, then `length` bytes. Types:
 *   W  data written at offset (pwrite, write, writev, pwritev)
 *   D  data written through an O_DSYNC/O_SYNC descriptor: durable when the call returns
 *   T  file truncated or extended to `offset` bytes (ftruncate, open with O_TRUNC,
 *      fallocate without FALLOC_FL_KEEP_SIZE; allocating blocks changes no byte)
 *   B  flush of the inode begins (fsync, fdatasync); offset = flush id (unique in the
 *      trace, whichever process flushes)
 *   E  that flush returned: every W/T of the inode recorded before its B is durable
 *   b/e  the same for a directory (payload: its path)
 *   C  file created (payload: path); M mkdir, U unlink, X rmdir (payload: path);
 *   R  rename (payload: old path, NUL, new path)
 *   A  the workload's acknowledgement (payload: its text)
 *   Z  msync: LMDB writes through its map (MDB_WRITEMAP), which the replay cannot model
 * Paths are relative to $PC_ROOT ("." is the root itself). Files are named by inode, which
 * every process sees alike. LMDB's lock file, the write-ahead file's shared state
 * (wal.shm), the shared commits' slots (commit.shm), the notification board and sockets
 * hold no data (mapped shared state that
 * recovery rebuilds, or locks) and are not tracked: crash images do not have them.
 *
 * A write holds the shim's lock across the system call, so the trace order is the order
 * the kernel saw. A flush releases it while it runs: writes that land meanwhile are
 * recorded after its B, so the replay never counts them as covered by it. The lock is
 * this process's mutex and, across processes, an OFD lock on $PC_TRACE.lock, whose first
 * eight bytes (mapped) count the flushes; the trace is opened O_APPEND by every process
 * (the first creates it). A process started with the shim preloaded joins the same
 * trace, so a workload that runs several processes (fork + exec) is recorded whole. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAXFD 4096

struct fdinfo {
  int tracked;
  int dir;
  int dsync;
  uint64_t ino;
  char rel[PATH_MAX];
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct fdinfo fds[MAXFD];
static char root[PATH_MAX];
static size_t root_len;
static int trace_fd = -1;
static int lock_fd = -1;    /* $PC_TRACE.lock: the lock between processes */
static uint64_t *flush_seq; /* its first eight bytes, mapped shared */
static int ready;

static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_close)(int);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static int (*real_ftruncate)(int, off_t);
static int (*real_fallocate)(int, int, off_t, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_rename)(const char *, const char *);
static int (*real_unlink)(const char *);
static int (*real_mkdir)(const char *, mode_t);
static int (*real_rmdir)(const char *);
static int (*real_msync)(void *, size_t, int);
static int (*real_fcntl)(int, int, ...);

/* Finds the real functions. Called by the constructor, or earlier by the first wrapper
 * a sanitizer runtime calls while it starts (before this library's constructor ran). */
static void resolve(void) {
  static int done;
  if (done) return;
  done = 1;
  real_open = dlsym(RTLD_NEXT, "open");
  real_open64 = dlsym(RTLD_NEXT, "open64");
  real_openat = dlsym(RTLD_NEXT, "openat");
  real_close = dlsym(RTLD_NEXT, "close");
  real_write = dlsym(RTLD_NEXT, "write");
  real_pwrite = dlsym(RTLD_NEXT, "pwrite");
  real_pwrite64 = dlsym(RTLD_NEXT, "pwrite64");
  real_writev = dlsym(RTLD_NEXT, "writev");
  real_pwritev = dlsym(RTLD_NEXT, "pwritev");
  real_ftruncate = dlsym(RTLD_NEXT, "ftruncate");
  real_fallocate = dlsym(RTLD_NEXT, "fallocate");
  real_fsync = dlsym(RTLD_NEXT, "fsync");
  real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
  real_rename = dlsym(RTLD_NEXT, "rename");
  real_unlink = dlsym(RTLD_NEXT, "unlink");
  real_mkdir = dlsym(RTLD_NEXT, "mkdir");
  real_rmdir = dlsym(RTLD_NEXT, "rmdir");
  real_msync = dlsym(RTLD_NEXT, "msync");
  real_fcntl = dlsym(RTLD_NEXT, "fcntl");
}

/* The shim's lock: the mutex orders this process's threads, the OFD lock (owned by the
 * open file description, which this process alone has: O_CLOEXEC, and a child that
 * forks runs exec before it writes) orders the processes. */
static void lock(void) {
  pthread_mutex_lock(&mu);
  struct flock l = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
  while (real_fcntl(lock_fd, F_OFD_SETLKW, &l) < 0)
    if (errno != EINTR) abort(); /* unordered records would make the test lie */
}

static void unlock(void) {
  struct flock l = {.l_type = F_UNLCK, .l_whence = SEEK_SET};
  if (real_fcntl(lock_fd, F_OFD_SETLK, &l) < 0) abort();
  pthread_mutex_unlock(&mu);
}

__attribute__((constructor)) static void init(void) {
  resolve();
  const char *r = getenv("PC_ROOT"), *t = getenv("PC_TRACE");
  if (!r || !t || strlen(r) >= sizeof root) return;
  snprintf(root, sizeof root, "%s", r);
  root_len = strlen(root);
  while (root_len > 1 && root[root_len - 1] == '/') root[--root_len] = '\0';
  char lf[PATH_MAX];
  if (snprintf(lf, sizeof lf, "%s.lock", t) >= (int)sizeof lf) return;
  /* Every process appends to the same trace: the one that comes first creates it (the
   * harness gives a path that does not exist yet). */
  trace_fd = real_open(t, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  lock_fd = real_open(lf, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (trace_fd < 0 || lock_fd < 0 || real_ftruncate(lock_fd, 4096) < 0) abort();
  void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, lock_fd, 0);
  if (p == MAP_FAILED) abort();
  flush_seq = p;
  ready = 1;
}

static void put(int type, uint64_t ino, uint64_t off, const void *a, size_t alen, const void *b,
                size_t blen) {
  unsigned char h[21];
  uint32_t len = (uint32_t)(alen + blen);
  h[0] = (unsigned char)type;
  memcpy(h + 1, &ino, 8);
  memcpy(h + 9, &off, 8);
  memcpy(h + 17, &len, 4);
  struct iovec iov[3] = {{h, sizeof h}, {(void *)a, alen}, {(void *)b, blen}};
  size_t want = sizeof h + len;
  ssize_t n = real_writev(trace_fd, iov, 3);
  if (n != (ssize_t)want) abort(); /* a torn trace would make the test lie */
}

/* The path relative to the root, or NULL when it is not under it or holds no data. */
static const char *rel_of(int dirfd, const char *path, char *buf) {
  char abs[PATH_MAX * 2];
  if (path[0] == '/') {
    snprintf(abs, sizeof abs, "%s", path);
  } else if (dirfd >= 0 && dirfd < MAXFD && fds[dirfd].tracked && fds[dirfd].dir) {
    snprintf(abs, sizeof abs, "%s/%s/%s", root, fds[dirfd].rel, path);
  } else {
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd)) return NULL;
    snprintf(abs, sizeof abs, "%s/%s", cwd, path);
  }
  /* Normalise "//" and "/./" so prefixes compare. */
  char *o = abs;
  for (const char *p = abs; *p;) {
    if (p[0] == '/' && p[1] == '/') {
      p++;
    } else if (p[0] == '/' && p[1] == '.' && (p[2] == '/' || !p[2])) {
      p += 2;
    } else {
      *o++ = *p++;
    }
  }
  *o = '\0';
  if (strncmp(abs, root, root_len)) return NULL;
  const char *rest = abs + root_len;
  if (*rest && *rest != '/') return NULL;
  while (*rest == '/') rest++;
  snprintf(buf, PATH_MAX, "%s", *rest ? rest : ".");
  const char *base = strrchr(buf, '/');
  base = base ? base + 1 : buf;
  size_t bl = strlen(base);
  if (!strcmp(base, "lock.mdb") || !strcmp(base, "wal.shm") || !strcmp(base, "commit.shm") ||
      !strcmp(base, "notify.board") || !strcmp(base, "daemon.lock") ||
      (bl > 4 && !strcmp(base + bl - 4, ".ipc")))
    return NULL;
  return buf;
}

static int tracked(int fd) { return ready && fd >= 0 && fd < MAXFD && fds[fd].tracked; }

static int do_open(int dirfd, const char *path, int flags, mode_t mode, int at) {
  resolve();
  if (!ready) {
    return at ? real_openat(dirfd, path, flags, mode) : real_open(path, flags, mode);
  }
  lock();
  char buf[PATH_MAX];
  const char *rel = rel_of(at ? dirfd : AT_FDCWD, path, buf);
  struct stat st;
  int existed = 1;
  if (rel) existed = (at ? fstatat(dirfd, path, &st, 0) : stat(path, &st)) == 0;
  int fd = at ? real_openat(dirfd, path, flags, mode) : real_open(path, flags, mode);
  int e = errno;
  if (fd >= 0 && fd < MAXFD) fds[fd].tracked = 0;
  if (fd >= 0 && fd < MAXFD && rel && fstat(fd, &st) == 0) {
    struct fdinfo *f = &fds[fd];
    f->tracked = 1;
    f->dir = S_ISDIR(st.st_mode);
    f->dsync = (flags & (O_DSYNC | O_SYNC)) != 0;
    f->ino = (uint64_t)st.st_ino;
    snprintf(f->rel, sizeof f->rel, "%s", rel);
    if (!f->dir) {
      if (!existed) put('C', f->ino, 0, rel, strlen(rel), NULL, 0);
      if (existed && (flags & O_TRUNC)) put('T', f->ino, 0, NULL, 0, NULL, 0);
    }
  }
  unlock();
  errno = e;
  return fd;
}

static mode_t mode_arg(int flags, va_list ap) {
  return (flags & (O_CREAT | __O_TMPFILE)) ? (mode_t)va_arg(ap, int) : 0;
}

int open(const char *path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t m = mode_arg(flags, ap);
  va_end(ap);
  return do_open(AT_FDCWD, path, flags, m, 0);
}

int open64(const char *path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t m = mode_arg(flags, ap);
  va_end(ap);
  return do_open(AT_FDCWD, path, flags, m, 0);
}

int openat(int dirfd, const char *path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t m = mode_arg(flags, ap);
  va_end(ap);
  return do_open(dirfd, path, flags, m, 1);
}

int openat64(int dirfd, const char *path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  mode_t m = mode_arg(flags, ap);
  va_end(ap);
  return do_open(dirfd, path, flags, m, 1);
}

int creat(const char *path, mode_t mode) {
  return do_open(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode, 0);
}

int close(int fd) {
  resolve();
  if (tracked(fd)) {
    lock();
    fds[fd].tracked = 0;
    int rc = real_close(fd);
    unlock();
    return rc;
  }
  return real_close(fd);
}

static void record_write(int fd, off_t off, const struct iovec *iov, int n, ssize_t done) {
  if (done <= 0) return;
  size_t total = 0;
  for (int i = 0; i < n; i++) total += iov[i].iov_len;
  if ((size_t)done < total) total = (size_t)done;
  unsigned char *buf = malloc(total);
  if (!buf) abort();
  size_t at = 0;
  for (int i = 0; i < n && at < total; i++) {
    size_t c = iov[i].iov_len < total - at ? iov[i].iov_len : total - at;
    memcpy(buf + at, iov[i].iov_base, c);
    at += c;
  }
  put(fds[fd].dsync ? 'D' : 'W', fds[fd].ino, (uint64_t)off, buf, total, NULL, 0);
  free(buf);
}

static ssize_t vwrite(int fd, const struct iovec *iov, int n, off_t off, int positioned) {
  lock();
  off_t at = positioned ? off : lseek(fd, 0, SEEK_CUR);
  ssize_t rc = positioned ? real_pwritev(fd, iov, n, off) : real_writev(fd, iov, n);
  int e = errno;
  if (at >= 0) record_write(fd, at, iov, n, rc);
  unlock();
  errno = e;
  return rc;
}

ssize_t write(int fd, const void *b, size_t n) {
  resolve();
  if (!tracked(fd)) return real_write(fd, b, n);
  struct iovec v = {(void *)b, n};
  return vwrite(fd, &v, 1, 0, 0);
}

ssize_t pwrite(int fd, const void *b, size_t n, off_t off) {
  resolve();
  if (!tracked(fd)) return real_pwrite(fd, b, n, off);
  struct iovec v = {(void *)b, n};
  return vwrite(fd, &v, 1, off, 1);
}

ssize_t pwrite64(int fd, const void *b, size_t n, off_t off) {
  resolve();
  if (!tracked(fd)) return real_pwrite64(fd, b, n, off);
  struct iovec v = {(void *)b, n};
  return vwrite(fd, &v, 1, off, 1);
}

ssize_t writev(int fd, const struct iovec *iov, int n) {
  resolve();
  if (!tracked(fd)) return real_writev(fd, iov, n);
  return vwrite(fd, iov, n, 0, 0);
}

ssize_t pwritev(int fd, const struct iovec *iov, int n, off_t off) {
  resolve();
  if (!tracked(fd)) return real_pwritev(fd, iov, n, off);
  return vwrite(fd, iov, n, off, 1);
}

int ftruncate(int fd, off_t len) {
  resolve();
  if (!tracked(fd)) return real_ftruncate(fd, len);
  lock();
  int rc = real_ftruncate(fd, len);
  int e = errno;
  if (rc == 0) put('T', fds[fd].ino, (uint64_t)len, NULL, 0, NULL, 0);
  unlock();
  errno = e;
  return rc;
}

int fallocate(int fd, int mode, off_t off, off_t len) {
  resolve();
  if (!tracked(fd) || (mode & FALLOC_FL_KEEP_SIZE)) return real_fallocate(fd, mode, off, len);
  lock();
  int rc = real_fallocate(fd, mode, off, len);
  int e = errno;
  struct stat st;
  if (rc == 0 && fstat(fd, &st) == 0) put('T', fds[fd].ino, (uint64_t)st.st_size, NULL, 0, NULL, 0);
  unlock();
  errno = e;
  return rc;
}

static int flush(int fd, int (*fn)(int)) {
  resolve();
  if (!tracked(fd)) return fn(fd);
  lock();
  uint64_t id = ++*flush_seq;
  struct fdinfo f = fds[fd];
  if (f.dir)
    put('b', 0, id, f.rel, strlen(f.rel), NULL, 0);
  else
    put('B', f.ino, id, NULL, 0, NULL, 0);
  unlock();
  int rc = fn(fd);
  int e = errno;
  if (rc == 0) {
    lock();
    if (f.dir)
      put('e', 0, id, f.rel, strlen(f.rel), NULL, 0);
    else
      put('E', f.ino, id, NULL, 0, NULL, 0);
    unlock();
  }
  errno = e;
  return rc;
}

int fsync(int fd) {
  resolve();
  return flush(fd, real_fsync);
}

int fdatasync(int fd) {
  resolve();
  return flush(fd, real_fdatasync);
}

static int path_op(int type, const char *path, int (*fn)(const char *), const char *path2,
                   int (*fn2)(const char *, const char *)) {
  resolve();
  char b1[PATH_MAX], b2[PATH_MAX];
  if (!ready) return fn ? fn(path) : fn2(path, path2);
  lock();
  const char *r1 = rel_of(AT_FDCWD, path, b1);
  const char *r2 = path2 ? rel_of(AT_FDCWD, path2, b2) : NULL;
  int rc = fn ? fn(path) : fn2(path, path2);
  int e = errno;
  if (rc == 0 && r1 && (!path2 || r2))
    put(type, 0, 0, r1, strlen(r1) + (path2 ? 1 : 0), r2, r2 ? strlen(r2) : 0);
  unlock();
  errno = e;
  return rc;
}

static __thread mode_t mkdir_mode;
static int mkdir_with_mode(const char *p) { return real_mkdir(p, mkdir_mode); }
int mkdir(const char *path, mode_t mode) {
  mkdir_mode = mode;
  return path_op('M', path, mkdir_with_mode, NULL, NULL);
}
int unlink(const char *path) {
  resolve();
  return path_op('U', path, real_unlink, NULL, NULL);
}

int rmdir(const char *path) {
  resolve();
  return path_op('X', path, real_rmdir, NULL, NULL);
}

int rename(const char *a, const char *b) {
  resolve();
  return path_op('R', a, NULL, b, real_rename);
}

/* LMDB calls msync only when it writes through its map (MDB_WRITEMAP): those writes are
 * invisible here, so the replay refuses such a trace. */
int msync(void *addr, size_t len, int flags) {
  resolve();
  if (ready) {
    lock();
    put('Z', 0, 0, NULL, 0, NULL, 0);
    unlock();
  }
  return real_msync(addr, len, flags);
}

/* The workload reports an acknowledged operation; found with dlsym, so the workload runs
 * without the shim too. */
void pc_ack(const char *text) {
  if (!ready) return;
  lock();
  put('A', 0, 0, text, strlen(text), NULL, 0);
  unlock();
}
