/*
 * monitor_profile.c - calltape.monitor's hooks on CPython 3.11: a C
 * profile function (PyEval_SetProfile) on every thread, with
 * threading.setprofile() covering threads started later.  Empty on 3.12+
 * (monitor_sysmon.c).
 *
 * Invariants: the profile function never raises and never leaves an
 * exception set; see monitor.c.
 */
#include "monitor_impl.h"

#if !CT_SYS_MONITORING

#include "monitor_events.h"

/* 1 when the generator frame `frame` has a parked entry. */
static int is_parked(mon_active *a, PyFrameObject *frame)
{
    PyObject *gen = PyFrame_GetGenerator(frame);
    int r = gen ? ct_park_has(&a->parked, gen) : 0;
    Py_XDECREF(gen);
    return r;
}

/* 1 when the frame of `co` stopped at a YIELD_VALUE (it yielded rather
 * than returned).  3.11 only: its YIELD_VALUE opcode is 86. */
static int frame_yielded(PyFrameObject *frame, PyCodeObject *co)
{
    int lasti = PyFrame_GetLasti(frame);
    PyObject *code = lasti >= 0 ? PyCode_GetCode(co) : NULL;
    int r = code && lasti < PyBytes_GET_SIZE(code) && (uint8_t)PyBytes_AS_STRING(code)[lasti] == 86;
    Py_XDECREF(code);
    PyErr_Clear();
    return r;
}

static int profile_hook(PyObject *module, PyFrameObject *frame, int what, PyObject *arg)
{
    if (what != PyTrace_CALL && what != PyTrace_RETURN)
        return 0;
    mon_active *a = active_of(module);
    if (!a->mon || ct_thread_get()->busy)
        return 0;
    PyCodeObject *co = PyFrame_GetCode(frame);
    PyObject *saved = ct_fetch_exc();
    ct_codeinfo *info = code_info(a, co);
    if (!decided(a, info)) {
        PyObject *globals = PyFrame_GetGlobals(frame);
        info = ct_mon_decide(a, co, info, globals);
        Py_XDECREF(globals);
    }
    if (info && info->record) {
        if (what == PyTrace_CALL) {
            if (info->is_gen && a->parked.nparked && is_parked(a, frame))
                on_resume(a, co);
            else if (!info->is_gen || !frame_yielded(frame, co))
                on_start(a, co, info); /* (a generator resumed at a yield is no start) */
        } else if (arg && info->is_gen && frame_yielded(frame, co)) {
            on_suspend(a, co);
        } else if (arg) {
            on_end(a, co, OUTCOME_RETURNED, arg);
        } else {
            /* 3.11's profiler hook does not show the exception; one leaving a
             * generator at a yield was thrown in there, almost always by
             * close() (GeneratorExit) */
            on_end(a, co,
                   info->is_gen && frame_yielded(frame, co) ? OUTCOME_CLOSED : OUTCOME_RAISED,
                   NULL);
        }
    }
    Py_DECREF(co);
    PyErr_Clear();
    ct_restore_exc(saved);
    return 0;
}

static PyObject *thread_hook(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)args;
    (void)nargs;
    PyEval_SetProfile((Py_tracefunc)profile_hook, module);
    return Py_NewRef(Py_None);
}

static PyMethodDef thread_hook_def = {
    "_calltape_thread_profile", (PyCFunction)(void (*)(void))thread_hook, METH_FASTCALL, NULL};

static int set_threading_profile(PyObject *fn)
{
    PyObject *threading = PyImport_ImportModule("threading");
    if (!threading)
        return -1;
    PyObject *r = PyObject_CallMethod(threading, "setprofile", "O", fn);
    Py_DECREF(threading);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

int ct_mon_hooks_install(PyObject *module, mon_active *a)
{
    (void)a;
    PyThreadState *me = PyThreadState_Get();
    for (PyThreadState *ts = PyInterpreterState_ThreadHead(me->interp); ts;
         ts = PyThreadState_Next(ts))
        if (ts->c_profilefunc && ts->c_profilefunc != (Py_tracefunc)profile_hook) {
            PyErr_SetString(PyExc_RuntimeError,
                            "cannot start calltape.monitor: another profiler (sys.setprofile)"
                            " is active; stop it first");
            return -1;
        }
    PyObject *fn = PyCFunction_NewEx(&thread_hook_def, module, NULL);
    if (!fn || set_threading_profile(fn) < 0) {
        Py_XDECREF(fn);
        return -1;
    }
    Py_DECREF(fn);
    for (PyThreadState *ts = PyInterpreterState_ThreadHead(me->interp); ts;
         ts = PyThreadState_Next(ts))
        if (_PyEval_SetProfile(ts, (Py_tracefunc)profile_hook, module) < 0)
            return -1;
    return 0;
}

void ct_mon_hooks_remove(PyObject *module, mon_active *a)
{
    (void)module;
    (void)a;
    PyObject *saved = ct_fetch_exc();
    if (set_threading_profile(Py_None) < 0)
        PyErr_Clear();
    PyThreadState *me = PyThreadState_Get();
    for (PyThreadState *ts = PyInterpreterState_ThreadHead(me->interp); ts;
         ts = PyThreadState_Next(ts))
        if (ts->c_profilefunc == (Py_tracefunc)profile_hook &&
            _PyEval_SetProfile(ts, NULL, NULL) < 0)
            PyErr_Clear();
    ct_restore_exc(saved);
}

#endif
