/*
 * The frame layer of docs/serial-protocol.md section 2: CRC-16/KERMIT, DLE stuffing and a
 * streaming decoder that never fails and never holds more than POSTERM_MAX_APDU bytes.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#include "posterm.h"

enum { IDLE, IDLE_DLE, BODY, BODY_DLE, CRC_LOW, CRC_HIGH };
enum { FAULT_NONE, FAULT_TOO_LONG, FAULT_BAD_ESCAPE };

uint16_t posterm_crc16(uint16_t crc, const uint8_t *data, size_t len)
{
    size_t i;
    int bit;
    for (i = 0; i < len; i++) {
        crc ^= data[i];
        for (bit = 0; bit < 8; bit++) {
            crc = (crc & 1u) ? (uint16_t)((crc >> 1) ^ 0x8408u) : (uint16_t)(crc >> 1);
        }
    }
    return crc;
}

size_t posterm_frame_encode(const uint8_t *apdu, size_t len, uint8_t *out, size_t cap)
{
    static const uint8_t etx = POSTERM_ETX;
    size_t i, n = 0;
    uint16_t crc;
    if (len > POSTERM_MAX_APDU || cap < len + 6u) {
        return 0;
    }
    out[n++] = POSTERM_DLE;
    out[n++] = POSTERM_STX;
    for (i = 0; i < len; i++) {
        if (n + 5u > cap) {
            return 0;
        }
        out[n++] = apdu[i];
        if (apdu[i] == POSTERM_DLE) {
            out[n++] = POSTERM_DLE;
        }
    }
    if (n + 4u > cap) {
        return 0;
    }
    crc = posterm_crc16(posterm_crc16(0, apdu, len), &etx, 1);
    out[n++] = POSTERM_DLE;
    out[n++] = POSTERM_ETX;
    out[n++] = (uint8_t)(crc & 0xFFu);
    out[n++] = (uint8_t)(crc >> 8);
    return n;
}

void posterm_decoder_init(posterm_decoder *d)
{
    d->state = IDLE;
    d->fault = FAULT_NONE;
    d->crc_low = 0;
    d->len = 0;
    d->noise_bytes = 0;
    d->abandoned_frames = 0;
    d->rejected_frames = 0;
}

int posterm_decoder_in_frame(const posterm_decoder *d)
{
    return d->state != IDLE && d->state != IDLE_DLE;
}

void posterm_decoder_abandon(posterm_decoder *d)
{
    if (posterm_decoder_in_frame(d)) {
        d->abandoned_frames++;
    }
    d->state = IDLE;
    d->fault = FAULT_NONE;
    d->len = 0;
}

static void start_frame(posterm_decoder *d)
{
    d->state = BODY;
    d->fault = FAULT_NONE;
    d->len = 0;
}

static void store(posterm_decoder *d, uint8_t byte)
{
    if (d->fault != FAULT_NONE) {
        return;
    }
    if (d->len >= POSTERM_MAX_APDU) {
        d->fault = FAULT_TOO_LONG;
        return;
    }
    d->apdu[d->len++] = byte;
}

posterm_input posterm_decoder_push(posterm_decoder *d, uint8_t byte)
{
    static const uint8_t etx = POSTERM_ETX;
    uint16_t crc;
    switch (d->state) {
    case IDLE:
        if (byte == POSTERM_ACK) {
            return POSTERM_IN_ACK;
        }
        if (byte == POSTERM_NAK) {
            return POSTERM_IN_NAK;
        }
        if (byte == POSTERM_DLE) {
            d->state = IDLE_DLE;
        } else {
            d->noise_bytes++;
        }
        return POSTERM_IN_NOTHING;
    case IDLE_DLE:
        if (byte == POSTERM_STX) {
            start_frame(d);
            return POSTERM_IN_NOTHING;
        }
        /* A DLE not followed by STX is noise; the byte after it is judged on its own. */
        d->noise_bytes++;
        d->state = IDLE;
        return posterm_decoder_push(d, byte);
    case BODY:
        if (byte == POSTERM_DLE) {
            d->state = BODY_DLE;
        } else {
            store(d, byte);
        }
        return POSTERM_IN_NOTHING;
    case BODY_DLE:
        if (byte == POSTERM_DLE) {
            store(d, byte);
            d->state = BODY;
        } else if (byte == POSTERM_ETX) {
            d->state = CRC_LOW;
        } else if (byte == POSTERM_STX) {
            d->abandoned_frames++;
            start_frame(d);
        } else {
            if (d->fault == FAULT_NONE) {
                d->fault = FAULT_BAD_ESCAPE;
            }
            d->state = BODY;
        }
        return POSTERM_IN_NOTHING;
    case CRC_LOW:
        d->crc_low = byte;
        d->state = CRC_HIGH;
        return POSTERM_IN_NOTHING;
    default: /* CRC_HIGH */
        d->state = IDLE;
        if (d->fault != FAULT_NONE) {
            d->fault = FAULT_NONE;
            d->len = 0;
            d->rejected_frames++;
            return POSTERM_IN_BAD_FRAME;
        }
        crc = posterm_crc16(posterm_crc16(0, d->apdu, d->len), &etx, 1);
        if (crc != (uint16_t)(d->crc_low | ((uint16_t)byte << 8))) {
            d->len = 0;
            d->rejected_frames++;
            return POSTERM_IN_BAD_FRAME;
        }
        return POSTERM_IN_FRAME;
    }
}
