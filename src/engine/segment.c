/*
 * segment.c - columnar segments: the calls of one function from one session,
 * stored in one row of the `segments` table (layout in engine.h).
 *
 * Storing a column at a time with deltas makes a typical small call cost
 * about ten bytes of bookkeeping plus its values, and lets SQLite insert one
 * row per few thousand calls, which is what makes millions of recorded calls
 * per second possible.  The segment row carries the zone maps (id, start
 * and duration ranges) that searches use to skip segments.
 *
 * A segment of format 2 ends with CRC-32Cs of its header and of each
 * column: a reader checks the header when it opens a segment and each
 * column before it reads it (a search that only tests start and duration
 * checks only those two), so damaged bytes are reported as damage rather
 * than read as other values; format 1 (no checksums) is still read.
 *
 * Format 3 packs the arguments and results columns (lz.c) when that makes
 * them smaller: calls of one function repeat much of their values.  A
 * reader unpacks them, after their checksums, the first time it needs
 * either, into one buffer it owns (seg_reader_close, seg_reader_detach).
 * Format 4 only lays the flags column out anew (pack_flags), so that the
 * capture of a common call fits the same one byte as before it.  Format 5
 * packs the bookkeeping columns too (id, parent, depth, thread, flags,
 * extras: mostly the same byte call after call), all but start and
 * duration; a reader unpacks only the columns it reads.  Format 6
 * shuffles an args or result column whose calls each take the same number
 * of bytes before packing it (byte j of every call together): the calls
 * of one function mostly differ in a few bytes at the same places, so the
 * shuffled column is long runs that pack smaller, and faster, than the
 * calls one after another.
 * Readers never read outside the bytes given, and a segment reads to its
 * end only when every column is used up exactly.
 */
#include "engine.h"

#include <stddef.h>
#include <stdlib.h>

enum {
    COL_ID,
    COL_PARENT,
    COL_DEPTH,
    COL_THREAD,
    COL_START,
    COL_DUR,
    COL_FLAGS,
    COL_EXTRA,
    COL_ARGS,
    COL_RESULT,
    NCOLS
};

/* The flags column of format 4: outcome, REC_HAS_ARGS, REC_HAS_RESULT and
 * the capture in the low 7 bits (one varint byte for a common call), the
 * other flags above them at their own positions. */
#define SEG_LOW_FLAGS ((uint16_t)(REC_HAS_ARGS | REC_HAS_RESULT | REC_CAPTURE_MASK))
_Static_assert(REC_HAS_ARGS == 1 << 3 && REC_HAS_RESULT == 1 << 4, "the packed flag layout");

static uint64_t pack_flags(uint8_t outcome, uint16_t flags)
{
    return (uint64_t)outcome | (uint64_t)((flags >> 3) & 3u) << 2 |
           (uint64_t)rec_capture_of(flags) << 4 | (uint64_t)(flags & ~SEG_LOW_FLAGS) << 7;
}

/* Reads one call's outcome and flags from the flags column value `v` of a
 * segment of `format`.  Returns 0, or SEG_MALFORMED. */
static int unpack_flags(uint64_t v, uint8_t format, uint8_t *outcome, uint16_t *flags)
{
    if ((v & 3) > OUTCOME_CLOSED)
        return SEG_MALFORMED;
    *outcome = (uint8_t)(v & 3);
    if (format < 4) {
        if ((v >> 2) > 0xffff)
            return SEG_MALFORMED;
        *flags = (uint16_t)(v >> 2);
        return 0;
    }
    uint64_t high = v >> 7;
    if (high > 0xffff || (high & SEG_LOW_FLAGS) || ((v >> 4) & 7) > CAPTURE_LAST)
        return SEG_MALFORMED;
    *flags = (uint16_t)(high | ((v >> 2) & 3) << 3 |
                        rec_capture_flags((enum rec_capture)((v >> 4) & 7)));
    return 0;
}

/* The column a value slot is stored in: the args in their own, the other
 * values one after another in the result column, in slot order. */
static int value_column(enum value_slot slot)
{
    return slot == VALUE_ARGS ? COL_ARGS : COL_RESULT;
}

_Static_assert(SEG_CHECKSUMS == NCOLS + 1 && SEG_ALL_COLUMNS == (1u << NCOLS) - 1,
               "one checksum for the header and one for each column");

void seg_builder_init(seg_builder *s)
{
    memset(s, 0, sizeof *s);
    for (int i = 0; i < NCOLS; i++)
        wbuf_init(&s->col[i], NULL, 0);
    wbuf_init(&s->raw, NULL, 0);
    wbuf_init(&s->links, NULL, 0);
}

void seg_builder_free(seg_builder *s)
{
    for (int i = 0; i < NCOLS; i++)
        wbuf_free(&s->col[i]);
    wbuf_free(&s->raw);
    wbuf_free(&s->links);
    memset(s, 0, sizeof *s);
}

void seg_builder_reset(seg_builder *s)
{
    wbuf keep[NCOLS], raw = s->raw, links = s->links;
    memcpy(keep, s->col, sizeof keep);
    memset(s, 0, sizeof *s);
    for (int i = 0; i < NCOLS; i++) {
        s->col[i] = keep[i];
        s->col[i].len = 0;
        s->col[i].failed = 0;
    }
    s->raw = raw;
    s->links = links;
    s->raw.len = s->links.len = 0;
    s->raw.failed = s->links.failed = 0;
}

int seg_builder_add_measures(seg_builder *s, const seg_call *c, size_t share[2])
{
    wbuf *x = &s->col[COL_EXTRA];
    if (c->flags & REC_HAS_CPU)
        wbuf_varint(x, (uint64_t)c->cpu_ns);
    if (c->flags & REC_HAS_MEMORY) {
        wbuf_varint(x, (uint64_t)c->rss_before);
        wbuf_varint(x, (uint64_t)c->rss_after);
        wbuf_varint(x, (uint64_t)c->rss_peak);
    }
    if (c->flags & REC_HAS_ENERGY) {
        wbuf_varint(x, (uint64_t)c->energy_pkg);
        wbuf_varint(x, (uint64_t)c->energy_dram);
    }
    if (c->flags & REC_HAS_VALUES) {
        size_t args_at = s->col[COL_ARGS].len, result_at = s->col[COL_RESULT].len;
#pragma GCC unroll 8 /* one copy per slot: flags and columns are constants */
        for (int i = 0; i < VALUE_NSLOTS; i++) {
            if (c->flags & value_flag((enum value_slot)i)) {
                wbuf *col = &s->col[value_column((enum value_slot)i)];
                wbuf_varint(col, c->value[i].len);
                wbuf_put(col, c->value[i].data, c->value[i].len);
            }
        }
        share[0] = s->col[COL_ARGS].len - args_at;
        share[1] = s->col[COL_RESULT].len - result_at;
    }
    /* the columns this adds to (no branch per column) */
    return s->col[COL_EXTRA].failed | s->col[COL_ARGS].failed | s->col[COL_RESULT].failed ? -1 : 0;
}

/* The block a parent id belongs to: 0 for the roots (no parent), else
 * one more than its block of SEG_LINK_SPAN ids (ids are positive). */
static uint64_t block_of(int64_t parent)
{
    return parent ? (uint64_t)parent / SEG_LINK_SPAN + 1 : 0;
}

/* Moves the bitmap of `k`, built from its block's first id, to start at
 * k->lo: a shift right by lo % SEG_LINK_SPAN bits, a word at a time. */
static void align_bits(seg_link *k)
{
    enum { WORDS = (SEG_LINK_BYTES + 7) / 8 };
    uint8_t bytes[WORDS * 8] = {0};
    uint64_t w[WORDS];
    memcpy(bytes, k->parents, SEG_LINK_BYTES);
    for (size_t j = 0; j < WORDS; j++)
        w[j] = wire_get_le64(bytes + 8 * j);
    size_t shift = (size_t)(k->lo % SEG_LINK_SPAN), by = shift / 64, bit = shift % 64;
    for (size_t j = 0; j < WORDS; j++) {
        uint64_t v = j + by < WORDS ? w[j + by] >> bit : 0;
        if (bit && j + by + 1 < WORDS) /* the bits carried from the next word */
            v |= w[j + by + 1] << (64 - bit);
        for (size_t b = 0; b < 8 && 8 * j + b < SEG_LINK_BYTES; b++)
            k->parents[8 * j + b] = (uint8_t)(v >> 8 * b);
    }
}

int64_t seg_builder_links(seg_builder *s)
{
    size_t n = s->raw.len / sizeof(seg_raw), nlinks = 0, last = 0;
    const seg_raw *raw = (const seg_raw *)(const void *)s->raw.data;
    uint64_t last_block = UINT64_MAX; /* the block of k[last] (none yet) */
    s->links.len = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t parent = raw[i].parent;
        uint64_t block = block_of(parent);
        seg_link *k = (seg_link *)(void *)s->links.data;
        if (block != last_block) {
            /* the block of the previous call's parent, else the others, newest first */
            for (last = nlinks; last-- > 0 && block_of(k[last].lo) != block;)
                ;
            if (last >= nlinks) { /* a new block: none held this parent's */
                seg_link fresh;
                memset(&fresh, 0, sizeof fresh);
                fresh.lo = fresh.hi = parent;
                wbuf_put(&s->links, &fresh, sizeof fresh);
                if (s->links.failed)
                    return -1;
                k = (seg_link *)(void *)s->links.data;
                last = nlinks++;
            }
            last_block = block;
        }
        seg_link *at = &k[last];
        if (parent < at->lo)
            at->lo = parent;
        if (parent > at->hi)
            at->hi = parent;
        uint64_t bit = (uint64_t)parent % SEG_LINK_SPAN; /* from the block's first id, for now */
        at->parents[bit / 8] |= (uint8_t)(1u << (bit % 8));
        at->n++;
    }
    seg_link *k = (seg_link *)(void *)s->links.data;
    for (size_t i = 0; i < nlinks; i++)
        align_bits(&k[i]);
    for (size_t i = 1; i < nlinks; i++) /* ascending lo; a segment has few blocks */
        for (size_t j = i; j > 0 && k[j - 1].lo > k[j].lo; j--) {
            seg_link t = k[j];
            k[j] = k[j - 1];
            k[j - 1] = t;
        }
    return (int64_t)nlinks;
}

static void put_le32(wbuf *out, uint32_t v)
{
    uint8_t le[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    wbuf_put(out, le, sizeof le);
}

static uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The columns a segment of `format` may hold packed: the value columns
 * from format 3 on, and from format 5 every column but start and
 * duration, which searches by time and duration scan without unpacking. */
static unsigned packable(uint8_t format)
{
    if (format >= 5)
        return SEG_ALL_COLUMNS & ~(1u << COL_START | 1u << COL_DUR);
    return format >= 3 ? 1u << COL_ARGS | 1u << COL_RESULT : 0;
}

/* Byte j of each of the `n` shares of `share` bytes at `src` together,
 * one share after another: src[k * share + j] to dst[j * n + k]. */
static void shuffle(uint8_t *restrict dst, const uint8_t *restrict src, size_t n, size_t share)
{
    bytes_transpose(dst, src, n, share);
}

/* The inverse of shuffle: dst[k * share + j] = src[j * n + k]. */
static void unshuffle(uint8_t *restrict dst, const uint8_t *restrict src, size_t n, size_t share)
{
    bytes_transpose(dst, src, share, n);
}

/* A column shorter than this is stored as it is. */
#define SEG_PACK_MIN 256

/* Packs column `c` into `packed` (varint raw length + lz block of its
 * bytes, or of `shuffled`, the same bytes shuffled, when not NULL) when
 * that is at least an eighth smaller.  Returns 1 when packed, 0 when not. */
static int pack_column(const wbuf *c, const uint8_t *shuffled, wbuf *packed, lz_table *lz)
{
    if (c->len < SEG_PACK_MIN || wbuf_reserve(packed, lz_bound(c->len) + 10) < 0)
        return 0;
    wbuf_varint(packed, c->len);
    size_t n = lz_compress(shuffled ? shuffled : c->data, c->len, packed->data + packed->len,
                           packed->cap - packed->len, lz);
    if (!n || packed->len + n > c->len - c->len / 8)
        return 0;
    packed->len += n;
    return 1;
}

/* The shuffled bytes of value column `i` of `s` in `into`, when its calls
 * each added the same number of bytes (at least two, from at least two
 * calls); NULL when it is not shuffled. */
static const uint8_t *shuffled_column(const seg_builder *s, int i, wbuf *into)
{
    int at = i == COL_ARGS ? 0 : 1;
    if (s->n < 2 || s->share[at] < 2 || (s->uneven & 1u << at) || s->col[i].len < SEG_PACK_MIN)
        return NULL;
    into->len = 0;
    if (wbuf_reserve(into, s->col[i].len) < 0)
        return NULL;
    shuffle(into->data, s->col[i].data, s->n, s->share[at]);
    return into->data;
}

/* How a bookkeeping column holds its field: as it is, as the zigzag delta
 * from the previous call's (the first call's from the segment's first),
 * as the zigzag distance back from the call's id to it (0: none), or as
 * pack_flags of the flags and outcome seg_raw keeps. */
enum seg_encoding { SEG_AS_IS, SEG_DELTA, SEG_BACK, SEG_FLAGS };
#define SEG_ENCODE_BLOCK 256

/* The field at byte offset `off` of `r` (an int64_t or uint64_t). */
static int64_t raw_field(const seg_raw *r, size_t off)
{
    int64_t v;
    memcpy(&v, (const char *)r + off, sizeof v);
    return v;
}

/* Encodes the field at `off` of the `n` calls of `raw` into column `col`
 * (emptied first) as varints, SEG_ENCODE_BLOCK calls into room reserved
 * once.  0, or -1 when memory ran out.  Inlined at each use, so that the
 * loop holds only its own column's work. */
__attribute__((always_inline)) static inline int encode_column(wbuf *col, const seg_raw *raw,
                                                               size_t n, size_t off,
                                                               enum seg_encoding how, int64_t first)
{
    col->len = 0;
    int64_t last = first;
    uint64_t flags_in = UINT64_MAX, flags_out = 0; /* SEG_FLAGS: the last packed */
    for (size_t at = 0; at < n; at += SEG_ENCODE_BLOCK) {
        size_t end = n - at > SEG_ENCODE_BLOCK ? at + SEG_ENCODE_BLOCK : n;
        if (wbuf_reserve(col, (end - at) * 10) < 0)
            return -1;
        uint8_t *q = col->data + col->len;
        for (size_t i = at; i < end; i++) {
            int64_t v = raw_field(&raw[i], off);
            uint64_t u = (uint64_t)v;
            if (how == SEG_DELTA) {
                u = zigzag(v - last);
                last = v;
            } else if (how == SEG_BACK) {
                u = v ? zigzag(raw[i].id - v) : 0;
            } else if (how == SEG_FLAGS) {
                /* the calls of a segment mostly have the same flags */
                if (u != flags_in) {
                    flags_in = u;
                    flags_out = pack_flags((uint8_t)(u >> SEG_RAW_OUTCOME_SHIFT), (uint16_t)u);
                }
                u = flags_out;
            }
            q = put_varint_raw(q, u);
        }
        col->len = (size_t)(q - col->data);
    }
    return 0;
}

/* The builder's ranges (id_min .. dur_max) from its calls' seg_raw: one
 * tight loop at the end instead of seven compares at each call. */
static void set_ranges(seg_builder *s, const seg_raw *raw, size_t n)
{
    if (!n)
        return;
    int64_t id_min = raw[0].id, id_max = raw[0].id, start_min = raw[0].start;
    int64_t start_max = raw[0].start, end_max = raw[0].start + raw[0].duration;
    int64_t dur_min = raw[0].duration, dur_max = raw[0].duration;
    for (size_t i = 1; i < n; i++) {
        int64_t id = raw[i].id, start = raw[i].start, dur = raw[i].duration;
        id_min = id < id_min ? id : id_min;
        id_max = id > id_max ? id : id_max;
        start_min = start < start_min ? start : start_min;
        start_max = start > start_max ? start : start_max;
        end_max = start + dur > end_max ? start + dur : end_max;
        dur_min = dur < dur_min ? dur : dur_min;
        dur_max = dur > dur_max ? dur : dur_max;
    }
    s->id_min = id_min;
    s->id_max = id_max;
    s->start_min = start_min;
    s->start_max = start_max;
    s->end_max = end_max;
    s->dur_min = dur_min;
    s->dur_max = dur_max;
}

/* Encodes the columns id .. flags of the builder's calls from their
 * seg_raw, and sets its ranges.  0, or -1 when memory ran out. */
static int encode_bookkeeping(seg_builder *s)
{
    const seg_raw *raw = (const seg_raw *)(const void *)s->raw.data;
    size_t n = s->raw.len / sizeof *raw;
    set_ranges(s, raw, n);
    return encode_column(&s->col[COL_ID], raw, n, offsetof(seg_raw, id), SEG_DELTA, s->first_id) |
           encode_column(&s->col[COL_PARENT], raw, n, offsetof(seg_raw, parent), SEG_BACK, 0) |
           encode_column(&s->col[COL_DEPTH], raw, n, offsetof(seg_raw, depth), SEG_AS_IS, 0) |
           encode_column(&s->col[COL_THREAD], raw, n, offsetof(seg_raw, thread), SEG_AS_IS, 0) |
           encode_column(&s->col[COL_START], raw, n, offsetof(seg_raw, start), SEG_DELTA,
                         s->first_start) |
           encode_column(&s->col[COL_DUR], raw, n, offsetof(seg_raw, duration), SEG_AS_IS, 0) |
           encode_column(&s->col[COL_FLAGS], raw, n, offsetof(seg_raw, flags), SEG_FLAGS, 0);
}

int seg_builder_finish(seg_builder *s, wbuf *out, lz_table *lz)
{
    wbuf packed[NCOLS], shuffled, plain;
    const wbuf *stored[NCOLS];
    unsigned mask = 0, shuffled_mask = 0;
    if (encode_bookkeeping(s) < 0)
        return -1;
    wbuf_init(&shuffled, NULL, 0);
    wbuf_init(&plain, NULL, 0);
    for (int i = 0; i < NCOLS; i++) {
        wbuf_init(&packed[i], NULL, 0);
        stored[i] = &s->col[i];
        if (!(packable(CALLTAPE_SEGMENT_FORMAT) & 1u << i))
            continue;
        const uint8_t *shuf =
            i == COL_ARGS || i == COL_RESULT ? shuffled_column(s, i, &shuffled) : NULL;
        int ok = pack_column(&s->col[i], shuf, &packed[i], lz);
        if (shuf && (!ok || packed[i].len > s->col[i].len / 4)) {
            /* not much of a win: the calls as they are may pack smaller */
            plain.len = 0;
            if (pack_column(&s->col[i], NULL, &plain, lz) && (!ok || plain.len < packed[i].len)) {
                wbuf t = packed[i];
                packed[i] = plain;
                plain = t;
                ok = 1;
                shuf = NULL;
            }
        }
        if (ok) {
            stored[i] = &packed[i];
            mask |= 1u << i;
            shuffled_mask |= shuf ? 1u << i : 0;
        }
    }
    wbuf_free(&shuffled);
    wbuf_free(&plain);
    size_t start = out->len;
    wbuf_byte(out, CALLTAPE_SEGMENT_FORMAT);
    wbuf_varint(out, s->n);
    wbuf_varint(out, zigzag(s->first_id));
    wbuf_varint(out, zigzag(s->first_start));
    wbuf_varint(out, mask);
    wbuf_varint(out, shuffled_mask);
    /* the header checksum covers these bytes and each column's length */
    uint32_t head = out->failed ? 0 : crc32c(0, out->data + start, out->len - start);
    for (int i = 0; i < NCOLS; i++) {
        size_t at = out->len;
        wbuf_varint(out, stored[i]->len);
        if (!out->failed)
            head = crc32c(head, out->data + at, out->len - at);
        wbuf_put(out, stored[i]->data, stored[i]->len);
    }
    put_le32(out, head);
    for (int i = 0; i < NCOLS; i++)
        put_le32(out, crc32c(0, stored[i]->data, stored[i]->len));
    for (int i = 0; i < NCOLS; i++)
        wbuf_free(&packed[i]);
    return out->failed ? -1 : 0;
}

const char *seg_strerror(int status)
{
    switch (status) {
    case SEG_CHECKSUM:
        return "fails its checksum";
    case SEG_COUNT:
        return "holds another number of calls than its row says";
    case SEG_NEWER:
        return "has an unknown segment format (damaged, or written by a newer calltape)";
    default:
        return "cannot be decoded";
    }
}

/* Parses the header and the column lengths of the segment in the `n`
 * bytes at `data` (from byte 1 on), taking `format` as its first byte.
 * For format 2, `n` excludes the checksums, and the header's CRC-32C goes
 * to *head.  Returns 0 or SEG_MALFORMED. */
static int open_columns(seg_reader *r, const uint8_t *data, size_t n, uint8_t format,
                        uint32_t *head)
{
    wreader h;
    wreader_init(&h, data + 1, n - 1);
    r->n = (size_t)wreader_varint(&h);
    r->last_id = unzigzag(wreader_varint(&h));
    r->last_start = unzigzag(wreader_varint(&h));
    uint64_t packed = format >= 3 ? wreader_varint(&h) : 0;
    uint64_t shuffled = format >= 6 ? wreader_varint(&h) : 0;
    if ((packed & ~(uint64_t)packable(format)) ||
        (shuffled & ~(packed & (1u << COL_ARGS | 1u << COL_RESULT))))
        h.bad = 1; /* no writer packs (or shuffles) those */
    r->packed = (unsigned)packed;
    r->shuffled = (unsigned)shuffled;
    uint32_t crc = crc32c(crc32c(0, &format, 1), data + 1, (size_t)(h.p - data - 1));
    for (int i = 0; i < NCOLS && !h.bad; i++) {
        const uint8_t *at = h.p;
        uint64_t len = wreader_varint(&h);
        crc = crc32c(crc, at, (size_t)(h.p - at));
        const uint8_t *p = wreader_take(&h, len);
        wreader_init(&r->col[i], p, p ? (size_t)len : 0);
    }
    *head = crc;
    /* every call takes at least one byte of the id column (checked when
     * it is unpacked, if packed) */
    if (h.bad || h.p != h.end ||
        (!(packed & 1u << COL_ID) && r->n > (size_t)(r->col[COL_ID].end - r->col[COL_ID].p)))
        return SEG_MALFORMED;
    return 0;
}

/* Opens `data` as a segment with checksums whose first byte is taken to
 * be `format` (2 or 3).  Returns 0, or SEG_CHECKSUM (also when it is too
 * short to hold its checksums: it was cut). */
static int open_checked(seg_reader *r, const uint8_t *data, size_t n, uint8_t format)
{
    if (n < 1 + SEG_CHECKSUMS * 4)
        return SEG_CHECKSUM;
    size_t body = n - SEG_CHECKSUMS * 4;
    uint32_t head;
    /* the writer always writes a header that parses: one that does not
     * was damaged, as is one whose checksum differs */
    if (open_columns(r, data, body, format, &head) < 0 || head != get_le32(data + body))
        return SEG_CHECKSUM;
    r->crc = data + body + 4;
    return 0;
}

/* Unpacks the packed columns of `want` (verified) and points their readers
 * at the result.  The first unpack makes one owned buffer with room for
 * every column still packed, so that the columns a search never reads
 * stay packed and the buffer stays one (seg_reader_detach).  Returns 0 or
 * SEG_MALFORMED. */
static int unpack_columns(seg_reader *r, unsigned want)
{
    if (!r->unpacked) {
        size_t total = 0, scratch = 0;
        for (int i = 0; i < NCOLS; i++) {
            if (!(r->packed & 1u << i))
                continue;
            wreader body = r->col[i];
            uint64_t raw = wreader_varint(&body);
            size_t stored = (size_t)(body.end - body.p);
            if (body.bad || raw > (uint64_t)stored * 256 + 64) /* lz expands at most so */
                return SEG_MALFORMED;
            if ((r->shuffled & 1u << i) && (r->n == 0 || raw % r->n != 0))
                return SEG_MALFORMED; /* shares of one size each */
            if ((r->shuffled & 1u << i) && raw > scratch)
                scratch = (size_t)raw;
            r->unpack_at[i] = total;
            total += (size_t)raw;
        }
        r->scratch_at = total; /* then room for one shuffled column */
        if (!(r->unpacked = malloc(total + scratch ? total + scratch : 1)))
            return SEG_MALFORMED;
    }
    for (int i = 0; i < NCOLS; i++) {
        if (!(want & r->packed & 1u << i))
            continue;
        wreader body = r->col[i];
        size_t raw = (size_t)wreader_varint(&body);
        uint8_t *to = r->unpacked + r->unpack_at[i];
        int shuffled = (r->shuffled & 1u << i) != 0;
        uint8_t *lz_to = shuffled ? r->unpacked + r->scratch_at : to;
        if (lz_decompress(body.p, (size_t)(body.end - body.p), lz_to, raw) < 0)
            return SEG_MALFORMED;
        if (shuffled)
            unshuffle(to, lz_to, r->n, raw / r->n);
        wreader_init(&r->col[i], to, raw);
        r->packed &= ~(1u << i);
    }
    /* every call takes at least one byte of the id column */
    if ((want & 1u << COL_ID) && r->n > (size_t)(r->col[COL_ID].end - r->col[COL_ID].p))
        return SEG_MALFORMED;
    return 0;
}

void seg_reader_close(seg_reader *r)
{
    free(r->unpacked);
    r->unpacked = NULL;
}

uint8_t *seg_reader_detach(seg_reader *r)
{
    uint8_t *p = r->unpacked;
    r->unpacked = NULL;
    return p;
}

int seg_reader_open(seg_reader *r, const uint8_t *data, size_t n)
{
    memset(r, 0, sizeof *r);
    if (n < 1)
        return SEG_MALFORMED;
    r->format = data[0];
    if (data[0] >= 2 && data[0] <= CALLTAPE_SEGMENT_FORMAT)
        return open_checked(r, data, n, data[0]);
    uint32_t head;
    int rc = data[0] == 1 ? open_columns(r, data, n, 1, &head) : SEG_MALFORMED;
    if (rc == 0)
        return 0;
    for (uint8_t format = 2; format <= CALLTAPE_SEGMENT_FORMAT; format++)
        if (open_checked(r, data, n, format) == 0) {
            memset(r, 0, sizeof *r);
            return SEG_CHECKSUM; /* a segment with checksums whose first byte changed */
        }
    memset(r, 0, sizeof *r);
    return data[0] > CALLTAPE_SEGMENT_FORMAT ? SEG_NEWER : rc;
}

int seg_reader_verify(seg_reader *r, unsigned columns)
{
    if (!r->crc)
        return 0; /* format 1: nothing to check against */
    for (int i = 0; i < NCOLS; i++) {
        unsigned bit = 1u << i;
        if (!(columns & bit) || (r->verified & bit))
            continue;
        /* columns are checked before any is read: p is still their start */
        const wreader *c = &r->col[i];
        if (crc32c(0, c->p, (size_t)(c->end - c->p)) != get_le32(r->crc + 4 * (size_t)i))
            return SEG_CHECKSUM;
        r->verified |= bit;
    }
    return r->packed & columns ? unpack_columns(r, columns) : 0;
}

/* At the end of a segment: 0 when every column was read to its end,
 * SEG_MALFORMED when bytes are left over (a wrong count). */
static int seg_end(const seg_reader *r)
{
    for (int i = 0; i < NCOLS; i++)
        if (r->col[i].p != r->col[i].end)
            return SEG_MALFORMED;
    return 0;
}

int seg_reader_next(seg_reader *r, seg_call *c)
{
    if (r->verified != SEG_ALL_COLUMNS) {
        int rc = seg_reader_verify(r, SEG_ALL_COLUMNS);
        if (rc < 0)
            return rc;
    }
    if (r->i >= r->n)
        return seg_end(r);
    memset(c, 0, sizeof *c);
    c->id = r->last_id + unzigzag(wreader_varint(&r->col[COL_ID]));
    uint64_t back = wreader_varint(&r->col[COL_PARENT]);
    c->parent = back ? c->id - unzigzag(back) : 0;
    c->depth = (int64_t)wreader_varint(&r->col[COL_DEPTH]);
    c->thread = (int64_t)wreader_varint(&r->col[COL_THREAD]);
    c->start = r->last_start + unzigzag(wreader_varint(&r->col[COL_START]));
    c->duration = (int64_t)wreader_varint(&r->col[COL_DUR]);
    if (unpack_flags(wreader_varint(&r->col[COL_FLAGS]), r->format, &c->outcome, &c->flags) < 0)
        return SEG_MALFORMED;
    wreader *x = &r->col[COL_EXTRA];
    if (c->flags & REC_HAS_CPU)
        c->cpu_ns = (int64_t)wreader_varint(x);
    if (c->flags & REC_HAS_MEMORY) {
        c->rss_before = (int64_t)wreader_varint(x);
        c->rss_after = (int64_t)wreader_varint(x);
        c->rss_peak = (int64_t)wreader_varint(x);
    }
    if (c->flags & REC_HAS_ENERGY) {
        c->energy_pkg = (int64_t)wreader_varint(x);
        c->energy_dram = (int64_t)wreader_varint(x);
    }
#pragma GCC unroll 8 /* one copy per slot: flags and columns are constants */
    for (int i = 0; i < VALUE_NSLOTS; i++) {
        if (c->flags & value_flag((enum value_slot)i)) {
            wreader *col = &r->col[value_column((enum value_slot)i)];
            c->value[i].len = (size_t)wreader_varint(col);
            c->value[i].data = wreader_take(col, c->value[i].len);
        }
    }
    for (int i = 0; i < NCOLS; i++)
        if (r->col[i].bad)
            return SEG_MALFORMED;
    r->last_id = c->id;
    r->last_start = c->start;
    r->i++;
    return 1;
}

int seg_reader_any_within(seg_reader *r, int64_t since, int64_t until, int64_t min_duration,
                          int64_t max_duration)
{
    int rc = seg_reader_verify(r, 1u << COL_START | 1u << COL_DUR);
    if (rc < 0)
        return rc;
    wreader st = r->col[COL_START], du = r->col[COL_DUR];
    int64_t start = r->last_start;
    for (size_t i = r->i; i < r->n; i++) {
        start += unzigzag(wreader_varint(&st));
        int64_t d = (int64_t)wreader_varint(&du);
        if (st.bad || du.bad)
            return SEG_MALFORMED;
        if (start >= since && start <= until && d >= min_duration && d <= max_duration)
            return 1;
    }
    return 0;
}

int seg_reader_has_id(seg_reader *r, int64_t id)
{
    int rc = seg_reader_verify(r, 1u << COL_ID);
    if (rc < 0)
        return rc;
    wreader ids = r->col[COL_ID];
    int64_t at = r->last_id;
    for (size_t i = r->i; i < r->n; i++) {
        at += unzigzag(wreader_varint(&ids));
        if (ids.bad)
            return SEG_MALFORMED;
        if (at == id)
            return 1;
    }
    return 0;
}

int seg_has_call_within(const uint8_t *data, size_t n, int64_t since, int64_t until,
                        int64_t min_duration, int64_t max_duration)
{
    seg_reader r;
    int rc = seg_reader_open(&r, data, n);
    if (rc == 0)
        rc = seg_reader_any_within(&r, since, until, min_duration, max_duration);
    seg_reader_close(&r);
    return rc;
}

static inline void skip_varint(wreader *r)
{
    while (r->p < r->end)
        if (!(*r->p++ & 0x80))
            return;
    r->bad = 1;
}

/* Passes over the current call in every column but start and duration
 * (already read), keeping the running id. */
static int skip_rest(seg_reader *r)
{
    r->last_id += unzigzag(wreader_varint(&r->col[COL_ID]));
    skip_varint(&r->col[COL_PARENT]);
    skip_varint(&r->col[COL_DEPTH]);
    skip_varint(&r->col[COL_THREAD]);
    uint8_t outcome;
    uint16_t flags;
    if (unpack_flags(wreader_varint(&r->col[COL_FLAGS]), r->format, &outcome, &flags) < 0)
        return SEG_MALFORMED;
    int extras = ((flags & REC_HAS_CPU) ? 1 : 0) + ((flags & REC_HAS_MEMORY) ? 3 : 0) +
                 ((flags & REC_HAS_ENERGY) ? 2 : 0);
    for (int k = 0; k < extras; k++)
        skip_varint(&r->col[COL_EXTRA]);
#pragma GCC unroll 8 /* one copy per slot: flags and columns are constants */
    for (int i = 0; i < VALUE_NSLOTS; i++) {
        if (flags & value_flag((enum value_slot)i)) {
            wreader *col = &r->col[value_column((enum value_slot)i)];
            wreader_take(col, wreader_varint(col));
        }
    }
    for (int i = 0; i < NCOLS; i++)
        if (r->col[i].bad)
            return SEG_MALFORMED;
    r->i++;
    return 0;
}

int seg_reader_next_within(seg_reader *r, seg_call *c, int64_t since, int64_t until,
                           int64_t min_duration, int64_t max_duration)
{
    if (r->verified != SEG_ALL_COLUMNS) {
        int rc = seg_reader_verify(r, SEG_ALL_COLUMNS);
        if (rc < 0)
            return rc;
    }
    wreader *st = &r->col[COL_START], *du = &r->col[COL_DUR];
    while (r->i < r->n) {
        const uint8_t *st_at = st->p, *du_at = du->p;
        int64_t start = r->last_start + unzigzag(wreader_varint(st));
        int64_t d = (int64_t)wreader_varint(du);
        if (st->bad || du->bad)
            return SEG_MALFORMED;
        if (start >= since && start <= until && d >= min_duration && d <= max_duration) {
            st->p = st_at; /* decode this one whole */
            du->p = du_at;
            return seg_reader_next(r, c);
        }
        r->last_start = start;
        if (skip_rest(r) < 0)
            return SEG_MALFORMED;
    }
    return seg_end(r);
}
