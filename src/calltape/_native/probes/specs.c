/*
 * specs.c - _native.probe_specs: the probe specs kept on a tape
 * (store_spec_ops, store.h), for calltape.probes.TapeStore and the
 * `calltape probe` command.  Each call opens the tape, does one thing and
 * closes it, with the GIL released around the store; and the SpecReader
 * type: one read connection kept open for a TapeStore's snapshots (one
 * query per snapshot when nothing changed), opened again in a forked
 * child.
 *
 * Invariants: specs and reports cross as JSON text (the Python side
 * encodes and decodes them); a failure is a TapeError of one sentence
 * naming the tape; a SpecReader's store is used by one thread at a time
 * (its lock) and only in the process that opened it (a child forgets the
 * parent's connection without closing it: closing would end the parent's
 * PostgreSQL session and drop its SQLite locks).
 */
#include "probes.h"

#include "store.h"

#include <stdio.h>
#include <string.h>
#include <structmember.h>
#include <unistd.h>

/* The rows read_specs hands out, gathered under the GIL afterwards. */
typedef struct spec_rows {
    PyObject *list; /* of (id, spec, process or None, info or None) */
    int failed;
} spec_rows;

static int spec_row(void *ctx, const char *id, const char *spec, const char *process,
                    const char *info)
{
    spec_rows *r = ctx;
    int rc = -1;
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *row = Py_BuildValue("(sszz)", id, spec, process, info);
    if (row) {
        rc = PyList_Append(r->list, row);
        Py_DECREF(row);
    }
    if (rc < 0)
        r->failed = 1;
    PyGILState_Release(g);
    return rc;
}

static int specs_fail(ct_state *st, const char *path, const char *what, const char *msg)
{
    PyObject *cls = ct_marker_type(st, "TapeError");
    PyErr_Format(cls ? cls : PyExc_ValueError, "cannot %s the probe specs of the tape %s: %s", what,
                 path, msg);
    return -1;
}

/* _native.probe_specs(path, op, *args): op "version" -> int; "read" ->
 * (version, [(id, spec, process|None, info|None)]); "put" (id, spec);
 * "delete" (id) -> bool found; "mark" (id, process, info).  Raises
 * TapeError (one sentence) when the tape cannot be opened or the store
 * keeps no specs. */
PyObject *ct_probe_specs_py(PyObject *module, PyObject *args)
{
    ct_state *st = PyModule_GetState(module);
    const char *path = NULL, *op = NULL, *a = NULL, *b = NULL, *c = NULL;
    if (!PyArg_ParseTuple(args, "ss|sss:probe_specs", &path, &op, &a, &b, &c))
        return NULL;
    int writes = strcmp(op, "put") == 0 || strcmp(op, "delete") == 0 || strcmp(op, "mark") == 0;
    int reads = strcmp(op, "version") == 0 || strcmp(op, "read") == 0;
    if ((!writes && !reads) || (strcmp(op, "put") == 0 && !b) || (strcmp(op, "mark") == 0 && !c) ||
        (strcmp(op, "delete") == 0 && !a)) {
        PyErr_Format(PyExc_ValueError, "probe_specs: bad operation %s", op);
        return NULL;
    }
    spec_rows rows = {NULL, 0};
    if (strcmp(op, "read") == 0 && !(rows.list = PyList_New(0)))
        return NULL;
    char err[600] = "";
    store_err e = {0, ""};
    int64_t version = 0;
    int rc = -1, found = 0, opened = 0, has = 0;
    Py_BEGIN_ALLOW_THREADS
        store *s = writes ? store_open_write(path, err, sizeof err)
                          : store_open_read(path, err, sizeof err);
        if (s) {
            opened = 1;
            has = store_has_specs(s);
            if (!has)
                rc = -1;
            else if (strcmp(op, "version") == 0)
                rc = store_spec_version(s, &version, &e);
            else if (strcmp(op, "read") == 0)
                rc = store_read_specs(s, &version, spec_row, &rows, &e);
            else if (strcmp(op, "put") == 0)
                rc = store_put_spec(s, a, b, &e);
            else if (strcmp(op, "delete") == 0)
                rc = store_delete_spec(s, a, &found, &e);
            else
                rc = store_mark_spec(s, a, b, c, &e);
            if (!has)
                snprintf(err, sizeof err, "a %s store keeps no probe specs", store_name(s));
            store_close(s);
        }
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        Py_CLEAR(rows.list);
        if (rows.failed)
            return NULL;
        if (!opened) {
            PyObject *cls = ct_marker_type(st, "TapeError");
            PyErr_SetString(cls ? cls : PyExc_ValueError, err);
        } else
            specs_fail(st, path, writes ? "write" : "read", has ? e.msg : err);
        return NULL;
    }
    if (strcmp(op, "version") == 0)
        return PyLong_FromLongLong((long long)version);
    if (strcmp(op, "read") == 0) {
        PyObject *out = Py_BuildValue("(LN)", (long long)version, rows.list);
        return out;
    }
    if (strcmp(op, "delete") == 0)
        return PyBool_FromLong(found);
    Py_RETURN_NONE;
}

/* ---- SpecReader: one read connection per TapeStore --------------------------- */

typedef struct SpecReader {
    PyObject_HEAD PyObject *module;
    char *path;
    store *s;  /* open, or NULL */
    pid_t pid; /* the process that opened `s` */
    PyThread_type_lock lock;
    long long opens, queries;
} SpecReader;

/* Runs "version" or "read" (rows.list not NULL) on the reader's store,
 * opening it first when it is not open (or was opened by a parent).
 * Returns 0, or -1 with TapeError set. */
static int reader_run(SpecReader *r, int64_t *version, spec_rows *rows)
{
    ct_state *st = PyModule_GetState(r->module);
    char err[600] = "";
    store_err e = {0, ""};
    int rc = -1, has = 1, opened = 1;
    Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(r->lock, WAIT_LOCK);
        if (r->s && r->pid != getpid())
            r->s = NULL; /* the parent's: forgotten, not closed */
        if (!r->s && (r->s = store_open_read(r->path, err, sizeof err))) {
            r->pid = getpid();
            r->opens++;
        }
        if (!r->s) {
            opened = 0;
        } else if (!(has = store_has_specs(r->s))) {
            snprintf(err, sizeof err, "a %s store keeps no probe specs", store_name(r->s));
        } else {
            r->queries++;
            rc = rows->list ? store_read_specs(r->s, version, spec_row, rows, &e)
                            : store_spec_version(r->s, version, &e);
            /* open anew after a failure (the connection may be broken) and
             * while there are no specs (the store read the tape's format at
             * open: a writer may upgrade an older tape meanwhile) */
            if ((rc < 0 && e.kind != 0) || (rc == 0 && *version == 0)) {
                store_close(r->s);
                r->s = NULL;
            }
        }
        PyThread_release_lock(r->lock);
    Py_END_ALLOW_THREADS
    if (rc == 0)
        return 0;
    if (rows->failed)
        return -1;
    if (!opened) {
        PyObject *cls = ct_marker_type(st, "TapeError");
        PyErr_SetString(cls ? cls : PyExc_ValueError, err);
        return -1;
    }
    return specs_fail(st, r->path, "read", has ? e.msg : err);
}

/* version() -> the specs' version of the tape (one query). */
static PyObject *Reader_version(SpecReader *r, PyObject *unused)
{
    (void)unused;
    int64_t version = 0;
    spec_rows rows = {NULL, 0};
    if (reader_run(r, &version, &rows) < 0)
        return NULL;
    return PyLong_FromLongLong((long long)version);
}

/* read() -> (version, [(id, spec, process|None, info|None)]), in one
 * transaction. */
static PyObject *Reader_read(SpecReader *r, PyObject *unused)
{
    (void)unused;
    int64_t version = 0;
    spec_rows rows = {PyList_New(0), 0};
    if (!rows.list)
        return NULL;
    if (reader_run(r, &version, &rows) < 0) {
        Py_DECREF(rows.list);
        return NULL;
    }
    return Py_BuildValue("(LN)", (long long)version, rows.list);
}

/* close(): closes the connection (the next read opens it again). */
static PyObject *Reader_close(SpecReader *r, PyObject *unused)
{
    (void)unused;
    Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(r->lock, WAIT_LOCK);
        if (r->s && r->pid == getpid())
            store_close(r->s);
        r->s = NULL;
        PyThread_release_lock(r->lock);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static int Reader_init(SpecReader *r, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"module", "path", NULL};
    PyObject *module;
    const char *path;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Os:SpecReader", kwlist, &module, &path))
        return -1;
    if (!PyModule_Check(module) || !PyModule_GetState(module)) {
        PyErr_SetString(PyExc_TypeError, "SpecReader needs calltape._native");
        return -1;
    }
    if (r->path) {
        PyErr_SetString(PyExc_RuntimeError, "a SpecReader is made once");
        return -1;
    }
    size_t n = strlen(path) + 1;
    if (!(r->path = PyMem_Malloc(n)) || !(r->lock = PyThread_allocate_lock())) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(r->path, path, n);
    Py_XSETREF(r->module, Py_NewRef(module));
    return 0;
}

static int Reader_traverse(SpecReader *r, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(r));
    Py_VISIT(r->module);
    return 0;
}

static int Reader_clear(SpecReader *r)
{
    Py_CLEAR(r->module);
    return 0;
}

static void Reader_dealloc(SpecReader *r)
{
    PyTypeObject *tp = Py_TYPE(r);
    PyObject_GC_UnTrack(r);
    if (r->s && r->pid == getpid()) {
        Py_BEGIN_ALLOW_THREADS
            store_close(r->s);
        Py_END_ALLOW_THREADS
    }
    if (r->lock)
        PyThread_free_lock(r->lock);
    PyMem_Free(r->path);
    Reader_clear(r);
    tp->tp_free((PyObject *)r);
    Py_DECREF(tp);
}

static PyMethodDef Reader_methods[] = {
    {"version", (PyCFunction)Reader_version, METH_NOARGS, "version() -> the specs' version"},
    {"read", (PyCFunction)Reader_read, METH_NOARGS, "read() -> (version, rows)"},
    {"close", (PyCFunction)Reader_close, METH_NOARGS, "close(): the connection closed"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Reader_members[] = {
    {"opens", T_LONGLONG, offsetof(SpecReader, opens), READONLY, "connections opened"},
    {"queries", T_LONGLONG, offsetof(SpecReader, queries), READONLY, "version/read calls run"},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot Reader_slots[] = {
    {Py_tp_doc, "SpecReader(module, path): one read connection to a tape's probe specs"},
    {Py_tp_init, Reader_init},
    {Py_tp_dealloc, Reader_dealloc},
    {Py_tp_traverse, Reader_traverse},
    {Py_tp_clear, Reader_clear},
    {Py_tp_methods, Reader_methods},
    {Py_tp_members, Reader_members},
    {0, NULL},
};

PyType_Spec SpecReader_spec = {
    .name = "calltape._native.SpecReader",
    .basicsize = sizeof(SpecReader),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = Reader_slots,
};
