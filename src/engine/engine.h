/*
 * engine.h - the calltape engine's C API (plain C, no Python.h).
 *
 * The engine turns call records produced by a capture path into rows of a
 * tape (an SQLite file today: store.h).  Its parts, one file each:
 *   wire.h          bytes and values (wire.c, literal.c, lz.c, hash.c,
 *                   crc32c.c): buffers, the tape value format, compression
 *   record.c        the call records producers append: layout, parse, build
 *   queue.c         the producer buffer and the hand-off to the writer
 *   segment.c       columnar segments: many calls of one function in one row
 *   store.h         the store contract: what the writer and the reader ask
 *                   of the place a tape lives (store.c picks the kind)
 *   store_sqlite*.c the SQLite file store: schema, migrations, statements,
 *                   WAL; the only files that know SQL
 *   writer.c        the writer thread: decode records, build segments, commit
 *   selftime.c      self time: each call's recorded children's durations
 *                   (engine_impl.h: the state queue.c and writer.c share)
 *   query.c         searches: the store's segment listings merged in order
 *
 * Invariants shared by every part:
 *   - Producers (capture paths) call engine_append() with the GIL held, so at
 *     most one producer appends at a time; one that must wait for buffer
 *     space waits in engine_wait_room() with the GIL released.  The engine
 *     itself never needs the GIL and the writer thread never runs Python
 *     code.
 *   - Records are self-delimiting byte strings (layout below); a record is
 *     either wholly visible to the writer or not at all.
 *   - No function here prints, exits or aborts; errors come back as return
 *     codes with a message in a caller-supplied buffer or in engine_stats.
 */
#ifndef CALLTAPE_ENGINE_H
#define CALLTAPE_ENGINE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define CALLTAPE_SCHEMA_VERSION 6 /* 6: probe specs; 5: named spans (tests); 4: self time, ... */
/* 5: packed bookkeeping columns; 4: the capture in the flags' byte; 3: packed value columns;
 * 2: checksums; 1 to 4 still read */
#define CALLTAPE_SEGMENT_FORMAT 6

#include "wire.h"

/* ------------------------------------------------------------------------ */
/* Background file writer (bgwrite.c).                                       */
/* ------------------------------------------------------------------------ */

/* One thread writing a buffer to a file descriptor while its producer fills
 * the next one (an export: formatting and the disk's time overlap).  At
 * most one buffer is in flight; the producer's wbuf and the writer's swap
 * storage, so nothing is copied.  The fd stays the caller's. */
typedef struct bgwrite {
    int fd;
    int locks;     /* mu and cv were made (else every write is bgw_submit's own) */
    int started;   /* the thread runs */
    int no_thread; /* it could not be started: bgw_submit writes */
    int busy;      /* `job` holds bytes not yet written */
    int stop;
    int err; /* errno of the first failed write, 0 */
    wbuf job;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} bgwrite;

/* Prepares `w` to write to `fd`; the thread starts at the first submit (or
 * never, when it or its lock cannot be made: bgw_submit then writes the
 * bytes itself).  Cannot fail. */
void bgw_init(bgwrite *w, int fd);

/* Hands the bytes of `b` to the writer and gives `b` empty storage back
 * (the previous buffer's, already written), waiting first for that one.
 * Returns 0, or the errno of a write that failed (this one's or an
 * earlier one's: then nothing more is written). */
int bgw_submit(bgwrite *w, wbuf *b);

/* Waits for the last buffer, stops the thread, frees the storage.  Returns
 * 0, or the errno of the first write that failed.  Call once per
 * bgw_init. */
int bgw_finish(bgwrite *w);

/* ------------------------------------------------------------------------ */
/* Records: what producers append (layout), parsed by the writer.           */
/* ------------------------------------------------------------------------ */

/* Every record starts with varint total length (excluding itself), then a
 * kind byte.
 *
 * REC_FUNCTION: varint fn (process-local id), STR-like module, qualname,
 *   file (each varint n + bytes), varint first line, varint n + signature
 *   bytes (a wire LIST of TUPLE(name STR, kind INT, default value or
 *   REDACTED-less NONE marker tagged DEFAULT when present)).
 * REC_THREAD: varint thread (process-local index), varint ident, varint
 *   native id, varint n + name bytes.
 * REC_CALL: a fixed head of REC_CALL_HEAD bytes (rec_put_call_head:
 *   little-endian, unaligned) - u32 fn, u32 thread, u32 depth, u64 seq
 *   (>= 1, process-wide, in entry order), u64 parent seq (0: none), u64
 *   start (CLOCK_MONOTONIC ns), u64 duration ns, u16 flags, u8 outcome -
 *   so that neither the calling thread nor the writer spends a loop on a
 *   varint of it (records live in this process's memory only), then per
 *   flag: cpu ns; rss before, rss after, peak rss (bytes); energy pkg
 *   (uJ), dram (uJ + 1, or ENERGY_DRAM_NONE); args (varint n + n bytes of
 *   consecutive values, one per parameter in signature order, or a
 *   TUPLE(args) + DICT(kwargs) pair when binding failed, flagged
 *   REC_UNBOUND); result (varint n + one value; the EXCEPTION value when
 *   outcome is RAISED); locals (varint n + one DICT value: name -> value
 *   at return or raise); globals (varint n + one DICT value: the module
 *   globals the function reads, at entry); yields (varint n + one LIST
 *   value: what a generator yielded, ending in a TRUNCATED marker when
 *   there were more than the size limit allowed).
 * REC_COUNTERS: varint unencodable, varint pickled, varint redacted,
 *   varint truncated, varint dropped: deltas for the session counters.
 * REC_CONTEXT: varint id (>= 1, process-wide, in the order spans begin),
 *   varint start (CLOCK_MONOTONIC ns), varint end (likewise; 0 while the
 *   span is still open), varint n + kind bytes, varint n + name bytes: a
 *   span of this process's time the program named (a pytest test: kind
 *   "test", its node id), the whole row each time, so the record that
 *   closes a span also stands for the one that opened it.
 */
enum rec_kind {
    REC_FUNCTION = 1,
    REC_THREAD = 2,
    REC_CALL = 3,
    REC_COUNTERS = 4,
    REC_CONTEXT = 5,
};

enum rec_outcome {
    OUTCOME_RETURNED = 0,
    OUTCOME_RAISED = 1,
    OUTCOME_CLOSED = 2, /* generator/coroutine closed or abandoned early */
};

enum rec_flags {
    REC_HAS_CPU = 1 << 0,
    REC_HAS_MEMORY = 1 << 1,
    REC_HAS_ENERGY = 1 << 2,
    REC_HAS_ARGS = 1 << 3,
    REC_HAS_RESULT = 1 << 4,
    REC_UNBOUND = 1 << 5,
    REC_ASYNC = 1 << 6,       /* generator, coroutine or async generator */
    REC_HAS_LOCALS = 1 << 7,  /* the frame's locals at return or raise */
    REC_HAS_GLOBALS = 1 << 8, /* the module globals the function reads */
    REC_HAS_YIELDS = 1 << 9,  /* the values a generator yielded */
    REC_HAS_BLOBS = 1 << 10,  /* a top-level value is a BLOB_INLINE: the writer looks */
    /* bits 11..13: the enum rec_capture (REC_CAPTURE_SHIFT) */
};

/* How a call was captured: which way in wrote its record.  Stored in bits
 * 11..13 of its flags; CAPTURE_UNKNOWN on records older than the field. */
enum rec_capture {
    CAPTURE_UNKNOWN = 0,
    CAPTURE_DECORATOR = 1, /* @calltape.record */
    CAPTURE_MONITOR = 2,   /* calltape.monitor() and calltape run */
    CAPTURE_FLAT = 3,      /* calltape.flat_profile: a profiled call and its inner calls */
    CAPTURE_PROBE = 4,     /* a probe's record instrument */
    CAPTURE_TIMER = 5,     /* calltape.timer */
    CAPTURE_LAST = CAPTURE_TIMER,
};
#define REC_CAPTURE_SHIFT 11
#define REC_CAPTURE_MASK ((uint16_t)(7u << REC_CAPTURE_SHIFT))

/* The flag bits that say a call was captured by `c`. */
static inline uint16_t rec_capture_flags(enum rec_capture c)
{
    return (uint16_t)((unsigned)c << REC_CAPTURE_SHIFT);
}

/* The way in that captured a call with `flags`. */
static inline enum rec_capture rec_capture_of(uint16_t flags)
{
    return (enum rec_capture)((flags & REC_CAPTURE_MASK) >> REC_CAPTURE_SHIFT);
}

/* The per-call values, in the order a REC_CALL and a segment store them
 * (each varint n + bytes, present when its REC_HAS_* flag is set).  A new
 * value is one entry here, one in value_flag() and its flag: the record
 * builder, the parser, the segment and the writer loop over the slots. */
enum value_slot {
    VALUE_ARGS,
    VALUE_RESULT,
    VALUE_LOCALS,
    VALUE_GLOBALS,
    VALUE_YIELDS,
    VALUE_NSLOTS,
};

/* The bytes of one value slot; they point into a record or a segment. */
typedef struct value_bytes {
    const uint8_t *data;
    size_t len;
} value_bytes;

/* Every value slot's REC_HAS_* flag. */
#define REC_HAS_VALUES                                                                             \
    ((uint16_t)(REC_HAS_ARGS | REC_HAS_RESULT | REC_HAS_LOCALS | REC_HAS_GLOBALS | REC_HAS_YIELDS))

/* The measures that go into a segment's extras column. */
#define REC_HAS_EXTRAS ((uint16_t)(REC_HAS_CPU | REC_HAS_MEMORY | REC_HAS_ENERGY))

/* The REC_HAS_* flag that says `slot` is present. */
static inline uint16_t value_flag(enum value_slot slot)
{
    static const uint16_t flag[VALUE_NSLOTS] = {
        [VALUE_ARGS] = REC_HAS_ARGS,     [VALUE_RESULT] = REC_HAS_RESULT,
        [VALUE_LOCALS] = REC_HAS_LOCALS, [VALUE_GLOBALS] = REC_HAS_GLOBALS,
        [VALUE_YIELDS] = REC_HAS_YIELDS,
    };
    return flag[slot];
}

/* Energy (REC_HAS_ENERGY) is two counters in microjoules: the RAPL package
 * domain, and the DRAM domain stored plus one, ENERGY_DRAM_NONE (0) when the
 * machine has no DRAM counter. */
#define ENERGY_DRAM_NONE 0

/* The fixed head of a REC_CALL body, after its kind byte; its flags (the
 * low byte first) start at REC_CALL_FLAGS_AT. */
#define REC_CALL_HEAD 47
#define REC_CALL_FLAGS_AT 44

/* Writes the fixed head of a REC_CALL at `q` (REC_CALL_HEAD bytes of room;
 * fn, thread and depth below 2^32) and returns its end.  Cannot fail. */
static inline uint8_t *rec_put_call_head(uint8_t *q, uint64_t fn, uint64_t thread, uint64_t depth,
                                         uint64_t seq, uint64_t parent, uint64_t start,
                                         uint64_t duration, uint16_t flags, uint8_t outcome)
{
    const uint32_t small[3] = {(uint32_t)fn, (uint32_t)thread, (uint32_t)depth};
    const uint64_t wide[4] = {seq, parent, start, duration};
    memcpy(q, small, sizeof small);
    memcpy(q + 12, wide, sizeof wide);
    memcpy(q + REC_CALL_FLAGS_AT, &flags, 2);
    q[46] = outcome;
    return q + REC_CALL_HEAD;
}

/* The fixed head of a REC_CALL. */
typedef struct call_head {
    uint64_t fn, thread, depth, seq, parent, start, duration;
    uint16_t flags;
    uint8_t outcome;
} call_head;

/* The head of the REC_CALL body at `p` (REC_CALL_HEAD bytes).  Cannot fail. */
static inline call_head rec_call_head(const uint8_t *p)
{
    uint32_t small[3];
    uint64_t wide[4];
    uint16_t flags;
    memcpy(small, p, sizeof small);
    memcpy(wide, p + 12, sizeof wide);
    memcpy(&flags, p + REC_CALL_FLAGS_AT, 2);
    return (call_head){small[0], small[1], small[2], wide[0], wide[1],
                       wide[2],  wide[3],  flags,    p[46]};
}

/* 1 when a call of `flags` is a bare head: timings only, nothing after
 * its head. */
static inline int rec_is_bare(uint16_t flags)
{
    return !(flags & (REC_HAS_EXTRAS | REC_HAS_VALUES));
}

/* A parsed REC_CALL; byte ranges point into the record. */
typedef struct call_rec {
    uint64_t fn, seq, parent, depth, thread, start, duration;
    uint8_t outcome;
    uint16_t flags;
    uint64_t cpu_ns, rss_before, rss_after, rss_peak, energy_pkg, energy_dram;
    value_bytes value[VALUE_NSLOTS]; /* by enum value_slot; {NULL, 0} when not flagged */
} call_rec;

/* Parses the body of a REC_CALL (after the kind byte) into `c` (its value
 * slots point into `p`; the extras and slots not flagged are 0 and {NULL,
 * 0}).  Returns 0, or -1 when the bytes are malformed.  Inline: the writer
 * parses every call with extras or values this way (a bare head, only
 * rec_call_head). */
static inline int rec_parse_call(const uint8_t *p, size_t n, call_rec *c)
{
    if (n < REC_CALL_HEAD) {
        memset(c, 0, sizeof *c);
        return -1;
    }
    call_head h = rec_call_head(p);
    c->fn = h.fn;
    c->thread = h.thread;
    c->depth = h.depth;
    c->seq = h.seq;
    c->parent = h.parent;
    c->start = h.start;
    c->duration = h.duration;
    c->flags = h.flags;
    c->outcome = h.outcome;
    c->cpu_ns = c->rss_before = c->rss_after = c->rss_peak = c->energy_pkg = c->energy_dram = 0;
    if (rec_is_bare(c->flags)) { /* nothing follows */
        memset(c->value, 0, sizeof c->value);
        return n == REC_CALL_HEAD ? 0 : -1;
    }
    wreader r;
    wreader_init(&r, p + REC_CALL_HEAD, n - REC_CALL_HEAD);
    if (c->flags & REC_HAS_CPU)
        c->cpu_ns = wreader_varint(&r);
    if (c->flags & REC_HAS_MEMORY) {
        c->rss_before = wreader_varint(&r);
        c->rss_after = wreader_varint(&r);
        c->rss_peak = wreader_varint(&r);
    }
    if (c->flags & REC_HAS_ENERGY) {
        c->energy_pkg = wreader_varint(&r);
        c->energy_dram = wreader_varint(&r);
    }
#pragma GCC unroll 8 /* one copy per slot: flags and columns are constants */
    for (int i = 0; i < VALUE_NSLOTS; i++) {
        c->value[i].len = 0;
        c->value[i].data = NULL;
        if (c->flags & value_flag((enum value_slot)i)) {
            c->value[i].len = (size_t)wreader_varint(&r);
            c->value[i].data = wreader_take(&r, c->value[i].len);
        }
    }
    return (r.bad || r.p != r.end) ? -1 : 0;
}

/* Appends a REC_CALL with the fields of `c` (values copied) to `b`,
 * length prefix included. */
void rec_put_call(wbuf *b, const call_rec *c);

/* A parsed REC_CONTEXT; the texts point into the record. */
typedef struct context_rec {
    uint64_t id, start, end; /* end 0: open */
    const uint8_t *kind, *name;
    size_t kind_len, name_len;
} context_rec;

/* Parses the body of a REC_CONTEXT (after the kind byte).  Returns 0, or
 * -1 when the bytes are malformed (an id of 0 included). */
int rec_parse_context(const uint8_t *p, size_t n, context_rec *out);

/* Appends a REC_CONTEXT with the fields of `c` (texts copied) to `b`,
 * length prefix included. */
void rec_put_context(wbuf *b, const context_rec *c);

/* ------------------------------------------------------------------------ */
/* Segments (segment.c): the calls of one function, stored column by column. */
/* ------------------------------------------------------------------------ */

/* One decoded call of a segment, as the reader and the writer see it.  Times
 * are wall-clock ns since the epoch; ids are tape-wide call ids. */
typedef struct seg_call {
    int64_t id, parent, depth, thread, start, duration;
    uint8_t outcome;
    uint16_t flags;
    int64_t cpu_ns, rss_before, rss_after, rss_peak, energy_pkg, energy_dram;
    /* by enum value_slot; the args in the args column, the others in the
     * result column, in slot order */
    value_bytes value[VALUE_NSLOTS];
    int64_t self_ns; /* the builder's input only (not stored per call): the
                        duration minus its recorded direct children's */
} seg_call;

/* Serialized layout: byte CALLTAPE_SEGMENT_FORMAT, varint n, varint first
 * id, varint first start, then ten columns, each a varint byte length and
 * its bytes: id (zigzag delta from the previous id), parent (zigzag of
 * id - parent, 0 for none), depth, thread, start (zigzag delta), duration,
 * outcome | flags << 2, extras (cpu, memory, energy varints as flagged), args
 * (varint n + values when flagged), result (likewise, followed by the
 * locals, the globals and the yields, each varint n + one value, when
 * flagged); then, in format 2, eleven CRC-32Cs (4 bytes each, little-endian):
 * of the header (the format byte, the three varints and the ten column
 * lengths, in order), then of each column's bytes.  Format 3 adds a varint
 * after the first start: bit i set when column i is packed, stored as
 * varint raw length + an lz.c block (the args and result columns, when
 * that is smaller); lengths and checksums are of the stored bytes.  Format
 * 4 lays the flags column out so that a common call fits one byte: bits
 * 0-1 outcome, 2 REC_HAS_ARGS, 3 REC_HAS_RESULT, 4-6 the capture, then
 * the other flags at their own bit positions shifted by 7.  Format 5 may
 * pack every column but start and duration the same way (the bookkeeping
 * columns repeat a byte call after call).  Format 6 adds a varint after
 * the packed columns' one: bit i set when packed column i (the args or
 * the result column) holds its calls' bytes shuffled before packing:
 * every call takes the same share of it (its raw length / n bytes), and
 * byte j of call k's share lies at j * n + k (values of one function laid
 * out alike call after call become runs of the same byte).  Format 1
 * (older tapes) is format 2 without the checksums; readers accept all
 * six. */
/* One call's bookkeeping fields as a builder keeps them until it
 * finishes: fixed width, so that adding a call stores them without a loop
 * or a check per field; seg_builder_finish encodes them a column at a
 * time. */
typedef struct seg_raw {
    int64_t id, parent, depth, thread, start, duration;
    uint64_t flags; /* the call's flags, and its outcome from SEG_RAW_OUTCOME_SHIFT */
} seg_raw;
#define SEG_RAW_OUTCOME_SHIFT 16

typedef struct seg_builder {
    size_t n;
    /* the calls' ranges, set by seg_builder_finish (from `raw`) */
    int64_t id_min, id_max, start_min, start_max, end_max, dur_min, dur_max;
    int64_t n_raised, total_dur, first_id, first_start;
    int64_t total_self; /* the sum of its calls' self_ns */
    size_t share[2];    /* bytes the first call added to the args, result column */
    unsigned uneven;    /* bit 0, 1: a call added another number of bytes there */
    wbuf col[10];       /* id .. flags: made by seg_builder_finish from `raw`;
                           extras and values: appended by seg_builder_add */
    wbuf raw;           /* each call's seg_raw, in add order */
    wbuf links;         /* seg_link rows, made by seg_builder_links */
} seg_builder;

/* The children index: which segments hold the children of a call.  The
 * parent ids of a segment's calls are grouped by their block of
 * SEG_LINK_SPAN ids (id / SEG_LINK_SPAN: no sorting, one pass), each group a
 * range [lo, hi] of the lowest and highest parent in it, with how many of
 * the calls name a parent in it and a bitmap of which ids of the range are
 * parents;
 * a range of one parent (lo == hi) counts that parent's children in the
 * segment exactly.  The calls without a parent (roots) make one range of
 * lo == hi == 0.  A store keeps one row per range, so "the segments with
 * children of P" is the rows whose lo lies in [P - SEG_LINK_SPAN, P],
 * whose hi is at least P and whose bitmap has P: a bounded range of an
 * index, whatever the tape's size, naming no segment without one. */
#define SEG_LINK_SPAN 4096
#define SEG_LINK_BYTES (SEG_LINK_SPAN / 8 + 1)
typedef struct seg_link {
    int64_t lo, hi, n;
    uint8_t parents[SEG_LINK_BYTES]; /* bit i % 8 of byte i / 8: id lo + i is a parent;
                                        (hi - lo) / 8 + 1 bytes are used */
} seg_link;

void seg_builder_init(seg_builder *s);
void seg_builder_free(seg_builder *s);
/* Empties the builder for reuse, keeping its memory. */
void seg_builder_reset(seg_builder *s);
/* seg_builder_add's part for a call with extras or values: appends them to
 * their columns and sets share[0] and share[1] to the bytes it added to
 * the args and the result column.  0, or -1 on allocation failure. */
int seg_builder_add_measures(seg_builder *s, const seg_call *c, size_t share[2]);

/* The flags field of a seg_raw: the call's flags and its outcome. */
static inline uint64_t seg_raw_flags(uint16_t flags, uint8_t outcome)
{
    return flags | (uint64_t)outcome << SEG_RAW_OUTCOME_SHIFT;
}

/* Adds one call from its bookkeeping fields `r`, its self time and the
 * bytes its values took in the args and the result column (where
 * seg_builder_add_measures put them; 0 and 0 for a call of timings only).
 * Returns 0, or -1 on allocation failure.  Inline: the writer adds every
 * call this way. */
static inline int seg_builder_put(seg_builder *s, seg_raw r, int64_t self_ns, size_t args_share,
                                  size_t result_share)
{
    if (wbuf_reserve(&s->raw, sizeof r) < 0)
        return -1;
    /* the bookkeeping fields as they are: seg_builder_finish encodes them */
    *(seg_raw *)(void *)(s->raw.data + s->raw.len) = r;
    s->raw.len += sizeof r;
    if (s->n == 0) {
        s->first_id = r.id;
        s->first_start = r.start;
        s->share[0] = args_share;
        s->share[1] = result_share;
    }
    s->uneven |= (unsigned)(args_share != s->share[0]) | (unsigned)(result_share != s->share[1])
                                                             << 1;
    s->n_raised += (r.flags >> SEG_RAW_OUTCOME_SHIFT) == OUTCOME_RAISED;
    s->total_dur += r.duration;
    s->total_self += self_ns;
    s->n++;
    return 0;
}

/* Adds one call (values copied).  Returns 0, or -1 on allocation failure. */
static inline int seg_builder_add(seg_builder *s, const seg_call *c)
{
    size_t share[2] = {0, 0};
    if (!rec_is_bare(c->flags) && seg_builder_add_measures(s, c, share) < 0)
        return -1;
    seg_raw r = {c->id,
                 c->parent,
                 c->depth,
                 c->thread,
                 c->start,
                 c->duration,
                 seg_raw_flags(c->flags, c->outcome)};
    return seg_builder_put(s, r, c->self_ns, share[0], share[1]);
}

/* Serializes the segment into `out` (appended), encoding its bookkeeping
 * columns and setting its ranges (id_min .. dur_max) from the calls'
 * seg_raw (again at each call: the same bytes each time) and packing its
 * columns with the compressor table `lz` (NULL: one of its own each time;
 * the bytes are the same).  Returns 0 or -1 on allocation failure. */
int seg_builder_finish(seg_builder *s, wbuf *out, lz_table *lz);
/* Makes the segment's children-index ranges (seg_link, ascending lo) in
 * s->links from the calls' parents.  Returns the number of ranges, or -1
 * on allocation failure. */
int64_t seg_builder_links(seg_builder *s);

typedef struct seg_reader {
    size_t n, i;
    wreader col[10];
    int64_t last_id, last_start;
    const uint8_t *crc;   /* format 2: the ten column checksums; NULL: format 1 */
    unsigned verified;    /* bit i: column i matched its checksum */
    unsigned packed;      /* bit i: column i is packed (format 3), until unpacked */
    unsigned shuffled;    /* bit i: packed column i is shuffled (format 6) */
    uint8_t format;       /* the segment's format byte */
    uint8_t *unpacked;    /* the unpacked columns, owned (seg_reader_close) */
    size_t unpack_at[10]; /* where in `unpacked` column i goes */
    size_t scratch_at;    /* where in `unpacked` a shuffled column is unpacked first */
} seg_reader;

/* Format 2 ends with this many CRC-32Cs; a reader checks them all. */
#define SEG_CHECKSUMS ((size_t)11)
#define SEG_ALL_COLUMNS 0x3ffu

/* Why a segment cannot be read: the negative returns of the seg_* readers
 * (every one is < 0, so callers may test `< 0`). */
enum seg_status {
    SEG_MALFORMED = -1, /* its bytes do not decode (format 1, or a writer bug) */
    SEG_CHECKSUM = -2,  /* its CRC-32C does not match: the bytes were damaged */
    SEG_NEWER = -3,     /* a format this engine does not know (newer, or damaged) */
    SEG_COUNT = -4,     /* its row in the tape counts another number of calls */
};

/* A phrase for a seg_status, to follow "segment N": "fails its checksum",
 * ...  Never NULL. */
const char *seg_strerror(int status);

/* Frees what the reader owns (the unpacked columns); the calls it
 * returned point into them, so close it after their last use. */
void seg_reader_close(seg_reader *r);
/* Hands the reader's unpacked columns (or NULL) to the caller, who frees
 * them with free() after the last use of the calls read. */
uint8_t *seg_reader_detach(seg_reader *r);

/* Opens the serialized segment `data` for iteration, verifying its
 * header's checksum (format 2); each column is verified before it is read
 * (seg_reader_next, seg_reader_any_within).  Returns 0, or a seg_status. */
int seg_reader_open(seg_reader *r, const uint8_t *data, size_t n);

/* Verifies the columns in the bit mask `columns` (bit i: column i, in the
 * order of the layout) not verified yet, and unpacks those of them that
 * are packed; must come before they are read.  Returns 0, SEG_CHECKSUM,
 * or SEG_MALFORMED (a packed column that does not unpack).  Format 1 has
 * nothing to verify. */
int seg_reader_verify(seg_reader *r, unsigned columns);
/* Returns 1 when some call of the serialized segment starts within
 * [since, until] and lasts within [min_duration, max_duration], 0 when none
 * does, a seg_status when the segment is damaged (the header and the two
 * columns it reads are verified first).  Reads only two columns: a cheap
 * test before decoding a segment whole. */
int seg_has_call_within(const uint8_t *data, size_t n, int64_t since, int64_t until,
                        int64_t min_duration, int64_t max_duration);
/* The same test on an open reader, for the calls it has not passed yet
 * (verifying the start and duration columns); the reader is not moved.
 * Returns 1, 0, SEG_CHECKSUM or SEG_MALFORMED. */
int seg_reader_any_within(seg_reader *r, int64_t since, int64_t until, int64_t min_duration,
                          int64_t max_duration);

/* Returns 1 when a call the open reader has not passed yet has the id
 * `id`, 0 when none has, SEG_CHECKSUM or SEG_MALFORMED; reads (and
 * verifies) the id column only, and does not move the reader: a cheap test
 * before decoding a segment whole. */
int seg_reader_has_id(seg_reader *r, int64_t id);

/* Decodes the next call into `c` (pointers into `data`).  Returns 1 for a
 * call, 0 at the end (every column then read to its end), SEG_MALFORMED
 * when the segment is corrupt. */
int seg_reader_next(seg_reader *r, seg_call *c);

/* Like seg_reader_next, for the next call that starts within [since, until]
 * and lasts within [min_duration, max_duration]: the calls before it are
 * passed over without being decoded whole.  Returns 1, 0 at the end,
 * SEG_MALFORMED when the segment is corrupt. */
int seg_reader_next_within(seg_reader *r, seg_call *c, int64_t since, int64_t until,
                           int64_t min_duration, int64_t max_duration);

/* ------------------------------------------------------------------------ */
/* The engine: producer buffer, writer thread, store.                       */
/* ------------------------------------------------------------------------ */

typedef struct engine engine;

/* Retention rules (retain.c): a rule is left out when -1 (retain_parse)
 * or 0 (a zeroed engine_options: no retention). */
typedef struct retain_policy {
    int64_t older_than_ns; /* sessions ended longer ago than this go */
    int64_t keep_sessions; /* the newest N stay, older ones go */
    int64_t max_bytes;     /* the oldest go while the tape is larger (store_size) */
} retain_policy;

/* Reads a size ("2GB", "500 MiB", "1.5gib", "4096": B, KB, MB, GB, TB in
 * powers of 1000, KiB ... TiB in powers of 1024, any case) into *bytes.
 * Returns 0, or -1 when it is not one. */
int retain_parse_size(const char *text, int64_t *bytes);

/* Reads an age ("30m", "12h", "7d", "2w", "45s", fractions allowed) into
 * *ns.  Returns 0, or -1 when it is not one. */
int retain_parse_age(const char *text, int64_t *ns);

/* Reads retention rules "older_than=7d,max_size=2GB,keep_sessions=10" (any
 * of them, at least one, each above 0) into `p`.  Returns 0, or -1 with one sentence in
 * `err` naming the part it could not read. */
int retain_parse(const char *text, retain_policy *p, char *err, size_t errlen);

typedef struct engine_options {
    const char *path;           /* the tape file */
    uint64_t flush_interval_ns; /* how often the writer commits (default 100 ms) */
    size_t chunk_bytes;         /* producer chunk size (default 1 MiB) */
    size_t max_buffer_bytes;    /* bound on queued bytes (default 64 MiB) */
    int on_full_drop;           /* 1: drop and count when full; 0: wait */
    /* session description, copied */
    const char *host;
    const char *python_version;
    const char *calltape_version;
    const uint8_t *argv; /* a wire LIST of STR */
    size_t argv_len;
    const char *sys_path0;  /* where the program found its modules: sys.path[0], absolute */
    const char *cwd;        /* its working folder */
    int64_t mpi_rank;       /* -1 when not under MPI */
    int64_t parent_session; /* the session of the nearest recording ancestor process, 0: none */
    int64_t clock_mono_ns;  /* a pair of readings taken together, used to */
    int64_t clock_wall_ns;  /* turn monotonic starts into wall times */
    retain_policy retain;   /* applied by the writer as it goes (store_prune); zeros: none */
} engine_options;

typedef struct engine_stats {
    uint64_t appended_records, appended_bytes;
    uint64_t written_calls, written_segments, written_bytes;
    uint64_t written_functions; /* functions with calls on the tape */
    uint64_t writer_cpu_ns;     /* CPU the writer thread used, as of its last round */
    uint64_t dropped_calls;     /* by on_full="drop" or a failing store */
    uint64_t write_errors;
    int64_t session_id;    /* 0 until the writer created the session */
    char last_error[1024]; /* "" when none */
} engine_stats;

enum engine_append_result {
    ENGINE_APPENDED = 0,
    ENGINE_DROPPED = 1, /* the record was not kept (counted) */
    ENGINE_FULL = 2,    /* not kept yet: engine_wait_room(), then append again */
};

/* Creates an engine for o->path.  The tape is opened (created with mode 0600
 * when missing) by the writer thread, which starts at the first append.
 * Returns the engine, or NULL with a message in `err` (allocation failure). */
engine *engine_new(const engine_options *o, char *err, size_t errlen);

/* Appends one record (length prefix included).  Never blocks on I/O nor
 * waits for the writer: when the buffer is full, on_full is "wait" and the
 * writer is healthy, a call record is not kept and ENGINE_FULL is returned.
 * Returns an engine_append_result. */
int engine_append(engine *e, const uint8_t *rec, size_t n);

/* After ENGINE_FULL for a record of `n` bytes: waits until the writer made
 * room for it, failed, stopped, or the engine was shut down (the next
 * engine_append then keeps or drops the record).  Meant to be called with
 * whatever serializes producers released (the GIL), so that other threads
 * run meanwhile; it touches no chunk.  engine_free() waits for the callers
 * to leave it. */
void engine_wait_room(engine *e, size_t n);

/* Starts the writer now (otherwise it starts at the first append) and
 * waits up to `timeout_ns` for it to open the tape and create this
 * process's session.  Returns the session id, or 0 when it was not created
 * in time or the tape cannot be written (the writer tries again at its next
 * rounds, as for any record).  Does not change what engine_flush reports. */
int64_t engine_begin(engine *e, uint64_t timeout_ns);

/* Waits until every record appended before the call is committed to the
 * tape, or `timeout_ns` passed.  Returns 0 when committed, 1 on timeout, -1
 * when the store is failing or calls were lost since the previous flush
 * (see engine_stats). */
int engine_flush(engine *e, uint64_t timeout_ns);

/* Fills `out`.  Safe from any thread. */
void engine_get_stats(engine *e, engine_stats *out);

/* Returns and clears the number of store errors not yet reported by the
 * caller, copying the latest message into `msg`. */
uint64_t engine_take_errors(engine *e, char *msg, size_t msglen);

/* Flushes (waiting at most `timeout_ns`), stops the writer, copies the
 * write-ahead log into the tape file (store_checkpoint) and closes the
 * tape; later appends are dropped and counted.  The engine stays valid, so a
 * late producer (a daemon thread at exit) never touches freed memory. */
void engine_shutdown(engine *e, uint64_t timeout_ns);

/* Shuts down every engine of the process not freed yet; the engine calls
 * it itself at process exit (atexit), so engines nobody freed write their
 * last calls.  Waits at most `timeout_ns` for each. */
void engine_shutdown_all(uint64_t timeout_ns);

/* Counts `n` calls the producer could not record (made too late, after
 * recording ended): they go onto the session row with the next commit.
 * Safe from any thread. */
void engine_count_dropped(engine *e, uint64_t n);

/* Shuts down (if not yet) and frees `e`.  No producer may use it after. */
void engine_free(engine *e);

/* fork() support is automatic (pthread_atfork): before fork the writer is
 * brought between transactions and its store closed; the child
 * drops what the parent had not written, gets a new session whose parent is
 * the old one (or, when the parent had none on this tape, the parent's own
 * parent_session), and starts its own writer at its first append.  A
 * binding that can run code before fork() calls engine_pause first, so
 * that nothing is left unwritten and no writer thread exists.  The caller
 * tells the child's engine the first seq it will use: parent links below it
 * name calls of the parent session and are not resolved. */
void engine_set_seq_floor(engine *e, uint64_t seq_floor);

/* What engine_final_round() runs after the final round. */
typedef void (*engine_final_fn)(void);

/* For a signal handler (async-signal-safe; any thread; never waits): asks
 * every running writer, of every engine, for a final round writing what was
 * appended before the call.  Returns 1 when a writer runs: the first writer
 * to answer then waits up to `timeout_ns` for each other engine's flush and
 * calls `then` in its own thread, every signal blocked (`then` is expected
 * to end the process; if it returns, recording goes on).  Returns 0 when no
 * writer runs, so nothing appended is unwritten: the caller does what
 * follows itself.  Engines freed while a handler runs are not supported
 * (engines live until the interpreter ends).  A fork child is not asked. */
int engine_final_round(engine_final_fn then, uint64_t timeout_ns);

/* Flushes, stops the writer, checkpoints and closes the tape, keeping the
 * engine usable: the next append starts a writer again (producers that
 * append meanwhile wait for the stop, never drop).  Safe with producers
 * running; call engine_trim afterwards.  For tapes no longer in use. */
void engine_park(engine *e, uint64_t timeout_ns);

/* After engine_park, called as the producer (no append may run at the same
 * time; under the GIL): frees the buffers of a parked engine, or starts its
 * writer again when calls were appended while it stopped. */
void engine_trim(engine *e);

/* Before a fork: waits up to `timeout_ns` until everything appended is
 * written, then stops the writer and closes the tape (a session is created
 * first if the engine has a writer).  No writer starts again until fork()
 * ends (appends meanwhile are buffered, up to max_buffer_bytes); then the
 * next append, in the parent or the child, starts one.  Does not change
 * what engine_flush reports.
 * The caller keeps producers out (holds the lock they append under). */
void engine_pause(engine *e, uint64_t timeout_ns);

/* The tape path the engine writes. */
const char *engine_path(const engine *e);

/* The wall time (ns since the epoch) that the tape stores as the start of
 * a call whose monotonic start is `mono_ns`: the writer's own conversion. */
int64_t engine_wall_ns(const engine *e, uint64_t mono_ns);

/* The UUID of a call (uuid.c): version 8 (RFC 9562), its 122 free bits a
 * MurmurHash3 of the recording process's pid, the call's process-local
 * thread index and its start on the tape (wall ns), which together name one
 * call (@record and @timer keep a thread's starts strictly increasing).
 * Written as 36 characters and a NUL into `out`. */
void call_uuid(int64_t pid, uint64_t thread_index, int64_t start_wall_ns, char out[37]);

/* ------------------------------------------------------------------------ */
/* Search (query.c).                                                        */
/* ------------------------------------------------------------------------ */

/* A session's calls that start within [since, until] (wall ns). */
typedef struct query_span {
    int64_t session, since, until;
} query_span;

typedef struct query_filter {
    const int64_t *functions; /* tape function ids; none: every function */
    size_t nfunctions;
    int64_t session;                    /* 0: any */
    int64_t thread;                     /* process-local thread index, -1: any */
    int64_t since, until;               /* wall ns, inclusive */
    int64_t min_duration, max_duration; /* ns, inclusive */
    int outcome;                        /* an rec_outcome, -1: any */
    int capture;                        /* an rec_capture; CAPTURE_UNKNOWN (0): any */
    int newest_first;
    int any_order;     /* segment by segment (each one's calls in start order), not merged
                          into one order: no heap, memory one segment's calls */
    int64_t limit;     /* -1: no limit */
    int energy_bounds; /* QUERY_MAX_PKG | QUERY_MAX_DRAM, 0: none */
    int64_t max_energy_pkg, max_energy_dram; /* uJ, inclusive; calls without the
                                                reading never match a bound on it */
    const int64_t *sessions; /* any of these sessions (with `session` 0); none: any */
    size_t nsessions;
    int64_t parent;          /* 0: any; > 0: only the children of that call (give its
                                session too); < 0: only the roots of session -parent */
    int64_t parent_end;      /* with parent > 0: its end, wall ns (INT64_MAX: unknown) */
    const query_span *spans; /* only calls within one of these spans (a test's time in
                                its session), besides every other bound; none: any */
    size_t nspans;
} query_filter;

enum query_energy_bound { QUERY_MAX_PKG = 1, QUERY_MAX_DRAM = 2 };

typedef struct query query;
typedef struct store store;         /* store.h */
typedef struct store_err store_err; /* store.h */

/* Prepares a search of `sto` (copied filter, spans included): opens the
 * store's listing of the segments the filter needs, which it reads from
 * the first query_next on.  With spans, the listing is of their sessions
 * and the time they cover together, and a listed segment that overlaps
 * none of its session's spans is passed over unread.  Returns NULL with a message in `err` when the
 * store refuses.  The store must outlive the query. */
query *query_open(store *sto, const query_filter *f, char *err, size_t errlen);

/* Returns 1 with the next call in `out` (its byte ranges valid until the
 * next query_next or query_close) and its session and function ids, 0 at
 * the end, -1 on error (query_error). */
int query_next(query *q, seg_call *out, int64_t *session, int64_t *function);

/* Counts the calls `q` would return, limit aside, without returning them;
 * for a query query_next was never called on (it is used up after).  A
 * segment the children index counts exactly, whose zone map holds every
 * other bound, is counted without being read.  Returns 0 with *n set, or
 * -1 on error (query_error). */
int query_count(query *q, int64_t *n);

/* The message of the last error. */
const char *query_error(const query *q);

/* After an error: 1 when it was a damaged segment (its id, its function's
 * tape id and the seg_status in the out parameters), 0 otherwise
 * (query_error_store tells what failed). */
int query_error_segment(const query *q, int64_t *segment, int64_t *function, int *status);

/* After an error that was not a damaged segment: its kind and phrase as a
 * store_err (STORE_DAMAGED also for a listing that disagrees with the
 * function table or names a missing segment; STORE_NOMEM for memory).
 * Never NULL; valid until the next query_next or query_close. */
const store_err *query_error_store(const query *q);

void query_close(query *q);

#endif
