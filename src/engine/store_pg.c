/*
 * store_pg.c - the tape as a PostgreSQL database, through libpq loaded at
 * run time: connecting (a postgresql:// URL, or libpq's other forms of
 * it; passwords from the URL, ~/.pgpass or PGPASSWORD, never stored or
 * printed), the schema and its migrations, the writer's statements.
 * The reader's statements are in store_pg_read.c.
 *
 * Invariants: the schema is created and migrated under a transaction-level
 * advisory lock, so many processes may start at once; table
 * calltape_version holds its version.  Call ids come from the sequence
 * call_ids, which moves by one block (writer.c's ID_BLOCK) per nextval, so
 * ids are unique across processes and hosts.  A session's writer is the
 * only one to write its session, threads and per-session aggregates
 * (function_sessions; the tape-wide aggregates are their sums, read by
 * the reader), so concurrent writers contend on no row but the shared
 * functions and blobs they insert.  Messages name the tape by its URL
 * with the password redacted (store_redact).
 */
#include "store_pg.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PG_SCHEMA_VERSION 4    /* 4: the children index; 3: probe specs; 2: named spans */
#define PG_LOCK_KEY 0x43546170 /* "CTap": the advisory lock of migrations */
#define PG_ID_BLOCK 65536      /* writer.c's ID_BLOCK */

/* ---- libpq, loaded at run time ------------------------------------------ */

static pq_api api;
static int api_state; /* 0: not tried, 1: loaded, -1: missing */
static char api_err[200];
static pthread_once_t api_once = PTHREAD_ONCE_INIT;

static void load_api(void)
{
    /* CALLTAPE_LIBPQ names another file (a libpq outside the linker's
     * paths, or macOS's libpq.5.dylib) */
    const char *name = getenv("CALLTAPE_LIBPQ");
    void *h = dlopen(name && *name ? name : "libpq.so.5", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(api_err, sizeof api_err, "%s", dlerror());
        api_state = -1;
        return;
    }
    void *f = NULL;
    const char *missing = NULL;
#define LOAD(field, name)                                                                          \
    if (!missing && !(f = dlsym(h, name)))                                                         \
        missing = name;                                                                            \
    if (!missing)                                                                                  \
        memcpy(&api.field, &f, sizeof f);
    LOAD(connectdb_params, "PQconnectdbParams")
    LOAD(status, "PQstatus")
    LOAD(error_message, "PQerrorMessage")
    LOAD(finish, "PQfinish")
    LOAD(reset, "PQreset")
    LOAD(db, "PQdb")
    LOAD(user, "PQuser")
    LOAD(exec, "PQexec")
    LOAD(exec_params, "PQexecParams")
    LOAD(result_status, "PQresultStatus")
    LOAD(result_error_field, "PQresultErrorField")
    LOAD(result_error_message, "PQresultErrorMessage")
    LOAD(clear, "PQclear")
    LOAD(ntuples, "PQntuples")
    LOAD(getvalue, "PQgetvalue")
    LOAD(getlength, "PQgetlength")
    LOAD(getisnull, "PQgetisnull")
    LOAD(set_notice_processor, "PQsetNoticeProcessor")
#undef LOAD
    if (missing) {
        snprintf(api_err, sizeof api_err, "libpq.so.5 has no %s", missing);
        api_state = -1;
        return;
    }
    api_state = 1;
}

/* A notice processor that keeps the server's notices to itself. */
static void ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* Loads libpq once.  Returns 0, or -1 with one sentence in `err`. */
static int pq_load(const char *shown, char *err, size_t errlen)
{
    pthread_once(&api_once, load_api);
    if (api_state == 1)
        return 0;
    snprintf(err, errlen,
             "cannot use the PostgreSQL tape %s: libpq, PostgreSQL's client library, is not"
             " installed (%s); install it (Debian, Ubuntu: apt-get install libpq5)",
             shown, api_err);
    return -1;
}

const pq_api *pq(void)
{
    return &api;
}

/* ---- parameters and results -------------------------------------------- */

void pg_int(pg_params *pp, int64_t v)
{
    int i = pp->n++;
    uint64_t u = (uint64_t)v;
    for (int k = 0; k < 8; k++)
        pp->ints[i][k] = (char)(u >> (56 - 8 * k));
    pp->v[i] = pp->ints[i];
    pp->len[i] = 8;
    pp->fmt[i] = 1;
    pp->oid[i] = 20; /* int8 */
}

/* An int8, or NULL when `v` is STORE_NONE. */
static void pg_int_or_null(pg_params *pp, int64_t v)
{
    pg_int(pp, v);
    if (v == STORE_NONE)
        pp->v[pp->n - 1] = NULL;
}

void pg_text(pg_params *pp, const char *p, size_t n)
{
    int i = pp->n++;
    pp->v[i] = p;
    pp->len[i] = (int)n;
    pp->fmt[i] = 1;
    pp->oid[i] = 25; /* text */
}

void pg_bytea(pg_params *pp, const void *p, size_t n)
{
    int i = pp->n++;
    pp->v[i] = p ? (const char *)p : NULL;
    pp->len[i] = (int)n;
    pp->fmt[i] = 1;
    pp->oid[i] = 17; /* bytea */
}

void pg_array(pg_params *pp, const char *literal, pq_oid oid)
{
    int i = pp->n++;
    pp->v[i] = literal;
    pp->len[i] = 0;
    pp->fmt[i] = 0; /* text: "{1,2,3}" */
    pp->oid[i] = oid;
}

void pg_int_array(pg_params *pp, const char *literal)
{
    pg_array(pp, literal, 1016); /* int8[] */
}

PGresult *pg_run(PGconn *c, const char *sql, const pg_params *pp, char *why, size_t n,
                 char state[6])
{
    PGresult *r = pq()->exec_params(c, sql, pp ? pp->n : 0, pp ? pp->oid : NULL, pp ? pp->v : NULL,
                                    pp ? pp->len : NULL, pp ? pp->fmt : NULL, 1);
    int st = r ? pq()->result_status(r) : -1;
    if (st == PQ_COMMAND_OK || st == PQ_TUPLES_OK)
        return r;
    const char *code = r ? pq()->result_error_field(r, PQ_DIAG_SQLSTATE) : NULL;
    snprintf(state, 6, "%s", code ? code : "");
    const char *msg = r ? pq()->result_error_message(r) : pq()->error_message(c);
    snprintf(why, n, "%s", msg && *msg ? msg : "the connection failed");
    size_t len = strlen(why);
    while (len && (why[len - 1] == '\n' || why[len - 1] == ' '))
        why[--len] = 0; /* libpq ends its messages with a newline */
    pq()->clear(r);
    return NULL;
}

int64_t pg_get_int(const PGresult *r, int row, int col)
{
    if (pq()->getisnull(r, row, col))
        return STORE_NONE;
    const unsigned char *p = (const unsigned char *)pq()->getvalue(r, row, col);
    int len = pq()->getlength(r, row, col);
    uint64_t u = 0;
    for (int k = 0; k < len; k++)
        u = (u << 8) | p[k];
    if (len == 4) /* an int4 (count of a small table never is: cast to int8) */
        return (int32_t)(uint32_t)u;
    return (int64_t)u;
}

store_bytes pg_get_bytes(const PGresult *r, int row, int col)
{
    store_bytes b = {NULL, 0};
    if (!pq()->getisnull(r, row, col)) {
        b.p = (const uint8_t *)pq()->getvalue(r, row, col);
        b.n = (size_t)pq()->getlength(r, row, col);
    }
    return b;
}

/* ---- the handle --------------------------------------------------------- */

typedef struct pg_store {
    store base; /* first: the handle's head */
    PGconn *conn;
    pthread_mutex_t mu; /* a reader: one statement at a time on conn */
    int64_t schema;     /* the database's schema version (a reader reads older ones) */
    char shown[256];    /* the URL, password redacted */
    char err[1024];
} pg_store;

static const store_ops pg_ops;

int64_t pg_schema_of(store *s)
{
    return ((pg_store *)s)->schema;
}

PGconn *pg_conn_of(store *s, pthread_mutex_t **mu)
{
    pg_store *p = (pg_store *)s;
    *mu = &p->mu;
    return p->conn;
}

static void pg_close(store *base)
{
    pg_store *s = (pg_store *)base;
    if (!s)
        return;
    if (s->conn)
        pq()->finish(s->conn);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* One sentence for a failed connection: a refused login, a missing
 * database, else libpq's own words. */
static void connect_failed(pg_store *s, char *err, size_t errlen)
{
    const char *msg = pq()->error_message(s->conn);
    const char *db = pq()->db(s->conn), *user = pq()->user(s->conn);
    char why[400];
    snprintf(why, sizeof why, "%s", msg ? msg : "");
    for (char *c = why; *c; c++)
        if (*c == '\n')
            *c = ' ';
    size_t n = strlen(why);
    while (n && why[n - 1] == ' ')
        why[--n] = 0;
    if (strstr(why, "password authentication failed") || strstr(why, "no password supplied") ||
        strstr(why, "authentication failed"))
        snprintf(err, errlen,
                 "cannot connect to the PostgreSQL tape %s: the server refused the login of"
                 " user %s (check the password in ~/.pgpass or PGPASSWORD, or the URL)",
                 s->shown, user ? user : "?");
    else if (strstr(why, "does not exist") && strstr(why, "database"))
        snprintf(err, errlen,
                 "cannot connect to the PostgreSQL tape %s: the database %s does not exist"
                 " (create it first: createdb %s)",
                 s->shown, db ? db : "?", db ? db : "NAME");
    else
        snprintf(err, errlen, "cannot connect to the PostgreSQL tape %s: %s", s->shown, why);
}

/* Connects to `url`.  NULL with one sentence in `err`. */
static pg_store *pg_connect(const char *url, char *err, size_t errlen)
{
    char shown[256];
    store_redact(url, shown, sizeof shown);
    if (pq_load(shown, err, errlen) < 0)
        return NULL;
    pg_store *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory opening %s", shown);
        return NULL;
    }
    s->base.ops = &pg_ops;
    pthread_mutex_init(&s->mu, NULL);
    memcpy(s->shown, shown, sizeof shown);
    /* ours first: the URL's own settings override them */
    const char *const keys[] = {"connect_timeout", "application_name", "dbname", NULL};
    const char *const values[] = {"10", "calltape", url, NULL};
    s->conn = pq()->connectdb_params(keys, values, 1);
    if (!s->conn) {
        snprintf(err, errlen, "out of memory connecting to %s", shown);
        pg_close(&s->base);
        return NULL;
    }
    if (pq()->status(s->conn) != PQ_CONNECTION_OK) {
        connect_failed(s, err, errlen);
        pg_close(&s->base);
        return NULL;
    }
    /* the server's notices ("terminating connection due to ...") are not
     * the program's output: libpq would print them on its stderr */
    pq()->set_notice_processor(s->conn, ignore_notice, NULL);
    return s;
}

/* Runs `sql` (no rows wanted) on the store.  0, or -1 with s->err
 * "what: reason". */
static int pg_exec(pg_store *s, const char *sql, const pg_params *pp, const char *what)
{
    char why[400], state[6];
    if (!pp) { /* several statements: only the simple protocol runs them */
        PGresult *r = pq()->exec(s->conn, sql);
        int st = r ? pq()->result_status(r) : -1;
        if (st == PQ_COMMAND_OK || st == PQ_TUPLES_OK) {
            pq()->clear(r);
            return 0;
        }
        snprintf(why, sizeof why, "%s", r ? pq()->result_error_message(r) : "no connection");
        pq()->clear(r);
        size_t len = strlen(why);
        while (len && (why[len - 1] == '\n' || why[len - 1] == ' '))
            why[--len] = 0;
        snprintf(s->err, sizeof s->err, "%s on the PostgreSQL tape %s: %s", what, s->shown, why);
        return -1;
    }
    PGresult *r = pg_run(s->conn, sql, pp, why, sizeof why, state);
    if (!r) {
        snprintf(s->err, sizeof s->err, "%s on the PostgreSQL tape %s: %s", what, s->shown, why);
        return -1;
    }
    pq()->clear(r);
    return 0;
}

/* ---- the schema ---------------------------------------------------------- */

/* migrations[v] turns schema v into v + 1; index 0 creates the schema
 * (the same tables as the SQLite file's, bytea for BLOB, bigint ids). */
static const char *const migrations[PG_SCHEMA_VERSION] = {
    "CREATE SEQUENCE call_ids INCREMENT BY 65536 START WITH 1;"
    "CREATE TABLE sessions(id bigserial PRIMARY KEY, start_ns bigint NOT NULL,"
    " end_ns bigint, host text, pid bigint, ppid bigint, parent bigint, argv bytea,"
    " python text, calltape text, mpi_rank bigint,"
    " unencodable bigint NOT NULL DEFAULT 0, pickled bigint NOT NULL DEFAULT 0,"
    " redacted bigint NOT NULL DEFAULT 0, truncated bigint NOT NULL DEFAULT 0,"
    " dropped bigint NOT NULL DEFAULT 0, sys_path0 text, cwd text);"
    "CREATE TABLE threads(session bigint NOT NULL, idx bigint NOT NULL, ident bigint,"
    " native_id bigint, name text, PRIMARY KEY(session, idx));"
    "CREATE TABLE functions(id bigserial PRIMARY KEY, module text NOT NULL,"
    " qualname text NOT NULL, file text NOT NULL, line bigint NOT NULL,"
    " signature bytea NOT NULL, UNIQUE(module, qualname, file, line, signature));"
    "CREATE TABLE function_sessions(session bigint NOT NULL, function bigint NOT NULL,"
    " calls bigint NOT NULL, raised bigint NOT NULL, total_ns bigint NOT NULL,"
    " self_ns bigint NOT NULL, min_ns bigint NOT NULL, max_ns bigint NOT NULL,"
    " PRIMARY KEY(session, function));"
    "CREATE INDEX function_sessions_by_function ON function_sessions(function);"
    "CREATE TABLE segments(id bigserial PRIMARY KEY, session bigint NOT NULL,"
    " function bigint NOT NULL, n bigint NOT NULL, id_min bigint NOT NULL,"
    " id_max bigint NOT NULL, start_min bigint NOT NULL, start_max bigint NOT NULL,"
    " end_max bigint NOT NULL, dur_min bigint NOT NULL, dur_max bigint NOT NULL,"
    " raised bigint NOT NULL, data bytea NOT NULL);"
    "CREATE INDEX segments_by_function ON segments(function, start_min);"
    "CREATE INDEX segments_by_start ON segments(start_min);"
    "CREATE INDEX segments_by_start_max ON segments(start_max);"
    "CREATE INDEX segments_by_duration ON segments(dur_max);"
    "CREATE INDEX segments_by_id ON segments(id_min);"
    "CREATE INDEX segments_by_session ON segments(session, start_min);"
    "CREATE TABLE blobs(hash bytea PRIMARY KEY, size bigint NOT NULL, data bytea NOT NULL);",
    /* 2: the spans of a session's time the program named (store_context) */
    "CREATE TABLE contexts(session bigint NOT NULL, id bigint NOT NULL, kind text NOT NULL,"
    " name text NOT NULL, start_ns bigint NOT NULL, end_ns bigint, PRIMARY KEY(session, id));"
    "CREATE INDEX contexts_by_name ON contexts(kind, name);",
    pg_schema_v3, /* store_pg_specs.c */
    /* 4: the children index (engine.h, seg_link), as the SQLite file's
     * (store_sqlite.c, schema 4): one row per range of a segment's parent
     * ids, repeating the segment's zone map; segments written before (ids
     * below calltape_meta 'children_from') have none, and readers find their
     * children by the session and the parent's time window */
    "CREATE TABLE children(lo bigint NOT NULL, start_min bigint NOT NULL,"
    " segment bigint NOT NULL, hi bigint NOT NULL, kids bigint NOT NULL,"
    " session bigint NOT NULL, function bigint NOT NULL, n bigint NOT NULL,"
    " start_max bigint NOT NULL, dur_min bigint NOT NULL, dur_max bigint NOT NULL,"
    " raised bigint NOT NULL, parents bytea, PRIMARY KEY(lo, start_min, segment));"
    "CREATE TABLE calltape_meta(key text PRIMARY KEY, value bigint NOT NULL);"
    "INSERT INTO calltape_meta VALUES ('children_from',"
    " (SELECT coalesce(max(id), 0) + 1 FROM segments));",
};

/* The schema version of the database (0: no tape there), -1 on error. */
static int64_t schema_version(pg_store *s)
{
    char why[400], state[6];
    int64_t v = 0;
    for (int step = 0; step < 2; step++) {
        PGresult *r = pg_run(s->conn,
                             step ? "SELECT max(version) FROM calltape_version"
                                  : "SELECT (to_regclass('calltape_version') IS NOT NULL)"
                                    "::int::bigint",
                             NULL, why, sizeof why, state);
        if (!r) {
            snprintf(s->err, sizeof s->err, "cannot read the PostgreSQL tape %s: %s", s->shown,
                     why);
            return -1;
        }
        v = pq()->ntuples(r) ? pg_get_int(r, 0, 0) : 0;
        pq()->clear(r);
        if (v == STORE_NONE)
            v = 0;
        if (!v)
            break;
    }
    return v;
}

/* Creates or migrates the schema, under the advisory lock.  0 or -1. */
static int migrate(pg_store *s)
{
    char sql[96];
    snprintf(sql, sizeof sql, "BEGIN; SELECT pg_advisory_xact_lock(%d)", PG_LOCK_KEY);
    PGresult *r = pq()->exec(s->conn, sql);
    int ok = r && pq()->result_status(r) == PQ_TUPLES_OK;
    pq()->clear(r);
    if (!ok) {
        snprintf(s->err, sizeof s->err, "cannot lock the PostgreSQL tape %s: %s", s->shown,
                 pq()->error_message(s->conn));
        goto error;
    }
    int64_t v = schema_version(s);
    if (v < 0)
        goto error;
    if (v > PG_SCHEMA_VERSION) {
        snprintf(s->err, sizeof s->err,
                 "%s was written by a newer calltape (PostgreSQL schema %lld; this calltape"
                 " writes up to %d): upgrade calltape to record onto it",
                 s->shown, (long long)v, PG_SCHEMA_VERSION);
        goto error;
    }
    if (v == 0 && pg_exec(s,
                          "CREATE TABLE calltape_version(version bigint NOT NULL);"
                          "INSERT INTO calltape_version VALUES (0)",
                          NULL, "cannot create the schema") < 0)
        goto error;
    for (int64_t k = v; k < PG_SCHEMA_VERSION; k++)
        if (pg_exec(s, migrations[k], NULL, "cannot create the schema") < 0)
            goto error;
    snprintf(sql, sizeof sql, "UPDATE calltape_version SET version = %d; COMMIT",
             PG_SCHEMA_VERSION);
    if (pg_exec(s, sql, NULL, "cannot create the schema") < 0)
        goto error;
    return 0;
error:
    pq()->clear(pq()->exec(s->conn, "ROLLBACK"));
    return -1;
}

static store *pg_open_write(const char *url, char *err, size_t errlen)
{
    pg_store *s = pg_connect(url, err, errlen);
    if (!s)
        return NULL;
    if (migrate(s) < 0) {
        snprintf(err, errlen, "%s", s->err);
        pg_close(&s->base);
        return NULL;
    }
    s->schema = PG_SCHEMA_VERSION;
    return &s->base;
}

static store *pg_open_read(const char *url, char *err, size_t errlen)
{
    pg_store *s = pg_connect(url, err, errlen);
    if (!s)
        return NULL;
    int64_t v = schema_version(s);
    if (v == 0)
        snprintf(err, errlen, "no tape at %s: the database holds no calltape tables", s->shown);
    else if (v > PG_SCHEMA_VERSION)
        snprintf(err, errlen,
                 "%s was written by a newer calltape (PostgreSQL schema %lld; this calltape"
                 " reads up to %d): upgrade calltape to read it",
                 s->shown, (long long)v, PG_SCHEMA_VERSION);
    else if (v < 0)
        snprintf(err, errlen, "%s", s->err);
    if (v < 1 || v > PG_SCHEMA_VERSION) {
        pg_close(&s->base);
        return NULL;
    }
    s->schema = v; /* an older schema is read as it is (store.h) */
    return &s->base;
}

static int pg_check_write(const char *url, char *err, size_t errlen)
{
    store *s = pg_open_write(url, err, errlen);
    store_close(s);
    return s ? 0 : -1;
}

static int pg_claims(const char *path)
{
    return strncmp(path, "postgresql://", 13) == 0 || strncmp(path, "postgres://", 11) == 0;
}

/* ---- the writer's side --------------------------------------------------- */

static const char *pg_errmsg(store *s)
{
    return ((pg_store *)s)->err;
}

static int64_t pg_version(store *s)
{
    (void)s;
    return CALLTAPE_SCHEMA_VERSION; /* every column of the newest SQLite schema */
}

static int pg_same_file(const store *s, const char *path)
{
    (void)s;
    (void)path;
    return 1;
}

static void pg_file_id(const store *s, uint64_t *dev, uint64_t *ino)
{
    (void)s;
    *dev = 0;
    *ino = 0;
}

static int pg_checkpoint(store *s)
{
    (void)s;
    return 0;
}

/* Each round of the writer starts here: a connection the server dropped
 * (a restart, a network outage) is made again, so recording goes on once
 * the server is back (the rounds that failed meanwhile count as dropped). */
static int pg_begin(store *base)
{
    pg_store *s = (pg_store *)base;
    /* a connection found broken at BEGIN (the server restarted since the
     * last round) is made again once, and BEGIN tried again */
    for (int attempt = 0;; attempt++) {
        if (pq()->status(s->conn) != PQ_CONNECTION_OK)
            pq()->reset(s->conn);
        if (pq()->status(s->conn) != PQ_CONNECTION_OK) {
            char why[300];
            snprintf(why, sizeof why, "%s", pq()->error_message(s->conn));
            for (char *c = why; *c; c++)
                if (*c == '\n')
                    *c = ' ';
            snprintf(s->err, sizeof s->err,
                     "the PostgreSQL server of the tape %s cannot be reached: %s", s->shown, why);
            return -1;
        }
        if (pg_exec(s, "BEGIN", NULL, "cannot start a transaction") == 0)
            return 0;
        if (attempt || pq()->status(s->conn) == PQ_CONNECTION_OK)
            return -1;
    }
}

static int pg_commit(store *base)
{
    return pg_exec((pg_store *)base, "COMMIT", NULL, "cannot commit");
}

static void pg_rollback(store *base)
{
    pg_store *s = (pg_store *)base;
    pq()->clear(pq()->exec(s->conn, "ROLLBACK"));
}

static void pg_str(pg_params *pp, const char *p)
{
    pg_text(pp, p, p ? strlen(p) : 0);
}

/* Runs `sql` and reads the int8 of its first row into *out. */
static int pg_returning(pg_store *s, const char *sql, const pg_params *pp, const char *what,
                        int64_t *out, int *found)
{
    char why[400], state[6];
    PGresult *r = pg_run(s->conn, sql, pp, why, sizeof why, state);
    if (!r) {
        snprintf(s->err, sizeof s->err, "%s on the PostgreSQL tape %s: %s", what, s->shown, why);
        return -1;
    }
    *found = pq()->ntuples(r) > 0;
    if (*found)
        *out = pg_get_int(r, 0, 0);
    pq()->clear(r);
    return 0;
}

static int pg_add_session(store *base, const store_session *ss, int64_t *id)
{
    pg_store *s = (pg_store *)base;
    pg_params pp = {0};
    pg_int(&pp, ss->start_ns);
    pg_str(&pp, ss->host);
    pg_int(&pp, ss->pid);
    pg_int(&pp, ss->ppid);
    pg_int_or_null(&pp, ss->parent_session > 0 ? ss->parent_session : STORE_NONE);
    pg_bytea(&pp, ss->argv, ss->argv_len);
    pg_str(&pp, ss->python_version);
    pg_str(&pp, ss->calltape_version);
    pg_int_or_null(&pp, ss->mpi_rank >= 0 ? ss->mpi_rank : STORE_NONE);
    pg_str(&pp, ss->sys_path0);
    pg_str(&pp, ss->cwd);
    int found = 0;
    return pg_returning(s,
                        "INSERT INTO sessions(start_ns, host, pid, ppid, parent, argv, python,"
                        " calltape, mpi_rank, sys_path0, cwd)"
                        " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11) RETURNING id",
                        &pp, "cannot add the session", id, &found);
}

static int pg_update_session(store *base, int64_t id, int64_t start_ns, int64_t end_ns,
                             const int64_t counters[5])
{
    pg_params pp = {0};
    pg_int(&pp, start_ns);
    pg_int(&pp, end_ns);
    for (int i = 0; i < 5; i++)
        pg_int(&pp, counters[i]);
    pg_int(&pp, id);
    return pg_exec((pg_store *)base,
                   "UPDATE sessions SET start_ns = least(start_ns, $1),"
                   " end_ns = greatest(coalesce(end_ns, 0), $2),"
                   " unencodable = unencodable + $3, pickled = pickled + $4,"
                   " redacted = redacted + $5, truncated = truncated + $6,"
                   " dropped = dropped + $7 WHERE id = $8",
                   &pp, "cannot update the session");
}

static int pg_function(store *base, const char *module, size_t module_len, const char *qualname,
                       size_t qualname_len, const char *file, size_t file_len, int64_t line,
                       const uint8_t *sig, size_t sig_len, int64_t *id)
{
    pg_store *s = (pg_store *)base;
    pg_params pp = {0};
    pg_text(&pp, module, module_len);
    pg_text(&pp, qualname, qualname_len);
    pg_text(&pp, file, file_len);
    pg_int(&pp, line);
    pg_bytea(&pp, sig ? sig : (const uint8_t *)"", sig_len);
    static const char find[] = "SELECT id FROM functions WHERE module = $1 AND qualname = $2"
                               " AND file = $3 AND line = $4 AND signature = $5";
    int found = 0;
    if (pg_returning(s, find, &pp, "cannot look up a function", id, &found) < 0 || found)
        return found ? 0 : -1;
    if (pg_returning(s,
                     "INSERT INTO functions(module, qualname, file, line, signature)"
                     " VALUES ($1,$2,$3,$4,$5) ON CONFLICT DO NOTHING RETURNING id",
                     &pp, "cannot add a function", id, &found) < 0 ||
        found)
        return found ? 0 : -1;
    /* another writer inserted it meanwhile (and committed: the insert waited
     * for it); a new statement sees its row */
    if (pg_returning(s, find, &pp, "cannot look up a function", id, &found) < 0)
        return -1;
    if (!found)
        snprintf(s->err, sizeof s->err, "cannot add a function on the PostgreSQL tape %s",
                 s->shown);
    return found ? 0 : -1;
}

static int pg_add_thread(store *base, int64_t session, int64_t idx, int64_t ident,
                         int64_t native_id, const char *name, size_t name_len)
{
    pg_params pp = {0};
    pg_int(&pp, session);
    pg_int(&pp, idx);
    pg_int(&pp, ident);
    pg_int(&pp, native_id);
    pg_text(&pp, name ? name : "", name_len);
    return pg_exec((pg_store *)base,
                   "INSERT INTO threads(session, idx, ident, native_id, name)"
                   " VALUES ($1,$2,$3,$4,$5) ON CONFLICT(session, idx) DO UPDATE SET"
                   " ident = excluded.ident, native_id = excluded.native_id, name = excluded.name",
                   &pp, "cannot add a thread");
}

static int pg_reserve_ids(store *base, int64_t count, int64_t *first)
{
    pg_store *s = (pg_store *)base;
    if (count > PG_ID_BLOCK) {
        snprintf(s->err, sizeof s->err, "cannot reserve %lld call ids at once (at most %d)",
                 (long long)count, PG_ID_BLOCK);
        return -1;
    }
    int found = 0;
    return pg_returning(s, "SELECT nextval('call_ids')", NULL, "cannot reserve call ids", first,
                        &found);
}

static int pg_put_blob(store *base, const uint8_t hash[WIRE_HASH_BYTES], const uint8_t *data,
                       size_t n)
{
    pg_params pp = {0};
    pg_bytea(&pp, hash, WIRE_HASH_BYTES);
    pg_int(&pp, (int64_t)n);
    pg_bytea(&pp, data ? data : (const uint8_t *)"", n);
    return pg_exec((pg_store *)base,
                   "INSERT INTO blobs(hash, size, data) VALUES ($1,$2,$3) ON CONFLICT DO NOTHING",
                   &pp, "cannot store a blob");
}

/* The children-index ranges of `b` (seg_builder_links) as the array
 * literals of pg_add_segment, malloc'ed: lo, hi, kids (int8[]) and parents
 * (bytea[], NULL for a range of one parent); the roots under minus
 * `session`.  0, or -1 when memory ran out. */
static int link_arrays(const seg_builder *b, int64_t session, char *lit[4])
{
    static const char hex[] = "0123456789abcdef";
    size_t n = b->links.len / sizeof(seg_link);
    int64_t *v = malloc((3 * n + 1) * sizeof *v);
    wbuf bits;
    wbuf_init(&bits, NULL, 0);
    wbuf_byte(&bits, '{');
    for (size_t i = 0; v && i < n; i++) {
        seg_link k;
        memcpy(&k, b->links.data + i * sizeof k, sizeof k);
        v[i] = k.lo ? k.lo : -session;
        v[n + i] = k.lo ? k.hi : -session;
        v[2 * n + i] = k.n;
        if (i)
            wbuf_byte(&bits, ',');
        if (k.lo == k.hi) {
            wbuf_put(&bits, "NULL", 4);
            continue;
        }
        wbuf_put(&bits, "\"\\\\x", 4); /* "\\x: an escaped backslash, then hex */
        for (size_t j = 0; j < (size_t)((k.hi - k.lo) / 8 + 1); j++) {
            wbuf_byte(&bits, (uint8_t)hex[k.parents[j] >> 4]);
            wbuf_byte(&bits, (uint8_t)hex[k.parents[j] & 15]);
        }
        wbuf_byte(&bits, '"');
    }
    wbuf_put(&bits, "}", 2); /* with its NUL */
    for (int a = 0; a < 3; a++)
        lit[a] = v ? store_ids_text(v + (size_t)a * n, n, '{', '}') : NULL;
    lit[3] = bits.failed ? NULL : strdup((const char *)bits.data);
    free(v);
    wbuf_free(&bits);
    return lit[0] && lit[1] && lit[2] && lit[3] ? 0 : -1;
}

/* One statement per segment: its row, its children-index rows and its
 * session's aggregates. */
static int pg_add_segment(store *base, int64_t session, int64_t function, const seg_builder *b,
                          const uint8_t *data, size_t n)
{
    pg_store *s = (pg_store *)base;
    char *arr[4] = {NULL, NULL, NULL, NULL};
    int rc = -1;
    if (link_arrays(b, session, arr) < 0) {
        snprintf(s->err, sizeof s->err, "out of memory storing calls");
        goto done;
    }
    pg_params pp = {0};
    pg_int(&pp, session);
    pg_int(&pp, function);
    pg_int(&pp, (int64_t)b->n);
    pg_int(&pp, b->id_min);
    pg_int(&pp, b->id_max);
    pg_int(&pp, b->start_min);
    pg_int(&pp, b->start_max);
    pg_int(&pp, b->end_max);
    pg_int(&pp, b->dur_min);
    pg_int(&pp, b->dur_max);
    pg_int(&pp, b->n_raised);
    pg_bytea(&pp, data, n);
    pg_int(&pp, b->total_dur);
    pg_int(&pp, b->total_self);
    for (int a = 0; a < 4; a++)
        pg_array(&pp, arr[a], a < 3 ? 1016 : 1001);
    rc = pg_exec(
        s,
        "WITH g AS (INSERT INTO segments(session, function, n, id_min, id_max, start_min,"
        " start_max, end_max, dur_min, dur_max, raised, data)"
        " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12) RETURNING id),"
        " k AS (INSERT INTO children(lo, start_min, segment, hi, kids, session, function, n,"
        " start_max, dur_min, dur_max, raised, parents)"
        " SELECT u.lo, $6, g.id, u.hi, u.kids, $1, $2, $3, $7, $9, $10, $11, u.parents"
        " FROM g, unnest($15::bigint[], $16::bigint[], $17::bigint[], $18::bytea[])"
        " AS u(lo, hi, kids, parents))"
        " INSERT INTO function_sessions AS a(session, function, calls, raised, total_ns,"
        " self_ns, min_ns, max_ns) VALUES ($1,$2,$3,$11,$13,$14,$9,$10)"
        " ON CONFLICT(session, function) DO UPDATE SET calls = a.calls + excluded.calls,"
        " raised = a.raised + excluded.raised, total_ns = a.total_ns + excluded.total_ns,"
        " self_ns = a.self_ns + excluded.self_ns, min_ns = least(a.min_ns, excluded.min_ns),"
        " max_ns = greatest(a.max_ns, excluded.max_ns)",
        &pp, "cannot store calls");
done:
    for (int a = 0; a < 4; a++)
        free(arr[a]);
    return rc;
}

static int pg_add_context(store *base, const store_context *c)
{
    pg_params pp = {0};
    pg_int(&pp, c->session);
    pg_int(&pp, c->id);
    pg_text(&pp, (const char *)c->kind.p, c->kind.n);
    pg_text(&pp, (const char *)c->name.p, c->name.n);
    pg_int(&pp, c->start_ns);
    pg_int_or_null(&pp, c->end_ns);
    return pg_exec((pg_store *)base,
                   "INSERT INTO contexts(session, id, kind, name, start_ns, end_ns)"
                   " VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT(session, id) DO UPDATE SET"
                   " kind = excluded.kind, name = excluded.name, end_ns = excluded.end_ns",
                   &pp, "cannot store a test's span");
}

/* One round of retention: the sessions `select_sql` (SELECT id ...) names
 * go, in one transaction; adds them and their calls to *sessions and
 * *calls, and sets *gone to how many went. */
static int pg_prune_round(pg_store *s, const char *select_sql, int64_t *sessions, int64_t *calls,
                          int64_t *gone)
{
    char sql[1000], why[400], state[6];
    snprintf(sql, sizeof sql, "BEGIN; CREATE TEMP TABLE pruned ON COMMIT DROP AS %s", select_sql);
    if (pg_exec(s, sql, NULL, "cannot prune") < 0)
        goto error;
    PGresult *r = pg_run(s->conn,
                         "SELECT count(*), (SELECT coalesce(sum(n), 0)::bigint FROM segments"
                         " WHERE session IN (SELECT id FROM pruned)) FROM pruned",
                         NULL, why, sizeof why, state);
    if (!r) {
        snprintf(s->err, sizeof s->err, "cannot prune the PostgreSQL tape %s: %s", s->shown, why);
        goto error;
    }
    *gone = pg_get_int(r, 0, 0);
    int64_t n = pg_get_int(r, 0, 1);
    pq()->clear(r);
    if (pg_exec(s,
                "DELETE FROM segments WHERE session IN (SELECT id FROM pruned);"
                "DELETE FROM children WHERE session IN (SELECT id FROM pruned);"
                "DELETE FROM function_sessions WHERE session IN (SELECT id FROM pruned);"
                "DELETE FROM threads WHERE session IN (SELECT id FROM pruned);"
                "DELETE FROM contexts WHERE session IN (SELECT id FROM pruned);"
                "DELETE FROM sessions WHERE id IN (SELECT id FROM pruned); COMMIT",
                NULL, "cannot prune") < 0)
        goto error;
    *sessions += *gone;
    *calls += n;
    return 0;
error:
    pg_rollback(&s->base);
    return -1;
}

/* The live bytes of the tape's segments and values (store_size). */
static int pg_size(store *base, int64_t *bytes)
{
    int found = 0;
    return pg_returning((pg_store *)base,
                        "SELECT (SELECT coalesce(sum(octet_length(data)), 0) FROM segments)::bigint"
                        " + (SELECT coalesce(sum(size), 0) FROM blobs)::bigint",
                        NULL, "cannot measure the tape", bytes, &found);
}

#define PG_PRUNE_ROUNDS 8 /* by size: rounds of deletion at most */

static int pg_prune(store *base, int64_t before_ns, int64_t keep, int64_t max_bytes, int64_t spare,
                    int64_t *sessions, int64_t *calls)
{
    pg_store *s = (pg_store *)base;
    char sql[700];
    int64_t gone = 0;
    *sessions = *calls = 0;
    if (before_ns != INT64_MIN || keep >= 0) {
        snprintf(sql, sizeof sql,
                 "SELECT id FROM sessions WHERE id <> %lld AND (coalesce(end_ns, start_ns) < %lld"
                 " OR (%lld >= 0 AND id NOT IN (SELECT id FROM sessions ORDER BY start_ns DESC,"
                 " id DESC LIMIT %lld)))",
                 (long long)spare, (long long)before_ns, (long long)keep,
                 (long long)(keep < 0 ? 0 : keep));
        if (pg_prune_round(s, sql, sessions, calls, &gone) < 0)
            return -1;
    }
    for (int round = 0; max_bytes >= 0 && round < PG_PRUNE_ROUNDS; round++) {
        int64_t size = 0;
        if (pg_size(base, &size) < 0)
            return -1;
        if (size <= max_bytes)
            break;
        /* the oldest sessions whose segments' bytes, summed from the
         * oldest, reach the excess; never the newest */
        snprintf(sql, sizeof sql,
                 "SELECT id FROM (SELECT s.id, sum(coalesce(b.bytes, 0)) OVER (ORDER BY"
                 " s.start_ns, s.id ROWS UNBOUNDED PRECEDING) - coalesce(b.bytes, 0) AS before"
                 " FROM sessions s LEFT JOIN (SELECT session, sum(octet_length(data))::bigint AS"
                 " bytes FROM segments GROUP BY session) b ON b.session = s.id WHERE s.id <> %lld"
                 " AND s.id <> (SELECT id FROM sessions ORDER BY start_ns DESC, id DESC LIMIT 1))"
                 " t WHERE before < %lld",
                 (long long)spare, (long long)(size - max_bytes));
        if (pg_prune_round(s, sql, sessions, calls, &gone) < 0)
            return -1;
        if (gone == 0)
            break; /* only the newest session is left */
    }
    return 0;
}

static const store_ops pg_ops = {
    .prune = pg_prune,
    .size = pg_size,
    .name = "PostgreSQL",
    .same_file = pg_same_file,
    .file_id = pg_file_id,
    .checkpoint = pg_checkpoint,
    .close = pg_close,
    .errmsg = pg_errmsg,
    .version = pg_version,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .add_session = pg_add_session,
    .update_session = pg_update_session,
    .function = pg_function,
    .add_thread = pg_add_thread,
    .reserve_ids = pg_reserve_ids,
    .put_blob = pg_put_blob,
    .add_segment = pg_add_segment,
    .add_context = pg_add_context,
    .totals = pgr_totals,
    .function_count = pgr_function_count,
    .call_total = pgr_call_total,
    .read_sessions = pgr_read_sessions,
    .read_functions = pgr_read_functions,
    .read_session_functions = pgr_read_session_functions,
    .read_threads = pgr_read_threads,
    .read_blob = pgr_read_blob,
    .find_call = pgr_find_call,
    .list_segments = pgr_list_segments,
    .read_contexts = pgr_read_contexts,
    .next = pgr_next,
    .load_listed = pgr_load_listed,
    .cursor_close = pgr_cursor_close,
    .specs = &pg_spec_ops,
};

const store_backend store_pg_backend = {
    .name = "PostgreSQL",
    .claims = pg_claims,
    .open_write = pg_open_write,
    .open_read = pg_open_read,
    .check_write = pg_check_write,
};
