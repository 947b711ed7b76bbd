/*
 * writer.c - the writer thread: takes published records from the producer
 * chunks, turns them into columnar segments and commits them to the tape in
 * one transaction per wake-up (at most one flush interval apart).
 *
 * Invariants:
 *   - only the writer thread (or a thread holding io_mu while the writer is
 *     idle) touches `e->w` and the SQLite connection;
 *   - call ids are a function of (session, seq): seqs are grouped in blocks
 *     of ID_BLOCK and each block gets ID_BLOCK consecutive tape-wide ids, so
 *     a child written before its parent can still name the parent's id;
 *   - a failed transaction is rolled back whole and everything resolved
 *     inside it is resolved again; on a file the calls it held are counted
 *     as dropped; on a server (w->server, not spooling) the round goes on
 *     onto the spool (spool_take_over), which is exact because until the
 *     commit the round keeps what it wrote: the builders of its segments
 *     (w->held), its spans (pointers into chunks that outlive the round),
 *     and copies of the values it put (w->kept, until no builder holds a
 *     call naming one), while its call ids stay reserved (w->id_blocks);
 *     a call is taken again only when the failure came before it reached a
 *     builder, and self time is counted only once it did;
 *   - when the tape cannot be opened the writer keeps draining (and
 *     counting) so producers never block on a broken store.
 */
#include "engine_impl.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ID_BLOCK WRITER_ID_BLOCK
#define SEG_MAX_CALLS 4096
#define MAX_FREE_CHUNKS 4
#define REOPEN_EVERY_NS 1000000000ull
#define RATE_MIN_BYTES (1u << 20) /* rounds that measure the writer's rate */
#define RETAIN_EVERY 50           /* flush intervals between retention rounds */
typedef writer_txn txn;

void writer_error(engine *e, const char *msg)
{
    pthread_mutex_lock(&e->mu);
    if (strcmp(e->last_error, msg) != 0 || !e->store_failing)
        e->unreported_errors++;
    snprintf(e->last_error, sizeof e->last_error, "%s", msg);
    e->write_errors++;
    pthread_mutex_unlock(&e->mu);
}

/* A message to report that is no loss (the spool): counted in no error. */
void writer_notice(engine *e, const char *msg)
{
    pthread_mutex_lock(&e->mu);
    e->unreported_errors++;
    snprintf(e->last_error, sizeof e->last_error, "%s", msg);
    pthread_mutex_unlock(&e->mu);
}

void writer_close_store(engine *e)
{
    store_close(e->w.store);
    e->w.store = NULL;
}

/* Opens the tape (or the spool) when the writer has it closed.  Returns
 * 0 or -1 (reported). */
static int open_store(engine *e)
{
    writer_state *w = &e->w;
    const char *path = w->spooling ? w->spool_path : e->path;
    uint64_t now = engine_now_ns(CLOCK_MONOTONIC);
    if (w->last_open_try_ns && now - w->last_open_try_ns < REOPEN_EVERY_NS)
        return -1;
    w->last_open_try_ns = now;
    char err[300];
    if (!w->spooling && w->server && engine_exiting()) {
        writer_error(e, "the process is exiting: no new connection to the server");
        return -1; /* the spool takes the last rounds */
    }
    w->store = store_open_write(path, err, sizeof err);
    if (!w->store) {
        writer_error(e, err);
        return -1;
    }
    if (!w->spooling)
        w->drain_due = w->server; /* it answers: spools left behind can go */
    uint64_t dev = 0, ino = 0;
    store_file_id(w->store, &dev, &ino);
    if (w->session_id && (dev != w->file_dev || ino != w->file_ino))
        writer_tape_lost(e); /* replaced while the writer had it closed (a park, a fork) */
    return 0;
}

int writer_ensure_store(engine *e)
{
    writer_state *w = &e->w;
    const char *path = w->spooling ? w->spool_path : e->path;
    if (w->store && !store_same_file(w->store, path)) {
        writer_close_store(e);
        writer_tape_lost(e);
    }
    if (w->store && w->session_id)
        return 0;
    if (!w->store && open_store(e) < 0)
        return -1;
    if (w->session_id == 0) {
        store_session ss = {
            .start_ns =
                w->parent_session ? (int64_t)engine_now_ns(CLOCK_REALTIME) : e->opt.clock_wall_ns,
            .host = e->host,
            .python_version = e->python_version,
            .calltape_version = e->calltape_version,
            .argv = e->argv,
            .argv_len = e->opt.argv_len,
            .sys_path0 = e->sys_path0,
            .cwd = e->cwd,
            .pid = getpid(),
            .ppid = getppid(),
            .parent_session = w->parent_session,
            .mpi_rank = e->opt.mpi_rank,
        };
        int64_t id = 0;
        if (store_begin(w->store) < 0 || store_add_session(w->store, &ss, &id) < 0 ||
            store_commit(w->store) < 0) {
            writer_error(e, store_errmsg(w->store));
            store_rollback(w->store);
            writer_close_store(e);
            return -1;
        }
        pthread_mutex_lock(&e->mu);
        w->session_id = id;
        w->written_before_open = e->written_calls;
        pthread_mutex_unlock(&e->mu);
        store_file_id(w->store, &w->file_dev, &w->file_ino);
    }
    w->last_open_try_ns = 0; /* only failures are throttled */
    pthread_mutex_lock(&e->mu);
    e->store_failing = 0;
    pthread_mutex_unlock(&e->mu);
    return 0;
}

static int grow(void **arr, size_t *n, size_t want, size_t elem)
{
    if (want <= *n)
        return 0;
    size_t cap = *n ? *n : 16;
    while (cap < want)
        cap *= 2;
    void *p = realloc(*arr, cap * elem);
    if (!p)
        return -1;
    memset((char *)p + *n * elem, 0, (cap - *n) * elem);
    *arr = p;
    *n = cap;
    return 0;
}

static uint8_t *copy_bytes(const uint8_t *p, size_t n)
{
    uint8_t *c = malloc(n ? n : 1);
    if (c && n)
        memcpy(c, p, n);
    return c;
}

/* Records a definition (function or thread) body; returns 0 or -1. */
static int define(uint8_t **slot_bytes, size_t *slot_len, const uint8_t *body, size_t n)
{
    if (*slot_bytes && *slot_len == n && memcmp(*slot_bytes, body, n) == 0)
        return 0;
    uint8_t *c = copy_bytes(body, n);
    if (!c)
        return -1;
    free(*slot_bytes);
    *slot_bytes = c;
    *slot_len = n;
    return 1;
}

static int resolve_function(engine *e, fn_def *f)
{
    wreader r;
    wreader_init(&r, f->bytes, f->len);
    wreader_byte(&r);   /* kind */
    wreader_varint(&r); /* fn */
    uint64_t n1 = wreader_varint(&r);
    const char *module = (const char *)wreader_take(&r, n1);
    uint64_t n2 = wreader_varint(&r);
    const char *qualname = (const char *)wreader_take(&r, n2);
    uint64_t n3 = wreader_varint(&r);
    const char *file = (const char *)wreader_take(&r, n3);
    int64_t line = (int64_t)wreader_varint(&r);
    uint64_t n4 = wreader_varint(&r);
    const uint8_t *sig = wreader_take(&r, n4);
    if (r.bad) {
        writer_error(e, "malformed function record");
        return -1;
    }
    return store_function(e->w.store, module, (size_t)n1, qualname, (size_t)n2, file, (size_t)n3,
                          line, sig, (size_t)n4, &f->tape_id);
}

static int store_thread(engine *e, thread_def *t, int64_t idx)
{
    wreader r;
    wreader_init(&r, t->bytes, t->len);
    wreader_byte(&r);
    wreader_varint(&r);
    int64_t ident = (int64_t)wreader_varint(&r);
    int64_t native = (int64_t)wreader_varint(&r);
    uint64_t n = wreader_varint(&r);
    const char *name = (const char *)wreader_take(&r, n);
    if (r.bad)
        return -1;
    if (store_add_thread(e->w.store, e->w.session_id, idx, ident, native, name, (size_t)n) < 0)
        return -1;
    t->stored = 1;
    return 0;
}

/* Maps a seq to its tape-wide call id in a block not taken yet: reserves
 * the block.  0, or -1 when the store failed. */
static int seq_to_new_id(engine *e, txn *t, uint64_t seq, int64_t *id)
{
    writer_state *w = &e->w;
    size_t block = (size_t)(seq / ID_BLOCK);
    size_t have = w->nblocks;
    if (grow((void **)&w->id_blocks, &have, block + 1, sizeof(int64_t)) < 0)
        return -1;
    w->nblocks = have;
    if (!w->id_blocks[block]) {
        int64_t first = 0;
        if (store_reserve_ids(w->store, ID_BLOCK, &first) < 0)
            return -1;
        size_t cap = t->capblocks;
        if (grow((void **)&t->blocks, &cap, t->nblocks + 1, sizeof(size_t)) < 0)
            return -1;
        t->capblocks = cap;
        t->blocks[t->nblocks++] = block;
        w->id_blocks[block] = first;
    }
    *id = w->id_blocks[block] + (int64_t)(seq % ID_BLOCK);
    return 0;
}

/* Maps a seq to its tape-wide call id, reserving its block if needed: a
 * block already taken (most calls) without a call.  0, or -1. */
static inline int seq_to_id(engine *e, txn *t, uint64_t seq, int64_t *id)
{
    const writer_state *w = &e->w;
    size_t block = (size_t)(seq / ID_BLOCK);
    if (block < w->nblocks && w->id_blocks[block]) {
        *id = w->id_blocks[block] + (int64_t)(seq % ID_BLOCK);
        return 0;
    }
    return seq_to_new_id(e, t, seq, id);
}

static int take_context(engine *e, txn *t, const uint8_t *body, size_t n);

/* 1 while the writer is on a server tape: a failed round then moves onto
 * the spool, so it keeps what it wrote until it commits. */
static int keeps(const writer_state *w)
{
    return w->server && !w->spooling;
}

/* Copies `n` bytes of consecutive values to `out`, moving every top-level
 * BLOB_INLINE (also under DEFAULT) into the blob store (the producer
 * flagged the call REC_HAS_BLOBS; without it the values are not walked at
 * all).  Returns the bytes to store (`p` itself when nothing moved) or
 * NULL on error. */
static const uint8_t *externalize(engine *e, const uint8_t *p, size_t n, wbuf *out, size_t *outn)
{
    const uint8_t *end = p + n;
    *outn = n;
    int any = 0;
    for (const uint8_t *q = p; q < end;) {
        const uint8_t *v = (*q == WIRE_DEFAULT) ? q + 1 : q;
        if (v < end && *v == WIRE_BLOB_INLINE)
            any = 1;
        q = wire_skip(q, end);
        if (!q)
            return p; /* malformed values are stored as they are */
    }
    *outn = n;
    if (!any)
        return p;
    out->len = 0;
    for (const uint8_t *q = p; q < end;) {
        const uint8_t *next = wire_skip(q, end);
        const uint8_t *v = q;
        if (*v == WIRE_DEFAULT) {
            wbuf_byte(out, WIRE_DEFAULT);
            v++;
        }
        if (*v == WIRE_BLOB_INLINE) {
            wreader r;
            wreader_init(&r, v + 1, (size_t)(next - v - 1));
            uint64_t len = wreader_varint(&r);
            const uint8_t *inner = wreader_take(&r, len);
            uint8_t h[WIRE_HASH_BYTES];
            hash128(inner, (size_t)len, h);
            if (store_put_blob(e->w.store, h, inner, (size_t)len) < 0 ||
                (keeps(&e->w) && spool_keep_blob(&e->w, h, inner, (size_t)len) < 0))
                return NULL;
            wbuf_byte(out, WIRE_BLOB);
            wbuf_put(out, h, WIRE_HASH_BYTES);
            wbuf_varint(out, len);
        } else {
            wbuf_put(out, v, (size_t)(next - v));
        }
        q = next;
    }
    *outn = out->len;
    return out->failed ? NULL : out->data;
}

/* Adds the builder `b` of function `f` as a segment to the open
 * transaction, counted in `t`.  Returns 0 or -1. */
static int add_segment(engine *e, txn *t, fn_def *f, seg_builder *b)
{
    writer_state *w = &e->w;
    if (!f->tape_id && resolve_function(e, f) < 0) /* filled before a switch of store */
        return -1;
    w->segment.len = 0;
    if (seg_builder_finish(b, &w->segment, &w->lz) < 0 || seg_builder_links(b) < 0 ||
        store_add_segment(w->store, w->session_id, f->tape_id, b, w->segment.data, w->segment.len) <
            0)
        return -1;
    t->calls += b->n;
    t->segments++;
    if (!f->written && !f->in_txn) {
        f->in_txn = 1;
        t->functions++;
    }
    t->bytes += w->segment.len;
    return 0;
}

int writer_write_segment(engine *e, txn *t, fn_def *f)
{
    writer_state *w = &e->w;
    if (!f->seg.n)
        return 0;
    if (add_segment(e, t, f, &f->seg) < 0)
        return -1;
    if (!keeps(w))
        seg_builder_reset(&f->seg);
    else if (spool_hold(w, (size_t)(f - w->fns)) < 0)
        return -1; /* the transaction fails: the builder still has its calls */
    return 0;
}

int writer_replay(engine *e, txn *t)
{
    writer_state *w = &e->w;
    if (!t) {
        for (size_t i = 0; i < w->nkept; i++)
            if (store_put_blob(w->store, w->kept[i].hash, w->kept[i].data, w->kept[i].len) < 0)
                return -1;
        for (size_t i = 0; i < w->nthreads; i++)
            if (w->threads[i].bytes && !w->threads[i].stored &&
                store_thread(e, &w->threads[i], (int64_t)i) < 0)
                return -1;
        return 0;
    }
    t->calls = t->segments = t->bytes = t->functions = 0;
    for (size_t i = 0; i < w->nfns; i++)
        w->fns[i].in_txn = 0;
    for (size_t i = 0; i < t->nspans; i++)
        if (take_context(e, t, t->spans[i].p, t->spans[i].len) < 0)
            return -1;
    for (size_t i = 0; i < w->nheld; i++)
        if (add_segment(e, t, &w->fns[w->held[i].fn], &w->held[i].seg) < 0)
            return -1;
    return 0;
}

/* What take_call did when it failed. */
enum {
    TAKE_AGAIN = -1, /* the store failed before the call reached a builder: nothing
                        of it is counted, it may be taken again (onto the spool) */
    TAKE_KEPT = -2,  /* the call is in its builder; writing that segment failed */
    TAKE_LOST = -3,  /* memory ran out: the call is lost, counted as dropped */
};

/* The values of `c` as the builder stores them (into s->value): the
 * record's own bytes, or, when the producer flagged inline blobs, copies
 * with the blobs moved into the blob store (the args into the writer's
 * scratch, the others into `scratch`, which the caller frees).  0, or -1
 * when the store failed. */
static int take_values(engine *e, const call_rec *c, seg_call *s, wbuf scratch[VALUE_NSLOTS])
{
    int blobs = (c->flags & REC_HAS_BLOBS) != 0;
#pragma GCC unroll 8 /* one copy per slot: flags and columns are constants */
    for (int i = 0; i < VALUE_NSLOTS; i++) {
        s->value[i] = c->value[i];
        if (blobs && (c->flags & value_flag((enum value_slot)i))) {
            wbuf *out = i == VALUE_ARGS ? &e->w.scratch : &scratch[i];
            s->value[i].data =
                externalize(e, c->value[i].data, c->value[i].len, out, &s->value[i].len);
            if (!s->value[i].data)
                return -1;
        }
    }
    return 0;
}

/* Copies the measures of `c` (flagged REC_HAS_EXTRAS, so parsed) to `s`.
 * Out of line: most calls have none. */
static __attribute__((noinline)) void take_extras(seg_call *s, const call_rec *c)
{
    s->cpu_ns = (int64_t)c->cpu_ns;
    s->rss_before = (int64_t)c->rss_before;
    s->rss_after = (int64_t)c->rss_after;
    s->rss_peak = (int64_t)c->rss_peak;
    s->energy_pkg = (int64_t)c->energy_pkg;
    s->energy_dram = (int64_t)c->energy_dram;
}

/* Stores what call `seq` (child of `parent`, 0: none) of `f` on thread
 * `thread` needs before it reaches a builder: its function and thread
 * rows, and its id and its parent's (0 when the parent is older than the
 * tape's seq floor or none).  0, or -1 when the store failed. */
static inline int take_ids(engine *e, txn *t, fn_def *f, uint64_t thread, uint64_t seq,
                           uint64_t parent, int64_t *id, int64_t *parent_id)
{
    writer_state *w = &e->w;
    *parent_id = 0;
    return (!f->tape_id && resolve_function(e, f) < 0) ||
                   (thread < w->nthreads && w->threads[thread].bytes &&
                    !w->threads[thread].stored &&
                    store_thread(e, &w->threads[thread], (int64_t)thread) < 0) ||
                   seq_to_id(e, t, seq, id) < 0 ||
                   (parent && parent >= w->seq_floor && seq_to_id(e, t, parent, parent_id) < 0)
               ? -1
               : 0;
}

/* The self time of call `seq` of `duration` ns: its recorded children's
 * taken out of the table, and its own added for its parent (children end,
 * and reach the writer, before their parent).  Once per call, when
 * nothing can fail before it reaches its builder. */
static inline int64_t take_self(writer_state *w, uint64_t seq, uint64_t parent, int64_t duration)
{
    int64_t kids = selftime_take(&w->kids, seq);
    if (parent)
        selftime_add(&w->kids, parent, duration);
    return duration > kids ? duration - kids : 0;
}

/* After a call reached `f`'s builder: writes the segment once full.  0,
 * or TAKE_KEPT when that failed. */
static inline int took(engine *e, txn *t, fn_def *f, int64_t start)
{
    /* from here on the call is in the builder, counted by after_rollback */
    if (start < t->first_start)
        t->first_start = start;
    if (f->seg.n >= SEG_MAX_CALLS && writer_write_segment(e, t, f) < 0)
        return TAKE_KEPT;
    return 0;
}

/* take_call for a bare head (timings only: most calls), from the head to
 * the builder without a parsed record.  Returns 0 or a TAKE_ code. */
static inline int take_bare(engine *e, txn *t, const call_head *h)
{
    writer_state *w = &e->w;
    if (h->fn >= w->nfns || !w->fns[h->fn].bytes) {
        t->dropped++;
        return 0;
    }
    fn_def *f = &w->fns[h->fn];
    seg_raw r = {0,
                 0,
                 (int64_t)h->depth,
                 (int64_t)h->thread,
                 engine_wall_of(e, h->start),
                 (int64_t)h->duration,
                 seg_raw_flags(h->flags, h->outcome)};
    if (take_ids(e, t, f, h->thread, h->seq, h->parent, &r.id, &r.parent) < 0)
        return TAKE_AGAIN; /* not in a builder: after_rollback does not see it */
    if (seg_builder_put(&f->seg, r, take_self(w, h->seq, h->parent, r.duration), 0, 0) < 0) {
        t->dropped++;
        return TAKE_LOST;
    }
    return took(e, t, f, r.start);
}

/* Takes one REC_CALL body into its function's builder (self time counted
 * only once every store step succeeded).  Returns 0 or a TAKE_ code. */
__attribute__((always_inline)) static inline int take_call(engine *e, txn *t, const uint8_t *body,
                                                           size_t n)
{
    writer_state *w = &e->w;
    if (n == REC_CALL_HEAD) {
        call_head h = rec_call_head(body);
        if (rec_is_bare(h.flags))
            return take_bare(e, t, &h);
    }
    call_rec c;
    if (rec_parse_call(body, n, &c) < 0 || c.fn >= w->nfns || !w->fns[c.fn].bytes) {
        t->dropped++;
        return 0;
    }
    fn_def *f = &w->fns[c.fn];
    seg_call s; /* the head's fields set below; the extras and values only when flagged */
    s.depth = (int64_t)c.depth;
    s.thread = (int64_t)c.thread;
    s.start = engine_wall_of(e, c.start);
    s.duration = (int64_t)c.duration;
    s.outcome = c.outcome;
    s.flags = c.flags;
    if (c.flags & REC_HAS_EXTRAS)
        take_extras(&s, &c);
    s.self_ns = 0;
    if (take_ids(e, t, f, c.thread, c.seq, c.parent, &s.id, &s.parent) < 0)
        return TAKE_AGAIN;      /* not in a builder: after_rollback does not see it */
    wbuf scratch[VALUE_NSLOTS]; /* slot 0 unused: the args use the writer's own */
    if (c.flags & REC_HAS_BLOBS) {
#pragma GCC unroll 8
        for (int i = 1; i < VALUE_NSLOTS; i++)
            wbuf_init(&scratch[i], NULL, 0);
    }
    int rc = c.flags & REC_HAS_VALUES ? take_values(e, &c, &s, scratch) : 0;
    int again = rc < 0;
    if (rc == 0) {
        s.self_ns = take_self(w, c.seq, c.parent, s.duration);
        rc = seg_builder_add(&f->seg, &s);
    }
    if (c.flags & REC_HAS_BLOBS) {
#pragma GCC unroll 8
        for (int i = 1; i < VALUE_NSLOTS; i++)
            wbuf_free(&scratch[i]);
    }
    if (rc < 0) {
        if (again)
            return TAKE_AGAIN;
        t->dropped++;
        return TAKE_LOST;
    }
    return took(e, t, f, s.start);
}

/* Writes the span of a REC_CONTEXT body (`n` bytes at `body`) into the
 * transaction, its monotonic times made wall times as the calls' are.  A
 * malformed record is passed over.  Returns 0, or -1 when the store
 * failed. */
static int take_context(engine *e, txn *t, const uint8_t *body, size_t n)
{
    context_rec c;
    if (rec_parse_context(body, n, &c) < 0)
        return 0;
    store_context row = {
        .session = e->w.session_id,
        .id = (int64_t)c.id,
        .start_ns = engine_wall_of(e, c.start),
        .end_ns = c.end ? engine_wall_of(e, c.end) : STORE_NONE,
        .kind = {c.kind, c.kind_len},
        .name = {c.name, c.name_len},
    };
    if (store_add_context(e->w.store, &row) < 0)
        return -1;
    if (!keeps(&e->w))
        return 0;
    size_t cap = t->capspans; /* kept for the spool, should the round fail */
    if (grow((void **)&t->spans, &cap, t->nspans + 1, sizeof(kept_span)) < 0)
        return -1;
    t->capspans = cap;
    t->spans[t->nspans++] = (kept_span){body, n};
    return 0;
}

/* A round that failed on a server after it began goes on onto the spool
 * (spool_take_over).  Returns 1 when it did (a spool transaction holds all
 * the round had; the rest of it goes there too), 0 when it cannot (on a
 * file or the spool, no spool to be had: the round is dropped, counted). */
static int fail_over(engine *e, txn *t, int uncertain)
{
    writer_state *w = &e->w;
    if (!keeps(w) || !w->store)
        return 0;
    char why[300];
    snprintf(why, sizeof why, "%s", store_errmsg(w->store));
    store_rollback(w->store);
    if (spool_take_over(e, t, uncertain) == 0)
        return 1;
    writer_error(e, why);
    return 0;
}

/* Consumes `n` bytes of whole records.  While *ok, calls go into the
 * transaction; once the store failed (*ok cleared here or before), calls
 * are only counted as dropped (spans are lost), but definitions of
 * functions and threads are still kept, so that the calls after an outage
 * find them. */
static void consume(engine *e, txn *t, const uint8_t *p, size_t n, int *ok)
{
    writer_state *w = &e->w;
    wreader r;
    wreader_init(&r, p, n);
    while (r.p < r.end) {
        uint64_t len = wreader_varint(&r);
        const uint8_t *body = wreader_take(&r, len);
        if (!body || !len)
            return;                /* cannot happen with whole records; stop rather than guess */
        if (body[0] == REC_CALL) { /* most records: before the switch */
            /* one call site, so that take_call is inlined; a second pass
             * only after the round moved onto the spool (once at most) */
            int rc = TAKE_AGAIN;
            while (*ok) {
                rc = take_call(e, t, body + 1, (size_t)len - 1);
                if ((rc != TAKE_AGAIN && rc != TAKE_KEPT) || !fail_over(e, t, 0))
                    break;
                if (rc == TAKE_KEPT) {
                    rc = 0; /* its builder is written onto the spool later */
                    break;
                }
            }
            if (rc == TAKE_AGAIN)
                t->dropped++;
            if (rc < 0)
                *ok = 0;
            continue;
        }
        wreader b;
        wreader_init(&b, body + 1, (size_t)len - 1);
        switch (body[0]) {
        case REC_FUNCTION: {
            uint64_t fn = wreader_varint(&b);
            size_t have = w->nfns;
            if (b.bad || grow((void **)&w->fns, &have, (size_t)fn + 1, sizeof(fn_def)) < 0)
                break;
            w->nfns = have;
            fn_def *f = &w->fns[fn];
            if (!f->bytes)
                seg_builder_init(&f->seg);
            int changed = define(&f->bytes, &f->len, body, (size_t)len);
            if (changed > 0 && f->seg.n) {
                if (*ok && writer_write_segment(e, t, f) < 0 &&
                    (!fail_over(e, t, 0) || writer_write_segment(e, t, f) < 0)) {
                    *ok = 0; /* the builder keeps them: after_rollback counts them */
                } else if (!*ok) {
                    t->dropped += f->seg.n;
                    seg_builder_reset(&f->seg);
                }
            }
            if (changed > 0)
                f->tape_id = 0;
            break;
        }
        case REC_THREAD: {
            uint64_t idx = wreader_varint(&b);
            size_t have = w->nthreads;
            if (b.bad || grow((void **)&w->threads, &have, (size_t)idx + 1, sizeof(thread_def)) < 0)
                break;
            w->nthreads = have;
            if (define(&w->threads[idx].bytes, &w->threads[idx].len, body, (size_t)len) > 0)
                w->threads[idx].stored = 0;
            break;
        }
        case REC_COUNTERS:
            for (int i = 0; i < 5; i++)
                w->counters[i] += (int64_t)wreader_varint(&b);
            break;
        case REC_CONTEXT:
            if (*ok && take_context(e, t, body + 1, (size_t)len - 1) < 0 &&
                (!fail_over(e, t, 0) || take_context(e, t, body + 1, (size_t)len - 1) < 0))
                *ok = 0;
            break;
        default:
            break;
        }
    }
}

/* Forgets everything resolved in a failed transaction and drops the calls
 * held in segment builders. */
static void after_rollback(engine *e, txn *t)
{
    writer_state *w = &e->w;
    for (size_t i = 0; i < w->nfns; i++) {
        w->fns[i].tape_id = 0;
        t->dropped += w->fns[i].seg.n;
        if (w->fns[i].bytes)
            seg_builder_reset(&w->fns[i].seg);
    }
    for (size_t i = 0; i < w->nthreads; i++)
        w->threads[i].stored = 0;
    for (size_t i = 0; i < w->nfns; i++)
        w->fns[i].in_txn = 0;
    t->functions = 0;
    for (size_t i = 0; i < t->nblocks; i++)
        w->id_blocks[t->blocks[i]] = 0;
    spool_release_held(w); /* their calls are in t->calls */
    spool_forget_kept(w, 1);
    t->nspans = 0;
}

/* Takes the published bytes of one chunk: into the transaction while
 * `ok`, else only their definitions (calls counted as dropped). */
static void take_chunk(engine *e, txn *t, chunk *c, int *ok)
{
    size_t committed = atomic_load_explicit(&c->committed, memory_order_acquire);
    if (committed <= c->consumed)
        return;
    const uint8_t *p = c->data + c->consumed;
    size_t n = committed - c->consumed;
    c->consumed = committed;
    t->taken += n;
    consume(e, t, p, n, ok);
}

int writer_commit_round(engine *e, txn *t)
{
    writer_state *w = &e->w;
    t->end_ns = (int64_t)engine_now_ns(CLOCK_REALTIME);
    if (t->end_ns <= w->last_end_ns) /* the clock went back: still later on the row */
        t->end_ns = w->last_end_ns + 1;
    w->last_end_ns = t->end_ns;
    /* calls dropped so far (by producers or by failed rounds) go onto the
     * session row with this commit */
    pthread_mutex_lock(&e->mu);
    uint64_t dropped = e->producer_dropped + e->writer_dropped + t->dropped;
    pthread_mutex_unlock(&e->mu);
    int64_t more = (int64_t)(dropped - w->dropped_reported);
    w->counters[4] += more;
    int rc = 0;
    if (store_update_session(w->store, w->session_id, t->first_start, t->end_ns, w->counters) < 0)
        rc = -1;
    else if (store_commit(w->store) < 0)
        rc = -2;
    if (rc < 0) {
        w->counters[4] -= more;
        return rc;
    }
    memset(w->counters, 0, sizeof w->counters);
    w->dropped_reported = dropped;
    for (size_t i = 0; t->functions && i < w->nfns; i++)
        if (w->fns[i].in_txn) {
            w->fns[i].in_txn = 0;
            w->fns[i].written = 1;
        }
    spool_release_held(w);
    spool_forget_kept(w, 0);
    t->nspans = 0;
    pthread_mutex_lock(&e->mu);
    e->written_calls += t->calls;
    e->written_segments += t->segments;
    e->written_bytes += t->bytes;
    e->written_functions += t->functions;
    pthread_mutex_unlock(&e->mu);
    t->calls = t->segments = t->bytes = t->functions = 0;
    return 0;
}

/* Writes every builder into the round's transaction (onto the spool when
 * the server fails meanwhile).  Returns 0 or -1. */
static int write_all(engine *e, txn *t)
{
    writer_state *w = &e->w;
    for (size_t i = 0; i < w->nfns; i++)
        if (w->fns[i].bytes && writer_write_segment(e, t, &w->fns[i]) < 0)
            return fail_over(e, t, 0) ? write_all(e, t) : -1;
    return 0;
}

/* Opens the round's transaction: on the tape, else on the spool when the
 * tape is a server that cannot be reached.  Returns 1 when it is open. */
static int round_begin(engine *e)
{
    writer_state *w = &e->w;
    pthread_mutex_lock(&e->mu);
    uint64_t errors_before = e->write_errors, unreported_before = e->unreported_errors;
    pthread_mutex_unlock(&e->mu);
    int ok = writer_ensure_store(e) == 0;
    if (ok && store_begin(w->store) < 0) {
        writer_error(e, store_errmsg(w->store));
        ok = 0;
    }
    if (!ok && spool_start(e) == 0) { /* the server is away: onto the spool, no loss */
        pthread_mutex_lock(&e->mu);
        e->write_errors = errors_before; /* the spool's notice says it, once */
        e->unreported_errors = unreported_before + 1;
        pthread_mutex_unlock(&e->mu);
        ok = store_begin(w->store) == 0;
        if (!ok)
            writer_error(e, store_errmsg(w->store));
    }
    return ok;
}

/* One round of work: everything published in `full` and `live`.
 * Returns the bytes of records it took. */
static size_t process(engine *e, chunk *full, chunk *live, int finish)
{
    writer_state *w = &e->w;
    txn t;
    memset(&t, 0, sizeof t);
    t.first_start = INT64_MAX;
    pthread_mutex_lock(&e->mu);
    uint64_t errors_before = e->write_errors, unreported_before = e->unreported_errors;
    pthread_mutex_unlock(&e->mu);
    int ok = round_begin(e);
    int began = ok;
    for (chunk *c = full; c; c = c->next)
        take_chunk(e, &t, c, &ok);
    if (live)
        take_chunk(e, &t, live, &ok);
    if (ok && finish)
        ok = write_all(e, &t) == 0;
    if (ok) {
        int rc = writer_commit_round(e, &t);
        if (rc < 0 && fail_over(e, &t, rc == -2)) /* -2: the server may have it */
            rc = (finish && write_all(e, &t) < 0) ? -1 : writer_commit_round(e, &t);
        ok = rc == 0;
        if (ok)
            spool_check_size(e);
    }
    if (!ok && began) {
        if (w->store) {
            writer_error(e, store_errmsg(w->store));
            store_rollback(w->store);
        }
        after_rollback(e, &t);
        if (t.calls == 0 && t.dropped == 0) { /* a round that held no call lost none */
            pthread_mutex_lock(&e->mu);
            e->write_errors = errors_before;
            e->unreported_errors = unreported_before;
            pthread_mutex_unlock(&e->mu);
        }
        t.dropped += t.calls; /* in segments of the transaction rolled back */
        t.calls = t.segments = t.bytes = t.functions = 0;
    }
    if (!ok && !w->store) {
        /* nothing can be stored: builders must not grow without bound */
        for (size_t i = 0; i < w->nfns; i++)
            if (w->fns[i].bytes) {
                t.dropped += w->fns[i].seg.n;
                seg_builder_reset(&w->fns[i].seg);
            }
        spool_forget_kept(w, 1);
    }
    pthread_mutex_lock(&e->mu);
    e->writer_dropped += t.dropped;
    e->store_failing = !ok;
    pthread_mutex_unlock(&e->mu);
    free(t.blocks);
    free(t.spans);
    return t.taken;
}

/* Retention as it goes (opt.retain): after the writer's first commit on a
 * tape, then every RETAIN_EVERY flush intervals, the sessions the rules
 * name go (store_prune, in short transactions of its own, never this
 * process's session).  A failure is
 * reported as a store error, and costs no call. */
static void retain_round(engine *e, uint64_t now)
{
    writer_state *w = &e->w;
    const retain_policy *p = &e->opt.retain;
    if ((p->older_than_ns <= 0 && p->keep_sessions <= 0 && p->max_bytes <= 0) || !w->store ||
        !w->session_id)
        return;
    if (w->last_retain_ns && now - w->last_retain_ns < RETAIN_EVERY * e->opt.flush_interval_ns)
        return;
    w->last_retain_ns = now ? now : 1;
    int64_t before = INT64_MIN, sessions = 0, calls = 0;
    if (p->older_than_ns > 0)
        before = (int64_t)engine_now_ns(CLOCK_REALTIME) - p->older_than_ns;
    if (store_prune(w->store, before, p->keep_sessions > 0 ? p->keep_sessions : -1,
                    p->max_bytes > 0 ? p->max_bytes : -1, w->session_id, &sessions, &calls) < 0) {
        char msg[300];
        snprintf(msg, sizeof msg, "cannot apply the retention rules: %s", store_errmsg(w->store));
        writer_error(e, msg);
    }
}

static void *writer_main(void *arg)
{
    engine *e = arg;
    pthread_mutex_lock(&e->mu);
    e->thread_tid = (long)syscall(SYS_gettid);
    for (;;) {
        uint64_t deadline = engine_now_ns(CLOCK_REALTIME) + e->opt.flush_interval_ns;
        struct timespec until = {(time_t)(deadline / 1000000000ull),
                                 (long)(deadline % 1000000000ull)};
        int timed_out = 0;
        while (!e->stop && e->flush_req == e->flush_done && !e->full_head && !timed_out &&
               !(engine_final_asked() && !e->final_done)) {
            pthread_mutex_unlock(&e->mu);
            /* every signal is blocked here: no EINTR */
            timed_out = sem_timedwait(&e->wake_writer, &until) != 0 && errno == ETIMEDOUT;
            pthread_mutex_lock(&e->mu);
        }
        /* what was published before engine_final_round() is seen below */
        int final = engine_final_asked() && !e->final_done;
        uint64_t req = e->flush_req;
        int stopping = e->stop;
        chunk *full = e->full_head;
        e->full_head = e->full_tail = NULL;
        chunk *live = e->live;
        pthread_mutex_unlock(&e->mu);

        pthread_mutex_lock(&e->io_mu);
        /* a flush tries the server at once; the last rounds do not (at exit
         * libpq's TLS library may be gone: the spool stays, named) */
        if (!stopping && !final && !engine_exiting())
            spool_back(e, req != e->flush_done);
        uint64_t now = engine_now_ns(CLOCK_MONOTONIC);
        int finish = stopping || final || req != e->flush_done ||
                     now - e->w.last_commit_ns >= e->opt.flush_interval_ns;
        size_t taken = process(e, full, live, finish);
        uint64_t spent = engine_now_ns(CLOCK_MONOTONIC) - now;
        if (finish)
            e->w.last_commit_ns = now;
        if (finish && !stopping && !final)
            retain_round(e, now);
        if (e->w.drain_due && !stopping && !final && !engine_exiting())
            spool_drain(e); /* spools other processes left for this tape */
        pthread_mutex_unlock(&e->io_mu);
        uint64_t cpu_ns = engine_now_ns(CLOCK_THREAD_CPUTIME_ID); /* a system call: unlocked */

        pthread_mutex_lock(&e->mu);
        if (taken >= RATE_MIN_BYTES && spent > 0) {
            /* rounds this large measure the writer, not the commit */
            double rate = (double)taken / (double)spent;
            e->drain_bytes_per_ns =
                e->drain_bytes_per_ns > 0 ? 0.7 * e->drain_bytes_per_ns + 0.3 * rate : rate;
        }
        size_t nfree = 0;
        for (chunk *c = e->free_list; c; c = c->next)
            nfree++;
        while (full) {
            chunk *next = full->next;
            e->queued_bytes -= full->cap;
            if (nfree < MAX_FREE_CHUNKS) {
                full->next = e->free_list;
                e->free_list = full;
                nfree++;
            } else {
                free(full);
            }
            full = next;
        }
        /* a new thread starts at 0: the ended ones' CPU is kept beside */
        e->writer_cpu_ns = e->writer_cpu_earlier + cpu_ns;
        e->flush_done = req;
        pthread_cond_broadcast(&e->wake_waiters);
        if (final) {
            e->final_done = 1;
            pthread_mutex_unlock(&e->mu);
            engine_after_final_round(e);
            pthread_mutex_lock(&e->mu);
        }
        if (stopping)
            break;
    }
    e->writer_cpu_earlier = e->writer_cpu_ns;
    pthread_mutex_unlock(&e->mu);
    /* a final round asked after this writer's last one saw nothing its last
     * one did not write: the request is answered here (see queue.c) */
    atomic_store(&e->alive, 0);
    if (engine_final_asked() && !e->final_done) {
        e->final_done = 1;
        engine_after_final_round(e);
    }
    return NULL;
}

int writer_start(engine *e)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    e->stop = 0;
    e->w.server = store_backend_for(e->path) != &store_sqlite_backend;
    atomic_store(&e->alive, 1);
    int rc = pthread_create(&e->thread, NULL, writer_main, e);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        atomic_store(&e->alive, 0);
        snprintf(e->last_error, sizeof e->last_error, "cannot start the writer thread");
        e->write_errors++;
        e->unreported_errors++;
        return -1;
    }
    e->running = 1;
    return 0;
}
