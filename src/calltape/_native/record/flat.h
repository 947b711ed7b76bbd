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

/* 1 when `o` is a FlatProfile, else 0. */
int ct_flat_check(ct_state *st, PyObject *o);

#endif
