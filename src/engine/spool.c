/*
 * spool.c - the spool: a local SQLite tape, calltape-spool-PID.db in the
 * program's working folder (else /tmp; calltape-spool-PID-N.db when a file
 * of that name is there already), that the writer records into while
 * the server of a PostgreSQL tape is away and sends to the server when it
 * answers; and the spools that ended processes left for the same tape.
 *
 * The writer goes onto the spool
 *   - at the start of a round, when the server cannot be reached or no
 *     transaction can begin (spool_start), and
 *   - in the middle of a round, when the server fails after the round
 *     began (spool_take_over): the server's transaction is rolled back,
 *     what it held is written again into a spool transaction
 *     (writer_replay: the held segments and the round's spans) and the
 *     round goes on there; the call being taken is taken again only when
 *     it had not reached a builder (writer.c).
 * When the commit itself failed, the server may have committed the round
 * all the same: that round is committed alone, as a spool session of its
 * own, and the spool's note 'uncertain' names it ("SERVER END SPOOL", ';'
 * between several): the server session, the end the round wrote on its
 * row (each round writes a later end than the last, and a row keeps the
 * greatest) and the spool session.  Sending leaves that spool session out
 * when the server's row shows that end: the commit went through.
 * Every REOPEN_EVERY_NS (or at a flush) the writer tries the server again;
 * when it answers, what the builders hold goes to the spool, the writer
 * records onto the server again (a new session), sends the spool there
 * (store_copy_skip: fresh ids) and removes it.
 *
 * Invariants:
 *   - every call is in one place only: a builder, a held segment of the
 *     open transaction, or a committed segment (server or spool);
 *   - the spool's call ids start above every id the server handed out to
 *     this process, so calls already in builders keep theirs, and a spool
 *     session starts with the values and thread rows those calls name
 *     (writer_replay with no round), so a spool reads whole on its own;
 *   - the spool keeps the notes 'tape' (the tape as messages show it: no
 *     password), 'pid' and 'pid_start' (its owner and the owner's start
 *     time, /proc/PID/stat's 22nd field, so a reused PID owns nothing);
 *   - a spool is sent by one process: its owner while it lives; after it
 *     ended, by the first process recording onto the same tape from the
 *     same folder that holds flock(LOCK_EX) on it (spool_drain), which
 *     removes it after the commit; a spool whose sessions the server shows
 *     already (the same process, start and end: a send whose commit went
 *     through, its sender cut off or killed before it removed the file)
 *     is removed, not sent again;
 *   - over SPOOL_MAX_BYTES the spool takes no more rounds: they are dropped
 *     and counted, as without a spool.
 * Everything here runs on the writer thread with io_mu held.
 */
#include "engine_impl.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SPOOL_MAX_BYTES ((int64_t)256 << 20)
#define REOPEN_EVERY_NS 1000000000ull
#define MAX_UNCERTAIN 40 /* rounds of unknown outcome one spool names */
#define MAX_SPARE 64     /* reset builders kept for reuse, beyond one per function */

/* Makes room for `want` elements of `elem` bytes in *arr (capacity *cap).
 * Returns 0, or -1 when memory ran out (the array stays). */
static int room(void **arr, size_t *cap, size_t want, size_t elem)
{
    if (want <= *cap)
        return 0;
    size_t n = *cap ? *cap * 2 : 16;
    while (n < want)
        n *= 2;
    void *p = realloc(*arr, n * elem);
    if (!p)
        return -1;
    *arr = p;
    *cap = n;
    return 0;
}

int spool_keep_blob(writer_state *w, const uint8_t *h, const uint8_t *data, size_t n)
{
    if (room((void **)&w->kept, &w->capkept, w->nkept + 1, sizeof(kept_blob)) < 0)
        return -1;
    kept_blob *k = &w->kept[w->nkept];
    k->data = malloc(n ? n : 1);
    if (!k->data)
        return -1;
    if (n)
        memcpy(k->data, data, n);
    memcpy(k->hash, h, WIRE_HASH_BYTES);
    k->len = n;
    w->nkept++;
    return 0;
}

void spool_forget_kept(writer_state *w, int always)
{
    for (size_t i = 0; !always && i < w->nfns; i++)
        if (w->fns[i].bytes && w->fns[i].seg.n)
            return;
    for (size_t i = 0; i < w->nkept; i++)
        free(w->kept[i].data);
    w->nkept = 0;
}

int spool_hold(writer_state *w, size_t fn)
{
    if (room((void **)&w->held, &w->capheld, w->nheld + 1, sizeof(held_seg)) < 0)
        return -1;
    held_seg *h = &w->held[w->nheld++];
    h->fn = fn;
    h->seg = w->fns[fn].seg;
    seg_builder *b = &w->fns[fn].seg;
    if (w->nspare) {
        *b = w->spare[--w->nspare];
        return 0;
    }
    /* a new one, as large as the full one at once: no copying as it grows
     * (best effort: when memory is short it grows as usual later) */
    seg_builder_init(b);
    for (size_t i = 0; i < sizeof b->col / sizeof b->col[0]; i++)
        if (wbuf_reserve(&b->col[i], h->seg.col[i].cap) < 0)
            b->col[i].failed = 0;
    if (wbuf_reserve(&b->raw, h->seg.raw.cap) < 0)
        b->raw.failed = 0;
    return 0;
}

void spool_release_held(writer_state *w)
{
    for (size_t i = 0; i < w->nheld; i++) {
        seg_builder *b = &w->held[i].seg;
        if (w->nspare < w->nfns + MAX_SPARE &&
            room((void **)&w->spare, &w->capspare, w->nspare + 1, sizeof(seg_builder)) == 0) {
            seg_builder_reset(b);
            w->spare[w->nspare++] = *b;
        } else {
            seg_builder_free(b);
        }
    }
    w->nheld = 0;
}

/* Leaves the store the writer has for another: what it resolved there is
 * forgotten (call id blocks too when `ids`). */
static void switch_store(engine *e, int ids)
{
    writer_state *w = &e->w;
    writer_close_store(e);
    for (size_t i = 0; i < w->nfns; i++)
        w->fns[i].tape_id = 0;
    for (size_t i = 0; i < w->nthreads; i++)
        w->threads[i].stored = 0;
    if (ids && w->id_blocks)
        memset(w->id_blocks, 0, w->nblocks * sizeof(int64_t));
    pthread_mutex_lock(&e->mu);
    w->session_id = 0;
    pthread_mutex_unlock(&e->mu);
    w->last_open_try_ns = 0;
}

/* The start time of process `pid` (/proc/PID/stat's 22nd field) into *out.
 * Returns 0, or -1 when there is no such process (or no /proc). */
static int proc_start(long pid, unsigned long long *out)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the name may hold blanks and parentheses */
    if (!p)
        return -1;
    char *save = NULL;
    int field = 2;
    for (char *tok = strtok_r(p + 1, " ", &save); tok; tok = strtok_r(NULL, " ", &save))
        if (++field == 22) {
            *out = strtoull(tok, NULL, 10);
            return 0;
        }
    return -1;
}

/* 1 when the process `pid` that made a spool (started at `start`, "0" or
 * "" when unknown) still runs. */
static int owner_alive(long pid, const char *start)
{
    unsigned long long now = 0;
    if (proc_start(pid, &now) == 0)
        return !start[0] || strtoull(start, NULL, 10) == 0 || strtoull(start, NULL, 10) == now;
    if (access("/proc/self/stat", R_OK) == 0)
        return 0; /* /proc is there and has no such process */
    return kill((pid_t)pid, 0) == 0 || errno == EPERM;
}

/* The folder spools go to: the program's working folder, else /tmp. */
static const char *spool_folder(const engine *e)
{
    return e->cwd && e->cwd[0] ? e->cwd : "/tmp";
}

/* Names this process's next spool: calltape-spool-PID.db, or with -N
 * before .db when a file of that name is there already (a spool left by
 * an ended process that had the same PID, for this tape or another). */
static void name_spool(engine *e)
{
    writer_state *w = &e->w;
    struct stat st;
    snprintf(w->spool_path, sizeof w->spool_path, "%s/calltape-spool-%ld.db", spool_folder(e),
             (long)getpid());
    for (int n = 2; n < 1000 && lstat(w->spool_path, &st) == 0; n++)
        snprintf(w->spool_path, sizeof w->spool_path, "%s/calltape-spool-%ld-%d.db",
                 spool_folder(e), (long)getpid(), n);
}

/* 1 when `name` is a spool's: calltape-spool-DIGITS[-DIGITS].db. */
static int spool_name(const char *name)
{
    static const char head[] = "calltape-spool-";
    if (strncmp(name, head, sizeof head - 1) != 0)
        return 0;
    const char *p = name + sizeof head - 1, *digits = p;
    while (*p >= '0' && *p <= '9')
        p++;
    if (p == digits)
        return 0;
    if (*p == '-') {
        digits = ++p;
        while (*p >= '0' && *p <= '9')
            p++;
        if (p == digits)
            return 0;
    }
    return strcmp(p, ".db") == 0;
}

/* Notes who owns the spool (in its open transaction).  Returns 0 or -1. */
static int note_owner(engine *e)
{
    store *s = e->w.store;
    char shown[4200], pid[32], start[32];
    unsigned long long st = 0;
    store_redact(e->path, shown, sizeof shown);
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    snprintf(start, sizeof start, "%llu", proc_start((long)getpid(), &st) == 0 ? st : 0ull);
    return store_put_note(s, "tape", shown) < 0 || store_put_note(s, "pid", pid) < 0 ||
                   store_put_note(s, "pid_start", start) < 0
               ? -1
               : 0;
}

/* Switches the writer onto the spool.  Returns 0 when it now writes the
 * spool, -1 when it cannot (a file tape, a full spool, an unwritable
 * folder: the round is then dropped as without a spool). */
int spool_start(engine *e)
{
    writer_state *w = &e->w;
    if (w->spooling || w->spool_full || !w->server)
        return -1;
    if (!w->spool_pending)
        name_spool(e);
    int64_t top = 0; /* above every call id the server handed out */
    for (size_t i = 0; i < w->nblocks; i++)
        if (w->id_blocks[i] > top)
            top = w->id_blocks[i];
    switch_store(e, 0);
    w->spooling = 1;
    int64_t first = 0;
    if (writer_ensure_store(e) < 0 || store_begin(w->store) < 0 ||
        store_reserve_ids(w->store, top + WRITER_ID_BLOCK, &first) < 0 || note_owner(e) < 0 ||
        writer_replay(e, NULL) < 0 || store_commit(w->store) < 0) {
        if (w->store)
            store_rollback(w->store);
        switch_store(e, 1);
        w->spooling = 0;
        return -1;
    }
    w->spool_pending = 1;
    w->spool_retry_ns = engine_now_ns(CLOCK_MONOTONIC);
    char shown[180], msg[1024];
    store_redact(e->path, shown, sizeof shown);
    snprintf(msg, sizeof msg,
             "the server of the tape %s cannot be reached: recording goes on into the spool"
             " %.200s, sent to the server when it is back (if the program ends first, by the next"
             " program recording onto that tape from this folder, or: calltape copy %.200s %s)",
             shown, w->spool_path, w->spool_path, shown);
    writer_notice(e, msg);
    return 0;
}

/* Adds "SERVER END SPOOL" for the round of unknown outcome to the spool's
 * note 'uncertain' (in its open transaction).  Returns 0 or -1. */
static int note_uncertain(engine *e, int64_t server, int64_t end)
{
    writer_state *w = &e->w;
    char note[MAX_UNCERTAIN * 64] = "", more[80];
    store_err se;
    if (store_read_note(w->store, "uncertain", note, sizeof note, &se) < 0)
        return -1;
    size_t len = strlen(note);
    int n = snprintf(more, sizeof more, "%s%lld %lld %lld", len ? ";" : "", (long long)server,
                     (long long)end, (long long)w->session_id);
    if (n < 0 || len + (size_t)n + 1 > sizeof note)
        return -1;
    memcpy(note + len, more, (size_t)n + 1);
    return store_put_note(w->store, "uncertain", note);
}

int spool_take_over(engine *e, writer_txn *t, int uncertain)
{
    writer_state *w = &e->w;
    int64_t server_session = w->session_id;
    if (spool_start(e) < 0)
        return -1;
    if (store_begin(w->store) < 0 || writer_replay(e, t) < 0)
        goto error;
    if (uncertain) {
        /* the round alone, in a session of its own that sending may leave out */
        if (note_uncertain(e, server_session, t->end_ns) < 0 || writer_commit_round(e, t) < 0)
            goto error;
        pthread_mutex_lock(&e->mu);
        w->session_id = 0;
        pthread_mutex_unlock(&e->mu);
        for (size_t i = 0; i < w->nthreads; i++)
            w->threads[i].stored = 0;
        t->first_start = INT64_MAX;
        if (writer_ensure_store(e) < 0 || store_begin(w->store) < 0 || writer_replay(e, NULL) < 0)
            goto error;
    }
    return 0;
error:
    if (w->store) {
        writer_error(e, store_errmsg(w->store));
        store_rollback(w->store);
    }
    return -1;
}

/* Writes what the builders hold into the store the writer has, in one
 * transaction.  Returns 0 or -1. */
static int flush_builders(engine *e)
{
    writer_state *w = &e->w;
    writer_txn t;
    memset(&t, 0, sizeof t);
    t.first_start = INT64_MAX;
    if (store_begin(w->store) < 0)
        return -1;
    for (size_t i = 0; i < w->nfns; i++)
        if (w->fns[i].bytes && writer_write_segment(e, &t, &w->fns[i]) < 0) {
            store_rollback(w->store);
            return -1;
        }
    int rc = writer_commit_round(e, &t);
    if (rc < 0)
        store_rollback(w->store);
    free(t.blocks);
    free(t.spans);
    return rc < 0 ? -1 : 0;
}

/* The end the server's row of session `id` shows into *end (STORE_NONE:
 * none, or no such session).  Returns 0, or -1 with `err` set. */
static int session_end(store *srv, int64_t id, int64_t *end, char *err, size_t n)
{
    store_err se = {0};
    store_row row;
    *end = STORE_NONE;
    store_cursor *c = store_read_sessions(srv, &se);
    int rc = c ? 1 : -1;
    while (c && (rc = store_next(c, &row, &se)) == 1)
        if (row.session.id == id)
            *end = row.session.end_ns;
    store_cursor_close(c);
    if (rc < 0)
        snprintf(err, n, "cannot read the server's sessions: %s", se.msg);
    return rc < 0 ? -1 : 0;
}

/* Which spool sessions the server has already (the 'uncertain' rounds it
 * committed): into skip[*nskip].  Returns 0, or -1 with `err` set. */
static int committed_rounds(engine *e, const char *path, int64_t *skip, size_t *nskip, char *err,
                            size_t n)
{
    char note[MAX_UNCERTAIN * 64] = "";
    store_err se = {0};
    *nskip = 0;
    store *sp = store_open_read(path, err, n);
    if (!sp)
        return -1;
    int found = store_read_note(sp, "uncertain", note, sizeof note, &se);
    store_close(sp);
    if (found < 0) {
        snprintf(err, n, "cannot read the spool's notes: %s", se.msg);
        return -1;
    }
    if (!found || !note[0])
        return 0;
    store *srv = store_open_read(e->path, err, n);
    if (!srv)
        return -1;
    int rc = 0;
    for (const char *p = note; p && *p && *nskip < MAX_UNCERTAIN && rc == 0;) {
        long long server = 0, end = 0, spool = 0;
        int64_t shown = STORE_NONE;
        if (sscanf(p, "%lld %lld %lld", &server, &end, &spool) != 3)
            break;
        rc = session_end(srv, server, &shown, err, n);
        if (rc == 0 && shown != STORE_NONE && shown >= end)
            skip[(*nskip)++] = spool;
        p = strchr(p, ';');
        p = p ? p + 1 : NULL;
    }
    store_close(srv);
    return rc;
}

/* A session as sending compares it: its process, start and end. */
typedef struct sent_key {
    int64_t pid, start, end;
} sent_key;

/* The sessions of the store `st` with an end, not among `skip`, into
 * *keys (*nkeys, owned).  Returns 0, or -1 with `err` set. */
static int session_keys(store *st, const int64_t *skip, size_t nskip, sent_key **keys,
                        size_t *nkeys, char *err, size_t n)
{
    store_err se = {0};
    store_row row;
    size_t cap = 0;
    *keys = NULL;
    *nkeys = 0;
    store_cursor *c = store_read_sessions(st, &se);
    int rc = c ? 1 : -1;
    while (c && (rc = store_next(c, &row, &se)) == 1) {
        const store_session_row *r = &row.session;
        int skipped = r->end_ns == STORE_NONE;
        for (size_t i = 0; i < nskip; i++)
            skipped |= r->id == skip[i];
        if (skipped)
            continue;
        if (room((void **)keys, &cap, *nkeys + 1, sizeof(sent_key)) < 0) {
            snprintf(se.msg, sizeof se.msg, "out of memory");
            rc = -1;
            break;
        }
        (*keys)[(*nkeys)++] = (sent_key){r->pid, r->start_ns, r->end_ns};
    }
    store_cursor_close(c);
    if (rc < 0)
        snprintf(err, n, "cannot read the sessions: %s", se.msg);
    return rc < 0 ? -1 : 0;
}

/* 1 when a session of the spool `path` (not one of `skip`) is on the
 * server already with the same process, start and end: an earlier send
 * committed, its sender cut off (or killed) before it removed the spool.
 * No other session shows the same three: each round of a process writes a
 * later end than the last.  0 when none is; -1 with `err` set. */
static int already_sent(engine *e, const char *path, const int64_t *skip, size_t nskip, char *err,
                        size_t n)
{
    sent_key *mine = NULL, *theirs = NULL;
    size_t nmine = 0, ntheirs = 0;
    int rc = -1;
    store *sp = store_open_read(path, err, n), *srv = NULL;
    if (!sp || session_keys(sp, skip, nskip, &mine, &nmine, err, n) < 0)
        goto done;
    rc = 0;
    if (!nmine)
        goto done;
    srv = store_open_read(e->path, err, n);
    if (!srv || session_keys(srv, NULL, 0, &theirs, &ntheirs, err, n) < 0) {
        rc = -1;
        goto done;
    }
    for (size_t i = 0; i < nmine && !rc; i++)
        for (size_t j = 0; j < ntheirs && !rc; j++)
            rc = mine[i].pid == theirs[j].pid && mine[i].start == theirs[j].start &&
                 mine[i].end == theirs[j].end;
done:
    store_close(srv);
    store_close(sp);
    free(mine);
    free(theirs);
    return rc;
}

/* Sends the spool file `path` to the tape and removes it.  Returns 0, or
 * -1 with the reason in `err` (the file stays). */
static int send_spool(engine *e, const char *path, char *err, size_t n)
{
    int64_t skip[MAX_UNCERTAIN], sessions = 0, calls = 0;
    size_t nskip = 0;
    int sent = committed_rounds(e, path, skip, &nskip, err, n) < 0
                   ? -1
                   : already_sent(e, path, skip, nskip, err, n);
    if (sent < 0 ||
        (!sent && store_copy_skip(path, e->path, skip, nskip, &sessions, &calls, err, n) < 0))
        return -1;
    char side[4300];
    unlink(path);
    snprintf(side, sizeof side, "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", path);
    unlink(side);
    return 0;
}

void spool_back(engine *e, int now_too)
{
    writer_state *w = &e->w;
    uint64_t now = engine_now_ns(CLOCK_MONOTONIC);
    if ((!w->spooling && !w->spool_pending) ||
        (!now_too && now - w->spool_retry_ns < REOPEN_EVERY_NS))
        return;
    w->spool_retry_ns = now;
    if (w->spooling) {
        char err[300];
        store *probe = store_open_write(e->path, err, sizeof err);
        if (!probe)
            return;
        store_close(probe);
        if (w->store && flush_builders(e) < 0) /* their calls carry the spool's ids */
            return;
        switch_store(e, 1);
        w->spooling = 0;
    }
    if (!w->spool_pending)
        return;
    /* the server may go away again meanwhile: no loss, the next round
     * spools (its notice says it), so no error is counted here */
    pthread_mutex_lock(&e->mu);
    uint64_t errors = e->write_errors, unreported = e->unreported_errors;
    pthread_mutex_unlock(&e->mu);
    char err[600], msg[1024];
    if (writer_ensure_store(e) < 0) {
        pthread_mutex_lock(&e->mu);
        e->write_errors = errors;
        e->unreported_errors = unreported;
        pthread_mutex_unlock(&e->mu);
        return;
    }
    if (send_spool(e, w->spool_path, err, sizeof err) < 0) {
        w->spool_retry_ns = engine_now_ns(CLOCK_MONOTONIC);
        snprintf(msg, sizeof msg, "cannot send the spool %.300s to the server yet: %s",
                 w->spool_path, err);
        writer_notice(e, msg);
        return;
    }
    w->spool_pending = w->spool_full = 0;
}

void spool_check_size(engine *e)
{
    writer_state *w = &e->w;
    int64_t size = 0;
    if (!w->spooling || store_size(w->store, &size) < 0 || size <= SPOOL_MAX_BYTES)
        return;
    char msg[600];
    snprintf(msg, sizeof msg,
             "the spool %.300s is full (%lld MiB): calls are dropped until the server is back",
             w->spool_path, (long long)(SPOOL_MAX_BYTES >> 20));
    writer_error(e, msg);
    if (flush_builders(e) < 0) { /* what they hold is dropped, counted */
        for (size_t i = 0; i < w->nfns; i++)
            if (w->fns[i].bytes && w->fns[i].seg.n) {
                pthread_mutex_lock(&e->mu);
                e->writer_dropped += w->fns[i].seg.n;
                pthread_mutex_unlock(&e->mu);
                seg_builder_reset(&w->fns[i].seg);
            }
    }
    switch_store(e, 1);
    w->spooling = 0;
    w->spool_full = 1;
}

/* Sends the spool `path` when it belongs to this tape (its note 'tape' is
 * `shown`), its owner has ended, and this process holds its lock. */
static void drain_one(engine *e, const char *path, const char *shown)
{
    char tape[4200] = "", pid[32] = "", start[32] = "", err[600], msg[1024];
    store_err se = {0};
    struct stat a, b;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    /* a lock on the file this path still names: another sender had none */
    if (flock(fd, LOCK_EX | LOCK_NB) < 0 || fstat(fd, &a) < 0 || stat(path, &b) < 0 ||
        a.st_dev != b.st_dev || a.st_ino != b.st_ino || a.st_uid != geteuid()) {
        close(fd);
        return;
    }
    store *sp = store_open_read(path, err, sizeof err);
    int mine = sp && store_read_note(sp, "tape", tape, sizeof tape, &se) == 1 &&
               strcmp(tape, shown) == 0 && store_read_note(sp, "pid", pid, sizeof pid, &se) == 1 &&
               store_read_note(sp, "pid_start", start, sizeof start, &se) >= 0;
    store_close(sp);
    if (mine && !owner_alive(strtol(pid, NULL, 10), start) &&
        send_spool(e, path, err, sizeof err) < 0) {
        snprintf(msg, sizeof msg,
                 "cannot send the spool %.300s that process %s left to the server yet: %s", path,
                 pid, err);
        writer_notice(e, msg);
    }
    close(fd); /* the lock goes with it */
}

void spool_drain(engine *e)
{
    writer_state *w = &e->w;
    w->drain_due = 0;
    const char *dir = spool_folder(e);
    char shown[4200], path[4400];
    store_redact(e->path, shown, sizeof shown);
    DIR *d = opendir(dir);
    if (!d)
        return;
    for (struct dirent *de = readdir(d); de; de = readdir(d)) {
        if (!spool_name(de->d_name))
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        if ((w->spooling || w->spool_pending) && strcmp(path, w->spool_path) == 0)
            continue; /* this process's own */
        drain_one(e, path, shown);
    }
    closedir(d);
}
