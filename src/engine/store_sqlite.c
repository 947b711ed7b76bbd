/*
 * store_sqlite.c - the tape as an SQLite file: schema, migrations, prepared
 * statements.  One `store` is one connection used by one thread at a time
 * (the writer thread, or a reader).
 *
 * Invariants: a tape carries PRAGMA application_id CALLTAPE_APP_ID and its
 * schema version in PRAGMA user_version; writers use WAL with a busy
 * timeout and BEGIN IMMEDIATE so several processes can record at once;
 * files are created with mode 0600 (SQLite gives the WAL and shared-memory
 * files the database file's mode).  A read-only store never writes.
 */
#include "store_sqlite.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CALLTAPE_APP_ID 0x43546170 /* "CTap" */
#define BUSY_TIMEOUT_MS 10000
#define CHECKPOINT_TIMEOUT_MS 250

enum {
    STMT_SESSION,
    STMT_SESSION_UPDATE,
    STMT_FN_FIND,
    STMT_FN_INSERT,
    STMT_THREAD,
    STMT_NEXT_ID_GET,
    STMT_NEXT_ID_SET,
    STMT_BLOB,
    STMT_SEGMENT,
    STMT_FN_AGG,
    STMT_FN_SESSION_AGG,
    STMT_CHILD,
    STMT_CONTEXT,
    STMT_BEGIN,
    STMT_COMMIT,
    STMT_ROLLBACK,
    NSTMT
};

static const char *const stmt_sql[NSTMT] = {
    [STMT_SESSION] = "INSERT INTO sessions(start_ns, host, pid, ppid, parent, argv, python,"
                     " calltape, mpi_rank, sys_path0, cwd) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
    [STMT_SESSION_UPDATE] = "UPDATE sessions SET start_ns = min(start_ns, ?),"
                            " end_ns = max(coalesce(end_ns, 0), ?),"
                            " unencodable = unencodable + ?, pickled = pickled + ?,"
                            " redacted = redacted + ?, truncated = truncated + ?,"
                            " dropped = dropped + ? WHERE id = ?",
    [STMT_FN_FIND] = "SELECT id FROM functions WHERE module = ? AND qualname = ? AND file = ?"
                     " AND line = ? AND signature = ?",
    [STMT_FN_INSERT] = "INSERT INTO functions(module, qualname, file, line, signature, self_ns)"
                       " VALUES (?,?,?,?,?,0)",
    [STMT_THREAD] = "INSERT OR REPLACE INTO threads(session, idx, ident, native_id, name)"
                    " VALUES (?,?,?,?,?)",
    [STMT_NEXT_ID_GET] = "SELECT value FROM meta WHERE key = 'next_id'",
    [STMT_NEXT_ID_SET] = "UPDATE meta SET value = ? WHERE key = 'next_id'",
    [STMT_BLOB] = "INSERT OR IGNORE INTO blobs(hash, size, data) VALUES (?,?,?)",
    [STMT_SEGMENT] = "INSERT INTO segments(session, function, n, id_min, id_max, start_min,"
                     " start_max, end_max, dur_min, dur_max, raised, data)"
                     " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
    [STMT_FN_AGG] = "UPDATE functions SET calls = calls + ?, raised = raised + ?,"
                    " total_ns = total_ns + ?, self_ns = self_ns + ?,"
                    " min_ns = min(coalesce(min_ns, ?), ?),"
                    " max_ns = max(coalesce(max_ns, ?), ?),"
                    " first_ns = min(coalesce(first_ns, ?), ?),"
                    " last_ns = max(coalesce(last_ns, ?), ?) WHERE id = ?",
    /* self_ns and total_ns stay NULL (unknown) on rows from before v4 */
    [STMT_FN_SESSION_AGG] =
        "INSERT INTO function_sessions(session, function, calls, raised, total_ns, self_ns,"
        " min_ns, max_ns) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(session, function) DO UPDATE"
        " SET calls = calls + excluded.calls, raised = raised + excluded.raised,"
        " total_ns = total_ns + excluded.total_ns, self_ns = self_ns + excluded.self_ns,"
        " min_ns = min(min_ns, excluded.min_ns), max_ns = max(max_ns, excluded.max_ns)",
    [STMT_CHILD] = "INSERT INTO children(lo, start_min, segment, hi, kids, session, function, n,"
                   " start_max, dur_min, dur_max, raised, parents)"
                   " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
    [STMT_CONTEXT] = "INSERT INTO contexts(session, id, kind, name, start_ns, end_ns)"
                     " VALUES (?,?,?,?,?,?) ON CONFLICT(session, id) DO UPDATE SET"
                     " kind = excluded.kind, name = excluded.name, end_ns = excluded.end_ns",
    [STMT_BEGIN] = "BEGIN IMMEDIATE",
    [STMT_COMMIT] = "COMMIT",
    [STMT_ROLLBACK] = "ROLLBACK",
};

static const char schema_v1[] =
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;"
    "INSERT INTO meta VALUES ('format', 'calltape tape'), ('next_id', 1);"
    "CREATE TABLE sessions(id INTEGER PRIMARY KEY, start_ns INTEGER NOT NULL,"
    " end_ns INTEGER, host TEXT, pid INTEGER, ppid INTEGER, parent INTEGER,"
    " argv BLOB, python TEXT, calltape TEXT, mpi_rank INTEGER,"
    " unencodable INTEGER NOT NULL DEFAULT 0, pickled INTEGER NOT NULL DEFAULT 0,"
    " redacted INTEGER NOT NULL DEFAULT 0, truncated INTEGER NOT NULL DEFAULT 0,"
    " dropped INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE threads(session INTEGER NOT NULL, idx INTEGER NOT NULL,"
    " ident INTEGER, native_id INTEGER, name TEXT, PRIMARY KEY(session, idx)) WITHOUT ROWID;"
    "CREATE TABLE functions(id INTEGER PRIMARY KEY, module TEXT NOT NULL,"
    " qualname TEXT NOT NULL, file TEXT NOT NULL, line INTEGER NOT NULL,"
    " signature BLOB NOT NULL, calls INTEGER NOT NULL DEFAULT 0,"
    " raised INTEGER NOT NULL DEFAULT 0, total_ns INTEGER NOT NULL DEFAULT 0,"
    " min_ns INTEGER, max_ns INTEGER, first_ns INTEGER, last_ns INTEGER,"
    " UNIQUE(module, qualname, file, line, signature));"
    "CREATE TABLE segments(id INTEGER PRIMARY KEY, session INTEGER NOT NULL,"
    " function INTEGER NOT NULL, n INTEGER NOT NULL, id_min INTEGER NOT NULL,"
    " id_max INTEGER NOT NULL, start_min INTEGER NOT NULL, start_max INTEGER NOT NULL,"
    " end_max INTEGER NOT NULL, dur_min INTEGER NOT NULL, dur_max INTEGER NOT NULL,"
    " raised INTEGER NOT NULL, data BLOB NOT NULL);"
    "CREATE INDEX segments_by_function ON segments(function, start_min);"
    "CREATE INDEX segments_by_start ON segments(start_min);"
    "CREATE INDEX segments_by_duration ON segments(dur_max);"
    "CREATE INDEX segments_by_id ON segments(id_min);"
    "CREATE TABLE blobs(id INTEGER PRIMARY KEY, hash BLOB NOT NULL UNIQUE,"
    " size INTEGER NOT NULL, data BLOB NOT NULL);";

/* 2: newest-first searches walk segments by their last start, lazily */
static const char schema_v2[] = "CREATE INDEX segments_by_start_max ON segments(start_max);";

/* 3: where the recorded program found its modules (replay imports from there) */
static const char schema_v3[] = "ALTER TABLE sessions ADD COLUMN sys_path0 TEXT;"
                                "ALTER TABLE sessions ADD COLUMN cwd TEXT;";

/* 4: self time (a call's duration minus its recorded direct children's),
 * each function's aggregates per session, and the children index.
 * Functions that already have calls keep self_ns NULL (unknown) forever;
 * the sessions already on the tape get their counts from the segments,
 * with total and self unknown.  The children index (engine.h, seg_link):
 * one row per parent range of a segment, lo and hi the range's parent ids
 * (both minus the session for its roots), kids the calls naming a parent
 * in it, then a copy of the segment's zone map and, for a range of several
 * parents, the bitmap of which ids are parents, so that a listing by
 * parent reads this table alone, in start order within one lo.  Segments
 * written before (ids below meta 'children_from') have no rows: readers
 * find their children by the session and the time window
 * (store_sqlite_read.c). */
static const char schema_v4[] =
    "ALTER TABLE functions ADD COLUMN self_ns INTEGER;"
    "UPDATE functions SET self_ns = 0 WHERE calls = 0;"
    "CREATE TABLE function_sessions(session INTEGER NOT NULL, function INTEGER NOT NULL,"
    " calls INTEGER NOT NULL, raised INTEGER NOT NULL, total_ns INTEGER, self_ns INTEGER,"
    " min_ns INTEGER, max_ns INTEGER, PRIMARY KEY(session, function)) WITHOUT ROWID;"
    "INSERT INTO function_sessions SELECT session, function, sum(n), sum(raised), NULL, NULL,"
    " min(dur_min), max(dur_max) FROM segments GROUP BY session, function;"
    "CREATE TABLE children(lo INTEGER NOT NULL, start_min INTEGER NOT NULL,"
    " segment INTEGER NOT NULL, hi INTEGER NOT NULL, kids INTEGER NOT NULL,"
    " session INTEGER NOT NULL, function INTEGER NOT NULL, n INTEGER NOT NULL,"
    " start_max INTEGER NOT NULL, dur_min INTEGER NOT NULL, dur_max INTEGER NOT NULL,"
    " raised INTEGER NOT NULL, parents BLOB, PRIMARY KEY(lo, start_min, segment))"
    " WITHOUT ROWID;"
    "INSERT INTO meta VALUES ('children_from', (SELECT coalesce(max(id), 0) + 1 FROM segments));";

/* 5: the spans of a session's time the program named (store_context: a
 * pytest test and its node id), by session and id (ids follow the starts),
 * and by name for a search by test. */
static const char schema_v5[] =
    "CREATE TABLE contexts(session INTEGER NOT NULL, id INTEGER NOT NULL, kind TEXT NOT NULL,"
    " name TEXT NOT NULL, start_ns INTEGER NOT NULL, end_ns INTEGER,"
    " PRIMARY KEY(session, id)) WITHOUT ROWID;"
    "CREATE INDEX contexts_by_name ON contexts(kind, name);";

/* migrations[v] turns schema v into v + 1; index 0 creates the schema. */
static const char *const migrations[CALLTAPE_SCHEMA_VERSION] = {
    schema_v1, schema_v2, schema_v3, schema_v4, schema_v5, sq_schema_v6 /* store_sqlite_specs.c */};

typedef struct sq_store {
    store base; /* first: the handle's head */
    sqlite3 *db;
    sqlite3_stmt *stmt[NSTMT];
    int bind_rc; /* the first failed bind of the statement being bound, else SQLITE_OK */
    int readonly;
    int64_t version;       /* the tape's schema version (a reader reads older ones as they are) */
    int64_t children_from; /* a reader: the first segment the children index covers */
    sq_id_width ids;       /* a reader: see store_sqlite.h */
    dev_t dev;             /* the file a writer opened (store_same_file) */
    ino_t ino;
    char err[256];
} sq_store;

static void sq_close(store *base);
static const store_ops sq_ops;

/* The text of errno value `err`, in `buf` (`n` bytes) or in the C
 * library's static storage; thread-safe, unlike strerror (the writer thread
 * opens tapes).  glibc with _GNU_SOURCE has the GNU strerror_r, which
 * returns the text; elsewhere it is the XSI one, which fills `buf`. */
static const char *errno_text(int err, char *buf, size_t n)
{
#if defined(__GLIBC__) && defined(_GNU_SOURCE)
    return strerror_r(err, buf, n);
#else
    if (strerror_r(err, buf, n) != 0)
        snprintf(buf, n, "error %d", err);
    return buf;
#endif
}

static void set_err(sq_store *s, const char *what)
{
    snprintf(s->err, sizeof s->err, "%s: %s", what, s->db ? sqlite3_errmsg(s->db) : "no database");
}

static int exec_sql(sq_store *s, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(s->err, sizeof s->err, "%s", msg ? msg : sqlite3_errmsg(s->db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static int pragma_int(sq_store *s, const char *sql, int64_t *out)
{
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &stmt, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    if (rc != SQLITE_ROW) {
        set_err(s, "cannot read the tape header");
        sqlite3_finalize(stmt);
        return -1;
    }
    *out = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    return 0;
}

/* Checks application id and version.  Sets *version; -1 with a message when
 * the file is not a tape or is newer than this calltape. */
static int check_header(sq_store *s, const char *path, int64_t *version)
{
    int64_t app = 0, tables = 0;
    if (pragma_int(s, "PRAGMA application_id", &app) < 0 ||
        pragma_int(s, "PRAGMA user_version", version) < 0 ||
        pragma_int(s, "SELECT count(*) FROM sqlite_master", &tables) < 0) {
        if ((sqlite3_errcode(s->db) & 0xff) == SQLITE_CORRUPT)
            snprintf(s->err, sizeof s->err, "the tape %s is damaged: %s", path,
                     sqlite3_errmsg(s->db));
        else
            snprintf(s->err, sizeof s->err,
                     "%s is not a calltape tape (not an SQLite database"
                     " or damaged: %s)",
                     path, sqlite3_errmsg(s->db));
        return -1;
    }
    if (app != CALLTAPE_APP_ID && (app != 0 || tables != 0)) {
        snprintf(s->err, sizeof s->err, "%s is an SQLite database but not a calltape tape", path);
        return -1;
    }
    if (*version > CALLTAPE_SCHEMA_VERSION) {
        snprintf(s->err, sizeof s->err,
                 "%s was written by a newer calltape (tape format %lld;"
                 " this calltape reads up to %d): upgrade calltape to read it",
                 path, (long long)*version, CALLTAPE_SCHEMA_VERSION);
        return -1;
    }
    return 0;
}

static int migrate(sq_store *s, const char *path)
{
    int64_t version = 0;
    if (exec_sql(s, "BEGIN IMMEDIATE") < 0)
        return -1;
    if (check_header(s, path, &version) < 0)
        goto error;
    for (int64_t v = version; v < CALLTAPE_SCHEMA_VERSION; v++)
        if (exec_sql(s, migrations[v]) < 0)
            goto error;
    if (version < CALLTAPE_SCHEMA_VERSION) {
        char sql[96];
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d; PRAGMA application_id = %d",
                 CALLTAPE_SCHEMA_VERSION, CALLTAPE_APP_ID);
        if (exec_sql(s, sql) < 0)
            goto error;
    }
    return exec_sql(s, "COMMIT");
error:
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

static sq_store *open_common(const char *path, int flags, char *err, size_t errlen)
{
    sq_store *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory opening %s", path);
        return NULL;
    }
    s->base.ops = &sq_ops;
    pthread_mutex_init(&s->ids.mu, NULL);
    s->readonly = !(flags & SQLITE_OPEN_READWRITE);
    /* writers are used by one thread; readers may be shared by Python
     * threads with the GIL released, so SQLite serializes their calls */
    int threading = s->readonly ? SQLITE_OPEN_FULLMUTEX : SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(path, &s->db, flags | threading, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot open %s: %s", path,
                 s->db ? sqlite3_errmsg(s->db) : "out of memory");
        sq_close(&s->base);
        return NULL;
    }
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);
    return s;
}

static store *sq_open_write(const char *path, char *err, size_t errlen)
{
    /* Create the file ourselves so that it gets mode 0600 whatever the umask. */
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        char why[128];
        snprintf(err, errlen, "cannot write the tape %s: %s", path,
                 errno_text(errno, why, sizeof why));
        return NULL;
    }
    struct stat sb;
    int stat_rc = fstat(fd, &sb);
    close(fd);
    sq_store *s = open_common(path, SQLITE_OPEN_READWRITE, err, errlen);
    if (!s)
        return NULL;
    if (stat_rc == 0) {
        s->dev = sb.st_dev;
        s->ino = sb.st_ino;
    }
    /* Switching a new file to WAL and creating the schema can meet another
     * process doing the same; SQLite does not always call the busy handler
     * there, so retry for as long as the busy timeout. */
    for (int waited_ms = 0;; waited_ms += 10) {
        if (exec_sql(s, "PRAGMA auto_vacuum = INCREMENTAL; PRAGMA journal_mode = WAL;"
                        " PRAGMA synchronous = NORMAL") == 0 &&
            migrate(s, path) == 0) {
            s->version = CALLTAPE_SCHEMA_VERSION;
            break;
        }
        int code = sqlite3_errcode(s->db) & 0xff;
        if (code == SQLITE_NOTADB || code == SQLITE_CORRUPT) {
            snprintf(s->err, sizeof s->err,
                     "%s is not a calltape tape (not an SQLite database or damaged: %s)", path,
                     sqlite3_errmsg(s->db));
            goto error;
        }
        if (code == SQLITE_READONLY || code == SQLITE_CANTOPEN || code == SQLITE_IOERR) {
            snprintf(s->err, sizeof s->err, "cannot write the tape %s: %s", path,
                     sqlite3_errmsg(s->db));
            goto error;
        }
        if ((code != SQLITE_BUSY && code != SQLITE_LOCKED) || waited_ms >= BUSY_TIMEOUT_MS)
            goto error;
        struct timespec pause = {0, 10000000};
        nanosleep(&pause, NULL);
    }
    for (int i = 0; i < NSTMT; i++) {
        if (sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->stmt[i],
                               NULL) != SQLITE_OK) {
            set_err(s, "cannot prepare the tape statements");
            goto error;
        }
    }
    return &s->base;
error:
    snprintf(err, errlen, "%s", s->err);
    sq_close(&s->base);
    return NULL;
}

/* 1 when the folder holding `path` cannot be written (a read-only mount, or
 * its permissions), so SQLite cannot create the -shm index a WAL reader needs. */
static int folder_unwritable(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 0;
    if (n >= sizeof dir)
        return 0;
    if (slash && n == 0)
        n = 1; /* "/tape.db" */
    memcpy(dir, slash ? path : ".", slash ? n : 1);
    dir[slash ? n : 1] = 0;
    return access(dir, W_OK) != 0;
}

/* The size of `path` + `suffix`, or -1 when it does not exist. */
static long long file_size(const char *path, const char *suffix)
{
    char name[4200];
    struct stat sb;
    snprintf(name, sizeof name, "%s%s", path, suffix);
    return stat(name, &sb) == 0 ? (long long)sb.st_size : -1;
}

/* Writes "file:<path>?immutable=1" with the URI's special characters
 * escaped.  Returns 0, or -1 when `out` is too small. */
static int immutable_uri(const char *path, char *out, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t k = (size_t)snprintf(out, n, "file:");
    for (const unsigned char *c = (const unsigned char *)path; *c; c++) {
        if (k + 4 >= n)
            return -1;
        if (*c == '%' || *c == '?' || *c == '#' || *c <= ' ' || *c >= 0x7f) {
            out[k++] = '%';
            out[k++] = hex[*c >> 4];
            out[k++] = hex[*c & 15];
        } else {
            out[k++] = (char)*c;
        }
    }
    return (size_t)snprintf(out + k, n - k, "?immutable=1") < n - k ? 0 : -1;
}

/* Opens the tape read-only, as an immutable file when its folder is
 * read-only and nothing waits in its write-ahead log (nobody can write
 * there, and SQLite could not create the -shm index).  NULL with `err`. */
static sq_store *open_read_store(const char *path, char *err, size_t errlen)
{
    sq_store *s = open_common(path, SQLITE_OPEN_READONLY, err, errlen);
    if (!s)
        return NULL;
    if (check_header(s, path, &s->version) == 0)
        return s;
    int code = sqlite3_errcode(s->db) & 0xff;
    if ((code != SQLITE_CANTOPEN && code != SQLITE_READONLY) || !folder_unwritable(path)) {
        snprintf(err, errlen, "%s", s->err);
        sq_close(&s->base);
        return NULL;
    }
    sq_close(&s->base);
    if (file_size(path, "-wal") > 0) {
        snprintf(err, errlen,
                 "cannot read %s: its folder is read-only and its write-ahead log %s-wal"
                 " holds calls that SQLite reads only through an index file it cannot"
                 " create there; copy the tape and its -wal file to a writable folder",
                 path, path);
        return NULL;
    }
    char uri[8400];
    if (immutable_uri(path, uri, sizeof uri) < 0) {
        snprintf(err, errlen, "cannot read %s: the path is too long", path);
        return NULL;
    }
    s = open_common(uri, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, err, errlen);
    if (s && check_header(s, path, &s->version) < 0) {
        snprintf(err, errlen, "%s", s->err);
        sq_close(&s->base);
        return NULL;
    }
    return s;
}

static store *sq_open_read(const char *path, char *err, size_t errlen)
{
    struct stat sb;
    if (stat(path, &sb) != 0) {
        char why[128];
        snprintf(err, errlen, "no tape at %s: %s", path, errno_text(errno, why, sizeof why));
        return NULL;
    }
    if (!S_ISREG(sb.st_mode)) {
        snprintf(err, errlen, "%s is not a file", path);
        return NULL;
    }
    sq_store *s = open_read_store(path, err, errlen);
    if (!s)
        return NULL;
    if (s->version < 1) {
        snprintf(err, errlen, "%s is not a calltape tape (empty database)", path);
        sq_close(&s->base);
        return NULL;
    }
    /* every table there and its root page readable: a damaged schema or
     * root page is reported here rather than at the first search */
    if (exec_sql(s, "SELECT 1 FROM meta, sessions, threads, functions, segments, blobs"
                    " LIMIT 0") < 0) {
        snprintf(err, errlen, "the tape %s is damaged: %s", path, sqlite3_errmsg(s->db));
        sq_close(&s->base);
        return NULL;
    }
    s->children_from = INT64_MAX; /* before schema 4 (or without the row): none */
    sqlite3_stmt *q = NULL;
    if (s->version >= 4 &&
        sqlite3_prepare_v2(s->db, "SELECT value FROM meta WHERE key = 'children_from'", -1, &q,
                           NULL) == SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW && sqlite3_column_type(q, 0) == SQLITE_INTEGER)
        s->children_from = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    /* Older formats differ by indexes and session columns the migrations
     * add, so they are read as they are (opening never modifies a tape;
     * store_version tells the reader which columns there are); the next
     * recording onto the tape upgrades it. */
    /* a larger page cache for repeated searches (64 MiB) */
    exec_sql(s, "PRAGMA cache_size = -65536");
    return &s->base;
}

static int sq_check_write(const char *path, char *err, size_t errlen)
{
    struct stat sb;
    char why[128];
    if (stat(path, &sb) != 0) {
        if (errno != ENOENT) {
            snprintf(err, errlen, "cannot write the tape %s: %s", path,
                     errno_text(errno, why, sizeof why));
            return -1;
        }
        if (folder_unwritable(path)) {
            snprintf(err, errlen, "cannot write the tape %s: its folder is not writable (%s)", path,
                     errno_text(errno, why, sizeof why));
            return -1;
        }
        return 0;
    }
    if (!S_ISREG(sb.st_mode)) {
        snprintf(err, errlen, "cannot write the tape %s: it is not a file", path);
        return -1;
    }
    store *s = sq_open_write(path, err, errlen);
    store_close(s);
    return s ? 0 : -1;
}

static int sq_same_file(const store *base, const char *path)
{
    const sq_store *s = (const sq_store *)base;
    struct stat sb;
    if (stat(path, &sb) != 0)
        return errno == ENOENT || errno == ENOTDIR ? 0 : 1; /* cannot tell: assume so */
    return !s->ino || (sb.st_dev == s->dev && sb.st_ino == s->ino);
}

static void sq_file_id(const store *base, uint64_t *dev, uint64_t *ino)
{
    const sq_store *s = (const sq_store *)base;
    *dev = (uint64_t)s->dev;
    *ino = (uint64_t)s->ino;
}

static int sq_checkpoint(store *base)
{
    sq_store *s = (sq_store *)base;
    if (!s || s->readonly)
        return 0;
    /* PASSIVE never waits: it copies every frame no reader still needs.
     * Only when that left some (a reader of another process mid-read) does
     * TRUNCATE wait for it, briefly: at exit and when leaving a tape,
     * never long.  When the log is all copied, TRUNCATE empties it if
     * nobody else uses it right now. */
    int log = 0, done = 0;
    sqlite3_busy_timeout(s->db, 0);
    int rc = sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
    if (rc == SQLITE_OK && done < log)
        sqlite3_busy_timeout(s->db, CHECKPOINT_TIMEOUT_MS);
    if (rc == SQLITE_OK || rc == SQLITE_BUSY) {
        int r2 = sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
        if (rc == SQLITE_BUSY || r2 != SQLITE_BUSY)
            rc = r2;
    }
    sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);
    if (rc != SQLITE_OK && rc != SQLITE_BUSY) {
        set_err(s, "cannot copy the write-ahead log into the tape");
        return -1;
    }
    return 0;
}

static void sq_close(store *base)
{
    sq_store *s = (sq_store *)base;
    if (!s)
        return;
    for (int i = 0; i < NSTMT; i++)
        sqlite3_finalize(s->stmt[i]);
    sqlite3_close_v2(s->db);
    pthread_mutex_destroy(&s->ids.mu);
    free(s);
}

sqlite3 *sq_db(store *s)
{
    return ((sq_store *)s)->db;
}

sq_id_width *sq_id_width_of(store *s)
{
    return &((sq_store *)s)->ids;
}

int64_t sq_children_from(store *s)
{
    return ((sq_store *)s)->children_from;
}

static const char *sq_errmsg(store *s)
{
    return ((sq_store *)s)->err;
}

static int64_t sq_version(store *s)
{
    return ((sq_store *)s)->version;
}

/* Remembers the first failed bind of the statement being bound (the
 * statement then fails when it would run). */
static void note_bind(sq_store *s, int rc)
{
    if (rc != SQLITE_OK && s->bind_rc == SQLITE_OK)
        s->bind_rc = rc;
}

static void bind_int(sq_store *s, sqlite3_stmt *stmt, int i, int64_t v)
{
    note_bind(s, sqlite3_bind_int64(stmt, i, v));
}

/* Binds `n` bytes of text at `p`, or NULL when `p` is NULL; SQLite copies
 * them when `copy`, else they must live until the statement is reset. */
static void bind_text(sq_store *s, sqlite3_stmt *stmt, int i, const char *p, size_t n, int copy)
{
    if (p)
        note_bind(s, sqlite3_bind_text64(stmt, i, p, (sqlite3_uint64)n,
                                         copy ? SQLITE_TRANSIENT : SQLITE_STATIC, SQLITE_UTF8));
    else
        note_bind(s, sqlite3_bind_null(stmt, i));
}

/* Binds the NUL-terminated text `p` (copied), or NULL when `p` is NULL. */
static void bind_str(sq_store *s, sqlite3_stmt *stmt, int i, const char *p)
{
    bind_text(s, stmt, i, p, p ? strlen(p) : 0, 1);
}

/* Binds `n` bytes at `p` as a blob (NULL when `p` is NULL), as bind_text. */
static void bind_blob(sq_store *s, sqlite3_stmt *stmt, int i, const void *p, size_t n, int copy)
{
    note_bind(s, sqlite3_bind_blob64(stmt, i, p, (sqlite3_uint64)n,
                                     copy ? SQLITE_TRANSIENT : SQLITE_STATIC));
}

/* When a bind of `stmt` failed: resets it, sets the error ("what: reason")
 * and returns -1; else 0.  Either way the next statement binds afresh. */
static int bind_failed(sq_store *s, sqlite3_stmt *stmt, const char *what)
{
    int rc = s->bind_rc;
    s->bind_rc = SQLITE_OK;
    if (rc == SQLITE_OK)
        return 0;
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    snprintf(s->err, sizeof s->err, "%s: %s", what, sqlite3_errstr(rc));
    return -1;
}

/* Runs a statement that returns no row (binding already done, through the
 * helpers above); resets it.  A failed bind fails it unrun. */
static int run(sq_store *s, int which, const char *what)
{
    sqlite3_stmt *stmt = s->stmt[which];
    if (bind_failed(s, stmt, what) < 0)
        return -1;
    int rc = sqlite3_step(stmt);
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        set_err(s, what);
        return -1;
    }
    return 0;
}

static int sq_begin(store *base)
{
    sq_store *s = (sq_store *)base;
    return run(s, STMT_BEGIN, "cannot start a transaction on the tape");
}

static int sq_commit(store *base)
{
    sq_store *s = (sq_store *)base;
    return run(s, STMT_COMMIT, "cannot commit to the tape");
}

static void sq_rollback(store *base)
{
    sq_store *s = (sq_store *)base;
    if (!sqlite3_get_autocommit(s->db))
        run(s, STMT_ROLLBACK, "cannot roll back");
}

static int sq_add_session(store *base, const store_session *ss, int64_t *id)
{
    sq_store *s = (sq_store *)base;
    sqlite3_stmt *stmt = s->stmt[STMT_SESSION];
    bind_int(s, stmt, 1, ss->start_ns);
    bind_str(s, stmt, 2, ss->host);
    bind_int(s, stmt, 3, ss->pid);
    bind_int(s, stmt, 4, ss->ppid);
    if (ss->parent_session > 0)
        bind_int(s, stmt, 5, ss->parent_session);
    if (ss->argv)
        bind_blob(s, stmt, 6, ss->argv, ss->argv_len, 1);
    bind_str(s, stmt, 7, ss->python_version);
    bind_str(s, stmt, 8, ss->calltape_version);
    if (ss->mpi_rank >= 0)
        bind_int(s, stmt, 9, ss->mpi_rank);
    bind_str(s, stmt, 10, ss->sys_path0);
    bind_str(s, stmt, 11, ss->cwd);
    if (run(s, STMT_SESSION, "cannot add the session") < 0)
        return -1;
    *id = sqlite3_last_insert_rowid(s->db);
    return 0;
}

static int sq_update_session(store *base, int64_t id, int64_t start_ns, int64_t end_ns,
                             const int64_t counters[5])
{
    sq_store *s = (sq_store *)base;
    sqlite3_stmt *stmt = s->stmt[STMT_SESSION_UPDATE];
    bind_int(s, stmt, 1, start_ns);
    bind_int(s, stmt, 2, end_ns);
    for (int i = 0; i < 5; i++)
        bind_int(s, stmt, 3 + i, counters[i]);
    bind_int(s, stmt, 8, id);
    return run(s, STMT_SESSION_UPDATE, "cannot update the session");
}

static int sq_function(store *base, const char *module, size_t module_len, const char *qualname,
                       size_t qualname_len, const char *file, size_t file_len, int64_t line,
                       const uint8_t *sig, size_t sig_len, int64_t *id)
{
    sq_store *s = (sq_store *)base;
    for (int which = STMT_FN_FIND; which <= STMT_FN_INSERT; which++) {
        sqlite3_stmt *stmt = s->stmt[which];
        bind_text(s, stmt, 1, module, module_len, 0);
        bind_text(s, stmt, 2, qualname, qualname_len, 0);
        bind_text(s, stmt, 3, file, file_len, 0);
        bind_int(s, stmt, 4, line);
        bind_blob(s, stmt, 5, sig, sig_len, 0);
        if (which == STMT_FN_FIND) {
            if (bind_failed(s, stmt, "cannot look up a function") < 0)
                return -1;
            int rc = sqlite3_step(stmt);
            if (rc == SQLITE_ROW)
                *id = sqlite3_column_int64(stmt, 0);
            sqlite3_reset(stmt);
            sqlite3_clear_bindings(stmt);
            if (rc == SQLITE_ROW)
                return 0;
            if (rc != SQLITE_DONE) {
                set_err(s, "cannot look up a function");
                return -1;
            }
        } else {
            if (run(s, STMT_FN_INSERT, "cannot add a function") < 0)
                return -1;
            *id = sqlite3_last_insert_rowid(s->db);
        }
    }
    return 0;
}

static int sq_add_thread(store *base, int64_t session, int64_t idx, int64_t ident,
                         int64_t native_id, const char *name, size_t name_len)
{
    sq_store *s = (sq_store *)base;
    sqlite3_stmt *stmt = s->stmt[STMT_THREAD];
    bind_int(s, stmt, 1, session);
    bind_int(s, stmt, 2, idx);
    bind_int(s, stmt, 3, ident);
    bind_int(s, stmt, 4, native_id);
    bind_text(s, stmt, 5, name, name_len, 1);
    return run(s, STMT_THREAD, "cannot add a thread");
}

static int sq_reserve_ids(store *base, int64_t count, int64_t *first)
{
    sq_store *s = (sq_store *)base;
    sqlite3_stmt *stmt = s->stmt[STMT_NEXT_ID_GET];
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW)
        *first = sqlite3_column_int64(stmt, 0);
    sqlite3_reset(stmt);
    if (rc != SQLITE_ROW) {
        set_err(s, "cannot reserve call ids");
        return -1;
    }
    bind_int(s, s->stmt[STMT_NEXT_ID_SET], 1, *first + count);
    return run(s, STMT_NEXT_ID_SET, "cannot reserve call ids");
}

static int sq_put_blob(store *base, const uint8_t hash[WIRE_HASH_BYTES], const uint8_t *data,
                       size_t n)
{
    sq_store *s = (sq_store *)base;
    sqlite3_stmt *stmt = s->stmt[STMT_BLOB];
    bind_blob(s, stmt, 1, hash, WIRE_HASH_BYTES, 0);
    bind_int(s, stmt, 2, (int64_t)n);
    bind_blob(s, stmt, 3, data, n, 0);
    return run(s, STMT_BLOB, "cannot store a blob");
}

/* The children-index rows of the segment just inserted (seg_link ranges
 * of `b`, made by seg_builder_links); its roots under minus `session`. */
static int add_children(sq_store *s, int64_t session, int64_t function, const seg_builder *b)
{
    int64_t segment = sqlite3_last_insert_rowid(s->db);
    sqlite3_stmt *stmt = s->stmt[STMT_CHILD];
    size_t n = b->links.len / sizeof(seg_link);
    for (size_t i = 0; i < n; i++) {
        seg_link k;
        memcpy(&k, b->links.data + i * sizeof k, sizeof k);
        const int64_t v[12] = {k.lo ? k.lo : -session,
                               b->start_min,
                               segment,
                               k.lo ? k.hi : -session,
                               k.n,
                               session,
                               function,
                               (int64_t)b->n,
                               b->start_max,
                               b->dur_min,
                               b->dur_max,
                               b->n_raised};
        for (int j = 0; j < 12; j++)
            bind_int(s, stmt, j + 1, v[j]);
        if (k.lo != k.hi)
            bind_blob(s, stmt, 13, k.parents, (size_t)((k.hi - k.lo) / 8 + 1), 0);
        if (run(s, STMT_CHILD, "cannot store the children index") < 0)
            return -1;
    }
    return 0;
}

static int sq_add_segment(store *base, int64_t session, int64_t function, const seg_builder *b,
                          const uint8_t *data, size_t n)
{
    sq_store *s = (sq_store *)base;
    sqlite3_stmt *stmt = s->stmt[STMT_SEGMENT];
    bind_int(s, stmt, 1, session);
    bind_int(s, stmt, 2, function);
    bind_int(s, stmt, 3, (int64_t)b->n);
    bind_int(s, stmt, 4, b->id_min);
    bind_int(s, stmt, 5, b->id_max);
    bind_int(s, stmt, 6, b->start_min);
    bind_int(s, stmt, 7, b->start_max);
    bind_int(s, stmt, 8, b->end_max);
    bind_int(s, stmt, 9, b->dur_min);
    bind_int(s, stmt, 10, b->dur_max);
    bind_int(s, stmt, 11, b->n_raised);
    bind_blob(s, stmt, 12, data, n, 0);
    if (run(s, STMT_SEGMENT, "cannot store calls") < 0)
        return -1;
    stmt = s->stmt[STMT_FN_AGG];
    bind_int(s, stmt, 1, (int64_t)b->n);
    bind_int(s, stmt, 2, b->n_raised);
    bind_int(s, stmt, 3, b->total_dur);
    bind_int(s, stmt, 4, b->total_self);
    bind_int(s, stmt, 5, b->dur_min);
    bind_int(s, stmt, 6, b->dur_min);
    bind_int(s, stmt, 7, b->dur_max);
    bind_int(s, stmt, 8, b->dur_max);
    bind_int(s, stmt, 9, b->start_min);
    bind_int(s, stmt, 10, b->start_min);
    bind_int(s, stmt, 11, b->start_max);
    bind_int(s, stmt, 12, b->start_max);
    bind_int(s, stmt, 13, function);
    if (run(s, STMT_FN_AGG, "cannot update function totals") < 0)
        return -1;
    stmt = s->stmt[STMT_FN_SESSION_AGG];
    bind_int(s, stmt, 1, session);
    bind_int(s, stmt, 2, function);
    bind_int(s, stmt, 3, (int64_t)b->n);
    bind_int(s, stmt, 4, b->n_raised);
    bind_int(s, stmt, 5, b->total_dur);
    bind_int(s, stmt, 6, b->total_self);
    bind_int(s, stmt, 7, b->dur_min);
    bind_int(s, stmt, 8, b->dur_max);
    if (run(s, STMT_FN_SESSION_AGG, "cannot update the session's function totals") < 0)
        return -1;
    return add_children(s, session, function, b);
}

static int sq_add_context(store *base, const store_context *c)
{
    sq_store *s = (sq_store *)base;
    sqlite3_stmt *stmt = s->stmt[STMT_CONTEXT];
    bind_int(s, stmt, 1, c->session);
    bind_int(s, stmt, 2, c->id);
    bind_text(s, stmt, 3, (const char *)c->kind.p, c->kind.n, 0);
    bind_text(s, stmt, 4, (const char *)c->name.p, c->name.n, 0);
    bind_int(s, stmt, 5, c->start_ns);
    if (c->end_ns != STORE_NONE)
        bind_int(s, stmt, 6, c->end_ns);
    return run(s, STMT_CONTEXT, "cannot store a test's span");
}

/* The writer's error buffer of `s` (store_sqlite.h). */
char *sq_err_of(store *base, size_t *n)
{
    sq_store *s = (sq_store *)base;
    *n = sizeof s->err;
    return s->err;
}

int sq_is_readonly(store *base)
{
    return ((sq_store *)base)->readonly;
}

static int sq_claims(const char *path)
{
    return path != NULL; /* every path that no other backend claims */
}

static const store_ops sq_ops = {
    .name = "SQLite",
    .same_file = sq_same_file,
    .file_id = sq_file_id,
    .checkpoint = sq_checkpoint,
    .prune = sq_prune,
    .size = sq_size,
    .close = sq_close,
    .errmsg = sq_errmsg,
    .version = sq_version,
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .add_session = sq_add_session,
    .update_session = sq_update_session,
    .function = sq_function,
    .add_thread = sq_add_thread,
    .reserve_ids = sq_reserve_ids,
    .put_blob = sq_put_blob,
    .add_segment = sq_add_segment,
    .add_context = sq_add_context,
    .put_note = sq_put_note,
    .read_note = sq_read_note,
    .totals = sq_totals,
    .function_count = sq_function_count,
    .call_total = sq_call_total,
    .read_sessions = sq_read_sessions,
    .read_functions = sq_read_functions,
    .read_session_functions = sq_read_session_functions,
    .read_threads = sq_read_threads,
    .read_blob = sq_read_blob,
    .find_call = sq_find_call,
    .list_segments = sq_list_segments,
    .read_contexts = sq_read_contexts,
    .next = sq_next,
    .load_listed = sq_load_listed,
    .cursor_close = sq_cursor_close,
    .specs = &sq_spec_ops,
};

const store_backend store_sqlite_backend = {
    .name = "SQLite",
    .claims = sq_claims,
    .open_write = sq_open_write,
    .open_read = sq_open_read,
    .check_write = sq_check_write,
};
