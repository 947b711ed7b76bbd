/*
 * query.c - searching a tape: filters to SQL over the segments' zone maps,
 * then a streaming merge of the matching calls in start-time order.
 *
 * Segments are listed (ids and zone maps only, never their data) in the
 * order of their earliest possible call: start_min ascending for "oldest",
 * start_max descending for "newest".  Segments are loaded one at a time;
 * their matching calls enter a heap, and a call leaves the heap only when
 * no segment still unloaded can hold an earlier (or later) one.  Memory is
 * bounded by the segments that overlap in time, not by the tape; a limit
 * stops loading as soon as it is met.
 *
 * Inside a loaded segment, calls outside the time and duration window are
 * passed over column by column without being decoded whole
 * (seg_reader_next_within).
 *
 * Per call, besides time, duration, outcome and thread, a search may bound
 * the energy (package and DRAM microjoules); a call without the reading a
 * bound needs never matches it.
 *
 * Invariants: a loaded segment's bytes stay alive while any of its calls is
 * in the heap (reference count per segment); every SQLite error is reported
 * with its message; a damaged segment (its checksum, its decoding, or a
 * call count other than its row's) is an error naming the segment and its
 * function, never calls left out; a listing of every segment of some
 * functions (no time, duration, session or outcome bound) that holds fewer
 * calls than the functions' totals counted before it (a damaged index
 * hides rows without SQLite noticing) is an error too, found when the
 * listing ends; no call is returned twice.
 */
#include "engine.h"

#include <sqlite3.h>
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
    store *st;
    query_filter f;
    int64_t *functions; /* owned copy */
    sqlite3_stmt *list; /* segment ids and bounds, in merge order */
    sqlite3_stmt *load; /* one segment's data */
    int listed_done;
    int started;          /* the listing was stepped (at the first query_next) */
    char *json;           /* the function ids as a JSON array, owned, or NULL */
    int check_total;      /* the listing must cover expect_calls calls */
    int64_t expect_calls; /* the functions' call totals, read before the listing */
    int64_t listed_calls; /* the calls of the segments listed so far */
    int64_t next_bound;   /* the bound of the next unloaded segment */
    int have_next;
    int64_t next_id;
    pending *heap;
    size_t nheap, capheap;
    int64_t emitted;
    int has_cutoff; /* with a limit: calls not before `cutoff` can never be returned */
    pending cutoff;
    seg_buf *current; /* segment of the call returned last, released at the next call */
    int64_t bad_segment, bad_function; /* the damaged segment of the last error, 0: none */
    int bad_status;                    /* its seg_status */
    int sql_rc;                        /* the SQLite result code of the last error, 0: none */
    char err[256];
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
    while (i > 0) {
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
    if (q->f.limit < 0)
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
    if (f->thread >= 0 && c->thread != f->thread)
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

static int set_sql_error(query *q, const char *what)
{
    q->sql_rc = sqlite3_extended_errcode(store_db(q->st));
    snprintf(q->err, sizeof q->err, "%s: %s", what, sqlite3_errmsg(store_db(q->st)));
    return -1;
}

/* Reads the next segment of the listing into next_id / next_bound. */
static int advance_listing(query *q)
{
    int rc = sqlite3_step(q->list);
    if (rc == SQLITE_ROW) {
        q->have_next = 1;
        q->next_id = sqlite3_column_int64(q->list, 0);
        q->next_bound = sqlite3_column_int64(q->list, 1);
        q->listed_calls += sqlite3_column_int64(q->list, 2);
        return 0;
    }
    q->have_next = 0;
    q->listed_done = 1;
    if (rc != SQLITE_DONE)
        return set_sql_error(q, "cannot list the tape's segments");
    /* segments are only ever added, and the totals were read first: fewer
     * calls listed than counted means rows the index does not show */
    if (q->check_total && q->listed_calls < q->expect_calls) {
        q->sql_rc = SQLITE_CORRUPT;
        snprintf(q->err, sizeof q->err,
                 "its segments hold %lld calls where its function table counts %lld",
                 (long long)q->listed_calls, (long long)q->expect_calls);
        return -1;
    }
    return 0;
}

/* With no bound but functions, reads the call totals the listing must
 * cover.  Returns 0, or -1 with the error set. */
static int read_totals(query *q, const char *json)
{
    const query_filter *f = &q->f;
    if (f->since != INT64_MIN || f->until != INT64_MAX || f->min_duration > 0 ||
        f->max_duration != INT64_MAX || f->session > 0 || f->outcome >= 0)
        return 0;
    sqlite3_stmt *st = NULL;
    const char *sql = f->nfunctions ? "SELECT coalesce(sum(calls), 0) FROM functions"
                                      " WHERE id IN (SELECT value FROM json_each(?1))"
                                    : "SELECT coalesce(sum(calls), 0) FROM functions";
    int rc = sqlite3_prepare_v2(store_db(q->st), sql, -1, &st, NULL);
    if (rc == SQLITE_OK && f->nfunctions)
        rc = sqlite3_bind_text(st, 1, json, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        q->expect_calls = sqlite3_column_int64(st, 0);
        q->check_total = 1;
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : set_sql_error(q, "cannot read the tape's functions");
}

/* Records that segment next_id of `function` is damaged (`status`, a
 * seg_status).  Returns -1. */
static int set_damaged(query *q, int64_t function, int status)
{
    q->bad_segment = q->next_id;
    q->bad_function = function;
    q->bad_status = status;
    snprintf(q->err, sizeof q->err, "segment %lld of function %lld %s", (long long)q->next_id,
             (long long)function, seg_strerror(status));
    return -1;
}

/* Pushes the calls of the open segment `r` (held by `s`) that match and
 * can still be returned.  Returns 0, or -1 with the error set. */
static int push_matching(query *q, seg_reader *r, seg_buf *s, int64_t since, int64_t until)
{
    seg_call c;
    int rc;
    while ((rc = seg_reader_next_within(r, &c, since, until, q->f.min_duration,
                                        q->f.max_duration)) == 1) {
        if (!matches(q, &c))
            continue;
        pending p = {c, s};
        if (q->has_cutoff && !before(q, &p, &q->cutoff))
            continue;
        if (heap_push(q, &p) < 0) {
            snprintf(q->err, sizeof q->err, "out of memory searching the tape");
            return -1;
        }
        s->refs++;
    }
    return rc < 0 ? set_damaged(q, s->function, rc) : 0;
}

/* Loads segment next_id (verifying it), pushes its matching calls. */
static int load_next(query *q)
{
    sqlite3_bind_int64(q->load, 1, q->next_id);
    int rc = sqlite3_step(q->load);
    if (rc != SQLITE_ROW) {
        if (rc == SQLITE_DONE) {
            q->sql_rc = SQLITE_CORRUPT; /* the index lists a row the table lacks */
            snprintf(q->err, sizeof q->err, "segment %lld is listed but missing",
                     (long long)q->next_id);
        } else
            set_sql_error(q, "cannot read a segment");
        sqlite3_reset(q->load);
        return -1;
    }
    size_t n = (size_t)sqlite3_column_bytes(q->load, 0);
    seg_buf *s = calloc(1, sizeof *s);
    uint8_t *data = malloc(n ? n : 1);
    if (!s || !data) {
        free(s);
        free(data);
        sqlite3_reset(q->load);
        snprintf(q->err, sizeof q->err, "out of memory reading the tape");
        return -1;
    }
    if (n)
        memcpy(data, sqlite3_column_blob(q->load, 0), n);
    s->data = data;
    s->session = sqlite3_column_int64(q->load, 1);
    s->function = sqlite3_column_int64(q->load, 2);
    int64_t listed_n = sqlite3_column_int64(q->load, 3);
    sqlite3_reset(q->load);
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

query *query_open(store *st, const query_filter *f, char *err, size_t errlen)
{
    query *q = calloc(1, sizeof *q);
    char sql[1024];
    if (!q) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    q->st = st;
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
    /* The listing carries the merge bound of each segment. */
    int n = snprintf(sql, sizeof sql,
                     "SELECT id, %s, n FROM segments WHERE start_max >= ?1"
                     " AND start_min <= ?2 AND dur_max >= ?3 AND dur_min <= ?4",
                     f->newest_first ? "start_max" : "start_min");
    if (f->session > 0)
        n += snprintf(sql + n, sizeof sql - (size_t)n, " AND session = ?5");
    if (f->outcome == OUTCOME_RAISED)
        n += snprintf(sql + n, sizeof sql - (size_t)n, " AND raised > 0");
    else if (f->outcome == OUTCOME_RETURNED)
        n += snprintf(sql + n, sizeof sql - (size_t)n, " AND raised < n");
    if (f->nfunctions)
        n += snprintf(sql + n, sizeof sql - (size_t)n,
                      " AND function IN (SELECT value FROM json_each(?6))");
    snprintf(sql + n, sizeof sql - (size_t)n, " ORDER BY 2 %s, id %s",
             f->newest_first ? "DESC" : "ASC", f->newest_first ? "DESC" : "ASC");
    sqlite3 *db = store_db(st);
    if (sqlite3_prepare_v2(db, sql, -1, &q->list, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "SELECT data, session, function, n FROM segments WHERE id = ?", -1,
                           &q->load, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot search the tape: %s", sqlite3_errmsg(db));
        query_close(q);
        return NULL;
    }
    sqlite3_bind_int64(q->list, 1, f->since);
    sqlite3_bind_int64(q->list, 2, f->until);
    sqlite3_bind_int64(q->list, 3, f->min_duration);
    sqlite3_bind_int64(q->list, 4, f->max_duration);
    if (f->session > 0)
        sqlite3_bind_int64(q->list, 5, f->session);
    if (f->nfunctions) {
        /* a JSON array of ids: one parameter whatever the count */
        size_t cap = f->nfunctions * 21 + 3, len = 0;
        char *json = q->json = malloc(cap);
        if (!json) {
            snprintf(err, errlen, "out of memory");
            query_close(q);
            return NULL;
        }
        json[len++] = '[';
        for (size_t i = 0; i < f->nfunctions; i++)
            len += (size_t)snprintf(json + len, cap - len, "%s%lld", i ? "," : "",
                                    (long long)f->functions[i]);
        json[len++] = ']';
        json[len] = 0;
        sqlite3_bind_text(q->list, 6, json, (int)len, SQLITE_STATIC);
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
    if (read_totals(q, q->json) < 0)
        return -1;
    return advance_listing(q);
}

int query_next(query *q, seg_call *out, int64_t *session, int64_t *function)
{
    release(q->current);
    q->current = NULL;
    if (q->f.limit >= 0 && q->emitted >= q->f.limit)
        return 0;
    if (!q->started && start(q) < 0)
        return -1;
    for (;;) {
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
    pending p = heap_pop(q);
    *out = p.c;
    *session = p.seg->session;
    *function = p.seg->function;
    q->current = p.seg; /* keeps out's byte ranges valid until the next call */
    q->emitted++;
    return 1;
}

const char *query_error(const query *q)
{
    return q->err;
}

int query_error_sqlite(const query *q)
{
    return q->sql_rc;
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
    for (size_t i = 0; i < q->nheap; i++)
        release(q->heap[i].seg);
    free(q->heap);
    sqlite3_finalize(q->list);
    sqlite3_finalize(q->load);
    free(q->json);
    free(q->functions);
    free(q);
}
