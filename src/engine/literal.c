/*
 * literal.c - Python source for a tape value: `wire_literal` writes the
 * literal that evaluates to an equal value of the same types (used by
 * `calltape make-tests` to write readable regression tests).
 *
 * Values with a literal form: None, True, False, ints (BIGINT included),
 * floats (shortest repr that round-trips; nan and infinities as
 * float('nan') / float('inf')), str, bytes, list, tuple, dict, set and
 * frozenset of such values, and DEFAULT (its inner value).  Anything else
 * (pickled or codec values, blobs, markers, exceptions) has none: the
 * function then fails and the caller stores the value elsewhere.
 *
 * Invariants: reads never pass `end`; output is ASCII-safe for control and
 * non-UTF-8 bytes (escaped), valid UTF-8 text is kept as it is.
 */
#include "engine.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static const uint8_t *lit_value(wreader *r, wbuf *out, int depth);

static void put_str(wbuf *out, const char *s)
{
    wbuf_put(out, s, strlen(s));
}

/* Length of the valid UTF-8 sequence at s (a code point other than a
 * surrogate), or 0. */
static size_t utf8_len(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    size_t len = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 0;
    if (!len || len > n)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    if (len == 3 && c == 0xed && s[1] >= 0xa0) /* surrogates */
        return 0;
    if (len == 3 && c == 0xe0 && s[1] < 0xa0) /* overlong */
        return 0;
    if (len == 4 && ((c == 0xf0 && s[1] < 0x90) || (c == 0xf4 && s[1] >= 0x90)))
        return 0;
    return len;
}

/* A quoted str (or bytes) literal (lone surrogates, which str keeps with
 * surrogatepass, as \uXXXX escapes); returns 0, or -1 for bytes of a STR
 * that are not UTF-8. */
static int put_quoted(wbuf *out, const uint8_t *s, size_t n, int is_bytes)
{
    char esc[12];
    if (is_bytes)
        wbuf_byte(out, 'b');
    wbuf_byte(out, '\'');
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c == '\'' || c == '\\') {
            wbuf_byte(out, '\\');
            wbuf_byte(out, c);
        } else if (c == '\n') {
            put_str(out, "\\n");
        } else if (c == '\r') {
            put_str(out, "\\r");
        } else if (c == '\t') {
            put_str(out, "\\t");
        } else if (c < 0x20 || c == 0x7f || (is_bytes && c >= 0x80)) {
            snprintf(esc, sizeof esc, "\\x%02x", c);
            put_str(out, esc);
        } else if (c >= 0x80) {
            size_t len = utf8_len(s + i, n - i);
            if (!len && !is_bytes && c == 0xed && n - i >= 3 && s[i + 1] >= 0xa0 &&
                s[i + 1] < 0xc0 && (s[i + 2] & 0xc0) == 0x80) { /* a lone surrogate */
                unsigned cp = (unsigned)(c & 0x0f) << 12 | (unsigned)(s[i + 1] & 0x3f) << 6 |
                              (unsigned)(s[i + 2] & 0x3f);
                snprintf(esc, sizeof esc, "\\u%04x", cp);
                put_str(out, esc);
                i += 2;
                continue;
            }
            if (!len)
                return -1;                      /* not UTF-8 */
            if (c == 0xc2 && s[i + 1] < 0xa0) { /* C1 controls: escape */
                snprintf(esc, sizeof esc, "\\x%02x", s[i + 1]);
                put_str(out, esc);
            } else {
                wbuf_put(out, s + i, len);
            }
            i += len - 1;
        } else {
            wbuf_byte(out, c);
        }
    }
    wbuf_byte(out, '\'');
    return 0;
}

static void put_float(wbuf *out, double d)
{
    char buf[40];
    if (isnan(d)) {
        put_str(out, "float('nan')");
        return;
    }
    if (isinf(d)) {
        put_str(out, d > 0 ? "float('inf')" : "-float('inf')");
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, d);
        if (strtod(buf, NULL) == d)
            break;
    }
    put_str(out, buf);
    /* keep it a float: 3 -> 3.0, 1e+20 stays (has an exponent) */
    if (!strpbrk(buf, ".eEn"))
        put_str(out, ".0");
}

/* A little-endian two's complement integer in decimal. */
static int put_bigint(wbuf *out, const uint8_t *p, size_t n)
{
    if (n == 0 || n > 4096)
        return -1;
    uint8_t *mag = malloc(n);
    char *digits = malloc(n * 3 + 2);
    if (!mag || !digits) {
        free(mag);
        free(digits);
        return -1;
    }
    int neg = (p[n - 1] & 0x80) != 0;
    unsigned carry = 1;
    for (size_t i = 0; i < n; i++) { /* magnitude, still little-endian */
        unsigned v = neg ? (uint8_t)~p[i] + carry : p[i];
        mag[i] = (uint8_t)v;
        carry = neg ? v >> 8 : 0;
    }
    size_t nd = 0, len = n;
    while (len > 0) {
        unsigned rem = 0;
        for (size_t i = len; i-- > 0;) { /* divide by 10, most significant first */
            unsigned cur = (rem << 8) | mag[i];
            mag[i] = (uint8_t)(cur / 10);
            rem = cur % 10;
        }
        digits[nd++] = (char)('0' + rem);
        while (len > 0 && mag[len - 1] == 0)
            len--;
    }
    if (nd == 0)
        digits[nd++] = '0';
    if (neg)
        wbuf_byte(out, '-');
    while (nd > 0)
        wbuf_byte(out, (uint8_t)digits[--nd]);
    free(mag);
    free(digits);
    return 0;
}

static const uint8_t *lit_items(wreader *r, wbuf *out, int depth, uint8_t tag)
{
    uint64_t count = wreader_varint(r);
    if (r->bad || count > (uint64_t)(r->end - r->p))
        return NULL;
    if (count == 0) {
        put_str(out, tag == WIRE_LIST    ? "[]"
                     : tag == WIRE_TUPLE ? "()"
                     : tag == WIRE_DICT  ? "{}"
                     : tag == WIRE_SET   ? "set()"
                                         : "frozenset()");
        return r->p;
    }
    put_str(out, tag == WIRE_LIST        ? "["
                 : tag == WIRE_TUPLE     ? "("
                 : tag == WIRE_FROZENSET ? "frozenset({"
                                         : "{");
    for (uint64_t i = 0; i < count; i++) {
        if (i)
            put_str(out, ", ");
        if (!lit_value(r, out, depth + 1))
            return NULL;
        if (tag == WIRE_DICT) {
            put_str(out, ": ");
            if (!lit_value(r, out, depth + 1))
                return NULL;
        }
    }
    if (tag == WIRE_TUPLE && count == 1)
        wbuf_byte(out, ',');
    put_str(out, tag == WIRE_LIST        ? "]"
                 : tag == WIRE_TUPLE     ? ")"
                 : tag == WIRE_FROZENSET ? "})"
                                         : "}");
    return r->p;
}

static const uint8_t *lit_value(wreader *r, wbuf *out, int depth)
{
    if (depth > WIRE_MAX_DEPTH)
        return NULL;
    uint8_t tag = wreader_byte(r);
    if (r->bad)
        return NULL;
    switch (tag) {
    case WIRE_NONE:
        put_str(out, "None");
        return r->p;
    case WIRE_TRUE:
        put_str(out, "True");
        return r->p;
    case WIRE_FALSE:
        put_str(out, "False");
        return r->p;
    case WIRE_INT: {
        char buf[32];
        int64_t v = unzigzag(wreader_varint(r));
        if (r->bad)
            return NULL;
        snprintf(buf, sizeof buf, "%lld", (long long)v);
        put_str(out, buf);
        return r->p;
    }
    case WIRE_BIGINT: {
        uint64_t n = wreader_varint(r);
        const uint8_t *p = wreader_take(r, n);
        if (!p || put_bigint(out, p, (size_t)n) < 0)
            return NULL;
        return r->p;
    }
    case WIRE_FLOAT: {
        const uint8_t *p = wreader_take(r, 8);
        double d;
        if (!p)
            return NULL;
        memcpy(&d, p, 8);
        put_float(out, d);
        return r->p;
    }
    case WIRE_STR:
    case WIRE_BYTES: {
        uint64_t n = wreader_varint(r);
        const uint8_t *p = wreader_take(r, n);
        if (r->bad || put_quoted(out, p, (size_t)n, tag == WIRE_BYTES) < 0)
            return NULL;
        return r->p;
    }
    case WIRE_LIST:
    case WIRE_TUPLE:
    case WIRE_DICT:
    case WIRE_SET:
    case WIRE_FROZENSET:
        return lit_items(r, out, depth, tag);
    case WIRE_DEFAULT:
        return lit_value(r, out, depth + 1);
    default:
        return NULL; /* pickled, codec, blob, markers, exceptions: no literal */
    }
}

const uint8_t *wire_literal(const uint8_t *p, const uint8_t *end, wbuf *out)
{
    wreader r;
    wreader_init(&r, p, (size_t)(end - p));
    size_t start = out->len;
    const uint8_t *q = lit_value(&r, out, 0);
    if (!q || out->failed) {
        out->len = start;
        return NULL;
    }
    return q;
}
