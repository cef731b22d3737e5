/*
 * The link layer of docs/serial-protocol.md sections 2-4, the terminal's side: every good frame
 * ACKed and every bad one NAKed, stop-and-wait sending with T3 and max_sends, T1, the replay
 * cache and request ids of section 3 ("Received requests"), ping liveness and link up/down.
 * The time is the caller's: every entry point takes `now_ms`.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#include "posterm.h"

#include <string.h>

/* An id the agent sends at most once per link session cannot be told from a lost ACK's
 * retransmission only by its id: a fingerprint of the APDU goes with it. */
static uint32_t fingerprint(const uint8_t *data, size_t len)
{
    uint32_t h = 2166136261u;
    size_t i;
    for (i = 0; i < len; i++) {
        h = (h ^ data[i]) * 16777619u;
    }
    return h;
}

static int due(uint32_t now, uint32_t deadline)
{
    return (int32_t)(now - deadline) >= 0;
}

posterm_config posterm_config_default(void)
{
    posterm_config c;
    c.ack_timeout_ms = 1000u;
    c.max_sends = 3u;
    c.ping_interval_ms = 5000u;
    c.inter_byte_ms = 200u;
    c.missed_pings_for_down = 3u;
    return c;
}

static void raise_event(posterm_link *l, posterm_event_type type, uint32_t id)
{
    uint8_t at;
    if (l->ev_len >= sizeof l->ev_type) {
        return;
    }
    at = (uint8_t)((l->ev_head + l->ev_len) % sizeof l->ev_type);
    l->ev_type[at] = (uint8_t)type;
    l->ev_id[at] = id;
    l->ev_len++;
}

static int take_event(posterm_link *l, posterm_event *ev)
{
    if (l->ev_len == 0u) {
        return 0;
    }
    ev->type = (posterm_event_type)l->ev_type[l->ev_head];
    ev->id = l->ev_id[l->ev_head];
    ev->msg = NULL;
    l->ev_head = (uint8_t)((l->ev_head + 1u) % sizeof l->ev_type);
    l->ev_len--;
    return 1;
}

void posterm_link_init(posterm_link *l, const posterm_config *config)
{
    memset(l, 0, sizeof *l);
    l->config = config != NULL ? *config : posterm_config_default();
    if (l->config.max_sends == 0u) {
        l->config.max_sends = 1u;
    }
    posterm_decoder_init(&l->decoder);
    l->next_id = 1u;
}

uint32_t posterm_link_next_id(posterm_link *l)
{
    uint32_t id = l->next_id;
    l->next_id = l->next_id + 1u == 0u ? 1u : l->next_id + 1u;
    return id;
}

int posterm_link_is_up(const posterm_link *l)
{
    return l->up;
}

/* Puts the frame at the head of the queue on the wire buffer, for its first send. */
static void load_head(posterm_link *l)
{
    l->wire_len = (uint16_t)posterm_frame_encode(l->queue[0].apdu, l->queue[0].len, l->wire,
                                                 sizeof l->wire);
    l->wire_pos = 0;
    l->waiting_ack = 0;
    l->sends = 1;
}

static int enqueue(posterm_link *l, int is_request, uint32_t id, const void *apdu, size_t len)
{
    posterm_tx_slot *slot;
    if (l->queue_len >= POSTERM_TX_QUEUE || len > POSTERM_TX_APDU) {
        return -1;
    }
    slot = &l->queue[l->queue_len];
    memcpy(slot->apdu, apdu, len);
    slot->len = (uint16_t)len;
    slot->is_request = (uint8_t)is_request;
    slot->id = id;
    if (++l->queue_len == 1u) {
        load_head(l);
    }
    return 0;
}

static void pop_head(posterm_link *l)
{
    if (l->queue_len == 0u) {
        return;
    }
    memmove(&l->queue[0], &l->queue[1], sizeof l->queue[0] * (size_t)(l->queue_len - 1u));
    l->queue_len--;
    l->waiting_ack = 0;
    if (l->queue_len > 0u) {
        load_head(l);
    }
}

/* The link session ends: the replay cache and what is in progress are forgotten. */
static void end_session(posterm_link *l)
{
    memset(l->replay, 0, sizeof l->replay);
    l->have_latest = 0;
    l->in_progress = 0;
}

static void go_down(posterm_link *l)
{
    end_session(l);
    if (l->up) {
        l->up = 0;
        raise_event(l, POSTERM_EV_DOWN, 0);
    }
}

/* The head frame got no ACK after max_sends sends: it and everything queued fail. */
static void give_up(posterm_link *l)
{
    uint8_t i;
    for (i = 0; i < l->queue_len; i++) {
        if (l->queue[i].is_request && !(l->ping_outstanding && l->queue[i].id == l->ping_id)) {
            raise_event(l, POSTERM_EV_SEND_FAILED, l->queue[i].id);
        }
    }
    l->queue_len = 0;
    l->waiting_ack = 0;
    l->wire_len = 0;
    l->wire_pos = 0;
    l->ping_outstanding = 0;
    go_down(l);
}

/* Same bytes again (NAK or T3), or give up after max_sends. */
static void resend_or_give_up(posterm_link *l)
{
    if (l->sends >= l->config.max_sends) {
        give_up(l);
        return;
    }
    l->sends++;
    l->wire_pos = 0;
    l->waiting_ack = 0;
}

static void sign_of_life(posterm_link *l, uint32_t now)
{
    l->last_heard = now;
    l->missed_pings = 0;
    if (!l->up) {
        l->up = 1;
        raise_event(l, POSTERM_EV_UP, 0);
    }
}

static void send_ping(posterm_link *l, uint32_t now)
{
    char apdu[32];
    size_t len;
    l->ping_id = posterm_link_next_id(l);
    len = posterm_enc_ping(apdu, sizeof apdu, l->ping_id);
    if (enqueue(l, 1, l->ping_id, apdu, len) == 0) {
        l->ping_outstanding = 1;
    }
    l->last_ping_check = now;
}

/* The first call: like the agent, probe the line at once so the link comes up within one round
 * trip. */
static void start(posterm_link *l, uint32_t now)
{
    if (l->started) {
        return;
    }
    l->started = 1;
    l->last_heard = now;
    l->last_rx = now;
    send_ping(l, now);
}

static void owe(posterm_link *l, uint8_t byte)
{
    if (l->pending_ack < sizeof l->owed) {
        l->owed[l->pending_ack++] = byte;
    }
}

static posterm_replay_entry *cached(posterm_link *l, uint32_t id)
{
    size_t i;
    for (i = 0; i < POSTERM_REPLAY_ENTRIES; i++) {
        if (l->replay[i].used && l->replay[i].id == id) {
            return &l->replay[i];
        }
    }
    return NULL;
}

/* Sends a reply and keeps it for a duplicate of its request. */
static int reply_and_keep(posterm_link *l, uint32_t re, uint32_t fp, const void *apdu,
                          size_t len)
{
    if (len <= POSTERM_TX_APDU) {
        posterm_replay_entry *entry = cached(l, re);
        if (entry == NULL) {
            entry = &l->replay[l->replay_next];
            l->replay_next = (uint8_t)((l->replay_next + 1u) % POSTERM_REPLAY_ENTRIES);
        }
        entry->used = 1;
        entry->id = re;
        entry->fingerprint = fp;
        entry->len = (uint16_t)len;
        memcpy(entry->apdu, apdu, len);
    }
    return enqueue(l, 0, re, apdu, len);
}

/* A request from the agent, after its frame was ACKed. Returns 1 when the application must see
 * it. */
static int take_request(posterm_link *l, const uint8_t *apdu, size_t len)
{
    char answer[POSTERM_TX_APDU];
    size_t n;
    const char *invalid;
    uint32_t id = l->msg.id;
    uint32_t fp = fingerprint(apdu, len);
    posterm_replay_entry *entry = cached(l, id);
    if (entry != NULL) {
        if (l->have_latest && id != l->latest_id) {
            /* An older id again: the agent restarted (its ids count from 1 again). */
            end_session(l);
        } else if (entry->fingerprint == fp) {
            (void)enqueue(l, 0, id, entry->apdu, entry->len);
            return 0;
        }
    } else if (l->in_progress && l->in_progress_id == id && l->in_progress_fp == fp) {
        return 0; /* still being answered: its reply goes out once */
    }
    l->latest_id = id;
    l->have_latest = 1;
    invalid = posterm_msg_invalid_agent_request(&l->msg);
    if (invalid != NULL) {
        n = posterm_enc_error(answer, sizeof answer, id, "invalid_request", invalid);
        (void)reply_and_keep(l, id, fp, answer, n);
        return 0;
    }
    if (l->msg.type == POSTERM_T_PING) {
        n = posterm_enc_pong(answer, sizeof answer, id);
        (void)reply_and_keep(l, id, fp, answer, n);
        return 0;
    }
    l->in_progress = 1;
    l->in_progress_id = id;
    l->in_progress_fp = fp;
    return 1;
}

/* The next event: the timers' and link changes' first, then a held request or reply. */
static int take_any(posterm_link *l, posterm_event *ev)
{
    if (take_event(l, ev)) {
        return 1;
    }
    if (l->held != POSTERM_EV_NONE) {
        ev->type = (posterm_event_type)l->held;
        ev->id = l->held == POSTERM_EV_REQUEST ? l->msg.id : l->msg.re;
        ev->msg = &l->msg;
        l->held = POSTERM_EV_NONE;
        return 1;
    }
    return 0;
}

/* A good frame from the agent, already ACKed. */
static void take_frame(posterm_link *l, uint32_t now)
{
    sign_of_life(l, now);
    switch (posterm_msg_parse(l->decoder.apdu, l->decoder.len, &l->msg)) {
    case POSTERM_MSG_REQUEST:
        if (take_request(l, l->decoder.apdu, l->decoder.len)) {
            l->held = POSTERM_EV_REQUEST;
        }
        break;
    case POSTERM_MSG_REPLY:
        if (l->ping_outstanding && l->msg.re == l->ping_id) {
            l->ping_outstanding = 0;
        } else if (l->awaiting_len > 0u) {
            uint8_t k;
            for (k = 0; k < l->awaiting_len; k++) {
                if (l->awaiting[k] == l->msg.re) {
                    l->awaiting[k] = l->awaiting[--l->awaiting_len];
                    l->held = POSTERM_EV_REPLY;
                    break;
                }
            }
        }
        break; /* a reply to no request of the terminal: dropped */
    default:
        break; /* no usable id, or not a JSON object: dropped (it was ACKed) */
    }
}

size_t posterm_link_input(posterm_link *l, uint32_t now_ms, const uint8_t *in, size_t len,
                          posterm_event *ev)
{
    size_t i;
    ev->type = POSTERM_EV_NONE;
    ev->id = 0;
    ev->msg = NULL;
    start(l, now_ms);
    if (take_any(l, ev)) {
        return 0;
    }
    if (len > 0u && posterm_decoder_in_frame(&l->decoder) &&
        due(now_ms, l->last_rx + l->config.inter_byte_ms)) {
        posterm_decoder_abandon(&l->decoder);
    }
    for (i = 0; i < len; i++) {
        l->last_rx = now_ms;
        switch (posterm_decoder_push(&l->decoder, in[i])) {
        case POSTERM_IN_ACK:
            if (l->waiting_ack) {
                pop_head(l);
                sign_of_life(l, now_ms);
            }
            break;
        case POSTERM_IN_NAK:
            if (l->waiting_ack) {
                resend_or_give_up(l);
            }
            break;
        case POSTERM_IN_BAD_FRAME:
            owe(l, POSTERM_NAK);
            break;
        case POSTERM_IN_FRAME:
            owe(l, POSTERM_ACK);
            take_frame(l, now_ms);
            break;
        default:
            break;
        }
        if (take_any(l, ev)) {
            return i + 1u;
        }
    }
    return len;
}

int posterm_link_poll(posterm_link *l, uint32_t now_ms, posterm_event *ev)
{
    uint32_t idle_since;
    start(l, now_ms);
    if (take_any(l, ev)) {
        return 1;
    }
    if (posterm_decoder_in_frame(&l->decoder) &&
        due(now_ms, l->last_rx + l->config.inter_byte_ms)) {
        posterm_decoder_abandon(&l->decoder);
    }
    if (l->waiting_ack && due(now_ms, l->t3_deadline)) {
        resend_or_give_up(l);
    }
    idle_since = (int32_t)(l->last_heard - l->last_ping_check) > 0 ? l->last_heard
                                                                    : l->last_ping_check;
    if (l->queue_len == 0u && due(now_ms, idle_since + l->config.ping_interval_ms)) {
        if (l->missed_pings >= l->config.missed_pings_for_down) {
            go_down(l);
        }
        l->missed_pings++;
        send_ping(l, now_ms);
    }
    return take_any(l, ev);
}

size_t posterm_link_output(posterm_link *l, uint32_t now_ms, uint8_t *out, size_t cap)
{
    size_t n = 0;
    start(l, now_ms);
    for (;;) {
        int frame_writable = l->queue_len > 0u && !l->waiting_ack;
        if (frame_writable && l->wire_pos > 0u) {
            /* Finish the frame before anything else: no ACK inside a frame. */
        } else if (l->pending_ack > 0u) {
            size_t k = l->pending_ack < cap - n ? l->pending_ack : cap - n;
            memcpy(out + n, l->owed, k);
            memmove(l->owed, l->owed + k, l->pending_ack - k);
            l->pending_ack = (uint8_t)(l->pending_ack - k);
            n += k;
            if (l->pending_ack > 0u) {
                return n;
            }
        }
        if (!frame_writable || n >= cap) {
            return n;
        }
        {
            size_t k = (size_t)(l->wire_len - l->wire_pos);
            if (k > cap - n) {
                k = cap - n;
            }
            memcpy(out + n, l->wire + l->wire_pos, k);
            l->wire_pos = (uint16_t)(l->wire_pos + k);
            n += k;
        }
        if (l->wire_pos >= l->wire_len) {
            l->waiting_ack = 1;
            l->t3_deadline = now_ms + l->config.ack_timeout_ms;
        }
        return n;
    }
}

int posterm_link_send_request(posterm_link *l, uint32_t id, const void *apdu, size_t len)
{
    if (enqueue(l, 1, id, apdu, len) != 0) {
        return -1;
    }
    /* Its reply is delivered; the oldest request still waiting is forgotten when full. */
    if (l->awaiting_len >= sizeof l->awaiting / sizeof l->awaiting[0]) {
        memmove(&l->awaiting[0], &l->awaiting[1],
                sizeof l->awaiting[0] * (sizeof l->awaiting / sizeof l->awaiting[0] - 1u));
        l->awaiting_len--;
    }
    l->awaiting[l->awaiting_len++] = id;
    return 0;
}

int posterm_link_reply(posterm_link *l, uint32_t re, const void *apdu, size_t len)
{
    uint32_t fp = 0;
    if (l->in_progress && l->in_progress_id == re) {
        fp = l->in_progress_fp;
        l->in_progress = 0;
    }
    return reply_and_keep(l, re, fp, apdu, len);
}
