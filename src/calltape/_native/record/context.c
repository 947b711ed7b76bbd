/*
 * context.c - Context: a span of this process's time the program names
 * (the pytest plugin names each test's, kind "test", by its node id), so
 * that a reader finds the calls made within it (Tape.search(test=),
 * Call.test).  Nothing is added to any call: begin() and end() each send
 * one REC_CONTEXT record (engine.h) onto the tape, the writer stores the
 * span's row in the calls' clock, and the reader compares the calls'
 * starts with it.  The cost is two records per span, none per call.
 *
 * Invariants: a span's id is process-wide and taken in the order spans
 * begin (so a session's ids follow their starts); each record carries the
 * whole row, the one from end() replacing the one from begin(); a span
 * ends on the tape it began on, even when the default tape changed
 * meanwhile (engine slots never move); a Context holds only str and
 * bytes, never a cycle, yet is a GC type as every heap type here.
 */
#include "../sink.h"

typedef struct ct_context {
    PyObject_HEAD PyObject *kind, *name; /* bytes: UTF-8 */
    PyObject *tape;                      /* the tape path given, or NULL: the default tape */
    ct_engine_slot *slot;                /* of the open span, NULL: none open */
    uint64_t id;                         /* of the open span */
    uint64_t start;                      /* its start, CLOCK_MONOTONIC ns */
} ct_context;

/* `text` (a str) as UTF-8 bytes, characters that have none (lone
 * surrogates) replaced: a PostgreSQL text column takes only UTF-8.  New
 * reference, or NULL with ValueError (NUL, which no text column takes)
 * or TypeError naming `what`. */
static PyObject *utf8_of(PyObject *text, const char *what)
{
    if (!PyUnicode_Check(text))
        return PyErr_Format(PyExc_TypeError, "a Context's %s must be a str, not %R", what, text);
    if (PyUnicode_FindChar(text, 0, 0, PyUnicode_GET_LENGTH(text), 1) != -1)
        return PyErr_Format(PyExc_ValueError, "a Context's %s cannot hold a NUL character: %R",
                            what, text);
    return PyUnicode_AsEncodedString(text, "utf-8", "replace");
}

static PyObject *Context_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"name", "kind", "tape", NULL};
    PyObject *name, *kind = NULL, *tape = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O$O:Context", kwlist, &name, &kind, &tape))
        return NULL;
    PyObject *name_b = utf8_of(name, "name");
    PyObject *kind_b = name_b ? (kind ? utf8_of(kind, "kind") : PyBytes_FromString("test")) : NULL;
    PyObject *path = kind_b && tape != Py_None ? PyOS_FSPath(tape) : NULL;
    if (!kind_b || (tape != Py_None && !path)) {
        Py_XDECREF(name_b);
        Py_XDECREF(kind_b);
        return NULL;
    }
    ct_context *c = (ct_context *)type->tp_alloc(type, 0);
    if (!c) {
        Py_DECREF(name_b);
        Py_DECREF(kind_b);
        Py_XDECREF(path);
        return NULL;
    }
    c->name = name_b;
    c->kind = kind_b;
    c->tape = path;
    return (PyObject *)c;
}

/* Sends the span's row (end 0: still open) to its tape.  Never raises. */
static void send(ct_state *st, ct_context *c, uint64_t end)
{
    if (st->rec.finalized)
        return; /* the interpreter is ending: its engines are being written out */
    context_rec r = {c->id,
                     c->start,
                     end,
                     (const uint8_t *)PyBytes_AS_STRING(c->kind),
                     (const uint8_t *)PyBytes_AS_STRING(c->name),
                     (size_t)PyBytes_GET_SIZE(c->kind),
                     (size_t)PyBytes_GET_SIZE(c->name)};
    uint8_t storage[256];
    wbuf b;
    wbuf_init(&b, storage, sizeof storage);
    rec_put_context(&b, &r);
    if (!b.failed)
        ct_append(st, c->slot, b.data, b.len);
    wbuf_free(&b);
}

static PyObject *Context_begin(PyObject *self, PyObject *unused)
{
    (void)unused;
    ct_context *c = (ct_context *)self;
    ct_state *st = PyType_GetModuleState(Py_TYPE(self));
    if (c->slot) {
        PyErr_SetString(PyExc_RuntimeError, "this Context's span is open already: end() it first");
        return NULL;
    }
    ct_engine_slot *slot = ct_engine_for(st, c->tape);
    if (!slot)
        return NULL;
    c->slot = slot;
    c->id = ++st->rec.next_context;
    c->start = ct_now_ns();
    send(st, c, 0);
    Py_RETURN_NONE;
}

/* Closes the open span of `c` (if any) at `end`, never before its start. */
static void close_span(ct_context *c, uint64_t end)
{
    if (c->slot) {
        send(PyType_GetModuleState(Py_TYPE(c)), c, end > c->start ? end : c->start);
        c->slot = NULL;
    }
}

static PyObject *Context_end(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"at", NULL};
    PyObject *at = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|$O:end", kwlist, &at))
        return NULL;
    ct_context *c = (ct_context *)self;
    uint64_t end = ct_now_ns();
    if (at != Py_None) {
        unsigned long long v = PyLong_Check(at) ? PyLong_AsUnsignedLongLong(at) : 0;
        if (!PyLong_Check(at) || (v == (unsigned long long)-1 && PyErr_Occurred())) {
            PyErr_Clear();
            return PyErr_Format(PyExc_TypeError,
                                "at must be a time.monotonic_ns() reading (an int >= 0), not %R",
                                at);
        }
        end = v < end ? v : end; /* never after now */
    }
    close_span(c, end);
    Py_RETURN_NONE;
}

static PyObject *Context_enter(PyObject *self, PyObject *unused)
{
    PyObject *r = Context_begin(self, unused);
    if (!r)
        return NULL;
    Py_DECREF(r);
    return Py_NewRef(self);
}

static PyObject *Context_exit(PyObject *self, PyObject *args)
{
    (void)args;
    close_span((ct_context *)self, ct_now_ns());
    Py_RETURN_NONE;
}

static PyObject *Context_get_open(PyObject *self, void *unused)
{
    (void)unused;
    return PyBool_FromLong(((ct_context *)self)->slot != NULL);
}

static PyObject *Context_get_text(PyObject *self, void *which)
{
    ct_context *c = (ct_context *)self;
    PyObject *b = which ? c->kind : c->name;
    return PyUnicode_DecodeUTF8(PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b), "replace");
}

static int Context_traverse(PyObject *self, visitproc visit, void *arg)
{
    ct_context *c = (ct_context *)self;
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(c->tape);
    return 0;
}

static int Context_clear(PyObject *self)
{
    ct_context *c = (ct_context *)self;
    Py_CLEAR(c->kind);
    Py_CLEAR(c->name);
    Py_CLEAR(c->tape);
    return 0;
}

static void Context_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Context_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMethodDef Context_methods[] = {
    {"begin", Context_begin, METH_NOARGS,
     "begin(): opens a new span of this name now (RuntimeError while one is open)."},
    {"end", (PyCFunction)(void (*)(void))Context_end, METH_VARARGS | METH_KEYWORDS,
     "end(*, at=None): closes the open span now, or at `at` (a time.monotonic_ns()\n"
     "reading, never later than now); nothing when none is open."},
    {"__enter__", Context_enter, METH_NOARGS, NULL},
    {"__exit__", Context_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Context_getset[] = {
    {"name", Context_get_text, NULL, "the span's name (a test's node id)", NULL},
    {"kind", Context_get_text, NULL, "what it names ('test')", (void *)1},
    {"open", Context_get_open, NULL, "True between begin() and end()", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Context_slots[] = {
    {Py_tp_new, Context_new},
    {Py_tp_dealloc, Context_dealloc},
    {Py_tp_traverse, Context_traverse},
    {Py_tp_clear, Context_clear},
    {Py_tp_methods, Context_methods},
    {Py_tp_getset, Context_getset},
    {Py_tp_doc, "Context(name, kind='test', *, tape=None): a span of this process's time\n"
                "named on the tape (the default tape, or `tape`), for Tape.search(test=) and\n"
                "Call.test.  Each begin() opens a new span, end() closes it.\n\n"
                ">>> with _native.Context('tests/test_cart.py::test_total'):\n"
                "...     run_the_test()"},
    {0, NULL},
};

PyType_Spec Context_spec = {
    .name = "calltape._native.Context",
    .basicsize = sizeof(ct_context),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = Context_slots,
};
