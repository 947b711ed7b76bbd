/*
 * tape.c - the reader: the Tape type opens a tape read-only and answers
 * sessions(), functions(), search(), call(id) and calls(); it keeps the
 * function and thread tables as caches and runs the queries of the Calls
 * results (calls.c) and of the Call views (views.c).
 *
 * Invariants: the store is opened read-only (opening never modifies a
 * tape) and seen only through store.h; every store call that may do I/O
 * runs with the GIL released; damage anywhere (a segment failing its
 * checksum, a value that does not rebuild, a blob whose content does not
 * match its hash, damage the store reports) raises one
 * TapeError naming the tape and the call, segment, function, session or
 * table concerned, rather than returning partial data; the store is
 * closed only when no query of it is open (close() during an iteration
 * takes effect when that iteration ends, and the iteration raises
 * ValueError at its next step).
 */
#include "reader.h"

#include <stdarg.h>
#include <string.h>

PyObject *ct_tape_damaged(ct_tape *t, int any, const char *fmt, ...)
{
    ct_state *st = PyType_GetModuleState(Py_TYPE(t));
    if (!st)
        return NULL;
    PyObject *saved = PyErr_Occurred() ? ct_fetch_exc() : NULL;
    va_list va;
    va_start(va, fmt);
    PyObject *where = PyUnicode_FromFormatV(fmt, va);
    va_end(va);
    PyObject *prefix =
        where ? PyUnicode_FromFormat("the tape %U is damaged: %U", t->path, where) : NULL;
    Py_XDECREF(where);
    if (!prefix) {
        Py_XDECREF(saved);
        return NULL;
    }
    ct_restore_exc(saved);
    ct_damage(st, any, prefix);
    Py_DECREF(prefix);
    return NULL;
}

PyObject *ct_tape_store_error(ct_tape *t, const store_err *e, const char *what)
{
    if (e->kind == STORE_NOMEM)
        return PyErr_NoMemory();
    if (e->kind == STORE_DAMAGED)
        return ct_tape_damaged(t, 0, "reading %s, %s", what, e->msg);
    ct_state *st = PyType_GetModuleState(Py_TYPE(t));
    PyObject *cls = st ? ct_marker_type(st, "TapeError") : NULL;
    PyErr_Format(cls ? cls : PyExc_ValueError, "cannot read %s from the tape %U: %s", what, t->path,
                 e->msg);
    return NULL;
}

int ct_tape_check_open(ct_tape *t)
{
    if (!t->sto || t->closing) {
        PyErr_Format(PyExc_ValueError, "the tape %U is closed", t->path);
        return -1;
    }
    return 0;
}

int ct_tape_next_row(store_cursor *c, store_row *row, store_err *e)
{
    int rc;
    Py_BEGIN_ALLOW_THREADS
        rc = store_next(c, row, e);
    Py_END_ALLOW_THREADS
    return rc;
}

/* Opens one of the store's table cursors (store_read_sessions, ...) on the
 * tape (GIL released) to read `what` ("its sessions").  NULL with
 * TapeError (ValueError when the tape is closed). */
static store_cursor *open_table(ct_tape *t, store_cursor *(*open)(store *, store_err *),
                                const char *what)
{
    if (ct_tape_check_open(t) < 0)
        return NULL;
    store *s = t->sto;
    store_err e;
    store_cursor *c;
    Py_BEGIN_ALLOW_THREADS
        c = open(s, &e);
    Py_END_ALLOW_THREADS
    if (!c)
        ct_tape_store_error(t, &e, what);
    return c;
}

/* The tape's counts (GIL released).  Returns 0, or -1 with `e`. */
static int read_counts(ct_tape *t, store_counts *out, store_err *e)
{
    store *s = t->sto;
    int rc;
    Py_BEGIN_ALLOW_THREADS
        rc = store_totals(s, out, e);
    Py_END_ALLOW_THREADS
    return rc;
}

PyObject *ct_check_writable_py(PyObject *module, PyObject *arg)
{
    ct_state *st = PyModule_GetState(module);
    PyObject *p = PyOS_FSPath(arg);
    if (!p)
        return NULL;
    const char *path = PyUnicode_Check(p) ? PyUnicode_AsUTF8(p) : NULL;
    if (!path) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_TypeError, "the tape path must be str, not %R", arg);
        Py_DECREF(p);
        return NULL;
    }
    char err[400];
    int rc;
    Py_BEGIN_ALLOW_THREADS
        rc = store_check_write(path, err, sizeof err);
    Py_END_ALLOW_THREADS
    Py_DECREF(p);
    if (rc < 0) {
        PyObject *cls = ct_marker_type(st, "TapeError");
        PyErr_SetString(cls ? cls : PyExc_ValueError, err);
        return NULL;
    }
    Py_RETURN_NONE;
}

PyObject *ct_prune_py(PyObject *module, PyObject *args)
{
    ct_state *st = PyModule_GetState(module);
    const char *path = NULL;
    long long before = 0, keep = -1, max_bytes = -1;
    if (!PyArg_ParseTuple(args, "sL|LL:prune", &path, &before, &keep, &max_bytes))
        return NULL;
    char err[600];
    int64_t sessions = 0, calls = 0, size = 0;
    int rc = -1;
    Py_BEGIN_ALLOW_THREADS
        store *s = store_open_write(path, err, sizeof err);
        if (s) {
            rc = store_prune(s, (int64_t)before, (int64_t)keep, (int64_t)max_bytes, 0, &sessions,
                             &calls);
            if (rc == 0)
                rc = store_size(s, &size);
            if (rc < 0)
                snprintf(err, sizeof err, "cannot prune the tape: %s", store_errmsg(s));
            store_close(s);
        }
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        PyObject *cls = ct_marker_type(st, "TapeError");
        PyErr_SetString(cls ? cls : PyExc_ValueError, err);
        return NULL;
    }
    return Py_BuildValue("(LLL)", (long long)sessions, (long long)calls, (long long)size);
}

PyObject *ct_parse_size_py(PyObject *module, PyObject *arg)
{
    (void)module;
    const char *text = PyUnicode_Check(arg) ? PyUnicode_AsUTF8(arg) : NULL;
    if (!text) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_TypeError, "a size must be a str such as '2GB', not %R", arg);
        return NULL;
    }
    int64_t bytes = 0;
    if (retain_parse_size(text, &bytes) < 0) {
        PyErr_Format(PyExc_ValueError,
                     "cannot read the size %R: use a number of bytes with KB, MB, GB (powers of"
                     " 1000) or KiB, MiB, GiB (powers of 1024), such as 2GB or 500MiB",
                     arg);
        return NULL;
    }
    return PyLong_FromLongLong((long long)bytes);
}

PyObject *ct_copy_py(PyObject *module, PyObject *args)
{
    ct_state *st = PyModule_GetState(module);
    const char *src = NULL, *dst = NULL;
    if (!PyArg_ParseTuple(args, "ss:copy", &src, &dst))
        return NULL;
    char err[600];
    int64_t sessions = 0, calls = 0;
    int rc;
    Py_BEGIN_ALLOW_THREADS
        rc = store_copy(src, dst, &sessions, &calls, err, sizeof err);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        PyObject *cls = ct_marker_type(st, "TapeError");
        PyErr_SetString(cls ? cls : PyExc_ValueError, err);
        return NULL;
    }
    return Py_BuildValue("(LL)", (long long)sessions, (long long)calls);
}

static PyObject *Tape_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"path", "trust", "allow", NULL};
    PyObject *path, *allow = NULL, *p = NULL, *allow_t = NULL;
    int trust = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|$pO:open", kwlist, &path, &trust, &allow))
        return NULL;
    ct_state *st = PyType_GetModuleState(type);
    p = PyOS_FSPath(path);
    if (!p)
        goto error;
    if (!PyUnicode_Check(p)) {
        PyErr_Format(PyExc_TypeError, "the tape path must be str, not %R", path);
        goto error;
    }
    if (allow && allow != Py_None) {
        allow_t = PyUnicode_Check(allow) ? PyTuple_Pack(1, allow) : PySequence_Tuple(allow);
        if (!allow_t)
            goto error;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(allow_t); i++)
            if (!PyUnicode_Check(PyTuple_GET_ITEM(allow_t, i))) {
                PyErr_Format(PyExc_TypeError, "allow must be a list of module names, not %R",
                             allow);
                goto error;
            }
    }
    const char *cpath = PyUnicode_AsUTF8(p);
    if (!cpath)
        goto error;
    char err[400];
    store *s = NULL;
    Py_BEGIN_ALLOW_THREADS
        s = store_open_read(cpath, err, sizeof err);
    Py_END_ALLOW_THREADS
    if (!s) {
        PyObject *cls = ct_marker_type(st, "TapeError");
        PyErr_SetString(cls ? cls : PyExc_ValueError, err);
        goto error;
    }
    ct_tape *t = (ct_tape *)type->tp_alloc(type, 0);
    if (!t) {
        store_close(s);
        goto error;
    }
    t->sto = s;
    char shown[512];
    store_redact(cpath, shown, sizeof shown); /* a URL's password never leaves */
    if (strcmp(shown, cpath) != 0) {
        PyObject *redacted = PyUnicode_FromString(shown);
        if (!redacted) {
            Py_DECREF(t);
            goto error;
        }
        Py_SETREF(p, redacted);
    }
    t->path = p;
    t->allow = allow_t;
    t->trust = trust;
    return (PyObject *)t;
error:
    Py_XDECREF(allow_t);
    Py_XDECREF(p);
    return NULL;
}

static int Tape_traverse(ct_tape *t, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(t));
    Py_VISIT(t->functions);
    Py_VISIT(t->threads);
    Py_VISIT(t->contexts);
    Py_VISIT(t->sessions);
    Py_VISIT(t->replayer);
    return 0;
}

static int Tape_clear(ct_tape *t)
{
    Py_CLEAR(t->functions);
    Py_CLEAR(t->threads);
    Py_CLEAR(t->contexts);
    Py_CLEAR(t->sessions);
    Py_CLEAR(t->replayer);
    return 0;
}

static void Tape_dealloc(ct_tape *t)
{
    PyTypeObject *tp = Py_TYPE(t);
    PyObject_GC_UnTrack(t);
    Tape_clear(t);
    store_close(t->sto); /* no query is open: each holds a reference */
    Py_CLEAR(t->path);
    Py_CLEAR(t->allow);
    tp->tp_free((PyObject *)t);
    Py_DECREF(tp);
}

/* ---- queries ---- */

/* The qualified name of function `id` for a message: the cached
 * Function's, else "function <id>" (the table is not read again here). */
static PyObject *function_label(ct_tape *t, int64_t id)
{
    PyObject *key = t->functions ? PyLong_FromLongLong(id) : NULL;
    PyObject *fn = key ? PyDict_GetItemWithError(t->functions, key) : NULL;
    Py_XDECREF(key);
    PyErr_Clear();
    if (fn)
        return PyUnicode_FromFormat("%U", ((ct_function *)fn)->full);
    return PyUnicode_FromFormat("function %lld", (long long)id);
}

/* Sets the TapeError of a failed query: a damaged segment named with its
 * function, or the store's error. */
static void query_failed(ct_tape *t, query *q)
{
    int64_t segment, function;
    int status;
    if (!query_error_segment(q, &segment, &function, &status)) {
        ct_tape_store_error(t, query_error_store(q), "its segments");
        return;
    }
    PyObject *label = function_label(t, function);
    if (label) {
        ct_tape_damaged(t, 0, "segment %lld (calls of %U) %s", (long long)segment, label,
                        seg_strerror(status));
        Py_DECREF(label);
    }
}

int ct_tape_query_failed(ct_tape *t, query *q)
{
    query_failed(t, q);
    return -1;
}

query *ct_tape_query_open(ct_tape *t, const query_filter *f)
{
    if (ct_tape_check_open(t) < 0)
        return NULL;
    char err[300];
    query *q;
    Py_BEGIN_ALLOW_THREADS
        q = query_open(t->sto, f, err, sizeof err);
    Py_END_ALLOW_THREADS
    if (!q) {
        ct_state *st = PyType_GetModuleState(Py_TYPE(t));
        PyObject *cls = st ? ct_marker_type(st, "TapeError") : NULL;
        PyErr_Format(cls ? cls : PyExc_ValueError, "cannot search the tape %U: %s", t->path, err);
        return NULL;
    }
    t->nqueries++;
    return q;
}

void ct_tape_query_close(ct_tape *t, query *q)
{
    if (!q)
        return;
    query_close(q);
    if (--t->nqueries == 0 && t->closing) {
        store_close(t->sto);
        t->sto = NULL;
        t->closing = 0;
    }
}

int ct_tape_query_next(ct_tape *t, query *q, seg_call *c, int64_t *session, int64_t *function)
{
    if (t->closing) {
        PyErr_Format(PyExc_ValueError, "the tape %U was closed during the search", t->path);
        return -1;
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS
        rc = query_next(q, c, session, function);
    Py_END_ALLOW_THREADS
    if (rc < 0)
        query_failed(t, q);
    return rc;
}

int ct_tape_query_count(ct_tape *t, query *q, int64_t *n)
{
    int rc;
    Py_BEGIN_ALLOW_THREADS
        rc = query_count(q, n);
    Py_END_ALLOW_THREADS
    if (rc < 0)
        query_failed(t, q);
    return rc;
}

/* ---- caches ---- */

PyObject *ct_tape_functions(ct_tape *t, int fresh)
{
    if (t->functions && !fresh)
        return t->functions;
    PyObject *out = NULL, *fn = NULL, *key = NULL;
    store_err e;
    if (t->functions && fresh == CT_FUNCTIONS_IF_GROWN) {
        if (ct_tape_check_open(t) < 0)
            return NULL;
        store *s = t->sto;
        int64_t n = 0;
        int rc;
        Py_BEGIN_ALLOW_THREADS
            rc = store_function_count(s, &n, &e);
        Py_END_ALLOW_THREADS
        int grown = rc < 0 || n != (int64_t)PyDict_GET_SIZE(t->functions);
        if (!grown)
            return t->functions;
    }
    store_cursor *c = open_table(t, store_read_functions, "its functions");
    if (!c)
        return NULL;
    out = PyDict_New();
    if (!out)
        goto error;
    store_row row;
    int rc;
    while ((rc = ct_tape_next_row(c, &row, &e)) == 1) {
        fn = ct_function_from_row(t, &row.function);
        key = fn ? PyLong_FromLongLong(((ct_function *)fn)->id) : NULL;
        if (!key || PyDict_SetItem(out, key, fn) < 0)
            goto error;
        Py_CLEAR(fn);
        Py_CLEAR(key);
    }
    if (rc < 0) {
        ct_tape_store_error(t, &e, "its functions");
        goto error;
    }
    store_cursor_close(c);
    Py_XSETREF(t->functions, out);
    return out;
error:
    store_cursor_close(c);
    Py_XDECREF(fn);
    Py_XDECREF(key);
    Py_XDECREF(out);
    return NULL;
}

static ct_function *lookup_function(PyObject *table, int64_t id)
{
    PyObject *key = PyLong_FromLongLong(id);
    if (!key)
        return NULL;
    PyObject *fn = PyDict_GetItemWithError(table, key);
    Py_DECREF(key);
    return (ct_function *)fn;
}

ct_function *ct_tape_function(ct_tape *t, int64_t id, int64_t call)
{
    PyObject *table = ct_tape_functions(t, 0);
    ct_function *fn = table ? lookup_function(table, id) : NULL;
    if (fn || PyErr_Occurred())
        return fn;
    /* recorded after the table was read: read it again */
    table = ct_tape_functions(t, 1);
    fn = table ? lookup_function(table, id) : NULL;
    if (!fn && !PyErr_Occurred())
        ct_tape_damaged(t, 0, "call %lld names function %lld, which the tape does not hold",
                        (long long)call, (long long)id);
    return fn;
}

static int load_threads(ct_tape *t)
{
    PyObject *out = NULL, *key = NULL, *val = NULL;
    store_cursor *c = open_table(t, store_read_threads, "its threads");
    if (!c)
        return -1;
    out = PyDict_New();
    if (!out)
        goto error;
    store_row row;
    store_err e;
    int rc;
    while ((rc = ct_tape_next_row(c, &row, &e)) == 1) {
        const store_thread_row *r = &row.thread;
        const char *name = (const char *)r->name.p;
        long long session = r->session, idx = r->idx;
        key = Py_BuildValue("(LL)", session, idx);
        val = Py_BuildValue("(Ls#)", (long long)r->ident, name ? name : "",
                            (Py_ssize_t)(name ? r->name.n : 0));
        if (!val)
            ct_tape_damaged(t, 1, "thread %lld of session %lld has a name that is not text", idx,
                            session);
        if (!key || !val || PyDict_SetItem(out, key, val) < 0)
            goto error;
        Py_CLEAR(key);
        Py_CLEAR(val);
    }
    if (rc < 0) {
        ct_tape_store_error(t, &e, "its threads");
        goto error;
    }
    store_cursor_close(c);
    Py_XSETREF(t->threads, out);
    return 0;
error:
    store_cursor_close(c);
    Py_XDECREF(key);
    Py_XDECREF(val);
    Py_XDECREF(out);
    return -1;
}

PyObject *ct_tape_thread(ct_tape *t, int64_t session, int64_t index)
{
    PyObject *key = Py_BuildValue("(LL)", (long long)session, (long long)index);
    if (!key)
        return NULL;
    PyObject *found = NULL;
    for (int attempt = 0; attempt < 2 && !found; attempt++) {
        /* a thread announced after the table was read: read it again, once */
        if ((!t->threads || attempt) && load_threads(t) < 0)
            break;
        found = PyDict_GetItemWithError(t->threads, key);
        if (PyErr_Occurred())
            break;
    }
    Py_DECREF(key);
    if (!found && !PyErr_Occurred())
        found = Py_None;
    return found;
}

PyObject *ct_tape_thread_rows(ct_tape *t)
{
    if (load_threads(t) < 0)
        return NULL;
    PyObject *out = PyList_New(0), *key, *val;
    Py_ssize_t pos = 0;
    while (out && PyDict_Next(t->threads, &pos, &key, &val)) {
        PyObject *row = PyTuple_Pack(3, PyTuple_GET_ITEM(key, 0), PyTuple_GET_ITEM(key, 1),
                                     PyTuple_GET_ITEM(val, 0));
        if (!row || PyList_Append(out, row) < 0)
            Py_CLEAR(out);
        Py_XDECREF(row);
    }
    return out;
}

/* ---- values ---- */

/* Sets TapeError (a detail, without the tape: the value's reader names
 * the call) about the blob `h`.  Returns NULL. */
static PyObject *blob_error(ct_tape *t, const uint8_t *h, const char *what)
{
    ct_state *st = PyType_GetModuleState(Py_TYPE(t));
    PyObject *cls = st ? ct_marker_type(st, "TapeError") : NULL;
    char hex[2 * WIRE_HASH_BYTES + 1];
    for (size_t i = 0; i < WIRE_HASH_BYTES; i++)
        snprintf(hex + 2 * i, 3, "%02x", h[i]);
    PyErr_Format(cls ? cls : PyExc_ValueError, "its stored value %s %s", hex, what);
    return NULL;
}

/* load_blob(hash) -> the bytes stored under `hash` in the blob table,
 * verified: TapeError when they are missing or do not hash to it. */
static PyObject *Tape_load_blob(PyObject *self, PyObject *args)
{
    ct_tape *t = (ct_tape *)self;
    Py_buffer h;
    if (!PyArg_ParseTuple(args, "y*:load_blob", &h))
        return NULL;
    if (h.len != WIRE_HASH_BYTES) {
        PyBuffer_Release(&h);
        PyErr_Format(PyExc_ValueError, "a blob hash has %d bytes", WIRE_HASH_BYTES);
        return NULL;
    }
    PyObject *out = NULL;
    store_cursor *c = NULL;
    store_err e;
    store_row row;
    int rc = -1;
    if (ct_tape_check_open(t) == 0) {
        store *s = t->sto;
        const uint8_t *hash = h.buf;
        Py_BEGIN_ALLOW_THREADS
            c = store_read_blob(s, hash, &e);
            rc = c ? store_next(c, &row, &e) : -1;
        Py_END_ALLOW_THREADS
        if (rc == 1) {
            uint8_t got[WIRE_HASH_BYTES];
            hash128(row.blob.data, row.blob.len, got);
            if (memcmp(got, h.buf, WIRE_HASH_BYTES) != 0)
                blob_error(t, h.buf, "in the blob table does not match its hash");
            else
                out = PyBytes_FromStringAndSize((const char *)row.blob.data,
                                                (Py_ssize_t)row.blob.len);
        } else if (rc == 0) {
            blob_error(t, h.buf, "is missing from the blob table");
        } else {
            char why[320];
            snprintf(why, sizeof why, "cannot be read from the blob table (%s: %s)", store_name(s),
                     e.msg);
            blob_error(t, h.buf, why);
        }
        store_cursor_close(c);
    }
    PyBuffer_Release(&h);
    return out;
}

PyObject *ct_tape_rebuild(ct_tape *t, const uint8_t **p, const uint8_t *end, PyObject *memo)
{
    /* t.load_blob is looked up at a blob only: most values hold none */
    ct_rebuild rb = {
        PyType_GetModuleState(Py_TYPE(t)), t->trust, t->allow, NULL, memo, (PyObject *)t};
    return ct_rebuild_value(&rb, p, end);
}

/* ---- methods ---- */

static PyObject *Tape_sessions(PyObject *self, PyObject *unused);

/* Reads the sessions again into t->sessions (oldest first).  0 or -1. */
static int sessions_reload(ct_tape *t)
{
    PyObject *rows = Tape_sessions((PyObject *)t, NULL), *by_id = rows ? PyDict_New() : NULL;
    for (Py_ssize_t i = by_id ? PyList_GET_SIZE(rows) - 1 : -1; i >= 0; i--) {
        PyObject *row = PyList_GET_ITEM(rows, i); /* newest first: read backwards */
        PyObject *id = PyObject_GetAttrString(row, "id");
        int rc = id ? PyDict_SetItem(by_id, id, row) : -1;
        Py_XDECREF(id);
        if (rc < 0)
            Py_CLEAR(by_id);
    }
    Py_XDECREF(rows);
    if (!by_id)
        return -1;
    Py_XSETREF(t->sessions, by_id);
    return 0;
}

PyObject *ct_tape_sessions_of(ct_tape *t, PyObject *wanted)
{
    PyObject *it = NULL, *id, *out = NULL;
    int missing = !t->sessions;
    if (!missing && !(it = PyObject_GetIter(wanted)))
        return NULL;
    while (it && !missing && (id = PyIter_Next(it))) {
        missing = PyDict_Contains(t->sessions, id) == 0;
        Py_DECREF(id);
    }
    Py_XDECREF(it);
    if (PyErr_Occurred() || (missing && sessions_reload(t) < 0))
        return NULL;
    out = PyList_New(0);
    PyObject *key, *row;
    Py_ssize_t pos = 0;
    while (out && PyDict_Next(t->sessions, &pos, &key, &row)) {
        int keep = PySet_Contains(wanted, key);
        if (keep < 0 || (keep && PyList_Append(out, row) < 0))
            Py_CLEAR(out);
    }
    return out;
}

static PyObject *Tape_sessions(PyObject *self, PyObject *unused)
{
    (void)unused;
    ct_tape *t = (ct_tape *)self;
    if (ct_tape_check_open(t) < 0)
        return NULL;
    store_cursor *c = open_table(t, store_read_sessions, "its sessions");
    if (!c)
        return NULL;
    PyObject *out = PyList_New(0);
    store_row row;
    store_err e;
    int rc = 0;
    while (out && (rc = ct_tape_next_row(c, &row, &e)) == 1) {
        PyObject *s = ct_session_from_row(t, &row.session);
        if (!s || PyList_Append(out, s) < 0)
            Py_CLEAR(out);
        Py_XDECREF(s);
    }
    if (out && rc < 0) {
        Py_CLEAR(out);
        ct_tape_store_error(t, &e, "its sessions");
    }
    store_cursor_close(c);
    return out;
}

static PyObject *Tape_functions(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"session", NULL};
    PyObject *session = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|$O:functions", kwlist, &session))
        return NULL;
    if (session != Py_None)
        return ct_tape_functions_of((ct_tape *)self, session);
    PyObject *table = ct_tape_functions((ct_tape *)self, 1);
    return table ? PyDict_Values(table) : NULL;
}

static PyObject *Tape_last_run(PyObject *self, PyObject *unused)
{
    return ct_tape_last_run((ct_tape *)self, unused);
}

static PyObject *Tape_threads(PyObject *self, PyObject *unused)
{
    (void)unused;
    ct_tape *t = (ct_tape *)self;
    if (load_threads(t) < 0)
        return NULL;
    PyObject *out = PyList_New(0), *key, *val;
    Py_ssize_t pos = 0;
    while (out && PyDict_Next(t->threads, &pos, &key, &val)) {
        PyObject *d = Py_BuildValue("{s:O,s:O,s:O,s:O}", "session", PyTuple_GET_ITEM(key, 0),
                                    "index", PyTuple_GET_ITEM(key, 1), "ident",
                                    PyTuple_GET_ITEM(val, 0), "name", PyTuple_GET_ITEM(val, 1));
        if (!d || PyList_Append(out, d) < 0)
            Py_CLEAR(out);
        Py_XDECREF(d);
    }
    return out;
}

/* Sets the TapeError of segment `g` (the calls of a function), damaged
 * (`status`, a seg_status). */
static void segment_damaged(ct_tape *t, const store_segment *g, int status)
{
    /* the function table first: the message names the function */
    PyObject *table = ct_tape_functions(t, CT_FUNCTIONS_CACHED);
    PyObject *label = table ? function_label(t, g->function) : NULL;
    if (label)
        ct_tape_damaged(t, 0, "segment %lld (calls of %U) %s", (long long)g->id, label,
                        seg_strerror(status));
    Py_XDECREF(label);
}

/* Sets KeyError: the tape holds no call `id`. */
static void no_such_call(ct_tape *t, long long id)
{
    PyObject *msg = PyUnicode_FromFormat("no call with id %lld in %U", id, t->path);
    if (msg) {
        PyErr_SetObject(PyExc_KeyError, msg);
        Py_DECREF(msg);
    }
}

/* call(call_id) -> the Call, or KeyError naming the id and the tape */
static PyObject *Tape_call(PyObject *self, PyObject *arg)
{
    ct_tape *t = (ct_tape *)self;
    long long id = PyLong_AsLongLong(arg);
    if (id == -1 && PyErr_Occurred())
        return NULL;
    if (ct_tape_check_open(t) < 0)
        return NULL;
    store *s = t->sto;
    store_err e;
    store_cursor *cur;
    Py_BEGIN_ALLOW_THREADS
        cur = store_find_call(s, id, &e);
    Py_END_ALLOW_THREADS
    if (!cur)
        return ct_tape_store_error(t, &e, "its segments");
    PyObject *found = NULL;
    int rc, more = 0;
    seg_call c;
    store_row row;
    store_segment g = {0};
    seg_reader r = {0}; /* c points into it (its unpacked columns) until closed */
    while ((rc = ct_tape_next_row(cur, &row, &e)) == 1) {
        g = row.segment;
        seg_reader_close(&r);
        more = seg_reader_open(&r, g.data, g.len);
        if (more == 0 && (int64_t)r.n != g.n)
            more = SEG_COUNT; /* the row and its bytes disagree */
        if (more < 0)
            break;
        /* ~100 segments span the id on a tape of many functions: the id
         * column alone says which one holds it (the others are not decoded) */
        if ((more = seg_reader_has_id(&r, id)) == 0)
            continue;
        if (more < 0)
            break;
        while ((more = seg_reader_next(&r, &c)) == 1 && c.id != id)
            ;
        if (more != 0)
            break;
    }
    if (more == 1) {
        ct_function *fn = ct_tape_function(t, g.function, id);
        found = fn ? (PyObject *)ct_call_new(t, fn, &c, g.session) : NULL;
    }
    seg_reader_close(&r);
    if (more < 0)
        segment_damaged(t, &g, more);
    else if (more == 0 && rc < 0)
        ct_tape_store_error(t, &e, "its segments");
    else if (more == 0)
        no_such_call(t, id);
    store_cursor_close(cur);
    return found;
}

static PyObject *Tape_tests(PyObject *self, PyObject *args, PyObject *kw)
{
    return ct_tape_tests((ct_tape *)self, args, kw);
}

static PyObject *Tape_search(PyObject *self, PyObject *args, PyObject *kw)
{
    return ct_tape_search((ct_tape *)self, args, kw);
}

static PyObject *Tape_children(PyObject *self, PyObject *args, PyObject *kw)
{
    return ct_tape_children((ct_tape *)self, args, kw);
}

static PyObject *Tape_calls(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"function", NULL};
    PyObject *function = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:calls", kwlist, &function))
        return NULL;
    return ct_tape_calls_by_id((ct_tape *)self, function);
}

static PyObject *Tape_replay(PyObject *self, PyObject *args, PyObject *kw)
{
    return ct_tape_replay((ct_tape *)self, args, kw);
}

static PyObject *Tape_close(PyObject *self, PyObject *unused)
{
    (void)unused;
    ct_tape *t = (ct_tape *)self;
    if (t->nqueries) {
        t->closing = 1; /* the last open query closes the store */
    } else {
        store_close(t->sto);
        t->sto = NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *Tape_enter(PyObject *self, PyObject *unused)
{
    (void)unused;
    return Py_NewRef(self);
}

static PyObject *Tape_exit(PyObject *self, PyObject *args)
{
    (void)args;
    PyObject *r = Tape_close(self, NULL);
    Py_XDECREF(r);
    Py_RETURN_FALSE;
}

static PyObject *Tape_repr(PyObject *self)
{
    ct_tape *t = (ct_tape *)self;
    if (!t->sto || t->closing)
        return PyUnicode_FromFormat("<calltape.Tape %R (closed)>", t->path);
    store_counts n;
    store_err e;
    if (read_counts(t, &n, &e) < 0)
        return ct_tape_store_error(t, &e, "its totals");
    long long calls = n.calls, fns = n.functions, sessions = n.sessions;
    return PyUnicode_FromFormat("<calltape.Tape %R: %lld call%s of %lld function%s"
                                " from %lld session%s>",
                                t->path, calls, calls == 1 ? "" : "s", fns, fns == 1 ? "" : "s",
                                sessions, sessions == 1 ? "" : "s");
}

static PyObject *Tape_get_path(ct_tape *t, void *c)
{
    (void)c;
    return Py_NewRef(t->path);
}

static PyObject *Tape_get_trust(ct_tape *t, void *c)
{
    (void)c;
    return PyBool_FromLong(t->trust);
}

static PyObject *Tape_get_allow(ct_tape *t, void *c)
{
    (void)c;
    return t->allow ? Py_NewRef(t->allow) : PyTuple_New(0);
}

static PyObject *Tape_get_closed(ct_tape *t, void *c)
{
    (void)c;
    return PyBool_FromLong(!t->sto || t->closing);
}

static PyMethodDef Tape_methods[] = {
    {"sessions", Tape_sessions, METH_NOARGS,
     "sessions() -> list of Session: the processes that recorded, newest first."},
    {"functions", (PyCFunction)(void (*)(void))Tape_functions, METH_VARARGS | METH_KEYWORDS,
     "functions(*, session=None) -> list of Function: every recorded function with its\n"
     "aggregates; with session (an id or a list of ids), the functions called in those\n"
     "sessions, with their aggregates over those sessions' calls only.\n\n"
     ">>> tape.functions(session=tape.last_run())"},
    {"last_run", Tape_last_run, METH_NOARGS,
     "last_run() -> list of session ids: the newest session's run, oldest first (the\n"
     "session it descends from and its child processes' sessions); [] without sessions."},
    {"threads", Tape_threads, METH_NOARGS,
     "threads() -> list of dicts (session, index, ident, name)."},
    {"tests", (PyCFunction)(void (*)(void))Tape_tests, METH_VARARGS | METH_KEYWORDS,
     "tests(test=None, *, session=None) -> list of dicts (test, session, start, end):\n"
     "the tests pytest --calltape ran, by session and start (end None: still running,\n"
     "or its process died in it); test= selects as search(test=) does.\n\n"
     ">>> tape.tests('tests/test_cart.py', session=tape.last_run())"},
    {"_export", (PyCFunction)(void (*)(void))ct_tape_export, METH_VARARGS | METH_KEYWORDS,
     "_export(format, fd, procs, session=None, since=, until=, base_ns=0, aggregate_fd=-1)"
     " -> calls written (calltape.export and calltape.report are the public faces)"},
    {"search", (PyCFunction)(void (*)(void))Tape_search, METH_VARARGS | METH_KEYWORDS,
     "search(function=None, *, file=None, since=None, until=None, min_duration=None,\n"
     "       max_duration=None, outcome=None, session=None, thread=None, args=None,\n"
     "       energy=None, captured=None, test=None, order='newest', limit=None) -> Calls\n\n"
     "Calls matching every filter given, in start order.  test= is a pytest node id\n"
     "(or a node above tests, or a glob): the calls made within its tests.\n\n"
     ">>> tape.search(function='price', since=datetime(2026, 1, 1), limit=100)\n"
     ">>> tape.search(test='tests/test_cart.py::test_total')\n"
     ">>> tape.search(min_duration=0.01, outcome='raised', energy={'pkg': 100.0})"},
    {"children", (PyCFunction)(void (*)(void))Tape_children, METH_VARARGS | METH_KEYWORDS,
     "children(parent=None, *, session=None, min_duration=None, limit=None) -> Calls\n\n"
     "The calls `parent` (a Call or a call id) made directly, in any thread, or with\n"
     "session=ID that session's roots (its calls without a parent); oldest first.  The\n"
     "tape's children index finds them without reading the rest of the tape.\n\n"
     ">>> kids = tape.children(42, limit=20); kids.count()\n"
     ">>> roots = tape.children(session=3)"},
    {"call", Tape_call, METH_O,
     "call(call_id) -> Call; KeyError names the id and the tape when there is none."},
    {"calls", (PyCFunction)(void (*)(void))Tape_calls, METH_VARARGS | METH_KEYWORDS,
     "calls(function=None) -> list of Call in call id order (function: as in search)."},
    {"replay", (PyCFunction)(void (*)(void))Tape_replay, METH_VARARGS | METH_KEYWORDS,
     "replay(*call_ids, rel=0.0, abs=0.0, globals=None, record=False, **filters) -> Report\n\n"
     "Re-executes recorded calls with today's code and compares each with its recording:\n"
     "the calls with the ids given, or else those search(**filters) finds (oldest first).\n"
     "Refused (ReplayRefused) unless the tape was opened with trust=True or an allow\n"
     "list covering each function's module.\n\n"
     ">>> report = tape.replay(function='price', since=datetime(2026, 11, 1))\n"
     ">>> report.counts, report.ok"},
    {"load_blob", Tape_load_blob, METH_VARARGS, "load_blob(hash) -> bytes of a stored value"},
    {"close", Tape_close, METH_NOARGS, "Closes the tape (after the searches still running)."},
    {"__enter__", Tape_enter, METH_NOARGS, NULL},
    {"__exit__", Tape_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Tape_getset[] = {
    {"path", (getter)Tape_get_path, NULL, "the tape file", NULL},
    {"trust", (getter)Tape_get_trust, NULL, "True: pickled values load any global", NULL},
    {"allow", (getter)Tape_get_allow, NULL, "modules whose globals values may load", NULL},
    {"closed", (getter)Tape_get_closed, NULL, "True once close() was called", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Tape_slots[] = {
    {Py_tp_new, Tape_new},
    {Py_tp_dealloc, Tape_dealloc},
    {Py_tp_traverse, Tape_traverse},
    {Py_tp_clear, Tape_clear},
    {Py_tp_methods, Tape_methods},
    {Py_tp_getset, Tape_getset},
    {Py_tp_repr, Tape_repr},
    {Py_tp_doc, "Tape(path, *, trust=False, allow=()): a tape opened read-only.\n\n"
                ">>> tape = calltape.open('calltape.db')\n"
                ">>> tape.search(function='price', limit=10)"},
    {0, NULL},
};

PyType_Spec Tape_spec = {
    .name = "calltape.Tape",
    .basicsize = sizeof(ct_tape),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .slots = Tape_slots,
};
