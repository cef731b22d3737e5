/*
 * Test and benchmark only: an LD_PRELOAD library that makes fsync and fdatasync take
 * SLOW_FSYNC_MS milliseconds longer (0 or unset: no delay), as on a terminal's SD card or
 * eMMC under write pressure, and fail with EIO while the file named by FAIL_FSYNC_WHILE
 * exists, as a failing card does. The daemon has no hook for it; `cargo bench --bench agent`,
 * tests/suite/agent_recovery.rs and tests/suite/storage_health.rs build it with the host's cc
 * (tests/suite/support/slow_fsync.rs).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

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

static int failing(void)
{
    const char *flag = getenv("FAIL_FSYNC_WHILE");
    int saved = errno;
    int fails = flag && *flag && access(flag, F_OK) == 0;
    errno = fails ? EIO : saved;
    return fails;
}

int fsync(int fd)
{
    static int (*real)(int);
    if (!real)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    storage_latency();
    if (failing())
        return -1;
    return real(fd);
}

int fdatasync(int fd)
{
    static int (*real)(int);
    if (!real)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    storage_latency();
    if (failing())
        return -1;
    return real(fd);
}
