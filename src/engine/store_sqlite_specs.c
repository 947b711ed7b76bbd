/*
 * store_sqlite_specs.c - probe specs on an SQLite tape (store_spec_ops):
 * schema 6's tables and the statements that read and write them.
 *
 * Invariants: `specs` holds one row per spec id and its JSON text;
 * `spec_applied` one row per (spec, process) report, removed with its spec
 * and whenever the spec's text is replaced; meta 'spec_changes' grows by
 * one with every put and delete (never with a report), so a reader learns
 * whether anything changed from one query.  A tape older than schema 6 has
 * no specs: readers see version 0 and none (writers migrate it first; the
 * migration keeps spec tables a downgraded tape still has).
 */
#include "store_sqlite.h"

#include <stdio.h>
#include <string.h>

/* 6: probe specs and the reports of the processes that applied them */
const char sq_schema_v6[] =
    "CREATE TABLE IF NOT EXISTS specs(id TEXT PRIMARY KEY, spec TEXT NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS spec_applied(spec TEXT NOT NULL, process TEXT NOT NULL, info TEXT "
    "NOT NULL,"
    " PRIMARY KEY(spec, process)) WITHOUT ROWID;"
    "INSERT OR IGNORE INTO meta VALUES ('spec_changes', 0);";

static const char version_sql[] = "SELECT value FROM meta WHERE key = 'spec_changes'";
static const char bump_sql[] = "UPDATE meta SET value = value + 1 WHERE key = 'spec_changes'";

/* Fills `e` from the connection of `s` after result `rc`.  Returns -1. */
static int spec_fail(store *s, int rc, store_err *e)
{
    int code = rc & 0xff;
    e->kind = code == SQLITE_NOMEM                                ? STORE_NOMEM
              : (code == SQLITE_CORRUPT || code == SQLITE_NOTADB) ? STORE_DAMAGED
                                                                  : STORE_FAILED;
    snprintf(e->msg, sizeof e->msg, "SQLite reports: %s", sqlite3_errmsg(sq_db(s)));
    return -1;
}

/* Runs `sql` (no rows) with up to three text parameters (NULL: unbound).
 * Sets *changes to the rows changed when not NULL.  Returns 0, or -1 with
 * `e` set. */
static int spec_exec(store *s, const char *sql, const char *a, const char *b, const char *c,
                     int *changes, store_err *e)
{
    sqlite3 *db = sq_db(s);
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &q, NULL);
    const char *p[3] = {a, b, c};
    for (int i = 0; rc == SQLITE_OK && i < 3 && p[i]; i++)
        rc = sqlite3_bind_text(q, i + 1, p[i], -1, SQLITE_TRANSIENT);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(q);
        rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    if (rc == SQLITE_OK && changes)
        *changes = sqlite3_changes(db);
    sqlite3_finalize(q);
    return rc == SQLITE_OK ? 0 : spec_fail(s, rc, e);
}

static int sq_spec_version(store *s, int64_t *version, store_err *e)
{
    *version = 0;
    if (store_version(s) < 6)
        return 0;
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(sq_db(s), version_sql, -1, &q, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(q);
        if (rc == SQLITE_ROW)
            *version = sqlite3_column_int64(q, 0);
        rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    sqlite3_finalize(q);
    return rc == SQLITE_OK ? 0 : spec_fail(s, rc, e);
}

static int sq_read_specs(store *s, int64_t *version, store_spec_fn fn, void *ctx, store_err *e)
{
    *version = 0;
    if (store_version(s) < 6)
        return 0;
    sqlite3 *db = sq_db(s);
    sqlite3_stmt *q = NULL;
    int stopped = 0;
    int rc = sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return spec_fail(s, rc, e);
    if (sq_spec_version(s, version, e) < 0)
        goto error;
    rc = sqlite3_prepare_v2(db,
                            "SELECT s.id, s.spec, a.process, a.info FROM specs s"
                            " LEFT JOIN spec_applied a ON a.spec = s.id ORDER BY s.id, a.process",
                            -1, &q, NULL);
    while (rc == SQLITE_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (fn(ctx, (const char *)sqlite3_column_text(q, 0),
               (const char *)sqlite3_column_text(q, 1), (const char *)sqlite3_column_text(q, 2),
               (const char *)sqlite3_column_text(q, 3)) < 0) {
            stopped = 1;
            break;
        }
        rc = SQLITE_OK;
    }
    if (stopped) {
        e->kind = 0;
        goto error;
    }
    if (rc != SQLITE_DONE) {
        spec_fail(s, rc, e);
        goto error;
    }
    sqlite3_finalize(q);
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    return 0;
error:
    sqlite3_finalize(q);
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

/* Runs `sql` (with a, b) and then the version bump, in one write
 * transaction.  Returns 0, or -1 with `e` set. */
static int spec_write(store *s, const char *sql, const char *sql2, const char *a, const char *b,
                      int *changes, store_err *e)
{
    sqlite3 *db = sq_db(s);
    int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return spec_fail(s, rc, e);
    if (spec_exec(s, sql, a, b, NULL, changes, e) < 0 ||
        spec_exec(s, sql2, a, NULL, NULL, NULL, e) < 0 ||
        spec_exec(s, bump_sql, NULL, NULL, NULL, NULL, e) < 0) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        spec_fail(s, rc, e);
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return 0;
}

static int sq_put_spec(store *s, const char *id, const char *spec, store_err *e)
{
    return spec_write(s,
                      "INSERT INTO specs VALUES (?1, ?2)"
                      " ON CONFLICT(id) DO UPDATE SET spec = excluded.spec",
                      "DELETE FROM spec_applied WHERE spec = ?1", id, spec, NULL, e);
}

static int sq_delete_spec(store *s, const char *id, int *found, store_err *e)
{
    *found = 0;
    return spec_write(s, "DELETE FROM specs WHERE id = ?1",
                      "DELETE FROM spec_applied WHERE spec = ?1", id, NULL, found, e);
}

static int sq_mark_spec(store *s, const char *id, const char *process, const char *info,
                        store_err *e)
{
    return spec_exec(s,
                     "INSERT INTO spec_applied SELECT id, ?2, ?3 FROM specs WHERE id = ?1"
                     " ON CONFLICT(spec, process) DO UPDATE SET info = excluded.info",
                     id, process, info, NULL, e);
}

const store_spec_ops sq_spec_ops = {
    .spec_version = sq_spec_version,
    .read_specs = sq_read_specs,
    .put_spec = sq_put_spec,
    .delete_spec = sq_delete_spec,
    .mark_spec = sq_mark_spec,
};
