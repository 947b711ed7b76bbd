/*
 * timer.c - the outputs of @calltape.timer and @calltape.catch_errors
 * besides the tape (the TimerSink type), and the blocks of
 * calltape.metrics_start / metrics_end.
 *
 * A timed function is a Recorder (recorder.c) with CPU time and memory on
 * and a TimerSink: once its call is on the tape, ct_timer_after makes, from
 * the very numbers the record holds, the texts PyMAAP's users know: the
 * arguments as {"args": [...], "kwargs": {...}} of str() of each value
 * (sanitized, cut to max_arg_length), the message "Function `f` executed
 * in ... sec, CPU Time: ...", the JSON line of the log (timestamp, level,
 * message, function, uuid and the numbers), the CSV row of the results
 * file, and the row tuple of the Parquet writer.
 *
 * The CSV row is appended with one write() on a file opened O_APPEND (the
 * GIL released): whole rows from any number of processes and threads never
 * interleave, and no lock is taken.  The header is written into a private
 * file that link() puts in place, so a results file never exists without
 * its header, whoever creates it first.  The JSON line and the console
 * message are queued (logq.c) and handed to their loggers by the log
 * thread; only the texts are made on the calling thread.  The function's
 * name, the pid and the second's local time are read once, not per call.
 *
 * Invariants: nothing here raises into the timed call (a failing output is
 * one RecordingWarning per kind and process); user code (str, the
 * sanitizer; the logging handlers, on the log thread) runs with the thread
 * marked busy, so calls it makes are not recorded.
 */
#include "timer.h"

#include "logq.h"
#include "recorder.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#define TIMER_HEADER                                                                               \
    "Timestamp,Process ID,Thread Count,UUID,Function Name,Execution Time (s),CPU Time (sec),"      \
    "Memory Change (MB),Final Memory Usage (MB),Arguments,Log Message\n"
#define ERROR_HEADER "Timestamp,UUID,Function Name,Error Message,Arguments\n"
#define MIB 1048576.0

/* ---- text helpers ---------------------------------------------------------- */

static void put_z(wbuf *b, const char *s)
{
    wbuf_put(b, s, strlen(s));
}

static void put_fmt(wbuf *b, const char *fmt, ...)
{
    char tmp[160];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        wbuf_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* A float as Python's repr() writes it (what pandas wrote in the rows). */
static void put_double(wbuf *b, double v)
{
    char *s = PyOS_double_to_string(v, 'r', 0, 0, NULL);
    if (!s) {
        PyErr_Clear();
        return;
    }
    put_z(b, s);
    PyMem_Free(s);
}

/* A CSV field (RFC 4180): quoted when it holds a comma, quote or line end. */
static void put_csv(wbuf *b, const char *s, size_t n)
{
    ct_put_csv(b, s, n, 0);
}

static void put_csv_buf(wbuf *b, const wbuf *v)
{
    put_csv(b, (const char *)v->data, v->len);
}

/* The UTF-8 of str `s` (surrogates replaced), or "" when it has none. */
static const char *utf8_of(PyObject *s, Py_ssize_t *n, PyObject **keep)
{
    *keep = NULL;
    const char *u = s ? PyUnicode_AsUTF8AndSize(s, n) : NULL;
    if (u)
        return u;
    PyErr_Clear();
    if (s && (*keep = PyUnicode_AsEncodedString(s, "utf-8", "replace"))) {
        *n = PyBytes_GET_SIZE(*keep);
        return PyBytes_AS_STRING(*keep);
    }
    PyErr_Clear();
    *n = 0;
    return "";
}

static void put_json_str(wbuf *b, PyObject *s)
{
    PyObject *keep;
    Py_ssize_t n;
    const char *u = utf8_of(s, &n, &keep);
    ct_put_json(b, u, (size_t)n);
    Py_XDECREF(keep);
}

/* Local time of wall ns `ns`: "2025-01-01 12:00:00", then ",123" when `ms`.
 * The text of the last second is kept in `s` (the GIL is held). */
static void put_local_time(ct_timer_sink *s, wbuf *b, int64_t ns, int ms)
{
    time_t sec = (time_t)(ns / 1000000000);
    if (sec != s->stamp_sec || !s->stamp[0]) {
        struct tm tm;
        if (!localtime_r(&sec, &tm) ||
            !strftime(s->stamp, sizeof s->stamp, "%Y-%m-%d %H:%M:%S", &tm)) {
            s->stamp[0] = 0;
            return;
        }
        s->stamp_sec = sec;
    }
    put_z(b, s->stamp);
    if (ms)
        put_fmt(b, ",%03d", (int)((ns / 1000000) % 1000));
}

/* ---- the texts of one call ---------------------------------------------- */

/* The text of argument `v` in the row: str(v) (a DataFrame as PyMAAP
 * showed it), the sanitizer, the cut.  New str, or NULL (no exception). */
static PyObject *arg_text(ct_timer_sink *s, PyObject *v)
{
    const char *tn = Py_TYPE(v)->tp_name;
    PyObject *t = NULL;
    if (!strcmp(tn, "DataFrame") || !strcmp(tn, "GeoDataFrame")) {
        Py_ssize_t n = PyObject_Length(v);
        if (n >= 0)
            t = PyUnicode_FromFormat("<DataFrame with %zd rows>", n);
    }
    if (!t)
        t = PyObject_Str(v);
    if (!t) {
        PyErr_Clear();
        t = PyUnicode_FromString("<unserializable>");
    }
    if (t && s->text_sanitize) {
        PyObject *u = PyObject_CallOneArg(s->text_sanitize, t);
        if (!u || !PyUnicode_Check(u)) {
            Py_XDECREF(u);
            PyErr_Clear();
            u = PyUnicode_FromString("<not sanitized: the sanitizer failed>");
        }
        Py_SETREF(t, u);
    }
    if (t && s->max_arg_length >= 0 && PyUnicode_GET_LENGTH(t) > s->max_arg_length) {
        PyObject *cut = PyUnicode_Substring(t, 0, s->max_arg_length);
        Py_SETREF(t, cut ? PyUnicode_FromFormat("%U...", cut) : NULL);
        Py_XDECREF(cut);
    }
    if (!t)
        PyErr_Clear();
    return t;
}

static void put_arg(ct_timer_sink *s, wbuf *b, PyObject *v)
{
    PyObject *t = arg_text(s, v);
    put_json_str(b, t);
    Py_XDECREF(t);
}

/* {"args": [...], "kwargs": {...}} as json.dumps wrote it for PyMAAP. */
static void put_arguments(ct_timer_sink *s, wbuf *b, PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames)
{
    if (!args) /* a block of metrics_start/end: no arguments */
        nargs = 0, kwnames = NULL;
    put_z(b, "{\"args\": [");
    for (Py_ssize_t i = 0; i < nargs; i++) {
        if (i)
            put_z(b, ", ");
        put_arg(s, b, args[i]);
    }
    put_z(b, "], \"kwargs\": {");
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t j = 0; j < nkw; j++) {
        if (j)
            put_z(b, ", ");
        put_json_str(b, PyTuple_GET_ITEM(kwnames, j));
        put_z(b, ": ");
        put_arg(s, b, args[nargs + j]);
    }
    put_z(b, "}}");
}

/* One call's numbers and texts. */
typedef struct timer_call {
    char uuid[37];
    long pid;
    int64_t end_wall;
    double duration, cpu, mem_change, final_mem; /* s, s, MiB, MiB */
    int resources, raised;
    PyObject *name;      /* the function's __name__ (borrowed from the Recorder) */
    PyObject *exc_type;  /* str: the exception's class name (raised) */
    PyObject *exc_text;  /* str: str(exc), sanitized (raised) */
    PyObject *traceback; /* str, sanitized (catch_errors) */
    wbuf arguments, message;
} timer_call;

static PyObject *sanitized(ct_timer_sink *s, PyObject *text)
{
    if (!text || !s->text_sanitize)
        return text;
    PyObject *u = PyObject_CallOneArg(s->text_sanitize, text);
    Py_DECREF(text);
    if (!u || !PyUnicode_Check(u)) {
        Py_XDECREF(u);
        PyErr_Clear();
        return PyUnicode_FromString("<not sanitized: the sanitizer failed>");
    }
    return u;
}

/* The exception's class name, text and (for catch_errors) traceback. */
static void describe_exception(ct_timer_sink *s, timer_call *c, PyObject *exc)
{
    c->exc_type = PyUnicode_FromString(_PyType_Name(Py_TYPE(exc)));
    PyObject *text = PyObject_Str(exc);
    if (!text) {
        PyErr_Clear();
        text = PyUnicode_FromString("<unprintable>");
    }
    c->exc_text = sanitized(s, text);
    if (!s->errors)
        return;
    PyObject *tb_mod = PyImport_ImportModule("traceback");
    PyObject *lines = tb_mod ? PyObject_CallMethod(tb_mod, "format_exception", "O", exc) : NULL;
    PyObject *empty = lines ? PyUnicode_FromString("") : NULL;
    PyObject *tb = empty ? PyUnicode_Join(empty, lines) : NULL;
    Py_XDECREF(empty);
    Py_XDECREF(lines);
    Py_XDECREF(tb_mod);
    if (!tb)
        PyErr_Clear();
    c->traceback = sanitized(s, tb);
}

static void put_message(ct_timer_sink *s, timer_call *c)
{
    wbuf *m = &c->message;
    PyObject *keep;
    Py_ssize_t n;
    const char *name = utf8_of(c->name, &n, &keep);
    put_z(m, "Function `");
    wbuf_put(m, name, (size_t)n);
    Py_XDECREF(keep);
    if (c->raised && s->errors) {
        put_z(m, "` raised an exception: ");
        const char *t = utf8_of(c->exc_text, &n, &keep);
        wbuf_put(m, t, (size_t)n);
        Py_XDECREF(keep);
        return;
    }
    if (c->raised) {
        put_z(m, "` raised ");
        const char *t = utf8_of(c->exc_type, &n, &keep);
        wbuf_put(m, t, (size_t)n);
        Py_XDECREF(keep);
        put_fmt(m, " after %.4f sec", c->duration);
    } else {
        put_fmt(m, "` executed in %.4f sec", c->duration);
    }
    if (c->resources)
        put_fmt(m, ", CPU Time: %.4f sec, Memory Change: %.4f MB, Final Memory: %.4f MB", c->cpu,
                c->mem_change, c->final_mem);
}

/* The JSON line of the log: PyMAAP's fields, then the numbers. */
static void put_log_line(ct_timer_sink *s, const timer_call *c, wbuf *b)
{
    put_z(b, "{\"timestamp\": \"");
    put_local_time(s, b, c->end_wall, 1);
    put_z(b, c->raised ? "\", \"level\": \"ERROR\", \"message\": "
                       : "\", \"level\": \"INFO\", "
                         "\"message\": ");
    ct_put_json(b, (const char *)c->message.data, c->message.len);
    put_z(b, ", \"function\": ");
    put_json_str(b, c->name);
    put_fmt(b, ", \"uuid\": \"%s\", \"pid\": %ld, \"duration_s\": ", c->uuid, c->pid);
    put_double(b, c->duration);
    if (c->resources) {
        put_z(b, ", \"cpu_s\": ");
        put_double(b, c->cpu);
        put_z(b, ", \"memory_change_mb\": ");
        put_double(b, c->mem_change);
        put_z(b, ", \"final_memory_mb\": ");
        put_double(b, c->final_mem);
    }
    put_z(b, ", \"arguments\": ");
    if (c->arguments.len)
        wbuf_put(b, c->arguments.data, c->arguments.len);
    else
        put_z(b, "null");
    if (c->raised) {
        put_z(b, ", \"exception\": ");
        put_json_str(b, c->exc_type);
        put_z(b, ", \"error\": ");
        put_json_str(b, c->exc_text);
        if (c->traceback) {
            put_z(b, ", \"traceback\": ");
            put_json_str(b, c->traceback);
        }
    }
    wbuf_byte(b, '}');
}

static void put_csv_str(wbuf *b, PyObject *s)
{
    PyObject *keep;
    Py_ssize_t n;
    const char *u = utf8_of(s, &n, &keep);
    put_csv(b, u, (size_t)n);
    Py_XDECREF(keep);
}

/* The row of the results CSV (PyMAAP's columns), line end included. */
static void put_csv_row(ct_timer_sink *s, const timer_call *c, long threads, wbuf *b)
{
    put_local_time(s, b, c->end_wall, 0);
    if (s->errors) {
        put_fmt(b, ",%s,", c->uuid);
        put_csv_str(b, c->name);
        wbuf_byte(b, ',');
        put_csv_str(b, c->exc_text);
        wbuf_byte(b, ',');
        put_csv_buf(b, &c->arguments);
        wbuf_byte(b, '\n');
        return;
    }
    put_fmt(b, ",%ld,%ld,%s,", c->pid, threads, c->uuid);
    put_csv_str(b, c->name);
    wbuf_byte(b, ',');
    put_double(b, c->duration);
    wbuf_byte(b, ',');
    if (c->resources) {
        put_double(b, c->cpu);
        wbuf_byte(b, ',');
        put_double(b, c->mem_change);
        wbuf_byte(b, ',');
        put_double(b, c->final_mem);
    } else {
        put_z(b, ",");
    }
    wbuf_byte(b, ',');
    put_csv_buf(b, &c->arguments);
    wbuf_byte(b, ',');
    put_csv_buf(b, &c->message);
    wbuf_byte(b, '\n');
}

/* The row as a tuple, for the Parquet writer. */
static PyObject *row_tuple(ct_timer_sink *s, const timer_call *c, long threads)
{
    wbuf ts;
    wbuf_init(&ts, NULL, 0);
    put_local_time(s, &ts, c->end_wall, 0);
    PyObject *stamp = PyUnicode_FromStringAndSize((const char *)ts.data, (Py_ssize_t)ts.len);
    wbuf_free(&ts);
    PyObject *args = PyUnicode_DecodeUTF8((const char *)c->arguments.data,
                                          (Py_ssize_t)c->arguments.len, "replace");
    PyObject *out = NULL;
    if (stamp && args && s->errors) {
        out = Py_BuildValue("(OsOOO)", stamp, c->uuid, c->name, c->exc_text, args);
    } else if (stamp && args) {
        PyObject *msg = PyUnicode_DecodeUTF8((const char *)c->message.data,
                                             (Py_ssize_t)c->message.len, "replace");
        PyObject *cpu = c->resources ? PyFloat_FromDouble(c->cpu) : Py_NewRef(Py_None);
        PyObject *mc = c->resources ? PyFloat_FromDouble(c->mem_change) : Py_NewRef(Py_None);
        PyObject *fm = c->resources ? PyFloat_FromDouble(c->final_mem) : Py_NewRef(Py_None);
        if (msg && cpu && mc && fm)
            out = Py_BuildValue("(OllsOdOOOOO)", stamp, c->pid, threads, c->uuid, c->name,
                                c->duration, cpu, mc, fm, args, msg);
        Py_XDECREF(msg);
        Py_XDECREF(cpu);
        Py_XDECREF(mc);
        Py_XDECREF(fm);
    }
    Py_XDECREF(stamp);
    Py_XDECREF(args);
    return out;
}

/* ---- the outputs ------------------------------------------------------------ */

/* Appends `b` to the CSV with one write() (the GIL released). */
static void write_row(ct_state *st, ct_timer_sink *s, const wbuf *b)
{
    if (b->failed)
        return;
    ssize_t n;
    Py_BEGIN_ALLOW_THREADS
        ;
        do
            n = write(s->csv_fd, b->data, b->len);
        while (n < 0 && errno == EINTR);
    Py_END_ALLOW_THREADS;
    if (n != (ssize_t)b->len) {
        char msg[300];
        PyObject *keep;
        Py_ssize_t len;
        const char *path = utf8_of(s->csv_path, &len, &keep);
        snprintf(msg, sizeof msg, "calltape.timer could not append a row to %.200s: %s", path,
                 n < 0 ? strerror(errno) : "short write");
        Py_XDECREF(keep);
        ct_warn_once(st, "timer_csv", msg);
    }
}

/* Queues `text` for the logger of `target` (logq.c): INFO, ERROR when raised. */
static void queue_line(ct_state *st, PyObject *target, const wbuf *text, int is_error)
{
    if (!text->failed)
        ct_logq_put(st, target, is_error ? 40 : 20, (const char *)text->data, text->len);
}

static void timer_call_free(timer_call *c)
{
    Py_XDECREF(c->exc_type);
    Py_XDECREF(c->exc_text);
    Py_XDECREF(c->traceback);
    wbuf_free(&c->arguments);
    wbuf_free(&c->message);
}

/* 1 when a call of `r` with exception `exc` (or NULL) writes anything. */
static int writes_outputs(const Recorder *r, int raised)
{
    const ct_timer_sink *s = (const ct_timer_sink *)r->timer;
    return !(s->errors && !raised) && (s->csv_fd >= 0 || s->log || s->console || s->rows);
}

void ct_timer_arguments(Recorder *r, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                        wbuf *out)
{
    ct_timer_sink *s = (ct_timer_sink *)r->timer;
    if (!writes_outputs(r, 1)) /* catch_errors: the text is made before the outcome is known */
        return;
    ct_thread *t = &ct_tls_thread;
    t->busy++;
    if (args || kwnames)
        put_arguments(s, out, args, nargs, kwnames);
    else
        put_z(out, "{\"args\": [], \"kwargs\": {}}");
    PyErr_Clear();
    t->busy--;
}

void ct_timer_after(Recorder *r, ct_engine_slot *slot, const ct_callinfo *ci, uint64_t end,
                    PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, PyObject *exc)
{
    if (!writes_outputs(r, exc != NULL))
        return;
    wbuf arguments;
    wbuf_init(&arguments, NULL, 0);
    ct_timer_arguments(r, args, nargs, kwnames, &arguments);
    ct_timer_after_made(r, slot, ci, end, &arguments, exc);
    wbuf_free(&arguments);
}

void ct_timer_after_made(Recorder *r, ct_engine_slot *slot, const ct_callinfo *ci, uint64_t end,
                         const wbuf *arguments, PyObject *exc)
{
    ct_timer_sink *s = (ct_timer_sink *)r->timer;
    if (!writes_outputs(r, exc != NULL))
        return;
    ct_state *st = r->st;
    ct_thread *t = &ct_tls_thread;
    t->busy++;
    timer_call c;
    memset(&c, 0, sizeof c);
    wbuf_init(&c.arguments, NULL, 0);
    wbuf_init(&c.message, NULL, 0);
    int64_t start_wall = engine_wall_ns(slot->eng, ci->start);
    c.pid = ct_pid(st);
    call_uuid((int64_t)c.pid, ci->thread, start_wall, c.uuid);
    c.end_wall = start_wall + (int64_t)(end - ci->start);
    c.duration = (double)(end - ci->start) / 1e9;
    c.resources = s->resources && (ci->flags & REC_HAS_CPU) && (ci->flags & REC_HAS_MEMORY);
    if (c.resources) {
        c.cpu = ci->cpu_end > ci->cpu_start ? (double)(ci->cpu_end - ci->cpu_start) / 1e9 : 0.0;
        c.mem_change = (double)(t->rss_after - ci->rss_before) / MIB;
        c.final_mem = (double)t->rss_after / MIB;
    }
    c.raised = exc != NULL;
    if (!r->timer_name) { /* once per function: PyMAAP's name is the one decorated */
        r->timer_name = PyObject_GetAttrString(r->func, "__name__");
        if (!r->timer_name || !PyUnicode_Check(r->timer_name)) {
            PyErr_Clear();
            Py_XSETREF(r->timer_name, PyUnicode_FromString("?"));
        }
    }
    c.name = r->timer_name;
    if (exc)
        describe_exception(s, &c, exc);
    wbuf_put(&c.arguments, arguments->data, arguments->len);
    put_message(s, &c);
    long threads = s->errors || (s->csv_fd < 0 && !s->rows) ? 0 : ct_thread_count(st);
    if (s->csv_fd >= 0) {
        wbuf row;
        wbuf_init(&row, NULL, 0);
        put_csv_row(s, &c, threads, &row);
        write_row(st, s, &row);
        wbuf_free(&row);
    }
    if (s->log) {
        wbuf line;
        wbuf_init(&line, NULL, 0);
        put_log_line(s, &c, &line);
        queue_line(st, s->log, &line, c.raised);
        wbuf_free(&line);
    }
    if (s->console)
        queue_line(st, s->console, &c.message, c.raised);
    if (s->rows) {
        PyObject *row = row_tuple(s, &c, threads);
        PyObject *res = row ? PyObject_CallOneArg(s->rows, row) : NULL;
        Py_XDECREF(row);
        if (!res) {
            PyErr_Clear();
            ct_warn_once(st, "timer_rows", "calltape.timer could not write a Parquet row");
        }
        Py_XDECREF(res);
    }
    timer_call_free(&c);
    PyErr_Clear();
    t->busy--;
}

/* ---- the TimerSink type ---------------------------------------------------- */

/* Opens (creating with its header when missing) the CSV at `path`.
 * Returns the fd, or -1 with OSError naming the file. */
static int open_csv(PyObject *path, const char *header)
{
    PyObject *b = NULL;
    if (!PyUnicode_FSConverter(path, &b))
        return -1;
    const char *p = PyBytes_AS_STRING(b);
    int fd = -1, err = 0;
    Py_BEGIN_ALLOW_THREADS
        ;
        fd = open(p, O_WRONLY | O_APPEND | O_CLOEXEC);
        if (fd < 0 && errno == ENOENT) {
            /* the header in a private file, then link(): the results file never
             * exists without it, whichever process creates it */
            char tmp[4200];
            snprintf(tmp, sizeof tmp, "%s.%ld.tmp", p, (long)getpid());
            int tfd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
            if (tfd >= 0) {
                ssize_t n = write(tfd, header, strlen(header));
                close(tfd);
                if (n == (ssize_t)strlen(header) && link(tmp, p) < 0 && errno != EEXIST)
                    err = errno;
                unlink(tmp);
                if (!err)
                    fd = open(p, O_WRONLY | O_APPEND | O_CLOEXEC);
            }
        }
        if (fd < 0 && !err)
            err = errno;
    Py_END_ALLOW_THREADS;
    if (fd < 0) {
        PyErr_Format(PyExc_OSError, "calltape.timer cannot write its results file %R: %s", path,
                     strerror(err));
        Py_DECREF(b);
        return -1;
    }
    Py_DECREF(b);
    return fd;
}

/* (logger, "<calltape.timer>") for logger `v`, or NULL (None, or an error set). */
static PyObject *optional_logger(PyObject *v, const char *name)
{
    if (v == Py_None)
        return NULL;
    if (!PyObject_HasAttrString(v, "handle") || !PyObject_HasAttrString(v, "makeRecord")) {
        PyErr_Format(PyExc_TypeError, "%s must be a logging.Logger or None, not %.100s", name,
                     Py_TYPE(v)->tp_name);
        return NULL;
    }
    return Py_BuildValue("(Os)", v, "<calltape.timer>");
}

static PyObject *optional_callable(PyObject *v, const char *name)
{
    if (v == Py_None)
        return NULL;
    if (!PyCallable_Check(v)) {
        PyErr_Format(PyExc_TypeError, "%s must be callable or None, not %.100s", name,
                     Py_TYPE(v)->tp_name);
        return NULL;
    }
    return Py_NewRef(v);
}

static PyObject *TimerSink_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"csv",    "log",       "console", "rows", "sanitize", "max_arg_length",
                             "errors", "resources", NULL};
    PyObject *csv = Py_None, *log = Py_None, *console = Py_None, *rows = Py_None;
    PyObject *sanitize = Py_None, *max_len = Py_None;
    int errors = 0, resources = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|$OOOOOOpp:TimerSink", kwlist, &csv, &log, &console,
                                     &rows, &sanitize, &max_len, &errors, &resources))
        return NULL;
    ct_timer_sink *s = (ct_timer_sink *)type->tp_alloc(type, 0);
    if (!s)
        return NULL;
    s->csv_fd = -1;
    s->errors = errors;
    s->resources = resources;
    s->max_arg_length = -1;
    if (max_len != Py_None) {
        Py_ssize_t n = PyIndex_Check(max_len) && !PyBool_Check(max_len)
                           ? PyNumber_AsSsize_t(max_len, PyExc_OverflowError)
                           : -2;
        if (n < 0) {
            if (!PyErr_Occurred() || n == -1)
                PyErr_Format(PyExc_ValueError,
                             "max_arg_length must be None or an integer >= 0, not %R", max_len);
            Py_DECREF(s);
            return NULL;
        }
        s->max_arg_length = n;
    }
    s->log = optional_logger(log, "log");
    if (!s->log && PyErr_Occurred())
        goto error;
    s->console = optional_logger(console, "console");
    if (!s->console && PyErr_Occurred())
        goto error;
    s->rows = optional_callable(rows, "rows");
    if (!s->rows && PyErr_Occurred())
        goto error;
    s->text_sanitize = optional_callable(sanitize, "sanitize");
    if (!s->text_sanitize && PyErr_Occurred())
        goto error;
    if (csv != Py_None) {
        s->csv_path = PyOS_FSPath(csv);
        if (!s->csv_path ||
            (s->csv_fd = open_csv(s->csv_path, errors ? ERROR_HEADER : TIMER_HEADER)) < 0)
            goto error;
    }
    return (PyObject *)s;
error:
    Py_DECREF(s);
    return NULL;
}

static int TimerSink_traverse(ct_timer_sink *s, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(s));
    Py_VISIT(s->text_sanitize);
    Py_VISIT(s->log);
    Py_VISIT(s->console);
    Py_VISIT(s->rows);
    return 0;
}

static int TimerSink_clear(ct_timer_sink *s)
{
    Py_CLEAR(s->text_sanitize);
    Py_CLEAR(s->log);
    Py_CLEAR(s->console);
    Py_CLEAR(s->rows);
    return 0;
}

static void TimerSink_dealloc(ct_timer_sink *s)
{
    PyTypeObject *tp = Py_TYPE(s);
    PyObject_GC_UnTrack(s);
    TimerSink_clear(s);
    Py_CLEAR(s->csv_path);
    if (s->csv_fd >= 0)
        close(s->csv_fd);
    tp->tp_free((PyObject *)s);
    Py_DECREF(tp);
}

static PyObject *TimerSink_get_csv(ct_timer_sink *s, void *c)
{
    (void)c;
    return Py_NewRef(s->csv_path ? s->csv_path : Py_None);
}

static PyGetSetDef TimerSink_getset[] = {
    {"csv", (getter)TimerSink_get_csv, NULL, "the results CSV file, or None", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot TimerSink_slots[] = {
    {Py_tp_new, TimerSink_new},
    {Py_tp_dealloc, TimerSink_dealloc},
    {Py_tp_traverse, TimerSink_traverse},
    {Py_tp_clear, TimerSink_clear},
    {Py_tp_getset, TimerSink_getset},
    {Py_tp_doc, "TimerSink(*, csv=None, log=None, console=None, rows=None, sanitize=None,"
                " max_arg_length=None, errors=False, resources=True): the outputs of a"
                " calltape.timer besides the tape"},
    {0, NULL},
};

PyType_Spec TimerSink_spec = {
    .name = "calltape.TimerSink",
    .basicsize = sizeof(ct_timer_sink),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = TimerSink_slots,
};

int ct_timer_sink_check(ct_state *st, PyObject *v)
{
    return PyObject_TypeCheck(v, st->type.TimerSink);
}

/* ---- blocks: metrics_start / metrics_end ---------------------------------- */

/* What a block's start token holds. */
typedef struct block_token {
    pid_t pid;
    const void *recorder; /* identity only */
    ct_engine_slot *slot;
    ct_callinfo ci;
} block_token;

static Recorder *recorder_arg(PyObject *m, PyObject *v)
{
    ct_state *st = (ct_state *)PyModule_GetState(m);
    if (!PyObject_TypeCheck(v, st->type.Recorder)) {
        PyErr_Format(PyExc_TypeError, "needs a Recorder, not %.100s", Py_TYPE(v)->tp_name);
        return NULL;
    }
    return (Recorder *)v;
}

PyObject *ct_timer_begin_py(PyObject *m, PyObject *recorder)
{
    Recorder *r = recorder_arg(m, recorder);
    if (!r)
        return NULL;
    block_token tok;
    memset(&tok, 0, sizeof tok);
    if (ct_recorder_block_begin(r, &tok.ci, &tok.slot) < 0)
        Py_RETURN_NONE; /* not recorded: metrics_end does nothing */
    tok.pid = getpid();
    tok.recorder = r;
    return PyBytes_FromStringAndSize((const char *)&tok, sizeof tok);
}

PyObject *ct_timer_end_py(PyObject *m, PyObject *args)
{
    PyObject *recorder, *start;
    if (!PyArg_ParseTuple(args, "OO:timer_end", &recorder, &start))
        return NULL;
    Recorder *r = recorder_arg(m, recorder);
    if (!r)
        return NULL;
    if (start == Py_None)
        Py_RETURN_NONE;
    block_token tok;
    if (!PyBytes_Check(start) || PyBytes_GET_SIZE(start) != (Py_ssize_t)sizeof tok)
        return PyErr_Format(PyExc_ValueError, "metrics_end needs what metrics_start returned");
    memcpy(&tok, PyBytes_AS_STRING(start), sizeof tok);
    if (tok.pid != getpid() || tok.recorder != (const void *)r)
        return PyErr_Format(PyExc_ValueError,
                            "metrics_end got the start of a block of another process or"
                            " function: call it in the process and with the value of its"
                            " metrics_start");
    ct_state *st = r->st;
    ct_engine_slot *slot = r->tape ? r->slot : st->sink.default_slot;
    if (slot != tok.slot) /* the tape changed meanwhile (configure): not recorded */
        Py_RETURN_NONE;
    ct_recorder_block_end(r, slot, &tok.ci);
    char uuid[37];
    call_uuid((int64_t)tok.pid, tok.ci.thread, engine_wall_ns(slot->eng, tok.ci.start), uuid);
    return PyUnicode_FromString(uuid);
}

PyObject *ct_call_uuid_py(PyObject *m, PyObject *args)
{
    (void)m;
    long long pid, start;
    unsigned long long thread;
    if (!PyArg_ParseTuple(args, "LKL:call_uuid", &pid, &thread, &start))
        return NULL;
    char uuid[37];
    call_uuid((int64_t)pid, (uint64_t)thread, (int64_t)start, uuid);
    return PyUnicode_FromString(uuid);
}
