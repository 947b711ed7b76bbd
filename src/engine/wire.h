/*
 * wire.h - bytes and values of the calltape engine (plain C, no Python.h):
 * growable buffers and bounded readers, the tape's value format, values as
 * Python literals, compression of value columns, the content hash and the
 * segments' checksum.  engine.h includes it; its parts, one file each:
 *   wire.c          byte buffers, varints, tagged values, the value walker
 *   literal.c       a value as Python source, when it has a literal form
 *   lz.c            compression of the segments' value columns
 *   hash.c          128-bit content hash for the blob store
 *   crc32c.c        CRC-32C, the checksum of each segment
 *
 * Invariants: nothing here allocates except a wbuf that outgrows its
 * storage; no function prints, exits or aborts; readers never read past the
 * end they were given (a malformed value sets `bad` or returns NULL).
 */
#ifndef CALLTAPE_WIRE_H
#define CALLTAPE_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Growable byte buffer (wire.c).                                           */
/* ------------------------------------------------------------------------ */

/* A byte buffer that may start on caller storage (e.g. the C stack) and moves
 * to the heap when it grows.  After an allocation failure `failed` is set and
 * every further write is a no-op, so writers check once at the end. */
typedef struct wbuf {
    uint8_t *data;
    size_t len;
    size_t cap;
    int on_heap;
    int failed;
} wbuf;

/* Starts `b` on `storage` of `cap` bytes (storage may be NULL with cap 0). */
static inline void wbuf_init(wbuf *b, uint8_t *storage, size_t cap)
{
    b->data = storage;
    b->len = 0;
    b->cap = cap;
    b->on_heap = 0;
    b->failed = 0;
}

/* wbuf_reserve when the room is not there yet (or the buffer failed):
 * grows it.  Returns 0, or -1 (and sets failed) when memory runs out. */
int wbuf_grow(wbuf *b, size_t n);

/* Makes room for `n` more bytes.  Returns 0, or -1 (and sets failed) when
 * memory runs out.  Inline: the room is there for most calls. */
static inline int wbuf_reserve(wbuf *b, size_t n)
{
    if (!b->failed && b->cap - b->len >= n)
        return 0;
    return wbuf_grow(b, n);
}

/* Releases heap storage, if any, and empties the buffer. */
void wbuf_release_heap(wbuf *b);

static inline void wbuf_free(wbuf *b)
{
    if (b->on_heap)
        wbuf_release_heap(b);
    b->data = NULL;
    b->len = b->cap = 0;
    b->failed = 0;
}

/* Writes a varint at `p`, which must have 10 bytes of room; returns the
 * end.  For callers that reserved space once for several fields. */
static inline uint8_t *put_varint_raw(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

/* memcpy(d, s, n), out of line: wire_copy's long copies. */
void wire_copy_long(uint8_t *d, const uint8_t *s, size_t n);

/* The first and the last `w` (at most 16) of the `n` bytes at `s` (n >= w)
 * to `d`: all of them when n <= 2w, read and written only within them. */
static inline void wire_copy_ends(uint8_t *d, const uint8_t *s, size_t n, size_t w)
{
    uint8_t a[16], z[16];
    memcpy(a, s, w);
    memcpy(z, s + n - w, w);
    memcpy(d, a, w);
    memcpy(d + n - w, z, w);
}

/* Copies `n` bytes from `s` to `d` (not overlapping).  Up to 32 bytes (most
 * values, most fields) by two loads and two stores that may overlap, read
 * and written only within the `n` bytes; a library call past that.  A
 * size known when compiling is the compiler's own inline copy. */
static inline void wire_copy(uint8_t *d, const uint8_t *s, size_t n)
{
    if (__builtin_constant_p(n)) {
        memcpy(d, s, n);
    } else if (n > 32) {
        wire_copy_long(d, s, n);
    } else if (n >= 16) {
        wire_copy_ends(d, s, n, 16);
    } else if (n >= 8) {
        wire_copy_ends(d, s, n, 8);
    } else if (n >= 4) {
        wire_copy_ends(d, s, n, 4);
    } else if (n) {
        d[0] = s[0];
        d[n / 2] = s[n / 2];
        d[n - 1] = s[n - 1];
    }
}

static inline void wbuf_put(wbuf *b, const void *src, size_t n)
{
    if (b->cap - b->len < n && wbuf_reserve(b, n) < 0)
        return;
    wire_copy(b->data + b->len, (const uint8_t *)src, n);
    b->len += n;
}

static inline void wbuf_byte(wbuf *b, uint8_t v)
{
    if (b->len == b->cap && wbuf_reserve(b, 1) < 0)
        return;
    b->data[b->len++] = v;
}

static inline void wbuf_varint(wbuf *b, uint64_t v)
{
    if (b->cap - b->len < 10 && wbuf_reserve(b, 10) < 0)
        return;
    b->len = (size_t)(put_varint_raw(b->data + b->len, v) - b->data);
}

/* The decimal digits of `v` ending at `end` (up to 20 bytes before it are
 * written); returns where they start.  No printf: the exports and the log
 * lines write several numbers a call. */
char *wire_digits(uint64_t v, char *end);
/* Appends `v` in decimal ("-12"); a failed buffer stays failed. */
void wbuf_decimal(wbuf *b, int64_t v);

/* The 8 bytes at `p` as a little-endian word, and `v` stored so, whatever
 * the CPU (one load or store on a little-endian one). */
static inline uint64_t wire_get_le64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline void wire_put_le64(uint8_t *p, uint64_t v)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    memcpy(p, &v, sizeof v);
}

static inline uint64_t zigzag(int64_t v)
{
    return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

static inline int64_t unzigzag(uint64_t v)
{
    return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

/* A bounded reader over bytes.  Reads past the end set `bad` and return 0. */
typedef struct wreader {
    const uint8_t *p;
    const uint8_t *end;
    int bad;
} wreader;

static inline void wreader_init(wreader *r, const void *p, size_t n)
{
    r->p = (const uint8_t *)p;
    r->end = r->p + n;
    r->bad = 0;
}

static inline uint64_t wreader_varint(wreader *r)
{
    uint64_t v = 0;
    int shift = 0;
    while (r->p < r->end && shift < 64) {
        uint8_t c = *r->p++;
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80))
            return v;
        shift += 7;
    }
    r->bad = 1;
    return 0;
}

static inline uint8_t wreader_byte(wreader *r)
{
    if (r->p >= r->end) {
        r->bad = 1;
        return 0;
    }
    return *r->p++;
}

/* Returns a pointer to the next `n` bytes and skips them, or NULL (bad). */
static inline const uint8_t *wreader_take(wreader *r, uint64_t n)
{
    if ((uint64_t)(r->end - r->p) < n) {
        r->bad = 1;
        r->p = r->end;
        return NULL;
    }
    const uint8_t *s = r->p;
    r->p += n;
    return s;
}

/* ------------------------------------------------------------------------ */
/* The value format (wire.c).                                               */
/* ------------------------------------------------------------------------ */

/* One tag byte, then the payload:
 *   NONE FALSE TRUE          -
 *   INT                      zigzag varint (fits int64)
 *   BIGINT                   varint n, n bytes little-endian two's complement
 *   FLOAT                    8 bytes, IEEE-754 little-endian
 *   STR BYTES                varint n, n bytes (STR is UTF-8, surrogatepass)
 *   LIST TUPLE SET FROZENSET varint count, count values
 *   DICT                     varint count, count (key, value) pairs
 *   PICKLE                   varint n, n bytes of pickle protocol 5
 *   CODEC                    STR-like name (varint n, bytes), varint n, bytes
 *   BLOB_INLINE              varint n, n bytes holding one encoded value; the
 *                            writer replaces it by BLOB (content-addressed)
 *   BLOB                     16-byte hash, varint size of the stored value
 *   REDACTED                 -
 *   TRUNCATED                STR type name, varint encoded size
 *   UNENCODABLE              STR type name, STR bounded repr or reason
 *   EXCEPTION                STR qualified type, STR message, LIST of frames
 *                            (TUPLE of STR file, INT line, STR function)
 *   DEFAULT                  value: an argument that took its default value
 *   OBJECT                   an instance read without running its code:
 *                            varint n + module, varint n + qualname (of its
 *                            class), byte kind, varint ndict, varint nslots,
 *                            then the contents value when the kind has one
 *                            (wire_kind_has_contents), then ndict and nslots
 *                            pairs (STR name, value): its __dict__ and its
 *                            __slots__
 *   GLOBAL                   varint n + module, varint n + qualname: a class,
 *                            function or module named where it is defined
 *                            (an empty qualname: the module itself)
 *   REF                      varint d: the same object as the d-th value
 *                            back among the memoized values of this group
 *
 * Identity: within one group of values encoded together (the arguments of a
 * call; its result; its locals; ...), every LIST, DICT, SET and OBJECT takes
 * the next index as it starts, in encoding order, and a later occurrence of
 * the same object is a REF (d = next index - its index), so aliasing and
 * cycles survive.  Readers count the same way.
 */
enum wire_tag {
    WIRE_NONE = 0x00,
    WIRE_FALSE = 0x01,
    WIRE_TRUE = 0x02,
    WIRE_INT = 0x03,
    WIRE_BIGINT = 0x04,
    WIRE_FLOAT = 0x05,
    WIRE_STR = 0x06,
    WIRE_BYTES = 0x07,
    WIRE_LIST = 0x08,
    WIRE_TUPLE = 0x09,
    WIRE_DICT = 0x0a,
    WIRE_SET = 0x0b,
    WIRE_FROZENSET = 0x0c,
    WIRE_PICKLE = 0x10,
    WIRE_CODEC = 0x11,
    WIRE_BLOB_INLINE = 0x12,
    WIRE_BLOB = 0x13,
    WIRE_REDACTED = 0x14,
    WIRE_TRUNCATED = 0x15,
    WIRE_UNENCODABLE = 0x16,
    WIRE_EXCEPTION = 0x17,
    WIRE_DEFAULT = 0x18,
    WIRE_OBJECT = 0x19,
    WIRE_GLOBAL = 0x1a,
    WIRE_REF = 0x1b,
};

/* How an OBJECT is built back (its class's solid base, or a protocol). */
enum wire_kind {
    WIRE_KIND_PLAIN = 0,      /* object.__new__(cls), then its attributes */
    WIRE_KIND_LIST = 1,       /* a list subclass: contents LIST */
    WIRE_KIND_DICT = 2,       /* a dict subclass: contents DICT */
    WIRE_KIND_SET = 3,        /* a set subclass: contents SET */
    WIRE_KIND_TUPLE = 4,      /* a tuple subclass: contents TUPLE */
    WIRE_KIND_FROZENSET = 5,  /* a frozenset subclass: contents FROZENSET */
    WIRE_KIND_STR = 6,        /* a str subclass: contents STR */
    WIRE_KIND_BYTES = 7,      /* a bytes subclass: contents BYTES */
    WIRE_KIND_INT = 8,        /* an int subclass: contents INT or BIGINT */
    WIRE_KIND_FLOAT = 9,      /* a float subclass: contents FLOAT */
    WIRE_KIND_EXCEPTION = 10, /* an exception: contents TUPLE of its args */
    WIRE_KIND_ENUM = 11,      /* an enum member: contents its value */
    WIRE_KIND_REDUCE = 12,    /* a standard-library type, by its own reduce:
                                 contents TUPLE(callable, args, state,
                                 list items, dict items) */
    WIRE_KIND_MAX = 12,
};

/* 1 when OBJECTs of `kind` carry a contents value. */
static inline int wire_kind_has_contents(uint8_t kind)
{
    return kind != WIRE_KIND_PLAIN && kind <= WIRE_KIND_MAX;
}

/* 1 when a value of `tag` (OBJECT: also `kind` when it has mutable
 * contents or none) takes a memo index as it starts. */
static inline int wire_memoized(uint8_t tag)
{
    return tag == WIRE_LIST || tag == WIRE_DICT || tag == WIRE_SET || tag == WIRE_OBJECT;
}

/* One token of the value format: a value's tag and own fields, without the
 * values it contains (its children, which follow it). */
typedef struct wire_tok {
    uint8_t tag;
    uint8_t kind;     /* OBJECT: an enum wire_kind */
    uint64_t u;       /* INT: the zigzagged value; LIST, TUPLE, SET,
                         FROZENSET, DICT: the count; TRUNCATED, BLOB: the
                         size; REF: the distance; OBJECT: ndict */
    uint64_t u2;      /* OBJECT: nslots */
    double d;         /* FLOAT */
    const uint8_t *s; /* STR, BYTES, BIGINT, PICKLE, BLOB_INLINE: the
                         payload; CODEC: the name; TRUNCATED,
                         UNENCODABLE, EXCEPTION: the type name; OBJECT,
                         GLOBAL: the module; BLOB: the hash */
    size_t n;
    const uint8_t *s2; /* CODEC: the data; UNENCODABLE: the reason;
                          EXCEPTION: the message; OBJECT, GLOBAL: the
                          qualname */
    size_t n2;
    uint64_t children; /* how many values follow that belong to it */
} wire_tok;

/* How many memo indices the value at `p` takes (engine.h, "Identity"), or
 * -1 when it is malformed.  For readers that skip a value of a group. */
int64_t wire_memo_count(const uint8_t *p, const uint8_t *end);

/* Reads the token of the value at `p` (bounded by `end`) into `t`.
 * Returns where its children (or the next value) start, or NULL when the
 * bytes are not a well-formed token.  The one tokenizer of the format:
 * skipping, previews and scans walk values with it. */
const uint8_t *wire_next(const uint8_t *p, const uint8_t *end, wire_tok *t);

#define WIRE_HASH_BYTES 16
#define WIRE_MAX_DEPTH 64

/* Writes varint n, then the n bytes at `s`: the "length + text" of every
 * sized payload and name of the format (STR, BYTES, OBJECT and GLOBAL
 * names, CODEC parts, ...). */
static inline void wire_sized(wbuf *b, const void *s, size_t n)
{
    wbuf_varint(b, n);
    wbuf_put(b, s, n);
}

static inline void wire_tagged_bytes(wbuf *b, uint8_t tag, const void *s, size_t n)
{
    wbuf_byte(b, tag);
    wire_sized(b, s, n);
}

static inline void wire_int(wbuf *b, int64_t v)
{
    wbuf_byte(b, WIRE_INT);
    wbuf_varint(b, zigzag(v));
}

static inline void wire_float(wbuf *b, double v)
{
    uint8_t raw[8];
    memcpy(raw, &v, 8); /* the engine targets little-endian Linux hosts */
    wbuf_byte(b, WIRE_FLOAT);
    wbuf_put(b, raw, 8);
}

/* Returns the end of the value starting at `p` (bounded by `end`), or NULL
 * when the bytes are not one well-formed value. */
const uint8_t *wire_skip(const uint8_t *p, const uint8_t *end);

/* Appends a bounded, human-readable preview of the value at `p` to `out`
 * (Python-like syntax; markers as <redacted>, <truncated T n bytes>, ...),
 * stopping after about `limit` bytes with "...".  Returns the end of the
 * value, or NULL when malformed (the preview then ends in "<malformed>"). */
const uint8_t *wire_preview(const uint8_t *p, const uint8_t *end, wbuf *out, size_t limit);

/* How wire_quote writes text. */
enum wire_quote_flags {
    WIRE_QUOTE_BYTES = 1,   /* a bytes literal: b'...', every byte from 0x80 as \xNN */
    WIRE_QUOTE_LENIENT = 2, /* bytes of a str that are not UTF-8 become \xNN
                               instead of failing (previews) */
};

/* Appends the `n` bytes at `s` quoted as Python writes a str (or, with
 * WIRE_QUOTE_BYTES, a bytes) literal in single quotes: ' and \ escaped,
 * \n \r \t, other control characters (C1 included) as \xNN, lone
 * surrogates (a str keeps them with surrogatepass) as \uXXXX, other UTF-8
 * text as it is.  The one quoting routine of previews and literals.  Stops,
 * without the closing quote, once out->len exceeds `stop` (SIZE_MAX: never),
 * for bounded previews.  Returns 0, or -1 for bytes of a str that are not
 * UTF-8 without WIRE_QUOTE_LENIENT (what was appended is then partial: the
 * caller rolls `out` back). */
int wire_quote(wbuf *out, const uint8_t *s, size_t n, unsigned flags, size_t stop);

#define WIRE_FLOAT_REPR_MAX 32

/* Writes Python's repr of `d` into `buf` (WIRE_FLOAT_REPR_MAX bytes): the
 * shortest text that reads back as `d`, with an exponent below 1e-4 and
 * from 1e16, ".0" on whole numbers, "nan", "inf" and "-inf".  The one
 * float repr of previews and literals.  Returns its length; cannot fail. */
size_t wire_float_repr(double d, char *buf);

/* Appends Python source that evaluates to the value at `p` (literal.c):
 * None, bools, ints, floats, str, bytes, list, tuple, dict, set, frozenset.
 * Returns the end of the value, or NULL (with `out` as it was) when the
 * value or a part of it has no literal form (pickled, codec, blob, marker,
 * exception) or is malformed. */
const uint8_t *wire_literal(const uint8_t *p, const uint8_t *end, wbuf *out);

/* ------------------------------------------------------------------------ */
/* Compression of value columns (lz.c).                                      */
/* ------------------------------------------------------------------------ */

/* Transposes `rows` rows of `cols` bytes at `src` into `cols` rows of
 * `rows` bytes at `dst`: src[r * cols + c] to dst[c * rows + r]
 * (transpose.c).  The two do not overlap.  Cannot fail. */
void bytes_transpose(uint8_t *restrict dst, const uint8_t *restrict src, size_t rows, size_t cols);

/* The most bytes lz_compress can write for `n` input bytes. */
size_t lz_bound(size_t n);
/* The compressor's hash table, kept by a caller that compresses often
 * (zero-initialised; lz_table_free releases it). */
typedef struct lz_table {
    uint32_t *slot;
    uint32_t base;
} lz_table;
/* Compresses `n` bytes of `src` into `dst` (cap >= lz_bound(n)), with the
 * table `scratch` (NULL: a table of its own, made and freed here); the
 * bytes out are the same either way.  Returns the compressed size, or 0
 * when cap is too small or memory ran out. */
size_t lz_compress(const uint8_t *src, size_t n, uint8_t *dst, size_t cap, lz_table *scratch);
/* Releases the table's memory; `t` may be used again.  Cannot fail. */
void lz_table_free(lz_table *t);
/* Decompresses `n` bytes of `src` into exactly `out_n` bytes at `dst`.
 * Returns 0, or -1 when the bytes are not a block of that size (never
 * reading or writing out of bounds). */
int lz_decompress(const uint8_t *src, size_t n, uint8_t *dst, size_t out_n);

/* ------------------------------------------------------------------------ */
/* Content hash (hash.c).                                                   */
/* ------------------------------------------------------------------------ */

/* Writes the 128-bit MurmurHash3 (x64) of `n` bytes at `p` into `out`. */
void hash128(const void *p, size_t n, uint8_t out[WIRE_HASH_BYTES]);

/* ------------------------------------------------------------------------ */
/* Checksum (crc32c.c).                                                     */
/* ------------------------------------------------------------------------ */

/* Returns the CRC-32C of `n` bytes at `p` continuing from `crc`, the
 * CRC-32C of the bytes before them (0 for none): crc32c(crc32c(0, a), b)
 * is the CRC-32C of a followed by b.  Cannot fail. */
uint32_t crc32c(uint32_t crc, const void *p, size_t n);
/* The same checksum by table lookups only, whatever the CPU (crc32c uses
 * the CPU's crc32 instruction where it has one).  Cannot fail. */
uint32_t crc32c_sw(uint32_t crc, const void *p, size_t n);

#endif /* CALLTAPE_WIRE_H */
