/*
 * wire.c - byte buffers and the tape value format: the one tokenizer of
 * the format (wire_next), which skipping, memo counting, previews,
 * literals (literal.c), rebuilding (rebuild.c) and signature parsing all
 * walk values with; the one quoting routine and float repr of previews and
 * literals; bounded previews.  Encoding from Python objects lives in the
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

void wire_copy_long(uint8_t *d, const uint8_t *s, size_t n)
{
    memcpy(d, s, n);
}

int wbuf_grow(wbuf *b, size_t n)
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

char *wire_digits(uint64_t v, char *end)
{
    static const char pairs[] = "00010203040506070809101112131415161718192021222324"
                                "25262728293031323334353637383940414243444546474849"
                                "50515253545556575859606162636465666768697071727374"
                                "75767778798081828384858687888990919293949596979899";
    char *p = end;
    while (v >= 100) { /* two digits a division */
        const char *d = pairs + 2 * (v % 100);
        v /= 100;
        *--p = d[1];
        *--p = d[0];
    }
    if (v >= 10) {
        *--p = pairs[2 * v + 1];
        *--p = pairs[2 * v];
    } else {
        *--p = (char)('0' + v);
    }
    return p;
}

void wbuf_decimal(wbuf *b, int64_t v)
{
    char buf[21];
    char *p = wire_digits(v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v, buf + sizeof buf);
    if (v < 0)
        *--p = '-';
    wbuf_put(b, p, (size_t)(buf + sizeof buf - p));
}

/* ---- the tokenizer ------------------------------------------------------ */

/* Reads varint n and n bytes: the slice into (*s, *n).  0, or -1 (bad). */
static int tok_sized(wreader *r, const uint8_t **s, size_t *n)
{
    uint64_t len = wreader_varint(r);
    const uint8_t *p = r->bad ? NULL : wreader_take(r, len);
    if (r->bad)
        return -1;
    *s = p;
    *n = (size_t)len;
    return 0;
}

const uint8_t *wire_next(const uint8_t *p, const uint8_t *end, wire_tok *t)
{
    if (p >= end)
        return NULL;
    memset(t, 0, sizeof *t);
    t->tag = *p;
    wreader r;
    wreader_init(&r, p + 1, (size_t)(end - p - 1));
    switch (t->tag) {
    case WIRE_NONE:
    case WIRE_FALSE:
    case WIRE_TRUE:
    case WIRE_REDACTED:
        break;
    case WIRE_INT:
    case WIRE_REF:
        t->u = wreader_varint(&r);
        break;
    case WIRE_FLOAT: {
        const uint8_t *f = wreader_take(&r, 8);
        if (f)
            memcpy(&t->d, f, 8); /* the engine targets little-endian hosts */
        break;
    }
    case WIRE_BIGINT:
    case WIRE_STR:
    case WIRE_BYTES:
    case WIRE_PICKLE:
    case WIRE_BLOB_INLINE:
        tok_sized(&r, &t->s, &t->n);
        break;
    case WIRE_CODEC:
    case WIRE_UNENCODABLE:
    case WIRE_GLOBAL:
        if (tok_sized(&r, &t->s, &t->n) == 0)
            tok_sized(&r, &t->s2, &t->n2);
        break;
    case WIRE_EXCEPTION:
        if (tok_sized(&r, &t->s, &t->n) == 0)
            tok_sized(&r, &t->s2, &t->n2);
        t->children = 1; /* the frames */
        break;
    case WIRE_BLOB:
        t->s = wreader_take(&r, WIRE_HASH_BYTES);
        t->n = WIRE_HASH_BYTES;
        t->u = wreader_varint(&r);
        break;
    case WIRE_TRUNCATED:
        if (tok_sized(&r, &t->s, &t->n) == 0)
            t->u = wreader_varint(&r);
        break;
    case WIRE_DEFAULT:
        t->children = 1;
        break;
    case WIRE_LIST:
    case WIRE_TUPLE:
    case WIRE_SET:
    case WIRE_FROZENSET:
    case WIRE_DICT:
        t->u = wreader_varint(&r);
        t->children = t->tag == WIRE_DICT ? 2 * t->u : t->u;
        if (t->u > (uint64_t)(end - p))
            r.bad = 1;
        break;
    case WIRE_OBJECT:
        if (tok_sized(&r, &t->s, &t->n) < 0 || tok_sized(&r, &t->s2, &t->n2) < 0)
            break;
        t->kind = wreader_byte(&r);
        t->u = wreader_varint(&r);
        t->u2 = wreader_varint(&r);
        if (t->kind > WIRE_KIND_MAX || t->u > (uint64_t)(end - p) || t->u2 > (uint64_t)(end - p))
            r.bad = 1;
        t->children = (uint64_t)wire_kind_has_contents(t->kind) + 2 * (t->u + t->u2);
        break;
    default:
        return NULL;
    }
    if (r.bad || t->children > (uint64_t)(end - r.p))
        return NULL;
    return r.p;
}

static const uint8_t *skip_at(const uint8_t *p, const uint8_t *end, int depth)
{
    wire_tok t;
    if (depth > WIRE_MAX_DEPTH || !(p = wire_next(p, end, &t)))
        return NULL;
    for (uint64_t i = 0; i < t.children && p; i++)
        p = skip_at(p, end, depth + 1);
    return p;
}

/* Counts the memo indices of the value at *p (advanced past it);
 * `contents`: it is the contents of an OBJECT, not memoized itself. */
static int64_t memo_count_at(const uint8_t **p, const uint8_t *end, int depth, int contents)
{
    wire_tok t;
    if (depth > WIRE_MAX_DEPTH || !(*p = wire_next(*p, end, &t)))
        return -1;
    int64_t n = wire_memoized(t.tag) && !contents;
    int inner = t.tag == WIRE_OBJECT &&
                (t.kind == WIRE_KIND_LIST || t.kind == WIRE_KIND_DICT || t.kind == WIRE_KIND_SET);
    for (uint64_t i = 0; i < t.children; i++) {
        int64_t k = memo_count_at(p, end, depth + 1, inner && i == 0);
        if (k < 0)
            return -1;
        n += k;
    }
    return n;
}

int64_t wire_memo_count(const uint8_t *p, const uint8_t *end)
{
    return memo_count_at(&p, end, 0, 0);
}

const uint8_t *wire_skip(const uint8_t *p, const uint8_t *end)
{
    return skip_at(p, end, 0);
}

/* ---- text: quoting and float repr ---------------------------------------- */

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

/* Appends \xNN. */
static void quote_hex(wbuf *out, uint8_t c)
{
    static const char digits[] = "0123456789abcdef";
    char esc[4] = {'\\', 'x', digits[c >> 4], digits[c & 15]};
    wbuf_put(out, esc, 4);
}

/* The code point of the lone surrogate (ED A0..BF xx) at s[0..n), or 0. */
static unsigned lone_surrogate(const uint8_t *s, size_t n)
{
    if (n < 3 || s[0] != 0xed || s[1] < 0xa0 || s[1] >= 0xc0 || (s[2] & 0xc0) != 0x80)
        return 0;
    return (unsigned)(s[0] & 0x0f) << 12 | (unsigned)(s[1] & 0x3f) << 6 | (unsigned)(s[2] & 0x3f);
}

/* Appends the character of text at s[0..n) that starts at byte 0x80 or
 * above; returns how many bytes it took, or 0 when they are not UTF-8. */
static size_t quote_utf8(wbuf *out, const uint8_t *s, size_t n, unsigned flags)
{
    size_t len = utf8_len(s, n);
    unsigned cp = len ? 0 : lone_surrogate(s, n);
    if (cp) {
        char esc[8];
        snprintf(esc, sizeof esc, "\\u%04x", cp);
        wbuf_put(out, esc, 6);
        return 3;
    }
    if (!len) {
        if (!(flags & WIRE_QUOTE_LENIENT))
            return 0;
        quote_hex(out, s[0]);
        return 1;
    }
    if (s[0] == 0xc2 && s[1] < 0xa0) /* C1 controls: escape */
        quote_hex(out, s[1]);
    else
        wbuf_put(out, s, len);
    return len;
}

int wire_quote(wbuf *out, const uint8_t *s, size_t n, unsigned flags, size_t stop)
{
    int is_bytes = (flags & WIRE_QUOTE_BYTES) != 0;
    if (is_bytes)
        wbuf_byte(out, 'b');
    wbuf_byte(out, '\'');
    for (size_t i = 0; i < n; i++) {
        if (out->len > stop)
            return 0;
        uint8_t c = s[i];
        if (c == '\'' || c == '\\') {
            wbuf_byte(out, '\\');
            wbuf_byte(out, c);
        } else if (c == '\n' || c == '\r' || c == '\t') {
            wbuf_byte(out, '\\');
            wbuf_byte(out, c == '\n' ? 'n' : c == '\r' ? 'r' : 't');
        } else if (c < 0x20 || c == 0x7f || (is_bytes && c >= 0x80)) {
            quote_hex(out, c);
        } else if (c < 0x80) {
            wbuf_byte(out, c);
        } else {
            size_t len = quote_utf8(out, s + i, n - i, flags);
            if (!len)
                return -1; /* not UTF-8 */
            i += len - 1;
        }
    }
    wbuf_byte(out, '\'');
    return 0;
}

/* Python's repr of `d` when an integer m below 2^52 and a k from 0 to 6
 * have m / 10^k == d (IEEE division: the decimal m / 10^k reads back as d)
 * and 1e-4 <= |d| < 1e16.  With its fraction's trailing zeros dropped it is
 * the shortest such text: another lies at least 10^-k away from it, more
 * than the ulp of d (below 10^-k as m < 2^52), so it reads back as another
 * double.  Written with integer arithmetic, without printf and strtod
 * (the previews of the exports write millions).  Returns its length, or 0
 * when `d` is not such a float (the caller takes the general path). */
static size_t float_repr_short(double d, char *buf)
{
    static const double pow10[] = {1, 10, 100, 1e3, 1e4, 1e5, 1e6};
    double a = fabs(d);
    if (!(a >= 1e-4 && a < 1e16))
        return 0;
    for (int k = 0; k <= 6; k++) {
        double m = a * pow10[k];
        if (m >= 4503599627370496.0)
            return 0;
        if (m != floor(m) || m / pow10[k] != a)
            continue;
        uint64_t v = (uint64_t)m;
        int f = k; /* the fraction's digits */
        while (f > 0 && v % 10 == 0) {
            v /= 10;
            f--;
        }
        char digits[24];
        int n = 0;
        do {
            digits[n++] = (char)('0' + v % 10);
            v /= 10;
        } while (v);
        while (n <= f)
            digits[n++] = '0'; /* 0.05: the leading zeros */
        size_t len = 0;
        if (d < 0)
            buf[len++] = '-';
        for (int i = n - 1; i >= f; i--)
            buf[len++] = digits[i];
        buf[len++] = '.';
        if (f == 0)
            buf[len++] = '0';
        for (int i = f - 1; i >= 0; i--)
            buf[len++] = digits[i];
        buf[len] = 0;
        return len;
    }
    return 0;
}

size_t wire_float_repr(double d, char *buf)
{
    size_t fast = float_repr_short(d, buf);
    if (fast)
        return fast;
    if (isnan(d) || isinf(d)) {
        const char *s = isnan(d) ? "nan" : d > 0 ? "inf" : "-inf";
        memcpy(buf, s, strlen(s) + 1);
        return strlen(s);
    }
    snprintf(buf, WIRE_FLOAT_REPR_MAX, "%.17g", d);
    /* the shortest form that round-trips, like Python's repr */
    for (int prec = 1; prec <= 17; prec++) {
        char tmp[WIRE_FLOAT_REPR_MAX];
        snprintf(tmp, sizeof tmp, "%.*g", prec, d);
        if (strtod(tmp, NULL) != d)
            continue;
        memcpy(buf, tmp, sizeof tmp);
        /* Python writes exponents only below 1e-4 and from 1e16 */
        char sci[WIRE_FLOAT_REPR_MAX];
        snprintf(sci, sizeof sci, "%.*e", prec - 1, d);
        int exp = atoi(strchr(sci, 'e') + 1);
        if (exp < -4 || exp >= 16)
            memcpy(buf, sci, sizeof sci);
        else if (strchr(buf, 'e'))
            snprintf(buf, WIRE_FLOAT_REPR_MAX, "%.*f", prec - 1 - exp > 0 ? prec - 1 - exp : 0, d);
        break;
    }
    if (!strpbrk(buf, ".e"))
        strncat(buf, ".0", WIRE_FLOAT_REPR_MAX - strlen(buf) - 1);
    return strlen(buf);
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

/* Quotes text as wire_quote does (invalid UTF-8 escaped), cut at the
 * limit like pv_put. */
static void pv_quoted(preview *pv, const uint8_t *s, size_t n, int is_bytes)
{
    if (pv->full)
        return;
    wire_quote(pv->out, s, n, WIRE_QUOTE_LENIENT | (is_bytes ? WIRE_QUOTE_BYTES : 0u), pv->limit);
    if (pv->out->len > pv->limit) {
        pv->out->len = pv->limit;
        wbuf_put(pv->out, "...", 3);
        pv->full = 1;
    }
}

static const uint8_t *pv_value(preview *pv, const uint8_t *p, const uint8_t *end, int depth);

/* The `count` children at `p`, separated by ", " (pairs joined by `sep`). */
static const uint8_t *pv_children(preview *pv, const uint8_t *p, const uint8_t *end, int depth,
                                  uint64_t count, int pairs, const char *sep)
{
    for (uint64_t i = 0; i < count && p; i++) {
        if (i)
            pv_put(pv, ", ", 2);
        p = pv_value(pv, p, end, depth + 1);
        if (p && pairs) {
            pv_str(pv, sep);
            p = pv_value(pv, p, end, depth + 1);
        }
    }
    return p;
}

/* The last dotted part of a qualname (Point for shop.Point). */
static void pv_short_name(preview *pv, const uint8_t *s, size_t n)
{
    size_t at = n;
    while (at > 0 && s[at - 1] != '.')
        at--;
    pv_put(pv, (const char *)s + at, n - at);
}

/* Printable ASCII only: text a preview may show as it is. */
static int pv_plain(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] > 0x7e)
            return 0;
    return 1;
}

/* An EXCEPTION as Python's repr shows it: KeyError('bad'), ValueError('no'),
 * shop.OutOfStock as OutOfStock(...), ValueError() for an empty message.
 * The message recorded is str(exc); a KeyError's is already the repr of
 * its key, so it is shown as it is (when printable). */
static void pv_exception(preview *pv, const wire_tok *t)
{
    static const char key_error[] = "builtins.KeyError";
    pv_short_name(pv, t->s, t->n);
    pv_put(pv, "(", 1);
    int is_key_error = t->n == sizeof key_error - 1 && memcmp(t->s, key_error, t->n) == 0;
    if (is_key_error && pv_plain(t->s2, t->n2))
        pv_put(pv, (const char *)t->s2, t->n2);
    else if (t->n2)
        pv_quoted(pv, t->s2, t->n2, 0);
    pv_put(pv, ")", 1);
}

/* The contents of a REDUCE object: its reduce arguments, as in
 * datetime(b'...', None). */
static const uint8_t *pv_reduce_args(preview *pv, const uint8_t *p, const uint8_t *end, int depth)
{
    wire_tok c, args;
    const uint8_t *q = wire_next(p, end, &c);
    if (!q || c.tag != WIRE_TUPLE || c.u != 5)
        return pv_value(pv, p, end, depth + 1);
    q = skip_at(q, end, depth + 2); /* the callable */
    const uint8_t *a = q ? wire_next(q, end, &args) : NULL;
    if (!a || args.tag != WIRE_TUPLE || !pv_children(pv, a, end, depth + 2, args.u, 0, ""))
        return NULL;
    return skip_at(p, end, depth + 1);
}

/* An OBJECT: Name(contents, attr=value, ...); an enum member Name.MEMBER. */
static const uint8_t *pv_object(preview *pv, const wire_tok *t, const uint8_t *p,
                                const uint8_t *end, int depth)
{
    pv_short_name(pv, t->s2, t->n2);
    if (t->kind == WIRE_KIND_ENUM && t->u == 1) { /* contents, then _name_ */
        const uint8_t *q = skip_at(p, end, depth + 1);
        wire_tok key, name;
        const uint8_t *v = q ? wire_next(q, end, &key) : NULL;
        if (v && wire_next(v, end, &name) && name.tag == WIRE_STR) {
            pv_put(pv, ".", 1);
            pv_put(pv, (const char *)name.s, name.n);
            return skip_at(v, end, depth + 1);
        }
    }
    pv_put(pv, "(", 1);
    int first = 1;
    if (wire_kind_has_contents(t->kind)) {
        p = t->kind == WIRE_KIND_REDUCE ? pv_reduce_args(pv, p, end, depth)
                                        : pv_value(pv, p, end, depth + 1);
        first = 0;
    }
    for (uint64_t i = 0; p && i < t->u + t->u2; i++) {
        wire_tok key;
        const uint8_t *v = wire_next(p, end, &key);
        if (!v || key.tag != WIRE_STR)
            return NULL;
        if (!first)
            pv_put(pv, ", ", 2);
        first = 0;
        pv_put(pv, (const char *)key.s, key.n);
        pv_put(pv, "=", 1);
        p = pv_value(pv, v, end, depth + 1);
    }
    pv_put(pv, ")", 1);
    return p;
}

/* Writes a token without children; returns 0, or -1 for a tag it does not
 * render (or a malformed blob). */
static int pv_atom(preview *pv, const wire_tok *t, int depth)
{
    char num[64];
    switch (t->tag) {
    case WIRE_NONE:
        pv_str(pv, "None");
        return 0;
    case WIRE_FALSE:
        pv_str(pv, "False");
        return 0;
    case WIRE_TRUE:
        pv_str(pv, "True");
        return 0;
    case WIRE_INT:
        snprintf(num, sizeof num, "%lld", (long long)unzigzag(t->u));
        pv_str(pv, num);
        return 0;
    case WIRE_BIGINT:
        snprintf(num, sizeof num, "<int of %zu bytes>", t->n);
        pv_str(pv, num);
        return 0;
    case WIRE_FLOAT:
        pv_put(pv, num, wire_float_repr(t->d, num));
        return 0;
    case WIRE_STR:
    case WIRE_BYTES:
        pv_quoted(pv, t->s, t->n, t->tag == WIRE_BYTES);
        return 0;
    case WIRE_PICKLE:
        snprintf(num, sizeof num, "<pickled, %zu bytes>", t->n);
        pv_str(pv, num);
        return 0;
    case WIRE_CODEC:
        pv_put(pv, "<", 1);
        pv_put(pv, (const char *)t->s, t->n);
        snprintf(num, sizeof num, ", %zu bytes>", t->n2);
        pv_str(pv, num);
        return 0;
    case WIRE_BLOB_INLINE:
        return pv_value(pv, t->s, t->s + t->n, depth + 1) ? 0 : -1;
    case WIRE_BLOB:
        snprintf(num, sizeof num, "<stored value, %llu bytes>", (unsigned long long)t->u);
        pv_str(pv, num);
        return 0;
    case WIRE_REDACTED:
        pv_str(pv, "<redacted>");
        return 0;
    case WIRE_TRUNCATED:
        pv_str(pv, "<truncated ");
        pv_put(pv, (const char *)t->s, t->n);
        snprintf(num, sizeof num, ", %llu bytes>", (unsigned long long)t->u);
        pv_str(pv, num);
        return 0;
    case WIRE_UNENCODABLE:
        pv_str(pv, "<unencodable ");
        pv_put(pv, (const char *)t->s, t->n);
        pv_put(pv, ": ", 2);
        pv_put(pv, (const char *)t->s2, t->n2);
        pv_put(pv, ">", 1);
        return 0;
    case WIRE_GLOBAL:
        pv_put(pv, (const char *)t->s, t->n);
        if (t->n2) {
            pv_put(pv, ".", 1);
            pv_put(pv, (const char *)t->s2, t->n2);
        }
        return 0;
    case WIRE_REF:
        pv_str(pv, "<the same object as before>");
        return 0;
    default:
        return -1;
    }
}

static const uint8_t *pv_value(preview *pv, const uint8_t *p, const uint8_t *end, int depth)
{
    wire_tok t;
    const uint8_t *q;
    if (depth > WIRE_MAX_DEPTH || !(q = wire_next(p, end, &t)))
        return NULL;
    if (pv->full)
        return skip_at(p, end, depth);
    switch (t.tag) {
    case WIRE_LIST:
    case WIRE_SET:
        pv_str(pv, t.tag == WIRE_LIST ? "[" : "{");
        q = pv_children(pv, q, end, depth, t.u, 0, "");
        pv_str(pv, t.tag == WIRE_LIST ? "]" : "}");
        return q;
    case WIRE_TUPLE:
        pv_str(pv, "(");
        q = pv_children(pv, q, end, depth, t.u, 0, "");
        pv_str(pv, t.u == 1 ? ",)" : ")");
        return q;
    case WIRE_FROZENSET:
        pv_str(pv, "frozenset({");
        q = pv_children(pv, q, end, depth, t.u, 0, "");
        pv_str(pv, "})");
        return q;
    case WIRE_DICT:
        pv_str(pv, "{");
        q = pv_children(pv, q, end, depth, t.u, 1, ": ");
        pv_str(pv, "}");
        return q;
    case WIRE_EXCEPTION:
        pv_exception(pv, &t);
        return skip_at(q, end, depth + 1); /* the frames */
    case WIRE_DEFAULT:
        return pv_value(pv, q, end, depth + 1);
    case WIRE_OBJECT:
        return pv_object(pv, &t, q, end, depth);
    default:
        return pv_atom(pv, &t, depth) < 0 ? NULL : q;
    }
}

const uint8_t *wire_preview(const uint8_t *p, const uint8_t *end, wbuf *out, size_t limit)
{
    preview pv = {out, out->len + limit, 0};
    const uint8_t *next = pv_value(&pv, p, end, 0);
    if (!next)
        pv_str(&pv, "<malformed>");
    return next;
}
