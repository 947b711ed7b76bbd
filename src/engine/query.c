/*
 * query.c - searching a tape: the store lists the segments whose zone maps
 * allow a match (store_list_segments), then a streaming merge of the
 * matching calls in start-time order.  No store's language here: the
 * same merge runs over any store of store.h.
 *
 * Segments are listed (ids and zone maps only, never their data) in the
 * order of their earliest possible call: start_min ascending for "oldest",
 * start_max descending for "newest".  Segments are loaded one at a time;
 * their matching calls enter a heap, and a call leaves the heap only when
 * no segment still unloaded can hold an earlier (or later) one.  Memory is
 * bounded by the segments that overlap in time, not by the tape; a limit
 * stops loading as soon as it is met.
 *
 * A search in any order (any_order: an export whose reader sorts, such as
 * a Chrome trace) skips the merge: each loaded segment's matching calls
 * are returned in turn, in the segment's own start order, before the next
 * segment is loaded, so memory is one segment's calls.
 *
 * Inside a loaded segment, calls outside the time and duration window are
 * passed over column by column without being decoded whole
 * (seg_reader_next_within).
 *
 * Per call, besides time, duration, outcome and thread, a search may bound
 * the energy (package and DRAM microjoules); a call without the reading a
 * bound needs never matches it.
 *
 * A search within spans (a test's time in its session, query_span) lists
 * the segments of the spans' sessions over the time they cover together,
 * passes over the listed segments whose zone map overlaps none of their
 * session's spans, and keeps the calls that start in one.  The spans are
 * sorted and merged when the query opens, so that each test is a binary
 * search.
 *
 * A search by parent (a call's children, or a session's roots) lists only
 * the segments the store's children index names; query_count counts such a
 * search, adding the index's exact counts without loading those segments.
 *
 * Invariants: a loaded segment's bytes stay alive while any of its calls is
 * in the heap (reference count per segment); every store error is reported
 * with its kind and message; a damaged segment (its checksum, its decoding, or a
 * call count other than its row's) is an error naming the segment and its
 * function, never calls left out; a listing of every segment of some
 * functions (no time, duration, session or outcome bound) that holds fewer
 * calls than the functions' totals counted before it (a damaged index
 * hides rows without the store noticing) is an error too, found when the
 * listing ends; no call is returned twice.
 */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>

typedef struct seg_buf {
    uint8_t *data;
    uint8_t *unpacked; /* the segment's unpacked value columns, or NULL */
    size_t refs;
    int64_t session, function;
} seg_buf;

typedef struct pending {
    seg_call c;
    seg_buf *seg;
} pending;

struct query {
    store *store;
    query_filter f;
    int64_t *functions; /* owned copy */
    int64_t *sessions;  /* owned copy */
    query_span *spans;  /* owned: sorted by session and since, merged (no overlap) */
    int none;           /* no call can match (no span within the other bounds) */
    store_cursor *list; /* segment ids and zone maps, in merge order */
    int listed_done;
    int started;          /* the listing was stepped (at the first query_next) */
    int check_total;      /* the listing must cover expect_calls calls */
    int64_t expect_calls; /* the functions' call totals, read before the listing */
    int64_t listed_calls; /* the calls of the segments listed so far */
    int64_t next_bound;   /* the bound of the next unloaded segment */
    int have_next;
    int64_t next_id;
    pending *heap;
    size_t nheap, capheap;
    size_t head; /* any_order: the heap is a queue, its first call not yet returned */
    int64_t emitted;
    int has_cutoff; /* with a limit: calls not before `cutoff` can never be returned */
    pending cutoff;
    seg_buf *current; /* segment of the call returned last, released at the next call */
    int64_t bad_segment, bad_function; /* the damaged segment of the last error, 0: none */
    int bad_status;                    /* its seg_status */
    store_err serr;                    /* the kind and phrase of the last error */
    char err[300];
};

/* Heap order: the call to return first sits on top. */
static int before(const query *q, const pending *a, const pending *b)
{
    if (a->c.start != b->c.start)
        return q->f.newest_first ? a->c.start > b->c.start : a->c.start < b->c.start;
    return q->f.newest_first ? a->c.id > b->c.id : a->c.id < b->c.id;
}

static int heap_push(query *q, const pending *p)
{
    if (q->nheap == q->capheap) {
        size_t cap = q->capheap ? 2 * q->capheap : 1024;
        pending *h = realloc(q->heap, cap * sizeof *h);
        if (!h)
            return -1;
        q->heap = h;
        q->capheap = cap;
    }
    size_t i = q->nheap++;
    q->heap[i] = *p;
    while (i > 0 && !q->f.any_order) {
        size_t parent = (i - 1) / 2;
        if (!before(q, &q->heap[i], &q->heap[parent]))
            break;
        pending t = q->heap[i];
        q->heap[i] = q->heap[parent];
        q->heap[parent] = t;
        i = parent;
    }
    return 0;
}

static pending heap_pop(query *q)
{
    pending top = q->heap[0];
    q->heap[0] = q->heap[--q->nheap];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, best = i;
        if (l < q->nheap && before(q, &q->heap[l], &q->heap[best]))
            best = l;
        if (r < q->nheap && before(q, &q->heap[r], &q->heap[best]))
            best = r;
        if (best == i)
            break;
        pending t = q->heap[i];
        q->heap[i] = q->heap[best];
        q->heap[best] = t;
        i = best;
    }
    return top;
}

static int compare_pending(const void *a, const void *b, void *q)
{
    if (before(q, a, b))
        return -1;
    return before(q, b, a) ? 1 : 0;
}

static void release(seg_buf *s);

/* With a limit, only the best `limit - emitted` calls held can ever be
 * returned: keep those (a sorted array is a valid heap) and remember the
 * worst of them, so that later segments push only calls that beat it. */
static void prune(query *q)
{
    if (q->f.limit < 0 || q->f.any_order)
        return;
    size_t keep = (size_t)(q->f.limit - q->emitted);
    if (q->nheap <= 4 * keep + 64)
        return;
    qsort_r(q->heap, q->nheap, sizeof *q->heap, compare_pending, q);
    for (size_t i = keep; i < q->nheap; i++)
        release(q->heap[i].seg);
    q->nheap = keep;
    if (keep) {
        q->cutoff = q->heap[keep - 1];
        q->has_cutoff = 1;
    }
}

static void release(seg_buf *s)
{
    if (s && --s->refs == 0) {
        free(s->data);
        free(s->unpacked);
        free(s);
    }
}

static int matches(const query *q, const seg_call *c)
{
    const query_filter *f = &q->f;
    if (c->start < f->since || c->start > f->until)
        return 0;
    if (c->duration < f->min_duration || c->duration > f->max_duration)
        return 0;
    if (f->outcome >= 0 && c->outcome != f->outcome)
        return 0;
    if (f->capture && (int)rec_capture_of(c->flags) != f->capture)
        return 0;
    if (f->thread >= 0 && c->thread != f->thread)
        return 0;
    if (f->parent && c->parent != (f->parent > 0 ? f->parent : 0))
        return 0;
    if (f->energy_bounds) {
        if (!(c->flags & REC_HAS_ENERGY))
            return 0;
        if ((f->energy_bounds & QUERY_MAX_PKG) && c->energy_pkg > f->max_energy_pkg)
            return 0;
        if ((f->energy_bounds & QUERY_MAX_DRAM) &&
            (c->energy_dram == ENERGY_DRAM_NONE || c->energy_dram - 1 > f->max_energy_dram))
            return 0;
    }
    return 1;
}

/* The first span of `session` that ends at `lo` or later (spans are merged,
 * so their ends ascend as their starts do), or NULL. */
static const query_span *span_from(const query *q, int64_t session, int64_t lo)
{
    size_t a = 0, b = q->f.nspans;
    while (a < b) {
        size_t m = a + (b - a) / 2;
        const query_span *p = &q->spans[m];
        if (p->session < session || (p->session == session && p->until < lo))
            a = m + 1;
        else
            b = m;
    }
    return a < q->f.nspans && q->spans[a].session == session ? &q->spans[a] : NULL;
}

/* 1 when some span of `session` overlaps [lo, hi] (no spans: 1). */
static int spans_overlap(const query *q, int64_t session, int64_t lo, int64_t hi)
{
    if (!q->f.nspans)
        return 1;
    const query_span *p = span_from(q, session, lo);
    return p && p->since <= hi;
}

/* 1 when one span of `session` holds all of [lo, hi] (no spans: 1). */
static int spans_cover(const query *q, int64_t session, int64_t lo, int64_t hi)
{
    if (!q->f.nspans)
        return 1;
    const query_span *p = span_from(q, session, lo);
    return p && p->since <= lo && p->until >= hi;
}

/* Keeps the store's error `e` met doing `what`.  Returns -1. */
static int set_store_error(query *q, const store_err *e, const char *what)
{
    q->serr = *e;
    snprintf(q->err, sizeof q->err, "%s: %s", what, e->msg);
    return -1;
}

/* Sets an error of `kind` (a store_err_kind) that the query found itself.
 * Returns -1. */
static int set_error(query *q, int kind, const char *msg)
{
    q->serr.kind = kind;
    snprintf(q->serr.msg, sizeof q->serr.msg, "%s", msg);
    snprintf(q->err, sizeof q->err, "%s", msg);
    return -1;
}

/* Reads the next segment of the listing into next_id / next_bound. */
static int advance_listing(query *q)
{
    store_row row;
    store_err e;
    int rc;
    while ((rc = store_next(q->list, &row, &e)) == 1 &&
           !spans_overlap(q, row.segment.session, row.segment.start_min, row.segment.start_max))
        ;
    if (rc == 1) {
        q->have_next = 1;
        q->next_id = row.segment.id;
        q->next_bound = q->f.newest_first ? row.segment.start_max : row.segment.start_min;
        q->listed_calls += row.segment.n;
        return 0;
    }
    q->have_next = 0;
    q->listed_done = 1;
    if (rc < 0)
        return set_store_error(q, &e, "cannot list the tape's segments");
    /* segments are only ever added, and the totals were read first: fewer
     * calls listed than counted means rows the index does not show */
    if (q->check_total && q->listed_calls < q->expect_calls) {
        char msg[160];
        snprintf(msg, sizeof msg,
                 "its segments hold %lld calls where its function table counts %lld",
                 (long long)q->listed_calls, (long long)q->expect_calls);
        return set_error(q, STORE_DAMAGED, msg);
    }
    return 0;
}

/* With no bound but functions, reads the call totals the listing must
 * cover.  Returns 0, or -1 with the error set. */
static int read_totals(query *q)
{
    const query_filter *f = &q->f;
    if (f->since != INT64_MIN || f->until != INT64_MAX || f->min_duration > 0 ||
        f->max_duration != INT64_MAX || f->session > 0 || f->nsessions || f->outcome >= 0 ||
        f->parent || f->nspans)
        return 0;
    store_err e;
    if (store_call_total(q->store, f->functions, f->nfunctions, &q->expect_calls, &e) < 0)
        return set_store_error(q, &e, "cannot read the tape's functions");
    q->check_total = 1;
    return 0;
}

/* Records that segment next_id of `function` is damaged (`status`, a
 * seg_status).  Returns -1. */
static int set_damaged(query *q, int64_t function, int status)
{
    q->bad_segment = q->next_id;
    q->bad_function = function;
    q->bad_status = status;
    char msg[160];
    snprintf(msg, sizeof msg, "segment %lld of function %lld %s", (long long)q->next_id,
             (long long)function, seg_strerror(status));
    return set_error(q, STORE_DAMAGED, msg);
}

/* Pushes the calls of the open segment `r` (held by `s`) that match and
 * can still be returned.  Returns 0, or -1 with the error set. */
static int push_matching(query *q, seg_reader *r, seg_buf *s, int64_t since, int64_t until)
{
    seg_call c;
    int rc;
    while ((rc = seg_reader_next_within(r, &c, since, until, q->f.min_duration,
                                        q->f.max_duration)) == 1) {
        if (!matches(q, &c) || !spans_cover(q, s->session, c.start, c.start))
            continue;
        pending p = {c, s};
        if (q->has_cutoff && !before(q, &p, &q->cutoff))
            continue;
        if (heap_push(q, &p) < 0)
            return set_error(q, STORE_NOMEM, "out of memory searching the tape");
        s->refs++;
    }
    return rc < 0 ? set_damaged(q, s->function, rc) : 0;
}

/* Loads segment next_id (verifying it), pushes its matching calls. */
static int load_next(query *q)
{
    store_segment g;
    store_err e;
    int rc = store_load_listed(q->list, q->next_id, &g, &e);
    if (rc < 0)
        return set_store_error(q, &e, "cannot read a segment");
    if (rc == 0) { /* the index lists a row the table lacks */
        char msg[80];
        snprintf(msg, sizeof msg, "segment %lld is listed but missing", (long long)q->next_id);
        return set_error(q, STORE_DAMAGED, msg);
    }
    uint8_t *data = (uint8_t *)g.data; /* ours to free */
    size_t n = g.len;
    seg_buf *s = calloc(1, sizeof *s);
    if (!s) {
        free(data);
        return set_error(q, STORE_NOMEM, "out of memory reading the tape");
    }
    s->data = data;
    s->session = g.session;
    s->function = g.function;
    int64_t listed_n = g.n;
    s->refs = 1; /* held while loading */
    seg_reader r;
    rc = seg_reader_open(&r, data, n);
    if (rc == 0 && (int64_t)r.n != listed_n)
        rc = SEG_COUNT; /* the row and its bytes disagree */
    /* Once a limit fixed a cutoff, most segments hold no call that could
     * still be returned: test the start and duration columns first. */
    int64_t since = q->f.since, until = q->f.until;
    if (q->has_cutoff) {
        if (q->f.newest_first && q->cutoff.c.start > since)
            since = q->cutoff.c.start;
        if (!q->f.newest_first && q->cutoff.c.start < until)
            until = q->cutoff.c.start;
    }
    if (rc == 0)
        rc = seg_reader_any_within(&r, since, until, q->f.min_duration, q->f.max_duration);
    if (rc < 0) {
        int64_t function = s->function;
        seg_reader_close(&r);
        release(s);
        return set_damaged(q, function, rc);
    }
    rc = rc == 1 ? push_matching(q, &r, s, since, until) : 0;
    s->unpacked = seg_reader_detach(&r); /* the pushed calls point into it */
    if (rc < 0) {
        release(s);
        return -1;
    }
    release(s);
    prune(q);
    return advance_listing(q);
}

static int span_order(const void *a, const void *b)
{
    const query_span *x = a, *y = b;
    if (x->session != y->session)
        return x->session < y->session ? -1 : 1;
    return (x->since > y->since) - (x->since < y->since);
}

/* 1 when the filter's session bound (`session`, or the list) admits `s`. */
static int session_admitted(const query_filter *f, int64_t s)
{
    if (f->session)
        return f->session == s;
    for (size_t i = 0; i < f->nsessions; i++)
        if (f->sessions[i] == s)
            return 1;
    return f->nsessions == 0;
}

/* Copies the spans of `f` that its session and time bounds admit (cut to
 * the time bounds), sorted and merged, and narrows q->f to them: their
 * sessions (one, or a list in q->sessions) and the time they cover
 * together.  No span left: q->none.  Returns 0, or -1 out of memory. */
static int take_spans(query *q, const query_filter *f)
{
    q->spans = malloc(f->nspans * sizeof *q->spans);
    int64_t *ids = malloc(f->nspans * sizeof *ids);
    if (!q->spans || !ids) {
        free(ids);
        return -1;
    }
    size_t n = 0;
    for (size_t i = 0; i < f->nspans; i++) {
        query_span p = f->spans[i];
        p.since = p.since > f->since ? p.since : f->since;
        p.until = p.until < f->until ? p.until : f->until;
        if (p.since <= p.until && session_admitted(f, p.session))
            q->spans[n++] = p;
    }
    qsort(q->spans, n, sizeof *q->spans, span_order);
    size_t kept = 0, nids = 0;
    for (size_t i = 0; i < n; i++) {
        query_span *last = kept ? &q->spans[kept - 1] : NULL;
        if (last && last->session == q->spans[i].session && q->spans[i].since <= last->until) {
            if (q->spans[i].until > last->until)
                last->until = q->spans[i].until;
            continue;
        }
        if (!last || last->session != q->spans[i].session)
            ids[nids++] = q->spans[i].session;
        q->spans[kept++] = q->spans[i];
    }
    q->f.spans = q->spans;
    q->f.nspans = kept;
    q->none = kept == 0;
    q->f.since = INT64_MAX;
    q->f.until = INT64_MIN;
    for (size_t i = 0; i < kept; i++) {
        q->f.since = q->spans[i].since < q->f.since ? q->spans[i].since : q->f.since;
        q->f.until = q->spans[i].until > q->f.until ? q->spans[i].until : q->f.until;
    }
    free(q->sessions);
    q->sessions = nids > 1 ? ids : NULL;
    q->f.session = nids == 1 ? ids[0] : 0;
    q->f.sessions = q->sessions;
    q->f.nsessions = nids > 1 ? nids : 0;
    if (nids <= 1)
        free(ids);
    return 0;
}

query *query_open(store *sto, const query_filter *f, char *err, size_t errlen)
{
    query *q = calloc(1, sizeof *q);
    if (!q) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    q->store = sto;
    q->f = *f;
    if (f->nfunctions) {
        q->functions = malloc(f->nfunctions * sizeof(int64_t));
        if (!q->functions) {
            snprintf(err, errlen, "out of memory");
            free(q);
            return NULL;
        }
        memcpy(q->functions, f->functions, f->nfunctions * sizeof(int64_t));
        q->f.functions = q->functions;
    }
    q->f.sessions = NULL;
    q->f.nsessions = 0;
    if (f->nsessions) {
        q->sessions = malloc(f->nsessions * sizeof(int64_t));
        if (!q->sessions) {
            snprintf(err, errlen, "out of memory");
            query_close(q);
            return NULL;
        }
        memcpy(q->sessions, f->sessions, f->nsessions * sizeof(int64_t));
        q->f.sessions = q->sessions;
        q->f.nsessions = f->nsessions;
    }
    q->f.spans = NULL;
    q->f.nspans = 0;
    if (f->nspans && take_spans(q, f) < 0) {
        snprintf(err, errlen, "out of memory");
        query_close(q);
        return NULL;
    }
    if (q->none)
        return q; /* nothing to list: query_next and query_count find no call */
    store_segment_filter sf = {q->f.functions,  f->nfunctions,   q->f.session,    q->f.since,
                               q->f.until,      f->min_duration, f->max_duration, f->outcome,
                               f->newest_first, q->f.sessions,   q->f.nsessions,  f->parent,
                               f->parent_end};
    store_err e;
    q->list = store_list_segments(sto, &sf, &e);
    if (!q->list) {
        snprintf(err, errlen, "%s", e.msg);
        query_close(q);
        return NULL;
    }
    return q;
}

/* Reads the call totals, then the listing's first segment: at the first
 * query_next, so that their errors come from query_next.  Returns 0 or
 * -1 with the error set. */
static int start(query *q)
{
    q->started = 1;
    /* the totals first: a snapshot no newer than the listing's */
    if (read_totals(q) < 0)
        return -1;
    return advance_listing(q);
}

int query_next(query *q, seg_call *out, int64_t *session, int64_t *function)
{
    release(q->current);
    q->current = NULL;
    if ((q->f.limit >= 0 && q->emitted >= q->f.limit) || q->none)
        return 0;
    if (!q->started && start(q) < 0)
        return -1;
    for (;;) {
        if (q->nheap && q->f.any_order)
            break;
        if (q->nheap) {
            const seg_call *top = &q->heap[0].c;
            int safe = !q->have_next || (q->f.newest_first ? top->start > q->next_bound
                                                           : top->start < q->next_bound);
            if (safe)
                break;
        }
        if (!q->have_next)
            return 0;
        if (load_next(q) < 0)
            return -1;
    }
    pending p;
    if (q->f.any_order) { /* the queue of one segment's calls */
        p = q->heap[q->head++];
        if (q->head == q->nheap)
            q->head = q->nheap = 0;
    } else {
        p = heap_pop(q);
    }
    *out = p.c;
    *session = p.seg->session;
    *function = p.seg->function;
    q->current = p.seg; /* keeps out's byte ranges valid until the next call */
    q->emitted++;
    return 1;
}

/* Adds to *n the matching calls of listed segment `id` of `function`,
 * read whole.  Returns 0, or -1 with the error set. */
static int count_segment(query *q, int64_t id, int64_t function, int64_t *n)
{
    store_segment g;
    store_err e;
    q->next_id = id; /* for set_damaged */
    int rc = store_load_listed(q->list, id, &g, &e);
    if (rc < 0)
        return set_store_error(q, &e, "cannot read a segment");
    if (rc == 0) {
        char msg[80];
        snprintf(msg, sizeof msg, "segment %lld is listed but missing", (long long)id);
        return set_error(q, STORE_DAMAGED, msg);
    }
    seg_reader r;
    rc = seg_reader_open(&r, g.data, g.len);
    if (rc == 0 && (int64_t)r.n != g.n)
        rc = SEG_COUNT;
    seg_call c;
    while (rc == 0 && (rc = seg_reader_next_within(&r, &c, q->f.since, q->f.until,
                                                   q->f.min_duration, q->f.max_duration)) == 1) {
        *n += matches(q, &c) && spans_cover(q, g.session, c.start, c.start);
        rc = 0;
    }
    seg_reader_close(&r);
    free((void *)g.data);
    return rc < 0 ? set_damaged(q, function, rc) : 0;
}

int query_count(query *q, int64_t *n)
{
    const query_filter *f = &q->f;
    *n = 0;
    q->started = 1;
    /* calls a zone map cannot vouch for: read them */
    int by_map = f->thread < 0 && f->outcome < 0 && !f->energy_bounds;
    store_row row;
    store_err e;
    int rc = 0;
    while (!q->none && (rc = store_next(q->list, &row, &e)) == 1) {
        const store_segment *g = &row.segment;
        if (!spans_overlap(q, g->session, g->start_min, g->start_max))
            continue;
        if (by_map && g->links != STORE_NONE &&
            spans_cover(q, g->session, g->start_min, g->start_max) && f->since <= g->start_min &&
            f->until >= g->start_max && f->min_duration <= g->dur_min &&
            f->max_duration >= g->dur_max) {
            *n += g->links;
            continue;
        }
        if (count_segment(q, g->id, g->function, n) < 0)
            return -1;
    }
    q->listed_done = 1;
    return !q->none && rc < 0 ? set_store_error(q, &e, "cannot list the tape's segments") : 0;
}

const char *query_error(const query *q)
{
    return q->err;
}

const store_err *query_error_store(const query *q)
{
    return &q->serr;
}

int query_error_segment(const query *q, int64_t *segment, int64_t *function, int *status)
{
    if (!q->bad_segment)
        return 0;
    *segment = q->bad_segment;
    *function = q->bad_function;
    *status = q->bad_status;
    return 1;
}

void query_close(query *q)
{
    if (!q)
        return;
    release(q->current);
    for (size_t i = q->head; i < q->nheap; i++)
        release(q->heap[i].seg);
    free(q->heap);
    store_cursor_close(q->list);
    free(q->functions);
    free(q->sessions);
    free(q->spans);
    free(q);
}
