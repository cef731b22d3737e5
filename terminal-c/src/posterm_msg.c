/*
 * The message layer of docs/serial-protocol.md section 3: encoders for every message the
 * terminal sends (fields in the order the agent writes them, so the bytes match the spec's
 * vectors) and a small JSON parser for what the agent sends. The parser reads one object,
 * keeps the fields it knows (strings cut short at POSTERM_FIELD), skips the others whatever
 * they hold, and never reads outside the APDU.
 *
 * SPDX-License-Identifier: MIT OR Apache-2.0
 */
#include "posterm.h"

#include <stddef.h>
#include <string.h>

/* ---- encoding ---- */

typedef struct {
    char *out;
    size_t cap;
    size_t n;
    int overflow;
} writer;

static void put(writer *w, const char *s)
{
    while (*s != '\0') {
        if (w->n >= w->cap) {
            w->overflow = 1;
            return;
        }
        w->out[w->n++] = *s++;
    }
}

static void put_char(writer *w, char c)
{
    char s[2];
    s[0] = c;
    s[1] = '\0';
    put(w, s);
}

static void put_u64(writer *w, uint64_t v)
{
    char digits[21];
    int i = 20;
    digits[i] = '\0';
    do {
        digits[--i] = (char)('0' + (int)(v % 10u));
        v /= 10u;
    } while (v != 0u);
    put(w, &digits[i]);
}

static void put_string(writer *w, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    put_char(w, '"');
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            put_char(w, '\\');
            put_char(w, (char)c);
        } else if (c < 0x20u) {
            put(w, "\\u00");
            put_char(w, hex[c >> 4]);
            put_char(w, hex[c & 0x0Fu]);
        } else {
            put_char(w, (char)c);
        }
    }
    put_char(w, '"');
}

static void put_field(writer *w, const char *key, const char *value)
{
    put(w, ",\"");
    put(w, key);
    put(w, "\":");
    put_string(w, value);
}

static void begin(writer *w, char *out, size_t cap, const char *type)
{
    w->out = out;
    w->cap = cap;
    w->n = 0;
    w->overflow = 0;
    put(w, "{\"type\":\"");
    put(w, type);
    put_char(w, '"');
}

static size_t end(writer *w, const char *key, uint32_t number)
{
    put(w, ",\"");
    put(w, key);
    put(w, "\":");
    put_u64(w, number);
    put_char(w, '}');
    return w->overflow ? 0u : w->n;
}

size_t posterm_enc_sale(char *out, size_t cap, uint32_t id, const char *merchant_unique_code,
                        uint64_t amount_minor, const char *display_code)
{
    writer w;
    begin(&w, out, cap, "sale");
    put_field(&w, "merchant_unique_code", merchant_unique_code);
    put(&w, ",\"amount_minor\":");
    put_u64(&w, amount_minor);
    if (display_code != NULL) {
        put_field(&w, "display_code", display_code);
    }
    return end(&w, "id", id);
}

size_t posterm_enc_payment_started(char *out, size_t cap, uint32_t id,
                                   const char *payment_request_id)
{
    writer w;
    begin(&w, out, cap, "payment_started");
    put_field(&w, "payment_request_id", payment_request_id);
    return end(&w, "id", id);
}

size_t posterm_enc_payment_result(char *out, size_t cap, uint32_t id,
                                  const char *payment_request_id, int succeeded)
{
    writer w;
    begin(&w, out, cap, "payment_result");
    put_field(&w, "payment_request_id", payment_request_id);
    put_field(&w, "status", succeeded ? "succeeded" : "failed");
    return end(&w, "id", id);
}

size_t posterm_enc_cancel(char *out, size_t cap, uint32_t id, const char *payment_request_id)
{
    writer w;
    begin(&w, out, cap, "cancel");
    if (payment_request_id != NULL) {
        put_field(&w, "payment_request_id", payment_request_id);
    }
    return end(&w, "id", id);
}

size_t posterm_enc_status(char *out, size_t cap, uint32_t id)
{
    writer w;
    begin(&w, out, cap, "status");
    return end(&w, "id", id);
}

size_t posterm_enc_ping(char *out, size_t cap, uint32_t id)
{
    writer w;
    begin(&w, out, cap, "ping");
    return end(&w, "id", id);
}

size_t posterm_enc_ok(char *out, size_t cap, uint32_t re, const posterm_identity *identity)
{
    writer w;
    begin(&w, out, cap, "ok");
    if (identity != NULL) {
        if (identity->protocol != 0u) {
            put(&w, ",\"protocol\":");
            put_u64(&w, identity->protocol);
        }
        if (identity->model != NULL) {
            put_field(&w, "model", identity->model);
        }
        if (identity->firmware != NULL) {
            put_field(&w, "firmware", identity->firmware);
        }
    }
    return end(&w, "re", re);
}

size_t posterm_enc_pong(char *out, size_t cap, uint32_t re)
{
    writer w;
    begin(&w, out, cap, "pong");
    return end(&w, "re", re);
}

size_t posterm_enc_error(char *out, size_t cap, uint32_t re, const char *code,
                         const char *message)
{
    writer w;
    begin(&w, out, cap, "error");
    put_field(&w, "code", code);
    put_field(&w, "message", message);
    return end(&w, "re", re);
}

/* ---- parsing ---- */

#define MAX_DEPTH 32

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
    int bad;
} reader;

static void skip_ws(reader *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')) {
        r->p++;
    }
}

static int peek(reader *r)
{
    skip_ws(r);
    return r->p < r->end ? *r->p : -1;
}

static int expect(reader *r, uint8_t c)
{
    if (peek(r) != c) {
        r->bad = 1;
        return 0;
    }
    r->p++;
    return 1;
}

static int hex_digit(uint8_t c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* Appends one byte to a bounded string (cut short, always terminated). */
static void append(char *dst, size_t cap, size_t *n, uint8_t c)
{
    if (dst != NULL && *n + 1u < cap) {
        dst[(*n)++] = (char)c;
        dst[*n] = '\0';
    }
}

/* Reads a JSON string (the opening quote next); copies it to dst when dst is not NULL. */
static void read_string(reader *r, char *dst, size_t cap)
{
    size_t n = 0;
    if (dst != NULL && cap > 0u) {
        dst[0] = '\0';
    }
    if (!expect(r, '"')) {
        return;
    }
    while (r->p < r->end) {
        uint8_t c = *r->p++;
        if (c == '"') {
            return;
        }
        if (c < 0x20u) {
            break;
        }
        if (c != '\\') {
            append(dst, cap, &n, c);
            continue;
        }
        if (r->p >= r->end) {
            break;
        }
        c = *r->p++;
        switch (c) {
        case '"': case '\\': case '/': append(dst, cap, &n, c); break;
        case 'b': append(dst, cap, &n, '\b'); break;
        case 'f': append(dst, cap, &n, '\f'); break;
        case 'n': append(dst, cap, &n, '\n'); break;
        case 'r': append(dst, cap, &n, '\r'); break;
        case 't': append(dst, cap, &n, '\t'); break;
        case 'u': {
            uint32_t cp = 0;
            int i;
            if (r->end - r->p < 4) {
                r->bad = 1;
                return;
            }
            for (i = 0; i < 4; i++) {
                int h = hex_digit(*r->p++);
                if (h < 0) {
                    r->bad = 1;
                    return;
                }
                cp = (cp << 4) | (uint32_t)h;
            }
            /* Kept as UTF-8; a surrogate half becomes '?' (no field the link reads needs one). */
            if (cp < 0x80u) {
                append(dst, cap, &n, (uint8_t)cp);
            } else if (cp < 0x800u) {
                append(dst, cap, &n, (uint8_t)(0xC0u | (cp >> 6)));
                append(dst, cap, &n, (uint8_t)(0x80u | (cp & 0x3Fu)));
            } else if (cp >= 0xD800u && cp <= 0xDFFFu) {
                append(dst, cap, &n, '?');
            } else {
                append(dst, cap, &n, (uint8_t)(0xE0u | (cp >> 12)));
                append(dst, cap, &n, (uint8_t)(0x80u | ((cp >> 6) & 0x3Fu)));
                append(dst, cap, &n, (uint8_t)(0x80u | (cp & 0x3Fu)));
            }
            break;
        }
        default:
            r->bad = 1;
            return;
        }
    }
    r->bad = 1;
}

/* Reads a JSON number. *usable: a non-negative integer that fits in 64 bits. */
static uint64_t read_number(reader *r, int *usable)
{
    uint64_t v = 0;
    int digits = 0;
    *usable = 1;
    skip_ws(r);
    if (r->p < r->end && *r->p == '-') {
        *usable = 0;
        r->p++;
    }
    while (r->p < r->end && *r->p >= '0' && *r->p <= '9') {
        uint64_t d = (uint64_t)(*r->p - '0');
        if (v > (UINT64_MAX - d) / 10u) {
            *usable = 0;
        } else {
            v = v * 10u + d;
        }
        digits++;
        r->p++;
    }
    if (digits == 0) {
        r->bad = 1;
        return 0;
    }
    if (r->p < r->end && *r->p == '.') {
        *usable = 0;
        r->p++;
        while (r->p < r->end && *r->p >= '0' && *r->p <= '9') {
            r->p++;
        }
    }
    if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
        *usable = 0;
        r->p++;
        if (r->p < r->end && (*r->p == '+' || *r->p == '-')) {
            r->p++;
        }
        while (r->p < r->end && *r->p >= '0' && *r->p <= '9') {
            r->p++;
        }
    }
    return v;
}

static int read_literal(reader *r, const char *word)
{
    size_t len = strlen(word);
    skip_ws(r);
    if ((size_t)(r->end - r->p) < len || memcmp(r->p, word, len) != 0) {
        r->bad = 1;
        return 0;
    }
    r->p += len;
    return 1;
}

/* Skips any JSON value, nested at most MAX_DEPTH deep, without recursion. */
static void skip_value(reader *r)
{
    uint32_t objects = 0; /* bit d set: the container at depth d is an object */
    int depth = 0;
    int usable;
    for (;;) {
        int c = peek(r);
        if (c == '{' || c == '[') {
            if (depth >= MAX_DEPTH) {
                r->bad = 1;
                return;
            }
            r->p++;
            if (c == '{') {
                objects |= (uint32_t)1u << depth;
            } else {
                objects &= ~((uint32_t)1u << depth);
            }
            depth++;
            if (peek(r) == (c == '{' ? '}' : ']')) {
                r->p++;
                depth--;
            } else {
                if (c == '{') {
                    read_string(r, NULL, 0);
                    expect(r, ':');
                    if (r->bad) {
                        return;
                    }
                }
                continue; /* the container's first element */
            }
        } else if (c == '"') {
            read_string(r, NULL, 0);
        } else if (c == 't') {
            read_literal(r, "true");
        } else if (c == 'f') {
            read_literal(r, "false");
        } else if (c == 'n') {
            read_literal(r, "null");
        } else {
            (void)read_number(r, &usable);
        }
        /* After a value: close what ends here, or go on to the next element. */
        for (;;) {
            int in_object;
            if (r->bad || depth == 0) {
                return;
            }
            in_object = (objects >> (depth - 1)) & 1u;
            c = peek(r);
            if (c == ',') {
                r->p++;
                if (in_object) {
                    read_string(r, NULL, 0);
                    expect(r, ':');
                }
                break;
            }
            if (c == (in_object ? '}' : ']')) {
                r->p++;
                depth--;
                continue;
            }
            r->bad = 1;
        }
        if (r->bad) {
            return;
        }
    }
}

static void copy_type(posterm_msg *m)
{
    static const struct {
        const char *name;
        posterm_type type;
    } types[] = {
        {"agent_state", POSTERM_T_AGENT_STATE}, {"payment_cancelled", POSTERM_T_PAYMENT_CANCELLED},
        {"ping", POSTERM_T_PING},               {"sale_started", POSTERM_T_SALE_STARTED},
        {"ok", POSTERM_T_OK},                   {"cancelled", POSTERM_T_CANCELLED},
        {"status", POSTERM_T_STATUS},           {"pong", POSTERM_T_PONG},
        {"error", POSTERM_T_ERROR},
    };
    size_t i;
    m->type = POSTERM_T_UNKNOWN;
    for (i = 0; i < sizeof types / sizeof types[0]; i++) {
        if (strcmp(m->type_name, types[i].name) == 0) {
            m->type = types[i].type;
        }
    }
}

#define FIELD(key, name) { key, offsetof(posterm_msg, name), sizeof(((posterm_msg *)0)->name) }

posterm_kind posterm_msg_parse(const uint8_t *apdu, size_t len, posterm_msg *m)
{
    static const struct {
        const char *key;
        size_t offset;
        size_t size;
    } strings[] = {
        FIELD("type", type_name),
        FIELD("state", state),
        FIELD("reason", reason),
        FIELD("code", code),
        FIELD("payment_request_id", payment_request_id),
        FIELD("merchant_unique_code", merchant_unique_code),
        FIELD("connection_id", connection_id),
        FIELD("agent", agent),
        FIELD("message", message),
    };
    reader r;
    char key[32];
    int id_state = 0, re_state = 0; /* 0 absent, 1 usable, 2 not a u32 */
    int has_type = 0;
    memset(m, 0, sizeof *m);
    r.p = apdu;
    r.end = apdu + len;
    r.bad = 0;
    if (!expect(&r, '{')) {
        return m->kind = POSTERM_MSG_UNREADABLE;
    }
    if (peek(&r) == '}') {
        r.p++;
    } else {
        for (;;) {
            int c;
            size_t i;
            int known = 0;
            read_string(&r, key, sizeof key);
            if (r.bad || !expect(&r, ':')) {
                return m->kind = POSTERM_MSG_UNREADABLE;
            }
            c = peek(&r);
            for (i = 0; i < sizeof strings / sizeof strings[0]; i++) {
                if (strcmp(key, strings[i].key) == 0) {
                    known = 1;
                    if (c == '"') {
                        read_string(&r, (char *)m + strings[i].offset, strings[i].size);
                        if (i == 0) {
                            has_type = 1;
                        } else if (strcmp(key, "payment_request_id") == 0) {
                            m->has_payment_request_id = 1;
                        }
                    } else {
                        m->invalid = 1;
                        skip_value(&r);
                    }
                }
            }
            if (!known) {
                int usable;
                uint64_t v;
                int is_id = strcmp(key, "id") == 0, is_re = strcmp(key, "re") == 0;
                if ((is_id || is_re || strcmp(key, "protocol") == 0 ||
                     strcmp(key, "cancelled_count") == 0 ||
                     strcmp(key, "pending_count") == 0) && (c == '-' || (c >= '0' && c <= '9'))) {
                    v = read_number(&r, &usable);
                    usable = usable && v <= UINT32_MAX;
                    if (is_id) {
                        id_state = usable ? 1 : 2;
                        m->id = usable ? (uint32_t)v : 0u;
                    } else if (is_re) {
                        re_state = usable ? 1 : 2;
                        m->re = usable ? (uint32_t)v : 0u;
                    } else if (strcmp(key, "protocol") == 0) {
                        m->protocol = usable ? (uint32_t)v : 0u;
                        m->invalid |= !usable;
                    } else {
                        m->count = v;
                    }
                } else if (strcmp(key, "connected") == 0 || strcmp(key, "truncated") == 0) {
                    int *flag = key[0] == 'c' ? &m->connected : &m->truncated;
                    if (c == 't') {
                        *flag = read_literal(&r, "true");
                    } else {
                        if (c != 'f') {
                            m->invalid = 1;
                            skip_value(&r);
                        } else {
                            read_literal(&r, "false");
                        }
                    }
                } else {
                    if (is_id) {
                        id_state = 2;
                    } else if (is_re) {
                        re_state = 2;
                    }
                    skip_value(&r);
                }
            }
            if (r.bad) {
                return m->kind = POSTERM_MSG_UNREADABLE;
            }
            c = peek(&r);
            if (c == ',') {
                r.p++;
                continue;
            }
            if (c == '}') {
                r.p++;
                break;
            }
            return m->kind = POSTERM_MSG_UNREADABLE;
        }
    }
    if (peek(&r) != -1) {
        return m->kind = POSTERM_MSG_UNREADABLE; /* something after the object */
    }
    if (has_type) {
        copy_type(m);
    } else {
        m->invalid = 1;
    }
    if (re_state != 0) {
        return m->kind = (re_state == 1 ? POSTERM_MSG_REPLY : POSTERM_MSG_UNREADABLE);
    }
    return m->kind = (id_state == 1 ? POSTERM_MSG_REQUEST : POSTERM_MSG_ANONYMOUS);
}

const char *posterm_msg_invalid_agent_request(const posterm_msg *m)
{
    static const char *const reasons[] = {"operator", "terminal", "shutdown", "timeout",
                                          "abandoned"};
    size_t i;
    if (m->type_name[0] == '\0') {
        return "no `type`";
    }
    if (m->invalid) {
        return "a field has the wrong type";
    }
    switch (m->type) {
    case POSTERM_T_PING:
        return NULL;
    case POSTERM_T_AGENT_STATE:
        if (strcmp(m->state, "ready") == 0 || strcmp(m->state, "stopping") == 0) {
            return NULL;
        }
        return "agent_state needs `state`: ready or stopping";
    case POSTERM_T_PAYMENT_CANCELLED:
        if (!m->has_payment_request_id) {
            return "payment_cancelled needs `payment_request_id`";
        }
        for (i = 0; i < sizeof reasons / sizeof reasons[0]; i++) {
            if (strcmp(m->reason, reasons[i]) == 0) {
                return NULL;
            }
        }
        return "payment_cancelled needs `reason`: operator, terminal, shutdown, timeout or "
               "abandoned";
    default:
        return "unknown `type`";
    }
}
