/*
 * recorder.h - the Recorder object (recorder.c): what @calltape.record
 * made of a function, read by pending.c (a generator's call recorded when
 * it finishes) and by replay and resolve (the function a Recorder wraps).
 */
#ifndef CALLTAPE_RECORDER_H
#define CALLTAPE_RECORDER_H

#include "binding.h"
#include "emit.h"
#include "framedata.h"
#include "sink.h"

enum ct_kind { KIND_PLAIN, KIND_GENERATOR, KIND_COROUTINE, KIND_ASYNC_GENERATOR };
enum ct_wrap { WRAP_FUNCTION, WRAP_CLASSMETHOD, WRAP_STATICMETHOD };

typedef struct Recorder {
    PyObject_HEAD vectorcallfunc vectorcall;
    ct_state *st;
    PyObject *module_ref; /* keeps the state alive */
    PyObject *func;       /* what is called */
    PyObject *probe;      /* 3.11: a probe's wrapper of func, called instead, or NULL */
    PyObject *wrapped;    /* what was decorated (__wrapped__) */
    PyObject *dict;
    PyObject *tape;       /* str or NULL */
    PyObject *sanitize;   /* callable or NULL */
    PyObject *pickle;     /* tuple of types to pickle (record(pickle=)), or NULL */
    PyObject *flat;       /* flat_profile(record=True): calls go through it, or NULL */
    PyObject *timer;      /* @timer / @catch_errors: its TimerSink (timer.c), or NULL */
    PyObject *timer_name; /* str: func.__name__ at the first output (timer.c), or NULL */
    ct_redact redact;     /* its names of secrets */
    ct_engine_slot *slot; /* cached engine of `tape` */
    PyObject *names;      /* tuple of parameter names */
    uint8_t *redacted;    /* per parameter */
    uint8_t *pos_secret;  /* not a function: per leading positional argument, 1
                             when inspect.signature names it a secret; or NULL */
    Py_ssize_t npos_secret;
    PyObject *fn_record;    /* bytes: REC_FUNCTION body after the fn id */
    PyObject *global_names; /* tuple of str (globals=True), or NULL */
    Py_ssize_t argcount, posonly, kwonly, nparams, max_value_bytes;
    uint64_t fn_id, announced_serial;
    uint32_t sample, sample_counter;
    int kind, wrap, bound; /* bound: names come from a code object */
    int has_varargs, has_varkw;
    uint8_t opt_args, opt_result, opt_cpu, opt_memory, opt_locals, opt_globals;
    uint8_t opt_frame;  /* opt_locals or opt_globals: the one test on the common path */
    uint8_t opt_yields; /* generators: record what they yield */
    uint8_t opt_energy; /* CT_ENERGY_OFF, _ON or _CONFIGURED (follow configure()) */
} Recorder;

/* The capture settings of Recorder `r`'s values. */
static inline ct_site ct_recorder_site(const Recorder *r)
{
    ct_site site = {r->fn_id,
                    r->sanitize,
                    ct_redact_active(r->st, &r->redact),
                    r->pickle,
                    r->max_value_bytes,
                    r->opt_result,
                    0,
                    r->flat    ? CAPTURE_FLAT
                    : r->timer ? CAPTURE_TIMER
                               : CAPTURE_DECORATOR};
    return site;
}

/* A block of code measured as a call of `r`'s function (metrics_start /
 * metrics_end): begins it into *ci (its engine slot in *slot).  Returns 0,
 * or -1 when it is not recorded (recording off, no tape); never raises.
 * The block is not made the parent of the calls made inside it (its end
 * may never come). */
int ct_recorder_block_begin(Recorder *r, ct_callinfo *ci, ct_engine_slot **slot);
/* Ends the block begun into `ci`: records it (returned, no arguments, no
 * result) and writes r's timer outputs.  Never raises. */
void ct_recorder_block_end(Recorder *r, ct_engine_slot *slot, ct_callinfo *ci);

#endif
