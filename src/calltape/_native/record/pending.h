/*
 * pending.h - calls of generators, coroutines and async generators recorded
 * when they finish (pending.c).
 */
#ifndef CALLTAPE_PENDING_H
#define CALLTAPE_PENDING_H

#include "flat.h"
#include "recorder.h"

/* A call whose record waits for its generator or coroutine to finish. */
typedef struct ct_deferred {
    Recorder *recorder; /* strong */
    ct_engine_slot *slot;
    ct_callinfo ci;
    wbuf args; /* on the heap */
    int done;
    /* yields=True: the encoded values yielded so far (at most the
     * recorder's max_value_bytes), how many, and how many were left out */
    wbuf yields;
    uint64_t nyields, nomitted;
    int want_yields;
    ct_flat_run *flat; /* flat_profile of a generator or coroutine: owned, or NULL */
    int timed;         /* @timer: its lines are written when it finishes */
    wbuf timer_args;   /* their arguments' text, made at the call (on the heap) */
} ct_deferred;

/* Records the outcome (once) and releases the arguments. */
void ct_deferred_finish(ct_deferred *d, int outcome, PyObject *result, PyObject *exc);
/* Wraps `inner` (generator, coroutine or async generator); takes over `d`.
 * New reference, or NULL with an exception set. */
PyObject *ct_pending_wrap(ct_state *st, PyObject *inner, ct_deferred *d, int kind);

#endif
