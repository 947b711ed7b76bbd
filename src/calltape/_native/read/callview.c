/*
 * callview.c - the Call view: one recorded call, its values rebuilt
 * lazily, once (args, defaults, result, bound, locals, globals, yields),
 * its times and measurements, previews and repr, its children and replay.
 * The other views are views.c.
 *
 * Invariants: a Call copies its encoded values when it is made, so it
 * stays valid after its search moved on or its tape was closed (only
 * values stored in the blob table then need the tape open); rebuilt values
 * are cached on the object and never rebuilt twice.  Anything the tape's
 * bytes do not rebuild is a TapeError naming the tape and the call, never
 * another exception type.
 */
#include "reader.h"

#include <stddef.h>
#include <structmember.h>

ct_call *ct_call_new(ct_tape *t, ct_function *fn, const seg_call *c, int64_t session)
{
    ct_state *st = ct_state_of((PyObject *)t);
    size_t at[VALUE_NSLOTS + 1] = {0};
    for (int i = 0; i < VALUE_NSLOTS; i++)
        at[i + 1] = at[i] + ((c->flags & value_flag((enum value_slot)i)) ? c->value[i].len : 0);
    ct_call *call = PyObject_GC_NewVar(ct_call, st->type.Call, (Py_ssize_t)at[VALUE_NSLOTS]);
    if (!call)
        return NULL;
    call->tape = (ct_tape *)Py_NewRef((PyObject *)t);
    call->fn = (ct_function *)Py_NewRef((PyObject *)fn);
    call->id = c->id;
    call->session = session;
    call->parent = c->parent;
    call->depth = c->depth;
    call->thread = c->thread;
    call->start = c->start;
    call->duration = c->duration;
    call->cpu_ns = c->cpu_ns;
    call->rss_before = c->rss_before;
    call->rss_after = c->rss_after;
    call->rss_peak = c->rss_peak;
    call->energy_pkg = c->energy_pkg;
    call->energy_dram = c->energy_dram;
    call->outcome = c->outcome;
    call->flags = c->flags;
    memcpy(call->value_at, at, sizeof at);
    call->rebuilt = call->result_set = 0;
    call->args = call->defaults = call->result = NULL;
    for (int i = 0; i < VALUE_NSLOTS; i++)
        if (at[i + 1] > at[i])
            memcpy(call->data + at[i], c->value[i].data, at[i + 1] - at[i]);
    PyObject_GC_Track(call);
    return call;
}

static int Call_traverse(ct_call *c, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(c));
    Py_VISIT(c->tape);
    Py_VISIT(c->fn);
    Py_VISIT(c->args);
    Py_VISIT(c->defaults);
    Py_VISIT(c->result);
    return 0;
}

static int Call_clear(ct_call *c)
{
    Py_CLEAR(c->tape);
    Py_CLEAR(c->fn);
    Py_CLEAR(c->args);
    Py_CLEAR(c->defaults);
    Py_CLEAR(c->result);
    c->rebuilt = c->result_set = 0;
    return 0;
}

static void Call_dealloc(ct_call *c)
{
    PyTypeObject *tp = Py_TYPE(c);
    PyObject_GC_UnTrack(c);
    Call_clear(c);
    tp->tp_free((PyObject *)c);
    Py_DECREF(tp);
}

static int call_alive(ct_call *c)
{
    if (c->tape && c->fn)
        return 0;
    PyErr_SetString(PyExc_ValueError, "this Call was cleared");
    return -1;
}

/* Sets the TapeError of call `c`, whose `what` ("its result") does not
 * rebuild, after the pending TapeError if any (see ct_tape_damaged).
 * Returns NULL. */
static PyObject *call_damaged(ct_call *c, const char *what)
{
    return ct_tape_damaged(c->tape, 0, "call %lld (%U), %s", (long long)c->id, c->fn->full, what);
}

/* The one value in the `n` bytes at `p` of call `c`, rebuilt: a new
 * reference, or NULL with call_damaged's TapeError (or RefusedGlobal, ...)
 * when it does not rebuild or does not fill the bytes. */
static PyObject *call_value(ct_call *c, const char *what, const uint8_t *p, size_t n)
{
    const uint8_t *end = p + n;
    PyObject *v = ct_tape_rebuild(c->tape, &p, end, NULL);
    if (v && p != end) {
        Py_CLEAR(v);
        PyObject *cls = ct_marker_type(ct_state_of((PyObject *)c), "TapeError");
        PyErr_SetString(cls ? cls : PyExc_ValueError, "bytes are left after its value");
    }
    return v ? v : call_damaged(c, what);
}

PyObject *ct_call_args(ct_call *c)
{
    if (c->rebuilt)
        return c->args;
    if (call_alive(c) < 0)
        return NULL;
    PyObject *args = PyDict_New(), *defaults = PySet_New(NULL), *v = NULL;
    PyObject *memo = PyList_New(0); /* the arguments are one group */
    if (!args || !defaults || !memo)
        goto error;
    if (c->flags & REC_HAS_ARGS) {
        PyObject *raw_names = NULL;
        PyObject *names = c->fn->names;
        if (c->flags & REC_UNBOUND) {
            raw_names = Py_BuildValue("(ss)", "args", "kwargs");
            if (!raw_names)
                goto error;
            names = raw_names;
        }
        const uint8_t *p = ct_call_value(c, VALUE_ARGS);
        const uint8_t *end = p + ct_call_value_len(c, VALUE_ARGS);
        Py_ssize_t i = 0;
        for (; p < end; i++) {
            int was_default = *p == WIRE_DEFAULT;
            v = ct_tape_rebuild(c->tape, &p, end, memo);
            if (!v) {
                Py_XDECREF(raw_names);
                call_damaged(c, "its arguments");
                goto error;
            }
            if (i < PyTuple_GET_SIZE(names)) {
                PyObject *name = PyTuple_GET_ITEM(names, i);
                if (PyDict_SetItem(args, name, v) < 0 ||
                    (was_default && PySet_Add(defaults, name) < 0)) {
                    Py_XDECREF(raw_names);
                    goto error;
                }
            }
            Py_CLEAR(v);
        }
        Py_ssize_t want = PyTuple_GET_SIZE(names);
        Py_XDECREF(raw_names);
        if (i != want) {
            ct_tape_damaged(c->tape, 0,
                            "call %lld (%U) holds %zd argument values for %zd parameters",
                            (long long)c->id, c->fn->full, i, want);
            goto error;
        }
    }
    Py_CLEAR(memo);
    PyObject *frozen = PyFrozenSet_New(defaults);
    Py_DECREF(defaults);
    if (!frozen) {
        Py_DECREF(args);
        return NULL;
    }
    if (c->rebuilt) {
        /* another thread rebuilt them while unpickling let it run: keep one */
        Py_DECREF(args);
        Py_DECREF(frozen);
        return c->args;
    }
    c->args = args;
    c->defaults = frozen;
    c->rebuilt = 1;
    return c->args;
error:
    Py_XDECREF(v);
    Py_XDECREF(memo);
    Py_XDECREF(args);
    Py_XDECREF(defaults);
    return NULL;
}

/* The return value or the ExceptionInfo, rebuilt once (borrowed). */
static PyObject *call_outcome_value(ct_call *c)
{
    if (c->result_set)
        return c->result;
    if (call_alive(c) < 0)
        return NULL;
    PyObject *v;
    if (ct_call_value_len(c, VALUE_RESULT))
        v = call_value(c, c->outcome == OUTCOME_RAISED ? "its exception" : "its result",
                       ct_call_value(c, VALUE_RESULT), ct_call_value_len(c, VALUE_RESULT));
    else
        v = Py_NewRef(Py_None);
    if (!v)
        return NULL;
    if (c->result_set) {
        /* another thread rebuilt it meanwhile: keep one */
        Py_DECREF(v);
        return c->result;
    }
    c->result = v;
    c->result_set = 1;
    return v;
}

static PyObject *Call_get_args(ct_call *c, void *unused)
{
    (void)unused;
    return Py_XNewRef(ct_call_args(c));
}

static PyObject *Call_get_defaults(ct_call *c, void *unused)
{
    (void)unused;
    return ct_call_args(c) ? Py_NewRef(c->defaults) : NULL;
}

static PyObject *Call_get_result(ct_call *c, void *which)
{
    int want_exception = which != NULL;
    if ((c->outcome == OUTCOME_RAISED) != want_exception)
        Py_RETURN_NONE;
    return Py_XNewRef(call_outcome_value(c));
}

/* Which parameters Bound leaves out (keep[i] = 0): those that took their
 * default, so that the call made again takes today's default object itself
 * (a sentinel keeps its identity).  A positional-only parameter before a
 * kept positional-only one, and every positional one when *args holds
 * values, cannot be left out. */
static void bound_keep(ct_call *c, PyObject *values, PyObject *names, const uint8_t *kinds,
                       Py_ssize_t n, uint8_t *keep)
{
    Py_ssize_t last_posonly = -1, varargs = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        int dflt = c->defaults && PySet_Contains(c->defaults, name) == 1;
        keep[i] = (uint8_t)!dflt;
        if (kinds[i] == 0 && !dflt)
            last_posonly = i;
        if (kinds[i] == 2)
            varargs = i;
    }
    PyErr_Clear();
    PyObject *extra =
        varargs >= 0 ? PyDict_GetItemWithError(values, PyTuple_GET_ITEM(names, varargs)) : NULL;
    int extra_args = extra && PyTuple_Check(extra) && PyTuple_GET_SIZE(extra) > 0;
    PyErr_Clear();
    for (Py_ssize_t i = 0; i < n; i++)
        if ((kinds[i] == 0 && i < last_posonly) || (extra_args && kinds[i] <= 1))
            keep[i] = 1;
}

static PyObject *Call_get_bound(ct_call *c, void *unused)
{
    (void)unused;
    PyObject *values = ct_call_args(c);
    if (!values)
        return NULL;
    static const uint8_t raw_kinds[2] = {2, 4}; /* *args, **kwargs */
    int unbound = (c->flags & REC_UNBOUND) != 0;
    Py_ssize_t n = unbound ? 2 : c->fn->nparams;
    const uint8_t *kinds = unbound ? raw_kinds : c->fn->kinds;
    ct_bound *b = NULL;
    PyObject *pos = PyList_New(0), *kw = PyDict_New(), *names = NULL;
    uint8_t keep_small[32], *keep = n <= 32 ? keep_small : PyMem_Malloc((size_t)n);
    if (!keep)
        PyErr_NoMemory();
    if (!pos || !kw || !keep)
        goto error;
    names = unbound ? Py_BuildValue("(ss)", "args", "kwargs") : Py_NewRef(c->fn->names);
    if (!names)
        goto error;
    bound_keep(c, values, names, kinds, n, keep);
    int gap = 0; /* a positional parameter was left out: the next go by keyword */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        PyObject *v = keep[i] ? PyDict_GetItemWithError(values, name) : NULL;
        if (!v) {
            if (PyErr_Occurred())
                goto error;
            gap |= kinds[i] <= 1;
            continue;
        }
        int rc;
        switch (kinds[i]) {
        case 0: /* positional-only */
            rc = PyList_Append(pos, v);
            break;
        case 1: /* positional or keyword */
            rc = gap ? PyDict_SetItem(kw, name, v) : PyList_Append(pos, v);
            break;
        case 2: /* *args */
            rc = PyList_SetSlice(pos, PyList_GET_SIZE(pos), PyList_GET_SIZE(pos), v);
            break;
        case 3: /* keyword-only */
            rc = PyDict_SetItem(kw, name, v);
            break;
        default: /* **kwargs */
            rc = PyDict_Update(kw, v);
            break;
        }
        if (rc < 0)
            goto error;
    }
    ct_state *st = ct_state_of((PyObject *)c);
    b = PyObject_GC_New(ct_bound, st->type.Bound);
    if (!b)
        goto error;
    b->args = PyList_AsTuple(pos);
    b->kwargs = Py_NewRef(kw);
    PyObject_GC_Track(b);
    if (!b->args)
        Py_CLEAR(b);
error:
    if (keep != keep_small)
        PyMem_Free(keep);
    Py_XDECREF(names);
    Py_XDECREF(pos);
    Py_XDECREF(kw);
    return (PyObject *)b;
}

static PyObject *Call_get_int(ct_call *c, void *which)
{
    switch ((int)(intptr_t)which) {
    case 0:
        return PyLong_FromLongLong(c->id);
    case 1:
        return PyLong_FromLongLong(c->session);
    case 2:
        if (!c->parent)
            Py_RETURN_NONE;
        return PyLong_FromLongLong(c->parent);
    case 3:
        return PyLong_FromLongLong(c->depth);
    case 4:
        return PyLong_FromLongLong(c->start);
    default:
        return PyLong_FromLongLong(c->duration);
    }
}

static PyObject *Call_get_fn_attr(ct_call *c, void *which)
{
    if (call_alive(c) < 0)
        return NULL;
    switch ((int)(intptr_t)which) {
    case 0:
        return Py_NewRef(c->fn->qualname);
    case 1:
        return Py_NewRef(c->fn->module);
    case 2:
        return Py_NewRef(c->fn->file);
    default:
        return PyLong_FromLongLong(c->fn->line);
    }
}

static PyObject *Call_get_time(ct_call *c, void *end)
{
    PyObject *t =
        ct_datetime_from_ns(ct_state_of((PyObject *)c), c->start + (end ? c->duration : 0));
    if (!t && c->tape && c->fn)
        ct_tape_damaged(c->tape, 1, "call %lld (%U), its %s time is out of range", (long long)c->id,
                        c->fn->full, end ? "end" : "start");
    return t;
}

static PyObject *Call_get_duration(ct_call *c, void *unused)
{
    (void)unused;
    return PyFloat_FromDouble((double)c->duration / 1e9);
}

static PyObject *Call_get_outcome(ct_call *c, void *unused)
{
    (void)unused;
    return PyUnicode_FromString(ct_outcome_name(c->outcome));
}

static PyObject *Call_get_captured(ct_call *c, void *unused)
{
    (void)unused;
    const char *name = ct_capture_names[rec_capture_of(c->flags)];
    if (!name)
        Py_RETURN_NONE;
    return PyUnicode_FromString(name);
}

static PyObject *Call_get_cpu_time(ct_call *c, void *unused)
{
    (void)unused;
    if (!(c->flags & REC_HAS_CPU))
        Py_RETURN_NONE;
    return PyFloat_FromDouble((double)c->cpu_ns / 1e9);
}

static PyObject *Call_get_memory(ct_call *c, void *unused)
{
    (void)unused;
    if (!(c->flags & REC_HAS_MEMORY))
        Py_RETURN_NONE;
    return Py_BuildValue("{s:L,s:L,s:L}", "rss_before", (long long)c->rss_before, "rss_after",
                         (long long)c->rss_after, "peak", (long long)c->rss_peak);
}

static PyObject *Call_get_energy(ct_call *c, void *unused)
{
    (void)unused;
    if (!(c->flags & REC_HAS_ENERGY))
        Py_RETURN_NONE;
    if (c->energy_dram == ENERGY_DRAM_NONE)
        return Py_BuildValue("{s:d}", "pkg", (double)c->energy_pkg);
    return Py_BuildValue("{s:d,s:d}", "pkg", (double)c->energy_pkg, "dram",
                         (double)(c->energy_dram - 1));
}

static PyObject *Call_get_thread(ct_call *c, void *name)
{
    if (call_alive(c) < 0)
        return NULL;
    PyObject *row = ct_tape_thread(c->tape, c->session, c->thread);
    if (!row)
        return NULL;
    if (row == Py_None)
        Py_RETURN_NONE;
    return Py_NewRef(PyTuple_GET_ITEM(row, name ? 1 : 0));
}

/* call.uuid: what calltape.timer wrote in its logs and results for this
 * call (engine's call_uuid of the session's pid, thread index and start). */
static PyObject *Call_get_uuid(ct_call *c, void *unused)
{
    (void)unused;
    if (call_alive(c) < 0)
        return NULL;
    PyObject *sessions = PyObject_CallMethod((PyObject *)c->tape, "sessions", NULL);
    PyObject *it = sessions ? PyObject_GetIter(sessions) : NULL;
    PyObject *s, *pid = NULL;
    while (it && !pid && (s = PyIter_Next(it))) {
        PyObject *id = PyObject_GetAttrString(s, "id");
        long long v = id ? PyLong_AsLongLong(id) : -1;
        Py_XDECREF(id);
        if (v == c->session)
            pid = PyObject_GetAttrString(s, "pid");
        Py_DECREF(s);
    }
    Py_XDECREF(it);
    Py_XDECREF(sessions);
    if (PyErr_Occurred()) {
        Py_XDECREF(pid);
        return NULL;
    }
    long long p = pid && pid != Py_None ? PyLong_AsLongLong(pid) : -1;
    Py_XDECREF(pid);
    if (p < 0) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    char out[37];
    call_uuid((int64_t)p, (uint64_t)c->thread, c->start, out);
    return PyUnicode_FromString(out);
}

static PyObject *Call_get_test(ct_call *c, void *unused)
{
    (void)unused;
    if (call_alive(c) < 0)
        return NULL;
    return ct_tape_test_of(c->tape, c->session, c->start);
}

/* The value slots a getter of its own shows, and how a message names them. */
typedef struct call_slot {
    enum value_slot slot;
    const char *what;
} call_slot;

static const call_slot CALL_LOCALS = {VALUE_LOCALS, "its locals"};
static const call_slot CALL_GLOBALS = {VALUE_GLOBALS, "its globals"};
static const call_slot CALL_YIELDS = {VALUE_YIELDS, "what it yielded"};

/* call.locals, call.globals, call.yielded: the value slot the closure (a
 * call_slot) names, rebuilt (a new dict or list each time), or None when
 * not recorded. */
static PyObject *Call_get_value_slot(ct_call *c, void *closure)
{
    const call_slot *s = closure;
    if (!(c->flags & value_flag(s->slot)))
        Py_RETURN_NONE;
    if (call_alive(c) < 0)
        return NULL;
    return call_value(c, s->what, ct_call_value(c, s->slot), ct_call_value_len(c, s->slot));
}

/* How the repr writes the argument value at `p` of parameter kind `kind`
 * (inspect.Parameter's): its prefix ("*", "**", or the name and "=" of a
 * keyword-only one, put in `out`), or 0 to leave it out (an empty *args or
 * **kwargs).  -1 with an exception. */
static int call_arg_prefix(ct_call *c, Py_ssize_t i, const uint8_t *p, const uint8_t *end,
                           wbuf *out)
{
    uint8_t kind = c->fn->kinds[i];
    if (kind == 2 || kind == 4) { /* *args, **kwargs */
        wire_tok t;
        const uint8_t *q = wire_next(p, end, &t);
        while (q && t.tag == WIRE_DEFAULT)
            q = wire_next(q, end, &t);
        if (q && (t.tag == WIRE_TUPLE || t.tag == WIRE_DICT) && t.u == 0)
            return 0;
        wbuf_put(out, "**", kind == 2 ? 1 : 2);
    } else if (kind == 3) { /* keyword-only */
        Py_ssize_t n = 0;
        const char *name = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(c->fn->names, i), &n);
        if (!name)
            return -1;
        wbuf_put(out, name, (size_t)n);
        wbuf_put(out, "=", 1);
    }
    return 1;
}

/* The bounded preview of the arguments (values in parameter order); when
 * `named`, as a call is written: each keyword-only one as name=value,
 * *args and **kwargs unpacked with * and ** (left out when empty). */
static PyObject *call_preview(ct_call *c, size_t limit, int named)
{
    wbuf out, prefix;
    wbuf_init(&out, NULL, 0);
    const uint8_t *p = ct_call_value(c, VALUE_ARGS);
    const uint8_t *end = p + ct_call_value_len(c, VALUE_ARGS);
    named = named && !(c->flags & REC_UNBOUND) && c->fn->kinds;
    Py_ssize_t nnames = named ? PyTuple_GET_SIZE(c->fn->names) : 0;
    for (Py_ssize_t i = 0, shown = 0; p && p < end; i++) {
        uint8_t store[128];
        wbuf_init(&prefix, store, sizeof store);
        int rc =
            named && i < c->fn->nparams && i < nnames ? call_arg_prefix(c, i, p, end, &prefix) : 1;
        if (rc < 0) {
            wbuf_free(&prefix);
            wbuf_free(&out);
            return NULL;
        }
        if (rc == 0) {
            wbuf_free(&prefix);
            p = wire_skip(p, end);
            continue;
        }
        if (shown++)
            wbuf_put(&out, ", ", 2);
        wbuf_put(&out, prefix.data, prefix.len);
        wbuf_free(&prefix);
        p = wire_preview(p, end, &out, limit);
    }
    return ct_wbuf_text(&out);
}

static PyObject *Call_get_preview(ct_call *c, void *unused)
{
    (void)unused;
    return call_preview(c, CT_PREVIEW_LIMIT, 0);
}

static PyObject *Call_get_function_obj(ct_call *c, void *unused)
{
    (void)unused;
    if (call_alive(c) < 0)
        return NULL;
    return Py_NewRef((PyObject *)c->fn);
}

static PyObject *Call_children(PyObject *self, PyObject *unused)
{
    (void)unused;
    if (call_alive((ct_call *)self) < 0)
        return NULL;
    return ct_call_children((ct_call *)self);
}

static PyObject *Call_replay(PyObject *self, PyObject *args, PyObject *kw)
{
    ct_call *c = (ct_call *)self;
    if (PyTuple_GET_SIZE(args)) {
        PyErr_SetString(PyExc_TypeError, "Call.replay() takes keyword arguments only");
        return NULL;
    }
    if (call_alive(c) < 0)
        return NULL;
    return ct_replay_call(c->tape, self, kw);
}

/* Two Calls are equal when they are the same call of the same tape file. */
static PyObject *Call_richcompare(PyObject *a, PyObject *b, int op)
{
    if ((op != Py_EQ && op != Py_NE) || Py_TYPE(a) != Py_TYPE(b))
        Py_RETURN_NOTIMPLEMENTED;
    ct_call *x = (ct_call *)a, *y = (ct_call *)b;
    int same = x->id == y->id;
    if (same && x->tape != y->tape) {
        if (!x->tape || !y->tape)
            same = 0;
        else if ((same = PyObject_RichCompareBool(x->tape->path, y->tape->path, Py_EQ)) < 0)
            return NULL;
    }
    return PyBool_FromLong(op == Py_EQ ? same : !same);
}

static Py_hash_t Call_hash(PyObject *self)
{
    Py_hash_t h = (Py_hash_t)((ct_call *)self)->id;
    return h == -1 ? -2 : h;
}

static PyObject *Call_repr(PyObject *self)
{
    ct_call *c = (ct_call *)self;
    if (call_alive(c) < 0)
        return NULL;
    char dur[32];
    ct_format_duration(dur, sizeof dur, (double)c->duration / 1e9);
    PyObject *args = call_preview(c, 120, 1), *outcome = NULL, *out = NULL;
    if (!args)
        return NULL;
    if (ct_call_value_len(c, VALUE_RESULT)) {
        wbuf res;
        wbuf_init(&res, NULL, 0);
        const uint8_t *p = ct_call_value(c, VALUE_RESULT);
        wire_preview(p, p + ct_call_value_len(c, VALUE_RESULT), &res, 80);
        PyObject *text = ct_wbuf_text(&res);
        outcome = text ? PyUnicode_FromFormat("%s %U", ct_outcome_name(c->outcome), text) : NULL;
        Py_XDECREF(text);
    } else {
        outcome = PyUnicode_FromString(ct_outcome_name(c->outcome));
    }
    if (outcome)
        out = PyUnicode_FromFormat("<Call %lld %U(%U) %U in %s>", (long long)c->id, c->fn->qualname,
                                   args, outcome, dur);
    Py_DECREF(args);
    Py_XDECREF(outcome);
    return out;
}

static PyGetSetDef Call_getset[] = {
    {"id", (getter)Call_get_int, NULL, "the call's id on the tape", (void *)0},
    {"session", (getter)Call_get_int, NULL, "the id of the recording session", (void *)1},
    {"parent", (getter)Call_get_int, NULL, "id of the nearest recorded caller, or None", (void *)2},
    {"depth", (getter)Call_get_int, NULL, "recorded callers above this call", (void *)3},
    {"start_ns", (getter)Call_get_int, NULL, "start, ns since the epoch", (void *)4},
    {"duration_ns", (getter)Call_get_int, NULL, "duration in ns", (void *)5},
    {"qualname", (getter)Call_get_fn_attr, NULL, "the function's qualified name", (void *)0},
    {"function", (getter)Call_get_fn_attr, NULL, "the function's qualified name", (void *)0},
    {"module", (getter)Call_get_fn_attr, NULL, "the function's module", (void *)1},
    {"file", (getter)Call_get_fn_attr, NULL, "the function's source file", (void *)2},
    {"line", (getter)Call_get_fn_attr, NULL, "the function's first line", (void *)3},
    {"func", (getter)Call_get_function_obj, NULL, "the recorded Function", NULL},
    {"start", (getter)Call_get_time, NULL, "start time (UTC datetime)", NULL},
    {"end", (getter)Call_get_time, NULL, "end time (UTC datetime)", (void *)1},
    {"duration", (getter)Call_get_duration, NULL, "duration in seconds", NULL},
    {"outcome", (getter)Call_get_outcome, NULL, "'returned', 'raised' or 'closed'", NULL},
    {"captured", (getter)Call_get_captured, NULL,
     "how the call was captured: 'decorator', 'monitor', 'flat', 'probe' or 'timer'; None on"
     " tapes recorded before the field",
     NULL},
    {"cpu_time", (getter)Call_get_cpu_time, NULL, "thread CPU seconds, None unless recorded", NULL},
    {"memory", (getter)Call_get_memory, NULL,
     "{'rss_before', 'rss_after', 'peak'} in bytes, None unless recorded", NULL},
    {"energy", (getter)Call_get_energy, NULL,
     "{'pkg': uJ, 'dram': uJ} (dram when the machine has it), None unless recorded", NULL},
    {"thread", (getter)Call_get_thread, NULL, "the thread's ident (threading.get_ident())", NULL},
    {"uuid", (getter)Call_get_uuid, NULL,
     "the call's UUID (str), as calltape.timer wrote it in its logs and results", NULL},
    {"thread_name", (getter)Call_get_thread, NULL, "the thread's name", (void *)1},
    {"test", (getter)Call_get_test, NULL,
     "the node id of the pytest test it was made in (pytest --calltape), or None", NULL},
    {"args", (getter)Call_get_args, NULL, "parameter name -> rebuilt value", NULL},
    {"defaults", (getter)Call_get_defaults, NULL, "names of arguments that took their default",
     NULL},
    {"bound", (getter)Call_get_bound, NULL,
     "Bound: args and kwargs to call the function again (defaulted parameters left out)", NULL},
    {"result", (getter)Call_get_result, NULL, "the rebuilt return value (None if it raised)", NULL},
    {"exception", (getter)Call_get_result, NULL, "ExceptionInfo when the call raised, else None",
     (void *)1},
    {"locals", (getter)Call_get_value_slot, NULL,
     "dict of the locals at return or raise; None unless recorded with locals=True",
     (void *)&CALL_LOCALS},
    {"globals", (getter)Call_get_value_slot, NULL,
     "dict of the module globals the function read, at entry; None unless recorded with"
     " globals=True",
     (void *)&CALL_GLOBALS},
    {"yielded", (getter)Call_get_value_slot, NULL,
     "list of what a generator recorded with yields=True yielded (ending in"
     " Truncated('yields', n) when n more were left out); None otherwise",
     (void *)&CALL_YIELDS},
    {"preview", (getter)Call_get_preview, NULL, "bounded, sanitized text of the arguments", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyObject *Call_readable(PyObject *self, PyObject *unused)
{
    (void)unused;
    return ct_call_readable((ct_call *)self);
}

/* call.readable_slot(name): "locals", "globals" or "yielded". */
static PyObject *Call_readable_slot(PyObject *self, PyObject *name)
{
    static const call_slot *const slots[] = {&CALL_LOCALS, &CALL_GLOBALS, &CALL_YIELDS};
    static const char *const names[] = {"locals", "globals", "yielded"};
    for (int i = 0; i < 3; i++)
        if (PyUnicode_Check(name) && PyUnicode_CompareWithASCIIString(name, names[i]) == 0)
            return ct_call_readable_slot((ct_call *)self, slots[i]->slot);
    return PyErr_Format(PyExc_ValueError,
                        "readable_slot() takes 'locals', 'globals' or 'yielded', not %.200R", name);
}

/* call.stored(name): "args", "result", "locals", "globals" or "yielded". */
static PyObject *Call_stored(PyObject *self, PyObject *name)
{
    static const char *const names[VALUE_NSLOTS] = {
        [VALUE_ARGS] = "args",       [VALUE_RESULT] = "result",  [VALUE_LOCALS] = "locals",
        [VALUE_GLOBALS] = "globals", [VALUE_YIELDS] = "yielded",
    };
    for (int i = 0; i < VALUE_NSLOTS; i++)
        if (PyUnicode_Check(name) && PyUnicode_CompareWithASCIIString(name, names[i]) == 0)
            return ct_call_stored((ct_call *)self, (enum value_slot)i);
    return PyErr_Format(PyExc_ValueError,
                        "stored() takes 'args', 'result', 'locals', 'globals' or 'yielded', not "
                        "%.200R",
                        name);
}

static PyMethodDef Call_methods[] = {
    {"stored", Call_stored, METH_O,
     "stored(name) -> the call's 'args', 'result', 'locals', 'globals' or 'yielded' as the\n"
     "tape stores them, nothing rebuilt: each value {'type', 'preview'} with its 'items',\n"
     "'attributes' or 'contents' to any depth; None when not recorded.\n\n"
     ">>> tape.call(42).stored('args')['cart']['attributes']['items']"},
    {"readable", Call_readable, METH_NOARGS,
     "readable() -> (args, defaults, outcome): the values for reading, each rebuilt on its\n"
     "own (one that cannot be rebuilt here is calltape.Unreadable(type, preview, reason)),\n"
     "the names of arguments that took their default, and the result or ExceptionInfo.\n\n"
     ">>> args, defaults, result = tape.call(42).readable()"},
    {"readable_slot", Call_readable_slot, METH_O,
     "readable_slot(name) -> the call's 'locals' or 'globals' (a dict) or what it 'yielded'\n"
     "(a list), each entry rebuilt on its own as readable() does, or None when not recorded.\n\n"
     ">>> tape.call(42).readable_slot('locals')"},
    {"children", Call_children, METH_NOARGS,
     "children() -> list of the recorded calls this call made directly, oldest first."},
    {"replay", (PyCFunction)(void (*)(void))Call_replay, METH_VARARGS | METH_KEYWORDS,
     "replay(*, rel=0.0, abs=0.0, globals=None, record=False) -> Outcome\n\n"
     "Calls the function again, today's code, with the recorded arguments, and compares\n"
     "with what was recorded; see Tape.replay.\n\n"
     ">>> outcome = tape.call(42).replay(rel=1e-9)\n"
     ">>> outcome.ok, outcome.result, outcome.expected, outcome.diff"},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot Call_slots[] = {
    {Py_tp_dealloc, Call_dealloc},
    {Py_tp_traverse, Call_traverse},
    {Py_tp_clear, Call_clear},
    {Py_tp_getset, Call_getset},
    {Py_tp_methods, Call_methods},
    {Py_tp_repr, Call_repr},
    {Py_tp_richcompare, Call_richcompare},
    {Py_tp_hash, Call_hash},
    {Py_tp_doc, "One recorded call; its values are rebuilt on first access, once.\n\n"
                ">>> c = tape.search(function='price', limit=1)[0]\n"
                ">>> c.args, c.result, c.duration, c.thread"},
    {0, NULL},
};

PyType_Spec Call_spec = {
    .name = "calltape.Call",
    .basicsize = offsetof(ct_call, data),
    .itemsize = 1,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = Call_slots,
};
