/*
 * Test and benchmark only: an LD_PRELOAD library that makes fsync and fdatasync take
 * SLOW_FSYNC_MS milliseconds longer (0 or unset: no delay), as on a terminal's SD card or
 * eMMC under write pressure. The daemon has no hook for it; `cargo bench --bench agent` and
 * tests/agent.rs build it with the host's cc (tests/support/slow_fsync.rs).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <time.h>

static void storage_latency(void)
{
    const char *value = getenv("SLOW_FSYNC_MS");
    long ms = value ? atol(value) : 0;
    if (ms <= 0)
        return;
    struct timespec left = { ms / 1000, (ms % 1000) * 1000000L };
    int saved = errno;
    while (nanosleep(&left, &left) == -1 && errno == EINTR) {
    }
    errno = saved;
}

int fsync(int fd)
{
    static int (*real)(int);
    if (!real)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    storage_latency();
    return real(fd);
}

int fdatasync(int fd)
{
    static int (*real)(int);
    if (!real)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    storage_latency();
    return real(fd);
}
