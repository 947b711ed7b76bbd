/*
 * hook.c - the ProbeHook type of calltape.probes: one target's code object
 * and the instruments hung on it, fired from sys.monitoring callbacks on
 * CPython 3.12+.  A started hook sets LOCAL events (PY_START, and
 * PY_RETURN when an instrument fires at return, error or end) on its code
 * object alone, with calltape's probe tool id PROBE_TOOL_ID (3: the
 * monitor and `calltape run` hold PROFILER_ID, 2, and locals=True holds 4:
 * all run together);
 * PY_UNWIND, which sys.monitoring only has as a global event, is set while
 * some started hook needs it.  A stopped hook has no events at all: the
 * target runs as if no probe existed.
 *
 * On CPython 3.11 a started hook has every reference to its function
 * replaced by a ProbeWrapper (patch.c), whose call (ct_probe_wrapper_call)
 * fires the instruments through the same on_call and on_end as the
 * callbacks: the target's frame is caught by a profile function set for
 * the one call, taken off at the call's first event.
 *
 * At a call the namespace (the arguments by name, args, kwargs, start,
 * now, frame) is built only when an instrument needs one (an expression
 * naming something, or a Python instrument); each call that has return,
 * error or end instruments pushes an entry on this thread's probe stack
 * (its start time and namespace), popped when the frame returns or unwinds.
 *
 * Invariants: the callbacks never raise into the target and leave any
 * exception on its way (PY_UNWIND) as it was; while an instrument fires on
 * a thread, probes on that thread are off (an expression calling its own
 * target does not recurse); the registry (module state probes.registry,
 * code -> hook) holds exactly the started hooks.
 */
#include "probes.h"

#include <pthread.h>
#include <structmember.h>

#if PY_VERSION_HEX >= 0x030C0000
#define PROBE_SYSMON 1
#else
#define PROBE_SYSMON 0
#endif

#define PROBE_TOOL_ID 3

/* One call of a probed function on this thread's stack. */
typedef struct probe_frame {
    PyCodeObject *code; /* borrowed: the hook holds it */
    ProbeHook *hook;    /* strong */
    PyObject *ns;       /* strong, or NULL */
    uint64_t start_ns;
    double start_wall;
} probe_frame;

static __attribute__((tls_model("initial-exec"))) _Thread_local struct {
    probe_frame *v;
    size_t n, cap;
    int busy;
} probe_tls;

/* The probe stack's array when its thread ends (its entries hold Python
 * references only while a probed call runs: a thread that ends has none). */
static pthread_key_t probe_key;
static pthread_once_t probe_key_once = PTHREAD_ONCE_INIT;

static void stack_release(void *p)
{
    (void)p;
    if (probe_tls.n == 0) {
        PyMem_RawFree(probe_tls.v);
        probe_tls.v = NULL;
        probe_tls.cap = 0;
    }
}

static void key_make(void)
{
    (void)pthread_key_create(&probe_key, stack_release);
}

/* ---- sys.monitoring --------------------------------------------------------- */

#if PROBE_SYSMON
static PyObject *sysmon(const char *name, const char *fmt, ...)
{
    PyObject *sm = PySys_GetObject("monitoring"); /* borrowed */
    if (!sm) {
        PyErr_SetString(PyExc_RuntimeError, "probes need sys.monitoring (Python 3.12+)");
        return NULL;
    }
    PyObject *fn = PyObject_GetAttrString(sm, name);
    if (!fn)
        return NULL;
    va_list va;
    va_start(va, fmt);
    PyObject *args = Py_VaBuildValue(fmt, va);
    va_end(va);
    PyObject *r = args ? PyObject_CallObject(fn, args) : NULL;
    Py_XDECREF(args);
    Py_DECREF(fn);
    return r;
}

static long event_bit(const char *name)
{
    PyObject *sm = PySys_GetObject("monitoring");
    PyObject *events = sm ? PyObject_GetAttrString(sm, "events") : NULL;
    PyObject *ev = events ? PyObject_GetAttrString(events, name) : NULL;
    long bit = ev ? PyLong_AsLong(ev) : -1;
    Py_XDECREF(ev);
    Py_XDECREF(events);
    return bit;
}
#endif

PyObject *ct_probe_tool_py(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return PROBE_SYSMON ? PyLong_FromLong(PROBE_TOOL_ID) : Py_NewRef(Py_None);
}

/* ---- firing ------------------------------------------------------------------ */

/* The namespace's names, interned once (module state probes.keys). */
enum probe_key {
    PK_ARGS,
    PK_KWARGS,
    PK_START,
    PK_FRAME,
    PK_NOW,
    PK_END,
    PK_ELAPSED,
    PK_RESULT,
    PK_EXCEPTION,
    PK_COUNT
};
static const char *const key_names[PK_COUNT] = {"args", "kwargs",  "start",  "frame",    "now",
                                                "end",  "elapsed", "result", "exception"};

static PyObject *key(ProbeHook *h, enum probe_key k)
{
    return PyTuple_GET_ITEM(((ct_state *)PyModule_GetState(h->module))->probes.keys, k);
}

/* Sets ns[key] = v and releases v (a new reference or NULL: -1). */
static int ns_set(ProbeHook *h, PyObject *ns, enum probe_key k, PyObject *v)
{
    if (!v)
        return -1;
    int r = PyDict_SetItem(ns, key(h, k), v);
    Py_DECREF(v);
    return r;
}

/* The namespace of a call of `h` whose frame is `frame` (the arguments by
 * name, args, kwargs, start, now, frame).  New reference or NULL. */
static PyObject *ns_for_call(ProbeHook *h, PyFrameObject *frame, double wall)
{
    if (!frame) { /* 3.11: a generator function's call, whose frame begins later */
        PyErr_SetString(PyExc_RuntimeError, "the call's frame is not known at this event");
        return NULL;
    }
    PyCodeObject *co = h->code;
    PyObject *ns = PyDict_New(), *args = NULL, *kwargs = NULL, *v = NULL, *locals = NULL;
    if (!ns || !(kwargs = PyDict_New()))
        goto error;
    int nargs = co->co_argcount, nkw = co->co_kwonlyargcount;
    int varargs = (co->co_flags & CO_VARARGS) != 0, varkw = (co->co_flags & CO_VARKEYWORDS) != 0;
    PyObject *names = Py_NewRef(h->varnames);
    locals = PyFrame_GetLocals(frame); /* 3.12: a dict; 3.13: a proxy */
    if (!locals)
        goto error_names;
    Py_ssize_t extra = 0;
    PyObject *star = NULL;
    for (int i = 0; i < nargs + nkw + varargs + varkw; i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        if (PyDict_CheckExact(locals)) {
            v = Py_XNewRef(PyDict_GetItemWithError(locals, name));
        } else {
            v = PyObject_GetItem(locals, name);
        }
        if (!v) { /* deleted already: left out */
            PyErr_Clear();
            continue;
        }
        if (PyDict_SetItem(ns, name, v) < 0)
            goto error_names;
        if (i >= nargs && i < nargs + nkw && PyDict_SetItem(kwargs, name, v) < 0)
            goto error_names;
        if (varargs && i == nargs + nkw && PyTuple_Check(v)) {
            star = v; /* kept in ns */
            extra = PyTuple_GET_SIZE(v);
        }
        if (varkw && i == nargs + nkw + varargs && PyDict_Check(v) && PyDict_Update(kwargs, v) < 0)
            goto error_names;
        Py_CLEAR(v);
    }
    Py_CLEAR(locals);
    args = PyTuple_New(nargs + extra);
    if (!args)
        goto error_names;
    for (int i = 0; i < nargs; i++) {
        PyObject *a = PyDict_GetItemWithError(ns, PyTuple_GET_ITEM(names, i));
        PyTuple_SET_ITEM(args, i, Py_NewRef(a ? a : Py_None));
    }
    for (Py_ssize_t i = 0; i < extra; i++)
        PyTuple_SET_ITEM(args, nargs + i, Py_NewRef(PyTuple_GET_ITEM(star, i)));
    Py_DECREF(names);
    if (PyDict_SetItem(ns, key(h, PK_ARGS), args) < 0 ||
        PyDict_SetItem(ns, key(h, PK_KWARGS), kwargs) < 0 ||
        ns_set(h, ns, PK_START, PyFloat_FromDouble(wall)) < 0 ||
        PyDict_SetItem(ns, key(h, PK_FRAME), (PyObject *)frame) < 0)
        goto error;
    if (h->need_now && h->now_fn != Py_None &&
        ns_set(h, ns, PK_NOW, PyObject_CallNoArgs(h->now_fn)) < 0)
        goto error;
    Py_DECREF(args);
    Py_DECREF(kwargs);
    return ns;
error_names:
    Py_XDECREF(v);
    Py_XDECREF(locals);
    Py_DECREF(names);
error:
    Py_XDECREF(args);
    Py_XDECREF(kwargs);
    Py_XDECREF(ns);
    return NULL;
}

/* The value of a one-name expression, found as eval would find it (the
 * namespace, the globals, the builtins) without running it: a new
 * reference, or NULL without an exception when it must be run (not a bare
 * name, or not found: eval raises the NameError). */
static PyObject *bare_value(ProbeHook *h, ProbeInstrument *in, PyObject *ns)
{
    if (!in->bare)
        return NULL;
    PyObject *v = PyDict_GetItemWithError(ns, in->bare);
    if (!v && !PyErr_Occurred())
        v = PyDict_GetItemWithError(h->globals, in->bare);
    if (!v && !PyErr_Occurred())
        v = PyDict_GetItemWithError(PyEval_GetBuiltins(), in->bare);
    PyErr_Clear();
    return Py_XNewRef(v);
}

/* The index of in's parameter when its value is one parameter's name that
 * the namespace's own names do not shadow, among the first `n` names of
 * the code; -1 when not.  Names compared by identity: the code's names, the
 * keys and `bare` are all interned. */
static int param_index(ProbeHook *h, ProbeInstrument *in, int n)
{
    if (!in->bare || in->kind == PKIND_PY || in->kind == PKIND_RECORD)
        return -1;
    for (int k = PK_ARGS; k <= PK_NOW; k++) /* the call's namespace sets these after */
        if (key(h, (enum probe_key)k) == in->bare)
            return -1;
    for (int i = 0; i < n && i < PyTuple_GET_SIZE(h->varnames); i++)
        if (PyTuple_GET_ITEM(h->varnames, i) == in->bare)
            return i;
    return -1;
}

/* A C instrument's value that is one parameter's name, at the call event:
 * read from the frame (PyFrame_GetVar) on 3.12+, or on 3.11 from the
 * positional arguments `args` of a call that binds them in order (the
 * wrapper's, when ct_probe_wrapper_call found it so), without building the
 * namespace, where the parameters hold their values at the call.  A new
 * reference, or NULL without an exception when the namespace must be built
 * (another event, a name that is not a parameter or that the namespace's
 * own names shadow, a Python or record instrument). */
static PyObject *param_at_call(ProbeHook *h, ProbeInstrument *in, int ev, PyFrameObject *frame,
                               PyObject *const *args)
{
#if PY_VERSION_HEX >= 0x030C0000
    (void)args;
    if (ev != PEV_CALL || !in->bare || !frame || in->kind == PKIND_PY || in->kind == PKIND_RECORD)
        return NULL;
    PyCodeObject *co = h->code;
    int n = co->co_argcount + co->co_kwonlyargcount + ((co->co_flags & CO_VARARGS) != 0) +
            ((co->co_flags & CO_VARKEYWORDS) != 0);
    if (param_index(h, in, n) < 0)
        return NULL;
    PyObject *v = PyFrame_GetVar(frame, in->bare);
    if (!v)
        PyErr_Clear(); /* deleted already: the namespace's way (left out) */
    return v;
#else
    (void)frame;
    int i = args && ev == PEV_CALL ? param_index(h, in, h->code->co_argcount) : -1;
    return i < 0 ? NULL : Py_NewRef(args[i]);
#endif
}

/* Clears a pending exception unless the user must see it: a
 * KeyboardInterrupt (Ctrl-C while an instrument ran) or a MemoryError,
 * which the callbacks hand on to the target's frame. */
static void clear_unless_interrupt(void)
{
    if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_KeyboardInterrupt) &&
        !PyErr_ExceptionMatches(PyExc_MemoryError))
        PyErr_Clear();
}

/* Fires the instruments of `h` on event `ev` with namespace *ns (built by
 * `build` on first need when NULL).  Calls on_expire for those whose
 * lifespan ended.  Leaves no exception set but a KeyboardInterrupt or a
 * MemoryError (the instruments after it do not fire). */
static void fire_all(ProbeHook *h, int ev, PyObject **ns, PyFrameObject *frame,
                     PyObject *const *args, double wall, ct_probe_call *call)
{
    PyObject *insts = Py_NewRef(h->instruments);
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(insts); i++) {
        ProbeInstrument *in = (ProbeInstrument *)PyTuple_GET_ITEM(insts, i);
        if (!(in->events & ev) || in->disabled || in->expired)
            continue;
        if (in->expires && wall >= in->expires) {
            in->expired = 1;
            if (h->on_expire != Py_None) {
                PyObject *r = PyObject_CallOneArg(h->on_expire, (PyObject *)in);
                Py_XDECREF(r);
                PyErr_Clear();
            }
            continue;
        }
        PyObject *fast = !in->constant && !*ns ? param_at_call(h, in, ev, frame, args) : NULL;
        if (!fast && !*ns && (!in->constant || in->kind == PKIND_PY))
            *ns = ns_for_call(h, frame, wall);
        if (!fast && !in->constant && !*ns) {
            if (ct_probe_fail(in, ev) < 0)
                break;
            continue;
        }
        PyObject *value = fast           ? fast
                          : in->constant ? Py_NewRef(in->constant)
                                         : bare_value(h, in, *ns);
        if (!value && !PyErr_Occurred())
            value = PyEval_EvalCode(in->code, h->globals, *ns);
        int rc = -1;
        if (value && in->kind == PKIND_RECORD) {
            in->fired++;
            rc = 0;
            int truth = PyObject_IsTrue(value);
            if (truth < 0)
                rc = -1;
            else if (truth && call) {
                call->ns = *ns;
                rc = ct_probe_record((ct_state *)PyModule_GetState(h->module), in, call);
            }
        } else if (value) {
            rc = ct_probe_accumulate((ct_state *)PyModule_GetState(h->module), in, value, *ns);
        }
        Py_XDECREF(value);
        if (rc < 0 && ct_probe_fail(in, ev) < 0)
            break; /* a KeyboardInterrupt (or MemoryError): it goes on to the target */
    }
    Py_DECREF(insts);
    clear_unless_interrupt();
}

static int stack_push(ProbeHook *h, PyObject *ns, uint64_t start_ns, double wall)
{
    if (probe_tls.n == probe_tls.cap) {
        size_t cap = probe_tls.cap ? probe_tls.cap * 2 : 16;
        probe_frame *v = PyMem_RawRealloc(probe_tls.v, cap * sizeof *v);
        if (!v)
            return -1;
        if (!probe_tls.v) { /* first use on this thread: freed when it ends */
            pthread_once(&probe_key_once, key_make);
            (void)pthread_setspecific(probe_key, v);
        }
        probe_tls.v = v;
        probe_tls.cap = cap;
    }
    probe_frame *f = &probe_tls.v[probe_tls.n++];
    f->code = h->code;
    f->hook = (ProbeHook *)Py_NewRef(h);
    f->ns = ns ? Py_NewRef(ns) : NULL;
    f->start_ns = start_ns;
    f->start_wall = wall;
    return 0;
}

/* A call of `h` begins: its call instruments fire, its stack entry is
 * pushed.  `frame` (borrowed) is the target's, or NULL on 3.11 when no
 * instrument needs it (the call's namespace cannot be built then). */
static void on_call(ProbeHook *h, PyFrameObject *frame, PyObject *const *args)
{
    double wall = ct_probe_wall();
    PyObject *ns = NULL;
    if (h->ns_at_call)
        ns = ns_for_call(h, frame, wall);
    clear_unless_interrupt();
    if (!PyErr_Occurred() && (h->mask & PEV_CALL))
        fire_all(h, PEV_CALL, &ns, frame, args, wall, NULL);
    if (h->stacked && stack_push(h, ns, ct_now_ns(), wall) < 0)
        clear_unless_interrupt();
    Py_XDECREF(ns);
}

/* The frame's end: `value` is the result (raised 0) or the exception;
 * `frame` (borrowed) is the target's (on 3.11 a frame that has returned,
 * which keeps its locals). */
static void on_end(PyCodeObject *co, PyObject *value, int raised, PyFrameObject *frame)
{
    size_t i = probe_tls.n;
    while (i > 0 && probe_tls.v[i - 1].code != co)
        i--;
    if (!i)
        return; /* started after this call began */
    uint64_t end_ns = ct_now_ns();
    double wall = ct_probe_wall();
    while (probe_tls.n > i) { /* calls whose end was not seen (a probe stopped meanwhile) */
        probe_frame *f = &probe_tls.v[--probe_tls.n];
        Py_DECREF(f->hook);
        Py_XDECREF(f->ns);
    }
    probe_frame f = probe_tls.v[--probe_tls.n];
    ProbeHook *h = f.hook;
    PyObject *ns = f.ns ? f.ns : ns_for_call(h, frame, f.start_wall);
    int ev = raised ? PEV_ERROR : PEV_RETURN;
    if (ns && (h->mask & (ev | PEV_END))) {
        if (ns_set(h, ns, PK_END, PyFloat_FromDouble(wall)) < 0 ||
            ns_set(h, ns, PK_ELAPSED, PyFloat_FromDouble((double)(end_ns - f.start_ns) * 1e-9)) <
                0 ||
            PyDict_SetItem(ns, key(h, raised ? PK_EXCEPTION : PK_RESULT), value) < 0)
            PyErr_Clear();
        ct_probe_call call = {h->code,
                              frame ? PyFrame_GetGlobals(frame) : Py_NewRef(h->globals),
                              ns,
                              raised ? NULL : value,
                              raised ? value : NULL,
                              f.start_ns,
                              end_ns};
        Py_XDECREF(call.globals_of_target); /* the frame keeps them */
        if (h->mask & ev)
            fire_all(h, ev, &ns, frame, NULL, wall, &call);
        if (h->mask & PEV_END) {
            PyObject *locals = PyObject_GetAttrString((PyObject *)frame, "f_locals");
            if (!locals || PyDict_Merge(ns, locals, 1) < 0)
                PyErr_Clear();
            Py_XDECREF(locals);
            if (!PyErr_Occurred())
                fire_all(h, PEV_END, &ns, frame, NULL, wall, &call);
        }
    }
    clear_unless_interrupt();
    Py_XDECREF(ns);
    Py_DECREF(h);
}

#if PROBE_SYSMON
/* The started hook of `code`: a scan of the started hooks (few; the
 * registry dict owns them), not a dict lookup (code objects hash their
 * contents on every lookup). */
static ProbeHook *hook_of(PyObject *module, PyObject *code)
{
    ct_state *st = (ct_state *)PyModule_GetState(module);
    for (size_t i = 0; st && i < st->probes.nstarted; i++)
        if (st->probes.started[i]->code == (PyCodeObject *)code)
            return st->probes.started[i];
    return NULL;
}

/* Rebuilds st->probes.started from the registry.  Returns 0, or -1 with
 * MemoryError (the old list kept). */
static int started_rebuild(ct_state *st)
{
    Py_ssize_t n = st->probes.registry ? PyDict_GET_SIZE(st->probes.registry) : 0;
    ProbeHook **v = n ? PyMem_Malloc((size_t)n * sizeof(ProbeHook *)) : NULL;
    if (n && !v) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t pos = 0, i = 0;
    PyObject *k, *h;
    while (n && PyDict_Next(st->probes.registry, &pos, &k, &h))
        v[i++] = (ProbeHook *)h;
    PyMem_Free(st->probes.started);
    st->probes.started = v;
    st->probes.nstarted = (size_t)i;
    return 0;
}

static PyObject *cb_start(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || probe_tls.busy)
        Py_RETURN_NONE;
    ProbeHook *h = hook_of(module, args[0]);
    if (h) {
        probe_tls.busy++;
        Py_INCREF(h);
        on_call(h, PyEval_GetFrame(), NULL);
        Py_DECREF(h);
        probe_tls.busy--;
    }
    if (PyErr_Occurred()) /* a KeyboardInterrupt: raised in the target, as Ctrl-C would */
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *cb_return(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs < 3 || probe_tls.busy || !probe_tls.n)
        Py_RETURN_NONE;
    probe_tls.busy++;
    on_end((PyCodeObject *)args[0], args[2], 0, PyEval_GetFrame());
    probe_tls.busy--;
    if (PyErr_Occurred()) /* a KeyboardInterrupt: raised in the target */
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *cb_unwind(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs < 3 || probe_tls.busy || !probe_tls.n)
        Py_RETURN_NONE;
    PyObject *saved = ct_fetch_exc();
    probe_tls.busy++;
    on_end((PyCodeObject *)args[0], args[2], 1, PyEval_GetFrame());
    probe_tls.busy--;
    if (PyErr_Occurred()) { /* a KeyboardInterrupt replaces the exception unwinding */
        Py_XDECREF(saved);
        return NULL;
    }
    ct_restore_exc(saved);
    Py_RETURN_NONE;
}

static PyMethodDef cb_defs[] = {
    {"PY_START", (PyCFunction)(void (*)(void))cb_start, METH_FASTCALL, NULL},
    {"PY_RETURN", (PyCFunction)(void (*)(void))cb_return, METH_FASTCALL, NULL},
    {"PY_UNWIND", (PyCFunction)(void (*)(void))cb_unwind, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

/* ---- starting and stopping ---------------------------------------------------- */

/* Claims the probe tool id and registers the callbacks (first start). */
static int tool_claim(ct_state *st, PyObject *module)
{
    if (st->probes.tool_held)
        return 0;
    PyObject *holder = sysmon("get_tool", "(i)", PROBE_TOOL_ID);
    if (!holder)
        return -1;
    if (holder != Py_None) {
        PyErr_Format(PyExc_RuntimeError,
                     "cannot start a calltape probe: sys.monitoring tool id %d is held by %R",
                     PROBE_TOOL_ID, holder);
        Py_DECREF(holder);
        return -1;
    }
    Py_DECREF(holder);
    PyObject *r = sysmon("use_tool_id", "(is)", PROBE_TOOL_ID, "calltape probes");
    if (!r)
        return -1;
    Py_DECREF(r);
    for (PyMethodDef *d = cb_defs; d->ml_name; d++) {
        long bit = event_bit(d->ml_name);
        PyObject *fn = bit >= 0 ? PyCFunction_NewEx(d, module, NULL) : NULL;
        r = fn ? sysmon("register_callback", "(ilO)", PROBE_TOOL_ID, bit, fn) : NULL;
        Py_XDECREF(fn);
        if (!r) {
            PyObject *saved = ct_fetch_exc();
            Py_XDECREF(sysmon("free_tool_id", "(i)", PROBE_TOOL_ID));
            PyErr_Clear();
            ct_restore_exc(saved);
            return -1;
        }
        Py_DECREF(r);
    }
    st->probes.tool_held = 1;
    return 0;
}

/* Sets the global PY_UNWIND event when a started hook is stacked; frees the
 * tool id when no hook is started. */
static int tool_update(ct_state *st)
{
    Py_ssize_t stacked = 0, n = st->probes.registry ? PyDict_GET_SIZE(st->probes.registry) : 0;
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    while (n && PyDict_Next(st->probes.registry, &pos, &k, &v))
        stacked += ((ProbeHook *)v)->stacked;
    if (!st->probes.tool_held)
        return 0;
    PyObject *r = sysmon("set_events", "(il)", PROBE_TOOL_ID, stacked ? event_bit("PY_UNWIND") : 0);
    if (!r)
        return -1;
    Py_DECREF(r);
    if (!n) {
        r = sysmon("free_tool_id", "(i)", PROBE_TOOL_ID);
        if (!r)
            return -1;
        Py_DECREF(r);
        st->probes.tool_held = 0;
    }
    return 0;
}

static int set_local(ProbeHook *h, int on)
{
    long ev = 0;
    if (on) {
        ev = event_bit("PY_START");
        if (h->stacked)
            ev |= event_bit("PY_RETURN");
    }
    PyObject *r = sysmon("set_local_events", "(iOl)", PROBE_TOOL_ID, (PyObject *)h->code, ev);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* Turns the events of `h` on (on) or off in sys.monitoring. */
static int hook_switch(ProbeHook *h, ct_state *st, int on)
{
    int bad = on && set_local(h, 1) < 0;
    if (!on && set_local(h, 0) < 0)
        bad = 1;
    if (started_rebuild(st) < 0 || tool_update(st) < 0)
        bad = 1;
    return bad ? -1 : 0;
}
#else
/* ---- CPython 3.11: the call of a probe's wrapper (patch.c) ------------------ */

/* The target's frame, caught by a profile function set for the one call
 * (the first profile event of a call of a Python function is its own
 * PyTrace_CALL): the profile function in place before is put back at that
 * event and handed the event itself, so a profiler running meanwhile (the
 * monitor on 3.11) misses nothing. */
typedef struct probe_catch {
    ProbeHook *hook;       /* borrowed: the wrapper's call holds it */
    Py_tracefunc saved_fn; /* the profile function before, or NULL */
    PyObject *saved_obj;   /* its object (strong), or NULL */
    PyFrameObject *frame;  /* the target's (strong) once caught, or NULL */
    int armed;
} probe_catch;

static _Thread_local probe_catch *probe_catching;

/* Puts the profile function of before back (the pending exception kept). */
static void catch_disarm(probe_catch *c)
{
    if (!c->armed)
        return;
    c->armed = 0;
    probe_catching = NULL;
    PyObject *saved = PyErr_Occurred() ? ct_fetch_exc() : NULL;
    PyEval_SetProfile(c->saved_fn, c->saved_obj);
    Py_CLEAR(c->saved_obj);
    ct_restore_exc(saved);
}

static int catch_event(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg)
{
    (void)obj; /* the hook, released by catch_disarm: not used */
    probe_catch *c = probe_catching;
    if (!c)
        return 0;
    Py_tracefunc fn = c->saved_fn;
    PyObject *fobj = Py_XNewRef(c->saved_obj);
    catch_disarm(c);
    int r = 0;
    PyCodeObject *co = PyFrame_GetCode(frame);
    if (what == PyTrace_CALL && co == c->hook->code) {
        c->frame = (PyFrameObject *)Py_NewRef(frame);
        probe_tls.busy++;
        on_call(c->hook, frame, NULL);
        probe_tls.busy--;
        r = PyErr_Occurred() ? -1 : 0; /* a KeyboardInterrupt: raised in the target */
    }
    Py_DECREF(co);
    if (!r && fn)
        r = fn(fobj, frame, what, arg);
    Py_XDECREF(fobj);
    return r;
}

PyObject *ct_probe_wrapper_call(ProbeHook *h, PyObject *func, PyObject *const *args, size_t nargsf,
                                PyObject *kwnames)
{
    if (!h->running || !h->mask || probe_tls.busy || probe_catching)
        return PyObject_Vectorcall(func, args, nargsf, kwnames);
    Py_INCREF(h);
    probe_catch c = {h, NULL, NULL, NULL, 0};
    size_t depth = probe_tls.n;
    /* values that are parameters bound in order are read from the arguments */
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyCodeObject *co = h->code;
    int in_order =
        h->args_enough && !kwnames && co->co_kwonlyargcount == 0 &&
        (nargs == co->co_argcount || (nargs > co->co_argcount && (co->co_flags & CO_VARARGS)));
    if (h->catch_frame && !in_order) {
        PyThreadState *ts = PyThreadState_Get();
        c.saved_fn = ts->c_profilefunc;
        c.saved_obj = Py_XNewRef(ts->c_profileobj);
        c.armed = 1;
        probe_catching = &c;
        PyEval_SetProfile(catch_event, (PyObject *)h);
    } else {
        probe_tls.busy++;
        on_call(h, NULL, in_order ? args : NULL);
        probe_tls.busy--;
        if (PyErr_Occurred()) { /* a KeyboardInterrupt: raised in the target */
            Py_DECREF(h);
            return NULL;
        }
    }
    PyObject *res = PyObject_Vectorcall(func, args, nargsf, kwnames);
    catch_disarm(&c);          /* the call failed before its frame began */
    if (probe_tls.n > depth) { /* this call's entry is on the stack */
        probe_tls.busy++;
        if (res) {
            on_end(h->code, res, 0, c.frame);
            if (PyErr_Occurred()) /* a KeyboardInterrupt replaces the result */
                Py_CLEAR(res);
        } else {
            PyObject *exc = ct_fetch_exc();
            on_end(h->code, exc, 1, c.frame);
            if (PyErr_Occurred()) /* a KeyboardInterrupt replaces the exception */
                Py_XDECREF(exc);
            else
                ct_restore_exc(exc);
        }
        probe_tls.busy--;
    }
    Py_XDECREF(c.frame);
    Py_DECREF(h);
    return res;
}

/* Patches (on) or restores (off) every reference to the target. */
static int hook_switch(ProbeHook *h, ct_state *st, int on)
{
    (void)st;
    return on ? ct_probe_patch(h) : ct_probe_unpatch(h);
}
#endif

/* Recomputes what calls of `h` must do from its instruments. */
static void hook_summarize(ProbeHook *h)
{
    int mask = 0, ns = 0, now = 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(h->instruments); i++) {
        ProbeInstrument *in = (ProbeInstrument *)PyTuple_GET_ITEM(h->instruments, i);
        mask |= in->events;
        now |= in->uses_now;
        if ((in->events & (PEV_RETURN | PEV_ERROR | PEV_END)) &&
            (!in->constant || in->kind == PKIND_PY))
            ns = 1;
    }
    int gen = (h->code->co_flags & (CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR)) != 0;
    int call_ns = 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(h->instruments); i++) {
        ProbeInstrument *in = (ProbeInstrument *)PyTuple_GET_ITEM(h->instruments, i);
        call_ns |= (in->events & PEV_CALL) && (!in->constant || in->kind == PKIND_PY);
    }
    h->mask = mask;
    h->need_now = now;
    h->stacked = !gen && (mask & (PEV_RETURN | PEV_ERROR | PEV_END));
    h->ns_at_call = ns && h->stacked;
    h->catch_frame = !gen && (h->stacked || call_ns);
#if !PROBE_SYSMON
    /* every value at the call a parameter (positional), nothing at the end */
    int enough = h->catch_frame && !h->stacked;
    for (Py_ssize_t i = 0; enough && i < PyTuple_GET_SIZE(h->instruments); i++) {
        ProbeInstrument *in = (ProbeInstrument *)PyTuple_GET_ITEM(h->instruments, i);
        enough =
            (in->constant && in->kind != PKIND_PY) || param_index(h, in, h->code->co_argcount) >= 0;
    }
    h->args_enough = enough;
#endif
}

static PyObject *Hook_start(ProbeHook *self, PyObject *unused)
{
    (void)unused;
    ct_state *st = (ct_state *)PyModule_GetState(self->module);
    if (self->running)
        Py_RETURN_NONE;
    if (!st->probes.registry && !(st->probes.registry = PyDict_New()))
        return NULL;
    if (PyDict_GetItemWithError(st->probes.registry, (PyObject *)self->code))
        return PyErr_Format(PyExc_RuntimeError, "another probe is started on %R", self->code);
    if (PyErr_Occurred())
        return NULL;
#if PROBE_SYSMON
    if (tool_claim(st, self->module) < 0)
        return NULL;
#endif
    if (PyDict_SetItem(st->probes.registry, (PyObject *)self->code, (PyObject *)self) < 0)
        return NULL;
    self->running = 1;
    if (hook_switch(self, st, 1) < 0) {
        PyObject *saved = ct_fetch_exc();
        self->running = 0;
        PyDict_DelItem(st->probes.registry, (PyObject *)self->code);
        PyErr_Clear();
        if (hook_switch(self, st, 0) < 0)
            PyErr_Clear();
        ct_restore_exc(saved);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *Hook_stop(ProbeHook *self, PyObject *unused)
{
    (void)unused;
    ct_state *st = (ct_state *)PyModule_GetState(self->module);
    if (!self->running)
        Py_RETURN_NONE;
    self->running = 0;
    int bad = PyDict_DelItem(st->probes.registry, (PyObject *)self->code) < 0;
    if (hook_switch(self, st, 0) < 0)
        bad = 1;
    if (bad)
        return NULL;
    Py_RETURN_NONE;
}

/* set(instruments): the tuple of Instruments fired from now on. */
static PyObject *Hook_set(ProbeHook *self, PyObject *insts)
{
    ct_state *st = (ct_state *)PyModule_GetState(self->module);
    if (!PyTuple_Check(insts))
        return PyErr_Format(PyExc_TypeError, "set() takes a tuple of Instruments");
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(insts); i++)
        if (!ct_probe_is_instrument(st, PyTuple_GET_ITEM(insts, i)))
            return PyErr_Format(PyExc_TypeError, "%R is not a calltape.probes Instrument",
                                PyTuple_GET_ITEM(insts, i));
    int was_stacked = self->stacked;
    Py_SETREF(self->instruments, Py_NewRef(insts));
    hook_summarize(self);
#if PROBE_SYSMON
    if (self->running && was_stacked != self->stacked &&
        (set_local(self, 1) < 0 || tool_update(st) < 0))
        return NULL;
#else
    (void)st;
    (void)was_stacked;
#endif
    Py_RETURN_NONE;
}

static int Hook_init(ProbeHook *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"module", "code", "globals", "now", "on_expire", NULL};
    PyObject *module, *code, *globals, *now = Py_None, *on_expire = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO!O!|OO:ProbeHook", kwlist, &module, &PyCode_Type,
                                     &code, &PyDict_Type, &globals, &now, &on_expire))
        return -1;
    if (!PyModule_Check(module) || !PyModule_GetState(module))
        return PyErr_Format(PyExc_TypeError, "ProbeHook needs calltape._native"), -1;
    ct_state *st = (ct_state *)PyModule_GetState(module);
    if (!st->probes.keys) {
        PyObject *keys = PyTuple_New(PK_COUNT);
        for (int i = 0; keys && i < PK_COUNT; i++) {
            PyObject *k = PyUnicode_InternFromString(key_names[i]);
            if (!k)
                Py_CLEAR(keys);
            else
                PyTuple_SET_ITEM(keys, i, k);
        }
        if (!keys)
            return -1;
        st->probes.keys = keys;
    }
    Py_XSETREF(self->module, Py_NewRef(module));
    Py_XSETREF(self->code, (PyCodeObject *)Py_NewRef(code));
    Py_XSETREF(self->varnames, PyCode_GetVarnames((PyCodeObject *)code));
    if (!self->varnames)
        return -1;
    Py_XSETREF(self->globals, Py_NewRef(globals));
    Py_XSETREF(self->now_fn, Py_NewRef(now));
    Py_XSETREF(self->on_expire, Py_NewRef(on_expire));
    if (!self->instruments && !(self->instruments = PyTuple_New(0)))
        return -1;
    hook_summarize(self);
    return 0;
}

static int Hook_traverse(ProbeHook *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->module);
    Py_VISIT(self->instruments);
    Py_VISIT(self->globals);
    Py_VISIT(self->now_fn);
    Py_VISIT(self->on_expire);
    Py_VISIT(self->patches);
    return 0;
}

static int Hook_clear(ProbeHook *self)
{
    Py_CLEAR(self->module);
    Py_CLEAR(self->code);
    Py_CLEAR(self->varnames);
    Py_CLEAR(self->instruments);
    Py_CLEAR(self->globals);
    Py_CLEAR(self->now_fn);
    Py_CLEAR(self->on_expire);
    Py_CLEAR(self->patches);
    return 0;
}

static void Hook_dealloc(ProbeHook *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Hook_clear(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyMethodDef Hook_methods[] = {
    {"start", (PyCFunction)Hook_start, METH_NOARGS, "start(): its events on, it fires"},
    {"stop", (PyCFunction)Hook_stop, METH_NOARGS, "stop(): its events off, it costs nothing"},
    {"set", (PyCFunction)Hook_set, METH_O, "set(instruments): the tuple fired from now on"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Hook_members[] = {
    {"running", T_INT, offsetof(ProbeHook, running), READONLY, NULL},
    {"instruments", T_OBJECT_EX, offsetof(ProbeHook, instruments), READONLY, NULL},
    {"code", T_OBJECT_EX, offsetof(ProbeHook, code), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot Hook_slots[] = {
    {Py_tp_doc, "ProbeHook(module, code, globals, now=None, on_expire=None): the instruments"
                " of one code object, fired through sys.monitoring"},
    {Py_tp_init, Hook_init},
    {Py_tp_dealloc, Hook_dealloc},
    {Py_tp_traverse, Hook_traverse},
    {Py_tp_clear, Hook_clear},
    {Py_tp_methods, Hook_methods},
    {Py_tp_members, Hook_members},
    {0, NULL},
};

PyType_Spec ProbeHook_spec = {
    .name = "calltape._native.ProbeHook",
    .basicsize = sizeof(ProbeHook),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = Hook_slots,
};
