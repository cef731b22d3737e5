/*
 * Test-only shim for running pos-agent's test suite under qemu-user (.ci/run, docs/deployment.md).
 *
 * The serialport crate configures a tty with the termios2 ioctls (TCGETS2, TCSETS2, TCSETSW2,
 * TCSETSF2) on Linux. qemu-user 7.2 (Debian 12) does not emulate them and answers ENOSYS, so no
 * serial port, not even a pseudo-terminal, can be opened in an emulated test. Preloaded into the
 * emulated process (qemu-aarch64-static -E LD_PRELOAD=...), this library turns those four ioctls
 * into the classic TCGETS/TCSETS* ones, which qemu does emulate, mapping the baud rate between
 * termios2's c_ispeed/c_ospeed and the Bxxx constants. Baud rates without a Bxxx constant get
 * EINVAL. Every other ioctl passes through untouched. It never ships; real terminals run the
 * kernel, which has termios2.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <string.h>
/* The kernel's own struct termios and struct termios2 (not glibc's), and the ioctl numbers. */
#include <asm/ioctls.h>
#include <asm/termbits.h>

typedef int (*ioctl_fn)(int, unsigned long, ...);

static const struct {
    unsigned int constant;
    unsigned int baud;
} speeds[] = {
    {B0, 0},           {B50, 50},         {B75, 75},         {B110, 110},
    {B134, 134},       {B150, 150},       {B200, 200},       {B300, 300},
    {B600, 600},       {B1200, 1200},     {B1800, 1800},     {B2400, 2400},
    {B4800, 4800},     {B9600, 9600},     {B19200, 19200},   {B38400, 38400},
    {B57600, 57600},   {B115200, 115200}, {B230400, 230400}, {B460800, 460800},
    {B500000, 500000}, {B576000, 576000}, {B921600, 921600}, {B1000000, 1000000},
    {B1152000, 1152000}, {B1500000, 1500000}, {B2000000, 2000000}, {B2500000, 2500000},
    {B3000000, 3000000}, {B3500000, 3500000}, {B4000000, 4000000},
};

static ioctl_fn real_ioctl(void) {
    static ioctl_fn real;
    if (!real)
        real = (ioctl_fn)dlsym(RTLD_NEXT, "ioctl");
    return real;
}

static int baud_of(unsigned int constant) {
    for (size_t i = 0; i < sizeof speeds / sizeof speeds[0]; i++)
        if (speeds[i].constant == constant)
            return (int)speeds[i].baud;
    return -1;
}

static int constant_of(unsigned int baud) {
    for (size_t i = 0; i < sizeof speeds / sizeof speeds[0]; i++)
        if (speeds[i].baud == baud)
            return (int)speeds[i].constant;
    return -1;
}

static int get2(int fd, struct termios2 *t2) {
    struct termios t;
    int r = real_ioctl()(fd, TCGETS, &t);
    if (r != 0)
        return r;
    memset(t2, 0, sizeof *t2);
    t2->c_iflag = t.c_iflag;
    t2->c_oflag = t.c_oflag;
    t2->c_cflag = t.c_cflag;
    t2->c_lflag = t.c_lflag;
    t2->c_line = t.c_line;
    memcpy(t2->c_cc, t.c_cc, sizeof t.c_cc < sizeof t2->c_cc ? sizeof t.c_cc : sizeof t2->c_cc);
    int baud = baud_of(t.c_cflag & CBAUD);
    t2->c_ispeed = t2->c_ospeed = baud < 0 ? 0 : (unsigned int)baud;
    return 0;
}

static int set2(int fd, unsigned long request, const struct termios2 *t2) {
    struct termios t;
    memset(&t, 0, sizeof t);
    t.c_iflag = t2->c_iflag;
    t.c_oflag = t2->c_oflag;
    t.c_cflag = t2->c_cflag;
    t.c_lflag = t2->c_lflag;
    t.c_line = t2->c_line;
    memcpy(t.c_cc, t2->c_cc, sizeof t.c_cc < sizeof t2->c_cc ? sizeof t.c_cc : sizeof t2->c_cc);
    if ((t2->c_cflag & CBAUD) == BOTHER) {
        int constant = constant_of(t2->c_ospeed);
        if (constant < 0 || t2->c_ispeed != t2->c_ospeed) {
            errno = EINVAL;
            return -1;
        }
        t.c_cflag = (t.c_cflag & ~CBAUD) | (unsigned int)constant;
    }
    t.c_cflag &= ~(CIBAUD);
    return real_ioctl()(fd, request, &t);
}

int ioctl(int fd, unsigned long request, ...) {
    va_list args;
    va_start(args, request);
    void *argument = va_arg(args, void *);
    va_end(args);
    switch (request) {
    case TCGETS2:
        return get2(fd, argument);
    case TCSETS2:
        return set2(fd, TCSETS, argument);
    case TCSETSW2:
        return set2(fd, TCSETSW, argument);
    case TCSETSF2:
        return set2(fd, TCSETSF, argument);
    default:
        return real_ioctl()(fd, request, argument);
    }
}
