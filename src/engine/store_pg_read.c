/*
 * store_pg_read.c - the reader's side of the PostgreSQL store: the
 * statements behind store_totals, store_function_count, store_call_total
 * and the cursors of store.h (sessions, functions, the functions of some
 * sessions, threads, a blob, the segments holding a call id, the segment
 * listing of a search, the named spans of sessions).
 *
 * Invariants: a cursor runs its statement when it is made, under the
 * handle's mutex, and keeps the whole result (binary), so cursors of
 * several threads never share a statement and a row stays valid until
 * the cursor's next step; the tape-wide aggregates of a function are the
 * sums of its per-session rows (function_sessions, which only that
 * session's writer writes); a listing by parent reads the children index
 * (schema 4, as the SQLite file's), and for segments written before it
 * the parent's session's segments within the parent's time window (more
 * segments, never fewer); an SQL error on the
 * fixed statements (SQLSTATE class 42) is STORE_DAMAGED, a lost
 * connection and everything else STORE_FAILED.
 */
#include "store_pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum pgr_kind { PGR_SESSIONS, PGR_FUNCTIONS, PGR_THREADS, PGR_BLOB, PGR_SEGMENTS, PGR_CONTEXTS };

typedef struct pgr_cursor {
    store_cursor base; /* first: the cursor's head */
    enum pgr_kind kind;
    PGresult *r;
    int row, nrows;
    int with_data;  /* PGR_SEGMENTS: rows carry the segment's bytes; PGR_BLOB: their hashes */
    int with_links; /* PGR_SEGMENTS: a listing by parent (column 9: the index's count) */
} pgr_cursor;

#define SEGMENT_COLUMNS "id, session, function, n, start_min, start_max, dur_min, dur_max, raised"

#define FUNCTION_AGGREGATES                                                                        \
    "SELECT function, sum(calls)::bigint AS calls, sum(raised)::bigint AS raised,"                 \
    " sum(total_ns)::bigint AS total_ns, min(min_ns) AS min_ns, max(max_ns) AS max_ns,"            \
    " sum(self_ns)::bigint AS self_ns FROM function_sessions"

#define FUNCTION_ROW                                                                               \
    "SELECT f.id, f.module, f.qualname, f.file, f.line, f.signature, coalesce(a.calls, 0),"        \
    " coalesce(a.raised, 0), coalesce(a.total_ns, 0), a.min_ns, a.max_ns,"                         \
    " coalesce(a.self_ns, 0) FROM functions f "

static void set_nomem(store_err *e)
{
    e->kind = STORE_NOMEM;
    snprintf(e->msg, sizeof e->msg, "out of memory reading the tape");
}

/* Runs `sql` on the reading handle `s`.  The result, or NULL with `e`. */
static PGresult *pgr_query(store *s, const char *sql, const pg_params *pp, store_err *e)
{
    pthread_mutex_t *mu = NULL;
    PGconn *c = pg_conn_of(s, &mu);
    char why[200], state[6] = "";
    pthread_mutex_lock(mu);
    PGresult *r = pg_run(c, sql, pp, why, sizeof why, state);
    pthread_mutex_unlock(mu);
    if (r)
        return r;
    for (char *p = why; *p; p++)
        if (*p == '\n')
            *p = ' ';
    if (strncmp(state, "42", 2) == 0) {
        e->kind = STORE_DAMAGED;
        snprintf(e->msg, sizeof e->msg, "PostgreSQL reports: %s", why);
    } else {
        e->kind = STORE_FAILED;
        snprintf(e->msg, sizeof e->msg, "%s", why);
    }
    return NULL;
}

/* A statement of one row of `n` int8 columns into `out`. */
static int one_row(store *s, const char *sql, const pg_params *pp, int64_t *out, int n,
                   store_err *e)
{
    PGresult *r = pgr_query(s, sql, pp, e);
    if (!r)
        return -1;
    if (pq()->ntuples(r) != 1) {
        pq()->clear(r);
        e->kind = STORE_DAMAGED;
        snprintf(e->msg, sizeof e->msg, "PostgreSQL returned no row");
        return -1;
    }
    for (int i = 0; i < n; i++)
        out[i] = pg_get_int(r, 0, i);
    pq()->clear(r);
    return 0;
}

int pgr_totals(store *s, store_counts *out, store_err *e)
{
    int64_t v[3] = {0, 0, 0};
    if (one_row(s,
                "SELECT (SELECT coalesce(sum(calls), 0)::bigint FROM function_sessions),"
                " (SELECT count(*) FROM functions), (SELECT count(*) FROM sessions)",
                NULL, v, 3, e) < 0)
        return -1;
    out->calls = v[0];
    out->functions = v[1];
    out->sessions = v[2];
    return 0;
}

int pgr_function_count(store *s, int64_t *n, store_err *e)
{
    return one_row(s, "SELECT count(*) FROM functions", NULL, n, 1, e);
}

int pgr_call_total(store *s, const int64_t *functions, size_t n, int64_t *calls, store_err *e)
{
    if (!n)
        return one_row(s, "SELECT coalesce(sum(calls), 0)::bigint FROM function_sessions", NULL,
                       calls, 1, e);
    char *a = store_ids_text(functions, n, '{', '}');
    if (!a) {
        set_nomem(e);
        return -1;
    }
    pg_params pp = {0};
    pg_int_array(&pp, a);
    int rc = one_row(s,
                     "SELECT coalesce(sum(calls), 0)::bigint FROM function_sessions"
                     " WHERE function = ANY($1)",
                     &pp, calls, 1, e);
    free(a);
    return rc;
}

/* A cursor of `kind` over the result of `sql`.  NULL with `e`. */
static store_cursor *cursor_new(store *s, enum pgr_kind kind, const char *sql, const pg_params *pp,
                                store_err *e)
{
    pgr_cursor *c = calloc(1, sizeof *c);
    if (!c) {
        set_nomem(e);
        return NULL;
    }
    c->base.s = s;
    c->kind = kind;
    c->r = pgr_query(s, sql, pp, e);
    if (!c->r) {
        free(c);
        return NULL;
    }
    c->nrows = pq()->ntuples(c->r);
    return &c->base;
}

store_cursor *pgr_read_sessions(store *s, store_err *e)
{
    return cursor_new(s, PGR_SESSIONS,
                      "SELECT id, start_ns, end_ns, host, pid, ppid, parent, argv, python,"
                      " calltape, mpi_rank, unencodable, pickled, redacted, truncated, dropped,"
                      " sys_path0, cwd FROM sessions ORDER BY id DESC",
                      NULL, e);
}

store_cursor *pgr_read_functions(store *s, store_err *e)
{
    return cursor_new(s, PGR_FUNCTIONS,
                      FUNCTION_ROW "LEFT JOIN (" FUNCTION_AGGREGATES
                                   " GROUP BY function) a ON a.function = f.id ORDER BY f.id",
                      NULL, e);
}

store_cursor *pgr_read_session_functions(store *s, const int64_t *sessions, size_t n, store_err *e)
{
    char *a = store_ids_text(sessions, n, '{', '}');
    if (!a) {
        set_nomem(e);
        return NULL;
    }
    pg_params pp = {0};
    pg_int_array(&pp, a);
    store_cursor *c = cursor_new(s, PGR_FUNCTIONS,
                                 FUNCTION_ROW "JOIN (" FUNCTION_AGGREGATES
                                              " WHERE session = ANY($1) GROUP BY function) a"
                                              " ON a.function = f.id ORDER BY f.id",
                                 &pp, e);
    free(a);
    return c;
}

store_cursor *pgr_read_threads(store *s, store_err *e)
{
    return cursor_new(s, PGR_THREADS, "SELECT session, idx, ident, name FROM threads", NULL, e);
}

store_cursor *pgr_read_blob(store *s, const uint8_t hash[WIRE_HASH_BYTES], store_err *e)
{
    if (!hash) { /* every blob, with its hash */
        store_cursor *all = cursor_new(s, PGR_BLOB, "SELECT data, hash FROM blobs", NULL, e);
        if (all)
            ((pgr_cursor *)all)->with_data = 1;
        return all;
    }
    pg_params pp = {0};
    pg_bytea(&pp, hash, WIRE_HASH_BYTES);
    return cursor_new(s, PGR_BLOB, "SELECT data FROM blobs WHERE hash = $1", &pp, e);
}

store_cursor *pgr_find_call(store *s, int64_t id, store_err *e)
{
    pg_params pp = {0};
    pg_int(&pp, id);
    store_cursor *c = cursor_new(s, PGR_SEGMENTS,
                                 "SELECT " SEGMENT_COLUMNS ", data FROM segments"
                                 " WHERE id_min <= $1 AND id_max >= $1",
                                 &pp, e);
    if (c)
        ((pgr_cursor *)c)->with_data = 1;
    return c;
}

/* The listing's statement for `f` into `sql` (`cap` bytes), its parameters
 * into `pp`; `fns` and `sess` receive the arrays it binds (the caller
 * frees them; NULL when memory ran out).  By parent on schema 4 and later:
 * the children index's rows that may hold the key (the parent's id, or
 * minus the session for its roots: a range of one parent, or one whose
 * bitmap has the key's bit), which repeat their segment's zone map and
 * carry the count of a range of one parent, then the segments the index
 * does not cover (written before the upgrade) within the parent's window;
 * before schema 4, those by window only. */
static void listing_sql(store *s, const store_segment_filter *f, char *sql, size_t cap,
                        pg_params *pp, char **fns, char **sess)
{
    char bounds[512];
    pg_int(pp, f->since);
    pg_int(pp, f->until);
    pg_int(pp, f->min_duration);
    pg_int(pp, f->max_duration);
    int n = snprintf(bounds, sizeof bounds,
                     "start_max >= $1 AND start_min <= $2 AND dur_max >= $3 AND dur_min <= $4");
    int64_t session = f->parent < 0 ? -f->parent : f->session;
    if (session > 0) {
        pg_int(pp, session);
        n += snprintf(bounds + n, sizeof bounds - (size_t)n, " AND session = $%d", pp->n);
    } else if (f->nsessions) {
        *sess = store_ids_text(f->sessions, f->nsessions, '{', '}');
        pg_int_array(pp, *sess ? *sess : "{}");
        n += snprintf(bounds + n, sizeof bounds - (size_t)n, " AND session = ANY($%d)", pp->n);
    }
    if (f->outcome == OUTCOME_RAISED)
        n += snprintf(bounds + n, sizeof bounds - (size_t)n, " AND raised > 0");
    else if (f->outcome == OUTCOME_RETURNED)
        n += snprintf(bounds + n, sizeof bounds - (size_t)n, " AND raised < n");
    if (f->nfunctions) {
        *fns = store_ids_text(f->functions, f->nfunctions, '{', '}');
        pg_int_array(pp, *fns ? *fns : "{}");
        snprintf(bounds + n, sizeof bounds - (size_t)n, " AND function = ANY($%d)", pp->n);
    }
    int indexed = f->parent && pg_schema_of(s) >= 4;
    int m = 0;
    if (f->parent > 0) /* children start before their parent ends */
        pg_int(pp, f->parent_end);
    if (!indexed)
        m = snprintf(sql, cap, "SELECT " SEGMENT_COLUMNS ", NULL::bigint FROM segments WHERE %s%s",
                     bounds, f->parent > 0 ? " AND start_min <= $" : "");
    if (!indexed && f->parent > 0)
        m += snprintf(sql + m, cap - (size_t)m, "%d", pp->n);
    if (indexed) {
        int end = pp->n;
        pg_int(pp, f->parent);
        pg_int(pp, SEG_LINK_SPAN);
        int key = pp->n - 1, span = pp->n;
        m = snprintf(sql, cap,
                     "SELECT " SEGMENT_COLUMNS ", NULL::bigint FROM segments WHERE %s"
                     " AND id < (SELECT value FROM calltape_meta WHERE key = 'children_from')",
                     bounds);
        if (f->parent > 0)
            m += snprintf(sql + m, cap - (size_t)m, " AND start_min <= $%d", end);
        char lo[80];
        if (f->parent > 0)
            snprintf(lo, sizeof lo, "lo BETWEEN $%d - $%d AND $%d", key, span, key);
        else /* a session's roots: one key */
            snprintf(lo, sizeof lo, "lo = $%d", key);
        m += snprintf(sql + m, cap - (size_t)m,
                      " UNION ALL SELECT segment, session, function, n, start_min, start_max,"
                      " dur_min, dur_max, raised, CASE WHEN lo = hi THEN kids END FROM children"
                      " WHERE %s AND %s AND hi >= $%d AND CASE"
                      " WHEN parents IS NULL THEN true WHEN $%d - lo >= length(parents)::bigint * 8"
                      " THEN false ELSE get_bit(parents, ($%d - lo)::int) = 1 END",
                      bounds, lo, key, key, key);
    }
    const char *dir = f->newest_first ? "DESC" : "ASC";
    snprintf(sql + m, cap - (size_t)m, " ORDER BY %s %s, id %s",
             f->newest_first ? "start_max" : "start_min", dir, dir);
}

store_cursor *pgr_list_segments(store *s, const store_segment_filter *f, store_err *e)
{
    char sql[2048];
    char *fns = NULL, *sess = NULL;
    pg_params pp = {0};
    listing_sql(s, f, sql, sizeof sql, &pp, &fns, &sess);
    int64_t session = f->parent < 0 ? -f->parent : f->session;
    store_cursor *c = NULL;
    if ((f->nsessions && !sess && session <= 0) || (f->nfunctions && !fns))
        set_nomem(e);
    else
        c = cursor_new(s, PGR_SEGMENTS, sql, &pp, e);
    if (c)
        ((pgr_cursor *)c)->with_links = f->parent != 0;
    free(fns);
    free(sess);
    return c;
}

store_cursor *pgr_read_contexts(store *s, const store_context_filter *f, store_err *e)
{
    if (pg_schema_of(s) < 2) /* no spans before schema 2: no row */
        return cursor_new(s, PGR_CONTEXTS,
                          "SELECT NULL::bigint, NULL::bigint, NULL::text, NULL::text,"
                          " NULL::bigint, NULL::bigint WHERE false",
                          NULL, e);
    char sql[300];
    pg_params pp = {0};
    pg_text(&pp, (const char *)f->kind.p, f->kind.n); /* p NULL: SQL NULL, any kind */
    int n = snprintf(sql, sizeof sql,
                     "SELECT session, id, kind, name, start_ns, end_ns FROM contexts"
                     " WHERE %s",
                     f->kind.p ? "kind = $1" : "$1::text IS NULL");
    if (f->name.p) {
        pg_text(&pp, (const char *)f->name.p, f->name.n);
        n += snprintf(sql + n, sizeof sql - (size_t)n, " AND name = $%d", pp.n);
    }
    if (f->session > 0) {
        pg_int(&pp, f->session);
        pg_int(&pp, f->from_id);
        n += snprintf(sql + n, sizeof sql - (size_t)n, " AND session = $%d AND id >= $%d", pp.n - 1,
                      pp.n);
    }
    snprintf(sql + n, sizeof sql - (size_t)n, " ORDER BY session, id");
    return cursor_new(s, PGR_CONTEXTS, sql, &pp, e);
}

static void read_segment(const PGresult *r, int i, int with_data, store_segment *g)
{
    g->id = pg_get_int(r, i, 0);
    g->session = pg_get_int(r, i, 1);
    g->function = pg_get_int(r, i, 2);
    g->n = pg_get_int(r, i, 3);
    g->start_min = pg_get_int(r, i, 4);
    g->start_max = pg_get_int(r, i, 5);
    g->dur_min = pg_get_int(r, i, 6);
    g->dur_max = pg_get_int(r, i, 7);
    g->raised = pg_get_int(r, i, 8);
    g->data = NULL;
    g->len = 0;
    g->links = STORE_NONE;
    if (with_data) {
        store_bytes b = pg_get_bytes(r, i, 9);
        g->data = b.p;
        g->len = b.n;
    }
}

static void read_session(const PGresult *r, int i, store_session_row *s)
{
    s->id = pg_get_int(r, i, 0);
    s->start_ns = pg_get_int(r, i, 1);
    s->end_ns = pg_get_int(r, i, 2);
    s->host = pg_get_bytes(r, i, 3);
    s->pid = pg_get_int(r, i, 4);
    s->ppid = pg_get_int(r, i, 5);
    s->parent = pg_get_int(r, i, 6);
    s->argv = pg_get_bytes(r, i, 7);
    s->python = pg_get_bytes(r, i, 8);
    s->calltape = pg_get_bytes(r, i, 9);
    s->mpi_rank = pg_get_int(r, i, 10);
    for (int k = 0; k < STORE_NCOUNTERS; k++)
        s->counters[k] = pg_get_int(r, i, 11 + k);
    s->sys_path0 = pg_get_bytes(r, i, 16);
    s->cwd = pg_get_bytes(r, i, 17);
}

static void read_function(const PGresult *r, int i, store_function_row *f)
{
    f->id = pg_get_int(r, i, 0);
    f->module = pg_get_bytes(r, i, 1);
    f->qualname = pg_get_bytes(r, i, 2);
    f->file = pg_get_bytes(r, i, 3);
    f->line = pg_get_int(r, i, 4);
    f->signature = pg_get_bytes(r, i, 5);
    f->calls = pg_get_int(r, i, 6);
    f->raised = pg_get_int(r, i, 7);
    f->total_ns = pg_get_int(r, i, 8);
    f->min_ns = pg_get_int(r, i, 9);
    f->max_ns = pg_get_int(r, i, 10);
    f->self_ns = pg_get_int(r, i, 11);
}

int pgr_next(store_cursor *base, store_row *row, store_err *e)
{
    (void)e;
    pgr_cursor *c = (pgr_cursor *)base;
    if (c->row >= c->nrows)
        return 0;
    int i = c->row++;
    switch (c->kind) {
    case PGR_SESSIONS:
        read_session(c->r, i, &row->session);
        break;
    case PGR_FUNCTIONS:
        read_function(c->r, i, &row->function);
        break;
    case PGR_THREADS:
        row->thread.session = pg_get_int(c->r, i, 0);
        row->thread.idx = pg_get_int(c->r, i, 1);
        row->thread.ident = pg_get_int(c->r, i, 2);
        row->thread.name = pg_get_bytes(c->r, i, 3);
        break;
    case PGR_BLOB: {
        store_bytes b = pg_get_bytes(c->r, i, 0);
        row->blob.data = b.p;
        row->blob.len = b.n;
        row->blob.hash = NULL;
        if (c->with_data) {
            store_bytes h = pg_get_bytes(c->r, i, 1);
            row->blob.hash = h.n == WIRE_HASH_BYTES ? h.p : NULL;
        }
        break;
    }
    case PGR_SEGMENTS:
        read_segment(c->r, i, c->with_data, &row->segment);
        if (c->with_links)
            row->segment.links = pg_get_int(c->r, i, 9); /* NULL: not counted exactly */
        break;
    case PGR_CONTEXTS:
        row->context.session = pg_get_int(c->r, i, 0);
        row->context.id = pg_get_int(c->r, i, 1);
        row->context.kind = pg_get_bytes(c->r, i, 2);
        row->context.name = pg_get_bytes(c->r, i, 3);
        row->context.start_ns = pg_get_int(c->r, i, 4);
        row->context.end_ns = pg_get_int(c->r, i, 5);
        break;
    }
    return 1;
}

int pgr_load_listed(store_cursor *base, int64_t id, store_segment *out, store_err *e)
{
    pg_params pp = {0};
    pg_int(&pp, id);
    PGresult *r =
        pgr_query(base->s, "SELECT " SEGMENT_COLUMNS ", data FROM segments WHERE id = $1", &pp, e);
    if (!r)
        return -1;
    if (pq()->ntuples(r) < 1) {
        pq()->clear(r);
        return 0;
    }
    read_segment(r, 0, 1, out);
    uint8_t *data = malloc(out->len ? out->len : 1);
    if (data && out->len)
        memcpy(data, out->data, out->len);
    out->data = data;
    pq()->clear(r);
    if (!data) {
        set_nomem(e);
        return -1;
    }
    return 1;
}

void pgr_cursor_close(store_cursor *base)
{
    pgr_cursor *c = (pgr_cursor *)base;
    if (!c)
        return;
    pq()->clear(c->r);
    free(c);
}
