/*
 * store_sqlite.h - private to the SQLite store: what store_sqlite.c (the
 * file, its schema and the writer's statements) and store_sqlite_read.c
 * (the reader's statements and cursors) share.  No other file includes
 * it; everyone else sees the store through store.h.
 *
 * Invariants: a `store` of this kind is an sq_store (store_sqlite.c)
 * whose connection sq_db returns; reading handles are opened with
 * SQLITE_OPEN_FULLMUTEX, so several threads may step their own
 * statements on one connection.
 */
#ifndef CALLTAPE_STORE_SQLITE_H
#define CALLTAPE_STORE_SQLITE_H

#include "store.h"

#include <pthread.h>
#include <sqlite3.h>

/* The connection of the SQLite store `s`.  Cannot fail. */
sqlite3 *sq_db(store *s);

/* A reading store: the id of the first segment the children index covers
 * (meta 'children_from'; INT64_MAX before schema 4).  Cannot fail. */
int64_t sq_children_from(store *s);

/* A reader's estimate of the widest id range of a segment (id_max -
 * id_min), from segments up to rowid `seen`, so that finding a call by id
 * reads a range of the id index instead of its whole lower part.  It only
 * grows, and any value is correct: sq_find_call looks at the rest of the
 * index when the call was not in the range.  Reading threads share the
 * store: under `mu`. */
typedef struct sq_id_width {
    pthread_mutex_t mu;
    int64_t seen, width;
} sq_id_width;

/* The id width of the reading store `s`.  Cannot fail. */
sq_id_width *sq_id_width_of(store *s);

/* The reader's side (store_sqlite_read.c), each with the contract of the
 * store.h function of the same name after "store_". */
int sq_totals(store *s, store_counts *out, store_err *e);
int sq_function_count(store *s, int64_t *n, store_err *e);
int sq_call_total(store *s, const int64_t *functions, size_t n, int64_t *calls, store_err *e);
store_cursor *sq_read_sessions(store *s, store_err *e);
store_cursor *sq_read_functions(store *s, store_err *e);
store_cursor *sq_read_session_functions(store *s, const int64_t *sessions, size_t n, store_err *e);
store_cursor *sq_read_threads(store *s, store_err *e);
store_cursor *sq_read_blob(store *s, const uint8_t hash[WIRE_HASH_BYTES], store_err *e);
store_cursor *sq_find_call(store *s, int64_t id, store_err *e);
store_cursor *sq_list_segments(store *s, const store_segment_filter *f, store_err *e);
store_cursor *sq_read_contexts(store *s, const store_context_filter *f, store_err *e);
int sq_next(store_cursor *c, store_row *row, store_err *e);
int sq_load_listed(store_cursor *c, int64_t id, store_segment *out, store_err *e);
void sq_cursor_close(store_cursor *c);

/* The writing error buffer of `s` (what store_errmsg returns) into the
 * return value, its size into *n.  Cannot fail. */
char *sq_err_of(store *s, size_t *n);

/* 1 when `s` was opened for reading only.  Cannot fail. */
int sq_is_readonly(store *s);

/* Retention (store_sqlite_prune.c), with the contracts of store_prune and
 * store_size. */
int sq_prune(store *s, int64_t before_ns, int64_t keep, int64_t max_bytes, int64_t spare,
             int64_t *sessions, int64_t *calls);
int sq_size(store *s, int64_t *bytes);

/* Notes (store_sqlite_notes.c), with the contracts of store_put_note and
 * store_read_note. */
int sq_put_note(store *s, const char *key, const char *value);
int sq_read_note(store *s, const char *key, char *out, size_t n, store_err *e);

/* The probe specs (store_sqlite_specs.c): schema 6's SQL, which the
 * migrations of store_sqlite.c run, and the store_spec_ops of SQLite
 * tapes. */
extern const char sq_schema_v6[];
extern const store_spec_ops sq_spec_ops;

#endif
