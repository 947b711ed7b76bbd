/*
 * typeinfo.c - the decision per type: how instances of each type that is
 * not built-in data are captured (objects.c writes them the way decided),
 * made once per type and kept in the state's type cache, an open-addressing
 * table keyed by the type's address; and the over-budget streaks kept on
 * the same entries.
 *
 * In order, the first that applies: a registered codec, opted-in pickling,
 * numpy arrays, enum members, the standard library's data types by their
 * own reduce, instances of classes defined in Python by their structure,
 * GLOBALs (classes, functions, builtins, modules), and otherwise refused
 * (see objects.c for what each means).
 *
 * Invariants: deciding calls no method of the type or its instances; the
 * table holds types weakly (a heap type through a weak reference, checked
 * before each use: an address reused by a new class is decided again); at
 * most half the slots are used, so a probe always ends.
 */
#include "capture.h"

#include <structmember.h>

/* ---- the decision per type ------------------------------------------------- */

/* Data types of the standard library captured by their own (C, or stdlib
 * Python without side effects) reduce, by exact type. */
static const char *const objects_reduce_names[] = {
    "datetime.date",
    "datetime.datetime",
    "datetime.time",
    "datetime.timedelta",
    "datetime.timezone",
    "decimal.Decimal",
    "collections.OrderedDict",
    "collections.deque",
    "collections.defaultdict",
    "re.Pattern",
    "array.array",
    "builtins.complex",
    "builtins.bytearray",
    "builtins.range",
    "builtins.slice",
    "zoneinfo.ZoneInfo",
    "functools.partial",
    "types.SimpleNamespace",
    "pathlib.PurePath",
    "pathlib.PurePosixPath",
    "pathlib.PureWindowsPath",
    "pathlib.Path",
    "pathlib.PosixPath",
    "pathlib.WindowsPath",
    NULL,
};

static void typeinfo_release(ct_typeinfo *e)
{
    Py_CLEAR(e->alive);
    Py_CLEAR(e->codec);
    Py_CLEAR(e->module_dict);
    Py_CLEAR(e->singletons);
    PyMem_Free(e->header);
    PyMem_Free(e->refused);
    for (size_t i = 0; e->slot_names && i < e->nslots; i++)
        Py_XDECREF(e->slot_names[i]);
    PyMem_Free(e->slot_names);
    PyMem_Free(e->slots);
    memset(e, 0, sizeof *e);
}

void ct_typecache_clear(ct_typecache *tc)
{
    for (size_t i = 0; i < tc->cap; i++)
        if (tc->v[i].tp)
            typeinfo_release(&tc->v[i]);
    PyMem_Free(tc->v);
    tc->v = NULL;
    tc->cap = tc->n = 0;
}

int ct_typecache_traverse(ct_typecache *tc, visitproc visit, void *arg)
{
    for (size_t i = 0; i < tc->cap; i++) {
        Py_VISIT(tc->v[i].alive);
        Py_VISIT(tc->v[i].codec);
        Py_VISIT(tc->v[i].module_dict);
        Py_VISIT(tc->v[i].singletons);
        for (size_t k = 0; tc->v[i].slot_names && k < tc->v[i].nslots; k++)
            Py_VISIT(tc->v[i].slot_names[k]);
    }
    return 0;
}

static size_t typecache_slot(const ct_typecache *tc, const PyTypeObject *tp)
{
    uintptr_t h = (uintptr_t)tp >> 4;
    h ^= h >> 17;
    return (size_t)(h * 0x9E3779B97F4A7C15ull) & (tc->cap - 1);
}

/* 1 when entry `e` still describes a live type (its weak reference, when it
 * has one, still points at it). */
static int typeinfo_alive(const ct_typeinfo *e)
{
    if (!e->alive)
        return 1;
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *o = NULL;
    if (PyWeakref_GetRef(e->alive, &o) < 0)
        PyErr_Clear();
    int same = o == (PyObject *)e->tp;
    Py_XDECREF(o);
    return same;
#else
    return PyWeakref_GET_OBJECT(e->alive) == (PyObject *)e->tp;
#endif
}

/* Grows the table to `cap` slots, dropping stale entries.  0, or -1. */
static int typecache_grow(ct_typecache *tc, size_t cap)
{
    ct_typeinfo *old = tc->v;
    size_t oldcap = tc->cap;
    ct_typeinfo *v = PyMem_Calloc(cap, sizeof *v);
    if (!v)
        return -1;
    tc->v = v;
    tc->cap = cap;
    tc->n = 0;
    for (size_t i = 0; i < oldcap; i++) {
        if (!old[i].tp)
            continue;
        if (!typeinfo_alive(&old[i])) {
            typeinfo_release(&old[i]);
            continue;
        }
        size_t j = typecache_slot(tc, old[i].tp);
        while (v[j].tp)
            j = (j + 1) & (cap - 1);
        v[j] = old[i];
        tc->n++;
    }
    PyMem_Free(old);
    return 0;
}

/* "varint n + module, varint n + qualname" of type `tp` into e->header. */
static int typeinfo_name(ct_typeinfo *e, PyTypeObject *tp)
{
    PyObject *mod = NULL, *qual = NULL;
    const char *m = "builtins", *q = tp->tp_name, *dot = strrchr(tp->tp_name, '.');
    Py_ssize_t mn = 8, qn = (Py_ssize_t)strlen(q);
    if (tp->tp_flags & Py_TPFLAGS_HEAPTYPE) {
        mod = PyDict_GetItemString(tp->tp_dict, "__module__"); /* borrowed */
        qual = ((PyHeapTypeObject *)tp)->ht_qualname;
        m = mod && PyUnicode_Check(mod) ? PyUnicode_AsUTF8AndSize(mod, &mn) : NULL;
        q = qual && PyUnicode_Check(qual) ? PyUnicode_AsUTF8AndSize(qual, &qn) : NULL;
        if (!m || !q) {
            PyErr_Clear();
            m = "builtins";
            mn = 8;
            q = tp->tp_name;
            qn = (Py_ssize_t)strlen(q);
        }
    } else if (dot) {
        m = tp->tp_name;
        mn = (Py_ssize_t)(dot - tp->tp_name);
        q = dot + 1;
        qn = (Py_ssize_t)strlen(q);
    }
    uint8_t *h = PyMem_Malloc((size_t)mn + (size_t)qn + 20);
    if (!h)
        return -1;
    uint8_t *p = put_varint_raw(h, (uint64_t)mn);
    memcpy(p, m, (size_t)mn);
    p = put_varint_raw(p + mn, (uint64_t)qn);
    memcpy(p, q, (size_t)qn);
    e->header = h;
    e->header_len = (size_t)(p + qn - h);
    return 0;
}

int ct_reduce_known(const char *full)
{
    for (int i = 0; objects_reduce_names[i]; i++)
        if (strcmp(full, objects_reduce_names[i]) == 0)
            return 1;
    return 0;
}

/* 1 when some type in the MRO of `tp` has tp_name `name`. */
static int mro_has_name(PyTypeObject *tp, const char *name)
{
    PyObject *mro = tp->tp_mro;
    for (Py_ssize_t i = 0; mro && i < PyTuple_GET_SIZE(mro); i++)
        if (strcmp(((PyTypeObject *)PyTuple_GET_ITEM(mro, i))->tp_name, name) == 0)
            return 1;
    return 0;
}

/* The built-in base that lays out instances of the Python class `tp`. */
static PyTypeObject *solid_base(const ct_state *st, PyTypeObject *tp)
{
    while (tp->tp_base && tp->tp_dealloc == st->objects.subtype_dealloc)
        tp = tp->tp_base;
    return tp;
}

static const struct {
    PyTypeObject *type;
    uint8_t kind;
} objects_bases[] = {
    {&PyBaseObject_Type, WIRE_KIND_PLAIN}, {&PyList_Type, WIRE_KIND_LIST},
    {&PyDict_Type, WIRE_KIND_DICT},        {&PySet_Type, WIRE_KIND_SET},
    {&PyTuple_Type, WIRE_KIND_TUPLE},      {&PyFrozenSet_Type, WIRE_KIND_FROZENSET},
    {&PyUnicode_Type, WIRE_KIND_STR},      {&PyBytes_Type, WIRE_KIND_BYTES},
    {&PyLong_Type, WIRE_KIND_INT},         {&PyFloat_Type, WIRE_KIND_FLOAT},
};

int ct_stateless_base(const PyTypeObject *solid)
{
    return solid->tp_basicsize == PyBaseObject_Type.tp_basicsize && solid->tp_itemsize == 0 &&
           solid->tp_new != NULL;
}

PyObject *ct_slot_values(const ct_state *st, PyObject *v)
{
    PyObject *out = PyList_New(0), *mro = Py_TYPE(v)->tp_mro;
    for (Py_ssize_t i = 0; out && mro && i < PyTuple_GET_SIZE(mro); i++) {
        PyTypeObject *t = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
        if (t->tp_dealloc != st->objects.subtype_dealloc || !t->tp_dict)
            continue;
        PyObject *k, *d;
        Py_ssize_t pos = 0;
        while (out && PyDict_Next(t->tp_dict, &pos, &k, &d)) {
            if (Py_TYPE(d) != &PyMemberDescr_Type)
                continue;
            PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
            PyObject *sv = m->type == T_OBJECT_EX ? *(PyObject **)((char *)v + m->offset) : NULL;
            if (sv && PyList_Append(out, sv) < 0)
                Py_CLEAR(out);
        }
    }
    return out;
}

/* Collects the __slots__ of the Python classes in tp's MRO into e->slots,
 * and their names into e->slot_names.  0, or -1 when out of memory. */
static int typeinfo_slots(ct_typeinfo *e, const ct_state *st, PyTypeObject *tp)
{
    PyObject *mro = tp->tp_mro;
    size_t n = 0, cap = 0;
    PyMemberDef **v = NULL;
    PyObject **names = NULL;
    for (Py_ssize_t i = 0; mro && i < PyTuple_GET_SIZE(mro); i++) {
        PyTypeObject *t = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
        if (t->tp_dealloc != st->objects.subtype_dealloc || !t->tp_dict)
            continue;
        PyObject *k, *d;
        Py_ssize_t pos = 0;
        while (PyDict_Next(t->tp_dict, &pos, &k, &d)) {
            if (Py_TYPE(d) != &PyMemberDescr_Type)
                continue;
            PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
            if (m->type != T_OBJECT_EX || (m->flags & READONLY))
                continue;
            if (n == cap) {
                cap = cap ? 2 * cap : 4;
                PyMemberDef **g = PyMem_Realloc(v, cap * sizeof(PyMemberDef *));
                PyObject **h = g ? PyMem_Realloc(names, cap * sizeof(PyObject *)) : NULL;
                if (g)
                    v = g;
                if (h)
                    names = h;
                if (!g || !h)
                    goto error;
            }
            v[n] = m;
            names[n++] = Py_NewRef(k);
        }
    }
    e->slots = v;
    e->slot_names = names;
    e->nslots = n;
    return 0;
error:
    for (size_t i = 0; i < n; i++)
        Py_DECREF(names[i]);
    PyMem_Free(names);
    PyMem_Free(v);
    PyErr_NoMemory();
    return -1;
}

/* Finds the module-level instances of the Python class `tp` (sentinels
 * such as `UNSET = Unset()`): while they hold no state they are recorded by
 * name, so that they come back as themselves.  0, or -1 with MemoryError. */
static int typeinfo_singletons(ct_typeinfo *e, PyTypeObject *tp)
{
    PyObject *mod = tp->tp_dict ? PyDict_GetItemString(tp->tp_dict, "__module__") : NULL;
    PyObject *modules = PySys_GetObject("modules"); /* borrowed */
    PyObject *m =
        mod && PyUnicode_Check(mod) && modules ? PyDict_GetItemWithError(modules, mod) : NULL;
    PyObject *dict = m && PyModule_Check(m) ? PyModule_GetDict(m) : NULL; /* borrowed */
    PyErr_Clear();
    if (!dict)
        return 0;
    PyObject *names = PyList_New(0), *k, *v;
    Py_ssize_t pos = 0;
    while (names && PyDict_Next(dict, &pos, &k, &v))
        if (Py_TYPE(v) == tp && PyUnicode_Check(k) && PyList_Append(names, k) < 0)
            Py_CLEAR(names);
    if (names && PyList_GET_SIZE(names) > 0 && PyList_GET_SIZE(names) <= 8) {
        e->singletons = PyList_AsTuple(names);
        e->module_dict = Py_NewRef(dict);
    }
    Py_XDECREF(names);
    return e->singletons || !PyErr_Occurred() ? 0 : -1;
}

/* Fills `e` with how instances of `tp` are captured.  0, or -1 with an
 * exception (memory). */
static int typeinfo_decide(ct_capture *c, ct_typeinfo *e, PyTypeObject *tp)
{
    ct_state *st = c->st;
    PyObject *mro = tp->tp_mro;
    for (Py_ssize_t i = 0; mro && i < PyTuple_GET_SIZE(mro); i++) {
        PyObject *base = PyTuple_GET_ITEM(mro, i);
        PyObject *entry = PyDict_GetItemWithError(st->objects.codecs, base);
        if (entry) {
            e->how = CT_BY_CODEC;
            e->codec = Py_NewRef(entry);
            return 0;
        }
        int picked = st->objects.pickle_types ? PySet_Contains(st->objects.pickle_types, base) : 0;
        if (picked < 0 || PyErr_Occurred())
            return -1;
        if (picked) {
            e->how = CT_BY_PICKLE;
            return 0;
        }
    }
    if (typeinfo_name(e, tp) < 0)
        return -1;
    char full[300];
    wreader r;
    wreader_init(&r, e->header, e->header_len);
    uint64_t mn = wreader_varint(&r);
    const uint8_t *m = wreader_take(&r, mn);
    uint64_t qn = wreader_varint(&r);
    const uint8_t *q = wreader_take(&r, qn);
    snprintf(full, sizeof full, "%.*s.%.*s", (int)mn, m ? (const char *)m : "", (int)qn,
             q ? (const char *)q : "");
    if (PyType_IsSubtype(tp, &PyCFunction_Type) || PyType_IsSubtype(tp, &PyModule_Type)) {
        e->how = CT_BY_GLOBAL;
    } else if (mro_has_name(tp, "numpy.ndarray")) {
        e->how = CT_BY_NDARRAY;
    } else if (mro_has_name(Py_TYPE(tp), "EnumType") || mro_has_name(Py_TYPE(tp), "EnumMeta")) {
        e->how = CT_BY_OBJECT;
        e->kind = WIRE_KIND_ENUM;
    } else if (ct_reduce_known(full) || mro_has_name(tp, "numpy.generic") ||
               mro_has_name(tp, "numpy.dtype")) {
        e->how = CT_BY_OBJECT;
        e->kind = WIRE_KIND_REDUCE;
    } else if (PyType_IsSubtype(tp, (PyTypeObject *)PyExc_BaseException)) {
        e->how = CT_BY_OBJECT;
        e->kind = WIRE_KIND_EXCEPTION;
    } else {
        PyTypeObject *solid = solid_base(st, tp);
        e->how = CT_BY_REFUSE;
        for (size_t i = 0; i < sizeof objects_bases / sizeof objects_bases[0]; i++)
            if (objects_bases[i].type == solid) {
                e->how = CT_BY_OBJECT;
                e->kind = objects_bases[i].kind;
            }
        if (e->how == CT_BY_REFUSE && solid != tp && ct_stateless_base(solid)) {
            e->how = CT_BY_OBJECT; /* a Python class over a C base with no state of its own */
            e->kind = WIRE_KIND_PLAIN;
        }
    }
    if (e->how == CT_BY_OBJECT && typeinfo_slots(e, st, tp) < 0)
        return -1;
    if (e->how == CT_BY_OBJECT && e->kind == WIRE_KIND_PLAIN && typeinfo_singletons(e, tp) < 0)
        return -1;
    return 0;
}

/* The entry holding `tp` in the type cache, or NULL. */
static ct_typeinfo *typecache_find(const ct_typecache *tc, const PyTypeObject *tp)
{
    if (!tc->cap)
        return NULL;
    for (size_t j = typecache_slot(tc, tp); tc->v[j].tp; j = (j + 1) & (tc->cap - 1))
        if (tc->v[j].tp == tp)
            return &tc->v[j];
    return NULL;
}

ct_typeinfo *ct_typeinfo_for(ct_capture *c, PyTypeObject *tp)
{
    ct_typecache *tc = &c->st->objects.types;
    ct_typeinfo *e = typecache_find(tc, tp);
    if (e) {
        if (e->how != CT_BY_UNDECIDED && typeinfo_alive(e))
            return e;
        typeinfo_release(e); /* a freed class's address reused: decide again */
        e->tp = tp;
        goto decide;
    }
    if ((tc->n + 1) * 2 > tc->cap && typecache_grow(tc, tc->cap ? 2 * tc->cap : 64) < 0) {
        PyErr_NoMemory();
        return NULL;
    }
    size_t j = typecache_slot(tc, tp);
    while (tc->v[j].tp)
        j = (j + 1) & (tc->cap - 1);
    e = &tc->v[j];
    e->tp = tp;
    tc->n++;
decide:
    if (tp->tp_flags & Py_TPFLAGS_HEAPTYPE) {
        e->alive = PyWeakref_NewRef((PyObject *)tp, NULL);
        if (!e->alive)
            goto error;
    }
    if (typeinfo_decide(c, e, tp) < 0)
        goto error;
    return e;
error:
    typeinfo_release(e);
    e->tp = tp; /* keep the slot occupied so probing stays valid; decided again */
    e->how = CT_BY_UNDECIDED;
    return NULL;
}

ct_typeinfo *ct_over_budget_entry(ct_capture *c, PyObject *v)
{
    PyTypeObject *tp = Py_TYPE(v);
    if (tp == &PyList_Type || tp == &PyDict_Type || tp == &PyTuple_Type || tp == &PyUnicode_Type ||
        tp == &PyBytes_Type || tp == &PyLong_Type)
        return NULL; /* built-in data: captured without an entry, never skipped */
    ct_typeinfo *e = typecache_find(&c->st->objects.types, tp);
    return e && e->how == CT_BY_OBJECT && typeinfo_alive(e) ? e : NULL;
}

int ct_over_budget_skip(ct_typeinfo *e)
{
    if (!e || !e->over_skip)
        return 0;
    e->over_skip--;
    return 1;
}

void ct_over_budget_note(ct_typeinfo *e, int over)
{
    if (!e)
        return;
    if (!over) {
        e->over_streak = 0;
        return;
    }
    if (e->over_streak < 255)
        e->over_streak++;
    if (e->over_streak >= CT_OVER_STREAK) {
        unsigned shift = e->over_streak - CT_OVER_STREAK;
        e->over_skip = shift >= 10 ? CT_OVER_SKIP_MAX : 1u << shift;
    }
}

PyObject *ct_type_tuple(PyObject *types, const char *option)
{
    PyObject *t = PyType_Check(types) ? PyTuple_Pack(1, types) : PySequence_Tuple(types);
    if (!t) {
        PyErr_Format(PyExc_TypeError, "%s must be a list of types, not %.100s", option,
                     Py_TYPE(types)->tp_name);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(t); i++)
        if (!PyType_Check(PyTuple_GET_ITEM(t, i))) {
            PyErr_Format(PyExc_TypeError, "%s must be a list of types, not one holding %R", option,
                         PyTuple_GET_ITEM(t, i));
            Py_DECREF(t);
            return NULL;
        }
    return t;
}
