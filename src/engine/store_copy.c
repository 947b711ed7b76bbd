/*
 * store_copy.c - copying a tape from one store into another (calltape
 * copy): every blob, function, session, thread, span, segment and probe
 * spec, through the store contract only (no SQL here), so any kind of
 * store copies into any other (a file onto a server and back).
 *
 * Invariants:
 *   - The source is only read; the destination is written in one
 *     transaction (specs, kept by their own statements, right after it),
 *     so a copy that fails leaves the destination's tapes as they were,
 *     apart from spec rows and call ids reserved and never used.
 *   - Call ids stay unique in the destination, whatever it holds already:
 *     each block of COPY_ID_SPAN source ids that holds a call is given a
 *     fresh block of as many destination ids (store_reserve_ids, as the
 *     writer takes them), and an id keeps its offset in its block, so a
 *     call's id and its parent's move together and calls keep their order
 *     within a block.  Sessions, functions and spans get the destination's
 *     own ids likewise (a session's parent session follows it).
 *   - Segments are decoded and built again (segment.c), so their zone maps,
 *     children index and the functions' aggregates are made by the same
 *     code as when recording; each (session, function)'s self time, which
 *     no segment stores per call, is carried over from the source's
 *     per-session totals on that pair's first segment.
 */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define COPY_ID_SPAN 65536 /* writer.c's ID_BLOCK, the PostgreSQL store's block */

/* A map of int64 keys (> 0 or any non-zero) to int64 values, open
 * addressing; key 0 marks a free slot. */
typedef struct copy_map {
    int64_t *keys, *vals;
    size_t cap, n;
} copy_map;

static void map_free(copy_map *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

static size_t map_slot(const copy_map *m, int64_t key)
{
    size_t i = (size_t)((uint64_t)key * 0x9e3779b97f4a7c15u >> 20) & (m->cap - 1);
    while (m->keys[i] && m->keys[i] != key)
        i = (i + 1) & (m->cap - 1);
    return i;
}

/* The value under `key` into *val: 1, or 0 when there is none. */
static int map_get(const copy_map *m, int64_t key, int64_t *val)
{
    if (!m->cap)
        return 0;
    size_t i = map_slot(m, key);
    if (!m->keys[i])
        return 0;
    *val = m->vals[i];
    return 1;
}

/* Sets `key` (non-zero) to `val`.  Returns 0, or -1 when memory ran out. */
static int map_put(copy_map *m, int64_t key, int64_t val)
{
    if ((m->n + 1) * 2 > m->cap) {
        copy_map g = {calloc(m->cap ? m->cap * 2 : 64, sizeof(int64_t)),
                      calloc(m->cap ? m->cap * 2 : 64, sizeof(int64_t)), m->cap ? m->cap * 2 : 64,
                      0};
        if (!g.keys || !g.vals) {
            map_free(&g);
            return -1;
        }
        for (size_t i = 0; i < m->cap; i++)
            if (m->keys[i]) {
                size_t j = map_slot(&g, m->keys[i]);
                g.keys[j] = m->keys[i];
                g.vals[j] = m->vals[i];
                g.n++;
            }
        map_free(m);
        *m = g;
    }
    size_t i = map_slot(m, key);
    if (!m->keys[i])
        m->n++;
    m->keys[i] = key;
    m->vals[i] = val;
    return 0;
}

/* One copy in progress. */
typedef struct copier {
    store *src, *dst;
    copy_map functions; /* source function id -> destination id */
    copy_map sessions;  /* source session id -> destination id */
    copy_map blocks;    /* source id / COPY_ID_SPAN -> first destination id of its block */
    copy_map self;      /* source function id -> the session's self ns still to carry */
    seg_builder b;
    wbuf out;
    lz_table lz;
    int64_t nsessions, ncalls;
    const int64_t *skip; /* source sessions not copied */
    size_t nskip;
    char *err;
    size_t errlen;
} copier;

static int fail_read(copier *k, const char *what, const store_err *e)
{
    snprintf(k->err, k->errlen, "cannot read the %s of the source tape: %s", what, e->msg);
    return -1;
}

static int fail_write(copier *k, const char *what)
{
    snprintf(k->err, k->errlen, "cannot write the %s onto the destination tape: %s", what,
             store_errmsg(k->dst));
    return -1;
}

static int fail_nomem(copier *k)
{
    snprintf(k->err, k->errlen, "out of memory copying the tape");
    return -1;
}

/* The destination id of source call id `id` (> 0) into *out, taking a
 * fresh block of destination ids for a block not seen yet. */
static int map_call(copier *k, int64_t id, int64_t *out)
{
    int64_t block = id / COPY_ID_SPAN + 1, first = 0; /* + 1: key 0 is free */
    if (!map_get(&k->blocks, block, &first)) {
        if (store_reserve_ids(k->dst, COPY_ID_SPAN, &first) < 0)
            return fail_write(k, "call ids");
        if (map_put(&k->blocks, block, first) < 0)
            return fail_nomem(k);
    }
    *out = first + id % COPY_ID_SPAN;
    return 0;
}

/* Every blob (values stored by content), as it is. */
static int copy_blobs(copier *k)
{
    store_err e = {0};
    store_cursor *c = store_read_blob(k->src, NULL, &e);
    if (!c)
        return fail_read(k, "values", &e);
    store_row row;
    int rc;
    while ((rc = store_next(c, &row, &e)) == 1) {
        if (!row.blob.hash) {
            snprintf(k->err, k->errlen,
                     "the source tape is damaged: a value's hash is not %d bytes", WIRE_HASH_BYTES);
            store_cursor_close(c);
            return -1;
        }
        if (store_put_blob(k->dst, row.blob.hash, row.blob.data, row.blob.len) < 0) {
            store_cursor_close(c);
            return fail_write(k, "values");
        }
    }
    store_cursor_close(c);
    return rc < 0 ? fail_read(k, "values", &e) : 0;
}

/* Every function row (the destination finds or adds each). */
static int copy_functions(copier *k)
{
    store_err e = {0};
    store_cursor *c = store_read_functions(k->src, &e);
    if (!c)
        return fail_read(k, "functions", &e);
    store_row row;
    int rc;
    while ((rc = store_next(c, &row, &e)) == 1) {
        const store_function_row *f = &row.function;
        int64_t id = 0;
        if (store_function(k->dst, (const char *)f->module.p, f->module.n,
                           (const char *)f->qualname.p, f->qualname.n, (const char *)f->file.p,
                           f->file.n, f->line, f->signature.p, f->signature.n, &id) < 0) {
            store_cursor_close(c);
            return fail_write(k, "functions");
        }
        if (map_put(&k->functions, f->id, id) < 0) {
            store_cursor_close(c);
            return fail_nomem(k);
        }
    }
    store_cursor_close(c);
    return rc < 0 ? fail_read(k, "functions", &e) : 0;
}

/* A session row with its texts owned (NUL-terminated). */
typedef struct copy_session {
    store_session_row row;
    char *text[6]; /* host, python, calltape, sys_path0, cwd; argv bytes */
} copy_session;

static char *dup_bytes(store_bytes b, int *nomem)
{
    if (!b.p)
        return NULL;
    char *p = malloc(b.n + 1);
    if (!p) {
        *nomem = 1;
        return NULL;
    }
    memcpy(p, b.p, b.n);
    p[b.n] = 0;
    return p;
}

static void free_sessions(copy_session *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        for (int j = 0; j < 6; j++)
            free(v[i].text[j]);
    free(v);
}

static int by_id(const void *a, const void *b)
{
    int64_t x = ((const copy_session *)a)->row.id, y = ((const copy_session *)b)->row.id;
    return (x > y) - (x < y);
}

/* Every session row, owned, by id (so a parent session comes before its
 * children) into *out and *n. */
static int read_sessions(copier *k, copy_session **out, size_t *n)
{
    store_err e = {0};
    store_cursor *c = store_read_sessions(k->src, &e);
    if (!c)
        return fail_read(k, "sessions", &e);
    copy_session *v = NULL;
    size_t cap = 0;
    store_row row;
    int rc, nomem = 0;
    while (!nomem && (rc = store_next(c, &row, &e)) == 1) {
        if (*n == cap) {
            copy_session *g = realloc(v, (cap ? cap * 2 : 16) * sizeof *v);
            if (!g) {
                nomem = 1;
                break;
            }
            v = g;
            cap = cap ? cap * 2 : 16;
        }
        copy_session *cs = &v[(*n)++];
        const store_session_row *r = &row.session;
        cs->row = *r;
        store_bytes t[6] = {r->host, r->python, r->calltape, r->sys_path0, r->cwd, r->argv};
        for (int j = 0; j < 6; j++)
            cs->text[j] = dup_bytes(t[j], &nomem);
    }
    store_cursor_close(c);
    if (nomem) {
        free_sessions(v, *n);
        return fail_nomem(k);
    }
    if (rc < 0) {
        free_sessions(v, *n);
        return fail_read(k, "sessions", &e);
    }
    if (*n)
        qsort(v, *n, sizeof *v, by_id);
    *out = v;
    return 0;
}

/* Adds the session `cs` to the destination, maps its id and sets *dsession
 * to the new one. */
static int add_session(copier *k, const copy_session *cs, int64_t *dsession)
{
    const store_session_row *r = &cs->row;
    int64_t parent = 0;
    if (r->parent != STORE_NONE && !map_get(&k->sessions, r->parent, &parent))
        parent = 0;
    store_session ss = {
        .start_ns = r->start_ns,
        .host = cs->text[0] ? cs->text[0] : "",
        .python_version = cs->text[1] ? cs->text[1] : "",
        .calltape_version = cs->text[2] ? cs->text[2] : "",
        .argv = (const uint8_t *)cs->text[5],
        .argv_len = r->argv.n,
        .sys_path0 = cs->text[3],
        .cwd = cs->text[4],
        .pid = r->pid == STORE_NONE ? 0 : r->pid,
        .ppid = r->ppid == STORE_NONE ? 0 : r->ppid,
        .parent_session = parent,
        .mpi_rank = r->mpi_rank == STORE_NONE ? -1 : r->mpi_rank,
    };
    int64_t id = 0;
    if (store_add_session(k->dst, &ss, &id) < 0)
        return fail_write(k, "sessions");
    int any = r->end_ns != STORE_NONE;
    for (int i = 0; i < STORE_NCOUNTERS; i++)
        any |= r->counters[i] != 0;
    if (any && store_update_session(k->dst, id, INT64_MAX, r->end_ns == STORE_NONE ? 0 : r->end_ns,
                                    r->counters) < 0)
        return fail_write(k, "sessions");
    if (map_put(&k->sessions, r->id, id) < 0)
        return fail_nomem(k);
    *dsession = id;
    k->nsessions++;
    return 0;
}

/* The self time of each function's calls in source session `session`,
 * into k->self (carried by the first segment of each function). */
static int read_self(copier *k, int64_t session)
{
    if (k->self.cap)
        memset(k->self.keys, 0, k->self.cap * sizeof(int64_t));
    k->self.n = 0;
    store_err e = {0};
    store_cursor *c = store_read_session_functions(k->src, &session, 1, &e);
    if (!c)
        return fail_read(k, "function totals", &e);
    store_row row;
    int rc;
    while ((rc = store_next(c, &row, &e)) == 1) {
        int64_t self = row.function.self_ns == STORE_NONE ? 0 : row.function.self_ns;
        if (map_put(&k->self, row.function.id, self) < 0) {
            store_cursor_close(c);
            return fail_nomem(k);
        }
    }
    store_cursor_close(c);
    return rc < 0 ? fail_read(k, "function totals", &e) : 0;
}

/* Decodes the segment `g` (its bytes loaded) and builds it again with
 * destination call ids into k->b and k->out. */
static int rebuild(copier *k, const store_segment *g)
{
    seg_builder_reset(&k->b);
    k->out.len = 0;
    seg_reader r;
    int rc = seg_reader_open(&r, g->data, g->len);
    seg_call call;
    while (rc == 0 && (rc = seg_reader_next(&r, &call)) == 1) {
        rc = 0;
        if (map_call(k, call.id, &call.id) < 0 ||
            (call.parent && map_call(k, call.parent, &call.parent) < 0)) {
            seg_reader_close(&r);
            return -1;
        }
        call.self_ns = 0;
        if (seg_builder_add(&k->b, &call) < 0) {
            seg_reader_close(&r);
            return fail_nomem(k);
        }
    }
    seg_reader_close(&r);
    if (rc < 0) {
        snprintf(k->err, k->errlen, "the source tape is damaged: segment %lld %s", (long long)g->id,
                 seg_strerror(rc));
        return -1;
    }
    if ((int64_t)k->b.n != g->n) {
        snprintf(k->err, k->errlen, "the source tape is damaged: segment %lld %s", (long long)g->id,
                 seg_strerror(SEG_COUNT));
        return -1;
    }
    if (seg_builder_finish(&k->b, &k->out, &k->lz) < 0 || k->out.failed ||
        seg_builder_links(&k->b) < 0)
        return fail_nomem(k);
    return 0;
}

/* Copies one loaded segment of source session `session` into destination
 * session `dsession`. */
static int copy_segment(copier *k, const store_segment *g, int64_t dsession)
{
    int64_t function = 0, self = 0;
    if (!map_get(&k->functions, g->function, &function)) {
        snprintf(k->err, k->errlen,
                 "the source tape is damaged: segment %lld names function %lld, which it lacks",
                 (long long)g->id, (long long)g->function);
        return -1;
    }
    if (rebuild(k, g) < 0)
        return -1;
    if (map_get(&k->self, g->function, &self)) {
        k->b.total_self = self; /* the pair's first segment carries its self time */
        if (map_put(&k->self, g->function, 0) < 0)
            return fail_nomem(k);
    }
    if (store_add_segment(k->dst, dsession, function, &k->b, k->out.data, k->out.len) < 0)
        return fail_write(k, "calls");
    k->ncalls += (int64_t)k->b.n;
    return 0;
}

/* Every segment of source session `session`, oldest first. */
static int copy_segments(copier *k, int64_t session, int64_t dsession)
{
    if (read_self(k, session) < 0)
        return -1;
    store_segment_filter f = {
        .session = session,
        .since = INT64_MIN,
        .until = INT64_MAX,
        .min_duration = INT64_MIN,
        .max_duration = INT64_MAX,
        .outcome = -1,
    };
    store_err e = {0};
    store_cursor *c = store_list_segments(k->src, &f, &e);
    if (!c)
        return fail_read(k, "segments", &e);
    store_row row;
    int rc;
    while ((rc = store_next(c, &row, &e)) == 1) {
        store_segment g = {0};
        int got = store_load_listed(c, row.segment.id, &g, &e);
        if (got < 0)
            break;
        if (got == 0)
            continue; /* deleted meanwhile (a prune) */
        int bad = copy_segment(k, &g, dsession);
        free((void *)g.data);
        if (bad < 0) {
            store_cursor_close(c);
            return -1;
        }
    }
    store_cursor_close(c);
    return rc < 0 || e.kind ? fail_read(k, "segments", &e) : 0;
}

/* Every thread and every span, of the sessions copied. */
static int copy_threads_and_spans(copier *k)
{
    store_err e = {0};
    store_row row;
    int rc;
    store_cursor *c = store_read_threads(k->src, &e);
    if (!c)
        return fail_read(k, "threads", &e);
    while ((rc = store_next(c, &row, &e)) == 1) {
        int64_t session = 0;
        const store_thread_row *t = &row.thread;
        if (!map_get(&k->sessions, t->session, &session))
            continue; /* of a session the source lacks (pruned) */
        if (store_add_thread(k->dst, session, t->idx, t->ident, 0, (const char *)t->name.p,
                             t->name.n) < 0) {
            store_cursor_close(c);
            return fail_write(k, "threads");
        }
    }
    store_cursor_close(c);
    if (rc < 0)
        return fail_read(k, "threads", &e);
    store_context_filter f = {0};
    c = store_read_contexts(k->src, &f, &e);
    if (!c)
        return fail_read(k, "tests' spans", &e);
    while ((rc = store_next(c, &row, &e)) == 1) {
        store_context x = row.context;
        if (!map_get(&k->sessions, x.session, &x.session))
            continue;
        if (store_add_context(k->dst, &x) < 0) {
            store_cursor_close(c);
            return fail_write(k, "tests' spans");
        }
    }
    store_cursor_close(c);
    return rc < 0 ? fail_read(k, "tests' spans", &e) : 0;
}

/* What copy_specs hands each spec and report to. */
typedef struct spec_copy {
    copier *k;
    const char *last; /* the id of the spec put last, owned */
    int failed;
} spec_copy;

static int spec_one(void *ctx, const char *id, const char *spec, const char *process,
                    const char *info)
{
    spec_copy *sc = ctx;
    store_err e = {0};
    if (!sc->last || strcmp(sc->last, id) != 0) {
        free((void *)sc->last);
        sc->last = strdup(id);
        if (!sc->last || store_put_spec(sc->k->dst, id, spec, &e) < 0) {
            snprintf(sc->k->err, sc->k->errlen, "cannot write the probe specs: %s",
                     sc->last ? e.msg : "out of memory");
            sc->failed = 1;
            return -1;
        }
    }
    if (process && store_mark_spec(sc->k->dst, id, process, info ? info : "{}", &e) < 0) {
        snprintf(sc->k->err, sc->k->errlen, "cannot write the probe specs: %s", e.msg);
        sc->failed = 1;
        return -1;
    }
    return 0;
}

/* The probe specs and the processes' reports on them. */
static int copy_specs(copier *k)
{
    if (!store_has_specs(k->src) || !store_has_specs(k->dst))
        return 0;
    spec_copy sc = {k, NULL, 0};
    store_err e = {0};
    int64_t version = 0;
    int rc = store_read_specs(k->src, &version, spec_one, &sc, &e);
    free((void *)sc.last);
    if (rc < 0 && !sc.failed)
        return fail_read(k, "probe specs", &e);
    return rc;
}

/* 1 when the source session `id` is one not to copy. */
static int skipped(const copier *k, int64_t id)
{
    for (size_t i = 0; i < k->nskip; i++)
        if (k->skip[i] == id)
            return 1;
    return 0;
}

/* The copy proper, in one destination transaction. */
static int copy_all(copier *k)
{
    copy_session *sessions = NULL;
    size_t n = 0;
    if (store_begin(k->dst) < 0)
        return fail_write(k, "tape");
    if (copy_blobs(k) < 0 || copy_functions(k) < 0 || read_sessions(k, &sessions, &n) < 0)
        goto error;
    for (size_t i = 0; i < n; i++) {
        int64_t dsession = 0;
        if (skipped(k, sessions[i].row.id))
            continue;
        if (add_session(k, &sessions[i], &dsession) < 0)
            goto error;
        if (copy_segments(k, sessions[i].row.id, dsession) < 0)
            goto error;
    }
    free_sessions(sessions, n);
    sessions = NULL;
    if (copy_threads_and_spans(k) < 0)
        goto error;
    if (store_commit(k->dst) < 0) {
        fail_write(k, "tape");
        goto error;
    }
    return copy_specs(k);
error:
    free_sessions(sessions, n);
    store_rollback(k->dst);
    return -1;
}

/* 1 when `a` and `b` name the same tape: the same URL, or paths of one file. */
static int same_tape(const char *a, const char *b)
{
    if (strcmp(a, b) == 0)
        return 1;
    if (store_backend_for(a) != &store_sqlite_backend ||
        store_backend_for(b) != &store_sqlite_backend)
        return 0;
    struct stat x, y;
    return stat(a, &x) == 0 && stat(b, &y) == 0 && x.st_dev == y.st_dev && x.st_ino == y.st_ino;
}

int store_copy(const char *src_path, const char *dst_path, int64_t *sessions, int64_t *calls,
               char *err, size_t errlen)
{
    return store_copy_skip(src_path, dst_path, NULL, 0, sessions, calls, err, errlen);
}

int store_copy_skip(const char *src_path, const char *dst_path, const int64_t *skip, size_t nskip,
                    int64_t *sessions, int64_t *calls, char *err, size_t errlen)
{
    *sessions = *calls = 0;
    if (same_tape(src_path, dst_path)) {
        char shown[300];
        store_redact(dst_path, shown, sizeof shown);
        snprintf(err, errlen, "the source and the destination are the same tape (%s)", shown);
        return -1;
    }
    copier k = {.err = err, .errlen = errlen, .skip = skip, .nskip = nskip};
    seg_builder_init(&k.b);
    wbuf_init(&k.out, NULL, 0);
    int rc = -1;
    k.src = store_open_read(src_path, err, errlen);
    if (k.src)
        k.dst = store_open_write(dst_path, err, errlen);
    if (k.src && k.dst)
        rc = copy_all(&k);
    store_close(k.dst);
    store_close(k.src);
    seg_builder_free(&k.b);
    wbuf_free(&k.out);
    lz_table_free(&k.lz);
    map_free(&k.functions);
    map_free(&k.sessions);
    map_free(&k.blocks);
    map_free(&k.self);
    *sessions = k.nsessions;
    *calls = k.ncalls;
    return rc;
}
