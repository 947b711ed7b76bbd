/*
 * wrapper.c - the ProbeWrapper type of run-time probes on CPython 3.11
 * (patch.c puts it wherever a function running a probed code object is
 * held): a callable standing in for one function, which fires the probe's
 * instruments through hook.c's ct_probe_wrapper_call and otherwise looks
 * like its function.
 *
 * Invariants: `func` is a function and never changes; the wrapper's
 * attributes are its function's (`__wrapped__` the function itself), it
 * binds to instances as a function does, and its hash and == are its
 * function's, so a set, a dict key or a cached hash (functools' keys)
 * holding the wrapper instead of the function still finds it.
 */
#include "probes.h"

#if PY_VERSION_HEX < 0x030C0000

#include <structmember.h>

typedef struct ProbeWrapper {
    PyObject_HEAD vectorcallfunc vectorcall;
    ProbeHook *hook;
    PyObject *func;
} ProbeWrapper;

/* ---- the wrapper -------------------------------------------------------------- */

static PyObject *Wrapper_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf,
                                    PyObject *kwnames)
{
    ProbeWrapper *w = (ProbeWrapper *)op;
    return ct_probe_wrapper_call(w->hook, w->func, args, nargsf, kwnames);
}

/* As a function: bound to an instance, itself through a class. */
static PyObject *Wrapper_descr_get(PyObject *self, PyObject *obj, PyObject *type)
{
    (void)type;
    if (!obj || obj == Py_None)
        return Py_NewRef(self);
    return PyMethod_New(self, obj);
}

/* The function's attributes (__name__, __doc__, __module__, __code__,
 * __dict__ ...), __wrapped__ being the function itself. */
static PyObject *Wrapper_getattro(PyObject *self, PyObject *name)
{
    ProbeWrapper *w = (ProbeWrapper *)self;
    if (PyUnicode_Check(name) && PyUnicode_CompareWithASCIIString(name, "__wrapped__") == 0)
        return Py_NewRef(w->func);
    if (PyUnicode_Check(name) && PyUnicode_CompareWithASCIIString(name, "__class__") == 0)
        return PyObject_GenericGetAttr(self, name);
    PyObject *r = PyObject_GetAttr(w->func, name);
    if (r || !PyErr_ExceptionMatches(PyExc_AttributeError))
        return r;
    PyErr_Clear();
    return PyObject_GenericGetAttr(self, name);
}

static int Wrapper_setattro(PyObject *self, PyObject *name, PyObject *value)
{
    return PyObject_SetAttr(((ProbeWrapper *)self)->func, name, value);
}

/* Its function's hash. */
static Py_hash_t Wrapper_hash(PyObject *self)
{
    return PyObject_Hash(((ProbeWrapper *)self)->func);
}

/* == and != as its function's (identity): equal to the function and to
 * any wrapper of it. */
static PyObject *Wrapper_richcompare(PyObject *self, PyObject *other, int op)
{
    if (op != Py_EQ && op != Py_NE)
        Py_RETURN_NOTIMPLEMENTED;
    PyObject *mine = ((ProbeWrapper *)self)->func, *theirs = other;
    if (Py_IS_TYPE(other, Py_TYPE(self)))
        theirs = ((ProbeWrapper *)other)->func;
    return PyBool_FromLong((mine == theirs) == (op == Py_EQ));
}

static PyObject *Wrapper_repr(ProbeWrapper *w)
{
    return PyUnicode_FromFormat("<calltape probe of %R>", w->func);
}

static int Wrapper_traverse(ProbeWrapper *w, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(w));
    Py_VISIT(w->hook);
    Py_VISIT(w->func);
    return 0;
}

static int Wrapper_clear(ProbeWrapper *w)
{
    Py_CLEAR(w->hook);
    Py_CLEAR(w->func);
    return 0;
}

static void Wrapper_dealloc(ProbeWrapper *w)
{
    PyTypeObject *tp = Py_TYPE(w);
    PyObject_GC_UnTrack(w);
    Wrapper_clear(w);
    tp->tp_free((PyObject *)w);
    Py_DECREF(tp);
}

static PyMemberDef Wrapper_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(ProbeWrapper, vectorcall), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot Wrapper_slots[] = {
    {Py_tp_doc, "A calltape probe's stand-in for a function (CPython 3.11)"},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_descr_get, Wrapper_descr_get},
    {Py_tp_getattro, Wrapper_getattro},
    {Py_tp_setattro, Wrapper_setattro},
    {Py_tp_repr, Wrapper_repr},
    {Py_tp_hash, Wrapper_hash},
    {Py_tp_richcompare, Wrapper_richcompare},
    {Py_tp_dealloc, Wrapper_dealloc},
    {Py_tp_traverse, Wrapper_traverse},
    {Py_tp_clear, Wrapper_clear},
    {Py_tp_members, Wrapper_members},
    {0, NULL},
};

PyType_Spec ProbeWrapper_spec = {
    .name = "calltape._native.ProbeWrapper",
    .basicsize = sizeof(ProbeWrapper),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |
             Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = Wrapper_slots,
};

/* See probes.h. */
PyObject *ct_probe_wrapper_new(ct_state *st, ProbeHook *h, PyObject *func)
{
    PyTypeObject *tp = st->type.ProbeWrapper;
    ProbeWrapper *w = (ProbeWrapper *)tp->tp_alloc(tp, 0);
    if (!w)
        return NULL;
    w->vectorcall = Wrapper_vectorcall;
    w->hook = (ProbeHook *)Py_NewRef(h);
    w->func = Py_NewRef(func);
    return (PyObject *)w;
}

#endif
