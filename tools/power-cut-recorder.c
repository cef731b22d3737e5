/*
 * Test only: an LD_PRELOAD library that records what a process does to the files of one
 * directory, in call order, so that a test can rebuild every state a power cut could leave
 * (tests/suite/power_cut.rs). POWER_CUT_DIR names the directory (absolute path, as the process
 * names it); POWER_CUT_LOG the log, appended to with O_APPEND so that the test can add its own
 * lines (what the terminal was told) between the daemon's.
 *
 * Each call on a path in the directory, or on a file descriptor opened there, is logged after
 * it returned successfully, as one line of tab-separated fields; a write is followed by its
 * bytes:
 *   open FD FLAGS PATH | write FD OFFSET LEN \n BYTES | ftruncate FD LEN | fsync FD |
 *   fdatasync FD | close FD | rename OLD NEW | unlink PATH | mkdir PATH
 * The daemon has no hook for it; tests/suite/power_cut.rs builds it with the host's cc
 * (tests/suite/support/preload.rs).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define MAX_FD 4096

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char tracked[MAX_FD];
static int log_fd = -1;

#define REAL(name, type) \
    static __typeof__(&name) real_##name; \
    if (!real_##name) \
        real_##name = (__typeof__(&name))dlsym(RTLD_NEXT, #name)

static ssize_t (*raw_write)(int, const void *, size_t);

static int watched(const char *path)
{
    const char *dir = getenv("POWER_CUT_DIR");
    size_t n;
    if (!dir || !path)
        return 0;
    n = strlen(dir);
    return strncmp(path, dir, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

static void emit(const char *text, size_t len)
{
    if (!raw_write)
        raw_write = (ssize_t(*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    if (log_fd < 0) {
        int (*real_open)(const char *, int, ...) =
            (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, "open");
        const char *path = getenv("POWER_CUT_LOG");
        if (!path)
            return;
        log_fd = real_open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (log_fd < 0)
            return;
    }
    while (len > 0) {
        ssize_t n = raw_write(log_fd, text, len);
        if (n <= 0)
            return;
        text += n;
        len -= (size_t)n;
    }
}

static void line(const char *format, ...)
{
    char buf[8192];
    va_list args;
    int n;
    va_start(args, format);
    n = vsnprintf(buf, sizeof buf, format, args);
    va_end(args);
    if (n > 0)
        emit(buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

static int opened(int fd, int flags, const char *path)
{
    if (fd >= 0 && fd < MAX_FD && watched(path)) {
        int saved = errno;
        pthread_mutex_lock(&lock);
        tracked[fd] = 1;
        line("open\t%d\t%d\t%s\n", fd, flags, path);
        pthread_mutex_unlock(&lock);
        errno = saved;
    }
    return fd;
}

static int is_tracked(int fd)
{
    return fd >= 0 && fd < MAX_FD && tracked[fd];
}

static mode_t mode_of(int flags, va_list args)
{
    return (flags & (O_CREAT | O_TMPFILE)) ? (mode_t)va_arg(args, int) : 0;
}

int open(const char *path, int flags, ...)
{
    va_list args;
    va_start(args, flags);
    mode_t mode = mode_of(flags, args);
    va_end(args);
    REAL(open, int (*)(const char *, int, ...));
    return opened(real_open(path, flags, mode), flags, path);
}

int open64(const char *path, int flags, ...)
{
    va_list args;
    va_start(args, flags);
    mode_t mode = mode_of(flags, args);
    va_end(args);
    REAL(open64, int (*)(const char *, int, ...));
    return opened(real_open64(path, flags, mode), flags, path);
}

int openat(int dirfd, const char *path, int flags, ...)
{
    va_list args;
    va_start(args, flags);
    mode_t mode = mode_of(flags, args);
    va_end(args);
    REAL(openat, int (*)(int, const char *, int, ...));
    return opened(real_openat(dirfd, path, flags, mode), flags, path);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
    va_list args;
    va_start(args, flags);
    mode_t mode = mode_of(flags, args);
    va_end(args);
    REAL(openat64, int (*)(int, const char *, int, ...));
    return opened(real_openat64(dirfd, path, flags, mode), flags, path);
}

ssize_t write(int fd, const void *data, size_t len)
{
    ssize_t n;
    REAL(write, ssize_t (*)(int, const void *, size_t));
    if (!is_tracked(fd))
        return real_write(fd, data, len);
    pthread_mutex_lock(&lock);
    n = real_write(fd, data, len);
    if (n > 0) {
        int saved = errno;
        off_t end = lseek(fd, 0, SEEK_CUR);
        line("write\t%d\t%lld\t%lld\n", fd, (long long)(end - n), (long long)n);
        emit(data, (size_t)n);
        errno = saved;
    }
    pthread_mutex_unlock(&lock);
    return n;
}

static int after_fd_call(int result, const char *what, int fd, long long arg, int with_arg)
{
    if (result == 0 && is_tracked(fd)) {
        int saved = errno;
        pthread_mutex_lock(&lock);
        if (with_arg)
            line("%s\t%d\t%lld\n", what, fd, arg);
        else
            line("%s\t%d\n", what, fd);
        pthread_mutex_unlock(&lock);
        errno = saved;
    }
    return result;
}

int ftruncate(int fd, off_t len)
{
    REAL(ftruncate, int (*)(int, off_t));
    return after_fd_call(real_ftruncate(fd, len), "ftruncate", fd, (long long)len, 1);
}

int ftruncate64(int fd, off64_t len)
{
    REAL(ftruncate64, int (*)(int, off64_t));
    return after_fd_call(real_ftruncate64(fd, len), "ftruncate", fd, (long long)len, 1);
}

int fsync(int fd)
{
    REAL(fsync, int (*)(int));
    return after_fd_call(real_fsync(fd), "fsync", fd, 0, 0);
}

int fdatasync(int fd)
{
    REAL(fdatasync, int (*)(int));
    return after_fd_call(real_fdatasync(fd), "fdatasync", fd, 0, 0);
}

int close(int fd)
{
    REAL(close, int (*)(int));
    if (is_tracked(fd)) {
        pthread_mutex_lock(&lock);
        tracked[fd] = 0;
        line("close\t%d\n", fd);
        pthread_mutex_unlock(&lock);
    }
    return real_close(fd);
}

int rename(const char *old, const char *new)
{
    int result;
    REAL(rename, int (*)(const char *, const char *));
    result = real_rename(old, new);
    if (result == 0 && (watched(old) || watched(new))) {
        int saved = errno;
        pthread_mutex_lock(&lock);
        line("rename\t%s\t%s\n", old, new);
        pthread_mutex_unlock(&lock);
        errno = saved;
    }
    return result;
}

int unlink(const char *path)
{
    int result;
    REAL(unlink, int (*)(const char *));
    result = real_unlink(path);
    if (result == 0 && watched(path)) {
        int saved = errno;
        pthread_mutex_lock(&lock);
        line("unlink\t%s\n", path);
        pthread_mutex_unlock(&lock);
        errno = saved;
    }
    return result;
}

int mkdir(const char *path, mode_t mode)
{
    int result;
    REAL(mkdir, int (*)(const char *, mode_t));
    result = real_mkdir(path, mode);
    if (result == 0 && watched(path)) {
        int saved = errno;
        pthread_mutex_lock(&lock);
        line("mkdir\t%s\n", path);
        pthread_mutex_unlock(&lock);
        errno = saved;
    }
    return result;
}
