/*
 * wire.c - byte buffers and the tape value format: skipping values and
 * rendering bounded previews.  Encoding from Python objects lives in the
 * binding (capture.c) and decoding into Python objects in rebuild.c; this
 * file holds what needs no interpreter.
 *
 * Invariants: every reader is bounded by an explicit end pointer and never
 * reads past it; nesting is limited to WIRE_MAX_DEPTH so malformed input
 * cannot exhaust the C stack.
 */
#include "engine.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

int wbuf_reserve(wbuf *b, size_t n)
{
    if (b->failed)
        return -1;
    if (b->cap - b->len >= n)
        return 0;
    size_t want = b->cap ? b->cap : 64;
    while (want - b->len < n) {
        if (want > SIZE_MAX / 2) {
            b->failed = 1;
            return -1;
        }
        want *= 2;
    }
    uint8_t *p;
    if (b->on_heap) {
        p = realloc(b->data, want);
    } else {
        p = malloc(want);
        if (p && b->len)
            memcpy(p, b->data, b->len);
    }
    if (!p) {
        b->failed = 1;
        return -1;
    }
    b->data = p;
    b->cap = want;
    b->on_heap = 1;
    return 0;
}

void wbuf_release_heap(wbuf *b)
{
    free(b->data);
    b->data = NULL;
    b->on_heap = 0;
}

static const uint8_t *skip_at(const uint8_t *p, const uint8_t *end, int depth);

static const uint8_t *skip_sized(wreader *r)
{
    uint64_t n = wreader_varint(r);
    if (r->bad)
        return NULL;
    wreader_take(r, n);
    return r->bad ? NULL : r->p;
}

static const uint8_t *skip_many(wreader *r, uint64_t count, int depth)
{
    const uint8_t *p = r->p;
    for (uint64_t i = 0; i < count; i++) {
        p = skip_at(p, r->end, depth + 1);
        if (!p)
            return NULL;
    }
    return p;
}

static const uint8_t *skip_at(const uint8_t *p, const uint8_t *end, int depth)
{
    if (depth > WIRE_MAX_DEPTH || p >= end)
        return NULL;
    wreader r;
    wreader_init(&r, p + 1, (size_t)(end - p - 1));
    switch (*p) {
    case WIRE_NONE:
    case WIRE_FALSE:
    case WIRE_TRUE:
    case WIRE_REDACTED:
        return p + 1;
    case WIRE_INT:
        wreader_varint(&r);
        return r.bad ? NULL : r.p;
    case WIRE_FLOAT:
        wreader_take(&r, 8);
        return r.bad ? NULL : r.p;
    case WIRE_BIGINT:
    case WIRE_STR:
    case WIRE_BYTES:
    case WIRE_PICKLE:
    case WIRE_BLOB_INLINE:
        return skip_sized(&r);
    case WIRE_CODEC:
        if (!skip_sized(&r))
            return NULL;
        return skip_sized(&r);
    case WIRE_BLOB:
        wreader_take(&r, WIRE_HASH_BYTES);
        wreader_varint(&r);
        return r.bad ? NULL : r.p;
    case WIRE_TRUNCATED:
        if (!skip_sized(&r))
            return NULL;
        wreader_varint(&r);
        return r.bad ? NULL : r.p;
    case WIRE_UNENCODABLE:
        if (!skip_sized(&r))
            return NULL;
        return skip_sized(&r);
    case WIRE_EXCEPTION:
        if (!skip_sized(&r) || !skip_sized(&r))
            return NULL;
        return skip_at(r.p, end, depth + 1);
    case WIRE_DEFAULT:
        return skip_at(r.p, end, depth + 1);
    case WIRE_LIST:
    case WIRE_TUPLE:
    case WIRE_SET:
    case WIRE_FROZENSET: {
        uint64_t count = wreader_varint(&r);
        if (r.bad || count > (uint64_t)(end - p))
            return NULL;
        return skip_many(&r, count, depth);
    }
    case WIRE_DICT: {
        uint64_t count = wreader_varint(&r);
        if (r.bad || count > (uint64_t)(end - p))
            return NULL;
        return skip_many(&r, count * 2, depth);
    }
    default:
        return NULL;
    }
}

const uint8_t *wire_skip(const uint8_t *p, const uint8_t *end)
{
    return skip_at(p, end, 0);
}

/* ---- previews ---------------------------------------------------------- */

typedef struct preview {
    wbuf *out;
    size_t limit;
    int full; /* the limit was reached: emit nothing more */
} preview;

static void pv_put(preview *pv, const char *s, size_t n)
{
    if (pv->full)
        return;
    if (pv->out->len + n > pv->limit) {
        size_t room = pv->limit > pv->out->len ? pv->limit - pv->out->len : 0;
        wbuf_put(pv->out, s, room);
        wbuf_put(pv->out, "...", 3);
        pv->full = 1;
        return;
    }
    wbuf_put(pv->out, s, n);
}

static void pv_str(preview *pv, const char *s)
{
    pv_put(pv, s, strlen(s));
}

/* Quotes text like Python's repr of str (b_prefix for bytes), escaping
 * control characters and non-UTF-8 bytes. */
static void pv_quoted(preview *pv, const uint8_t *s, size_t n, int is_bytes)
{
    if (is_bytes)
        pv_put(pv, "b", 1);
    pv_put(pv, "'", 1);
    for (size_t i = 0; i < n && !pv->full; i++) {
        uint8_t c = s[i];
        char esc[8];
        if (c == '\'' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            pv_put(pv, esc, 2);
        } else if (c == '\n') {
            pv_put(pv, "\\n", 2);
        } else if (c == '\t') {
            pv_put(pv, "\\t", 2);
        } else if (c < 0x20 || c == 0x7f || (is_bytes && c >= 0x80)) {
            snprintf(esc, sizeof esc, "\\x%02x", c);
            pv_put(pv, esc, 4);
        } else {
            pv_put(pv, (const char *)&c, 1);
        }
    }
    pv_put(pv, "'", 1);
}

static const uint8_t *pv_value(preview *pv, const uint8_t *p, const uint8_t *end, int depth);

static const uint8_t *pv_items(preview *pv, wreader *r, const uint8_t *end, int depth,
                               const char *open, const char *close, int pairs, int one_tuple)
{
    uint64_t count = wreader_varint(r);
    if (r->bad || count > (uint64_t)(end - r->p))
        return NULL;
    const uint8_t *p = r->p;
    pv_str(pv, open);
    for (uint64_t i = 0; i < count; i++) {
        if (i)
            pv_put(pv, ", ", 2);
        p = pv_value(pv, p, end, depth + 1);
        if (!p)
            return NULL;
        if (pairs) {
            pv_put(pv, ": ", 2);
            p = pv_value(pv, p, end, depth + 1);
            if (!p)
                return NULL;
        }
    }
    if (one_tuple && count == 1)
        pv_put(pv, ",", 1);
    pv_str(pv, close);
    return p;
}

static const uint8_t *pv_value(preview *pv, const uint8_t *p, const uint8_t *end, int depth)
{
    if (depth > WIRE_MAX_DEPTH || p >= end)
        return NULL;
    const uint8_t *next = wire_skip(p, end);
    if (!next)
        return NULL;
    if (pv->full)
        return next;
    wreader r;
    wreader_init(&r, p + 1, (size_t)(end - p - 1));
    char num[64];
    switch (*p) {
    case WIRE_NONE:
        pv_str(pv, "None");
        break;
    case WIRE_FALSE:
        pv_str(pv, "False");
        break;
    case WIRE_TRUE:
        pv_str(pv, "True");
        break;
    case WIRE_INT:
        snprintf(num, sizeof num, "%lld", (long long)unzigzag(wreader_varint(&r)));
        pv_str(pv, num);
        break;
    case WIRE_BIGINT: {
        uint64_t n = wreader_varint(&r);
        snprintf(num, sizeof num, "<int of %llu bytes>", (unsigned long long)n);
        pv_str(pv, num);
        break;
    }
    case WIRE_FLOAT: {
        double d;
        memcpy(&d, wreader_take(&r, 8), 8);
        if (isnan(d))
            pv_str(pv, "nan");
        else if (isinf(d))
            pv_str(pv, d > 0 ? "inf" : "-inf");
        else {
            snprintf(num, sizeof num, "%.17g", d);
            /* shortest form that round-trips, like Python's repr */
            for (int prec = 1; prec <= 17; prec++) {
                char tmp[64];
                snprintf(tmp, sizeof tmp, "%.*g", prec, d);
                if (strtod(tmp, NULL) == d) {
                    memcpy(num, tmp, sizeof tmp);
                    /* Python writes exponents only below 1e-4 and from 1e16 */
                    char sci[64];
                    snprintf(sci, sizeof sci, "%.*e", prec - 1, d);
                    int exp = atoi(strchr(sci, 'e') + 1);
                    if (exp < -4 || exp >= 16)
                        memcpy(num, sci, sizeof sci);
                    else if (strchr(num, 'e'))
                        snprintf(num, sizeof num, "%.*f", prec - 1 - exp > 0 ? prec - 1 - exp : 0,
                                 d);
                    break;
                }
            }
            if (!strpbrk(num, ".eninf"))
                strncat(num, ".0", sizeof num - strlen(num) - 1);
            pv_str(pv, num);
        }
        break;
    }
    case WIRE_STR:
    case WIRE_BYTES: {
        uint64_t n = wreader_varint(&r);
        pv_quoted(pv, wreader_take(&r, n), (size_t)n, *p == WIRE_BYTES);
        break;
    }
    case WIRE_LIST:
        return pv_items(pv, &r, end, depth, "[", "]", 0, 0) ? next : NULL;
    case WIRE_TUPLE:
        return pv_items(pv, &r, end, depth, "(", ")", 0, 1) ? next : NULL;
    case WIRE_SET:
        return pv_items(pv, &r, end, depth, "{", "}", 0, 0) ? next : NULL;
    case WIRE_FROZENSET:
        return pv_items(pv, &r, end, depth, "frozenset({", "})", 0, 0) ? next : NULL;
    case WIRE_DICT:
        return pv_items(pv, &r, end, depth, "{", "}", 1, 0) ? next : NULL;
    case WIRE_PICKLE: {
        uint64_t n = wreader_varint(&r);
        snprintf(num, sizeof num, "<pickled, %llu bytes>", (unsigned long long)n);
        pv_str(pv, num);
        break;
    }
    case WIRE_CODEC: {
        uint64_t n = wreader_varint(&r);
        const uint8_t *name = wreader_take(&r, n);
        uint64_t size = wreader_varint(&r);
        pv_put(pv, "<", 1);
        pv_put(pv, (const char *)name, (size_t)n);
        snprintf(num, sizeof num, ", %llu bytes>", (unsigned long long)size);
        pv_str(pv, num);
        break;
    }
    case WIRE_BLOB_INLINE: {
        uint64_t n = wreader_varint(&r);
        const uint8_t *inner = wreader_take(&r, n);
        if (!pv_value(pv, inner, inner + n, depth + 1))
            return NULL;
        break;
    }
    case WIRE_BLOB: {
        wreader_take(&r, WIRE_HASH_BYTES);
        uint64_t size = wreader_varint(&r);
        snprintf(num, sizeof num, "<stored value, %llu bytes>", (unsigned long long)size);
        pv_str(pv, num);
        break;
    }
    case WIRE_REDACTED:
        pv_str(pv, "<redacted>");
        break;
    case WIRE_TRUNCATED: {
        uint64_t n = wreader_varint(&r);
        const uint8_t *name = wreader_take(&r, n);
        uint64_t size = wreader_varint(&r);
        pv_str(pv, "<truncated ");
        pv_put(pv, (const char *)name, (size_t)n);
        snprintf(num, sizeof num, ", %llu bytes>", (unsigned long long)size);
        pv_str(pv, num);
        break;
    }
    case WIRE_UNENCODABLE: {
        uint64_t n = wreader_varint(&r);
        const uint8_t *name = wreader_take(&r, n);
        uint64_t m = wreader_varint(&r);
        const uint8_t *why = wreader_take(&r, m);
        pv_str(pv, "<unencodable ");
        pv_put(pv, (const char *)name, (size_t)n);
        pv_put(pv, ": ", 2);
        pv_put(pv, (const char *)why, (size_t)m);
        pv_put(pv, ">", 1);
        break;
    }
    case WIRE_EXCEPTION: {
        uint64_t n = wreader_varint(&r);
        const uint8_t *name = wreader_take(&r, n);
        uint64_t m = wreader_varint(&r);
        const uint8_t *msg = wreader_take(&r, m);
        pv_put(pv, (const char *)name, (size_t)n);
        pv_put(pv, "(", 1);
        pv_quoted(pv, msg, (size_t)m, 0);
        pv_put(pv, ")", 1);
        break;
    }
    case WIRE_DEFAULT:
        return pv_value(pv, r.p, end, depth + 1) ? next : NULL;
    default:
        return NULL;
    }
    return next;
}

const uint8_t *wire_preview(const uint8_t *p, const uint8_t *end, wbuf *out, size_t limit)
{
    preview pv = {out, out->len + limit, 0};
    const uint8_t *next = pv_value(&pv, p, end, 0);
    if (!next)
        pv_str(&pv, "<malformed>");
    return next;
}
