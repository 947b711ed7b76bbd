/*
 * specs.c - _native.probe_specs: the probe specs kept on a tape
 * (store_spec_ops, store.h), for calltape.probes.TapeStore and the
 * `calltape probe` command.  Each call opens the tape, does one thing and
 * closes it, with the GIL released around the store.
 *
 * Invariants: specs and reports cross as JSON text (the Python side
 * encodes and decodes them); a failure is a TapeError of one sentence
 * naming the tape.
 */
#include "probes.h"

#include "store.h"

#include <stdio.h>
#include <string.h>

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
