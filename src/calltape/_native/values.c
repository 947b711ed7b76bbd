/*
 * values.c - tape values outside a tape: encode() a Python value into wire
 * bytes, decode() them back (restricted unpickling, as for tapes), and
 * literal() for the Python source of a value (engine literal.c).  Used by
 * `calltape make-tests` for its data files and readable tests.
 *
 * Invariants: encoding never uses the blob store and has no size limit (a
 * data file holds the whole value); decoding a blob reference fails with
 * TapeError, since there is no tape to hold it.
 */
#include "binding.h"

/* Encodes `v` with the recorder's codec (no blobs, no size limit) into `b`.
 * Returns 0, or -1 with MemoryError. */
static int encode_into(ct_state *st, wbuf *b, PyObject *v)
{
    ct_capture cap = {st, PY_SSIZE_T_MAX, 0};
    ct_thread *t = ct_thread_get();
    t->busy++;
    int rc = ct_capture_value(&cap, b, v);
    t->busy--;
    if (rc < 0 || b->failed) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

PyObject *ct_encode_py(PyObject *module, PyObject *v)
{
    wbuf b;
    wbuf_init(&b, NULL, 0);
    if (encode_into(PyModule_GetState(module), &b, v) < 0) {
        wbuf_free(&b);
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize((const char *)b.data, (Py_ssize_t)b.len);
    wbuf_free(&b);
    return out;
}

PyObject *ct_decode_py(PyObject *module, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"data", "trust", "allow", NULL};
    Py_buffer view;
    int trust = 0;
    PyObject *allow = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "y*|$pO:decode", kwlist, &view, &trust, &allow))
        return NULL;
    PyObject *allow_t = allow ? PySequence_Tuple(allow) : PyTuple_New(0);
    if (!allow_t) {
        PyBuffer_Release(&view);
        return NULL;
    }
    ct_rebuild r = {PyModule_GetState(module), trust, allow_t, NULL};
    const uint8_t *p = view.buf, *end = p + view.len;
    PyObject *v = ct_rebuild_value(&r, &p, end);
    if (v && p != end) {
        Py_CLEAR(v);
        PyObject *cls = ct_marker_type(r.st, "TapeError");
        PyErr_SetString(cls ? cls : PyExc_ValueError, "trailing bytes after the value");
    }
    Py_DECREF(allow_t);
    PyBuffer_Release(&view);
    return v;
}

PyObject *ct_literal_py(PyObject *module, PyObject *v)
{
    uint8_t store[512];
    wbuf b, out;
    wbuf_init(&b, store, sizeof store);
    wbuf_init(&out, NULL, 0);
    PyObject *res = NULL;
    if (encode_into(PyModule_GetState(module), &b, v) < 0)
        goto done;
    if (!wire_literal(b.data, b.data + b.len, &out)) {
        res = Py_NewRef(Py_None);
        goto done;
    }
    if (out.failed) {
        PyErr_NoMemory();
        goto done;
    }
    res = PyUnicode_DecodeUTF8((const char *)out.data, (Py_ssize_t)out.len, "strict");
done:
    wbuf_free(&b);
    wbuf_free(&out);
    return res;
}
