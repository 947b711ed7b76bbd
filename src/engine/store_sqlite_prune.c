/*
 * store_sqlite_prune.c - retention on an SQLite tape (store_prune and
 * store_size): which sessions go (ended before a time, beyond the newest
 * N, the oldest while the tape is over a size), deleting them with
 * everything recorded in them, and giving the freed pages back.
 *
 * Invariants: each round of deletion is one transaction (BEGIN
 * IMMEDIATE); the size of a tape is the bytes of its pages in use
 * ((page_count - freelist_count) * page_size), so it is the same number
 * whether the file has shrunk yet or not; by size, the oldest sessions go
 * first and the newest never (a recording may still be writing it); a
 * file made with auto_vacuum = INCREMENTAL (every tape created since
 * retention by size) gives its free pages back to the file system in
 * steps of VACUUM_STEP pages, each its own short transaction, so a
 * recorder waits for one step at most; an older file keeps its size and
 * reuses the freed pages.
 */
#include "store_sqlite.h"

#include <stdio.h>

#define PRUNE_ROUNDS 8    /* by size: rounds of deletion at most (each deletes one or more) */
#define VACUUM_STEP 2048  /* pages given back per step (8 MiB of 4 KiB pages) */
#define VACUUM_STEPS 4096 /* steps at most (32 GiB): others may free pages meanwhile */

/* A round's deletion of the sessions in temp.pruned: the functions lose
 * their calls (their per-session rows), then those sessions' rows go. */
static const char prune_sql[] =
    "UPDATE functions SET"
    " calls = calls - (SELECT coalesce(sum(a.calls), 0) FROM function_sessions a"
    "  WHERE a.function = functions.id AND a.session IN temp.pruned),"
    " raised = raised - (SELECT coalesce(sum(a.raised), 0) FROM function_sessions a"
    "  WHERE a.function = functions.id AND a.session IN temp.pruned),"
    " total_ns = total_ns - (SELECT coalesce(sum(a.total_ns), 0) FROM function_sessions a"
    "  WHERE a.function = functions.id AND a.session IN temp.pruned),"
    " self_ns = self_ns - (SELECT coalesce(sum(a.self_ns), 0) FROM function_sessions a"
    "  WHERE a.function = functions.id AND a.session IN temp.pruned),"
    " min_ns = (SELECT min(a.min_ns) FROM function_sessions a"
    "  WHERE a.function = functions.id AND a.session NOT IN temp.pruned),"
    " max_ns = (SELECT max(a.max_ns) FROM function_sessions a"
    "  WHERE a.function = functions.id AND a.session NOT IN temp.pruned)"
    " WHERE id IN (SELECT function FROM function_sessions WHERE session IN temp.pruned);"
    "DELETE FROM segments WHERE session IN temp.pruned;"
    "DELETE FROM children WHERE session IN temp.pruned;"
    "DELETE FROM function_sessions WHERE session IN temp.pruned;"
    "DELETE FROM threads WHERE session IN temp.pruned;"
    "DELETE FROM contexts WHERE session IN temp.pruned;"
    "DELETE FROM sessions WHERE id IN temp.pruned;"
    "DELETE FROM temp.pruned; COMMIT";

/* Sets the writing error of `s` to `what` and SQLite's message.  -1. */
static int fail(store *s, const char *what)
{
    size_t n = 0;
    char *err = sq_err_of(s, &n);
    snprintf(err, n, "%s: %s", what, sqlite3_errmsg(sq_db(s)));
    return -1;
}

static int exec(store *s, const char *sql, const char *what)
{
    return sqlite3_exec(sq_db(s), sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : fail(s, what);
}

/* The first column of the first row of `sql` into *out. */
static int query_int(store *s, const char *sql, int64_t *out)
{
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(sq_db(s), sql, -1, &q, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(q);
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    return rc == SQLITE_ROW ? 0 : fail(s, "cannot measure the tape");
}

int sq_size(store *s, int64_t *bytes)
{
    return query_int(
        s,
        "SELECT (p.page_count - f.freelist_count) * z.page_size FROM pragma_page_count()"
        " p, pragma_freelist_count() f, pragma_page_size() z",
        bytes);
}

/* One round: the sessions `select_sql` puts into temp.pruned go, in one
 * transaction; adds them and their calls to *sessions and *calls. */
static int prune_round(store *s, const char *select_sql, int64_t *sessions, int64_t *calls,
                       int64_t *gone)
{
    int64_t n = 0, c = 0;
    if (exec(s,
             "BEGIN IMMEDIATE; CREATE TEMP TABLE IF NOT EXISTS pruned(id INTEGER PRIMARY KEY);"
             " DELETE FROM temp.pruned",
             "cannot prune") < 0 ||
        exec(s, select_sql, "cannot prune") < 0 ||
        query_int(s, "SELECT count(*) FROM temp.pruned", &n) < 0 ||
        query_int(s, "SELECT coalesce(sum(n), 0) FROM segments WHERE session IN temp.pruned", &c) <
            0 ||
        exec(s, prune_sql, "cannot prune") < 0) {
        sqlite3_exec(sq_db(s), "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    *sessions += n;
    *calls += c;
    *gone = n;
    return 0;
}

/* Gives the free pages back to the file system, a step at a time, when
 * the file allows it (auto_vacuum = INCREMENTAL). */
static int give_back(store *s)
{
    int64_t mode = 0, free_pages = 0;
    if (query_int(s, "PRAGMA auto_vacuum", &mode) < 0)
        return -1;
    for (int i = 0; mode == 2 && i < VACUUM_STEPS; i++) {
        if (query_int(s, "PRAGMA freelist_count", &free_pages) < 0)
            return -1;
        if (free_pages == 0)
            break;
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA incremental_vacuum(%d)", VACUUM_STEP);
        if (exec(s, sql, "cannot give the freed space back") < 0)
            return -1;
    }
    /* the file shrinks when the log is copied back into it */
    return mode == 2 ? store_checkpoint(s) : 0;
}

int sq_prune(store *s, int64_t before_ns, int64_t keep, int64_t max_bytes, int64_t spare,
             int64_t *sessions, int64_t *calls)
{
    char sql[900];
    int64_t gone = 0;
    *sessions = *calls = 0;
    if (sq_is_readonly(s)) {
        size_t n = 0;
        snprintf(sq_err_of(s, &n), n, "the tape is open read-only");
        return -1;
    }
    if (before_ns != INT64_MIN || keep >= 0) {
        snprintf(sql, sizeof sql,
                 "INSERT INTO temp.pruned SELECT id FROM sessions WHERE id <> %lld AND"
                 " (coalesce(end_ns, start_ns) < %lld OR (%lld >= 0 AND id NOT IN (SELECT id"
                 " FROM sessions ORDER BY start_ns DESC, id DESC LIMIT %lld)))",
                 (long long)spare, (long long)before_ns, (long long)keep,
                 (long long)(keep < 0 ? 0 : keep));
        if (prune_round(s, sql, sessions, calls, &gone) < 0)
            return -1;
    }
    for (int round = 0; max_bytes >= 0 && round < PRUNE_ROUNDS; round++) {
        int64_t size = 0;
        if (sq_size(s, &size) < 0)
            return -1;
        if (size <= max_bytes)
            break;
        /* the oldest sessions whose segments' bytes, summed from the
         * oldest, reach the excess (the other rows and indexes shrink with
         * them: a next round takes more only when still over) */
        snprintf(
            sql, sizeof sql,
            "INSERT INTO temp.pruned SELECT id FROM (SELECT s.id, sum(coalesce(b.bytes, 0))"
            " OVER (ORDER BY s.start_ns, s.id ROWS UNBOUNDED PRECEDING) - coalesce(b.bytes, 0)"
            " AS before FROM sessions s LEFT JOIN (SELECT session, sum(length(data)) AS bytes"
            " FROM segments GROUP BY session) b ON b.session = s.id WHERE s.id <> %lld AND s.id"
            " <> (SELECT id FROM sessions ORDER BY start_ns DESC, id DESC LIMIT 1)) WHERE"
            " before < %lld",
            (long long)spare, (long long)(size - max_bytes));
        if (prune_round(s, sql, sessions, calls, &gone) < 0)
            return -1;
        if (gone == 0)
            break; /* only the newest session is left */
    }
    return give_back(s);
}
