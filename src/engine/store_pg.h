/*
 * store_pg.h - private to the PostgreSQL store: the few libpq functions
 * calltape uses, loaded at run time from libpq.so.5 (so that building and
 * installing calltape never needs libpq's headers, and a machine without
 * libpq records onto files as before), and what store_pg.c (connecting,
 * the schema, the writer's statements) and store_pg_read.c (the reader's
 * statements and cursors) share.  No other file includes it.
 *
 * Invariants: every statement is sent with binary parameters and asks
 * for binary results (integers are 8-byte big-endian int8, texts and
 * bytea their bytes); a reading handle's connection is used under its
 * mutex, one statement at a time, each cursor holding its whole result.
 */
#ifndef CALLTAPE_STORE_PG_H
#define CALLTAPE_STORE_PG_H

#include "store.h"

#include <pthread.h>

typedef struct pg_conn PGconn;
typedef struct pg_result PGresult;
typedef unsigned int pq_oid;

/* libpq's enum values this store relies on (libpq-fe.h). */
#define PQ_CONNECTION_OK 0
#define PQ_COMMAND_OK 1
#define PQ_TUPLES_OK 2
#define PQ_DIAG_SQLSTATE 'C'

/* The libpq functions, as in libpq-fe.h. */
/* libpq's PQnoticeProcessor. */
typedef void (*pq_notice_fn)(void *arg, const char *message);

typedef struct pq_api {
    PGconn *(*connectdb_params)(const char *const *keys, const char *const *values, int expand);
    int (*status)(const PGconn *c);
    char *(*error_message)(const PGconn *c);
    void (*finish)(PGconn *c);
    void (*reset)(PGconn *c);
    char *(*db)(const PGconn *c);
    char *(*user)(const PGconn *c);
    PGresult *(*exec)(PGconn *c, const char *sql);
    PGresult *(*exec_params)(PGconn *c, const char *sql, int n, const pq_oid *types,
                             const char *const *values, const int *lengths, const int *formats,
                             int result_format);
    int (*result_status)(const PGresult *r);
    char *(*result_error_field)(const PGresult *r, int field);
    char *(*result_error_message)(const PGresult *r);
    void (*clear)(PGresult *r);
    int (*ntuples)(const PGresult *r);
    char *(*getvalue)(const PGresult *r, int row, int col);
    int (*getlength)(const PGresult *r, int row, int col);
    int (*getisnull)(const PGresult *r, int row, int col);
    pq_notice_fn (*set_notice_processor)(PGconn *c, pq_notice_fn fn, void *arg);
} pq_api;

/* The loaded libpq (loaded once, by the first PostgreSQL tape).  Cannot
 * fail: store_pg.c checks pq_load before any handle exists. */
const pq_api *pq(void);

/* Statement parameters: up to PG_MAXPARAMS, each binary. */
#define PG_MAXPARAMS 20
typedef struct pg_params {
    int n;
    const char *v[PG_MAXPARAMS];
    int len[PG_MAXPARAMS];
    int fmt[PG_MAXPARAMS];
    pq_oid oid[PG_MAXPARAMS];
    char ints[PG_MAXPARAMS][8];
} pg_params;

/* Appends an int8, a text (NULL p: NULL),
 * a bytea (NULL p: NULL), an int8[] as text ("{1,2}"). Cannot fail (the
 * statements never pass more than PG_MAXPARAMS). */
void pg_int(pg_params *pp, int64_t v);
void pg_text(pg_params *pp, const char *p, size_t n);
void pg_bytea(pg_params *pp, const void *p, size_t n);
void pg_int_array(pg_params *pp, const char *literal);
/* Appends an array in its text form (`literal`, kept by the caller) of the
 * element type whose array oid is `oid` (1001 bytea[], 1016 int8[]). */
void pg_array(pg_params *pp, const char *literal, pq_oid oid);

/* Runs `sql` with `pp` (NULL: none) on `c`, binary results.  Returns the
 * result when it succeeded (rows or a command), else NULL with the
 * reason in `why` (`n` bytes) and the SQLSTATE in `state` (6 bytes). */
PGresult *pg_run(PGconn *c, const char *sql, const pg_params *pp, char *why, size_t n,
                 char state[6]);

/* The int8 at row, col of a binary result (STORE_NONE when NULL). */
int64_t pg_get_int(const PGresult *r, int row, int col);
/* The bytes at row, col (p NULL when NULL). */
store_bytes pg_get_bytes(const PGresult *r, int row, int col);

/* A reading handle's connection and its mutex (store_pg.c). */
PGconn *pg_conn_of(store *s, pthread_mutex_t **mu);
/* The schema version of the database `s` reads (1: before the spans of
 * contexts).  Cannot fail. */
int64_t pg_schema_of(store *s);

/* The reader's side (store_pg_read.c), each with the contract of the
 * store.h function of the same name after "store_". */
int pgr_totals(store *s, store_counts *out, store_err *e);
int pgr_function_count(store *s, int64_t *n, store_err *e);
int pgr_call_total(store *s, const int64_t *functions, size_t n, int64_t *calls, store_err *e);
store_cursor *pgr_read_sessions(store *s, store_err *e);
store_cursor *pgr_read_functions(store *s, store_err *e);
store_cursor *pgr_read_session_functions(store *s, const int64_t *sessions, size_t n, store_err *e);
store_cursor *pgr_read_threads(store *s, store_err *e);
store_cursor *pgr_read_blob(store *s, const uint8_t hash[WIRE_HASH_BYTES], store_err *e);
store_cursor *pgr_find_call(store *s, int64_t id, store_err *e);
store_cursor *pgr_list_segments(store *s, const store_segment_filter *f, store_err *e);
store_cursor *pgr_read_contexts(store *s, const store_context_filter *f, store_err *e);
int pgr_next(store_cursor *c, store_row *row, store_err *e);
int pgr_load_listed(store_cursor *c, int64_t id, store_segment *out, store_err *e);
void pgr_cursor_close(store_cursor *c);

/* The probe specs (store_pg_specs.c): schema 3's SQL, which the migrations
 * of store_pg.c run, and the store_spec_ops of PostgreSQL tapes. */
extern const char pg_schema_v3[];
extern const store_spec_ops pg_spec_ops;

#endif
