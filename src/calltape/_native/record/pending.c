/*
 * pending.c - records generators, coroutines and async generators when
 * they finish, not when they are created.
 *
 * A Pending object wraps the generator or coroutine returned by a recorded
 * function and forwards send/throw/close (and __next__/__await__); the call
 * is recorded once, when the inner object returns (RETURNED, with the value
 * of StopIteration), raises (RAISED), or is closed or dropped before it
 * finished (CLOSED).  An async generator is wrapped by an AsyncGenProxy whose
 * __anext__/asend/athrow/aclose return Pending "steps" that forward to the
 * inner awaitables and finish the call on StopAsyncIteration or an error.
 * While the inner object runs, the per-thread parent is the recorded call,
 * so calls made inside a generator link to it.
 */
#include "pending.h"

#include "timer.h"

enum { MODE_ITER, MODE_STEP, MODE_CLOSE_STEP };

typedef struct Pending {
    PyObject_HEAD PyObject *inner;
    ct_deferred d;   /* owned unless `owner` is set */
    PyObject *owner; /* for steps: the AsyncGenProxy that owns the call */
    int mode;
} Pending;

static ct_deferred *deferred_of(Pending *p)
{
    return p->owner ? &((Pending *)p->owner)->d : &p->d;
}

/* yields=True: keeps the encoded value a generator yielded, up to the
 * recorder's max_value_bytes in all; later ones are only counted. */
static void keep_yield(ct_deferred *d, PyObject *v)
{
    Recorder *r = d->recorder;
    if (!r) /* only timed (flat_profile): nothing is kept */
        return;
    if (d->yields.len >= (size_t)r->max_value_bytes) {
        d->nomitted++;
        return;
    }
    ct_thread *t = ct_thread_get();
    ct_capture cap = {r->st, r->max_value_bytes, 0, ct_redact_active(r->st, &r->redact),
                      NULL,  r->pickle};
    t->busy++;
    ct_capture_value(&cap, &d->yields, v);
    t->busy--;
    d->nyields++;
}

void ct_deferred_finish(ct_deferred *d, int outcome, PyObject *result, PyObject *exc)
{
    if (d->done || !d->recorder)
        return;
    d->done = 1;
    uint64_t end = ct_call_end(&d->ci);
    PyObject *saved = ct_fetch_exc();
    ct_site site = ct_recorder_site(d->recorder);
    if (d->want_yields && !d->yields.failed) {
        /* LIST of the values kept, then Truncated("yields", n) when n were left out */
        wbuf list;
        wbuf_init(&list, NULL, 0);
        wbuf_byte(&list, WIRE_LIST);
        wbuf_varint(&list, d->nyields + (d->nomitted ? 1 : 0));
        wbuf_put(&list, d->yields.data, d->yields.len);
        if (d->nomitted) {
            wire_tagged_bytes(&list, WIRE_TRUNCATED, "yields", 6);
            wbuf_varint(&list, d->nomitted);
        }
        ct_emit_site_call(d->recorder->st, &site, d->slot, &d->ci, d->args.data, d->args.len, end,
                          outcome, result, exc, NULL, NULL, list.failed ? NULL : &list);
        wbuf_free(&list);
    } else {
        ct_emit_site_call(d->recorder->st, &site, d->slot, &d->ci, d->args.data, d->args.len, end,
                          outcome, result, exc, NULL, NULL, NULL);
    }
    PyErr_Clear();
    if (d->timed) /* @timer of a generator or coroutine: its lines now */
        ct_timer_after_made(d->recorder, d->slot, &d->ci, end, &d->timer_args,
                            outcome == OUTCOME_RAISED ? exc : NULL);
    PyErr_Clear();
    ct_restore_exc(saved);
    wbuf_free(&d->args);
    wbuf_free(&d->yields);
    wbuf_free(&d->timer_args);
}

/* Runs one step of the inner object; `how` 0: send(arg), 1: throw(args). */
static PyObject *step(Pending *p, int how, PyObject *arg)
{
    ct_deferred *d = deferred_of(p);
    ct_thread *t = ct_thread_get();
    uint64_t parent = t->parent, depth = t->depth;
    if (!d->done) {
        t->parent = d->ci.seq;
        t->depth = d->ci.depth + 1;
    }
    PyObject *res = NULL;
    int status;
    ct_flat_run_resume(d->flat);
    if (how == 0) {
        status = PyIter_Send(p->inner, arg ? arg : Py_None, &res);
    } else {
        PyObject *meth = PyObject_GetAttrString(p->inner, "throw");
        res = meth ? PyObject_Call(meth, arg, NULL) : NULL;
        Py_XDECREF(meth);
        status = res ? PYGEN_NEXT : PYGEN_ERROR;
        if (!res && PyErr_ExceptionMatches(PyExc_StopIteration)) {
            PyObject *exc = ct_fetch_exc();
            res = PyObject_GetAttrString(exc, "value");
            Py_DECREF(exc);
            status = res ? PYGEN_RETURN : PYGEN_ERROR;
        }
    }
    /* inside the recorded call still: the inner calls are its children */
    ct_flat_run_suspend(d->flat, status != PYGEN_NEXT, d->recorder && !d->done ? d->slot : NULL);
    t->parent = parent;
    t->depth = depth;
    if (status == PYGEN_NEXT) {
        if (d->want_yields && !d->done && p->mode == MODE_ITER)
            keep_yield(d, res);
        return res;
    }
    if (status == PYGEN_RETURN) {
        if (p->mode == MODE_ITER)
            ct_deferred_finish(d, OUTCOME_RETURNED, res, NULL);
        else if (p->mode == MODE_CLOSE_STEP)
            ct_deferred_finish(d, OUTCOME_CLOSED, NULL, NULL);
        /* a step's return value is what the async generator yielded */
        if (res == Py_None) {
            Py_DECREF(res);
            PyErr_SetNone(PyExc_StopIteration);
        } else {
            PyObject *stop = PyObject_CallOneArg(PyExc_StopIteration, res);
            Py_DECREF(res);
            if (stop) {
                PyErr_SetObject(PyExc_StopIteration, stop);
                Py_DECREF(stop);
            }
        }
        return NULL;
    }
    PyObject *exc = ct_fetch_exc();
    if (exc) {
        if (p->mode != MODE_ITER && PyErr_GivenExceptionMatches(exc, PyExc_StopAsyncIteration))
            ct_deferred_finish(d, p->mode == MODE_CLOSE_STEP ? OUTCOME_CLOSED : OUTCOME_RETURNED,
                               Py_None, NULL);
        else if (PyErr_GivenExceptionMatches(exc, PyExc_GeneratorExit))
            ct_deferred_finish(d, OUTCOME_CLOSED, NULL, NULL);
        else
            ct_deferred_finish(d, OUTCOME_RAISED, NULL, exc);
    }
    ct_restore_exc(exc);
    return NULL;
}

static PyObject *Pending_send(PyObject *self, PyObject *arg)
{
    return step((Pending *)self, 0, arg);
}

static PyObject *Pending_iternext(PyObject *self)
{
    PyObject *res = step((Pending *)self, 0, Py_None);
    if (!res && PyErr_ExceptionMatches(PyExc_StopIteration)) {
        /* tp_iternext may signal plain exhaustion without an exception */
        PyObject *exc = ct_fetch_exc();
        PyObject *value = PyObject_GetAttrString(exc, "value");
        if (value == Py_None) {
            Py_DECREF(value);
            Py_DECREF(exc);
            return NULL;
        }
        Py_XDECREF(value);
        ct_restore_exc(exc);
    }
    return res;
}

static PyObject *Pending_throw(PyObject *self, PyObject *args)
{
    return step((Pending *)self, 1, args);
}

static PyObject *Pending_close(PyObject *self, PyObject *unused)
{
    (void)unused;
    Pending *p = (Pending *)self;
    ct_deferred *d = deferred_of(p);
    ct_flat_run_resume(d->flat);
    PyObject *res = PyObject_CallMethod(p->inner, "close", NULL);
    ct_flat_run_suspend(d->flat, 1, NULL);
    if (res && p->mode == MODE_ITER)
        ct_deferred_finish(d, OUTCOME_CLOSED, NULL, NULL);
    return res;
}

static PyObject *Pending_self(PyObject *self, PyObject *unused)
{
    (void)unused;
    return Py_NewRef(self);
}

static PyObject *Pending_getattro(PyObject *self, PyObject *name)
{
    PyObject *v = PyObject_GenericGetAttr(self, name);
    if (v || !PyErr_ExceptionMatches(PyExc_AttributeError))
        return v;
    PyErr_Clear();
    return PyObject_GetAttr(((Pending *)self)->inner, name);
}

static PyObject *Pending_repr(PyObject *self)
{
    return PyUnicode_FromFormat("<calltape recording of %R>", ((Pending *)self)->inner);
}

static int Pending_traverse(Pending *p, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(p));
    Py_VISIT(p->inner);
    Py_VISIT(p->owner);
    Py_VISIT((PyObject *)p->d.recorder);
    return ct_flat_run_traverse(p->d.flat, visit, arg);
}

static int Pending_clear(Pending *p)
{
    Py_CLEAR(p->inner);
    Py_CLEAR(p->owner);
    Py_CLEAR(p->d.recorder);
    ct_flat_run_free(p->d.flat);
    p->d.flat = NULL;
    return 0;
}

static void Pending_finalize(PyObject *self)
{
    Pending *p = (Pending *)self;
    if (!p->owner && p->d.recorder && !p->d.done)
        ct_deferred_finish(&p->d, OUTCOME_CLOSED, NULL, NULL);
}

static void Pending_dealloc(Pending *p)
{
    PyTypeObject *tp = Py_TYPE(p);
    if (PyObject_CallFinalizerFromDealloc((PyObject *)p) < 0)
        return;
    PyObject_GC_UnTrack(p);
    Pending_clear(p); /* drops the recorder too */
    wbuf_free(&p->d.args);
    tp->tp_free((PyObject *)p);
    Py_DECREF(tp);
}

static PyObject *make_pending(PyTypeObject *tp, PyObject *inner, PyObject *owner, int mode)
{
    Pending *p = PyObject_GC_New(Pending, tp);
    if (!p)
        return NULL;
    memset(&p->d, 0, sizeof p->d);
    p->inner = inner; /* stolen */
    p->owner = Py_XNewRef(owner);
    p->mode = mode;
    PyObject_GC_Track(p);
    return (PyObject *)p;
}

/* ---- async generators ---- */

static PyObject *agen_step(PyObject *self, const char *method, PyObject *args, int mode)
{
    Pending *p = (Pending *)self;
    PyObject *meth = PyObject_GetAttrString(p->inner, method);
    if (!meth)
        return NULL;
    PyObject *awaitable = args ? PyObject_Call(meth, args, NULL) : PyObject_CallNoArgs(meth);
    Py_DECREF(meth);
    if (!awaitable)
        return NULL;
    ct_state *st = PyType_GetModuleState(Py_TYPE(self));
    return make_pending(st->type.Pending, awaitable, self, mode);
}

static PyObject *AGen_anext(PyObject *self)
{
    return agen_step(self, "__anext__", NULL, MODE_STEP);
}

static PyObject *AGen_asend(PyObject *self, PyObject *arg)
{
    PyObject *args = PyTuple_Pack(1, arg);
    PyObject *r = args ? agen_step(self, "asend", args, MODE_STEP) : NULL;
    Py_XDECREF(args);
    return r;
}

static PyObject *AGen_athrow(PyObject *self, PyObject *args)
{
    return agen_step(self, "athrow", args, MODE_STEP);
}

static PyObject *AGen_aclose(PyObject *self, PyObject *unused)
{
    (void)unused;
    return agen_step(self, "aclose", NULL, MODE_CLOSE_STEP);
}

PyObject *ct_pending_wrap(ct_state *st, PyObject *inner, ct_deferred *d, int kind)
{
    PyTypeObject *tp = kind == KIND_ASYNC_GENERATOR ? st->type.AsyncGenProxy : st->type.Pending;
    Pending *p = (Pending *)make_pending(tp, Py_NewRef(inner), NULL, MODE_ITER);
    if (!p) {
        Py_DECREF(inner);
        return NULL;
    }
    p->d = *d;
    memset(d, 0, sizeof *d);
    return (PyObject *)p;
}

static PyMethodDef Pending_methods[] = {
    {"send", Pending_send, METH_O, "Forwards send() and records the call when it finishes."},
    {"throw", Pending_throw, METH_VARARGS, "Forwards throw()."},
    {"close", Pending_close, METH_NOARGS,
     "Forwards close(); a call closed early is recorded as closed."},
    {"__await__", Pending_self, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot Pending_slots[] = {
    {Py_tp_dealloc, Pending_dealloc},
    {Py_tp_finalize, Pending_finalize},
    {Py_tp_traverse, Pending_traverse},
    {Py_tp_clear, Pending_clear},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, Pending_iternext},
    {Py_am_await, PyObject_SelfIter},
    {Py_tp_methods, Pending_methods},
    {Py_tp_getattro, Pending_getattro},
    {Py_tp_repr, Pending_repr},
    {0, NULL},
};

PyType_Spec Pending_spec = {
    .name = "calltape.Pending",
    .basicsize = sizeof(Pending),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = Pending_slots,
};

static PyMethodDef AGen_methods[] = {
    {"asend", AGen_asend, METH_O, NULL},
    {"athrow", AGen_athrow, METH_VARARGS, NULL},
    {"aclose", AGen_aclose, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot AGen_slots[] = {
    {Py_tp_dealloc, Pending_dealloc},   {Py_tp_finalize, Pending_finalize},
    {Py_tp_traverse, Pending_traverse}, {Py_tp_clear, Pending_clear},
    {Py_am_aiter, PyObject_SelfIter},   {Py_am_anext, AGen_anext},
    {Py_tp_methods, AGen_methods},      {Py_tp_getattro, Pending_getattro},
    {Py_tp_repr, Pending_repr},         {0, NULL},
};

PyType_Spec AsyncGenProxy_spec = {
    .name = "calltape.AsyncGenProxy",
    .basicsize = sizeof(Pending),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = AGen_slots,
};
