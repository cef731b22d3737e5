/*
 * posterm: the terminal's end of the pos-agent serial link (docs/serial-protocol.md), in
 * portable C99 for terminal firmware. No heap, no OS calls: the caller passes the bytes it read
 * and the time of its own clock in, and takes the bytes to write and the events out.
 * How to use it: docs/terminal-kit.md.
 *
 * Layers, each usable on its own:
 *   frame   CRC-16/KERMIT, DLE STX ... DLE ETX CRC framing, a streaming decoder     (section 2)
 *   msg     the JSON messages of both directions: encoders and a small parser        (section 3)
 *   link    stop-and-wait, ACK/NAK, T1/T3, max_sends, request ids, replay cache,
 *           ping liveness and link up/down                                         (sections 2-4)
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#ifndef POSTERM_H
#define POSTERM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- sizes (override with -D before including, the same for every file) ---- */

/* The protocol's longest APDU; the decoder holds this much. */
#define POSTERM_MAX_APDU 4096u
/* The longest APDU this terminal sends (its requests and replies are short). */
#ifndef POSTERM_TX_APDU
#define POSTERM_TX_APDU 384u
#endif
/* Frames waiting for the line, the one being sent included. */
#ifndef POSTERM_TX_QUEUE
#define POSTERM_TX_QUEUE 4u
#endif
/* Answered request ids whose reply is kept for a duplicate (only the latest id can be one). */
#ifndef POSTERM_REPLAY_ENTRIES
#define POSTERM_REPLAY_ENTRIES 2u
#endif
/* Longest string field kept from a parsed message (longer ones are cut short). */
#ifndef POSTERM_FIELD
#define POSTERM_FIELD 72u
#endif

#define POSTERM_PROTOCOL_VERSION 1u

#define POSTERM_DLE 0x10u
#define POSTERM_STX 0x02u
#define POSTERM_ETX 0x03u
#define POSTERM_ACK 0x06u
#define POSTERM_NAK 0x15u

/* ---- frame ---- */

/* CRC-16/KERMIT of `len` bytes, continuing from `crc` (start with 0). */
uint16_t posterm_crc16(uint16_t crc, const uint8_t *data, size_t len);

/* Writes the frame of `apdu` (DLE stuffing, DLE ETX, CRC low byte first) to `out`; returns its
 * length, or 0 when `len` is over POSTERM_MAX_APDU or `cap` is too small. */
size_t posterm_frame_encode(const uint8_t *apdu, size_t len, uint8_t *out, size_t cap);

typedef enum {
    POSTERM_IN_NOTHING = 0, /* byte taken, nothing complete yet (or noise) */
    POSTERM_IN_FRAME,       /* a good frame: answer ACK; its APDU is in the decoder */
    POSTERM_IN_ACK,
    POSTERM_IN_NAK,
    POSTERM_IN_BAD_FRAME    /* bad CRC, too long or bad escape: answer NAK */
} posterm_input;

typedef struct {
    uint8_t state;
    uint8_t fault;
    uint8_t crc_low;
    size_t len;
    uint32_t noise_bytes;
    uint32_t abandoned_frames;
    uint32_t rejected_frames;
    uint8_t apdu[POSTERM_MAX_APDU];
} posterm_decoder;

void posterm_decoder_init(posterm_decoder *d);
/* Takes one byte of the line. After POSTERM_IN_FRAME, d->apdu and d->len hold the APDU until
 * the next call. Never fails on any input, never holds more than POSTERM_MAX_APDU bytes. */
posterm_input posterm_decoder_push(posterm_decoder *d, uint8_t byte);
/* Whether a frame has begun and not ended (T1 applies). */
int posterm_decoder_in_frame(const posterm_decoder *d);
/* Drops a partial frame without an answer (T1 expired). */
void posterm_decoder_abandon(posterm_decoder *d);

/* ---- msg ---- */

typedef enum {
    POSTERM_T_UNKNOWN = 0,
    /* agent -> terminal requests */
    POSTERM_T_AGENT_STATE,
    POSTERM_T_PAYMENT_CANCELLED,
    POSTERM_T_PING,
    /* replies */
    POSTERM_T_SALE_STARTED,
    POSTERM_T_OK,
    POSTERM_T_CANCELLED,
    POSTERM_T_STATUS,
    POSTERM_T_PONG,
    POSTERM_T_ERROR
} posterm_type;

/* What a received APDU is (section 3). */
typedef enum {
    POSTERM_MSG_UNREADABLE = 0, /* not a JSON object, or `re` unusable: dropped */
    POSTERM_MSG_ANONYMOUS,      /* a request without a usable `id`: dropped */
    POSTERM_MSG_REQUEST,        /* a request with `id` */
    POSTERM_MSG_REPLY           /* a reply with `re` */
} posterm_kind;

/* A parsed message: the fields of every message either side sends, flags saying which came. */
typedef struct {
    posterm_kind kind;
    posterm_type type;
    uint32_t id;               /* REQUEST */
    uint32_t re;               /* REPLY */
    uint32_t protocol;         /* agent_state, ok: 0 when absent (version 1) */
    uint64_t count;            /* cancelled_count, pending_count */
    int has_payment_request_id;
    int connected;             /* status */
    int truncated;
    int invalid;               /* a field had the wrong JSON type or the type is unknown */
    char type_name[24];
    char state[16];            /* agent_state: "ready" or "stopping" */
    char reason[16];           /* payment_cancelled */
    char code[24];             /* error */
    char payment_request_id[POSTERM_FIELD];
    char merchant_unique_code[POSTERM_FIELD];
    char connection_id[POSTERM_FIELD];
    char agent[POSTERM_FIELD];
    char message[POSTERM_FIELD];
} posterm_msg;

/* Parses one APDU. Returns m->kind. Unknown fields are skipped. */
posterm_kind posterm_msg_parse(const uint8_t *apdu, size_t len, posterm_msg *m);
/* For a REQUEST from the agent: NULL when it is a valid agent request, else why not (the link
 * answers error/invalid_request with it). */
const char *posterm_msg_invalid_agent_request(const posterm_msg *m);

/* Who the terminal is, sent in its `ok` to `agent_state` `ready`. NULL strings are left out. */
typedef struct {
    uint32_t protocol;
    const char *model;
    const char *firmware;
} posterm_identity;

/* Encoders: each writes one APDU to `out` and returns its length, 0 if it does not fit in
 * `cap`. Strings are JSON-escaped; optional ones may be NULL. */
size_t posterm_enc_sale(char *out, size_t cap, uint32_t id, const char *merchant_unique_code,
                        uint64_t amount_minor, const char *display_code);
size_t posterm_enc_payment_started(char *out, size_t cap, uint32_t id,
                                   const char *payment_request_id);
size_t posterm_enc_payment_result(char *out, size_t cap, uint32_t id,
                                  const char *payment_request_id, int succeeded);
size_t posterm_enc_cancel(char *out, size_t cap, uint32_t id, const char *payment_request_id);
size_t posterm_enc_status(char *out, size_t cap, uint32_t id);
size_t posterm_enc_ping(char *out, size_t cap, uint32_t id);
size_t posterm_enc_ok(char *out, size_t cap, uint32_t re, const posterm_identity *identity);
size_t posterm_enc_pong(char *out, size_t cap, uint32_t re);
size_t posterm_enc_error(char *out, size_t cap, uint32_t re, const char *code,
                         const char *message);

/* ---- link ---- */

typedef struct {
    uint32_t ack_timeout_ms;   /* T3, default 1000 */
    uint32_t max_sends;        /* default 3 */
    uint32_t ping_interval_ms; /* default 5000 */
    uint32_t inter_byte_ms;    /* T1, 200 */
    uint32_t missed_pings_for_down; /* 3 */
} posterm_config;

/* The spec's defaults. */
posterm_config posterm_config_default(void);

typedef enum {
    POSTERM_EV_NONE = 0,
    POSTERM_EV_UP,          /* the agent showed signs of life */
    POSTERM_EV_DOWN,        /* a frame failed after max_sends, or pings went unanswered */
    POSTERM_EV_REQUEST,     /* a valid agent request in ev->msg: answer it with
                               posterm_link_reply (ping and invalid ones are answered by the
                               link itself) */
    POSTERM_EV_REPLY,       /* the agent's reply to one of the terminal's requests (ev->msg->re) */
    POSTERM_EV_SEND_FAILED  /* the terminal's request ev->id was not acknowledged: it failed */
} posterm_event_type;

typedef struct {
    posterm_event_type type;
    uint32_t id;
    const posterm_msg *msg; /* REQUEST, REPLY: valid until the next call into the link */
} posterm_event;

typedef struct {
    uint8_t apdu[POSTERM_TX_APDU];
    uint16_t len;
    uint8_t is_request;
    uint32_t id;
} posterm_tx_slot;

typedef struct {
    uint32_t id;
    uint32_t fingerprint;
    uint16_t len;
    uint8_t used;
    uint8_t apdu[POSTERM_TX_APDU];
} posterm_replay_entry;

typedef struct {
    posterm_config config;
    posterm_decoder decoder;
    posterm_msg msg;
    /* sending */
    posterm_tx_slot queue[POSTERM_TX_QUEUE];
    uint8_t queue_len;
    uint8_t wire[2u * POSTERM_TX_APDU + 6u];
    uint16_t wire_len;
    uint16_t wire_pos;       /* < wire_len while the frame is being written */
    uint8_t waiting_ack;     /* the frame is on the line, T3 running */
    uint32_t sends;
    uint32_t t3_deadline;
    uint8_t pending_ack;     /* ACKs/NAKs owed, written between frames, in order */
    uint8_t owed[8];
    /* receiving */
    uint32_t last_rx;
    posterm_replay_entry replay[POSTERM_REPLAY_ENTRIES];
    uint8_t replay_next;
    uint32_t latest_id;
    uint8_t have_latest;
    uint32_t in_progress_id;
    uint32_t in_progress_fp;
    uint8_t in_progress;
    /* liveness */
    uint8_t up;
    uint8_t started;
    uint32_t last_heard;
    uint32_t last_ping_check;
    uint32_t missed_pings;
    uint32_t next_id;
    uint32_t ping_id;
    uint8_t ping_outstanding;
    /* the terminal's requests waiting for their reply */
    uint32_t awaiting[4];
    uint8_t awaiting_len;
    /* a request or reply in msg, delivered after the events below */
    uint8_t held;
    /* events raised by timers and link changes, delivered one per call */
    uint8_t ev_head, ev_len;
    uint8_t ev_type[4];
    uint32_t ev_id[4];
} posterm_link;

void posterm_link_init(posterm_link *l, const posterm_config *config);

/* Takes bytes read from the line at `now_ms` (the caller's millisecond clock, any epoch, may
 * wrap). Stops at the first event: returns how many bytes it took, *ev says what happened
 * (POSTERM_EV_NONE when all were taken without one). Call again with the rest, also when no
 * byte is left, until it reports no event. */
size_t posterm_link_input(posterm_link *l, uint32_t now_ms, const uint8_t *in, size_t len,
                          posterm_event *ev);

/* Runs the timers (T1, T3 and resends, pings, link down). Call it at least every 10 ms or so
 * while idle; returns 1 and fills *ev when something happened (call again until 0). */
int posterm_link_poll(posterm_link *l, uint32_t now_ms, posterm_event *ev);

/* Bytes to write to the line now (ACK/NAK and frames, never an ACK inside a frame); returns
 * how many it put in `out`. T3 starts when the last byte of a frame has been taken. */
size_t posterm_link_output(posterm_link *l, uint32_t now_ms, uint8_t *out, size_t cap);

/* The id for the terminal's next request (+1 each, never 0). */
uint32_t posterm_link_next_id(posterm_link *l);

/* Queues the terminal's request `apdu` (encoded with the id posterm_link_next_id gave).
 * Returns 0, or -1 when the queue is full or the APDU too long. */
int posterm_link_send_request(posterm_link *l, uint32_t id, const void *apdu, size_t len);

/* Answers the agent's request `re` with `apdu` (encoded with re = `re`); the reply is kept for
 * a duplicate. Returns 0 or -1 (queue full, too long). */
int posterm_link_reply(posterm_link *l, uint32_t re, const void *apdu, size_t len);

/* Whether the link is up. */
int posterm_link_is_up(const posterm_link *l);

#ifdef __cplusplus
}
#endif

#endif /* POSTERM_H */
