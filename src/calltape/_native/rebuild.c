/*
 * rebuild.c - tape values back to Python objects, safely.
 *
 * Pickled values are loaded by the restricted unpickler of allow.c, which
 * admits only the globals the reader allowed (by full name, or defined in an
 * allowed module); trust=True uses pickle.loads.
 * Markers (redacted, truncated, unencodable) rebuild to marker objects,
 * never to None.
 */
#include "binding.h"

static PyObject *tape_error(ct_state *st, const char *msg)
{
    PyObject *cls = ct_marker_type(st, "TapeError");
    PyErr_SetString(cls ? cls : PyExc_ValueError, msg);
    return NULL;
}

static PyObject *marker(ct_state *st, const char *name, PyObject *args)
{
    PyObject *cls = ct_marker_type(st, name);
    if (!cls) {
        Py_XDECREF(args);
        return tape_error(st, "calltape markers are not bound");
    }
    PyObject *r = args ? PyObject_Call(cls, args, NULL) : PyObject_CallNoArgs(cls);
    Py_XDECREF(args);
    return r;
}

static PyObject *load_codec(ct_rebuild *r, PyObject *name, const uint8_t *p, size_t n)
{
    ct_state *st = r->st;
    PyObject *data = PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)n);
    if (!data)
        return NULL;
    PyObject *v = NULL;
    if (PyUnicode_CompareWithASCIIString(name, "numpy.ndarray") == 0) {
        if (!st->np_load) {
            PyObject *np = PyImport_ImportModule("numpy");
            st->np_load = np ? PyObject_GetAttrString(np, "load") : NULL;
            Py_XDECREF(np);
        }
        if (!st->bytes_io) {
            PyObject *io = PyImport_ImportModule("io");
            st->bytes_io = io ? PyObject_GetAttrString(io, "BytesIO") : NULL;
            Py_XDECREF(io);
        }
        PyObject *f = st->np_load && st->bytes_io ? PyObject_CallOneArg(st->bytes_io, data) : NULL;
        if (f) {
            PyObject *kw = Py_BuildValue("{s:O}", "allow_pickle", Py_False);
            PyObject *a = PyTuple_Pack(1, f);
            v = kw && a ? PyObject_Call(st->np_load, a, kw) : NULL;
            Py_XDECREF(kw);
            Py_XDECREF(a);
            Py_DECREF(f);
        }
    } else {
        PyObject *dec = PyDict_GetItemWithError(st->codec_decoders, name);
        if (dec)
            v = PyObject_CallOneArg(dec, data);
        else if (!PyErr_Occurred())
            v = marker(
                st, "Unencodable",
                Py_BuildValue("(OO)", name,
                              PyUnicode_FromFormat("no codec named %R is registered", name)));
    }
    Py_DECREF(data);
    return v;
}

static PyObject *text(const uint8_t *p, uint64_t n)
{
    return PyUnicode_DecodeUTF8((const char *)p, (Py_ssize_t)n, "surrogatepass");
}

static PyObject *rebuild_at(ct_rebuild *r, wreader *rd, int depth);

static PyObject *rebuild_items(ct_rebuild *r, wreader *rd, int depth, uint8_t tag)
{
    uint64_t n = wreader_varint(rd);
    if (rd->bad || n > (uint64_t)(rd->end - rd->p))
        return tape_error(r->st, "malformed value on the tape");
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
            if (rc < 0)
                goto error;
        } else {
            int rc = PySet_Add(out, v);
            Py_DECREF(v);
            if (rc < 0)
                goto error;
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

static PyObject *rebuild_at(ct_rebuild *r, wreader *rd, int depth)
{
    ct_state *st = r->st;
    if (depth > WIRE_MAX_DEPTH)
        return tape_error(st, "value nested too deeply on the tape");
    uint8_t tag = wreader_byte(rd);
    if (rd->bad)
        return tape_error(st, "malformed value on the tape");
    switch (tag) {
    case WIRE_NONE:
        Py_RETURN_NONE;
    case WIRE_TRUE:
        Py_RETURN_TRUE;
    case WIRE_FALSE:
        Py_RETURN_FALSE;
    case WIRE_INT: {
        int64_t v = unzigzag(wreader_varint(rd));
        return rd->bad ? tape_error(st, "malformed int") : PyLong_FromLongLong(v);
    }
    case WIRE_BIGINT: {
        uint64_t n = wreader_varint(rd);
        const uint8_t *p = wreader_take(rd, n);
        if (!p)
            return tape_error(st, "malformed int");
#if PY_VERSION_HEX >= 0x030D0000
        return PyLong_FromNativeBytes(p, (size_t)n, Py_ASNATIVEBYTES_LITTLE_ENDIAN);
#else
        return _PyLong_FromByteArray(p, (size_t)n, 1, 1);
#endif
    }
    case WIRE_FLOAT: {
        const uint8_t *p = wreader_take(rd, 8);
        if (!p)
            return tape_error(st, "malformed float");
        double d;
        memcpy(&d, p, 8);
        return PyFloat_FromDouble(d);
    }
    case WIRE_STR:
    case WIRE_BYTES:
    case WIRE_PICKLE:
    case WIRE_BLOB_INLINE: {
        uint64_t n = wreader_varint(rd);
        const uint8_t *p = wreader_take(rd, n);
        if (!p && n)
            return tape_error(st, "malformed value on the tape");
        if (tag == WIRE_STR)
            return text(p, n);
        if (tag == WIRE_BYTES)
            return PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)n);
        if (tag == WIRE_PICKLE)
            return ct_unpickle(r, p, (size_t)n);
        wreader inner;
        wreader_init(&inner, p, (size_t)n);
        return rebuild_at(r, &inner, depth + 1);
    }
    case WIRE_LIST:
    case WIRE_TUPLE:
    case WIRE_DICT:
    case WIRE_SET:
    case WIRE_FROZENSET:
        return rebuild_items(r, rd, depth, tag);
    case WIRE_CODEC: {
        uint64_t n = wreader_varint(rd);
        const uint8_t *name = wreader_take(rd, n);
        uint64_t m = wreader_varint(rd);
        const uint8_t *p = wreader_take(rd, m);
        if (rd->bad)
            return tape_error(st, "malformed codec value");
        PyObject *pyname = text(name, n);
        if (!pyname)
            return NULL;
        PyObject *v = load_codec(r, pyname, p, (size_t)m);
        Py_DECREF(pyname);
        return v;
    }
    case WIRE_BLOB: {
        const uint8_t *h = wreader_take(rd, WIRE_HASH_BYTES);
        wreader_varint(rd);
        if (rd->bad)
            return tape_error(st, "malformed blob reference");
        if (!r->blob_loader)
            return tape_error(
                st, "this value is stored in the tape's blob table; open the tape to read it");
        PyObject *data =
            PyObject_CallFunction(r->blob_loader, "y#", h, (Py_ssize_t)WIRE_HASH_BYTES);
        if (!data)
            return NULL;
        char *bp;
        Py_ssize_t bn;
        if (PyBytes_AsStringAndSize(data, &bp, &bn) < 0) {
            Py_DECREF(data);
            return NULL;
        }
        wreader inner;
        wreader_init(&inner, bp, (size_t)bn);
        PyObject *v = rebuild_at(r, &inner, depth + 1);
        Py_DECREF(data);
        return v;
    }
    case WIRE_REDACTED:
        return marker(st, "Redacted", NULL);
    case WIRE_TRUNCATED: {
        uint64_t n = wreader_varint(rd);
        const uint8_t *name = wreader_take(rd, n);
        uint64_t size = wreader_varint(rd);
        if (rd->bad)
            return tape_error(st, "malformed truncated marker");
        return marker(st, "Truncated",
                      Py_BuildValue("(NK)", text(name, n), (unsigned long long)size));
    }
    case WIRE_UNENCODABLE: {
        uint64_t n = wreader_varint(rd);
        const uint8_t *name = wreader_take(rd, n);
        uint64_t m = wreader_varint(rd);
        const uint8_t *why = wreader_take(rd, m);
        if (rd->bad)
            return tape_error(st, "malformed unencodable marker");
        return marker(st, "Unencodable", Py_BuildValue("(NN)", text(name, n), text(why, m)));
    }
    case WIRE_EXCEPTION: {
        uint64_t n = wreader_varint(rd);
        const uint8_t *name = wreader_take(rd, n);
        uint64_t m = wreader_varint(rd);
        const uint8_t *msg = wreader_take(rd, m);
        if (rd->bad)
            return tape_error(st, "malformed exception");
        PyObject *frames = rebuild_at(r, rd, depth + 1);
        if (!frames)
            return NULL;
        return marker(st, "ExceptionInfo",
                      Py_BuildValue("(NNN)", text(name, n), text(msg, m), frames));
    }
    case WIRE_DEFAULT:
        return rebuild_at(r, rd, depth + 1);
    case WIRE_OBJECT:
        return ct_rebuild_object(r, rd, depth);
    case WIRE_GLOBAL:
        return ct_rebuild_global(r, rd);
    case WIRE_REF:
        return ct_rebuild_ref(r, rd);
    default:
        return tape_error(st, "unknown value tag on the tape (written by a newer calltape?)");
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

PyObject *ct_rebuild_texts(ct_state *st, const uint8_t *p, size_t n)
{
    PyObject *out = PyList_New(0);
    if (!out || !p || !n)
        return out;
    const uint8_t *end = p + n;
    wreader rd;
    wreader_init(&rd, p, n);
    uint64_t count = wreader_byte(&rd) == WIRE_LIST ? wreader_varint(&rd) : 0;
    for (uint64_t i = 0; i < count && !rd.bad; i++) {
        const uint8_t *item = rd.p;
        PyObject *s = NULL;
        if (!item)
            break;
        if (item < end && *item == WIRE_STR) {
            rd.p++;
            uint64_t len = wreader_varint(&rd);
            const uint8_t *txt = wreader_take(&rd, len);
            s = txt || !len ? text(txt, len) : NULL;
        } else {
            uint8_t store[256];
            wbuf pv;
            wbuf_init(&pv, store, sizeof store);
            const uint8_t *next = wire_preview(item, end, &pv, CT_PREVIEW_LIMIT);
            if (next)
                rd.p = next;
            else
                rd.bad = 1;
            s = pv.failed ? NULL : text(pv.data, pv.len);
            wbuf_free(&pv);
        }
        if (!s || PyList_Append(out, s) < 0) {
            Py_XDECREF(s);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(s);
    }
    if (rd.bad) {
        Py_DECREF(out);
        return tape_error(st, "malformed argv in a session row");
    }
    return out;
}
