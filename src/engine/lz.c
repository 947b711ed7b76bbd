/*
 * lz.c - a small, fast LZ77 compressor for the value columns of segments
 * (the arguments and results of a function's calls repeat much of
 * themselves from call to call: the same `self`, the same keys).
 *
 * Block format (LZ4's, without its frame): a sequence of
 *   token      one byte: literal count (high 4 bits), match length - 4
 *              (low 4 bits); 15 in either means more bytes follow
 *   [lit ext]  bytes of 255 while they continue, then one below 255
 *   literals
 *   offset     2 bytes little-endian, 1..65535 back (absent after the
 *              last sequence, which holds literals only)
 *   [len ext]  as for literals
 * The input ends after the last sequence's literals.
 *
 * The compressor's hash table (lz_table) may be kept from one input to the
 * next: an entry holds base + position, and each input starts above every
 * entry made before it (an entry below base is no candidate, as a cleared
 * one is not), so a kept table compresses exactly as a cleared one (same
 * bytes out) without clearing 64 KiB each time.
 *
 * Invariants: lz_decompress never reads past its input or writes past its
 * output, whatever the bytes (a tape may be hostile or damaged); it
 * succeeds only when the input decodes to exactly the size it was told.
 */
#include "engine.h"

#include <stdlib.h>

#define LZ_MIN_MATCH 4
#define LZ_HASH_BITS 14
#define LZ_MAX_OFFSET 65535

static uint32_t lz_read32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static uint32_t lz_hash(uint32_t v)
{
    return (v * 2654435761u) >> (32 - LZ_HASH_BITS);
}

/* How many bytes `a` and `b` have in common from their start, at most
 * `max`: eight at a time where the machine is little-endian (the first
 * differing byte is the lowest set byte of their XOR), the same answer as
 * comparing byte by byte. */
static size_t lz_common(const uint8_t *a, const uint8_t *b, size_t max)
{
    size_t len = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    for (; len + 8 <= max; len += 8) {
        uint64_t x, y;
        memcpy(&x, a + len, 8);
        memcpy(&y, b + len, 8);
        if (x != y)
            return len + ((size_t)__builtin_ctzll(x ^ y) >> 3);
    }
#endif
    while (len < max && a[len] == b[len])
        len++;
    return len;
}

/* Writes `n` as the 4-bit field rest: bytes of 255 then the remainder. */
static uint8_t *lz_put_extra(uint8_t *q, size_t n)
{
    for (; n >= 255; n -= 255)
        *q++ = 255;
    *q++ = (uint8_t)n;
    return q;
}

size_t lz_bound(size_t n)
{
    return n + n / 255 + 16;
}

/* One sequence: `lit` literals from `src`, then (when `match` > 0) a match
 * of `match` bytes `offset` back.  A short run of literals is copied as 16
 * bytes at once where both buffers have them (`src_end`, `dst_end`): the
 * bytes past the run are overwritten next or lie past the output. */
static uint8_t *lz_sequence(uint8_t *q, const uint8_t *src, size_t lit, size_t offset, size_t match,
                            const uint8_t *src_end, const uint8_t *dst_end)
{
    uint8_t *token = q++;
    size_t ml = match ? match - LZ_MIN_MATCH : 0;
    *token = (uint8_t)((lit >= 15 ? 15 : lit) << 4 | (ml >= 15 ? 15 : ml));
    if (lit >= 15)
        q = lz_put_extra(q, lit - 15);
    if (lit <= 16 && src_end - src >= 16 && dst_end - q >= 16)
        memcpy(q, src, 16);
    else
        memcpy(q, src, lit);
    q += lit;
    if (!match)
        return q;
    *q++ = (uint8_t)(offset & 0xff);
    *q++ = (uint8_t)(offset >> 8);
    if (ml >= 15)
        q = lz_put_extra(q, ml - 15);
    return q;
}

void lz_table_free(lz_table *t)
{
    free(t->slot);
    t->slot = NULL;
    t->base = 0;
}

/* Readies `t` for an input of `n` bytes: entries from earlier inputs lie
 * below t->base, so that entry - base wraps past every position (no
 * candidate, as a cleared entry is), and the table is cleared only when
 * the positions would wrap.  0, or -1 when memory ran out. */
static int lz_table_ready(lz_table *t, size_t n)
{
    if (!t->slot && !(t->slot = calloc((size_t)1 << LZ_HASH_BITS, sizeof *t->slot)))
        return -1;
    if (t->base == 0 || n >= UINT32_MAX - t->base) {
        memset(t->slot, 0, ((size_t)1 << LZ_HASH_BITS) * sizeof *t->slot);
        t->base = 1;
    }
    return 0;
}

size_t lz_compress(const uint8_t *src, size_t n, uint8_t *dst, size_t cap, lz_table *scratch)
{
    lz_table own = {NULL, 0};
    lz_table *t = scratch ? scratch : &own;
    if (cap < lz_bound(n) || n >= UINT32_MAX - 1 || lz_table_ready(t, n) < 0)
        return 0;
    uint32_t *table = t->slot, base = t->base;
    uint8_t *q = dst;
    size_t anchor = 0, ip = 0, rep = 0; /* rep: the last match's offset */
    while (n >= 12 && ip + 8 <= n) {
        uint32_t seq = lz_read32(src + ip);
        size_t ref;
        if (rep && ip >= rep && lz_read32(src + ip - rep) == seq) {
            ref = ip - rep; /* calls of one function: the previous one is a stride back */
        } else {
            uint32_t h = lz_hash(seq);
            ref = (uint32_t)(table[h] - base); /* an earlier input's: past ip, no match */
            table[h] = base + (uint32_t)ip;
            if (ref >= ip || ip - ref > LZ_MAX_OFFSET || lz_read32(src + ref) != seq) {
                ip += 1 + ((ip - anchor) >> 6); /* skip faster through what does not repeat */
                continue;
            }
        }
        size_t len = LZ_MIN_MATCH + lz_common(src + ref + LZ_MIN_MATCH, src + ip + LZ_MIN_MATCH,
                                              n - ip - LZ_MIN_MATCH);
        while (ip > anchor && ref > 0 && src[ip - 1] == src[ref - 1]) {
            ip--; /* the match may start earlier */
            ref--;
            len++;
        }
        rep = ip - ref;
        q = lz_sequence(q, src + anchor, ip - anchor, rep, len, src + n, dst + cap);
        ip += len;
        anchor = ip;
        if (ip >= 2 && ip - 2 + 4 <= n) /* seed the table inside the match */
            table[lz_hash(lz_read32(src + ip - 2))] = base + (uint32_t)(ip - 2);
    }
    q = lz_sequence(q, src + anchor, n - anchor, 0, 0, src + n, dst + cap);
    t->base = base + (uint32_t)n + 1; /* every entry made here is now below it */
    lz_table_free(&own);
    return (size_t)(q - dst);
}

/* Reads a 4-bit field's extension onto *n.  0, or -1 past the end. */
static int lz_get_extra(const uint8_t **p, const uint8_t *end, size_t *n)
{
    uint8_t b;
    do {
        if (*p >= end)
            return -1;
        b = *(*p)++;
        *n += b;
    } while (b == 255);
    return 0;
}

int lz_decompress(const uint8_t *src, size_t n, uint8_t *dst, size_t out_n)
{
    const uint8_t *p = src, *end = src + n;
    size_t o = 0;
    while (p < end) {
        uint8_t token = *p++;
        size_t lit = token >> 4;
        if (lit == 15 && lz_get_extra(&p, end, &lit) < 0)
            return -1;
        if (lit > (size_t)(end - p) || lit > out_n - o)
            return -1;
        memcpy(dst + o, p, lit);
        p += lit;
        o += lit;
        if (p == end)
            break; /* the last sequence: literals only */
        if (end - p < 2)
            return -1;
        size_t offset = (size_t)p[0] | (size_t)p[1] << 8;
        p += 2;
        size_t len = token & 15;
        if (len == 15 && lz_get_extra(&p, end, &len) < 0)
            return -1;
        len += LZ_MIN_MATCH;
        if (offset == 0 || offset > o || len > out_n - o)
            return -1;
        for (size_t k = 0; k < len; k++, o++) /* byte by byte: the match may overlap */
            dst[o] = dst[o - offset];
    }
    return o == out_n ? 0 : -1;
}
