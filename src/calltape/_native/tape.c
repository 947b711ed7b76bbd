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

/* One call as the tuple the Python layer wraps:
 * (id, session, function, parent, depth, thread, start_ns, duration_ns,
 *  outcome, flags, cpu_ns, rss_before, rss_after, rss_peak, args, result) */
static PyObject *call_row(const seg_call *c, int64_t session, int64_t function)
{
    /* built by hand: Py_BuildValue would parse a format for every call */
    PyObject *row = PyTuple_New(16);
    if (!row)
        return NULL;
    int64_t ints[14] = {c->id,     session,       function,     c->parent,  c->depth,
                        c->thread, c->start,      c->duration,  c->outcome, c->flags,
                        c->cpu_ns, c->rss_before, c->rss_after, c->rss_peak};
    for (int i = 0; i < 14; i++) {
        PyObject *v = (i == 3 && !c->parent) ? Py_NewRef(Py_None) : PyLong_FromLongLong(ints[i]);
        if (!v) {
            Py_DECREF(row);
            return NULL;
        }
        PyTuple_SET_ITEM(row, i, v);
    }
    PyObject *a = PyBytes_FromStringAndSize((const char *)c->args, (Py_ssize_t)c->args_len);
    PyObject *r = PyBytes_FromStringAndSize((const char *)c->result, (Py_ssize_t)c->result_len);
    if (!a || !r) {
        Py_XDECREF(a);
        Py_XDECREF(r);
        Py_DECREF(row);
        return NULL;
    }
    PyTuple_SET_ITEM(row, 14, a);
    PyTuple_SET_ITEM(row, 15, r);
    return row;
}

static PyObject *tape_error(ct_state *st, PyObject *path, const char *msg)
{
    PyObject *cls = ct_marker_type(st, "TapeError");
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
            PyObject *cls = ct_marker_type(cst, "TapeError");
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

/* get(call_id) -> the call's row, or None when the tape has no such call */
static PyObject *Tape_get(PyObject *self, PyObject *arg)
{
    Tape *t = (Tape *)self;
    long long id = PyLong_AsLongLong(arg);
    if ((id == -1 && PyErr_Occurred()) || check_open(t) < 0)
        return NULL;
    ct_state *cst = PyType_GetModuleState(Py_TYPE(t));
    sqlite3 *db = store_db(t->st);
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT session, function, data FROM segments"
                           " WHERE id_min <= ?1 AND id_max >= ?1",
                           -1, &q, NULL) != SQLITE_OK)
        return tape_error(cst, t->path, sqlite3_errmsg(db));
    sqlite3_bind_int64(q, 1, id);
    PyObject *found = NULL;
    int rc;
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
            rc = sqlite3_step(q);
        Py_END_ALLOW_THREADS
        if (rc != SQLITE_ROW)
            break;
        seg_reader r;
        seg_call c;
        int more;
        if (seg_reader_open(&r, sqlite3_column_blob(q, 2), (size_t)sqlite3_column_bytes(q, 2)) < 0)
            break;
        while ((more = seg_reader_next(&r, &c)) == 1 && c.id != id)
            ;
        if (more == 1) {
            found = call_row(&c, sqlite3_column_int64(q, 0), sqlite3_column_int64(q, 1));
            break;
        }
        if (more < 0) {
            rc = SQLITE_CORRUPT;
            break;
        }
    }
    if (!found && !PyErr_Occurred()) {
        if (rc == SQLITE_ROW || rc == SQLITE_DONE)
            found = rc == SQLITE_DONE ? Py_NewRef(Py_None) : NULL;
        if (!found)
            tape_error(cst, t->path, "the tape is damaged (a segment cannot be read)");
    }
    sqlite3_finalize(q);
    return found;
}

/* ---- search ---- */

typedef struct Search {
    PyObject_HEAD PyObject *tape; /* strong: keeps the store open */
    query *q;
    int busy;
} Search;

static PyObject *Tape_search(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"functions",    "session", "thread", "since", "until", "min_duration",
                             "max_duration", "outcome", "newest", "limit", NULL};
    Tape *t = (Tape *)self;
    PyObject *functions = Py_None;
    long long session = 0, thread = -1, since = INT64_MIN, until = INT64_MAX, min_d = 0,
              max_d = INT64_MAX, limit = -1;
    int outcome = -1, newest = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|$OLLLLLLipL:search", kwlist, &functions, &session,
                                     &thread, &since, &until, &min_d, &max_d, &outcome, &newest,
                                     &limit) ||
        check_open(t) < 0)
        return NULL;
    ct_state *cst = PyType_GetModuleState(Py_TYPE(t));
    query_filter f = {0};
    f.session = session;
    f.thread = thread;
    f.since = since;
    f.until = until;
    f.min_duration = min_d;
    f.max_duration = max_d;
    f.outcome = outcome;
    f.newest_first = newest;
    f.limit = limit;
    int64_t *ids = NULL;
    if (functions != Py_None) {
        PyObject *seq = PySequence_Fast(functions, "functions must be a sequence of ids");
        if (!seq)
            return NULL;
        Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
        ids = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(int64_t));
        for (Py_ssize_t i = 0; ids && i < n; i++) {
            ids[i] = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(seq, i));
            if (ids[i] == -1 && PyErr_Occurred()) {
                PyMem_Free(ids);
                Py_DECREF(seq);
                return NULL;
            }
        }
        Py_DECREF(seq);
        if (!ids)
            return PyErr_NoMemory();
        if (n == 0) {
            ids[0] = 0; /* no function matched: nothing can */
            n = 1;
        }
        f.functions = ids;
        f.nfunctions = (size_t)n;
    }
    char err[300];
    query *q = NULL;
    Py_BEGIN_ALLOW_THREADS
        q = query_open(t->st, &f, err, sizeof err);
    Py_END_ALLOW_THREADS
    PyMem_Free(ids);
    if (!q)
        return tape_error(cst, t->path, err);
    Search *it = PyObject_GC_New(Search, cst->Search_type);
    if (!it) {
        query_close(q);
        return NULL;
    }
    it->tape = Py_NewRef(self);
    it->q = q;
    it->busy = 0;
    PyObject_GC_Track(it);
    return (PyObject *)it;
}

static PyObject *Search_next(PyObject *self)
{
    Search *it = (Search *)self;
    if (!it->q)
        return NULL;
    if (it->busy) {
        PyErr_SetString(PyExc_RuntimeError, "this search is being iterated by another thread");
        return NULL;
    }
    seg_call c;
    int64_t session = 0, function = 0;
    int rc;
    it->busy = 1;
    Py_BEGIN_ALLOW_THREADS
        rc = query_next(it->q, &c, &session, &function);
    Py_END_ALLOW_THREADS
    it->busy = 0;
    if (rc == 1)
        return call_row(&c, session, function);
    if (rc < 0) {
        ct_state *cst = PyType_GetModuleState(Py_TYPE(it->tape));
        tape_error(cst, ((Tape *)it->tape)->path, query_error(it->q));
    }
    query_close(it->q);
    it->q = NULL;
    return NULL;
}

static int Search_traverse(Search *it, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(it));
    Py_VISIT(it->tape);
    return 0;
}

static int Search_clear(Search *it)
{
    query_close(it->q);
    it->q = NULL;
    Py_CLEAR(it->tape);
    return 0;
}

static void Search_dealloc(Search *it)
{
    PyTypeObject *tp = Py_TYPE(it);
    PyObject_GC_UnTrack(it);
    Search_clear(it);
    tp->tp_free((PyObject *)it);
    Py_DECREF(tp);
}

static PyType_Slot Search_slots[] = {
    {Py_tp_dealloc, Search_dealloc}, {Py_tp_traverse, Search_traverse}, {Py_tp_clear, Search_clear},
    {Py_tp_iter, PyObject_SelfIter}, {Py_tp_iternext, Search_next},     {0, NULL},
};

PyType_Spec Search_spec = {
    .name = "calltape._native.Search",
    .basicsize = sizeof(Search),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = Search_slots,
};

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
    {"get", Tape_get, METH_O, "get(call_id) -> raw call tuple or None"},
    {"search", (PyCFunction)(void (*)(void))Tape_search, METH_VARARGS | METH_KEYWORDS,
     "search(*, functions, session, thread, since, until, min_duration, max_duration,"
     " outcome, newest, limit) -> iterator of raw call tuples, in start order."},
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
