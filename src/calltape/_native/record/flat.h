/*
 * flat.h - calltape.flat_profile (flat.c): the FlatProfile wrapper, and
 * the call through it that @calltape.record makes when it records a
 * flat-profiled function (record=True), so that the inner calls become
 * children of the recorded call.
 */
#ifndef CALLTAPE_FLAT_H
#define CALLTAPE_FLAT_H

#include "binding.h"
#include "sink.h"

/* Calls the function of FlatProfile `flat` (borrowed) with the vectorcall
 * arguments, timing the calls made directly inside it, then runs its above
 * or below callback.  With `slot`, the inner calls are also written onto
 * that engine's tape as children of the recorded call running on this
 * thread (ct_tls_thread.parent).  Returns what the function returned (a
 * new reference), or NULL with its exception set (or a KeyboardInterrupt
 * from a callback); a callback's other errors never reach the caller. */
PyObject *ct_flat_call(PyObject *flat, PyObject *const *args, size_t nargsf, PyObject *kwnames,
                       ct_engine_slot *slot);

/* flat_site_call(offset, callee, *args, **kwargs), a direct call in a
 * flat profile's call-site rewrite: returns callee(*args, **kwargs) (a new
 * reference, or NULL with its exception), and adds its time to the call
 * site `offset` (the CALL instruction's in the original code) of the
 * activation on top of this thread's stack, if one is.  An offset that is
 * not an int is a TypeError (or OverflowError), before any call. */
PyObject *ct_flat_site_call(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames);

/* One activation of a flat-profiled generator or coroutine function,
 * resumed and suspended by the Pending object wrapping what it returned
 * (pending.c): each resume times the calls made directly in its frame. */
typedef struct ct_flat_run ct_flat_run;

/* A run of FlatProfile `flat` (a strong reference taken), or NULL when its
 * function is not a generator or coroutine function, on 3.11, or when memory
 * ran out (then it is only not timed).  Never raises. */
ct_flat_run *ct_flat_run_new(PyObject *flat);

/* Before each resume of the generator or coroutine.  Never raises. */
void ct_flat_run_resume(ct_flat_run *run);

/* After it: `finished` when it returned, raised or was closed; then the
 * above or below callback runs and, with `slot`, the inner calls are written
 * as children of the recorded call running on this thread.  A pending
 * exception is kept (a KeyboardInterrupt from a callback replaces it). */
void ct_flat_run_suspend(ct_flat_run *run, int finished, ct_engine_slot *slot);

/* Releases `run` (NULL: nothing). */
void ct_flat_run_free(ct_flat_run *run);

/* Visits the references of `run` (NULL: none). */
int ct_flat_run_traverse(ct_flat_run *run, visitproc visit, void *arg);

/* 1 when the function of FlatProfile `flat` is a generator or coroutine
 * function: its calls return at once and its body runs in a ct_flat_run. */
int ct_flat_suspends(PyObject *flat);

/* 1 when `o` is a FlatProfile, else 0. */
int ct_flat_check(ct_state *st, PyObject *o);

#endif
