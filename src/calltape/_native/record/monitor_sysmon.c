/*
 * monitor_sysmon.c - calltape.monitor's hooks on CPython 3.12+:
 * sys.monitoring with the profiler tool id; the callbacks are
 * METH_FASTCALL C functions, and a code object that is not recorded gets
 * DISABLE so that it runs at full speed after its first call.  Empty on
 * 3.11 (monitor_profile.c).
 *
 * Invariants: callbacks never raise and never leave an exception set
 * (PY_UNWIND and PY_THROW keep the one on its way); see monitor.c.
 */
#include "monitor_impl.h"

#if CT_SYS_MONITORING

#include "monitor_events.h"

/* Common prologue: the code's decision, or NULL to ignore the event.
 * *disable is set when the event should return DISABLE. */
static ct_codeinfo *hook_info(mon_active *a, PyObject *code, int *disable)
{
    *disable = 0;
    if (!a->mon || !PyCode_Check(code) || ct_thread_get()->busy)
        return NULL;
    ct_codeinfo *info = code_info(a, (PyCodeObject *)code);
    if (!decided(a, info))
        info = ct_mon_decide(a, (PyCodeObject *)code, info, PyEval_GetGlobals());
    if (info && info->record)
        return info;
    *disable = 1;
    return NULL;
}

static PyObject *hook_result(mon_active *a, int disable)
{
    return Py_NewRef(disable && a->disable ? a->disable : Py_None);
}

enum mon_event { EV_START, EV_RESUME, EV_RETURN, EV_YIELD, EV_UNWIND, EV_THROW };

/* Every sys.monitoring callback: (code, offset[, value]).  Inlined into
 * each callback with its event constant, so each compiles to its own path. */
static inline __attribute__((always_inline)) PyObject *
mon_event(PyObject *module, PyObject *const *args, Py_ssize_t nargs, int ev)
{
    mon_active *a = active_of(module);
    int disable = 0;
    if (nargs < (ev == EV_RETURN || ev == EV_UNWIND ? 3 : 1))
        return Py_NewRef(Py_None);
    PyCodeObject *co = (PyCodeObject *)args[0];
    if (ev == EV_RETURN) {
        /* the common case: the call on top of this thread's stack returns */
        mon_stack *s = ct_mon_tls_stack;
        if (s && s->n && s->v[s->n - 1].code == co && !s->v[s->n - 1].gen && a->mon &&
            !ct_tls_thread.busy) {
            on_end(a, co, OUTCOME_RETURNED, args[2]);
            return Py_NewRef(Py_None);
        }
    }
    if ((ev == EV_YIELD || ev == EV_RESUME) && a->mon && !ct_tls_thread.busy &&
        (ev == EV_YIELD ? on_suspend(a, co) : on_resume(a, co)))
        return Py_NewRef(Py_None); /* a recorded generator: no decision to look up */
    ct_codeinfo *info = hook_info(a, args[0], &disable);
    if (info) {
        PyObject *saved;
        switch (ev) {
        case EV_START:
            on_start(a, co, info);
            break;
        case EV_RESUME: /* tried above: nothing parked */
        case EV_YIELD:  /* tried above: not on the stack */
            break;
        case EV_RETURN:
            on_end(a, co, OUTCOME_RETURNED, args[2]);
            break;
        default: /* an exception is on its way: keep it as it is */
            saved = ct_fetch_exc();
            if (ev == EV_UNWIND)
                on_end(a, co, OUTCOME_RAISED, args[2]);
            else
                on_resume(a, co); /* PY_THROW resumes a generator */
            ct_restore_exc(saved);
        }
    }
    /* PY_UNWIND and PY_THROW cannot be disabled per code */
    return ev == EV_UNWIND || ev == EV_THROW ? Py_NewRef(Py_None) : hook_result(a, disable);
}

#define MON_CALLBACK(name, ev)                                                                     \
    static PyObject *name(PyObject *module, PyObject *const *args, Py_ssize_t nargs)               \
    {                                                                                              \
        return mon_event(module, args, nargs, ev);                                                 \
    }
MON_CALLBACK(mon_py_start, EV_START)
MON_CALLBACK(mon_py_resume, EV_RESUME)
MON_CALLBACK(mon_py_return, EV_RETURN)
MON_CALLBACK(mon_py_yield, EV_YIELD)
MON_CALLBACK(mon_py_unwind, EV_UNWIND)
MON_CALLBACK(mon_py_throw, EV_THROW)
#undef MON_CALLBACK

static PyMethodDef hook_defs[] = {
    {"PY_START", (PyCFunction)(void (*)(void))mon_py_start, METH_FASTCALL, NULL},
    {"PY_RESUME", (PyCFunction)(void (*)(void))mon_py_resume, METH_FASTCALL, NULL},
    {"PY_RETURN", (PyCFunction)(void (*)(void))mon_py_return, METH_FASTCALL, NULL},
    {"PY_YIELD", (PyCFunction)(void (*)(void))mon_py_yield, METH_FASTCALL, NULL},
    {"PY_UNWIND", (PyCFunction)(void (*)(void))mon_py_unwind, METH_FASTCALL, NULL},
    {"PY_THROW", (PyCFunction)(void (*)(void))mon_py_throw, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

/* Calls sys.monitoring.<name>(*args built from fmt).  New reference or
 * NULL with an exception set. */
static PyObject *sysmon_call(const char *name, const char *fmt, ...)
{
    PyObject *sm = PySys_GetObject("monitoring"); /* borrowed */
    if (!sm) {
        PyErr_SetString(PyExc_RuntimeError, "sys.monitoring is not available");
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

int ct_mon_hooks_install(PyObject *module, mon_active *a)
{
    PyObject *holder = sysmon_call("get_tool", "(i)", MON_TOOL_ID);
    if (!holder)
        return -1;
    if (holder != Py_None) {
        PyErr_Format(PyExc_RuntimeError,
                     "cannot start calltape.monitor: sys.monitoring tool id %d (PROFILER_ID) is"
                     " held by %R; stop that profiler first",
                     MON_TOOL_ID, holder);
        Py_DECREF(holder);
        return -1;
    }
    Py_DECREF(holder);
    PyObject *r = sysmon_call("use_tool_id", "(is)", MON_TOOL_ID, "calltape");
    if (!r)
        return -1;
    Py_DECREF(r);
    PyObject *sm = PySys_GetObject("monitoring");
    PyObject *events = sm ? PyObject_GetAttrString(sm, "events") : NULL;
    if (!events)
        goto error;
    long mask = 0;
    for (PyMethodDef *d = hook_defs; d->ml_name; d++) {
        PyObject *ev = PyObject_GetAttrString(events, d->ml_name);
        long bit = ev ? PyLong_AsLong(ev) : -1;
        Py_XDECREF(ev);
        if (bit < 0 && PyErr_Occurred()) {
            Py_DECREF(events);
            goto error;
        }
        PyObject *fn = PyCFunction_NewEx(d, module, NULL);
        r = fn ? sysmon_call("register_callback", "(ilO)", MON_TOOL_ID, bit, fn) : NULL;
        Py_XDECREF(fn);
        if (!r) {
            Py_DECREF(events);
            goto error;
        }
        Py_DECREF(r);
        mask |= bit;
    }
    Py_DECREF(events);
    if (!a->disable) {
        a->disable = PyObject_GetAttrString(sm, "DISABLE");
        if (!a->disable)
            goto error;
    }
    r = sysmon_call("restart_events", "()");
    if (!r)
        goto error;
    Py_DECREF(r);
    r = sysmon_call("set_events", "(il)", MON_TOOL_ID, mask);
    if (!r)
        goto error;
    Py_DECREF(r);
    return 0;
error:;
    PyObject *saved = ct_fetch_exc();
    r = sysmon_call("free_tool_id", "(i)", MON_TOOL_ID);
    Py_XDECREF(r);
    PyErr_Clear();
    ct_restore_exc(saved);
    return -1;
}

void ct_mon_hooks_remove(PyObject *module, mon_active *a)
{
    (void)module;
    (void)a;
    PyObject *saved = ct_fetch_exc();
    PyObject *r = sysmon_call("set_events", "(ii)", MON_TOOL_ID, 0);
    Py_XDECREF(r);
    /* code switched off with DISABLE runs events again for the next user
     * of the profiler id (cProfile on 3.12+) */
    r = sysmon_call("restart_events", "()");
    Py_XDECREF(r);
    for (PyMethodDef *d = hook_defs; d->ml_name; d++) {
        PyObject *sm = PySys_GetObject("monitoring");
        PyObject *events = sm ? PyObject_GetAttrString(sm, "events") : NULL;
        PyObject *ev = events ? PyObject_GetAttrString(events, d->ml_name) : NULL;
        if (ev) {
            r = sysmon_call("register_callback", "(iOO)", MON_TOOL_ID, ev, Py_None);
            Py_XDECREF(r);
        }
        Py_XDECREF(ev);
        Py_XDECREF(events);
    }
    r = sysmon_call("free_tool_id", "(i)", MON_TOOL_ID);
    Py_XDECREF(r);
    PyErr_Clear();
    ct_restore_exc(saved);
}

#endif
