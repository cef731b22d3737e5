/*
 * Test only: an LD_PRELOAD library that holds every open(2) of a path starting with
 * HELD_OPEN_PREFIX until the file HELD_OPEN_GATE exists, and every close(2) of such a path
 * until HELD_CLOSE_GATE exists (each only when its variable is set), as a USB serial adapter
 * that takes seconds to answer, or to drain its output, holds the thread that opens or closes
 * it. The calling thread is the one held, in open or close itself. While a call is held,
 * <gate>.held exists (created, never removed), so a test knows the daemon is inside it. The
 * daemon has no hook for it; tests/suite/serial_device_threads.rs builds it
 * (tests/suite/support/preload.rs).
 */
#undef _FORTIFY_SOURCE
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef int (*open_fn)(const char *, int, ...);
typedef int (*openat_fn)(int, const char *, int, ...);

static void hold(const char *path, const char *gate)
{
    const char *prefix = getenv("HELD_OPEN_PREFIX");
    if (!prefix || !*prefix || !gate || !*gate || !path || strncmp(path, prefix, strlen(prefix)) != 0)
        return;
    int saved = errno;
    char held[4096];
    if (snprintf(held, sizeof held, "%s.held", gate) < (int)sizeof held) {
        static open_fn real;
        if (!real)
            real = (open_fn)dlsym(RTLD_NEXT, "open");
        int fd = real(held, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        if (fd >= 0)
            close(fd);
    }
    struct timespec tick = { 0, 10 * 1000000L };
    while (access(gate, F_OK) != 0)
        nanosleep(&tick, NULL);
    errno = saved;
}

static mode_t mode_of(int flags, va_list ap)
{
    return (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, mode_t) : 0;
}

#define HOLD_OPEN(name)                                                                   \
    int name(const char *path, int flags, ...)                                            \
    {                                                                                     \
        static open_fn real;                                                              \
        if (!real)                                                                        \
            real = (open_fn)dlsym(RTLD_NEXT, #name);                                      \
        va_list ap;                                                                       \
        va_start(ap, flags);                                                              \
        mode_t mode = mode_of(flags, ap);                                                 \
        va_end(ap);                                                                       \
        hold(path, getenv("HELD_OPEN_GATE"));                                             \
        return real(path, flags, mode);                                                   \
    }

#define HOLD_OPENAT(name)                                                                 \
    int name(int dir, const char *path, int flags, ...)                                   \
    {                                                                                     \
        static openat_fn real;                                                            \
        if (!real)                                                                        \
            real = (openat_fn)dlsym(RTLD_NEXT, #name);                                    \
        va_list ap;                                                                       \
        va_start(ap, flags);                                                              \
        mode_t mode = mode_of(flags, ap);                                                 \
        va_end(ap);                                                                       \
        hold(path, getenv("HELD_OPEN_GATE"));                                             \
        return real(dir, path, flags, mode);                                              \
    }

HOLD_OPEN(open)
HOLD_OPEN(open64)
HOLD_OPENAT(openat)
HOLD_OPENAT(openat64)

int close(int fd)
{
    static int (*real)(int);
    if (!real)
        real = (int (*)(int))dlsym(RTLD_NEXT, "close");
    const char *gate = getenv("HELD_CLOSE_GATE");
    if (gate && *gate) {
        char link[64], path[4096];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        int saved = errno;
        ssize_t length = readlink(link, path, sizeof path - 1);
        errno = saved;
        if (length > 0) {
            path[length] = '\0';
            hold(path, gate);
        }
    }
    return real(fd);
}
