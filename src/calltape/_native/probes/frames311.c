/*
 * frames311.c - CPython 3.11 only: the local variables of frames, which
 * run-time probes replace too (patch.c): every frame on every thread's
 * stack, and the frame of a suspended generator, coroutine or async
 * generator.
 *
 * 3.11 has no public way to change a running frame's locals other than its
 * f_locals dict and PyFrame_LocalsToFast, and that dict would stay on the
 * frame holding every local (an object the function `del`s would live until
 * the frame ends, and a dict the program holds from locals() would change).
 * So the slots are read and written in place, through the interpreter's own
 * frame layout (internal/pycore_frame.h), which does not change within 3.11.
 *
 * Invariants: only a local slot (index below co_nlocalsplus) holding exactly
 * an object `find` replaces is written; a cell variable's slot holds its cell
 * (closures are patch.c's cells), and the frame's function, globals and value
 * stack are never touched.  `find` must neither allocate nor run Python code:
 * the walk over other threads' frames holds no reference to them, which is
 * safe only while this thread keeps the GIL.
 */
#include "probes.h"

#if PY_VERSION_HEX < 0x030C0000

#define Py_BUILD_CORE 1
#include <internal/pycore_frame.h>
#undef Py_BUILD_CORE

/* Swaps the local slots of `f` that `find` replaces; the number swapped. */
static Py_ssize_t swap_frame(_PyInterpreterFrame *f, ct_frame_find find, const void *arg)
{
    Py_ssize_t n = 0;
    PyObject **slots = f->localsplus;
    for (int i = 0; i < f->f_code->co_nlocalsplus; i++) {
        PyObject *old = slots[i], *new = old ? find(arg, old) : NULL;
        if (!new)
            continue;
        /* `old` is held elsewhere (by the caller's batch): no dealloc here */
        slots[i] = Py_NewRef(new);
        Py_DECREF(old);
        n++;
    }
    return n;
}

/* See probes.h. */
Py_ssize_t ct_frames_swap_running(ct_frame_find find, const void *arg)
{
    Py_ssize_t n = 0;
    PyInterpreterState *interp = PyInterpreterState_Get();
    for (PyThreadState *t = PyInterpreterState_ThreadHead(interp); t; t = PyThreadState_Next(t))
        for (_PyInterpreterFrame *f = t->cframe ? t->cframe->current_frame : NULL; f;
             f = f->previous)
            n += swap_frame(f, find, arg);
    return n;
}

/* See probes.h. */
Py_ssize_t ct_frames_swap_generator(PyObject *gen, ct_frame_find find, const void *arg)
{
    if (!PyGen_Check(gen) && !PyCoro_CheckExact(gen) && !PyAsyncGen_CheckExact(gen))
        return 0;
    /* the three share the generator's head: its frame state and frame */
    PyGenObject *g = (PyGenObject *)gen;
    if (g->gi_frame_state >= FRAME_COMPLETED)
        return 0;
    return swap_frame((_PyInterpreterFrame *)g->gi_iframe, find, arg);
}

#endif
