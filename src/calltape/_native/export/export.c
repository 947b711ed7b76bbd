/*
 * export.c - the binding's way out of a tape into other tools' formats:
 * calltape.export() and `calltape export` stream the calls of a search
 * into a file as a Chrome trace (the trace event format Perfetto and
 * chrome://tracing open), JSON lines or CSV; and, for calltape.report(),
 * results.csv with results_aggregate.csv (per function: count, total,
 * mean, median, p95 and max duration, mean CPU and memory change, errors)
 * aggregated while the calls stream by.
 *
 * Design: the lookup tables a call needs (function names and parameter
 * names by function id, thread idents and names by (session, index), the
 * process of each session) are copied into plain C arrays under the GIL
 * first; then the calls come from query_next() (for a Chrome trace in
 * segment order, not merged: the trace event format does not need its
 * events sorted, and its viewers sort them) and are formatted into a
 * buffered writer with the GIL released, a batch at a time (signals are
 * checked between batches).  Values are written as the bounded previews
 * wire_preview() gives (redaction was applied when recording), so memory
 * stays bounded whatever the tape's size: one call's bytes, one preview,
 * and the writer's buffer.
 *
 * Full buffers go to a background writer (bgwrite.c) while the next one
 * fills, so the formatting and the disk's time overlap.
 *
 * Invariants: the export never holds more than two buffers of EXPORT_BUF
 * bytes plus one call's text each; the file descriptor belongs to the caller (not closed
 * here); the output is UTF-8 (previews quote invalid bytes as \xNN).
 */
#include "read/reader.h"

#include <errno.h>
#include <unistd.h>

#define EXPORT_BUF (1 << 20)
#define EXPORT_BATCH 8192

enum export_format { EXPORT_CHROME, EXPORT_JSONL, EXPORT_CSV, EXPORT_RESULTS };

/* One function's figures for results_aggregate.csv (format "results"):
 * the durations are kept (a growable array bounded by the call count) for
 * the median and the 95th percentile. */
typedef struct export_agg {
    int64_t *durs;
    size_t n, cap;
    int64_t total, max, errors;
    int64_t cpu_sum, cpu_n, mem_sum, mem_n;
} export_agg;

typedef struct export_fn {
    char *full, *module;
    wbuf full_json; /* full as a JSON string, quotes included (written at every call) */
    char **names;   /* parameter names, UTF-8 */
    Py_ssize_t nnames;
} export_fn;

typedef struct export_thread {
    int64_t session, index, ident;
} export_thread;

typedef struct export_proc {
    int64_t session, pid;
    ct_test_spans tests; /* the pytest tests of the session (contexts.c) */
} export_proc;

typedef struct export_ctx {
    int format;
    int err;      /* errno of a failed write, 0 */
    wbuf out;     /* the buffer being filled */
    bgwrite bg;   /* writes the full buffers while the next one fills */
    int bg_done;  /* bg finished (by export_end) */
    wbuf scratch; /* one preview */
    int64_t base_ns;
    int64_t written;
    export_fn *fns; /* by function id */
    int64_t nfns;
    export_thread *threads; /* by session, index */
    size_t nthreads;
    export_proc *procs; /* by session */
    size_t nprocs;
    export_agg *aggs; /* by function id (format "results"), malloc'd */
    /* the Chrome events' ,"pid":P,"tid":T of the thread of the last call */
    int64_t track_session, track_thread;
    char track[64];
    size_t track_len; /* 0: none made yet */
    int nomem;        /* an aggregate could not grow */
} export_ctx;

/* Hands the buffer to the background writer (GIL released by the
 * caller).  0, or -1 with x->err set (this write's errno or an earlier
 * one's). */
static int export_flush(export_ctx *x)
{
    if (x->out.failed) { /* bytes were dropped: never written as if whole */
        x->err = ENOMEM;
        return -1;
    }
    int err = bgw_submit(&x->bg, &x->out);
    if (err)
        x->err = err;
    return err ? -1 : 0;
}

static void put_str(wbuf *b, const char *s)
{
    wbuf_put(b, s, strlen(s));
}

/* A string literal's bytes, its length known when compiling. */
#define put_lit(b, lit) wbuf_put((b), (lit), sizeof(lit) - 1)

/* Microseconds with three decimals, exact from ns. */
static void put_us(wbuf *b, int64_t ns)
{
    uint64_t a = ns < 0 ? (uint64_t)0 - (uint64_t)ns : (uint64_t)ns;
    char frac[4] = {'.', (char)('0' + a / 100 % 10), (char)('0' + a / 10 % 10),
                    (char)('0' + a % 10)};
    if (ns < 0)
        wbuf_byte(b, '-');
    char buf[24];
    char *p = wire_digits(a / 1000, buf + 24);
    wbuf_put(b, p, (size_t)(buf + 24 - p));
    wbuf_put(b, frac, 4);
}

void ct_put_json(wbuf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    wbuf_byte(b, '"');
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch != '"' && ch != '\\')
            continue;
        wbuf_put(b, s + run, i - run);
        run = i + 1;
        char esc[6] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15]};
        if (ch == '"' || ch == '\\') {
            esc[1] = (char)ch;
            wbuf_put(b, esc, 2);
        } else if (ch == '\n') {
            wbuf_put(b, "\\n", 2);
        } else {
            wbuf_put(b, esc, 6);
        }
    }
    wbuf_put(b, s + run, n - run);
    wbuf_byte(b, '"');
}

static void put_json_z(wbuf *b, const char *s)
{
    ct_put_json(b, s, strlen(s));
}

/* The preview of the value at *p (advanced; NULL when malformed) in
 * x->scratch. */
static void preview(export_ctx *x, const uint8_t **p, const uint8_t *end)
{
    x->scratch.len = 0;
    *p = wire_preview(*p, end, &x->scratch, CT_PREVIEW_LIMIT);
}

/* The function's full name as a JSON string ("?" when unknown). */
static void put_full_json(wbuf *b, const export_fn *fn)
{
    if (fn)
        wbuf_put(b, fn->full_json.data, fn->full_json.len);
    else
        put_lit(b, "\"?\"");
}

static const export_fn *fn_of(const export_ctx *x, int64_t id)
{
    return id >= 0 && id < x->nfns && x->fns[id].full ? &x->fns[id] : NULL;
}

static int64_t ident_of(const export_ctx *x, int64_t session, int64_t index)
{
    size_t lo = 0, hi = x->nthreads;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const export_thread *t = &x->threads[mid];
        if (t->session < session || (t->session == session && t->index < index))
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < x->nthreads && x->threads[lo].session == session && x->threads[lo].index == index)
        return x->threads[lo].ident;
    return index;
}

static int64_t pid_of(const export_ctx *x, int64_t session)
{
    for (size_t i = 0; i < x->nprocs; i++)
        if (x->procs[i].session == session)
            return x->procs[i].pid;
    return session;
}

/* The node id of the test whose span holds call `c` of `session`
 * (`*len` bytes), or NULL outside every test. */
static const char *test_of(const export_ctx *x, const seg_call *c, int64_t session, Py_ssize_t *len)
{
    for (size_t i = 0; i < x->nprocs; i++)
        if (x->procs[i].session == session)
            return ct_test_spans_find(&x->procs[i].tests, c->start, len);
    return NULL;
}

/* The test of call `c` as a JSON value (null outside every test). */
static void put_test(const export_ctx *x, wbuf *b, const seg_call *c, int64_t session)
{
    Py_ssize_t len = 0;
    const char *name = test_of(x, c, session, &len);
    if (name)
        ct_put_json(b, name, (size_t)len);
    else
        put_lit(b, "null");
}

/* The call's arguments as a JSON object of previews into `b`, "null" when
 * not recorded. */
static void put_args(export_ctx *x, wbuf *b, const seg_call *c, const export_fn *fn)
{
    if (!(c->flags & REC_HAS_ARGS)) {
        put_lit(b, "null");
        return;
    }
    static const char *unbound[] = {"args", "kwargs"};
    const uint8_t *p = c->value[VALUE_ARGS].data, *end = p + c->value[VALUE_ARGS].len;
    wbuf_byte(b, '{');
    for (Py_ssize_t i = 0; p && p < end; i++) {
        const char *name = c->flags & REC_UNBOUND ? (i < 2 ? unbound[i] : NULL)
                           : fn && i < fn->nnames ? fn->names[i]
                                                  : NULL;
        preview(x, &p, end);
        if (i)
            wbuf_byte(b, ',');
        char alt[24];
        if (!name) {
            snprintf(alt, sizeof alt, "%lld", (long long)i);
            name = alt;
        }
        put_json_z(b, name);
        wbuf_byte(b, ':');
        ct_put_json(b, (const char *)x->scratch.data, x->scratch.len);
    }
    wbuf_byte(b, '}');
}

/* The result (or exception) preview as a JSON string into `b`, "null"
 * when not recorded. */
static void put_result(export_ctx *x, wbuf *b, const seg_call *c)
{
    const uint8_t *p = c->value[VALUE_RESULT].data, *end = p + c->value[VALUE_RESULT].len;
    if (!(c->flags & REC_HAS_RESULT) || p == end) {
        put_lit(b, "null");
        return;
    }
    preview(x, &p, end);
    ct_put_json(b, (const char *)x->scratch.data, x->scratch.len);
}

static const char *captured_of(const seg_call *c)
{
    const char *name = ct_capture_names[rec_capture_of(c->flags)];
    return name ? name : "call";
}

/* ,"pid":P,"tid":T of thread `index` of `session` into `b` (the text of
 * the last thread kept: consecutive calls are mostly of one thread). */
static void put_track(export_ctx *x, wbuf *b, int64_t session, int64_t index)
{
    if (!x->track_len || x->track_session != session || x->track_thread != index) {
        wbuf t;
        wbuf_init(&t, (uint8_t *)x->track, sizeof x->track);
        put_lit(&t, ",\"pid\":");
        wbuf_decimal(&t, pid_of(x, session));
        put_lit(&t, ",\"tid\":");
        wbuf_decimal(&t, ident_of(x, session, index)); /* at most 54 bytes: never on the heap */
        x->track_len = t.len;
        x->track_session = session;
        x->track_thread = index;
    }
    wbuf_put(b, x->track, x->track_len);
}

static void write_chrome(export_ctx *x, const seg_call *c, int64_t session, const export_fn *fn)
{
    wbuf *b = &x->out;
    put_str(b, x->written ? ",\n{\"ph\":\"X\",\"name\":" : "\n{\"ph\":\"X\",\"name\":");
    put_full_json(b, fn);
    put_lit(b, ",\"cat\":");
    put_json_z(b, captured_of(c));
    put_lit(b, ",\"ts\":");
    put_us(b, c->start - x->base_ns);
    put_lit(b, ",\"dur\":");
    put_us(b, c->duration);
    put_track(x, b, session, c->thread);
    put_lit(b, ",\"args\":{\"call\":");
    wbuf_decimal(b, c->id);
    put_lit(b, ",\"session\":");
    wbuf_decimal(b, session);
    Py_ssize_t tlen = 0;
    const char *test = test_of(x, c, session, &tlen);
    if (test) { /* only where there is one: most traces have no tests */
        put_lit(b, ",\"test\":");
        ct_put_json(b, test, (size_t)tlen);
    }
    put_lit(b, ",\"outcome\":\"");
    put_str(b, ct_outcome_name(c->outcome));
    put_lit(b, "\",\"args\":");
    put_args(x, b, c, fn);
    put_str(b, c->outcome == OUTCOME_RAISED ? ",\"exception\":" : ",\"result\":");
    put_result(x, b, c);
    put_lit(b, "}}");
}

/* The common fields of a JSON line into `b`, without the braces. */
static void write_fields(export_ctx *x, wbuf *b, const seg_call *c, int64_t session,
                         const export_fn *fn)
{
    put_lit(b, "\"id\":");
    wbuf_decimal(b, c->id);
    put_lit(b, ",\"session\":");
    wbuf_decimal(b, session);
    put_lit(b, ",\"thread\":");
    wbuf_decimal(b, ident_of(x, session, c->thread));
    put_lit(b, ",\"function\":");
    put_full_json(b, fn);
    put_lit(b, ",\"module\":");
    put_json_z(b, fn ? fn->module : "?");
    put_lit(b, ",\"start\":");
    wbuf_decimal(b, c->start);
    put_lit(b, ",\"duration\":");
    wbuf_decimal(b, c->duration);
    put_lit(b, ",\"outcome\":\"");
    put_str(b, ct_outcome_name(c->outcome));
    put_lit(b, "\",\"captured\":");
    put_json_z(b, captured_of(c));
    put_lit(b, ",\"test\":");
    put_test(x, b, c, session);
}

static void write_jsonl(export_ctx *x, const seg_call *c, int64_t session, const export_fn *fn)
{
    wbuf *b = &x->out;
    wbuf_byte(b, '{');
    write_fields(x, b, c, session, fn);
    put_lit(b, ",\"args\":");
    put_args(x, b, c, fn);
    put_lit(b, ",\"result\":");
    put_result(x, b, c);
    put_lit(b, "}\n");
}

void ct_put_csv(wbuf *b, const char *s, size_t n, int always_quoted)
{
    if (!always_quoted && !memchr(s, ',', n) && !memchr(s, '"', n) && !memchr(s, '\n', n) &&
        !memchr(s, '\r', n)) {
        wbuf_put(b, s, n);
        return;
    }
    wbuf_byte(b, '"');
    size_t run = 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] == '"') {
            wbuf_put(b, s + run, i + 1 - run);
            run = i;
        }
    wbuf_put(b, s + run, n - run);
    wbuf_byte(b, '"');
}

/* `n` bytes at `s` as one RFC 4180 field into x->out, always quoted. */
static void put_csv(export_ctx *x, const uint8_t *s, size_t n)
{
    ct_put_csv(&x->out, (const char *)s, n, 1);
}

static void write_csv(export_ctx *x, const seg_call *c, int64_t session, const export_fn *fn)
{
    wbuf *b = &x->out;
    wbuf_decimal(b, c->id);
    wbuf_byte(b, ',');
    wbuf_decimal(b, session);
    wbuf_byte(b, ',');
    wbuf_decimal(b, ident_of(x, session, c->thread));
    wbuf_byte(b, ',');
    const char *full = fn ? fn->full : "?", *module = fn ? fn->module : "?";
    put_csv(x, (const uint8_t *)full, strlen(full));
    wbuf_byte(b, ',');
    put_csv(x, (const uint8_t *)module, strlen(module));
    wbuf_byte(b, ',');
    wbuf_decimal(b, c->start);
    wbuf_byte(b, ',');
    wbuf_decimal(b, c->duration);
    wbuf_byte(b, ',');
    put_str(b, ct_outcome_name(c->outcome));
    wbuf_byte(b, ',');
    put_str(b, captured_of(c));
    wbuf_byte(b, ',');
    Py_ssize_t tlen = 0;
    const char *test = test_of(x, c, session, &tlen);
    if (test)
        put_csv(x, (const uint8_t *)test, (size_t)tlen);
    wbuf_byte(b, ',');
    wbuf cell; /* the args' JSON object, then the result's preview */
    wbuf_init(&cell, NULL, 0);
    put_args(x, &cell, c, fn);
    put_csv(x, cell.data, cell.len);
    wbuf_byte(b, ',');
    if ((c->flags & REC_HAS_RESULT) && c->value[VALUE_RESULT].len) {
        const uint8_t *p = c->value[VALUE_RESULT].data;
        preview(x, &p, p + c->value[VALUE_RESULT].len);
        put_csv(x, x->scratch.data, x->scratch.len);
    }
    put_lit(b, "\r\n");
    wbuf_free(&cell);
}

/* Seconds with nine decimals, exact from ns. */
static void put_sec(wbuf *b, int64_t ns)
{
    uint64_t a = ns < 0 ? (uint64_t)0 - (uint64_t)ns : (uint64_t)ns;
    if (ns < 0)
        wbuf_byte(b, '-');
    char buf[24], frac[10] = {'.'};
    char *p = wire_digits(a / 1000000000, buf + 24);
    wbuf_put(b, p, (size_t)(buf + 24 - p));
    uint64_t f = a % 1000000000;
    for (int i = 9; i >= 1; i--, f /= 10)
        frac[i] = (char)('0' + f % 10);
    wbuf_put(b, frac, 10);
}

/* Adds call `c` to the aggregate of its function (GIL released: malloc). */
static void aggregate(export_ctx *x, const seg_call *c, int64_t function)
{
    if (function < 0 || function >= x->nfns)
        return;
    export_agg *a = &x->aggs[function];
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 16;
        int64_t *grown = realloc(a->durs, cap * sizeof *grown);
        if (!grown) {
            x->nomem = 1;
            return;
        }
        a->durs = grown;
        a->cap = cap;
    }
    a->durs[a->n++] = c->duration;
    a->total += c->duration;
    a->max = c->duration > a->max ? c->duration : a->max;
    a->errors += c->outcome == OUTCOME_RAISED;
    if (c->flags & REC_HAS_CPU) {
        a->cpu_sum += c->cpu_ns;
        a->cpu_n++;
    }
    if (c->flags & REC_HAS_MEMORY) {
        a->mem_sum += c->rss_after - c->rss_before;
        a->mem_n++;
    }
}

/* One row of results.csv: id, session, thread, function, start (wall
 * seconds), duration_s, cpu_s, memory_change_bytes, outcome. */
static void write_results(export_ctx *x, const seg_call *c, int64_t session, const export_fn *fn,
                          int64_t function)
{
    wbuf *b = &x->out;
    wbuf_decimal(b, c->id);
    wbuf_byte(b, ',');
    wbuf_decimal(b, session);
    wbuf_byte(b, ',');
    wbuf_decimal(b, ident_of(x, session, c->thread));
    wbuf_byte(b, ',');
    const char *full = fn ? fn->full : "?";
    put_csv(x, (const uint8_t *)full, strlen(full));
    wbuf_byte(b, ',');
    put_sec(b, c->start);
    wbuf_byte(b, ',');
    put_sec(b, c->duration);
    wbuf_byte(b, ',');
    if (c->flags & REC_HAS_CPU)
        put_sec(b, c->cpu_ns);
    wbuf_byte(b, ',');
    if (c->flags & REC_HAS_MEMORY)
        wbuf_decimal(b, c->rss_after - c->rss_before);
    wbuf_byte(b, ',');
    put_str(b, ct_outcome_name(c->outcome));
    put_lit(b, "\r\n");
    aggregate(x, c, function);
}

/* Streams the query's calls into the file, a batch at a time with the GIL
 * released.  Returns 0, or -1 with an exception set. */
static int export_stream(ct_tape *t, query *q, export_ctx *x)
{
    seg_call c;
    int64_t session, function;
    for (;;) {
        int rc = 1, wrote = 0;
        Py_BEGIN_ALLOW_THREADS
            for (int k = 0; k < EXPORT_BATCH; k++) {
                rc = query_next(q, &c, &session, &function);
                if (rc <= 0)
                    break;
                const export_fn *fn = fn_of(x, function);
                if (x->format == EXPORT_CHROME)
                    write_chrome(x, &c, session, fn);
                else if (x->format == EXPORT_JSONL)
                    write_jsonl(x, &c, session, fn);
                else if (x->format == EXPORT_CSV)
                    write_csv(x, &c, session, fn);
                else
                    write_results(x, &c, session, fn, function);
                x->written++;
                if (x->out.len >= EXPORT_BUF && (wrote = export_flush(x)) < 0)
                    break;
            }
        Py_END_ALLOW_THREADS
        if (rc < 0)
            return ct_tape_query_failed(t, q);
        if (wrote < 0 || x->out.failed || x->scratch.failed || x->nomem) {
            if (wrote < 0) {
                errno = x->err;
                PyErr_SetFromErrno(PyExc_OSError);
            } else {
                PyErr_NoMemory();
            }
            return -1;
        }
        if (rc == 0)
            return 0;
        if (PyErr_CheckSignals() < 0)
            return -1;
        if (t->closing) {
            PyErr_Format(PyExc_ValueError, "the tape %U was closed during the export", t->path);
            return -1;
        }
    }
}

/* A PyMem copy of the UTF-8 of str `s`, or NULL with an exception. */
static char *dup_utf8(PyObject *s)
{
    Py_ssize_t n;
    const char *u = PyUnicode_AsUTF8AndSize(s, &n);
    char *out = u ? PyMem_Malloc((size_t)n + 1) : NULL;
    if (u && !out)
        PyErr_NoMemory();
    if (out)
        memcpy(out, u, (size_t)n + 1);
    return out;
}

/* Copies the function table into x->fns.  0 or -1 with an exception. */
static int load_functions(ct_tape *t, export_ctx *x)
{
    PyObject *fns = ct_tape_functions(t, CT_FUNCTIONS_RELOAD), *key, *val;
    if (!fns)
        return -1;
    Py_ssize_t pos = 0;
    int64_t top = 0;
    while (PyDict_Next(fns, &pos, &key, &val)) {
        int64_t id = PyLong_AsLongLong(key);
        top = id > top ? id : top;
    }
    x->fns = PyMem_Calloc((size_t)top + 1, sizeof *x->fns);
    if (!x->fns) {
        PyErr_NoMemory();
        return -1;
    }
    x->nfns = top + 1;
    pos = 0;
    while (PyDict_Next(fns, &pos, &key, &val)) {
        int64_t id = PyLong_AsLongLong(key);
        ct_function *f = (ct_function *)val;
        export_fn *e = &x->fns[id];
        if (id < 0 || !(e->full = dup_utf8(f->full)) || !(e->module = dup_utf8(f->module)))
            return -1;
        wbuf_init(&e->full_json, NULL, 0);
        ct_put_json(&e->full_json, e->full, strlen(e->full));
        if (e->full_json.failed) {
            PyErr_NoMemory();
            return -1;
        }
        e->names = PyMem_Calloc((size_t)PyTuple_GET_SIZE(f->names) + 1, sizeof *e->names);
        if (!e->names) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(f->names); i++, e->nnames++)
            if (!(e->names[i] = dup_utf8(PyTuple_GET_ITEM(f->names, i))))
                return -1;
    }
    return 0;
}

static int thread_cmp(const void *a, const void *b)
{
    const export_thread *l = a, *r = b;
    if (l->session != r->session)
        return l->session < r->session ? -1 : 1;
    return l->index < r->index ? -1 : l->index > r->index;
}

/* Copies the thread table into x->threads (sorted).  0 or -1. */
static int load_threads(ct_tape *t, export_ctx *x)
{
    PyObject *rows = ct_tape_thread_rows(t);
    if (!rows)
        return -1;
    Py_ssize_t n = PyList_GET_SIZE(rows);
    x->threads = PyMem_Calloc((size_t)n + 1, sizeof *x->threads);
    int rc = x->threads ? 0 : -1;
    for (Py_ssize_t i = 0; rc == 0 && i < n; i++) {
        export_thread *e = &x->threads[i];
        if (!PyArg_ParseTuple(PyList_GET_ITEM(rows, i), "LLL", &e->session, &e->index, &e->ident))
            rc = -1;
    }
    Py_DECREF(rows);
    if (rc < 0) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        return -1;
    }
    x->nthreads = (size_t)n;
    qsort(x->threads, x->nthreads, sizeof *x->threads, thread_cmp);
    return 0;
}

/* The Chrome trace's opening and its metadata events: a process_name for
 * each (session, pid, label) of `procs` and a thread_name for each thread
 * of those sessions.  0 or -1 with an exception. */
static int chrome_head(ct_tape *t, export_ctx *x, PyObject *procs)
{
    wbuf *b = &x->out;
    put_lit(b, "{\"displayTimeUnit\":\"ns\",\"otherData\":{\"calltape_base_ns\":");
    wbuf_decimal(b, x->base_ns);
    put_lit(b, "},\"traceEvents\":[");
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(procs); i++) {
        long long session, pid;
        const char *label;
        Py_ssize_t n;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(procs, i), "LLs#", &session, &pid, &label, &n))
            return -1;
        put_str(b, x->written ? ",\n" : "\n");
        put_lit(b, "{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":");
        wbuf_decimal(b, pid);
        put_lit(b, ",\"tid\":0,\"args\":{\"name\":");
        ct_put_json(b, label, (size_t)n);
        put_lit(b, "}}");
        x->written++;
        for (size_t k = 0; k < x->nthreads; k++) {
            const export_thread *th = &x->threads[k];
            if (th->session != session)
                continue;
            PyObject *row = ct_tape_thread(t, th->session, th->index);
            if (!row)
                return -1;
            const char *name = row != Py_None ? PyUnicode_AsUTF8(PyTuple_GET_ITEM(row, 1)) : "";
            if (!name)
                return -1;
            put_lit(b, ",\n{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":");
            wbuf_decimal(b, pid);
            put_lit(b, ",\"tid\":");
            wbuf_decimal(b, th->ident);
            put_lit(b, ",\"args\":{\"name\":");
            put_json_z(b, *name ? name : "thread");
            put_lit(b, "}}");
        }
    }
    return 0;
}

static void export_ctx_free(export_ctx *x)
{
    for (int64_t i = 0; x->fns && i < x->nfns; i++) {
        PyMem_Free(x->fns[i].full);
        PyMem_Free(x->fns[i].module);
        wbuf_free(&x->fns[i].full_json);
        for (Py_ssize_t k = 0; x->fns[i].names && k < x->fns[i].nnames; k++)
            PyMem_Free(x->fns[i].names[k]);
        PyMem_Free(x->fns[i].names);
    }
    for (int64_t i = 0; x->aggs && i < x->nfns; i++)
        free(x->aggs[i].durs);
    free(x->aggs);
    PyMem_Free(x->fns);
    PyMem_Free(x->threads);
    for (size_t i = 0; x->procs && i < x->nprocs; i++)
        ct_test_spans_free(&x->procs[i].tests);
    PyMem_Free(x->procs);
    if (!x->bg_done) {
        Py_BEGIN_ALLOW_THREADS(void)
            bgw_finish(&x->bg); /* an error's path: its write error is not the news */
        Py_END_ALLOW_THREADS
        x->bg_done = 1;
    }
    wbuf_free(&x->out);
    wbuf_free(&x->scratch);
}

/* Writes the ending of the format and the rest of the buffer (GIL released
 * for the write).  0 or -1 with OSError. */
static int export_end(export_ctx *x)
{
    if (x->format == EXPORT_CHROME)
        put_lit(&x->out, "\n]}\n");
    if (x->out.failed) {
        PyErr_NoMemory();
        return -1;
    }
    int rc, err;
    Py_BEGIN_ALLOW_THREADS
        rc = export_flush(x);
        err = bgw_finish(&x->bg); /* the last buffer written */
    Py_END_ALLOW_THREADS
    x->bg_done = 1;
    if (rc == 0 && err) {
        x->err = err;
        rc = -1;
    }
    if (rc < 0) {
        errno = x->err;
        PyErr_SetFromErrno(PyExc_OSError);
    }
    return rc;
}

static int dur_cmp(const void *a, const void *b)
{
    int64_t l = *(const int64_t *)a, r = *(const int64_t *)b;
    return l < r ? -1 : l > r;
}

/* The functions by total time, the largest first, then by id (their
 * order in the aggregates array): the elements are export_agg pointers. */
static int agg_cmp(const void *a, const void *b)
{
    const export_agg *l = *(const export_agg *const *)a, *r = *(const export_agg *const *)b;
    if (l->total != r->total)
        return l->total > r->total ? -1 : 1;
    return l < r ? -1 : l > r;
}

static void put_double(wbuf *b, double v, const char *fmt)
{
    char buf[64];
    int n = snprintf(buf, sizeof buf, fmt, v);
    wbuf_put(b, buf, n > 0 ? (size_t)n : 0);
}

/* One row of results_aggregate.csv for function `id` (median: the mean of
 * the middle two of an even count; p95: the nearest rank, ceil(0.95 n)). */
static void write_agg_row(export_ctx *x, int64_t id)
{
    wbuf *b = &x->out;
    export_agg *a = &x->aggs[id];
    qsort(a->durs, a->n, sizeof *a->durs, dur_cmp);
    const char *full = x->fns[id].full ? x->fns[id].full : "?";
    put_csv(x, (const uint8_t *)full, strlen(full));
    wbuf_byte(b, ',');
    wbuf_decimal(b, (int64_t)a->n);
    wbuf_byte(b, ',');
    put_sec(b, a->total);
    wbuf_byte(b, ',');
    put_double(b, (double)a->total / (double)a->n / 1e9, "%.9f");
    wbuf_byte(b, ',');
    size_t m = a->n / 2;
    double median =
        a->n % 2 ? (double)a->durs[m] : ((double)a->durs[m - 1] + (double)a->durs[m]) / 2;
    put_double(b, median / 1e9, "%.9f");
    wbuf_byte(b, ',');
    put_sec(b, a->durs[(95 * a->n + 99) / 100 - 1]);
    wbuf_byte(b, ',');
    put_sec(b, a->max);
    wbuf_byte(b, ',');
    if (a->cpu_n)
        put_double(b, (double)a->cpu_sum / (double)a->cpu_n / 1e9, "%.9f");
    wbuf_byte(b, ',');
    if (a->mem_n)
        put_double(b, (double)a->mem_sum / (double)a->mem_n, "%.1f");
    wbuf_byte(b, ',');
    wbuf_decimal(b, a->errors);
    put_lit(b, "\r\n");
}

static const char *const export_agg_header =
    "function,count,total_s,mean_s,median_s,p95_s,max_s,mean_cpu_s,mean_memory_change_bytes,"
    "errors\r\n";

/* results_aggregate.csv into `fd`, one row per function called, by total
 * time.  0 or -1 with an exception. */
static int export_aggregate(export_ctx *x, int fd)
{
    const export_agg **order = PyMem_Calloc((size_t)x->nfns + 1, sizeof(export_agg *));
    if (!order) {
        PyErr_NoMemory();
        return -1;
    }
    size_t n = 0;
    for (int64_t i = 0; i < x->nfns; i++)
        if (x->aggs[i].n)
            order[n++] = &x->aggs[i];
    qsort((void *)order, n, sizeof(export_agg *), agg_cmp);
    bgw_init(&x->bg, fd); /* the first was finished by the calls' export_end */
    x->bg_done = 0;
    x->format = EXPORT_CSV;
    put_str(&x->out, export_agg_header);
    for (size_t i = 0; i < n; i++)
        write_agg_row(x, (int64_t)(order[i] - x->aggs));
    PyMem_Free((void *)order);
    return export_end(x);
}

static const char *const export_results_header =
    "id,session,thread,function,start,duration_s,cpu_s,memory_change_bytes,outcome\r\n";

static const char *const export_csv_header =
    "id,session,thread,function,module,start,duration,outcome,captured,test,args,result\r\n";

PyObject *ct_tape_export(ct_tape *t, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"format", "fd",      "procs",        "session", "since",
                             "until",  "base_ns", "aggregate_fd", NULL};
    const char *format;
    int fd, agg_fd = -1;
    PyObject *procs, *session = Py_None, *since_o = Py_None, *until_o = Py_None;
    long long base = 0;
    int64_t since = INT64_MIN, until = INT64_MAX;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "siO!|OOOLi:_export", kwlist, &format, &fd,
                                     &PyList_Type, &procs, &session, &since_o, &until_o, &base,
                                     &agg_fd))
        return NULL;
    ct_state *st = PyType_GetModuleState(Py_TYPE(t));
    if ((since_o != Py_None && ct_time_to_ns(st, since_o, "since", &since) < 0) ||
        (until_o != Py_None && ct_time_to_ns(st, until_o, "until", &until) < 0))
        return NULL;
    export_ctx x = {.base_ns = base};
    int64_t *ids = NULL;
    size_t nids = 0;
    query *q = NULL;
    wbuf_init(&x.out, NULL, 0);
    wbuf_init(&x.scratch, NULL, 0);
    if (strcmp(format, "chrome") == 0)
        x.format = EXPORT_CHROME;
    else if (strcmp(format, "jsonl") == 0)
        x.format = EXPORT_JSONL;
    else if (strcmp(format, "csv") == 0)
        x.format = EXPORT_CSV;
    else if (strcmp(format, "results") == 0 && agg_fd >= 0)
        x.format = EXPORT_RESULTS;
    else {
        PyErr_Format(PyExc_ValueError,
                     "format must be 'chrome', 'jsonl', 'csv' or 'results' (with aggregate_fd),"
                     " not %R",
                     PyTuple_GET_ITEM(args, 0));
        return NULL;
    }
    bgw_init(&x.bg, fd); /* finished by export_end, or by export_ctx_free */
    if (ct_tape_check_open(t) < 0 ||
        (session != Py_None && ct_session_ids(session, &ids, &nids) < 0))
        goto error;
    if (load_functions(t, &x) < 0 || load_threads(t, &x) < 0)
        goto error;
    if (x.format == EXPORT_RESULTS && !(x.aggs = calloc((size_t)x.nfns + 1, sizeof *x.aggs))) {
        PyErr_NoMemory();
        goto error;
    }
    x.procs = PyMem_Calloc((size_t)PyList_GET_SIZE(procs) + 1, sizeof *x.procs);
    if (!x.procs) {
        PyErr_NoMemory();
        goto error;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(procs); i++, x.nprocs++) {
        const char *label;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(procs, i), "LL|s", &x.procs[i].session,
                              &x.procs[i].pid, &label) ||
            ct_tape_test_spans_copy(t, x.procs[i].session, &x.procs[i].tests) < 0)
            goto error;
    }
    if (x.format == EXPORT_CHROME && chrome_head(t, &x, procs) < 0)
        goto error;
    if (x.format == EXPORT_CSV)
        put_str(&x.out, export_csv_header);
    if (x.format == EXPORT_RESULTS)
        put_str(&x.out, export_results_header);
    query_filter f = {.thread = -1,
                      .since = since,
                      .until = until,
                      .max_duration = INT64_MAX,
                      .outcome = -1,
                      .limit = -1,
                      .any_order = x.format == EXPORT_CHROME,
                      .sessions = ids,
                      .nsessions = nids};
    int none = session != Py_None && nids == 0; /* no session chosen: no call */
    q = none ? NULL : ct_tape_query_open(t, &f);
    if ((!none && !q) || (q && export_stream(t, q, &x) < 0) || export_end(&x) < 0 ||
        (x.aggs && export_aggregate(&x, agg_fd) < 0))
        goto error;
    ct_tape_query_close(t, q);
    PyMem_Free(ids);
    int64_t calls = x.format == EXPORT_CHROME ? x.written - (int64_t)x.nprocs : x.written;
    export_ctx_free(&x);
    return PyLong_FromLongLong(calls);
error:
    ct_tape_query_close(t, q);
    PyMem_Free(ids);
    export_ctx_free(&x);
    return NULL;
}
