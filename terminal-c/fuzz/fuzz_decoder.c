/*
 * Fuzz target for the posterm decoder, message parser and link: arbitrary line bytes, cut into
 * reads at the points the input's first byte chooses, through posterm_link_input with a clock
 * that moves; every frame decoded must round-trip through the encoder, and the decoder never
 * holds more than POSTERM_MAX_APDU bytes. libFuzzer:
 *   clang -std=c99 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude \
 *         src/posterm_frame.c src/posterm_msg.c src/posterm_link.c fuzz/fuzz_decoder.c
 * Without libFuzzer, fuzz/replay.c runs it over files (the seeds in the suite, or AFL's).
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "posterm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static posterm_link link;
static posterm_decoder decoder;
static uint8_t wire[2u * POSTERM_MAX_APDU + 6u];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0, i;
    uint32_t now = 0xFFFFF000u; /* the clock wraps during the run */
    uint8_t chunk = size > 0u ? (uint8_t)(data[0] | 1u) : 1u;
    uint8_t out[256];
    posterm_event ev;
    posterm_msg m;

    /* Decoder alone: every frame re-encodes to a frame that decodes to the same APDU. */
    posterm_decoder_init(&decoder);
    for (i = 0; i < size; i++) {
        if (posterm_decoder_push(&decoder, data[i]) == POSTERM_IN_FRAME) {
            static posterm_decoder again;
            size_t len = posterm_frame_encode(decoder.apdu, decoder.len, wire, sizeof wire);
            size_t k;
            posterm_input last = POSTERM_IN_NOTHING;
            if (len == 0u) {
                abort();
            }
            posterm_decoder_init(&again);
            for (k = 0; k < len; k++) {
                last = posterm_decoder_push(&again, wire[k]);
            }
            if (last != POSTERM_IN_FRAME || again.len != decoder.len ||
                memcmp(again.apdu, decoder.apdu, decoder.len) != 0) {
                abort();
            }
            (void)posterm_msg_parse(decoder.apdu, decoder.len, &m);
            (void)posterm_msg_invalid_agent_request(&m);
        }
        if (decoder.len > POSTERM_MAX_APDU) {
            abort();
        }
    }

    /* The link: reads of `chunk` bytes, time moving 37 ms per read. */
    posterm_link_init(&link, NULL);
    while (off < size) {
        size_t n = size - off < chunk ? size - off : chunk;
        size_t used = 0;
        do {
            used += posterm_link_input(&link, now, data + off + used, n - used, &ev);
            if (ev.type == POSTERM_EV_REQUEST) {
                char ok[64];
                (void)posterm_link_reply(&link, ev.id, ok, posterm_enc_ok(ok, sizeof ok, ev.id, NULL));
            }
        } while (ev.type != POSTERM_EV_NONE);
        off += n;
        now += 37u;
        while (posterm_link_poll(&link, now, &ev)) {
        }
        while (posterm_link_output(&link, now, out, sizeof out) > 0u) {
        }
    }
    return 0;
}
