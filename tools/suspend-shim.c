/*
 * Test only: an LD_PRELOAD library that plays a suspend of the system to the daemon. While the
 * file named by SUSPENDED_SECONDS_FILE holds a number N, every read of CLOCK_BOOTTIME (and
 * CLOCK_BOOTTIME_ALARM) comes out N seconds later, as after a suspend of N seconds, while
 * CLOCK_MONOTONIC, which stops during a suspend, and the wall clock are left as they are. The
 * file is read at every such read, so a test changes N while the daemon runs (tests/suite/suspend.rs
 * builds it with the host's cc through tests/suite/support/preload.rs).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static long suspended_seconds(void)
{
    const char *path = getenv("SUSPENDED_SECONDS_FILE");
    long seconds = 0;
    if (!path)
        return 0;
    int saved = errno;
    FILE *file = fopen(path, "re");
    if (file) {
        if (fscanf(file, "%ld", &seconds) != 1)
            seconds = 0;
        fclose(file);
    }
    errno = saved;
    return seconds;
}

int clock_gettime(clockid_t clock, struct timespec *now)
{
    static int (*real)(clockid_t, struct timespec *);
    if (!real)
        real = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
    int result = real(clock, now);
    if (result == 0 && (clock == CLOCK_BOOTTIME || clock == CLOCK_BOOTTIME_ALARM))
        now->tv_sec += suspended_seconds();
    return result;
}
