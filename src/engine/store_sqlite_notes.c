/*
 * store_sqlite_notes.c - notes on an SQLite tape: short texts under a key
 * in its meta table (store_put_note, store_read_note), which the spool
 * uses to say which tape it belongs to and which process made it.
 *
 * Invariants: a note's key is stored as 'note:' KEY, so no note can
 * replace the meta rows the schema itself keeps (format, next_id, ...);
 * a put replaces the note of the same key, in the caller's transaction.
 */
#include "store_sqlite.h"

#include <stdio.h>
#include <string.h>

/* Prepares `sql` into *q with the meta key of note `key` bound as ?1.
 * Returns SQLite's code (*q to finalize either way). */
static int note_statement(sqlite3 *db, const char *sql, const char *key, sqlite3_stmt **q)
{
    char name[200];
    snprintf(name, sizeof name, "note:%s", key);
    int rc = sqlite3_prepare_v2(db, sql, -1, q, NULL);
    return rc == SQLITE_OK ? sqlite3_bind_text(*q, 1, name, -1, SQLITE_TRANSIENT) : rc;
}

int sq_put_note(store *s, const char *key, const char *value)
{
    sqlite3 *db = sq_db(s);
    sqlite3_stmt *q = NULL;
    int rc = note_statement(db, "INSERT OR REPLACE INTO meta VALUES (?, ?)", key, &q);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(q, 2, value, -1, SQLITE_TRANSIENT);
    if (rc == SQLITE_OK && sqlite3_step(q) != SQLITE_DONE)
        rc = SQLITE_ERROR;
    sqlite3_finalize(q);
    if (rc != SQLITE_OK) {
        size_t n = 0;
        char *err = sq_err_of(s, &n);
        snprintf(err, n, "cannot keep a note on the tape: %s", sqlite3_errmsg(db));
        return -1;
    }
    return 0;
}

int sq_read_note(store *s, const char *key, char *out, size_t n, store_err *e)
{
    sqlite3 *db = sq_db(s);
    sqlite3_stmt *q = NULL;
    int rc = note_statement(db, "SELECT value FROM meta WHERE key = ?", key, &q);
    int found = 0;
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(q);
        if (rc == SQLITE_ROW) {
            const unsigned char *v = sqlite3_column_text(q, 0);
            snprintf(out, n, "%s", v ? (const char *)v : "");
            found = 1;
            rc = SQLITE_OK;
        } else if (rc == SQLITE_DONE) {
            rc = SQLITE_OK;
        }
    }
    if (rc != SQLITE_OK) {
        e->kind = (rc & 0xff) == SQLITE_NOMEM ? STORE_NOMEM : STORE_FAILED;
        snprintf(e->msg, sizeof e->msg, "SQLite reports: %s", sqlite3_errmsg(db));
        sqlite3_finalize(q);
        return -1;
    }
    sqlite3_finalize(q);
    return found;
}
