/*
 * replay_run.c - running one recorded call again: with the recorded module
 * globals patched in (globals="recorded"), recording suspended on this
 * thread (unless the replay records), generators run to their end
 * (collecting what they yield), coroutines and async generators run
 * through the Python helpers the Replayer holds; and standing a script's
 * module in for sys.modules["__main__"] while a call of it is replayed.
 *
 * Invariants: the patched globals, the thread's recording context and
 * sys.modules["__main__"] are restored on every exit path; what the call
 * raises is its outcome, never an error of replay (KeyboardInterrupt
 * aside).
 */
#include "replay.h"

/* Patches `patch` into `globals`; fills `saved` (name -> old value) and
 * `absent` (names not there before).  Returns 0 or -1. */
static int patch_globals(PyObject *globals, PyObject *patch, PyObject *saved, PyObject *absent)
{
    PyObject *name, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(patch, &pos, &name, &value)) {
        PyObject *old = PyDict_GetItemWithError(globals, name);
        if (!old && PyErr_Occurred())
            return -1;
        if (old ? PyDict_SetItem(saved, name, old) : PyList_Append(absent, name))
            return -1;
        if (PyDict_SetItem(globals, name, value) < 0)
            return -1;
    }
    return 0;
}

/* Puts back what patch_globals() replaced.  Never fails; keeps a pending
 * exception. */
static void restore_globals(PyObject *globals, PyObject *saved, PyObject *absent)
{
    PyObject *exc = ct_fetch_exc();
    PyObject *name, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(saved, &pos, &name, &value))
        if (PyDict_SetItem(globals, name, value) < 0)
            PyErr_Clear();
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(absent); i++)
        if (PyDict_DelItem(globals, PyList_GET_ITEM(absent, i)) < 0)
            PyErr_Clear();
    ct_restore_exc(exc);
}

/* Runs a generator to its end: *yielded gets the list of values.  Returns
 * the return value (new reference) or NULL with an exception. */
static PyObject *drain(PyObject *gen, PyObject **yielded)
{
    PyObject *list = PyList_New(0);
    if (!list)
        return NULL;
    for (;;) {
        PyObject *v = NULL;
        PySendResult r = PyIter_Send(gen, Py_None, &v);
        if (r == PYGEN_NEXT) {
            int rc = PyList_Append(list, v);
            Py_DECREF(v);
            if (rc < 0)
                break;
            continue;
        }
        if (r == PYGEN_RETURN) {
            *yielded = list;
            return v;
        }
        break;
    }
    Py_DECREF(list);
    return NULL;
}

/* Calls and finishes the call: a generator drained, a coroutine or an
 * async generator run by the Replayer's helpers.  New reference or NULL. */
static PyObject *call_to_end(rp_replayer *self, PyObject *callable, int kind, PyObject *args,
                             PyObject *kwargs, PyObject **yielded)
{
    PyObject *r = PyObject_Call(callable, args, kwargs);
    if (r && kind == KIND_GENERATOR && PyIter_Check(r)) {
        Py_SETREF(r, drain(r, yielded));
    } else if (r && kind == KIND_COROUTINE) {
        Py_SETREF(r, PyObject_CallOneArg(self->run_coroutine, r));
    } else if (r && kind == KIND_ASYNC_GENERATOR) {
        PyObject *values = PyObject_CallOneArg(self->run_asyncgen, r);
        Py_SETREF(r, values ? Py_NewRef(Py_None) : NULL);
        *yielded = values;
    }
    return r;
}

int rp_run(rp_replayer *self, PyObject *callable, int kind, PyObject *fn, PyObject *args,
           PyObject *kwargs, PyObject *patch, int quiet, rp_ran *ran)
{
    PyObject *saved = NULL, *absent = NULL, *globals = NULL;
    if (patch && fn != Py_None) {
        globals = PyFunction_GetGlobals(fn);
        saved = PyDict_New();
        absent = PyList_New(0);
        if (!saved || !absent || patch_globals(globals, patch, saved, absent) < 0) {
            if (saved && absent)
                restore_globals(globals, saved, absent);
            Py_XDECREF(saved);
            Py_XDECREF(absent);
            ran->exc = ct_fetch_exc();
            return 0;
        }
    }
    ct_thread *t = ct_thread_get();
    if (quiet)
        t->busy++;
    uint64_t start = ct_now_ns();
    PyObject *r = call_to_end(self, callable, kind, args, kwargs, &ran->yielded);
    ran->ns = ct_now_ns() - start;
    if (quiet)
        t->busy--;
    if (saved) {
        restore_globals(globals, saved, absent);
        Py_DECREF(saved);
        Py_DECREF(absent);
    }
    if (r) {
        ran->result = r;
        return 0;
    }
    if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
        return -1;
    ran->exc = ct_fetch_exc();
    return 0;
}

int rp_kind_of(PyObject *fn)
{
    if (!PyFunction_Check(fn))
        return KIND_PLAIN;
    int flags = ((PyCodeObject *)PyFunction_GetCode(fn))->co_flags;
    return flags & CO_GENERATOR         ? KIND_GENERATOR
           : flags & CO_COROUTINE       ? KIND_COROUTINE
           : flags & CO_ASYNC_GENERATOR ? KIND_ASYNC_GENERATOR
                                        : KIND_PLAIN;
}

PyObject *rp_main_swap(PyObject *script)
{
    PyObject *modules = PyImport_GetModuleDict(); /* borrowed */
    PyObject *old = PyDict_GetItemString(modules, "__main__");
    old = Py_NewRef(old ? old : Py_None);
    if (PyDict_SetItemString(modules, "__main__", script) < 0)
        Py_CLEAR(old);
    return old;
}

void rp_main_restore(PyObject *old)
{
    PyObject *exc = ct_fetch_exc();
    PyObject *modules = PyImport_GetModuleDict();
    if ((old == Py_None ? PyDict_DelItemString(modules, "__main__")
                        : PyDict_SetItemString(modules, "__main__", old)) < 0)
        PyErr_Clear();
    Py_DECREF(old);
    ct_restore_exc(exc);
}
