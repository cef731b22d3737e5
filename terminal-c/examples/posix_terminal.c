/*
 * A working terminal on a serial device, made of the posterm library and a POSIX main loop:
 * the device in raw mode, poll(2) for the line and stdin, CLOCK_MONOTONIC as the clock.
 *
 *   posix_terminal /dev/ttyUSB0 [--baud 115200] [--model NAME] [--firmware VERSION]
 *
 * Each stdin line is one request of the terminal:
 *   sale <merchant_unique_code> <amount_minor> [display_code]
 *   started <payment_request_id>
 *   result <payment_request_id> succeeded|failed
 *   cancel [payment_request_id]
 *   status
 * Each reply of the agent is printed on stdout as its JSON, and so is each request of the
 * agent (agent_state, payment_cancelled), which is answered `ok` (with the terminal's identity
 * to agent_state). Link changes and failures go to stderr.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "posterm.h"

static uint32_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint32_t)((uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u);
}

static speed_t speed(long baud)
{
    switch (baud) {
    case 9600: return B9600;
    case 19200: return B19200;
    case 38400: return B38400;
    case 57600: return B57600;
    case 230400: return B230400;
    default: return B115200;
    }
}

static int open_line(const char *device, long baud)
{
    struct termios tio;
    int fd = open(device, O_RDWR | O_NOCTTY);
    if (fd < 0) {
        perror(device);
        return -1;
    }
    if (tcgetattr(fd, &tio) == 0) {
        cfmakeraw(&tio);
        cfsetispeed(&tio, speed(baud));
        cfsetospeed(&tio, speed(baud));
        tio.c_cflag |= CLOCAL | CREAD;
        tio.c_cc[VMIN] = 1;
        tio.c_cc[VTIME] = 0;
        (void)tcsetattr(fd, TCSANOW, &tio);
    }
    return fd;
}

static int write_all(int fd, const uint8_t *bytes, size_t len)
{
    while (len > 0u) {
        ssize_t n = write(fd, bytes, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        bytes += n;
        len -= (size_t)n;
    }
    return 0;
}

/* One stdin command to a request of the terminal. */
static void command(posterm_link *link, char *line)
{
    char apdu[POSTERM_TX_APDU];
    size_t len = 0;
    uint32_t id = posterm_link_next_id(link);
    char *verb = strtok(line, " \t\r\n");
    char *a = strtok(NULL, " \t\r\n");
    char *b = strtok(NULL, " \t\r\n");
    char *c = strtok(NULL, " \t\r\n");
    if (verb == NULL) {
        return;
    }
    if (strcmp(verb, "sale") == 0 && a != NULL && b != NULL) {
        len = posterm_enc_sale(apdu, sizeof apdu, id, a, strtoull(b, NULL, 10), c);
    } else if (strcmp(verb, "started") == 0 && a != NULL) {
        len = posterm_enc_payment_started(apdu, sizeof apdu, id, a);
    } else if (strcmp(verb, "result") == 0 && a != NULL && b != NULL) {
        len = posterm_enc_payment_result(apdu, sizeof apdu, id, a, strcmp(b, "succeeded") == 0);
    } else if (strcmp(verb, "cancel") == 0) {
        len = posterm_enc_cancel(apdu, sizeof apdu, id, a);
    } else if (strcmp(verb, "status") == 0) {
        len = posterm_enc_status(apdu, sizeof apdu, id);
    } else {
        fprintf(stderr, "posix_terminal: unknown command %s\n", verb);
        return;
    }
    if (len == 0u || posterm_link_send_request(link, id, apdu, len) != 0) {
        fprintf(stderr, "posix_terminal: cannot send %s now\n", verb);
    }
}

static void handle(posterm_link *link, const posterm_event *ev, const posterm_identity *me)
{
    char apdu[POSTERM_TX_APDU];
    size_t len;
    switch (ev->type) {
    case POSTERM_EV_UP:
        fprintf(stderr, "posix_terminal: link up\n");
        break;
    case POSTERM_EV_DOWN:
        fprintf(stderr, "posix_terminal: link down\n");
        break;
    case POSTERM_EV_SEND_FAILED:
        fprintf(stderr, "posix_terminal: request %lu failed\n", (unsigned long)ev->id);
        break;
    case POSTERM_EV_REQUEST:
    case POSTERM_EV_REPLY:
        /* The APDU is still in the decoder while its event is handled. */
        printf("%.*s\n", (int)link->decoder.len, (const char *)link->decoder.apdu);
        fflush(stdout);
        if (ev->type == POSTERM_EV_REQUEST) {
            int ready = ev->msg->type == POSTERM_T_AGENT_STATE &&
                        strcmp(ev->msg->state, "ready") == 0;
            len = posterm_enc_ok(apdu, sizeof apdu, ev->id, ready ? me : NULL);
            (void)posterm_link_reply(link, ev->id, apdu, len);
        }
        break;
    default:
        break;
    }
}

int main(int argc, char **argv)
{
    static posterm_link link;
    posterm_identity me;
    posterm_event ev;
    char line[512];
    size_t line_len = 0;
    long baud = 115200;
    int fd, i, stdin_open = 1;
    me.protocol = POSTERM_PROTOCOL_VERSION;
    me.model = "posterm posix example";
    me.firmware = "1.0.0";
    if (argc < 2) {
        fprintf(stderr, "usage: %s DEVICE [--baud N] [--model NAME] [--firmware VERSION]\n",
                argv[0]);
        return 2;
    }
    for (i = 2; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--baud") == 0) {
            baud = strtol(argv[i + 1], NULL, 10);
        } else if (strcmp(argv[i], "--model") == 0) {
            me.model = argv[i + 1];
        } else if (strcmp(argv[i], "--firmware") == 0) {
            me.firmware = argv[i + 1];
        }
    }
    fd = open_line(argv[1], baud);
    if (fd < 0) {
        return 1;
    }
    posterm_link_init(&link, NULL);
    for (;;) {
        struct pollfd fds[2];
        uint8_t buf[512];
        size_t n;
        fds[0].fd = fd;
        fds[0].events = POLLIN;
        fds[1].fd = stdin_open ? 0 : -1;
        fds[1].events = POLLIN;
        if (poll(fds, 2, 10) < 0 && errno != EINTR) {
            return 1;
        }
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t got = read(fd, buf, sizeof buf);
            size_t off = 0;
            if (got <= 0) {
                fprintf(stderr, "posix_terminal: the line closed\n");
                return 1;
            }
            do {
                off += posterm_link_input(&link, now_ms(), buf + off, (size_t)got - off, &ev);
                handle(&link, &ev, &me);
            } while (ev.type != POSTERM_EV_NONE);
        }
        if (stdin_open && (fds[1].revents & (POLLIN | POLLHUP))) {
            ssize_t got = read(0, line + line_len, sizeof line - 1u - line_len);
            if (got <= 0) {
                stdin_open = 0;
            } else {
                char *newline;
                line_len += (size_t)got;
                line[line_len] = '\0';
                while ((newline = strchr(line, '\n')) != NULL) {
                    size_t used = (size_t)(newline - line) + 1u;
                    *newline = '\0';
                    command(&link, line);
                    memmove(line, line + used, line_len - used + 1u);
                    line_len -= used;
                }
                if (line_len == sizeof line - 1u) {
                    line_len = 0; /* a line too long for any command */
                }
            }
        }
        while (posterm_link_poll(&link, now_ms(), &ev)) {
            handle(&link, &ev, &me);
        }
        while ((n = posterm_link_output(&link, now_ms(), buf, sizeof buf)) > 0u) {
            if (write_all(fd, buf, n) != 0) {
                fprintf(stderr, "posix_terminal: cannot write to the line\n");
                return 1;
            }
        }
    }
}
