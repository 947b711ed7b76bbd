/*
 * rebuild.c - tape values back to Python objects, safely.
 *
 * Pickled values are loaded by a restricted unpickler (a subclass of
 * pickle.Unpickler whose find_class is implemented here) that allows plain
 * data types of builtins and of a few standard-library modules, plus the
 * modules the reader allowed; any other global is refused with an error
 * naming it and saying how to allow it.  trust=True uses pickle.loads.
 * Markers (redacted, truncated, unencodable) rebuild to marker objects,
 * never to None.
 */
#include "binding.h"

static const char *const safe_modules[] = {
    "datetime",  "decimal", "fractions", "collections", "uuid", "pathlib", "zoneinfo",
    "ipaddress", "copyreg", "_codecs",   "array",       "re",   NULL};

static const char *const safe_builtins[] = {
    "int", "float",     "complex", "str",   "bytes", "bytearray", "list",     "tuple",    "dict",
    "set", "frozenset", "bool",    "slice", "range", "object",    "NoneType", "Ellipsis", NULL};

static int module_allowed(PyObject *allow, const char *mod)
{
    for (int i = 0; safe_modules[i]; i++)
        if (strcmp(mod, safe_modules[i]) == 0)
            return 1;
    if (!allow)
        return 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(allow); i++) {
        const char *a = PyUnicode_AsUTF8(PyTuple_GET_ITEM(allow, i));
        size_t n = a ? strlen(a) : 0;
        if (a && strncmp(mod, a, n) == 0 && (mod[n] == 0 || mod[n] == '.'))
            return 1;
    }
    return 0;
}

static PyObject *Restricted_find_class(PyObject *self, PyObject *args)
{
    const char *mod, *name;
    if (!PyArg_ParseTuple(args, "ss:find_class", &mod, &name))
        return NULL;
    ct_state *st = PyType_GetModuleState(Py_TYPE(self));
    PyObject *allow = st->current_allow; /* borrowed, set around load() */
    int ok = 0;
    if (strcmp(mod, "builtins") == 0) {
        for (int i = 0; safe_builtins[i] && !ok; i++)
            ok = strcmp(name, safe_builtins[i]) == 0;
        if (!ok) {
            PyObject *b = PyImport_ImportModule("builtins");
            PyObject *obj = b ? PyObject_GetAttrString(b, name) : NULL;
            ok = obj && PyType_Check(obj) &&
                 PyType_IsSubtype((PyTypeObject *)obj, (PyTypeObject *)PyExc_BaseException);
            Py_XDECREF(obj);
            Py_XDECREF(b);
            PyErr_Clear();
        }
    } else {
        ok = module_allowed(allow, mod);
    }
    if (!ok) {
        PyObject *cls = ct_marker_type(st, "RefusedGlobal");
        char top[128];
        snprintf(top, sizeof top, "%s", mod);
        char *dot = strchr(top, '.');
        if (dot)
            *dot = 0;
        PyErr_Format(cls ? cls : PyExc_RuntimeError,
                     "refused to load the global %s.%s from the tape: pass allow=['%s'] (or"
                     " trust=True for a tape you made yourself) to rebuild it",
                     mod, name, top);
        return NULL;
    }
    PyObject *super = PyObject_GetAttrString(st->pickle_Unpickler, "find_class");
    if (!super)
        return NULL;
    PyObject *r = PyObject_CallFunction(super, "Oss", self, mod, name);
    Py_DECREF(super);
    return r;
}

static PyMethodDef Restricted_methods[] = {
    {"find_class", Restricted_find_class, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot Restricted_slots[] = {
    {Py_tp_methods, Restricted_methods},
    {0, NULL},
};

static PyType_Spec Restricted_spec = {
    .name = "calltape.RestrictedUnpickler",
    .basicsize = 0,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = Restricted_slots,
};

PyObject *ct_restricted_unpickler_spec_type(PyObject *module, PyObject *base)
{
    return PyType_FromModuleAndSpec(module, &Restricted_spec, base);
}

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
           !PyErr_ExceptionMatches(PyExc_MemoryError);
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

/* ct_damage with a prefix from a C string. */
static PyObject *damage(ct_state *st, const char *prefix)
{
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

static PyObject *load_pickle(ct_rebuild *r, const uint8_t *p, size_t n)
{
    ct_state *st = r->st;
    PyObject *data = PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)n);
    if (!data)
        return NULL;
    if (r->trust) {
        PyObject *v = PyObject_CallOneArg(st->pickle_loads, data);
        Py_DECREF(data);
        return v;
    }
    if (!st->bytes_io) {
        PyObject *io = PyImport_ImportModule("io");
        st->bytes_io = io ? PyObject_GetAttrString(io, "BytesIO") : NULL;
        Py_XDECREF(io);
        if (!st->bytes_io) {
            Py_DECREF(data);
            return NULL;
        }
    }
    PyObject *f = PyObject_CallOneArg(st->bytes_io, data);
    Py_DECREF(data);
    if (!f)
        return NULL;
    PyObject *u = PyObject_CallOneArg((PyObject *)st->RestrictedUnpickler_type, f);
    Py_DECREF(f);
    if (!u)
        return NULL;
    PyObject *prev = st->current_allow;
    st->current_allow = r->allow;
    PyObject *v = PyObject_CallMethod(u, "load", NULL);
    st->current_allow = prev;
    Py_DECREF(u);
    return v;
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

/* A list, tuple, dict, set or frozenset of `tag` at `rd`; TapeError for
 * malformed bytes and for keys or members that cannot be hashed. */
static PyObject *rebuild_items(ct_rebuild *r, wreader *rd, int depth, uint8_t tag)
{
    uint64_t n = wreader_varint(rd);
    if (rd->bad || n > (uint64_t)(rd->end - rd->p))
        return tape_error(r->st, "malformed value on the tape");
    PyObject *out = tag == WIRE_LIST    ? PyList_New((Py_ssize_t)n)
                    : tag == WIRE_TUPLE ? PyTuple_New((Py_ssize_t)n)
                    : tag == WIRE_DICT  ? PyDict_New()
                                        : PySet_New(NULL);
    if (!out)
        return NULL;
    for (uint64_t i = 0; i < n; i++) {
        PyObject *v = rebuild_at(r, rd, depth + 1);
        if (!v)
            goto error;
        if (tag == WIRE_LIST) {
            PyList_SET_ITEM(out, (Py_ssize_t)i, v);
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
            return text(st, p, n);
        if (tag == WIRE_BYTES)
            return PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)n);
        if (tag == WIRE_PICKLE) {
            PyObject *v = load_pickle(r, p, (size_t)n);
            return v ? v : damage(st, "a pickled value on the tape cannot be loaded");
        }
        wreader inner;
        wreader_init(&inner, p, (size_t)n);
        return rebuild_whole(r, &inner, depth + 1);
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
        PyObject *pyname = text(st, name, n);
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
        PyObject *v = rebuild_whole(r, &inner, depth + 1);
        Py_DECREF(data);
        return v;
    }
    case WIRE_REDACTED:
        return marker(st, "Redacted", PyTuple_New(0));
    case WIRE_TRUNCATED: {
        uint64_t n = wreader_varint(rd);
        const uint8_t *name = wreader_take(rd, n);
        uint64_t size = wreader_varint(rd);
        if (rd->bad)
            return tape_error(st, "malformed truncated marker");
        return marker(st, "Truncated", pair(text(st, name, n), PyLong_FromUnsignedLongLong(size)));
    }
    case WIRE_UNENCODABLE: {
        uint64_t n = wreader_varint(rd);
        const uint8_t *name = wreader_take(rd, n);
        uint64_t m = wreader_varint(rd);
        const uint8_t *why = wreader_take(rd, m);
        if (rd->bad)
            return tape_error(st, "malformed unencodable marker");
        return marker(st, "Unencodable", pair(text(st, name, n), text(st, why, m)));
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
        if (!frames_well_formed(frames)) {
            Py_DECREF(frames);
            return tape_error(st, "malformed exception frames");
        }
        PyObject *type = text(st, name, n), *message = type ? text(st, msg, m) : NULL;
        PyObject *args = message ? PyTuple_Pack(3, type, message, frames) : NULL;
        Py_XDECREF(type);
        Py_XDECREF(message);
        Py_DECREF(frames);
        return marker(st, "ExceptionInfo", args);
    }
    case WIRE_DEFAULT:
        return rebuild_at(r, rd, depth + 1);
    default:
        return tape_error(st, "unknown value tag on the tape (written by a newer calltape?)");
    }
}

PyObject *ct_rebuild_value(ct_rebuild *r, const uint8_t **p, const uint8_t *end)
{
    wreader rd;
    wreader_init(&rd, *p, (size_t)(end - *p));
    PyObject *v = rebuild_at(r, &rd, 0);
    *p = rd.p;
    return v;
}
