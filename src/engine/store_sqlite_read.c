/*
 * store_sqlite_read.c - the reader's side of the SQLite store: the
 * statements behind store_totals, store_function_count, store_call_total
 * and the cursors of store.h (sessions, functions, the functions of some
 * sessions, threads, a blob, the segments holding a call id, the segment
 * listing of a search, by the children index when it asks for a parent's
 * children, the named spans of sessions), and what their rows mean.
 *
 * Invariants: every statement is prepared on the cursor that steps it, so
 * threads sharing the connection (SQLITE_OPEN_FULLMUTEX) never share a
 * statement; a cursor that reached its end stays there (SQLite would start
 * the statement over); rows point into the statement until its next step;
 * an error's message is the connection's when it is still about that
 * error (another thread may have used the connection since), else the
 * result code's; the file's damage (corrupt, not a database, a schema the
 * fixed statements do not fit) is STORE_DAMAGED, everything else
 * STORE_FAILED or STORE_NOMEM.
 */
#include "store_sqlite.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What a cursor's rows are. */
enum sq_kind { SQ_SESSIONS, SQ_FUNCTIONS, SQ_THREADS, SQ_BLOB, SQ_SEGMENTS, SQ_CONTEXTS };

typedef struct sq_cursor {
    store_cursor base; /* first: the cursor's head */
    enum sq_kind kind;
    sqlite3_stmt *q;
    sqlite3_stmt *load;    /* a listing: one segment's row and bytes */
    sqlite3_stmt *then[2]; /* stepped in turn when q is done (finding a call: the rest
                              by the id index, then by the table itself), or NULL */
    int widening;          /* q is finding a call's rest: its rows widen the id width */
    char *json;            /* a listing: its function ids as a JSON array, or NULL;
                              functions of sessions: the session ids */
    char *sessions_json;   /* a listing: its session ids as a JSON array, or NULL */
    int done;
    int with_data;  /* SQ_SEGMENTS: rows carry the segment's bytes */
    int with_links; /* SQ_SEGMENTS: rows carry the children index's count */
    int64_t key;    /* with_links: the index key (a parent id, or minus a session) */
} sq_cursor;

/* The columns of a segment row, then (when loaded) its bytes. */
#define SEGMENT_COLUMNS "id, session, function, n, start_min, start_max, dur_min, dur_max, raised"
#define SEGMENT_DATA_COLUMN 9

/* The columns of a function row before its aggregates. */
#define FUNCTION_COLUMNS_OF(t)                                                                     \
    t ".id, " t ".module, " t ".qualname, " t ".file, " t ".line, " t ".signature"
#define FUNCTION_COLUMNS "id, module, qualname, file, line, signature"

#define SESSION_COLUMNS_V2                                                                         \
    "id, start_ns, end_ns, host, pid, ppid, parent, argv, python, calltape, mpi_rank,"             \
    " unencodable, pickled, redacted, truncated, dropped"

/* Fills `e` for SQLite's result code `rc` on the connection of `s`.
 * Returns -1. */
static int fail(store *s, int rc, store_err *e)
{
    sqlite3 *db = sq_db(s);
    const char *msg = sqlite3_extended_errcode(db) == rc ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    int code = rc & 0xff;
    if (code == SQLITE_NOMEM) {
        e->kind = STORE_NOMEM;
        snprintf(e->msg, sizeof e->msg, "out of memory reading the tape");
    } else if (code == SQLITE_CORRUPT || code == SQLITE_NOTADB || code == SQLITE_FORMAT ||
               code == SQLITE_RANGE || code == SQLITE_MISMATCH || code == SQLITE_ERROR) {
        /* the reader's statements are fixed: an SQL error means a damaged schema */
        e->kind = STORE_DAMAGED;
        snprintf(e->msg, sizeof e->msg, "SQLite reports: %s", msg);
    } else {
        e->kind = STORE_FAILED;
        snprintf(e->msg, sizeof e->msg, "%s", msg);
    }
    return -1;
}

static void set_nomem(store_err *e)
{
    e->kind = STORE_NOMEM;
    snprintf(e->msg, sizeof e->msg, "out of memory reading the tape");
}

static int64_t int_or_none(sqlite3_stmt *q, int i)
{
    return sqlite3_column_type(q, i) == SQLITE_NULL ? STORE_NONE : sqlite3_column_int64(q, i);
}

static store_bytes text_at(sqlite3_stmt *q, int i)
{
    store_bytes b = {sqlite3_column_text(q, i), 0};
    b.n = (size_t)sqlite3_column_bytes(q, i);
    return b;
}

static store_bytes blob_at(sqlite3_stmt *q, int i)
{
    store_bytes b = {sqlite3_column_blob(q, i), 0};
    b.n = (size_t)sqlite3_column_bytes(q, i);
    return b;
}

/* Prepares `sql` for a new cursor of `kind` on `s`.  NULL with `e`. */
static sq_cursor *cursor_new(store *s, enum sq_kind kind, const char *sql, store_err *e)
{
    sq_cursor *c = calloc(1, sizeof *c);
    if (!c) {
        set_nomem(e);
        return NULL;
    }
    c->base.s = s;
    c->kind = kind;
    int rc = sqlite3_prepare_v2(sq_db(s), sql, -1, &c->q, NULL);
    if (rc != SQLITE_OK) {
        fail(s, rc, e);
        sq_cursor_close(&c->base);
        return NULL;
    }
    return c;
}

/* Runs a statement of one integer row per column, `n` columns, into
 * `out`.  Returns 0, or -1 with `e`. */
static int one_row(store *s, sqlite3_stmt *q, int64_t *out, int n, store_err *e)
{
    int rc = sqlite3_step(q);
    if (rc != SQLITE_ROW)
        return fail(s, rc == SQLITE_DONE ? SQLITE_CORRUPT : rc, e);
    for (int i = 0; i < n; i++)
        out[i] = sqlite3_column_int64(q, i);
    return 0;
}

int sq_totals(store *s, store_counts *out, store_err *e)
{
    sqlite3_stmt *q = NULL;
    int64_t v[3] = {0, 0, 0};
    int rc = sqlite3_prepare_v2(sq_db(s),
                                "SELECT (SELECT coalesce(sum(calls), 0) FROM functions),"
                                " (SELECT count(*) FROM functions),"
                                " (SELECT count(*) FROM sessions)",
                                -1, &q, NULL);
    rc = rc == SQLITE_OK ? one_row(s, q, v, 3, e) : fail(s, rc, e);
    sqlite3_finalize(q);
    if (rc < 0)
        return -1;
    out->calls = v[0];
    out->functions = v[1];
    out->sessions = v[2];
    return 0;
}

int sq_function_count(store *s, int64_t *n, store_err *e)
{
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(sq_db(s), "SELECT count(*) FROM functions", -1, &q, NULL);
    rc = rc == SQLITE_OK ? one_row(s, q, n, 1, e) : fail(s, rc, e);
    sqlite3_finalize(q);
    return rc;
}

int sq_call_total(store *s, const int64_t *functions, size_t n, int64_t *calls, store_err *e)
{
    const char *sql = n ? "SELECT coalesce(sum(calls), 0) FROM functions"
                          " WHERE id IN (SELECT value FROM json_each(?1))"
                        : "SELECT coalesce(sum(calls), 0) FROM functions";
    char *json = n ? store_ids_text(functions, n, '[', ']') : NULL;
    if (n && !json) {
        set_nomem(e);
        return -1;
    }
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(sq_db(s), sql, -1, &q, NULL);
    if (rc == SQLITE_OK && n)
        rc = sqlite3_bind_text(q, 1, json, -1, SQLITE_STATIC);
    rc = rc == SQLITE_OK ? one_row(s, q, calls, 1, e) : fail(s, rc, e);
    sqlite3_finalize(q);
    free(json);
    return rc;
}

store_cursor *sq_read_sessions(store *s, store_err *e)
{
    /* the folders exist from schema version 3 on */
    const char *sql = store_version(s) >= 3
                          ? "SELECT " SESSION_COLUMNS_V2 ", sys_path0, cwd FROM sessions"
                            " ORDER BY id DESC"
                          : "SELECT " SESSION_COLUMNS_V2 ", NULL, NULL FROM sessions"
                            " ORDER BY id DESC";
    sq_cursor *c = cursor_new(s, SQ_SESSIONS, sql, e);
    return c ? &c->base : NULL;
}

store_cursor *sq_read_functions(store *s, store_err *e)
{
    /* self time exists from schema version 4 on */
    const char *sql = store_version(s) >= 4
                          ? "SELECT " FUNCTION_COLUMNS ", calls, raised, total_ns, min_ns, max_ns,"
                            " self_ns FROM functions ORDER BY id"
                          : "SELECT " FUNCTION_COLUMNS ", calls, raised, total_ns, min_ns, max_ns,"
                            " NULL FROM functions ORDER BY id";
    sq_cursor *c = cursor_new(s, SQ_FUNCTIONS, sql, e);
    return c ? &c->base : NULL;
}

store_cursor *sq_read_session_functions(store *s, const int64_t *sessions, size_t n, store_err *e)
{
    /* a sum over rows of which one does not know it (NULL) is not known */
    const char *sql =
        store_version(s) >= 4
            ? "SELECT " FUNCTION_COLUMNS_OF(
                  "f") ", sum(a.calls), sum(a.raised),"
                       " CASE WHEN count(a.total_ns) = count(*) THEN sum(a.total_ns) END,"
                       " min(a.min_ns), max(a.max_ns),"
                       " CASE WHEN count(a.self_ns) = count(*) THEN sum(a.self_ns) END"
                       " FROM function_sessions a JOIN functions f ON f.id = a.function"
                       " WHERE a.session IN (SELECT value FROM json_each(?1)) GROUP BY f.id ORDER "
                       "BY f.id"
            /* older tapes: the segments' zone maps, without total and self */
            : "SELECT " FUNCTION_COLUMNS_OF(
                  "f") ", sum(g.n), sum(g.raised), NULL,"
                       " min(g.dur_min), max(g.dur_max), NULL"
                       " FROM segments g JOIN functions f ON f.id = g.function"
                       " WHERE g.session IN (SELECT value FROM json_each(?1)) GROUP BY f.id ORDER "
                       "BY f.id";
    sq_cursor *c = cursor_new(s, SQ_FUNCTIONS, sql, e);
    if (!c)
        return NULL;
    c->json = store_ids_text(sessions, n, '[', ']');
    int rc = c->json ? sqlite3_bind_text(c->q, 1, c->json, -1, SQLITE_STATIC) : SQLITE_NOMEM;
    if (rc != SQLITE_OK) {
        fail(s, rc, e);
        sq_cursor_close(&c->base);
        return NULL;
    }
    return &c->base;
}

store_cursor *sq_read_threads(store *s, store_err *e)
{
    sq_cursor *c = cursor_new(s, SQ_THREADS, "SELECT session, idx, ident, name FROM threads", e);
    return c ? &c->base : NULL;
}

store_cursor *sq_read_blob(store *s, const uint8_t hash[WIRE_HASH_BYTES], store_err *e)
{
    if (!hash) { /* every blob, with its hash */
        sq_cursor *all = cursor_new(s, SQ_BLOB, "SELECT data, hash FROM blobs ORDER BY id", e);
        return all ? &all->base : NULL;
    }
    sq_cursor *c = cursor_new(s, SQ_BLOB, "SELECT data FROM blobs WHERE hash = ?", e);
    if (!c)
        return NULL;
    int rc = sqlite3_bind_blob(c->q, 1, hash, WIRE_HASH_BYTES, SQLITE_TRANSIENT);
    if (rc != SQLITE_OK) {
        fail(s, rc, e);
        sq_cursor_close(&c->base);
        return NULL;
    }
    return &c->base;
}

/* The newest segments id_width() reads at most. */
#define ID_WIDTH_ROWS "256"

/* The widest id range of a segment as far as known, brought up to date
 * with the segments written since it was last asked, at most the newest
 * ID_WIDTH_ROWS of them (a range of rowids: a tape's first call by id does
 * not read every segment row; a wider segment is still found, by the rest
 * of the index, and widens it).  0, or -1 with `e`. */
static int id_width(store *s, int64_t *width, store_err *e)
{
    sq_id_width *w = sq_id_width_of(s);
    pthread_mutex_lock(&w->mu);
    int64_t from = w->seen;
    pthread_mutex_unlock(&w->mu);
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(sq_db(s),
                                "SELECT max(id), max(id_max - id_min) FROM segments WHERE id >"
                                " max(?1, (SELECT max(id) FROM segments) - " ID_WIDTH_ROWS ")",
                                -1, &q, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(q, 1, from);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(q);
    int64_t seen = 0, wide = 0;
    if (rc == SQLITE_ROW && sqlite3_column_type(q, 0) == SQLITE_INTEGER) {
        seen = sqlite3_column_int64(q, 0);
        wide = sqlite3_column_int64(q, 1);
    }
    sqlite3_finalize(q);
    if (rc != SQLITE_ROW)
        return fail(s, rc, e);
    pthread_mutex_lock(&w->mu);
    if (seen > w->seen)
        w->seen = seen;
    if (wide > w->width)
        w->width = wide;
    *width = w->width;
    pthread_mutex_unlock(&w->mu);
    return 0;
}

/* A segment `width` ids wide was found outside the known width: the next
 * calls by id look that far. */
static void widen(store *s, int64_t width)
{
    sq_id_width *w = sq_id_width_of(s);
    pthread_mutex_lock(&w->mu);
    if (width > w->width)
        w->width = width;
    pthread_mutex_unlock(&w->mu);
}

/* The segments that may hold call `id`: first those whose id range starts
 * within the widest range known below it (a range of the id index), then,
 * should the caller read on (the call was not there: a segment written
 * since, or no such call), the others whose range covers it, and last,
 * should it read on again, every segment whose range covers it found by
 * the table alone, without the index: a damaged index never hides a call
 * that the table holds (a call that is absent costs that scan). */
store_cursor *sq_find_call(store *s, int64_t id, store_err *e)
{
    int64_t width = 0;
    if (id_width(s, &width, e) < 0)
        return NULL;
    sq_cursor *c = cursor_new(s, SQ_SEGMENTS,
                              "SELECT " SEGMENT_COLUMNS ", data FROM segments"
                              " WHERE id_min BETWEEN ?1 - ?2 AND ?1 AND id_max >= ?1",
                              e);
    if (!c)
        return NULL;
    c->with_data = 1;
    int rc = sqlite3_prepare_v2(sq_db(s),
                                "SELECT " SEGMENT_COLUMNS ", data, id_max - id_min FROM segments"
                                " WHERE id_min < ?1 - ?2 AND id_max >= ?1",
                                -1, &c->then[0], NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(sq_db(s),
                                "SELECT " SEGMENT_COLUMNS ", data, id_max - id_min FROM segments"
                                " NOT INDEXED WHERE id_min <= ?1 AND id_max >= ?1",
                                -1, &c->then[1], NULL);
    for (int i = 0; i < 3 && rc == SQLITE_OK; i++) {
        sqlite3_stmt *q = i ? c->then[i - 1] : c->q;
        rc = sqlite3_bind_int64(q, 1, id);
        if (rc == SQLITE_OK && i < 2)
            rc = sqlite3_bind_int64(q, 2, width);
    }
    if (rc != SQLITE_OK) {
        fail(s, rc, e);
        sq_cursor_close(&c->base);
        return NULL;
    }
    return &c->base;
}

/* The bounds of `f` on a segment row, into `out` (`cap` bytes). */
static void listing_bounds(const store_segment_filter *f, char *out, size_t cap)
{
    int n = snprintf(out, cap,
                     "start_max >= ?1 AND start_min <= ?2 AND dur_max >= ?3 AND dur_min <= ?4");
    if (f->session > 0)
        n += snprintf(out + n, cap - (size_t)n, " AND session = ?5");
    else if (f->nsessions)
        n += snprintf(out + n, cap - (size_t)n,
                      " AND session IN (SELECT value FROM json_each(?11))");
    if (f->outcome == OUTCOME_RAISED)
        n += snprintf(out + n, cap - (size_t)n, " AND raised > 0");
    else if (f->outcome == OUTCOME_RETURNED)
        n += snprintf(out + n, cap - (size_t)n, " AND raised < n");
    if (f->nfunctions)
        snprintf(out + n, cap - (size_t)n, " AND function IN (SELECT value FROM json_each(?6))");
}

/* The listing's statement for `f`, into `sql` (`n` bytes).  By parent
 * (?7 the index key: the parent's id, or minus the session for its roots;
 * ?8 for a parent, how far below it a range may start; ?9 the parent's end; ?10 the
 * first segment the index covers): the rows of the children index, which
 * repeat their segment's zone map (for roots, one key: read in start order
 * without sorting), then the segments the index does not cover (written
 * before the tape's upgrade to schema 4, or every segment of an older tape)
 * by session and time window: the slow way, by rowid. */
static void listing_sql(store *s, const store_segment_filter *f, char *sql, size_t cap)
{
    const char *dir = f->newest_first ? "DESC" : "ASC";
    char bounds[400];
    listing_bounds(f, bounds, sizeof bounds);
    int n = 0;
    int64_t from = sq_children_from(s);
    if (!f->parent)
        n = snprintf(sql, cap, "SELECT " SEGMENT_COLUMNS " FROM segments WHERE %s", bounds);
    if (f->parent && from > 1)
        n = snprintf(sql, cap,
                     "SELECT " SEGMENT_COLUMNS ", NULL, NULL, NULL FROM segments NOT INDEXED"
                     " WHERE id < ?10 AND start_min <= ?9 AND %s",
                     bounds);
    if (f->parent && from > 1 && from != INT64_MAX)
        n += snprintf(sql + n, cap - (size_t)n, " UNION ALL ");
    if (f->parent && from != INT64_MAX)
        n += snprintf(sql + n, cap - (size_t)n,
                      "SELECT segment AS id, session, function, n, start_min, start_max, dur_min,"
                      " dur_max, raised, CASE WHEN lo = hi THEN kids END, lo, parents"
                      " FROM children"
                      " WHERE %s AND hi >= ?7 AND %s",
                      f->parent > 0 ? "lo BETWEEN ?7 - ?8 AND ?7" : "lo = ?7", bounds);
    snprintf(sql + n, cap - (size_t)n, " ORDER BY %s %s, id %s",
             f->newest_first ? "start_max" : "start_min", dir, dir);
}

/* Binds the bounds of `f` to the listing of `c`.  Returns SQLite's code. */
static int bind_listing(sq_cursor *c, const store_segment_filter *f)
{
    int rc = sqlite3_bind_int64(c->q, 1, f->since);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(c->q, 2, f->until);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(c->q, 3, f->min_duration);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(c->q, 4, f->max_duration);
    if (rc == SQLITE_OK && f->session > 0)
        rc = sqlite3_bind_int64(c->q, 5, f->session);
    if (rc == SQLITE_OK && f->nfunctions)
        rc = c->json ? sqlite3_bind_text(c->q, 6, c->json, -1, SQLITE_STATIC) : SQLITE_NOMEM;
    if (rc == SQLITE_OK && f->session <= 0 && f->nsessions)
        rc = c->sessions_json ? sqlite3_bind_text(c->q, 11, c->sessions_json, -1, SQLITE_STATIC)
                              : SQLITE_NOMEM;
    int64_t from = sq_children_from(c->base.s);
    if (rc == SQLITE_OK && f->parent && from != INT64_MAX)
        rc = sqlite3_bind_int64(c->q, 7, f->parent);
    if (rc == SQLITE_OK && f->parent > 0 && from != INT64_MAX)
        rc = sqlite3_bind_int64(c->q, 8, SEG_LINK_SPAN);
    if (rc == SQLITE_OK && f->parent && from > 1)
        rc = sqlite3_bind_int64(c->q, 9, f->parent > 0 ? f->parent_end : INT64_MAX);
    if (rc == SQLITE_OK && f->parent && from > 1)
        rc = sqlite3_bind_int64(c->q, 10, from);
    return rc;
}

store_cursor *sq_list_segments(store *s, const store_segment_filter *f, store_err *e)
{
    char sql[2048];
    listing_sql(s, f, sql, sizeof sql);
    sq_cursor *c = cursor_new(s, SQ_SEGMENTS, sql, e);
    if (!c)
        return NULL;
    c->with_links = f->parent != 0;
    c->key = f->parent;
    if (f->nfunctions)
        c->json = store_ids_text(f->functions, f->nfunctions, '[', ']');
    if (f->session <= 0 && f->nsessions)
        c->sessions_json = store_ids_text(f->sessions, f->nsessions, '[', ']');
    int rc =
        sqlite3_prepare_v2(sq_db(s), "SELECT " SEGMENT_COLUMNS ", data FROM segments WHERE id = ?",
                           -1, &c->load, NULL);
    if (rc == SQLITE_OK)
        rc = bind_listing(c, f);
    if (rc != SQLITE_OK) {
        fail(s, rc, e);
        sq_cursor_close(&c->base);
        return NULL;
    }
    return &c->base;
}

store_cursor *sq_read_contexts(store *s, const store_context_filter *f, store_err *e)
{
    char sql[300];
    if (store_version(s) < 5) /* no spans before schema 5: no row */
        snprintf(sql, sizeof sql, "SELECT NULL, NULL, NULL, NULL, NULL, NULL WHERE 0");
    else
        snprintf(sql, sizeof sql,
                 "SELECT session, id, kind, name, start_ns, end_ns FROM contexts"
                 " WHERE %s%s%s ORDER BY session, id",
                 f->kind.p ? "kind = ?1" : "?1 IS NULL", f->name.p ? " AND name = ?2" : "",
                 f->session > 0 ? " AND session = ?3 AND id >= ?4" : "");
    sq_cursor *c = cursor_new(s, SQ_CONTEXTS, sql, e);
    if (!c || store_version(s) < 5)
        return c ? &c->base : NULL;
    int rc = sqlite3_bind_text64(c->q, 1, (const char *)f->kind.p, f->kind.n, SQLITE_TRANSIENT,
                                 SQLITE_UTF8);
    if (rc == SQLITE_OK && f->name.p)
        rc = sqlite3_bind_text64(c->q, 2, (const char *)f->name.p, f->name.n, SQLITE_TRANSIENT,
                                 SQLITE_UTF8);
    if (rc == SQLITE_OK && f->session > 0)
        rc = sqlite3_bind_int64(c->q, 3, f->session);
    if (rc == SQLITE_OK && f->session > 0)
        rc = sqlite3_bind_int64(c->q, 4, f->from_id);
    if (rc != SQLITE_OK) {
        fail(s, rc, e);
        sq_cursor_close(&c->base);
        return NULL;
    }
    return &c->base;
}

static void read_segment(sqlite3_stmt *q, int with_data, store_segment *g)
{
    g->id = sqlite3_column_int64(q, 0);
    g->session = sqlite3_column_int64(q, 1);
    g->function = sqlite3_column_int64(q, 2);
    g->n = sqlite3_column_int64(q, 3);
    g->start_min = sqlite3_column_int64(q, 4);
    g->start_max = sqlite3_column_int64(q, 5);
    g->dur_min = sqlite3_column_int64(q, 6);
    g->dur_max = sqlite3_column_int64(q, 7);
    g->raised = sqlite3_column_int64(q, 8);
    g->data = NULL;
    g->len = 0;
    g->links = STORE_NONE;
    if (with_data) {
        store_bytes b = blob_at(q, SEGMENT_DATA_COLUMN);
        g->data = b.p;
        g->len = b.n;
    }
}

static void read_session(sqlite3_stmt *q, store_session_row *r)
{
    r->id = sqlite3_column_int64(q, 0);
    r->start_ns = sqlite3_column_int64(q, 1);
    r->end_ns = int_or_none(q, 2);
    r->host = text_at(q, 3);
    r->pid = int_or_none(q, 4);
    r->ppid = int_or_none(q, 5);
    r->parent = int_or_none(q, 6);
    r->argv = blob_at(q, 7);
    r->python = text_at(q, 8);
    r->calltape = text_at(q, 9);
    r->mpi_rank = int_or_none(q, 10);
    for (int i = 0; i < STORE_NCOUNTERS; i++)
        r->counters[i] = sqlite3_column_int64(q, 11 + i);
    r->sys_path0 = text_at(q, 16);
    r->cwd = text_at(q, 17);
}

static void read_function(sqlite3_stmt *q, store_function_row *r)
{
    r->id = sqlite3_column_int64(q, 0);
    r->module = text_at(q, 1);
    r->qualname = text_at(q, 2);
    r->file = text_at(q, 3);
    r->line = sqlite3_column_int64(q, 4);
    r->signature = blob_at(q, 5);
    r->calls = sqlite3_column_int64(q, 6);
    r->raised = sqlite3_column_int64(q, 7);
    r->total_ns = int_or_none(q, 8);
    r->min_ns = int_or_none(q, 9);
    r->max_ns = int_or_none(q, 10);
    r->self_ns = int_or_none(q, 11);
}

/* A listing by parent: 0 when the row's bitmap says the range holds no
 * child of the cursor's key (the row's lo and parents columns), else 1. */
static int has_key(const sq_cursor *c)
{
    store_bytes bits = blob_at(c->q, SEGMENT_DATA_COLUMN + 2);
    if (!bits.p)
        return 1; /* one parent, or a segment the index does not cover */
    int64_t at = c->key - sqlite3_column_int64(c->q, SEGMENT_DATA_COLUMN + 1);
    if (at < 0 || (size_t)(at / 8) >= bits.n)
        return 0;
    return (bits.p[at / 8] >> (at % 8)) & 1;
}

int sq_next(store_cursor *base, store_row *row, store_err *e)
{
    sq_cursor *c = (sq_cursor *)base;
    if (c->done)
        return 0;
    int rc;
    while ((rc = sqlite3_step(c->q)) == SQLITE_ROW && c->with_links && !has_key(c))
        ;
    while (rc == SQLITE_DONE && c->then[0]) {
        sqlite3_finalize(c->q);
        c->q = c->then[0];
        c->then[0] = c->then[1];
        c->then[1] = NULL;
        c->widening = 1;
        rc = sqlite3_step(c->q);
    }
    if (rc == SQLITE_ROW && c->widening)
        widen(base->s, sqlite3_column_int64(c->q, SEGMENT_DATA_COLUMN + 1));
    if (rc != SQLITE_ROW) {
        c->done = 1;
        return rc == SQLITE_DONE ? 0 : fail(base->s, rc, e);
    }
    switch (c->kind) {
    case SQ_SESSIONS:
        read_session(c->q, &row->session);
        break;
    case SQ_FUNCTIONS:
        read_function(c->q, &row->function);
        break;
    case SQ_THREADS:
        row->thread.session = sqlite3_column_int64(c->q, 0);
        row->thread.idx = sqlite3_column_int64(c->q, 1);
        row->thread.ident = sqlite3_column_int64(c->q, 2);
        row->thread.name = text_at(c->q, 3);
        break;
    case SQ_BLOB: {
        store_bytes b = blob_at(c->q, 0);
        row->blob.data = b.p;
        row->blob.len = b.n;
        row->blob.hash = NULL;
        if (sqlite3_column_count(c->q) > 1) {
            store_bytes h = blob_at(c->q, 1);
            row->blob.hash = h.n == WIRE_HASH_BYTES ? h.p : NULL;
        }
        break;
    }
    case SQ_SEGMENTS:
        read_segment(c->q, c->with_data, &row->segment);
        if (c->with_links)
            row->segment.links = int_or_none(c->q, SEGMENT_DATA_COLUMN);
        break;
    case SQ_CONTEXTS:
        row->context.session = sqlite3_column_int64(c->q, 0);
        row->context.id = sqlite3_column_int64(c->q, 1);
        row->context.kind = text_at(c->q, 2);
        row->context.name = text_at(c->q, 3);
        row->context.start_ns = sqlite3_column_int64(c->q, 4);
        row->context.end_ns = int_or_none(c->q, 5);
        break;
    }
    return 1;
}

int sq_load_listed(store_cursor *base, int64_t id, store_segment *out, store_err *e)
{
    sq_cursor *c = (sq_cursor *)base;
    int rc = sqlite3_bind_int64(c->load, 1, id);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(c->load);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(c->load);
        return rc == SQLITE_DONE ? 0 : fail(base->s, rc, e);
    }
    read_segment(c->load, 1, out);
    uint8_t *data = malloc(out->len ? out->len : 1);
    if (data && out->len)
        memcpy(data, out->data, out->len);
    out->data = data;
    sqlite3_reset(c->load);
    if (!data) {
        set_nomem(e);
        return -1;
    }
    return 1;
}

void sq_cursor_close(store_cursor *base)
{
    sq_cursor *c = (sq_cursor *)base;
    if (!c)
        return;
    sqlite3_finalize(c->q);
    sqlite3_finalize(c->load);
    sqlite3_finalize(c->then[0]);
    sqlite3_finalize(c->then[1]);
    free(c->json);
    free(c->sessions_json);
    free(c);
}
