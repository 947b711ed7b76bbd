/*
 * tape.c - the reader: the Tape type opens a tape read-only and returns its
 * sessions, functions, threads and calls; values stay as wire bytes until
 * rebuild() or rebuild_args() turns them into objects.
 *
 * Invariants: the store is opened read-only (opening never modifies a
 * tape); every SQLite call runs with the GIL released; a malformed segment
 * raises TapeError naming the tape rather than returning partial data.
 */
#include "binding.h"

#include <sqlite3.h>

typedef struct Tape {
    PyObject_HEAD store *st;
    PyObject *path;
    PyObject *allow; /* tuple */
    int trust;
} Tape;

static PyObject *tape_error(ct_state *st, PyObject *path, const char *msg)
{
    PyObject *cls = st->marker_types ? PyDict_GetItemString(st->marker_types, "TapeError") : NULL;
    PyErr_Format(cls ? cls : PyExc_ValueError, "%s%s%U", msg, path ? ": " : "",
                 path ? path : Py_None);
    return NULL;
}

static PyObject *Tape_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"path", "trust", "allow", NULL};
    PyObject *path, *allow = NULL;
    int trust = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|$pO:open", kwlist, &path, &trust, &allow))
        return NULL;
    ct_state *cst = PyType_GetModuleState(type);
    PyObject *p = PyOS_FSPath(path);
    if (!p)
        return NULL;
    if (!PyUnicode_Check(p)) {
        Py_DECREF(p);
        return PyErr_Format(PyExc_TypeError, "the tape path must be str, not %R", path);
    }
    PyObject *allow_t = NULL;
    if (allow && allow != Py_None) {
        if (PyUnicode_Check(allow)) {
            allow_t = PyTuple_Pack(1, allow);
        } else {
            allow_t = PySequence_Tuple(allow);
            for (Py_ssize_t i = 0; allow_t && i < PyTuple_GET_SIZE(allow_t); i++)
                if (!PyUnicode_Check(PyTuple_GET_ITEM(allow_t, i))) {
                    Py_CLEAR(allow_t);
                    PyErr_SetString(PyExc_TypeError, "allow must be a list of module names");
                }
        }
        if (!allow_t) {
            Py_DECREF(p);
            return NULL;
        }
    }
    const char *cpath = PyUnicode_AsUTF8(p);
    char err[400];
    store *s = NULL;
    if (cpath) {
        Py_BEGIN_ALLOW_THREADS
            s = store_open_read(cpath, err, sizeof err);
        Py_END_ALLOW_THREADS
    }
    if (!s) {
        Py_XDECREF(allow_t);
        Py_DECREF(p);
        if (!PyErr_Occurred()) {
            PyObject *cls =
                cst->marker_types ? PyDict_GetItemString(cst->marker_types, "TapeError") : NULL;
            PyErr_SetString(cls ? cls : PyExc_ValueError, err);
        }
        return NULL;
    }
    Tape *t = (Tape *)type->tp_alloc(type, 0);
    if (!t) {
        store_close(s);
        Py_XDECREF(allow_t);
        Py_DECREF(p);
        return NULL;
    }
    t->st = s;
    t->path = p;
    t->allow = allow_t;
    t->trust = trust;
    return (PyObject *)t;
}

static void Tape_dealloc(Tape *t)
{
    PyTypeObject *tp = Py_TYPE(t);
    PyObject_GC_UnTrack(t);
    store_close(t->st);
    Py_CLEAR(t->path);
    Py_CLEAR(t->allow);
    tp->tp_free((PyObject *)t);
    Py_DECREF(tp);
}

static int Tape_traverse(Tape *t, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(t));
    return 0;
}

static int check_open(Tape *t)
{
    if (!t->st) {
        PyErr_SetString(PyExc_ValueError, "the tape is closed");
        return -1;
    }
    return 0;
}

static PyObject *column(sqlite3_stmt *q, int i)
{
    switch (sqlite3_column_type(q, i)) {
    case SQLITE_INTEGER:
        return PyLong_FromLongLong(sqlite3_column_int64(q, i));
    case SQLITE_FLOAT:
        return PyFloat_FromDouble(sqlite3_column_double(q, i));
    case SQLITE_TEXT:
        return PyUnicode_DecodeUTF8((const char *)sqlite3_column_text(q, i),
                                    sqlite3_column_bytes(q, i), "replace");
    case SQLITE_BLOB:
        return PyBytes_FromStringAndSize(sqlite3_column_blob(q, i), sqlite3_column_bytes(q, i));
    default:
        Py_RETURN_NONE;
    }
}

/* Runs `sql` (with an optional int64 parameter) and returns a list of
 * dicts keyed by column name. */
static PyObject *query_dicts(Tape *t, const char *sql, int has_param, int64_t param)
{
    if (check_open(t) < 0)
        return NULL;
    ct_state *cst = PyType_GetModuleState(Py_TYPE(t));
    sqlite3 *db = store_db(t->st);
    sqlite3_stmt *q = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS
        rc = sqlite3_prepare_v2(db, sql, -1, &q, NULL);
    Py_END_ALLOW_THREADS
    if (rc != SQLITE_OK)
        return tape_error(cst, t->path, sqlite3_errmsg(db));
    if (has_param)
        sqlite3_bind_int64(q, 1, param);
    PyObject *out = PyList_New(0);
    while (out) {
        Py_BEGIN_ALLOW_THREADS
            rc = sqlite3_step(q);
        Py_END_ALLOW_THREADS
        if (rc != SQLITE_ROW)
            break;
        PyObject *row = PyDict_New();
        if (!row) {
            Py_CLEAR(out);
            break;
        }
        for (int i = 0; i < sqlite3_column_count(q); i++) {
            PyObject *v = column(q, i);
            if (!v || PyDict_SetItemString(row, sqlite3_column_name(q, i), v) < 0) {
                Py_XDECREF(v);
                Py_CLEAR(out);
                break;
            }
            Py_DECREF(v);
        }
        if (out && PyList_Append(out, row) < 0)
            Py_CLEAR(out);
        Py_DECREF(row);
    }
    if (out && rc != SQLITE_DONE) {
        Py_CLEAR(out);
        tape_error(cst, t->path, sqlite3_errmsg(db));
    }
    sqlite3_finalize(q);
    return out;
}

static PyObject *Tape_sessions(PyObject *self, PyObject *unused)
{
    (void)unused;
    return query_dicts((Tape *)self, "SELECT * FROM sessions ORDER BY id DESC", 0, 0);
}

static PyObject *Tape_functions(PyObject *self, PyObject *unused)
{
    (void)unused;
    return query_dicts((Tape *)self, "SELECT * FROM functions ORDER BY id", 0, 0);
}

static PyObject *Tape_threads(PyObject *self, PyObject *unused)
{
    (void)unused;
    return query_dicts((Tape *)self, "SELECT * FROM threads", 0, 0);
}

static PyObject *Tape_query(PyObject *self, PyObject *args)
{
    const char *sql;
    if (!PyArg_ParseTuple(args, "s:query", &sql))
        return NULL;
    return query_dicts((Tape *)self, sql, 0, 0);
}

/* calls(function_id=None) -> list of tuples:
 * (id, session, function, parent, depth, thread, start_ns, duration_ns,
 *  outcome, flags, cpu_ns, rss_before, rss_after, rss_peak, args, result) */
static PyObject *Tape_calls(PyObject *self, PyObject *args)
{
    Tape *t = (Tape *)self;
    PyObject *fn = Py_None;
    if (!PyArg_ParseTuple(args, "|O:calls", &fn) || check_open(t) < 0)
        return NULL;
    ct_state *cst = PyType_GetModuleState(Py_TYPE(t));
    sqlite3 *db = store_db(t->st);
    const char *sql =
        fn == Py_None
            ? "SELECT session, function, data FROM segments ORDER BY id"
            : "SELECT session, function, data FROM segments WHERE function = ? ORDER BY id";
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) != SQLITE_OK)
        return tape_error(cst, t->path, sqlite3_errmsg(db));
    if (fn != Py_None) {
        long long id = PyLong_AsLongLong(fn);
        if (id == -1 && PyErr_Occurred()) {
            sqlite3_finalize(q);
            return NULL;
        }
        sqlite3_bind_int64(q, 1, id);
    }
    PyObject *out = PyList_New(0);
    int rc = SQLITE_DONE;
    while (out) {
        Py_BEGIN_ALLOW_THREADS
            rc = sqlite3_step(q);
        Py_END_ALLOW_THREADS
        if (rc != SQLITE_ROW)
            break;
        int64_t session = sqlite3_column_int64(q, 0), function = sqlite3_column_int64(q, 1);
        const uint8_t *data = sqlite3_column_blob(q, 2);
        size_t n = (size_t)sqlite3_column_bytes(q, 2);
        seg_reader r;
        seg_call c;
        if (seg_reader_open(&r, data, n) < 0) {
            Py_CLEAR(out);
            tape_error(cst, t->path, "corrupt segment in the tape");
            break;
        }
        int more;
        while ((more = seg_reader_next(&r, &c)) == 1) {
            PyObject *row = Py_BuildValue(
                "(LLLOLLLLiiLLLLy#y#)", (long long)c.id, (long long)session, (long long)function,
                c.parent ? PyLong_FromLongLong(c.parent) : Py_NewRef(Py_None), (long long)c.depth,
                (long long)c.thread, (long long)c.start, (long long)c.duration, (int)c.outcome,
                (int)c.flags, (long long)c.cpu_ns, (long long)c.rss_before, (long long)c.rss_after,
                (long long)c.rss_peak, (const char *)c.args, (Py_ssize_t)c.args_len,
                (const char *)c.result, (Py_ssize_t)c.result_len);
            /* the O above took a new reference we must drop */
            if (row)
                Py_DECREF(PyTuple_GET_ITEM(row, 3));
            if (!row || PyList_Append(out, row) < 0) {
                Py_XDECREF(row);
                Py_CLEAR(out);
                break;
            }
            Py_DECREF(row);
        }
        if (out && more < 0) {
            Py_CLEAR(out);
            tape_error(cst, t->path, "corrupt segment in the tape");
        }
    }
    if (out && rc != SQLITE_DONE) {
        Py_CLEAR(out);
        tape_error(cst, t->path, sqlite3_errmsg(db));
    }
    sqlite3_finalize(q);
    return out;
}

static PyObject *Tape_load_blob(PyObject *self, PyObject *args)
{
    Tape *t = (Tape *)self;
    Py_buffer h;
    if (!PyArg_ParseTuple(args, "y*:load_blob", &h))
        return NULL;
    ct_state *cst = PyType_GetModuleState(Py_TYPE(t));
    sqlite3 *db = store_db(t->st);
    sqlite3_stmt *q = NULL;
    PyObject *out = NULL;
    if (sqlite3_prepare_v2(db, "SELECT data FROM blobs WHERE hash = ?", -1, &q, NULL) ==
        SQLITE_OK) {
        sqlite3_bind_blob(q, 1, h.buf, (int)h.len, SQLITE_STATIC);
        if (sqlite3_step(q) == SQLITE_ROW)
            out = PyBytes_FromStringAndSize(sqlite3_column_blob(q, 0), sqlite3_column_bytes(q, 0));
    }
    if (!out && !PyErr_Occurred())
        tape_error(cst, t->path, "a stored value is missing from the blob table");
    sqlite3_finalize(q);
    PyBuffer_Release(&h);
    return out;
}

static PyObject *Tape_rebuild(PyObject *self, PyObject *args)
{
    Tape *t = (Tape *)self;
    Py_buffer view;
    int all = 0;
    if (!PyArg_ParseTuple(args, "y*|p:rebuild", &view, &all))
        return NULL;
    PyObject *loader = PyObject_GetAttrString(self, "load_blob");
    ct_rebuild rb = {PyType_GetModuleState(Py_TYPE(t)), t->trust, t->allow, loader};
    const uint8_t *p = view.buf, *end = p + view.len;
    PyObject *out = NULL;
    if (all) {
        /* a sequence of values: list of (value, was_default) */
        out = PyList_New(0);
        while (out && p < end) {
            int dflt = *p == WIRE_DEFAULT;
            PyObject *v = ct_rebuild_value(&rb, &p, end);
            PyObject *pair = v ? Py_BuildValue("(NO)", v, dflt ? Py_True : Py_False) : NULL;
            if (!pair || PyList_Append(out, pair) < 0)
                Py_CLEAR(out);
            Py_XDECREF(pair);
        }
    } else if (p < end) {
        out = ct_rebuild_value(&rb, &p, end);
    } else {
        out = Py_NewRef(Py_None);
    }
    Py_XDECREF(loader);
    PyBuffer_Release(&view);
    return out;
}

static PyObject *Tape_close(PyObject *self, PyObject *unused)
{
    (void)unused;
    Tape *t = (Tape *)self;
    store_close(t->st);
    t->st = NULL;
    Py_RETURN_NONE;
}

static PyObject *Tape_get_path(Tape *t, void *c)
{
    (void)c;
    return Py_NewRef(t->path);
}

static PyMethodDef Tape_methods[] = {
    {"sessions", Tape_sessions, METH_NOARGS, "Sessions (processes that recorded), newest first."},
    {"functions", Tape_functions, METH_NOARGS, "Function rows with their aggregates."},
    {"threads", Tape_threads, METH_NOARGS, "Thread rows."},
    {"query", Tape_query, METH_VARARGS, "query(sql) -> list of dict rows (read-only)."},
    {"calls", Tape_calls, METH_VARARGS, "calls(function_id=None) -> list of raw call tuples."},
    {"load_blob", Tape_load_blob, METH_VARARGS, "load_blob(hash) -> bytes"},
    {"rebuild", Tape_rebuild, METH_VARARGS, "rebuild(wire, many=False) -> value(s)"},
    {"close", Tape_close, METH_NOARGS, "Closes the tape."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Tape_getset[] = {
    {"path", (getter)Tape_get_path, NULL, "the tape file", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Tape_slots[] = {
    {Py_tp_new, Tape_new},         {Py_tp_dealloc, Tape_dealloc}, {Py_tp_traverse, Tape_traverse},
    {Py_tp_methods, Tape_methods}, {Py_tp_getset, Tape_getset},   {0, NULL},
};

PyType_Spec Tape_spec = {
    .name = "calltape._native.RawTape",
    .basicsize = sizeof(Tape),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .slots = Tape_slots,
};
