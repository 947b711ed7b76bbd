/*
 * objects.c - values that are not built-in data, written without running
 * the program's code, the way typeinfo.c decided once for their type.
 *
 * The ways, in the order typeinfo.c tries them, the first that applies:
 *   CODEC   a codec registered for the type or a base (register_codec);
 *   PICKLE  a type the user opted into pickling (configure(pickle=[...]));
 *   NDARRAY numpy arrays, as .npy bytes from the buffer protocol;
 *   ENUM    an enum member: its class and value;
 *   REDUCE  a data type of the standard library (datetime, Decimal, deque,
 *           OrderedDict, ...; numpy scalars and dtypes): the type's own C
 *           reduce, whose parts are then captured like any value;
 *   OBJECT  an instance of a class defined in Python: its class by name and
 *           its __dict__ and __slots__ read directly, and the contents of a
 *           built-in base (list, dict, tuple, str, int, an exception's args);
 *   REFUSE  anything else (a C object whose state only its code can read):
 *           UNENCODABLE, with the way to opt in.
 * Classes, functions, builtins and modules are GLOBALs: their name.  An
 * OBJECT one of whose attributes is REFUSEd (opaque state: a generator, a
 * lock, a file) cannot be rebuilt, so its attributes are written only
 * CT_OPAQUE_DEPTH levels below it, to be read (a linked list beside a lock
 * costs two links, not the depth budget).
 *
 * Invariants: deciding and capturing call no method of the value or of its
 * class (no __reduce__, __getstate__, __iter__, __getattr__, __eq__ or
 * __hash__ defined in Python), so recording neither changes the program nor
 * emits its warnings; only codecs and opted-in pickling run user code.  A
 * type entry is read only before anything nested is written (deciding a new
 * type may grow the cache and move the entries).  The
 * per-type decisions hold types weakly: a class that is no longer used is
 * freed, and its entry is recognised as stale by its weak reference.
 */
#include "capture.h"

#include <structmember.h>

/* ---- writing objects ------------------------------------------------------- */

void ct_put_unencodable(ct_state *st, wbuf *b, const char *type, const char *why)
{
    wbuf_byte(b, WIRE_UNENCODABLE);
    wire_sized(b, type, strlen(type));
    wire_sized(b, why, strlen(why));
    st->sink.counters[CT_UNENCODABLE]++;
    st->sink.counters_dirty = 1;
}

/* 1 when function `v` is what `module`.`qualname` names today (as pickle
 * asks of a function it pickles by name), 0 when not; `q` is the
 * qualname's UTF-8.  Read from the
 * module's and the classes' own dicts (sys.modules, no import, no
 * __getattr__ run); a staticmethod or classmethod stands for its function. */
static int findable(PyObject *v, PyObject *module, PyObject *qualname, const char *q)
{
    PyObject *at = PyImport_GetModule(module); /* new, or NULL: not imported */
    const char *p = q;
    while (at && *p) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        PyObject *d = PyModule_Check(at) ? PyModule_GetDict(at)
                      : PyType_Check(at) ? ((PyTypeObject *)at)->tp_dict
                                         : NULL; /* borrowed */
        /* a plain name (most functions) is the qualname itself */
        PyObject *key =
            p == q && !dot ? Py_NewRef(qualname) : PyUnicode_FromStringAndSize(p, (Py_ssize_t)n);
        PyObject *next = d && key ? PyDict_GetItemWithError(d, key) : NULL; /* borrowed */
        Py_XDECREF(key);
        Py_XINCREF(next);
        Py_SETREF(at, next);
        if (at && (Py_IS_TYPE(at, &PyStaticMethod_Type) || Py_IS_TYPE(at, &PyClassMethod_Type)))
            Py_SETREF(at, PyObject_GetAttrString(at, "__func__"));
        p = dot ? dot + 1 : p + n;
    }
    PyErr_Clear();
    int same = at == v;
    Py_XDECREF(at);
    return same;
}

/* A GLOBAL naming `module`.`qualname` (str objects, or NULL: unknown). */
static int put_global(ct_capture *c, wbuf *b, PyObject *v, PyObject *module, PyObject *qualname)
{
    Py_ssize_t mn = 0, qn = 0;
    const char *m = module && PyUnicode_Check(module) ? PyUnicode_AsUTF8AndSize(module, &mn) : NULL;
    const char *q =
        qualname && PyUnicode_Check(qualname) ? PyUnicode_AsUTF8AndSize(qualname, &qn) : NULL;
    if (!m || (!q && qualname)) {
        PyErr_Clear();
        ct_put_unencodable(c->st, b, Py_TYPE(v)->tp_name, "its module or name is unknown");
        return 0;
    }
    if (q && strchr(q, '<')) {
        char why[300];
        snprintf(why, sizeof why, "%.200s is nested or a lambda: it has no importable name", q);
        ct_put_unencodable(c->st, b, Py_TYPE(v)->tp_name, why);
        return 0;
    }
    wbuf_byte(b, WIRE_GLOBAL);
    wire_sized(b, m, (size_t)mn);
    wire_sized(b, q ? q : "", (size_t)qn);
    return 0;
}

int ct_capture_global(ct_capture *c, wbuf *b, PyObject *v)
{
    if (PyType_Check(v)) {
        ct_typeinfo *e = ct_typeinfo_for(c, (PyTypeObject *)v);
        if (!e)
            return -3;
        if (memchr(e->header, '<', e->header_len)) {
            ct_put_unencodable(c->st, b, "type", "a class defined inside a function");
            return 0;
        }
        wbuf_byte(b, WIRE_GLOBAL);
        wbuf_put(b, e->header, e->header_len);
        return 0;
    }
    if (PyFunction_Check(v)) {
        PyFunctionObject *f = (PyFunctionObject *)v;
        const char *q = f->func_qualname && PyUnicode_Check(f->func_qualname)
                            ? PyUnicode_AsUTF8(f->func_qualname)
                            : NULL;
        if (q && !strchr(q, '<') && f->func_module && PyUnicode_Check(f->func_module) &&
            !findable(v, f->func_module, f->func_qualname, q)) {
            char why[400];
            const char *m = PyUnicode_AsUTF8(f->func_module);
            snprintf(why, sizeof why, "it is not found as %.150s.%.200s", m ? m : "?", q);
            PyErr_Clear();
            ct_put_unencodable(c->st, b, "function", why);
            return 0;
        }
        PyErr_Clear();
        return put_global(c, b, v, f->func_module, f->func_qualname);
    }
    if (PyCFunction_Check(v)) {
        PyObject *self = PyCFunction_GET_SELF(v);
        PyObject *mod = ((PyCFunctionObject *)v)->m_module;
        if (self && !PyModule_Check(self)) {
            ct_put_unencodable(c->st, b, "builtin_function_or_method", "a method of an object");
            return 0;
        }
        PyObject *name = PyUnicode_FromString(((PyCFunctionObject *)v)->m_ml->ml_name);
        if (!name)
            return -3;
        PyObject *modname = !mod                  ? PyUnicode_FromString("builtins")
                            : PyModule_Check(mod) ? PyModule_GetNameObject(mod)
                                                  : Py_NewRef(mod);
        PyErr_Clear();
        int rc = put_global(c, b, v, modname, name);
        Py_XDECREF(modname);
        Py_DECREF(name);
        return rc;
    }
    PyObject *name = PyModule_GetNameObject(v);
    if (!name)
        return -3;
    int rc = put_global(c, b, v, name, NULL);
    Py_DECREF(name);
    return rc;
}

/* The number of __slots__ of `e` set in `v` (a direct read of each). */
static uint64_t slots_set(PyObject *v, const ct_typeinfo *e)
{
    uint64_t n = 0;
    for (size_t i = 0; i < e->nslots; i++)
        n += *(PyObject **)((char *)v + e->slots[i]->offset) != NULL;
    return n;
}

/* One attribute pair: the name, then the value (REDACTED when the name is
 * a secret). */
static int put_attribute(ct_capture *c, wbuf *b, PyObject *name, PyObject *value, int depth)
{
    int rc = ct_capture_small(b, name) ? 0 : ct_capture_nested(c, b, name, depth + 1);
    if (rc < 0)
        return rc;
    if (c->redact && ct_should_redact(c->st, name, c->redact)) {
        ct_put_redacted(c->st, b);
        return 0;
    }
    return ct_capture_nested(c, b, value, depth + 1);
}

/* The __slots__ of an entry, copied out of it before anything nested is
 * written: deciding a new type may grow the type cache and move the entry
 * (the arrays it points to stay). */
typedef struct slot_view {
    struct PyMemberDef **slots;
    PyObject **names;
    size_t n;
} slot_view;

/* The attribute pairs of `v`: its __dict__ items (`dict`, or NULL), then
 * its set __slots__ (`sv`), read directly.  Writes exactly `ndict` and
 * `nslots` pairs, or returns -2 when the dict changed size meanwhile. */
static int put_attributes(ct_capture *c, wbuf *b, PyObject *v, const slot_view *e, int depth,
                          PyObject *dict, Py_ssize_t ndict, uint64_t nslots)
{
    Py_ssize_t pos = 0, seen = 0;
    PyObject *k, *val;
    while (dict && seen < ndict && PyDict_Next(dict, &pos, &k, &val)) {
        Py_INCREF(k);
        Py_INCREF(val);
        int rc = put_attribute(c, b, k, val, depth);
        Py_DECREF(k);
        Py_DECREF(val);
        if (rc < 0)
            return rc;
        seen++;
    }
    if (seen != ndict)
        return -2;
    uint64_t written = 0;
    for (size_t i = 0; i < e->n && written < nslots; i++) {
        PyObject *sv = *(PyObject **)((char *)v + e->slots[i]->offset);
        if (!sv)
            continue;
        Py_INCREF(sv);
        int rc = put_attribute(c, b, e->names[i], sv, depth);
        Py_DECREF(sv);
        if (rc < 0)
            return rc;
        written++;
    }
    return written == nslots ? 0 : -2;
}

/* The contents of an OBJECT of a built-in base `kind`, read from the base's
 * own storage (not through methods a subclass may override). */
static int put_contents(ct_capture *c, wbuf *b, PyObject *v, uint8_t kind, int depth)
{
    switch (kind) {
    case WIRE_KIND_LIST:
        return ct_capture_items(c, b, v, WIRE_LIST, depth);
    case WIRE_KIND_DICT:
        return ct_capture_items(c, b, v, WIRE_DICT, depth);
    case WIRE_KIND_SET:
        return ct_capture_items(c, b, v, WIRE_SET, depth);
    case WIRE_KIND_TUPLE:
        return ct_capture_items(c, b, v, WIRE_TUPLE, depth);
    case WIRE_KIND_FROZENSET:
        return ct_capture_items(c, b, v, WIRE_FROZENSET, depth);
    case WIRE_KIND_STR:
    case WIRE_KIND_BYTES:
    case WIRE_KIND_INT:
    case WIRE_KIND_FLOAT:
        return ct_capture_builtin(c, b, v, kind);
    case WIRE_KIND_EXCEPTION: {
        PyObject *args = ((PyBaseExceptionObject *)v)->args;
        if (!args || !PyTuple_Check(args))
            args = PyTuple_New(0);
        else
            Py_INCREF(args);
        if (!args)
            return -3;
        int rc = ct_capture_items(c, b, args, WIRE_TUPLE, depth);
        Py_DECREF(args);
        return rc;
    }
    default:
        return 0;
    }
}

/* An enum member (after the OBJECT head up to the kind): no slots, one
 * dict pair _name_ for previews when it has a name, contents its _value_. */
static int put_enum(ct_capture *c, wbuf *b, PyObject *v, int depth)
{
    PyObject *dict = PyObject_GenericGetDict(v, NULL);
    PyObject *value = dict ? PyDict_GetItemString(dict, "_value_") : NULL;
    PyObject *name = dict ? PyDict_GetItemString(dict, "_name_") : NULL;
    PyErr_Clear();
    int named = name && PyUnicode_Check(name);
    wbuf_varint(b, (uint64_t)named);
    wbuf_varint(b, 0);
    Py_XINCREF(value); /* nested values carry a temporary reference */
    /* its value is part of it, as a reduce's parts are */
    int cut = c->opaque_cut;
    if (cut > 0)
        c->opaque_cut = cut + 2 < ct_capture_depth(c) ? cut + 2 : 0;
    int rc = ct_capture_nested(c, b, value ? value : Py_None, depth + 1);
    c->opaque_cut = cut;
    Py_XDECREF(value);
    if (rc == 0 && named) {
        PyObject *key = PyUnicode_FromString("_name_");
        rc = key ? ct_capture_nested(c, b, key, depth + 1) : -3;
        if (rc == 0)
            rc = ct_capture_nested(c, b, name, depth + 1);
        Py_XDECREF(key);
    }
    Py_XDECREF(dict);
    return rc;
}

/* A standard-library data type by its own reduce: contents TUPLE(callable,
 * args, state, list items, dict items). */
static int put_reduce(ct_capture *c, wbuf *b, PyObject *v, int depth)
{
    /* a sized container (bytearray, deque, array, ...) over the budget stops
     * here, before its reduce copies it: every item takes a byte at least */
    if ((Py_TYPE(v)->tp_as_sequence || Py_TYPE(v)->tp_as_mapping) && !PyRange_Check(v)) {
        Py_ssize_t n = PyObject_Length(v);
        if (n < 0)
            PyErr_Clear();
        else if (n > c->limit - (Py_ssize_t)(b->len - c->top_start))
            return -4;
    }
    /* as pickle does: a reducer registered with copyreg (re.Pattern's) first */
    PyObject *copyreg = PyImport_ImportModule("copyreg");
    PyObject *table = copyreg ? PyObject_GetAttrString(copyreg, "dispatch_table") : NULL;
    PyObject *reducer = table && PyDict_Check(table)
                            ? PyDict_GetItemWithError(table, (PyObject *)Py_TYPE(v))
                            : NULL;
    PyObject *red = reducer            ? PyObject_CallOneArg(reducer, v)
                    : PyErr_Occurred() ? NULL
                                       : PyObject_CallMethod(v, "__reduce_ex__", "i", 4);
    Py_XDECREF(table);
    Py_XDECREF(copyreg);
    if (!red)
        return -3;
    if (!PyTuple_Check(red) || PyTuple_GET_SIZE(red) < 2) {
        Py_DECREF(red);
        PyErr_SetString(PyExc_TypeError, "its reduce is not a tuple");
        return -3;
    }
    wbuf_byte(b, WIRE_TUPLE);
    wbuf_varint(b, 5);
    /* beside opaque state, its parts count as one level, as a container's
     * items: dict items are two levels further down, (key, value) pairs */
    int cut = c->opaque_cut;
    if (cut > 0)
        c->opaque_cut = cut + 2 < ct_capture_depth(c) ? cut + 2 : 0;
    int rc = 0;
    for (Py_ssize_t i = 0; i < 5 && rc == 0; i++) {
        PyObject *part = i < PyTuple_GET_SIZE(red) ? PyTuple_GET_ITEM(red, i) : Py_None;
        if (i >= 3 && part != Py_None) { /* iterators of items: materialize */
            PyObject *items = PySequence_List(part);
            if (!items) {
                rc = -3;
                break;
            }
            rc = ct_capture_nested(c, b, items, depth + 1);
            Py_DECREF(items);
        } else {
            Py_INCREF(part); /* nested values carry a temporary reference */
            rc = ct_capture_nested(c, b, part, depth + 1);
            Py_DECREF(part);
        }
    }
    c->opaque_cut = cut;
    Py_DECREF(red);
    return rc;
}

/* The instance __dict__ of `v` (new reference), or NULL when it has none. */
static PyObject *instance_dict(PyObject *v)
{
    PyTypeObject *tp = Py_TYPE(v);
    if (tp->tp_dictoffset == 0 && !(tp->tp_flags & Py_TPFLAGS_MANAGED_DICT))
        return NULL;
    PyObject *dict = PyObject_GenericGetDict(v, NULL);
    if (!dict)
        PyErr_Clear();
    else if (!PyDict_Check(dict))
        Py_CLEAR(dict);
    return dict;
}

/* A module-level instance of its class (`e->singletons`) without state of
 * its own (a sentinel; one with attributes is recorded by its state) as a
 * GLOBAL: 1 when written, 0 when `v` is not one. */
static int put_singleton(wbuf *b, PyObject *v, const ct_typeinfo *e)
{
    if (slots_set(v, e))
        return 0;
    PyObject *dict = instance_dict(v);
    Py_ssize_t attrs = dict ? PyDict_GET_SIZE(dict) : 0;
    Py_XDECREF(dict);
    if (attrs)
        return 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(e->singletons); i++) {
        PyObject *name = PyTuple_GET_ITEM(e->singletons, i);
        PyObject *bound = PyDict_GetItemWithError(e->module_dict, name);
        if (bound != v)
            continue;
        wreader r;
        wreader_init(&r, e->header, e->header_len);
        uint64_t n = wreader_varint(&r);
        const uint8_t *mod = wreader_take(&r, n);
        if (!mod)
            return 0;
        Py_ssize_t nn;
        const char *s = PyUnicode_AsUTF8AndSize(name, &nn);
        if (!s)
            break;
        wbuf_byte(b, WIRE_GLOBAL);
        wire_sized(b, (const char *)mod, (size_t)n);
        wire_sized(b, s, (size_t)nn);
        return 1;
    }
    PyErr_Clear();
    return 0;
}

static int pickle_asked(const ct_capture *c, PyTypeObject *tp);

/* 1 when `x` would be written as the UNENCODABLE marker of a refused type
 * (a generator, a lock, a file: opaque C state), decided without writing
 * it.  Built-in data, classes and functions never are.  Never raises. */
static int is_opaque(ct_capture *c, PyObject *x)
{
    PyTypeObject *tp = Py_TYPE(x);
    if (x == Py_None || tp == &PyFloat_Type || tp == &PySet_Type || tp == &PyFrozenSet_Type ||
        PyType_HasFeature(tp, Py_TPFLAGS_LONG_SUBCLASS | Py_TPFLAGS_LIST_SUBCLASS |
                                  Py_TPFLAGS_TUPLE_SUBCLASS | Py_TPFLAGS_BYTES_SUBCLASS |
                                  Py_TPFLAGS_UNICODE_SUBCLASS | Py_TPFLAGS_DICT_SUBCLASS |
                                  Py_TPFLAGS_BASE_EXC_SUBCLASS | Py_TPFLAGS_TYPE_SUBCLASS) ||
        PyFunction_Check(x) || pickle_asked(c, tp))
        return 0;
    ct_typeinfo *e = ct_typeinfo_for(c, tp);
    if (!e)
        PyErr_Clear();
    return e && e->how == CT_BY_REFUSE;
}

/* 1 when one of the attributes of `v` (its `dict` items, its set slots)
 * is opaque: `v` can then not be rebuilt.  Never raises. */
static int holds_opaque(ct_capture *c, PyObject *v, const slot_view *sv, PyObject *dict)
{
    Py_ssize_t pos = 0;
    PyObject *k, *x;
    while (dict && PyDict_Next(dict, &pos, &k, &x))
        if (is_opaque(c, x))
            return 1;
    for (size_t i = 0; i < sv->n; i++) {
        x = *(PyObject **)((char *)v + sv->slots[i]->offset);
        if (x && is_opaque(c, x))
            return 1;
    }
    return 0;
}

/* An OBJECT of a class described by `e`. */
static int put_object(ct_capture *c, wbuf *b, PyObject *v, const ct_typeinfo *e, int depth)
{
    if (e->singletons && put_singleton(b, v, e))
        return 0;
    if (ct_capture_too_deep(c, b, v, depth))
        return 0;
    size_t index;
    int shared = ct_memo_shared(v, depth);
    if (shared && ct_memo_find(c, v, &index))
        return ct_put_ref(c, b, index);
    /* kinds whose contents are built before the object cannot be reached
     * again while those contents are written */
    int immutable = e->kind != WIRE_KIND_PLAIN && e->kind != WIRE_KIND_LIST &&
                    e->kind != WIRE_KIND_DICT && e->kind != WIRE_KIND_SET;
    if (ct_memo_add(c, shared ? v : NULL, immutable, &index) < 0)
        return -1;
    wbuf_byte(b, WIRE_OBJECT);
    wbuf_put(b, e->header, e->header_len);
    wbuf_byte(b, e->kind);
    int rc;
    if (e->kind == WIRE_KIND_ENUM || e->kind == WIRE_KIND_REDUCE) {
        if (e->kind == WIRE_KIND_REDUCE) {
            wbuf_varint(b, 0);
            wbuf_varint(b, 0);
        }
        rc = e->kind == WIRE_KIND_ENUM ? put_enum(c, b, v, depth) : put_reduce(c, b, v, depth);
        ct_memo_close(c, index);
        return rc;
    }
    slot_view sv = {e->slots, e->slot_names, e->nslots};
    PyObject *dict = instance_dict(v);
    Py_ssize_t ndict = dict ? PyDict_GET_SIZE(dict) : 0;
    uint64_t nslots = slots_set(v, e);
    wbuf_varint(b, (uint64_t)ndict);
    wbuf_varint(b, nslots);
    rc = put_contents(c, b, v, e->kind, depth);
    ct_memo_close(c, index);
    /* an object holding opaque state cannot be rebuilt: the rest of it is
     * kept to be read, CT_OPAQUE_DEPTH levels down, not walked to the end */
    int cut = c->opaque_cut, shallow = depth + 1 + CT_OPAQUE_DEPTH;
    if (rc == 0 && (cut == 0 || shallow < cut) && shallow < ct_capture_depth(c) &&
        holds_opaque(c, v, &sv, dict))
        c->opaque_cut = shallow;
    if (rc == 0)
        rc = put_attributes(c, b, v, &sv, depth, dict, ndict, nslots);
    c->opaque_cut = cut;
    Py_XDECREF(dict);
    return rc;
}

/* The built-in numpy codec: 0 done, 1 not applicable. */
static int put_ndarray(wbuf *b, PyObject *v);

/* A strided numpy array, through a C-contiguous copy made by
 * numpy.ndarray.copy itself (not a subclass's override).  0, or 1. */
static int put_ndarray_copy(wbuf *b, PyObject *v)
{
    PyObject *mro = Py_TYPE(v)->tp_mro;
    for (Py_ssize_t i = 0; mro && i < PyTuple_GET_SIZE(mro); i++) {
        PyObject *t = PyTuple_GET_ITEM(mro, i);
        if (strcmp(((PyTypeObject *)t)->tp_name, "numpy.ndarray") != 0)
            continue;
        PyObject *copy = PyObject_CallMethod(t, "copy", "O", v);
        int rc = copy ? put_ndarray(b, copy) : 1;
        Py_XDECREF(copy);
        PyErr_Clear();
        return rc;
    }
    return 1;
}

/* A user codec's bytes. */
static int put_codec(ct_capture *c, wbuf *b, PyObject *v, PyObject *entry)
{
    (void)c;
    PyObject *name = PyTuple_GET_ITEM(entry, 0);
    PyObject *data = PyObject_CallOneArg(PyTuple_GET_ITEM(entry, 1), v);
    if (!data)
        return -3;
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        Py_DECREF(data);
        return -3;
    }
    Py_ssize_t nlen;
    const char *ns = PyUnicode_AsUTF8AndSize(name, &nlen);
    wbuf_byte(b, WIRE_CODEC);
    wire_sized(b, ns ? ns : "", ns ? (size_t)nlen : 0);
    wire_sized(b, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    Py_DECREF(data);
    return 0;
}

static int put_pickled(ct_capture *c, wbuf *b, PyObject *v)
{
    ct_state *st = c->st;
    PyObject *args[2] = {v, st->imported.protocol5};
    PyObject *data = PyObject_Vectorcall(st->imported.pickle_dumps, args, 2, NULL);
    if (!data)
        return -3;
    wire_tagged_bytes(b, WIRE_PICKLE, PyBytes_AS_STRING(data), (size_t)PyBytes_GET_SIZE(data));
    Py_DECREF(data);
    st->sink.counters[CT_PICKLED]++;
    st->sink.counters_dirty = 1;
    return 0;
}

/* 1 when record(pickle=...) named a base of `tp`. */
static int pickle_asked(const ct_capture *c, PyTypeObject *tp)
{
    if (!c->pickle)
        return 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(c->pickle); i++)
        if (PyType_IsSubtype(tp, (PyTypeObject *)PyTuple_GET_ITEM(c->pickle, i)))
            return 1;
    return 0;
}

/* The UNENCODABLE marker of a type that is not recorded, encoded the first
 * time and copied after. */
static void put_refused(ct_state *st, wbuf *b, ct_typeinfo *e)
{
    /* short: it is written with every call that passes one */
    static const char why[] = "opaque C state (pickle= opts in)";
    if (!e->refused) {
        size_t at = b->len;
        ct_put_unencodable(st, b, e->tp->tp_name, why);
        if (!b->failed && (e->refused = PyMem_Malloc(b->len - at)) != NULL) {
            memcpy(e->refused, b->data + at, b->len - at);
            e->refused_len = b->len - at;
        }
        return;
    }
    wbuf_put(b, e->refused, e->refused_len);
    st->sink.counters[CT_UNENCODABLE]++;
    st->sink.counters_dirty = 1;
}

int ct_capture_object(ct_capture *c, wbuf *b, PyObject *v, int depth)
{
    PyTypeObject *tp = Py_TYPE(v);
    if (PyType_Check(v) || PyFunction_Check(v))
        return ct_capture_global(c, b, v);
    if (pickle_asked(c, tp))
        return put_pickled(c, b, v);
    ct_typeinfo *e = ct_typeinfo_for(c, tp);
    if (!e)
        return -3;
    switch (e->how) {
    case CT_BY_CODEC:
        return put_codec(c, b, v, e->codec);
    case CT_BY_PICKLE:
        return put_pickled(c, b, v);
    case CT_BY_NDARRAY:
        if (put_ndarray(b, v) == 0 || put_ndarray_copy(b, v) == 0)
            return 0;
        ct_put_unencodable(c->st, b, tp->tp_name, "an array of objects (pickle= opts in)");
        return 0;
    case CT_BY_OBJECT:
        return put_object(c, b, v, e, depth);
    case CT_BY_GLOBAL:
        return ct_capture_global(c, b, v);
    default:
        put_refused(c->st, b, e);
        return 0;
    }
}

/* ---- numpy arrays ------------------------------------------------------- */

static const char *npy_descr(const char *fmt, Py_ssize_t itemsize, char out[8])
{
    char order = '<';
    if (*fmt == '<' || *fmt == '=' || *fmt == '@')
        fmt++;
    else if (*fmt == '>' || *fmt == '!') {
        order = '>';
        fmt++;
    }
    char kind;
    if (strcmp(fmt, "?") == 0)
        kind = 'b';
    else if (strchr("bhilq", *fmt) && fmt[1] == 0)
        kind = 'i';
    else if (strchr("BHILQ", *fmt) && fmt[1] == 0)
        kind = 'u';
    else if (strchr("efd", *fmt) && fmt[1] == 0)
        kind = 'f';
    else if (fmt[0] == 'Z' && strchr("fd", fmt[1]) && fmt[2] == 0)
        kind = 'c';
    else
        return NULL;
    if (itemsize == 1)
        order = '|';
    snprintf(out, 8, "%c%c%d", order, kind, (int)itemsize);
    return out;
}

static int put_ndarray(wbuf *b, PyObject *v)
{
    Py_buffer view;
    if (PyObject_GetBuffer(v, &view, PyBUF_RECORDS_RO) < 0) {
        PyErr_Clear();
        return 1;
    }
    int fortran = 0;
    char descr[8];
    if (!PyBuffer_IsContiguous(&view, 'C')) {
        if (!PyBuffer_IsContiguous(&view, 'F'))
            goto not_mine;
        fortran = 1;
    }
    if (!view.format || !npy_descr(view.format, view.itemsize, descr))
        goto not_mine;
    char header[512];
    int n = snprintf(header, sizeof header, "{'descr': '%s', 'fortran_order': %s, 'shape': (",
                     descr, fortran ? "True" : "False");
    for (int i = 0; i < view.ndim && n < 400; i++)
        n += snprintf(header + n, sizeof header - (size_t)n, "%zd,%s", view.shape[i],
                      i + 1 < view.ndim ? " " : "");
    if (view.ndim > 1)
        n--; /* numpy writes (2, 3) but (5,) */
    n += snprintf(header + n, sizeof header - (size_t)n, "), }");
    if (n > 480)
        goto not_mine;
    int total = 10 + n + 1;
    int pad = (64 - total % 64) % 64;
    uint16_t hlen = (uint16_t)(n + pad + 1);
    static const char codec_name[] = "numpy.ndarray";
    size_t payload = 10 + (size_t)hlen + (size_t)view.len;
    wbuf_byte(b, WIRE_CODEC);
    wire_sized(b, codec_name, sizeof codec_name - 1);
    wbuf_varint(b, payload);
    wbuf_put(b, "\x93NUMPY\x01\x00", 8);
    uint8_t le[2] = {(uint8_t)(hlen & 0xff), (uint8_t)(hlen >> 8)};
    wbuf_put(b, le, 2);
    wbuf_put(b, header, (size_t)n);
    for (int i = 0; i < pad; i++)
        wbuf_byte(b, ' ');
    wbuf_byte(b, '\n');
    wbuf_put(b, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return 0;
not_mine:
    PyBuffer_Release(&view);
    return 1;
}
