/*
 * rebuild_object.c - OBJECT, GLOBAL and REF values back to Python objects.
 *
 * A class or function is found by name through the reader's allow list
 * (allow.c); an instance is made the way its kind says (engine.h, enum
 * wire_kind) by the C constructor of its built-in base, never by calling
 * the class (so no __init__ or __new__ of the program runs), and its
 * __dict__ and __slots__ are then filled in directly.  Enum members and the
 * standard-library types recorded by their reduce are the exceptions: they
 * are made by calling the allowed class or reduce callable, as pickle would.
 *
 * Invariants: every OBJECT, LIST, DICT and SET takes the next memo index as
 * it starts, exactly as capture counted, so REFs find the same objects; an
 * index is filled once its object exists (before its contents for mutable
 * kinds, after them for the others) and a REF to an index not filled yet is
 * a TapeError; an instance is only made when its class's built-in base is
 * the one its kind names, so a tape cannot make a half-built C object.
 */
#include "binding.h"

#include <structmember.h>

static PyObject *robj_error(const ct_rebuild *r, const char *msg)
{
    PyObject *cls = ct_marker_type(r->st, "TapeError");
    PyErr_SetString(cls ? cls : PyExc_ValueError, msg);
    return NULL;
}

/* Copies the `n` bytes at `s` (a name of a token) NUL-terminated into
 * `out` (size cap).  0, or -1 when too long. */
static int robj_name(const uint8_t *s, size_t n, char *out, size_t cap)
{
    if (n >= cap)
        return -1;
    if (n)
        memcpy(out, s, n);
    out[n] = 0;
    return 0;
}

int ct_rebuild_memo_push(ct_rebuild *r, PyObject *v, Py_ssize_t *index)
{
    *index = PyList_GET_SIZE(r->memo);
    return PyList_Append(r->memo, v ? v : Py_None);
}

/* Puts `v` at memo `index` (reserved before). */
static void robj_memo_set(ct_rebuild *r, Py_ssize_t index, PyObject *v)
{
    PyList_SetItem(r->memo, index, Py_NewRef(v));
}

PyObject *ct_rebuild_ref(ct_rebuild *r, const wire_tok *t)
{
    uint64_t d = t->u;
    Py_ssize_t n = PyList_GET_SIZE(r->memo);
    if (d == 0 || d > (uint64_t)n)
        return robj_error(r, "a value on the tape refers to one that does not exist");
    PyObject *v = PyList_GET_ITEM(r->memo, n - (Py_ssize_t)d);
    if (v == Py_None)
        return robj_error(r, "a value on the tape refers to one not rebuilt yet");
    return Py_NewRef(v);
}

PyObject *ct_rebuild_global(ct_rebuild *r, const wire_tok *t)
{
    char mod[256], qual[512];
    if (robj_name(t->s, t->n, mod, sizeof mod) < 0 ||
        robj_name(t->s2, t->n2, qual, sizeof qual) < 0)
        return robj_error(r, "malformed global on the tape");
    return ct_allow_resolve(r, mod, qual);
}

/* The built-in base that lays out instances of `tp` (the first type in its
 * tp_base chain not defined by a class statement). */
static PyTypeObject *robj_solid(const ct_state *st, PyTypeObject *tp)
{
    while (tp->tp_base && tp->tp_dealloc == st->objects.subtype_dealloc)
        tp = tp->tp_base;
    return tp;
}

static PyTypeObject *const robj_bases[] = {
    [WIRE_KIND_PLAIN] = &PyBaseObject_Type, [WIRE_KIND_LIST] = &PyList_Type,
    [WIRE_KIND_DICT] = &PyDict_Type,        [WIRE_KIND_SET] = &PySet_Type,
    [WIRE_KIND_TUPLE] = &PyTuple_Type,      [WIRE_KIND_FROZENSET] = &PyFrozenSet_Type,
    [WIRE_KIND_STR] = &PyUnicode_Type,      [WIRE_KIND_BYTES] = &PyBytes_Type,
    [WIRE_KIND_INT] = &PyLong_Type,         [WIRE_KIND_FLOAT] = &PyFloat_Type,
};

/* 1 when `cls` is an enum class (its metaclass is enum's). */
static int robj_is_enum(PyTypeObject *cls)
{
    PyObject *mro = Py_TYPE(cls)->tp_mro;
    for (Py_ssize_t i = 0; mro && i < PyTuple_GET_SIZE(mro); i++) {
        const char *n = ((PyTypeObject *)PyTuple_GET_ITEM(mro, i))->tp_name;
        if (strcmp(n, "EnumType") == 0 || strcmp(n, "EnumMeta") == 0)
            return 1;
    }
    return 0;
}

/* 1 when instances of `cls` may be made as kind `kind`. */
static int robj_kind_fits(const ct_state *st, PyTypeObject *cls, uint8_t kind)
{
    PyTypeObject *solid = robj_solid(st, cls);
    if (kind == WIRE_KIND_EXCEPTION)
        return PyType_IsSubtype(cls, (PyTypeObject *)PyExc_BaseException);
    if (kind == WIRE_KIND_ENUM)
        return robj_is_enum(cls);
    if (kind == WIRE_KIND_REDUCE)
        return 1;
    if (kind == WIRE_KIND_PLAIN && solid != cls && ct_stateless_base(solid))
        return 1;
    return kind < sizeof robj_bases / sizeof robj_bases[0] && solid == robj_bases[kind];
}

/* Sets the slot `name` of `obj` through the member descriptor of its class,
 * or puts it in `dict` (may be NULL: then it is left out). */
static int robj_set_slot(PyObject *obj, PyObject *dict, PyObject *name, PyObject *value)
{
    PyObject *mro = Py_TYPE(obj)->tp_mro;
    for (Py_ssize_t i = 0; mro && i < PyTuple_GET_SIZE(mro); i++) {
        PyTypeObject *t = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
        PyObject *d = t->tp_dict ? PyDict_GetItemWithError(t->tp_dict, name) : NULL;
        if (d && Py_TYPE(d) == &PyMemberDescr_Type) {
            PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
            if (m->type == T_OBJECT_EX && !(m->flags & READONLY))
                return PyMember_SetOne((char *)obj, m, value);
        }
        if (PyErr_Occurred())
            return -1;
    }
    return dict ? PyDict_SetItem(dict, name, value) : 0;
}

/* Reads `ndict` + `nslots` attribute pairs into `obj` (or only reads them,
 * with `discard`: an enum member is the program's own singleton). */
static int robj_attributes(ct_rebuild *r, wreader *rd, int depth, PyObject *obj, uint64_t ndict,
                           uint64_t nslots, int discard)
{
    PyObject *dict = NULL;
    PyTypeObject *tp = Py_TYPE(obj);
    if (!discard && (tp->tp_dictoffset != 0 || (tp->tp_flags & Py_TPFLAGS_MANAGED_DICT))) {
        dict = PyObject_GenericGetDict(obj, NULL);
        if (!dict)
            return -1;
    }
    int rc = 0;
    for (uint64_t i = 0; i < ndict + nslots && rc == 0; i++) {
        PyObject *name = ct_rebuild_nested(r, rd, depth + 1);
        PyObject *value = name ? ct_rebuild_nested(r, rd, depth + 1) : NULL;
        if (!value)
            rc = -1;
        else if (discard)
            rc = 0;
        else if (i >= ndict)
            rc = robj_set_slot(obj, dict, name, value);
        else if (dict && PyDict_Check(dict))
            rc = PyDict_SetItem(dict, name, value);
        Py_XDECREF(name);
        Py_XDECREF(value);
    }
    Py_XDECREF(dict);
    return rc;
}

/* Fills the list, dict or set `obj` from a contents value of the tag the
 * kind names (not memoized: the contents is the object itself). */
static int robj_fill(ct_rebuild *r, wreader *rd, int depth, PyObject *obj, uint8_t kind)
{
    static const uint8_t tags[] = {
        [WIRE_KIND_LIST] = WIRE_LIST, [WIRE_KIND_DICT] = WIRE_DICT, [WIRE_KIND_SET] = WIRE_SET};
    wire_tok t;
    const uint8_t *q = wire_next(rd->p, rd->end, &t);
    if (!q || t.tag != tags[kind]) {
        robj_error(r, "malformed object contents on the tape");
        return -1;
    }
    rd->p = q;
    uint64_t n = t.u;
    for (uint64_t i = 0; i < n; i++) {
        PyObject *k = ct_rebuild_nested(r, rd, depth + 1);
        PyObject *v = k && kind == WIRE_KIND_DICT ? ct_rebuild_nested(r, rd, depth + 1) : NULL;
        int rc = !k || (kind == WIRE_KIND_DICT && !v) ? -1
                 : kind == WIRE_KIND_LIST             ? PyList_Append(obj, k)
                 : kind == WIRE_KIND_DICT             ? PyDict_SetItem(obj, k, v)
                                                      : PySet_Add(obj, k);
        Py_XDECREF(k);
        Py_XDECREF(v);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* Applies the state, list items and dict items of a reduce to `obj`, as
 * pickle does. */
static int robj_reduce_rest(PyObject *obj, PyObject *state, PyObject *items, PyObject *pairs)
{
    if (state != Py_None) {
        PyObject *setstate = NULL;
        if (ct_optional_attr(obj, "__setstate__", &setstate) < 0)
            return -1;
        PyObject *res = NULL;
        if (setstate) {
            res = PyObject_CallOneArg(setstate, state);
            Py_DECREF(setstate);
        } else {
            PyObject *d = PyTuple_Check(state) && PyTuple_GET_SIZE(state) == 2
                              ? PyTuple_GET_ITEM(state, 0)
                              : state;
            PyObject *dict = d != Py_None ? PyObject_GenericGetDict(obj, NULL) : NULL;
            res = d == Py_None ? Py_NewRef(Py_None)
                  : dict       ? (PyDict_Update(dict, d) < 0 ? NULL : Py_NewRef(Py_None))
                               : NULL;
            Py_XDECREF(dict);
        }
        if (!res)
            return -1;
        Py_DECREF(res);
    }
    for (int k = 0; k < 2; k++) {
        PyObject *seq = k ? pairs : items;
        if (seq == Py_None)
            continue;
        if (!PyList_Check(seq))
            return -1;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(seq); i++) {
            PyObject *x = PyList_GET_ITEM(seq, i), *res;
            if (k == 0)
                res = PyObject_CallMethod(obj, "append", "O", x);
            else if (PyTuple_Check(x) && PyTuple_GET_SIZE(x) == 2)
                res = PyObject_SetItem(obj, PyTuple_GET_ITEM(x, 0), PyTuple_GET_ITEM(x, 1)) < 0
                          ? NULL
                          : Py_NewRef(Py_None);
            else
                res = NULL;
            if (!res)
                return -1;
            Py_DECREF(res);
        }
    }
    return 0;
}

/* 1 when `x` is a marker of a value that was not recorded. */
static int robj_is_marker(const ct_state *st, PyObject *x)
{
    static const char *const names[] = {"Redacted", "Truncated", "Unencodable"};
    for (int k = 0; k < 3; k++) {
        PyObject *cls = ct_marker_type(st, names[k]);
        if (cls && Py_TYPE(x) == (PyTypeObject *)cls)
            return 1;
    }
    return 0;
}

/* 1 when `v` is a marker of a value that was not recorded, or a tuple,
 * list or dict holding one directly. */
static int robj_holds_marker(const ct_state *st, PyObject *v)
{
    PyObject *items = PyTuple_Check(v) || PyList_Check(v) ? v
                      : PyDict_Check(v)                   ? PyDict_Values(v)
                                                          : NULL;
    int hit = 0;
    Py_ssize_t n = items ? PySequence_Fast_GET_SIZE(items) : 1;
    for (Py_ssize_t i = 0; i < n && !hit; i++)
        hit = robj_is_marker(st, items ? PySequence_Fast_GET_ITEM(items, i) : v);
    if (items && items != v)
        Py_DECREF(items);
    PyErr_Clear();
    return hit;
}

/* 1 when a reduce's list items or dict items (a list of pairs) are, or its
 * dict items hold in place of a pair, a marker (cut by a depth limit): the
 * value cannot be made from them.  Items that are markers stay items. */
static int robj_rest_holds_marker(const ct_state *st, PyObject *items, PyObject *pairs)
{
    if (robj_is_marker(st, items) || robj_is_marker(st, pairs))
        return 1;
    for (Py_ssize_t i = 0; PyList_Check(pairs) && i < PyList_GET_SIZE(pairs); i++)
        if (robj_is_marker(st, PyList_GET_ITEM(pairs, i)))
            return 1;
    return 0;
}

/* An instance of a kind whose contents come first (tuple, str, ..., an
 * exception's args, an enum value, a reduce). */
static PyObject *robj_from_contents(ct_rebuild *r, wreader *rd, int depth, PyTypeObject *cls,
                                    const char *name, uint8_t kind)
{
    PyObject *contents = ct_rebuild_nested(r, rd, depth + 1);
    if (!contents)
        return NULL;
    PyObject *obj = NULL, *args = NULL;
    if (kind == WIRE_KIND_ENUM) {
        obj = PyObject_CallOneArg((PyObject *)cls, contents);
    } else if (kind == WIRE_KIND_REDUCE) {
        if (!PyTuple_Check(contents) || PyTuple_GET_SIZE(contents) != 5 ||
            !PyTuple_Check(PyTuple_GET_ITEM(contents, 1))) {
            Py_DECREF(contents);
            return robj_error(r, "malformed reduce on the tape");
        }
        PyObject *fn = PyTuple_GET_ITEM(contents, 0);
        if (robj_holds_marker(r->st, PyTuple_GET_ITEM(contents, 1)) ||
            robj_holds_marker(r->st, PyTuple_GET_ITEM(contents, 2)) ||
            robj_rest_holds_marker(r->st, PyTuple_GET_ITEM(contents, 3),
                                   PyTuple_GET_ITEM(contents, 4))) {
            Py_DECREF(contents); /* made of a value that was not recorded: not made */
            PyObject *m = ct_marker_type(r->st, "Unencodable");
            return m ? PyObject_CallFunction(m, "ss", name,
                                             "it holds a value that was not recorded")
                     : robj_error(r, "calltape markers are not bound");
        }
        if (!r->trust && !ct_allow_is_safe(fn)) {
            Py_DECREF(contents);
            PyObject *refused = ct_marker_type(r->st, "RefusedGlobal");
            PyErr_Format(refused ? refused : PyExc_RuntimeError,
                         "refused to rebuild a %s from the tape: its reduce names %R, which is not"
                         " a standard data type",
                         name, fn);
            return NULL;
        }
        obj = PyObject_Call(fn, PyTuple_GET_ITEM(contents, 1), NULL);
        if (obj &&
            robj_reduce_rest(obj, PyTuple_GET_ITEM(contents, 2), PyTuple_GET_ITEM(contents, 3),
                             PyTuple_GET_ITEM(contents, 4)) < 0)
            Py_CLEAR(obj);
    } else if (kind == WIRE_KIND_EXCEPTION) {
        PyTypeObject *solid = robj_solid(r->st, cls);
        if (PyTuple_Check(contents) && (obj = solid->tp_new(cls, contents, NULL)) &&
            solid->tp_init && solid->tp_init(obj, contents, NULL) < 0)
            Py_CLEAR(obj);
        if (!PyTuple_Check(contents))
            robj_error(r, "malformed exception value on the tape");
    } else if ((args = PyTuple_Pack(1, contents))) {
        obj = robj_bases[kind]->tp_new(cls, args, NULL);
        Py_DECREF(args);
    }
    Py_DECREF(contents);
    return obj;
}

PyObject *ct_rebuild_object(ct_rebuild *r, wreader *rd, int depth, const wire_tok *t)
{
    char mod[256], qual[512];
    if (robj_name(t->s, t->n, mod, sizeof mod) < 0 ||
        robj_name(t->s2, t->n2, qual, sizeof qual) < 0)
        return robj_error(r, "malformed object on the tape");
    uint8_t kind = t->kind;
    uint64_t ndict = t->u, nslots = t->u2;
    Py_ssize_t index;
    if (ct_rebuild_memo_push(r, NULL, &index) < 0)
        return NULL;
    PyObject *obj = NULL;
    if (kind == WIRE_KIND_REDUCE) { /* made by its reduce, whose callable is checked */
        if (!(obj = robj_from_contents(r, rd, depth, NULL, qual, kind)))
            return NULL;
        robj_memo_set(r, index, obj);
        if (robj_attributes(r, rd, depth, obj, ndict, nslots, 1) < 0)
            Py_CLEAR(obj);
        return obj;
    }
    PyObject *cls = ct_allow_resolve(r, mod, qual);
    if (!cls)
        return NULL;
    if (!PyType_Check(cls) || !robj_kind_fits(r->st, (PyTypeObject *)cls, kind)) {
        PyObject *refused = ct_marker_type(r->st, "RefusedGlobal");
        PyErr_Format(refused ? refused : PyExc_TypeError,
                     "refused to rebuild a %s.%s from the tape: it is not the kind of class the"
                     " tape says it was",
                     mod, qual);
        goto error;
    }
    PyTypeObject *tp = (PyTypeObject *)cls;
    int mutable = kind == WIRE_KIND_PLAIN || kind == WIRE_KIND_LIST || kind == WIRE_KIND_DICT ||
                  kind == WIRE_KIND_SET;
    if (mutable) {
        PyObject *empty = PyTuple_New(0);
        PyTypeObject *maker = kind == WIRE_KIND_PLAIN ? robj_solid(r->st, tp) : robj_bases[kind];
        obj = empty ? maker->tp_new(tp, empty, NULL) : NULL;
        Py_XDECREF(empty);
        if (!obj)
            goto error;
        robj_memo_set(r, index, obj);
        if (kind != WIRE_KIND_PLAIN && robj_fill(r, rd, depth, obj, kind) < 0)
            goto error;
    } else {
        if (!(obj = robj_from_contents(r, rd, depth, tp, qual, kind)))
            goto error;
        robj_memo_set(r, index, obj);
    }
    if (robj_attributes(r, rd, depth, obj, ndict, nslots, kind == WIRE_KIND_ENUM) < 0)
        goto error;
    Py_DECREF(cls);
    return obj;
error:
    Py_XDECREF(obj);
    Py_DECREF(cls);
    return NULL;
}
