/*
 * The posterm library against the byte-exact vectors of docs/serial-protocol.md (sections 2,
 * 3 "Versions" and 6) and a scripted exchange with a clock of the test's own.
 * Prints every failed check and exits 1 if there was one.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#include <stdio.h>
#include <string.h>

#include "posterm.h"

static int checks, failures;

#define CHECK(cond)                                                                   \
    do {                                                                              \
        checks++;                                                                     \
        if (!(cond)) {                                                                \
            failures++;                                                               \
            printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                    \
        }                                                                             \
    } while (0)

static size_t from_hex(const char *hex, uint8_t *out)
{
    size_t n = 0;
    unsigned v;
    int used;
    while (sscanf(hex, " %2x%n", &v, &used) == 1) {
        out[n++] = (uint8_t)v;
        hex += used;
    }
    return n;
}

/* Feeds `frame` to a fresh decoder; returns the last result and leaves the APDU in `d`. */
static posterm_input decode(posterm_decoder *d, const uint8_t *frame, size_t len)
{
    posterm_input last = POSTERM_IN_NOTHING;
    size_t i;
    posterm_decoder_init(d);
    for (i = 0; i < len; i++) {
        posterm_input r = posterm_decoder_push(d, frame[i]);
        if (r != POSTERM_IN_NOTHING) {
            last = r;
        }
    }
    return last;
}

static posterm_decoder decoder;
static posterm_link link;

static void frame_vectors(void)
{
    static const struct {
        const char *apdu;
        const char *frame;
    } vectors[] = {
        {"80 00 00", "10 02 80 00 00 10 03 F5 1F"},
        {"10 41", "10 02 10 10 41 10 03 B0 E8"},
        {"7B 22 74 79 70 65 22 3A 22 70 69 6E 67 22 2C 22 69 64 22 3A 31 7D",
         "10 02 7B 22 74 79 70 65 22 3A 22 70 69 6E 67 22 2C 22 69 64 22 3A 31 7D 10 03 B9 CE"},
    };
    uint8_t apdu[64], frame[64], out[64];
    size_t i, apdu_len, frame_len;
    CHECK(posterm_crc16(0, (const uint8_t *)"123456789", 9) == 0x2189u);
    for (i = 0; i < sizeof vectors / sizeof vectors[0]; i++) {
        apdu_len = from_hex(vectors[i].apdu, apdu);
        frame_len = from_hex(vectors[i].frame, frame);
        CHECK(posterm_frame_encode(apdu, apdu_len, out, sizeof out) == frame_len);
        CHECK(memcmp(out, frame, frame_len) == 0);
        CHECK(decode(&decoder, frame, frame_len) == POSTERM_IN_FRAME);
        CHECK(decoder.len == apdu_len && memcmp(decoder.apdu, apdu, apdu_len) == 0);
        frame[frame_len - 1] ^= 1u;
        CHECK(decode(&decoder, frame, frame_len) == POSTERM_IN_BAD_FRAME);
    }
}

/* Section 6: the sale on the wire, byte for byte, and the agent's sale_started. */
static void exchange_dump(void)
{
    static const char sale_frame[] =
        "10 02 7b 22 74 79 70 65 22 3a 22 73 61 6c 65 22 2c 22 6d 65 72 63 68 61 6e 74 5f 75 6e "
        "69 71 75 65 5f 63 6f 64 65 22 3a 22 36 66 31 63 31 61 37 65 2d 33 62 37 66 2d 34 64 30 "
        "65 2d 39 61 35 31 2d 30 66 32 62 37 63 33 64 39 65 31 30 22 2c 22 61 6d 6f 75 6e 74 5f "
        "6d 69 6e 6f 72 22 3a 32 32 35 30 2c 22 69 64 22 3a 31 7d 10 03 bd f3";
    static const char started_frame[] =
        "10 02 7b 22 74 79 70 65 22 3a 22 73 61 6c 65 5f 73 74 61 72 74 65 64 22 2c 22 70 61 79 "
        "6d 65 6e 74 5f 72 65 71 75 65 73 74 5f 69 64 22 3a 22 37 63 63 37 63 38 65 38 2d 39 64 "
        "39 32 2d 34 31 62 36 2d 39 33 37 38 2d 65 39 65 63 65 66 35 61 37 38 31 32 22 2c 22 6d "
        "65 72 63 68 61 6e 74 5f 75 6e 69 71 75 65 5f 63 6f 64 65 22 3a 22 36 66 31 63 31 61 37 "
        "65 2d 33 62 37 66 2d 34 64 30 65 2d 39 61 35 31 2d 30 66 32 62 37 63 33 64 39 65 31 30 "
        "22 2c 22 72 65 22 3a 31 7d 10 03 65 ee";
    uint8_t want[200], out[300];
    char apdu[200];
    size_t want_len = from_hex(sale_frame, want), len;
    posterm_msg m;
    CHECK(want_len == 110u);
    len = posterm_enc_sale(apdu, sizeof apdu, 1, "6f1c1a7e-3b7f-4d0e-9a51-0f2b7c3d9e10", 2250,
                           NULL);
    CHECK(posterm_frame_encode((const uint8_t *)apdu, len, out, sizeof out) == want_len);
    CHECK(memcmp(out, want, want_len) == 0);
    want_len = from_hex(started_frame, want);
    CHECK(want_len == 158u);
    CHECK(decode(&decoder, want, want_len) == POSTERM_IN_FRAME);
    CHECK(posterm_msg_parse(decoder.apdu, decoder.len, &m) == POSTERM_MSG_REPLY);
    CHECK(m.type == POSTERM_T_SALE_STARTED && m.re == 1u);
    CHECK(strcmp(m.payment_request_id, "7cc7c8e8-9d92-41b6-9378-e9ecef5a7812") == 0);
    CHECK(strcmp(m.merchant_unique_code, "6f1c1a7e-3b7f-4d0e-9a51-0f2b7c3d9e10") == 0);
}

/* Section 3, "Versions". */
static void version_vectors(void)
{
    static const char ready[] =
        "{\"type\":\"agent_state\",\"state\":\"ready\",\"protocol\":1,\"agent\":\"pos-agent "
        "1.2.3\",\"id\":2}";
    static const char ok[] =
        "{\"type\":\"ok\",\"protocol\":1,\"model\":\"Acme T1\",\"firmware\":\"2.4.1\",\"re\":2}";
    static const char old_ready[] = "{\"type\":\"agent_state\",\"state\":\"ready\",\"id\":2}";
    posterm_identity me;
    posterm_msg m;
    char apdu[128];
    uint8_t frame[300];
    size_t len;
    me.protocol = 1;
    me.model = "Acme T1";
    me.firmware = "2.4.1";
    len = posterm_enc_ok(apdu, sizeof apdu, 2, &me);
    CHECK(len == strlen(ok) && memcmp(apdu, ok, len) == 0);
    len = posterm_frame_encode((const uint8_t *)apdu, len, frame, sizeof frame);
    CHECK(len > 2 && frame[len - 2] == 0x90u && frame[len - 1] == 0x40u);
    len = posterm_frame_encode((const uint8_t *)ready, strlen(ready), frame, sizeof frame);
    CHECK(len > 2 && frame[len - 2] == 0x5Bu && frame[len - 1] == 0x88u);
    CHECK(posterm_msg_parse((const uint8_t *)ready, strlen(ready), &m) == POSTERM_MSG_REQUEST);
    CHECK(m.type == POSTERM_T_AGENT_STATE && m.id == 2u && m.protocol == 1u);
    CHECK(strcmp(m.state, "ready") == 0 && strcmp(m.agent, "pos-agent 1.2.3") == 0);
    CHECK(posterm_msg_invalid_agent_request(&m) == NULL);
    /* An agent that predates versions: no protocol, taken as 1; a plain ok. */
    CHECK(posterm_msg_parse((const uint8_t *)old_ready, strlen(old_ready), &m) ==
          POSTERM_MSG_REQUEST);
    CHECK(m.protocol == 0u && posterm_msg_invalid_agent_request(&m) == NULL);
    len = posterm_enc_ok(apdu, sizeof apdu, 7, NULL);
    CHECK(len == 20u && memcmp(apdu, "{\"type\":\"ok\",\"re\":7}", len) == 0);
}

/* Section 2 "Receiving": noise, a DLE not followed by STX, ACK/NAK between frames. */
static void receiving(void)
{
    static const uint8_t line[] = {0x00, 0xFF, 0x10, 0x06, 0x15, 0x41};
    posterm_input seen[sizeof line];
    size_t i;
    posterm_decoder_init(&decoder);
    for (i = 0; i < sizeof line; i++) {
        seen[i] = posterm_decoder_push(&decoder, line[i]);
    }
    CHECK(seen[3] == POSTERM_IN_ACK && seen[4] == POSTERM_IN_NAK);
    CHECK(decoder.noise_bytes == 4u);
    CHECK(!posterm_decoder_in_frame(&decoder));
}

/* Everything the link writes until it is quiet. */
static size_t drain(uint32_t now, uint8_t *out, size_t cap)
{
    size_t n = 0, k;
    while ((k = posterm_link_output(&link, now, out + n, cap - n)) > 0u) {
        n += k;
    }
    return n;
}

static size_t feed_frame(uint32_t now, const char *apdu, posterm_event *ev)
{
    uint8_t frame[256];
    size_t len = posterm_frame_encode((const uint8_t *)apdu, strlen(apdu), frame, sizeof frame);
    size_t used = 0;
    do {
        used += posterm_link_input(&link, now, frame + used, len - used, ev);
        if (ev->type == POSTERM_EV_REQUEST || ev->type == POSTERM_EV_REPLY) {
            return 1;
        }
    } while (ev->type != POSTERM_EV_NONE);
    return 0;
}

static int contains(const uint8_t *hay, size_t n, const char *needle)
{
    size_t len = strlen(needle), i;
    for (i = 0; i + len <= n; i++) {
        if (memcmp(hay + i, needle, len) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Sections 2-4 with the test's clock: probe, ACK, ping answered, replay, T3, give-up. */
static void scripted_link(void)
{
    uint8_t out[1024];
    size_t n, first_len;
    uint8_t first[1024];
    posterm_event ev;
    char ok[64];
    uint32_t t = 1000;
    const uint8_t ack = POSTERM_ACK;
    posterm_link_init(&link, NULL);
    n = drain(t, out, sizeof out);
    CHECK(contains(out, n, "{\"type\":\"ping\",\"id\":1}"));
    (void)posterm_link_input(&link, t, &ack, 1, &ev);
    CHECK(ev.type == POSTERM_EV_UP);
    /* The agent's ping: ACK, then pong (answered by the link, never delivered). */
    CHECK(feed_frame(t, "{\"type\":\"ping\",\"id\":1}", &ev) == 0);
    n = drain(t, out, sizeof out);
    CHECK(n > 1 && out[0] == POSTERM_ACK && contains(out, n, "{\"type\":\"pong\",\"re\":1}"));
    (void)posterm_link_input(&link, t, &ack, 1, &ev);
    /* agent_state: delivered once, answered, its duplicate gets the same bytes. */
    CHECK(feed_frame(t, "{\"type\":\"agent_state\",\"state\":\"ready\",\"id\":2}", &ev) == 1);
    CHECK(ev.type == POSTERM_EV_REQUEST && ev.id == 2u && ev.msg->type == POSTERM_T_AGENT_STATE);
    (void)posterm_link_reply(&link, 2, ok, posterm_enc_ok(ok, sizeof ok, 2, NULL));
    first_len = drain(t, first, sizeof first);
    (void)posterm_link_input(&link, t, &ack, 1, &ev);
    CHECK(feed_frame(t, "{\"type\":\"agent_state\",\"state\":\"ready\",\"id\":2}", &ev) == 0);
    n = drain(t, out, sizeof out);
    CHECK(n == first_len && memcmp(out, first, n) == 0);
    (void)posterm_link_input(&link, t, &ack, 1, &ev);
    /* An invalid request: answered error/invalid_request by the link. */
    CHECK(feed_frame(t, "{\"type\":\"launch\",\"id\":3}", &ev) == 0);
    n = drain(t, out, sizeof out);
    CHECK(contains(out, n, "\"code\":\"invalid_request\"") && contains(out, n, "\"re\":3}"));
    (void)posterm_link_input(&link, t, &ack, 1, &ev);
    /* A reply to no request: dropped. */
    CHECK(feed_frame(t, "{\"type\":\"ok\",\"re\":99}", &ev) == 0);
    n = drain(t, out, sizeof out);
    CHECK(n == 1 && out[0] == POSTERM_ACK);
    /* A sale without an ACK: sent again after T3, given up after max_sends. */
    {
        char sale[200];
        uint32_t id = posterm_link_next_id(&link);
        size_t len = posterm_enc_sale(sale, sizeof sale, id, "6f1c1a7e-3b7f-4d0e-9a51-0f2b7c3d9e10",
                                      2250, NULL);
        int sends = 0, failed = 0, down = 0, k;
        CHECK(posterm_link_send_request(&link, id, sale, len) == 0);
        for (k = 0; k < 40; k++) {
            n = drain(t, out, sizeof out);
            sends += contains(out, n, "\"type\":\"sale\"");
            t += 100;
            while (posterm_link_poll(&link, t, &ev)) {
                failed += ev.type == POSTERM_EV_SEND_FAILED && ev.id == id;
                down += ev.type == POSTERM_EV_DOWN;
            }
        }
        CHECK(sends == 3 && failed == 1 && down == 1);
    }
}

int main(void)
{
    frame_vectors();
    exchange_dump();
    version_vectors();
    receiving();
    scripted_link();
    printf("vectors: %d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
