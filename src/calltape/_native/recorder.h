/*
 * recorder.h - the Recorder object (recorder.c), shared with pending.c.
 */
#ifndef CALLTAPE_RECORDER_H
#define CALLTAPE_RECORDER_H

#include "binding.h"

enum ct_kind { KIND_PLAIN, KIND_GENERATOR, KIND_COROUTINE, KIND_ASYNC_GENERATOR };
enum ct_wrap { WRAP_FUNCTION, WRAP_CLASSMETHOD, WRAP_STATICMETHOD };

typedef struct Recorder {
    PyObject_HEAD vectorcallfunc vectorcall;
    ct_state *st;
    PyObject *module_ref; /* keeps the state alive */
    PyObject *func;       /* what is called */
    PyObject *wrapped;    /* what was decorated (__wrapped__) */
    PyObject *dict;
    PyObject *tape;                           /* str or NULL */
    PyObject *sanitize;                       /* callable or NULL */
    PyObject *redact_exact, *redact_patterns; /* extra names, or NULL */
    ct_engine_slot *slot;                     /* cached engine of `tape` */
    PyObject *names;                          /* tuple of parameter names */
    uint8_t *redacted;                        /* per parameter */
    PyObject *fn_record;                      /* bytes: REC_FUNCTION body after the fn id */
    Py_ssize_t argcount, posonly, kwonly, nparams, max_value_bytes;
    uint64_t fn_id, announced_serial;
    uint32_t sample, sample_counter;
    int kind, wrap, bound; /* bound: names come from a code object */
    int has_varargs, has_varkw, redact_default;
    uint8_t opt_args, opt_result, opt_cpu, opt_memory;
} Recorder;

/* Everything measured around one call, before its outcome is known. */
typedef struct ct_callinfo {
    uint64_t seq, parent, depth, thread, start;
    uint8_t flags;
    uint64_t cpu_start;
    int64_t rss_before;
} ct_callinfo;

/* Builds and appends the REC_CALL of a finished call.  `args` holds the
 * encoded arguments; `result` the return value or `exc` the exception (or
 * neither, for a closed generator).  Never raises. */
void ct_emit_call(Recorder *r, ct_engine_slot *slot, const ct_callinfo *ci, const wbuf *args,
                  uint64_t end, int outcome, PyObject *result, PyObject *exc);

/* A call whose record waits for its generator or coroutine to finish. */
typedef struct ct_deferred {
    Recorder *recorder; /* strong */
    ct_engine_slot *slot;
    ct_callinfo ci;
    wbuf args; /* on the heap */
    int done;
} ct_deferred;

/* Records the outcome (once) and releases the arguments. */
void ct_deferred_finish(ct_deferred *d, int outcome, PyObject *result, PyObject *exc);
/* Wraps `inner` (generator, coroutine or async generator); takes over `d`.
 * New reference, or NULL with an exception set. */
PyObject *ct_pending_wrap(ct_state *st, PyObject *inner, ct_deferred *d, int kind);

#endif
