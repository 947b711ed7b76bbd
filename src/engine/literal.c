/*
 * literal.c - Python source for a tape value: `wire_literal` writes the
 * literal that evaluates to an equal value of the same types (used by
 * `calltape make-tests` to write readable regression tests).
 *
 * Values with a literal form: None, True, False, ints (BIGINT included),
 * floats (their repr, wire_float_repr; nan and infinities as
 * float('nan') / float('inf')), str, bytes (quoted by wire_quote, the
 * quoting of previews too), list, tuple, dict, set and
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

static const uint8_t *lit_value(const uint8_t *p, const uint8_t *end, wbuf *out, int depth);

static void put_str(wbuf *out, const char *s)
{
    wbuf_put(out, s, strlen(s));
}

/* A float literal: its repr, nan and infinities as float('nan') ... */
static void put_float(wbuf *out, double d)
{
    char buf[WIRE_FLOAT_REPR_MAX];
    if (isnan(d) || isinf(d)) {
        put_str(out, isnan(d) ? "float('nan')" : d > 0 ? "float('inf')" : "-float('inf')");
        return;
    }
    wbuf_put(out, buf, wire_float_repr(d, buf));
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

/* The items of the container token `t`, whose children start at `p`. */
static const uint8_t *lit_items(const uint8_t *p, const uint8_t *end, wbuf *out, int depth,
                                const wire_tok *t)
{
    uint8_t tag = t->tag;
    if (t->u == 0) {
        put_str(out, tag == WIRE_LIST    ? "[]"
                     : tag == WIRE_TUPLE ? "()"
                     : tag == WIRE_DICT  ? "{}"
                     : tag == WIRE_SET   ? "set()"
                                         : "frozenset()");
        return p;
    }
    put_str(out, tag == WIRE_LIST        ? "["
                 : tag == WIRE_TUPLE     ? "("
                 : tag == WIRE_FROZENSET ? "frozenset({"
                                         : "{");
    for (uint64_t i = 0; i < t->u && p; i++) {
        if (i)
            put_str(out, ", ");
        p = lit_value(p, end, out, depth + 1);
        if (p && tag == WIRE_DICT) {
            put_str(out, ": ");
            p = lit_value(p, end, out, depth + 1);
        }
    }
    if (tag == WIRE_TUPLE && t->u == 1)
        wbuf_byte(out, ',');
    put_str(out, tag == WIRE_LIST        ? "]"
                 : tag == WIRE_TUPLE     ? ")"
                 : tag == WIRE_FROZENSET ? "})"
                                         : "}");
    return p;
}

static const uint8_t *lit_value(const uint8_t *p, const uint8_t *end, wbuf *out, int depth)
{
    wire_tok t;
    if (depth > WIRE_MAX_DEPTH || !(p = wire_next(p, end, &t)))
        return NULL;
    switch (t.tag) {
    case WIRE_NONE:
        put_str(out, "None");
        return p;
    case WIRE_TRUE:
        put_str(out, "True");
        return p;
    case WIRE_FALSE:
        put_str(out, "False");
        return p;
    case WIRE_INT: {
        char buf[32];
        snprintf(buf, sizeof buf, "%lld", (long long)unzigzag(t.u));
        put_str(out, buf);
        return p;
    }
    case WIRE_BIGINT:
        return put_bigint(out, t.s, t.n) < 0 ? NULL : p;
    case WIRE_FLOAT:
        put_float(out, t.d);
        return p;
    case WIRE_STR:
    case WIRE_BYTES:
        return wire_quote(out, t.s, t.n, t.tag == WIRE_BYTES ? WIRE_QUOTE_BYTES : 0u, SIZE_MAX) < 0
                   ? NULL
                   : p;
    case WIRE_LIST:
    case WIRE_TUPLE:
    case WIRE_DICT:
    case WIRE_SET:
    case WIRE_FROZENSET:
        return lit_items(p, end, out, depth, &t);
    case WIRE_DEFAULT:
        return lit_value(p, end, out, depth + 1);
    default:
        return NULL; /* pickled, codec, blob, markers, exceptions: no literal */
    }
}

const uint8_t *wire_literal(const uint8_t *p, const uint8_t *end, wbuf *out)
{
    size_t start = out->len;
    const uint8_t *q = lit_value(p, end, out, 0);
    if (!q || out->failed) {
        out->len = start;
        return NULL;
    }
    return q;
}
