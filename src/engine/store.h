/*
 * store.h - the store contract: everything the engine and the reader ask
 * of the place a tape lives, the writer's side and the reader's side.
 * Plain C, no SQL: a store (store_sqlite*.c, SQLite files; store_pg*.c,
 * a PostgreSQL database named by a postgresql:// URL) implements a
 * store_ops table and hands out handles whose first member is `store`
 * (and cursors whose first member is `store_cursor`); every other file
 * calls the store_* functions below, which dispatch through the table.
 *
 * Why a table and not plain functions: one process may read and write
 * tapes of several kinds at once (a file given by path, a server given by
 * URL), so the kind is chosen when a store is opened (store_backend_for)
 * and every later call follows the handle.  A store call moves a whole
 * transaction, segment or row, never one recorded call, so the indirect
 * call costs nothing measurable; the calling thread never calls a store.
 *
 * Invariants every store keeps:
 *   - One writing handle is used by one thread at a time (the writer
 *     thread); a reading handle may be used by several threads at once
 *     (the binding releases the GIL around every call), each with its own
 *     cursors, so reading calls report errors in a caller-supplied
 *     store_err, never in state shared on the handle.
 *   - Opening for reading never modifies a tape; a tape of an older
 *     format is read as it is.
 *   - Call ids are tape-wide and never reused; segments are only ever
 *     added, each with its zone map (its calls' id, start and duration
 *     ranges and how many raised) next to its serialized bytes (segment.c).
 *   - Rows a cursor returns (their texts and bytes) stay valid until the
 *     next store_next or store_cursor_close on that cursor.
 *   - No store function prints, exits or aborts.
 */
#ifndef CALLTAPE_STORE_H
#define CALLTAPE_STORE_H

#include "engine.h"

#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------------ */
/* What crosses the contract.                                               */
/* ------------------------------------------------------------------------ */

/* An integer column's value when the tape holds none (NULL). */
#define STORE_NONE INT64_MIN

/* A text or byte column: `n` bytes at `p`, not NUL-terminated; p NULL when
 * the tape holds none.  Texts are UTF-8 as written (a damaged tape may
 * hold other bytes: readers decode and report). */
typedef struct store_bytes {
    const uint8_t *p;
    size_t n;
} store_bytes;

/* The session a writer opens (store_add_session). */
typedef struct store_session {
    int64_t start_ns;
    const char *host, *python_version, *calltape_version;
    const uint8_t *argv;
    size_t argv_len;
    const char *sys_path0, *cwd; /* NULL when unknown */
    int64_t pid, ppid, parent_session, mpi_rank;
} store_session;

/* The session counters, in this order on every row. */
enum { STORE_UNENCODABLE, STORE_PICKLED, STORE_REDACTED, STORE_TRUNCATED, STORE_DROPPED };
#define STORE_NCOUNTERS 5

/* A session as read back (store_read_sessions).  Integers that may be
 * missing are STORE_NONE then. */
typedef struct store_session_row {
    int64_t id, start_ns, end_ns, pid, ppid, parent, mpi_rank;
    int64_t counters[STORE_NCOUNTERS];
    store_bytes host, argv, python, calltape, sys_path0, cwd; /* argv: a wire LIST of STR */
} store_session_row;

/* A function as read back, with its aggregates over every call on the
 * tape (store_read_functions) or over the calls of some sessions
 * (store_read_session_functions).  min_ns and max_ns are STORE_NONE while
 * the function has no call; total_ns is STORE_NONE when the tape does not
 * know it (sessions of a tape written before it kept per-session totals),
 * self_ns likewise (also calls recorded before self time was kept): the
 * calls' durations minus those of their recorded direct children. */
typedef struct store_function_row {
    int64_t id, line, calls, raised, total_ns, min_ns, max_ns, self_ns;
    store_bytes module, qualname, file;
    store_bytes signature; /* a wire LIST, as in a REC_FUNCTION record */
} store_function_row;

/* A thread as read back (store_read_threads). */
typedef struct store_thread_row {
    int64_t session, idx, ident;
    store_bytes name;
} store_thread_row;

/* A segment: its row's zone map and, when loaded, its bytes. */
typedef struct store_segment {
    int64_t id, session, function, n; /* n: the calls its row counts */
    int64_t start_min, start_max;     /* wall ns of its calls' starts */
    int64_t dur_min, dur_max, raised; /* ns; how many of its calls raised */
    const uint8_t *data;              /* its serialized bytes (segment.c), or NULL */
    size_t len;
    int64_t links; /* in a listing by parent: how many of its calls are that
                      parent's children, when the children index counts them
                      exactly; else STORE_NONE */
} store_segment;

/* A stored value (store_read_blob): the bytes kept under its hash, as
 * stored (the reader verifies them against the hash). */
typedef struct store_blob {
    const uint8_t *data;
    size_t len;
    const uint8_t *hash; /* in a listing of every blob (store_read_blob with no
                            hash): its WIRE_HASH_BYTES bytes; else NULL */
} store_blob;

/* A span of a session's time the program named (a pytest test), as the
 * writer adds it (store_add_context) and a reader reads it back
 * (store_read_contexts).  `id` numbers the session's spans in the order
 * they began (so by start); end_ns is STORE_NONE while the span is open
 * (its process still in it, or killed in it). */
typedef struct store_context {
    int64_t session, id;
    int64_t start_ns, end_ns; /* wall ns */
    store_bytes kind, name;   /* "test", and a pytest node id */
} store_context;

/* Which spans store_read_contexts lists. */
typedef struct store_context_filter {
    store_bytes kind; /* p NULL: any kind */
    store_bytes name; /* p NULL: any name */
    int64_t session;  /* 0: any */
    int64_t from_id;  /* with a session: only spans with this id or a later one */
} store_context_filter;

/* One row of a cursor; which member depends on the cursor. */
typedef union store_row {
    store_session_row session;
    store_function_row function;
    store_thread_row thread;
    store_segment segment;
    store_blob blob;
    store_context context;
} store_row;

/* Which segments a search needs (store_list_segments): those whose zone
 * map allows a call within every bound.  Calls are filtered one by one
 * afterwards (query.c); the listing may list more, never fewer. */
typedef struct store_segment_filter {
    const int64_t *functions; /* tape function ids; none: every function */
    size_t nfunctions;
    int64_t session;                    /* 0: any */
    int64_t since, until;               /* call starts, wall ns, inclusive */
    int64_t min_duration, max_duration; /* ns, inclusive */
    int outcome;                        /* OUTCOME_RAISED: with a raised call,
                                           OUTCOME_RETURNED: with another, -1: any */
    int newest_first;                   /* order: start_max descending (else start_min
                                           ascending), then id likewise */
    const int64_t *sessions;            /* any of these (with `session` 0); none: any */
    size_t nsessions;
    int64_t parent;     /* 0: any; > 0: the segments holding children of that call;
                           < 0: those holding roots (no parent) of session -parent */
    int64_t parent_end; /* with parent > 0: the parent's end (wall ns), which bounds
                           the starts of segments the children index misses */
} store_segment_filter;

/* Tape-wide counts (store_totals). */
typedef struct store_counts {
    int64_t calls, functions, sessions;
} store_counts;

/* Why a reading call failed. */
enum store_err_kind {
    STORE_OK = 0,
    STORE_DAMAGED = 1, /* the tape is damaged (its file, its schema, its rows) */
    STORE_FAILED = 2,  /* it could not be read now (I/O, locks, a server away) */
    STORE_NOMEM = 3,   /* memory ran out */
};

/* A reading call's error: `kind` and one phrase, `msg`.  For STORE_DAMAGED
 * the phrase follows "the tape P is damaged: reading its X, " and names
 * who found it ("SQLite reports: ..."); for the others it follows "cannot
 * read its X from the tape P: ". */
typedef struct store_err {
    int kind;
    char msg[256];
} store_err;

typedef struct store store;
typedef struct store_cursor store_cursor;

/* Probe specs (calltape.probes.TapeStore): each spec is an id and its JSON
 * text; each process that applied it reports one JSON text under its name.
 * read_specs calls `fn` once per (spec, process) pair in id order, with
 * process and info NULL for a spec no process reported on; `fn` returns 0,
 * or -1 to stop (read_specs then returns -1 with e->kind 0). */
typedef int (*store_spec_fn)(void *ctx, const char *id, const char *spec, const char *process,
                             const char *info);

/* What a store that keeps probe specs implements (store_ops.specs; NULL
 * for one that keeps none).  Each entry has the contract of the store_*
 * function of the same name below, which calls it. */
typedef struct store_spec_ops {
    int (*spec_version)(store *s, int64_t *version, store_err *e);
    int (*read_specs)(store *s, int64_t *version, store_spec_fn fn, void *ctx, store_err *e);
    int (*put_spec)(store *s, const char *id, const char *spec, store_err *e);
    int (*delete_spec)(store *s, const char *id, int *found, store_err *e);
    int (*mark_spec)(store *s, const char *id, const char *process, const char *info, store_err *e);
} store_spec_ops;

/* ------------------------------------------------------------------------ */
/* What a store implements.                                                 */
/* ------------------------------------------------------------------------ */

/* The operations of one kind of store.  Each entry has the contract of the
 * store_* function of the same name below, which calls it. */
typedef struct store_ops {
    const char *name; /* "SQLite": for messages */
    void (*close)(store *s);
    const char *(*errmsg)(store *s);
    int64_t (*version)(store *s);
    /* the writer's side */
    int (*begin)(store *s);
    int (*commit)(store *s);
    void (*rollback)(store *s);
    int (*add_session)(store *s, const store_session *ss, int64_t *id);
    int (*update_session)(store *s, int64_t id, int64_t start_ns, int64_t end_ns,
                          const int64_t counters[5]);
    int (*function)(store *s, const char *module, size_t module_len, const char *qualname,
                    size_t qualname_len, const char *file, size_t file_len, int64_t line,
                    const uint8_t *sig, size_t sig_len, int64_t *id);
    int (*add_thread)(store *s, int64_t session, int64_t idx, int64_t ident, int64_t native_id,
                      const char *name, size_t name_len);
    int (*reserve_ids)(store *s, int64_t count, int64_t *first);
    int (*put_blob)(store *s, const uint8_t hash[WIRE_HASH_BYTES], const uint8_t *data, size_t n);
    int (*add_segment)(store *s, int64_t session, int64_t function, const seg_builder *b,
                       const uint8_t *data, size_t n);
    int (*same_file)(const store *s, const char *path);
    void (*file_id)(const store *s, uint64_t *dev, uint64_t *ino);
    int (*checkpoint)(store *s);
    int (*prune)(store *s, int64_t before_ns, int64_t keep_sessions, int64_t max_bytes,
                 int64_t spare, int64_t *sessions, int64_t *calls);
    int (*size)(store *s, int64_t *bytes);
    int (*add_context)(store *s, const store_context *c);
    /* notes: short texts under a key, kept on a file only (NULL elsewhere) */
    int (*put_note)(store *s, const char *key, const char *value);
    int (*read_note)(store *s, const char *key, char *out, size_t n, store_err *e);
    /* the reader's side */
    int (*totals)(store *s, store_counts *out, store_err *e);
    int (*function_count)(store *s, int64_t *n, store_err *e);
    int (*call_total)(store *s, const int64_t *functions, size_t n, int64_t *calls, store_err *e);
    store_cursor *(*read_sessions)(store *s, store_err *e);
    store_cursor *(*read_functions)(store *s, store_err *e);
    store_cursor *(*read_session_functions)(store *s, const int64_t *sessions, size_t n,
                                            store_err *e);
    store_cursor *(*read_threads)(store *s, store_err *e);
    store_cursor *(*read_blob)(store *s, const uint8_t hash[WIRE_HASH_BYTES], store_err *e);
    store_cursor *(*find_call)(store *s, int64_t id, store_err *e);
    store_cursor *(*list_segments)(store *s, const store_segment_filter *f, store_err *e);
    store_cursor *(*read_contexts)(store *s, const store_context_filter *f, store_err *e);
    int (*next)(store_cursor *c, store_row *row, store_err *e);
    int (*load_listed)(store_cursor *c, int64_t id, store_segment *out, store_err *e);
    void (*cursor_close)(store_cursor *c);
    const store_spec_ops *specs; /* NULL: this kind keeps no probe specs */
} store_ops;

/* The head of every store handle and cursor. */
struct store {
    const store_ops *ops;
};
struct store_cursor {
    store *s;
};

/* One kind of store: how to open it.  Each function has the contract of
 * the store_open_* / store_check_write function of the same name. */
typedef struct store_backend {
    const char *name;
    int (*claims)(const char *path); /* 1 when `path` names a store of this kind */
    store *(*open_write)(const char *path, char *err, size_t errlen);
    store *(*open_read)(const char *path, char *err, size_t errlen);
    int (*check_write)(const char *path, char *err, size_t errlen);
} store_backend;

/* The SQLite file store (store_sqlite.c): claims every path. */
extern const store_backend store_sqlite_backend;

/* The PostgreSQL store (store_pg.c): claims postgresql:// and postgres://
 * URLs. */
extern const store_backend store_pg_backend;

/* Writes `path` into `out` (`n` bytes) as messages show it: a URL's
 * password (in its user part, or a password= parameter) replaced by ***.
 * Cannot fail (cuts to fit). */
void store_redact(const char *path, char *out, size_t n);

/* The ids as one statement parameter: `open`, the ids in decimal joined by
 * commas, `close` ("[1,2,3]" for SQLite's json_each, "{1,2,3}" for a
 * PostgreSQL int8[]).  malloc'ed, or NULL when memory ran out. */
char *store_ids_text(const int64_t *ids, size_t n, char open, char close);

/* The kind of store `path` names (store.c).  Never NULL. */
const store_backend *store_backend_for(const char *path);

/* ------------------------------------------------------------------------ */
/* Opening and closing (store.c picks the kind).                            */
/* ------------------------------------------------------------------------ */

/* Opens `path` for writing, creating it with mode 0600 and the current
 * schema when missing, migrating an older schema.  Returns NULL with a
 * message in `err` on failure (unwritable, not a tape, newer schema). */
store *store_open_write(const char *path, char *err, size_t errlen);

/* Opens `path` read-only without modifying it.  Returns NULL with a message
 * in `err` (missing file, not a tape, newer schema, corrupt). */
store *store_open_read(const char *path, char *err, size_t errlen);

/* Checks, without creating anything, that a recording could write the tape
 * at `path`: an existing file must open for writing as a tape (a tape of an
 * older format is upgraded, as recording would), a missing one needs a
 * writable folder.  Returns 0, or -1 with one sentence in `err` (not a
 * tape, newer, unwritable, not a file). */
int store_check_write(const char *path, char *err, size_t errlen);

/* Closes `s` (NULL allowed).  Its cursors must be closed first. */
static inline void store_close(store *s)
{
    if (s)
        s->ops->close(s);
}

/* The kind of `s`, for messages ("SQLite").  Never NULL. */
static inline const char *store_name(const store *s)
{
    return s->ops->name;
}

/* The last writing error's message of `s` ("" when none). */
static inline const char *store_errmsg(store *s)
{
    return s->ops->errmsg(s);
}

/* The schema version of the tape `s` reads (older tapes are read as they
 * are). */
static inline int64_t store_version(store *s)
{
    return s->ops->version(s);
}

/* ------------------------------------------------------------------------ */
/* Probe specs (the tape-backed spec store of calltape.probes).             */
/* ------------------------------------------------------------------------ */

/* 1 when the store `s` keeps probe specs (its kind does), else 0. */
static inline int store_has_specs(const store *s)
{
    return s->ops->specs != NULL;
}

/* The specs' version of `s` into *version: a number that grows with every
 * put_spec and delete_spec (0 on a tape that has none, or whose format
 * predates them).  One query.  Returns 0, or -1 with `e` set.  Requires
 * store_has_specs(s). */
static inline int store_spec_version(store *s, int64_t *version, store_err *e)
{
    return s->ops->specs->spec_version(s, version, e);
}

/* Calls `fn` with every spec of `s` and every process's report on it (see
 * store_spec_fn), and sets *version to the version read, in one
 * transaction.  Returns 0, or -1 with `e` set (kind 0: `fn` stopped it).
 * Requires store_has_specs(s). */
static inline int store_read_specs(store *s, int64_t *version, store_spec_fn fn, void *ctx,
                                   store_err *e)
{
    return s->ops->specs->read_specs(s, version, fn, ctx, e);
}

/* A writer: adds or replaces the spec `id` (JSON text `spec`), forgets
 * every report on its previous text, and bumps the version.  Returns 0, or
 * -1 with `e` set.  Requires store_has_specs(s). */
static inline int store_put_spec(store *s, const char *id, const char *spec, store_err *e)
{
    return s->ops->specs->put_spec(s, id, spec, e);
}

/* A writer: removes the spec `id` and its reports, bumps the version, and
 * sets *found to 1 when there was one, else 0.  Returns 0, or -1
 * with `e` set.  Requires store_has_specs(s). */
static inline int store_delete_spec(store *s, const char *id, int *found, store_err *e)
{
    return s->ops->specs->delete_spec(s, id, found, e);
}

/* A writer: stores `info` (JSON text) as what `process` reports on the
 * spec `id` (nothing when there is no such spec); leaves the version as it
 * is.  Returns 0, or -1 with `e` set.  Requires store_has_specs(s). */
static inline int store_mark_spec(store *s, const char *id, const char *process, const char *info,
                                  store_err *e)
{
    return s->ops->specs->mark_spec(s, id, process, info, e);
}

/* ------------------------------------------------------------------------ */
/* The writer's side.                                                       */
/* ------------------------------------------------------------------------ */

/* 1 while `path` still names the file the writer `s` opened, 0 when it
 * was deleted or replaced by another file (the writer then writes onto a
 * file nobody can read).  When it cannot tell: 1. */
static inline int store_same_file(const store *s, const char *path)
{
    return s->ops->same_file(s, path);
}

/* The device and inode of the file the writer `s` opened (0 and 0 when
 * unknown).  Cannot fail. */
static inline void store_file_id(const store *s, uint64_t *dev, uint64_t *ino)
{
    s->ops->file_id(s, dev, ino);
}

/* Copies the write-ahead log into the database file and empties it, as far
 * as other connections allow (waiting for them a quarter of a second at
 * most), so that the file alone holds every commit.  Returns 0 (also when
 * others kept part of the log), or -1 with a message in store_errmsg.  A
 * read-only store: 0. */
static inline int store_checkpoint(store *s)
{
    return s->ops->checkpoint(s);
}

/* All writes below run inside store_begin()/store_commit(); each returns 0
 * or -1 (message in store_errmsg) and the caller then calls
 * store_rollback(), which does nothing outside a transaction. */
static inline int store_begin(store *s)
{
    return s->ops->begin(s);
}

static inline int store_commit(store *s)
{
    return s->ops->commit(s);
}

static inline void store_rollback(store *s)
{
    s->ops->rollback(s);
}

/* Inserts a session row; sets *id. */
static inline int store_add_session(store *s, const store_session *ss, int64_t *id)
{
    return s->ops->add_session(s, ss, id);
}

/* Adds counter deltas (STORE_UNENCODABLE ...) and the end time to a
 * session row, and moves its start back to `start_ns` when that is earlier
 * (the first call of a session may start before the session row was made:
 * INT64_MAX leaves it). */
static inline int store_update_session(store *s, int64_t id, int64_t start_ns, int64_t end_ns,
                                       const int64_t counters[5])
{
    return s->ops->update_session(s, id, start_ns, end_ns, counters);
}

/* Finds or inserts the function (all five fields equal); sets *id. */
static inline int store_function(store *s, const char *module, size_t module_len,
                                 const char *qualname, size_t qualname_len, const char *file,
                                 size_t file_len, int64_t line, const uint8_t *sig, size_t sig_len,
                                 int64_t *id)
{
    return s->ops->function(s, module, module_len, qualname, qualname_len, file, file_len, line,
                            sig, sig_len, id);
}

/* Inserts or replaces thread `idx` of `session`. */
static inline int store_add_thread(store *s, int64_t session, int64_t idx, int64_t ident,
                                   int64_t native_id, const char *name, size_t name_len)
{
    return s->ops->add_thread(s, session, idx, ident, native_id, name, name_len);
}

/* Reserves `count` consecutive call ids tape-wide; sets *first. */
static inline int store_reserve_ids(store *s, int64_t count, int64_t *first)
{
    return s->ops->reserve_ids(s, count, first);
}

/* Stores a blob under its hash unless present. */
static inline int store_put_blob(store *s, const uint8_t hash[WIRE_HASH_BYTES], const uint8_t *data,
                                 size_t n)
{
    return s->ops->put_blob(s, hash, data, n);
}

/* Inserts a finished segment (its zone map from `b`, its bytes `data`),
 * adds its calls to its function's aggregates, tape-wide and of the
 * session (calls, raised, total, self, min, max), and its parent ranges
 * (b->links, seg_builder_links) to the children index. */
static inline int store_add_segment(store *s, int64_t session, int64_t function,
                                    const seg_builder *b, const uint8_t *data, size_t n)
{
    return s->ops->add_segment(s, session, function, b, data, n);
}

/* Adds the span `c` (its kind, name and times) to its session, or, when
 * the session has a span of that id already, replaces that one's end,
 * name and kind: the record that closes a span repeats the whole row. */
static inline int store_add_context(store *s, const store_context *c)
{
    return s->ops->add_context(s, c);
}

/* Keeps the text `value` under `key` on the tape, in the open transaction
 * (a file's meta table: the spool says there which tape it belongs to).
 * Returns 0, or -1 with a message in store_errmsg (also on a store that
 * keeps no notes: a server). */
static inline int store_put_note(store *s, const char *key, const char *value)
{
    return s->ops->put_note ? s->ops->put_note(s, key, value) : -1;
}

/* The text kept under `key` into `out` (`n` bytes, NUL-terminated, cut to
 * fit).  Returns 1, 0 when there is none (or the store keeps no notes), or
 * -1 with `e` set. */
static inline int store_read_note(store *s, const char *key, char *out, size_t n, store_err *e)
{
    return s->ops->read_note ? s->ops->read_note(s, key, out, n, e) : 0;
}

/* Retention: deletes, in transactions of its own (not inside
 * store_begin), the sessions that ended before `before_ns` (wall ns; a
 * session that never committed a call: started before; INT64_MIN: none by
 * age), when `keep_sessions` >= 0 those that are not among the
 * `keep_sessions` newest (by start, then id), and when `max_bytes` >= 0
 * the oldest ones (by start, then id) while the tape's size (store_size)
 * is over `max_bytes`, never the newest session (so one session larger
 * than the size stays); never the session `spare` (a writer's own; 0:
 * none); and everything recorded in them: their segments,
 * children-index rows, per-session totals, threads and spans; the
 * functions' tape-wide totals lose those calls.  The rules by age and
 * count run in one transaction, the size rule in rounds of one
 * transaction each.  Blobs stay (shared by content across sessions);
 * function rows stay.  Sets *sessions and *calls to what it deleted.
 * Returns 0, or -1 with a message in store_errmsg (what earlier rounds
 * deleted stays deleted). */
static inline int store_prune(store *s, int64_t before_ns, int64_t keep_sessions, int64_t max_bytes,
                              int64_t spare, int64_t *sessions, int64_t *calls)
{
    return s->ops->prune(s, before_ns, keep_sessions, max_bytes, spare, sessions, calls);
}

/* The tape's size as retention counts it into *bytes: on a file, the bytes
 * of its pages in use (a file may be larger until its free pages are given
 * back); on a server, the bytes of its segments and values.  Returns 0, or
 * -1 with a message in store_errmsg. */
static inline int store_size(store *s, int64_t *bytes)
{
    return s->ops->size(s, bytes);
}

/* Copies the tape at `src` (read only) onto the tape at `dst` (created when
 * missing; what it holds stays): every blob, function, session, thread,
 * span, segment and probe spec, so that every reading gives the same
 * answers on the copy, with the destination's own ids (store_copy.c says
 * how call ids stay unique).  One destination transaction, the specs after
 * it.  Sets *sessions and *calls to what it copied.  Returns 0, or -1 with
 * one sentence in `err` (the same tape twice, a missing or unreadable
 * source, an unwritable destination, damage).  Does I/O: callers release
 * the GIL. */
int store_copy(const char *src, const char *dst, int64_t *sessions, int64_t *calls, char *err,
               size_t errlen);

/* store_copy without the source sessions `skip` (`nskip` ids; their
 * threads, spans and segments stay behind too): the spool's rounds that a
 * server may have committed already (spool.c). */
int store_copy_skip(const char *src, const char *dst, const int64_t *skip, size_t nskip,
                    int64_t *sessions, int64_t *calls, char *err, size_t errlen);

/* ------------------------------------------------------------------------ */
/* The reader's side.  Every call may do I/O: the binding calls them with  */
/* the GIL released.  Errors go to `e` (kind and phrase).                   */
/* ------------------------------------------------------------------------ */

/* Fills `out` with the tape's call, function and session counts.  Returns
 * 0, or -1 with `e` set. */
static inline int store_totals(store *s, store_counts *out, store_err *e)
{
    return s->ops->totals(s, out, e);
}

/* Sets *n to the number of functions on the tape (cheaper than
 * store_totals: a reader checks it before reading the table again).
 * Returns 0, or -1 with `e` set. */
static inline int store_function_count(store *s, int64_t *n, store_err *e)
{
    return s->ops->function_count(s, n, e);
}

/* Sets *calls to the calls the function rows of the `n` ids count (every
 * function when n is 0), read before any listing that must cover them.
 * Returns 0, or -1 with `e` set. */
static inline int store_call_total(store *s, const int64_t *functions, size_t n, int64_t *calls,
                                   store_err *e)
{
    return s->ops->call_total(s, functions, n, calls, e);
}

/* Cursors over the sessions (rows: session, newest first), the functions
 * (rows: function, by id) and the threads (rows: thread).  Return the
 * cursor, or NULL with `e` set. */
static inline store_cursor *store_read_sessions(store *s, store_err *e)
{
    return s->ops->read_sessions(s, e);
}

static inline store_cursor *store_read_functions(store *s, store_err *e)
{
    return s->ops->read_functions(s, e);
}

/* A cursor over the functions that have calls in any of the `n` sessions
 * (n >= 1), by id (rows: function), their aggregates over those sessions'
 * calls only.  NULL with `e` set. */
static inline store_cursor *store_read_session_functions(store *s, const int64_t *sessions,
                                                         size_t n, store_err *e)
{
    return s->ops->read_session_functions(s, sessions, n, e);
}

static inline store_cursor *store_read_threads(store *s, store_err *e)
{
    return s->ops->read_threads(s, e);
}

/* A cursor whose one row (blob) is the value stored under `hash`; no row
 * when there is none.  With `hash` NULL, every blob of the tape, each row
 * with its hash (store_copy).  NULL with `e` set. */
static inline store_cursor *store_read_blob(store *s, const uint8_t hash[WIRE_HASH_BYTES],
                                            store_err *e)
{
    return s->ops->read_blob(s, hash, e);
}

/* A cursor over the segments whose id range holds call `id` (rows:
 * segment, with its bytes), for finding a call by id; the segments likeliest
 * to hold it come first, so a caller that found the call stops reading.
 * NULL with `e`. */
static inline store_cursor *store_find_call(store *s, int64_t id, store_err *e)
{
    return s->ops->find_call(s, id, e);
}

/* A cursor over the segments `f` needs (rows: segment, zone map only,
 * data NULL), in the order of `f`.  The filter is copied.  NULL with `e`.
 * With a parent, the children index names the segments (a bounded index
 * range, whatever the tape's size); segments older than the index (a tape
 * of an older schema, or written before its upgrade) are listed by the
 * filter's session and the parent's time window instead, which is slower
 * and lists more. */
static inline store_cursor *store_list_segments(store *s, const store_segment_filter *f,
                                                store_err *e)
{
    return s->ops->list_segments(s, f, e);
}

/* A cursor over the spans `f` names (rows: context), by session, then id
 * (so in start order within a session).  The filter and its texts are
 * copied.  A tape of a schema older than the spans (before 5) has none:
 * an empty cursor.  NULL with `e`. */
static inline store_cursor *store_read_contexts(store *s, const store_context_filter *f,
                                                store_err *e)
{
    return s->ops->read_contexts(s, f, e);
}

/* The next row of `c` into `row`.  Returns 1, 0 at the end, -1 with `e`. */
static inline int store_next(store_cursor *c, store_row *row, store_err *e)
{
    return c->s->ops->next(c, row, e);
}

/* Loads segment `id` of the listing `c` (store_list_segments) into `out`,
 * its bytes copied into memory the caller frees with free(out->data).
 * Returns 1, 0 when the tape has no such segment, -1 with `e` set. */
static inline int store_load_listed(store_cursor *c, int64_t id, store_segment *out, store_err *e)
{
    return c->s->ops->load_listed(c, id, out, e);
}

/* Closes `c` (NULL allowed). */
static inline void store_cursor_close(store_cursor *c)
{
    if (c)
        c->s->ops->cursor_close(c);
}

#endif
