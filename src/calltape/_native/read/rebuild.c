/*
 * rebuild.c - tape values back to Python objects, safely.
 *
 * Pickled values are loaded by the restricted unpickler of allow.c, which
 * admits only the globals the reader allowed (by full name, or defined in an
 * allowed module); trust=True uses pickle.loads.
 * Markers (redacted, truncated, unencodable) rebuild to marker objects,
 * never to None.
 *
 * Damage: bytes that do not rebuild (malformed values, text that is not
 * UTF-8, pickles that do not load, codec values their decoder refuses,
 * unhashable keys) raise TapeError, never another exception type; a
 * RefusedGlobal is a refusal and an ImportError (an allowed module that
 * is not installed) a fact of this machine, not damage: they stay as they
 * are.
 */
#include "binding.h"

static PyObject *tape_error(ct_state *st, const char *msg)
{
    PyObject *cls = ct_marker_type(st, "TapeError");
    PyErr_SetString(cls ? cls : PyExc_ValueError, msg);
    return NULL;
}

/* Whether the pending exception is one ct_damage turns into a TapeError. */
static int is_damage(ct_state *st, int any)
{
    PyObject *tape = ct_marker_type(st, "TapeError");
    PyObject *refused = ct_marker_type(st, "RefusedGlobal");
    if (tape && PyErr_ExceptionMatches(tape))
        return 1;
    return any && PyErr_ExceptionMatches(PyExc_Exception) &&
           !(refused && PyErr_ExceptionMatches(refused)) &&
           !PyErr_ExceptionMatches(PyExc_ImportError) && !PyErr_ExceptionMatches(PyExc_MemoryError);
}

/* "Type: message" of `exc`, or its message alone for a TapeError. */
static PyObject *describe(ct_state *st, PyObject *exc)
{
    PyObject *tape = ct_marker_type(st, "TapeError");
    PyObject *msg = PyObject_Str(exc);
    if (!msg || (tape && PyObject_TypeCheck(exc, (PyTypeObject *)tape)))
        return msg;
    PyObject *name = PyType_GetName(Py_TYPE(exc));
    PyObject *out = !name                           ? NULL
                    : PyUnicode_GET_LENGTH(msg) > 0 ? PyUnicode_FromFormat("%U: %U", name, msg)
                                                    : Py_NewRef(name);
    Py_XDECREF(name);
    Py_DECREF(msg);
    return out;
}

PyObject *ct_damage(ct_state *st, int any, PyObject *prefix)
{
    PyObject *cls = ct_marker_type(st, "TapeError");
    if (!cls)
        return tape_error(st, "calltape markers are not bound");
    if (!PyErr_Occurred()) {
        if (prefix)
            PyErr_SetObject(cls, prefix);
        else
            PyErr_SetString(cls, "the tape is damaged");
        return NULL;
    }
    if (!is_damage(st, any))
        return NULL;
    PyObject *exc = ct_fetch_exc(), *err = NULL;
    PyObject *msg = describe(st, exc);
    PyObject *text = !msg     ? NULL
                     : prefix ? PyUnicode_FromFormat("%U: %U", prefix, msg)
                              : Py_NewRef(msg);
    Py_XDECREF(msg);
    err = text ? PyObject_CallOneArg(cls, text) : NULL;
    Py_XDECREF(text);
    if (!err) {
        Py_DECREF(exc); /* the error of making the TapeError stands */
        return NULL;
    }
    PyException_SetCause(err, exc); /* steals exc */
    ct_restore_exc(err);
    return NULL;
}

/* ct_damage with a prefix from a C string; a TapeError already pending
 * (from a value inside) is left as it is. */
static PyObject *damage(ct_state *st, const char *prefix)
{
    PyObject *tape = ct_marker_type(st, "TapeError");
    if (tape && PyErr_ExceptionMatches(tape))
        return NULL;
    PyObject *p = PyUnicode_FromString(prefix);
    if (!p)
        return NULL;
    ct_damage(st, 1, p);
    Py_DECREF(p);
    return NULL;
}

/* Calls the marker class `name` with the tuple `args` (a new reference,
 * stolen).  NULL `args` means that building them failed: its exception
 * stands and NULL is returned. */
static PyObject *marker(ct_state *st, const char *name, PyObject *args)
{
    if (!args)
        return NULL;
    PyObject *cls = ct_marker_type(st, name);
    if (!cls) {
        Py_DECREF(args);
        return tape_error(st, "calltape markers are not bound");
    }
    PyObject *r = PyObject_Call(cls, args, NULL);
    Py_DECREF(args);
    return r;
}

/* A new tuple of `a` and `b`, whose references it steals; NULL when either
 * is NULL (its exception then stands) or on failure. */
static PyObject *pair(PyObject *a, PyObject *b)
{
    PyObject *t = a && b ? PyTuple_Pack(2, a, b) : NULL;
    Py_XDECREF(a);
    Py_XDECREF(b);
    return t;
}

static PyObject *load_codec(ct_rebuild *r, PyObject *name, const uint8_t *p, size_t n)
{
    ct_state *st = r->st;
    PyObject *data = PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)n);
    if (!data)
        return NULL;
    PyObject *v = NULL;
    if (PyUnicode_CompareWithASCIIString(name, "numpy.ndarray") == 0) {
        if (!st->imported.np_load) {
            PyObject *np = PyImport_ImportModule("numpy");
            st->imported.np_load = np ? PyObject_GetAttrString(np, "load") : NULL;
            Py_XDECREF(np);
        }
        if (!st->imported.bytes_io) {
            PyObject *io = PyImport_ImportModule("io");
            st->imported.bytes_io = io ? PyObject_GetAttrString(io, "BytesIO") : NULL;
            Py_XDECREF(io);
        }
        PyObject *f = st->imported.np_load && st->imported.bytes_io
                          ? PyObject_CallOneArg(st->imported.bytes_io, data)
                          : NULL;
        if (f) {
            PyObject *kw = Py_BuildValue("{s:O}", "allow_pickle", Py_False);
            PyObject *a = PyTuple_Pack(1, f);
            v = kw && a ? PyObject_Call(st->imported.np_load, a, kw) : NULL;
            Py_XDECREF(kw);
            Py_XDECREF(a);
            Py_DECREF(f);
        }
    } else {
        PyObject *dec = PyDict_GetItemWithError(st->objects.codec_decoders, name);
        if (dec)
            v = PyObject_CallOneArg(dec, data);
        else if (!PyErr_Occurred())
            v = marker(st, "Unencodable",
                       pair(Py_NewRef(name),
                            PyUnicode_FromFormat("no codec named %R is registered", name)));
    }
    Py_DECREF(data);
    if (!v) {
        PyObject *what = PyUnicode_FromFormat("a value of the codec %R cannot be decoded", name);
        if (what) {
            ct_damage(st, 1, what);
            Py_DECREF(what);
        }
    }
    return v;
}

/* The text of `n` UTF-8 bytes at `p`; TapeError when they are not UTF-8. */
static PyObject *text(ct_state *st, const uint8_t *p, uint64_t n)
{
    PyObject *s = PyUnicode_DecodeUTF8((const char *)p, (Py_ssize_t)n, "surrogatepass");
    return s ? s : damage(st, "malformed text on the tape");
}

static PyObject *rebuild_at(ct_rebuild *r, wreader *rd, int depth);

/* The one value that fills `rd` whole; TapeError when bytes are left. */
static PyObject *rebuild_whole(ct_rebuild *r, wreader *rd, int depth)
{
    PyObject *v = rebuild_at(r, rd, depth);
    if (v && rd->p != rd->end) {
        Py_DECREF(v);
        return tape_error(r->st, "malformed value on the tape (bytes after its end)");
    }
    return v;
}

/* 1 when `frames` is a list of (file str, line int, function str). */
static int frames_well_formed(PyObject *frames)
{
    if (!PyList_Check(frames))
        return 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(frames); i++) {
        PyObject *f = PyList_GET_ITEM(frames, i);
        if (!PyTuple_Check(f) || PyTuple_GET_SIZE(f) != 3 ||
            !PyUnicode_Check(PyTuple_GET_ITEM(f, 0)) || !PyLong_Check(PyTuple_GET_ITEM(f, 1)) ||
            !PyUnicode_Check(PyTuple_GET_ITEM(f, 2)))
            return 0;
    }
    return 1;
}

/* A list, tuple, dict, set or frozenset of the token `t`, whose items
 * follow at `rd`; TapeError for keys or members that cannot be hashed. */
static PyObject *rebuild_items(ct_rebuild *r, wreader *rd, int depth, const wire_tok *t)
{
    uint8_t tag = t->tag;
    uint64_t n = t->u;
    PyObject *out = tag == WIRE_LIST    ? PyList_New(0)
                    : tag == WIRE_TUPLE ? PyTuple_New((Py_ssize_t)n)
                    : tag == WIRE_DICT  ? PyDict_New()
                                        : PySet_New(NULL);
    if (!out)
        return NULL;
    Py_ssize_t index = 0;
    if (wire_memoized(tag) && ct_rebuild_memo_push(r, NULL, &index) < 0)
        goto error;
    if (wire_memoized(tag))
        PyList_SetItem(r->memo, index, Py_NewRef(out));
    for (uint64_t i = 0; i < n; i++) {
        PyObject *v = rebuild_at(r, rd, depth + 1);
        if (!v)
            goto error;
        if (tag == WIRE_LIST) {
            int rc = PyList_Append(out, v);
            Py_DECREF(v);
            if (rc < 0)
                goto error;
        } else if (tag == WIRE_TUPLE) {
            PyTuple_SET_ITEM(out, (Py_ssize_t)i, v);
        } else if (tag == WIRE_DICT) {
            PyObject *val = rebuild_at(r, rd, depth + 1);
            int rc = val ? PyDict_SetItem(out, v, val) : -1;
            Py_DECREF(v);
            Py_XDECREF(val);
            if (rc < 0) {
                if (val)
                    damage(r->st, "a dict key on the tape cannot be used");
                goto error;
            }
        } else {
            int rc = PySet_Add(out, v);
            Py_DECREF(v);
            if (rc < 0) {
                damage(r->st, "a set member on the tape cannot be used");
                goto error;
            }
        }
    }
    if (tag == WIRE_FROZENSET) {
        PyObject *fs = PyFrozenSet_New(out);
        Py_DECREF(out);
        return fs;
    }
    return out;
error:
    Py_DECREF(out);
    return NULL;
}

/* The one value of `n` bytes at `p` (a blob, inline or stored). */
static PyObject *rebuild_inner(ct_rebuild *r, const uint8_t *p, size_t n, int depth)
{
    wreader inner;
    wreader_init(&inner, p, n);
    return rebuild_whole(r, &inner, depth + 1);
}

/* A BLOB: the value stored in the tape's blob table under its hash. */
static PyObject *rebuild_blob(ct_rebuild *r, const wire_tok *t, int depth)
{
    if (!r->blob_loader && !r->blob_owner)
        return tape_error(
            r->st, "this value is stored in the tape's blob table; open the tape to read it");
    PyObject *data = r->blob_loader ? PyObject_CallFunction(r->blob_loader, "y#", t->s,
                                                            (Py_ssize_t)WIRE_HASH_BYTES)
                                    : PyObject_CallMethod(r->blob_owner, "load_blob", "y#", t->s,
                                                          (Py_ssize_t)WIRE_HASH_BYTES);
    if (!data)
        return NULL;
    char *bp;
    Py_ssize_t bn;
    PyObject *v = PyBytes_AsStringAndSize(data, &bp, &bn) < 0
                      ? NULL
                      : rebuild_inner(r, (const uint8_t *)bp, (size_t)bn, depth);
    Py_DECREF(data);
    return v;
}

/* A CODEC value: decoded by its registered decoder (numpy's own). */
static PyObject *rebuild_codec(ct_rebuild *r, const wire_tok *t)
{
    PyObject *name = text(r->st, t->s, t->n);
    if (!name)
        return NULL;
    PyObject *v = load_codec(r, name, t->s2, t->n2);
    Py_DECREF(name);
    return v;
}

/* An EXCEPTION: its frames follow at `rd`. */
static PyObject *rebuild_exception(ct_rebuild *r, wreader *rd, int depth, const wire_tok *t)
{
    ct_state *st = r->st;
    PyObject *frames = rebuild_at(r, rd, depth + 1);
    if (!frames)
        return NULL;
    if (!frames_well_formed(frames)) {
        Py_DECREF(frames);
        return tape_error(st, "malformed exception frames");
    }
    PyObject *type = text(st, t->s, t->n), *message = type ? text(st, t->s2, t->n2) : NULL;
    PyObject *args = message ? PyTuple_Pack(3, type, message, frames) : NULL;
    Py_XDECREF(type);
    Py_XDECREF(message);
    Py_DECREF(frames);
    return marker(st, "ExceptionInfo", args);
}

/* A value without children: scalars, text, pickles, blobs, codecs and
 * the markers of values not recorded. */
static PyObject *rebuild_atom(ct_rebuild *r, const wire_tok *t, int depth)
{
    ct_state *st = r->st;
    switch (t->tag) {
    case WIRE_NONE:
        Py_RETURN_NONE;
    case WIRE_TRUE:
        Py_RETURN_TRUE;
    case WIRE_FALSE:
        Py_RETURN_FALSE;
    case WIRE_INT:
        return PyLong_FromLongLong(unzigzag(t->u));
    case WIRE_BIGINT:
#if PY_VERSION_HEX >= 0x030D0000
        return PyLong_FromNativeBytes(t->s, t->n, Py_ASNATIVEBYTES_LITTLE_ENDIAN);
#else
        return _PyLong_FromByteArray(t->s, t->n, 1, 1);
#endif
    case WIRE_FLOAT:
        return PyFloat_FromDouble(t->d);
    case WIRE_STR:
        return text(st, t->s, t->n);
    case WIRE_BYTES:
        return PyBytes_FromStringAndSize((const char *)t->s, (Py_ssize_t)t->n);
    case WIRE_PICKLE: {
        PyObject *v = ct_unpickle(r, t->s, t->n);
        return v ? v : damage(st, "a pickled value on the tape cannot be loaded");
    }
    case WIRE_BLOB_INLINE:
        return rebuild_inner(r, t->s, t->n, depth);
    case WIRE_BLOB:
        return rebuild_blob(r, t, depth);
    case WIRE_CODEC:
        return rebuild_codec(r, t);
    case WIRE_REDACTED:
        return marker(st, "Redacted", PyTuple_New(0));
    case WIRE_TRUNCATED:
        return marker(st, "Truncated",
                      pair(text(st, t->s, t->n), PyLong_FromUnsignedLongLong(t->u)));
    case WIRE_UNENCODABLE:
        return marker(st, "Unencodable", pair(text(st, t->s, t->n), text(st, t->s2, t->n2)));
    default:
        return tape_error(st, "unknown value tag on the tape (written by a newer calltape?)");
    }
}

/* The TapeError for the value at `p` that does not tokenize. */
static PyObject *malformed(ct_state *st, const uint8_t *p, const uint8_t *end)
{
    static const char *const what[] = {
        [WIRE_INT] = "malformed int",
        [WIRE_BIGINT] = "malformed int",
        [WIRE_FLOAT] = "malformed float",
        [WIRE_CODEC] = "malformed codec value",
        [WIRE_BLOB] = "malformed blob reference",
        [WIRE_TRUNCATED] = "malformed truncated marker",
        [WIRE_UNENCODABLE] = "malformed unencodable marker",
        [WIRE_EXCEPTION] = "malformed exception",
        [WIRE_OBJECT] = "malformed object on the tape",
        [WIRE_GLOBAL] = "malformed global on the tape",
        [WIRE_REF] = "a value on the tape refers to one that does not exist",
    };
    uint8_t tag = p < end ? *p : WIRE_NONE;
    if (tag > WIRE_REF || (tag > WIRE_FROZENSET && tag < WIRE_PICKLE))
        return tape_error(st, "unknown value tag on the tape (written by a newer calltape?)");
    const char *msg = tag < sizeof what / sizeof what[0] ? what[tag] : NULL;
    return tape_error(st, msg ? msg : "malformed value on the tape");
}

static PyObject *rebuild_at(ct_rebuild *r, wreader *rd, int depth)
{
    wire_tok t;
    if (depth > WIRE_MAX_DEPTH)
        return tape_error(r->st, "value nested too deeply on the tape");
    const uint8_t *q = wire_next(rd->p, rd->end, &t);
    if (!q)
        return malformed(r->st, rd->p, rd->end);
    rd->p = q;
    switch (t.tag) {
    case WIRE_LIST:
    case WIRE_TUPLE:
    case WIRE_DICT:
    case WIRE_SET:
    case WIRE_FROZENSET:
        return rebuild_items(r, rd, depth, &t);
    case WIRE_EXCEPTION:
        return rebuild_exception(r, rd, depth, &t);
    case WIRE_DEFAULT:
        return rebuild_at(r, rd, depth + 1);
    case WIRE_OBJECT:
        return ct_rebuild_object(r, rd, depth, &t);
    case WIRE_GLOBAL:
        return ct_rebuild_global(r, &t);
    case WIRE_REF:
        return ct_rebuild_ref(r, &t);
    default:
        return rebuild_atom(r, &t, depth);
    }
}

PyObject *ct_rebuild_nested(ct_rebuild *r, wreader *rd, int depth)
{
    return rebuild_at(r, rd, depth);
}

PyObject *ct_rebuild_value(ct_rebuild *r, const uint8_t **p, const uint8_t *end)
{
    wreader rd;
    wreader_init(&rd, *p, (size_t)(end - *p));
    PyObject *own = NULL;
    if (!r->memo && !(r->memo = own = PyList_New(0)))
        return NULL;
    PyObject *v = rebuild_at(r, &rd, 0);
    if (own) {
        r->memo = NULL;
        Py_DECREF(own);
    }
    *p = rd.p;
    return v;
}

/* The text of the argv item at *p (advanced past it): a STR's own text,
 * any other value's preview.  New reference, or NULL (*p set to NULL when
 * the item is malformed). */
static PyObject *argv_item(ct_state *st, const uint8_t **p, const uint8_t *end)
{
    wire_tok t;
    const uint8_t *next = wire_next(*p, end, &t);
    if (next && t.tag == WIRE_STR) {
        *p = next;
        return text(st, t.s, t.n);
    }
    uint8_t store[256];
    wbuf pv;
    wbuf_init(&pv, store, sizeof store);
    *p = wire_preview(*p, end, &pv, CT_PREVIEW_LIMIT);
    PyObject *s = !*p ? NULL : pv.failed ? PyErr_NoMemory() : text(st, pv.data, pv.len);
    wbuf_free(&pv);
    return s;
}

PyObject *ct_rebuild_texts(ct_state *st, const uint8_t *p, size_t n)
{
    PyObject *out = PyList_New(0);
    if (!out || !p || !n)
        return out;
    const uint8_t *end = p + n;
    wire_tok list;
    p = wire_next(p, end, &list);
    uint64_t count = p && list.tag == WIRE_LIST ? list.u : 0;
    for (uint64_t i = 0; i < count && p; i++) {
        PyObject *s = argv_item(st, &p, end);
        if (!s && p) {
            Py_DECREF(out);
            return NULL;
        }
        if (s && PyList_Append(out, s) < 0) {
            Py_DECREF(s);
            Py_DECREF(out);
            return NULL;
        }
        Py_XDECREF(s);
    }
    if (!p) {
        Py_DECREF(out);
        return tape_error(st, "malformed argv in a session row");
    }
    return out;
}
