/*
 * store_pg_specs.c - probe specs on a PostgreSQL tape (store_spec_ops):
 * schema 3's tables and the statements that read and write them.
 *
 * Invariants: as store_sqlite_specs.c: `specs` one row per id, its JSON
 * text; `spec_applied` one row per (spec, process), gone with its spec and
 * whenever its text is replaced; spec_meta.version grows with every put
 * and delete, never with a report.  A database before schema 3 has no
 * specs: readers see version 0 and none.  The connection is used under the
 * handle's mutex.
 */
#include "store_pg.h"

#include <stdio.h>
#include <string.h>

/* 3: probe specs and the reports of the processes that applied them */
const char pg_schema_v3[] =
    "CREATE TABLE IF NOT EXISTS specs(id text PRIMARY KEY, spec text NOT NULL);"
    "CREATE TABLE IF NOT EXISTS spec_applied(spec text NOT NULL REFERENCES specs(id) ON DELETE "
    "CASCADE,"
    " process text NOT NULL, info text NOT NULL, PRIMARY KEY(spec, process));"
    "CREATE TABLE IF NOT EXISTS spec_meta(version bigint NOT NULL);"
    "INSERT INTO spec_meta SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM spec_meta);";

/* Runs `sql` with the texts a, b, c (NULL: fewer) under the handle's
 * mutex.  Returns the result, or NULL with `e` set. */
static PGresult *spec_run(store *s, const char *sql, const char *a, const char *b, const char *c,
                          store_err *e)
{
    pthread_mutex_t *mu = NULL;
    PGconn *conn = pg_conn_of(s, &mu);
    pg_params pp = {0};
    const char *p[3] = {a, b, c};
    for (int i = 0; i < 3 && p[i]; i++)
        pg_text(&pp, p[i], strlen(p[i]));
    char why[200], state[6];
    pthread_mutex_lock(mu);
    PGresult *r = pg_run(conn, sql, &pp, why, sizeof why, state);
    pthread_mutex_unlock(mu);
    if (!r) {
        e->kind = STORE_FAILED;
        snprintf(e->msg, sizeof e->msg, "PostgreSQL reports: %s", why);
    }
    return r;
}

static int spec_do(store *s, const char *sql, const char *a, const char *b, const char *c,
                   store_err *e)
{
    PGresult *r = spec_run(s, sql, a, b, c, e);
    if (!r)
        return -1;
    pq()->clear(r);
    return 0;
}

static int pgs_spec_version(store *s, int64_t *version, store_err *e)
{
    *version = 0;
    if (pg_schema_of(s) < 3)
        return 0;
    PGresult *r = spec_run(s, "SELECT version FROM spec_meta", NULL, NULL, NULL, e);
    if (!r)
        return -1;
    if (pq()->ntuples(r) > 0)
        *version = pg_get_int(r, 0, 0);
    pq()->clear(r);
    return 0;
}

static int pgs_read_specs(store *s, int64_t *version, store_spec_fn fn, void *ctx, store_err *e)
{
    *version = 0;
    if (pg_schema_of(s) < 3)
        return 0;
    /* one statement: the version and the rows it belongs to, one snapshot */
    PGresult *r = spec_run(s,
                           "SELECT (SELECT version FROM spec_meta), s.id, s.spec, a.process,"
                           " a.info FROM specs s LEFT JOIN spec_applied a ON a.spec = s.id"
                           " UNION ALL SELECT version, NULL, NULL, NULL, NULL FROM spec_meta"
                           " ORDER BY 2 NULLS FIRST, 4",
                           NULL, NULL, NULL, e);
    if (!r)
        return -1;
    int rc = 0;
    for (int i = 0; i < pq()->ntuples(r) && rc == 0; i++) {
        *version = pg_get_int(r, i, 0);
        if (pq()->getisnull(r, i, 1))
            continue;
        rc = fn(ctx, pq()->getvalue(r, i, 1), pq()->getvalue(r, i, 2),
                pq()->getisnull(r, i, 3) ? NULL : pq()->getvalue(r, i, 3),
                pq()->getisnull(r, i, 4) ? NULL : pq()->getvalue(r, i, 4));
    }
    pq()->clear(r);
    if (rc < 0)
        e->kind = 0;
    return rc;
}

static int pgs_put_spec(store *s, const char *id, const char *spec, store_err *e)
{
    return spec_do(s,
                   "WITH p AS (INSERT INTO specs VALUES ($1, $2) ON CONFLICT(id) DO UPDATE"
                   " SET spec = excluded.spec RETURNING id),"
                   " d AS (DELETE FROM spec_applied WHERE spec = $1)"
                   " UPDATE spec_meta SET version = version + 1",
                   id, spec, NULL, e);
}

static int pgs_delete_spec(store *s, const char *id, int *found, store_err *e)
{
    *found = 0;
    PGresult *r = spec_run(s,
                           "WITH d AS (DELETE FROM specs WHERE id = $1 RETURNING id),"
                           " u AS (UPDATE spec_meta SET version = version + 1)"
                           " SELECT count(*)::bigint FROM d",
                           id, NULL, NULL, e);
    if (!r)
        return -1;
    *found = pq()->ntuples(r) > 0 && pg_get_int(r, 0, 0) > 0;
    pq()->clear(r);
    return 0;
}

static int pgs_mark_spec(store *s, const char *id, const char *process, const char *info,
                         store_err *e)
{
    return spec_do(s,
                   "INSERT INTO spec_applied SELECT id, $2, $3 FROM specs WHERE id = $1"
                   " ON CONFLICT(spec, process) DO UPDATE SET info = excluded.info",
                   id, process, info, e);
}

const store_spec_ops pg_spec_ops = {
    .spec_version = pgs_spec_version,
    .read_specs = pgs_read_specs,
    .put_spec = pgs_put_spec,
    .delete_spec = pgs_delete_spec,
    .mark_spec = pgs_mark_spec,
};
