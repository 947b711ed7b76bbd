/*
 * probes.h - run-time probes (calltape.probes): the Instrument type
 * (instrument.c: an expression compiled once, its event, lifespan, status
 * and errors, and the count and histogram accumulators kept in C) and the
 * ProbeHook type (hook.c: one target's code object, its instruments, and
 * the sys.monitoring callbacks that fire them on 3.12+; on 3.11 the call of
 * the wrappers that patch.c puts in place of every reference to the
 * target, which fire them through the same code).
 *
 * Invariants: firing an instrument never changes what the target does: an
 * error is caught, stored in the instrument (errors, status) and never
 * reaches the target's frame; a hook that is not started has no event set
 * on its code object, so the target runs at full speed.
 */
#ifndef CALLTAPE_PROBES_H
#define CALLTAPE_PROBES_H

#include "binding.h"

/* The events an instrument fires on (a bit mask). */
enum probe_event { PEV_CALL = 1, PEV_RETURN = 2, PEV_ERROR = 4, PEV_END = 8 };

/* What an instrument does with its value: in C (count, histogram), or by
 * calling the Python method fire(value, namespace). */
enum probe_kind {
    PKIND_PY = 0,
    PKIND_COUNT = 1,
    PKIND_HIST = 2,
    PKIND_RECORD = 3,
    PKIND_LOG = 4,  /* queued for the log thread (logq.c) */
    PKIND_PRINT = 5 /* written to the instrument's `out` (calltape.compat.diagnose) */
};

/* The most errors an instrument keeps (the oldest are dropped; nerrors
 * counts them all). */
#define PROBE_MAX_ERRORS 20

typedef struct ProbeInstrument {
    PyObject_HEAD PyObject *dict;    /* instance __dict__ (subclasses) */
    PyObject *name, *value, *custom; /* str, str, dict */
    PyObject *code;                  /* the value compiled ("eval" mode), or NULL */
    PyObject *constant;              /* the value when it is a constant expression, or NULL */
    PyObject *bare;   /* the value when it is one name (interned str): looked up, not run */
    PyObject *fire;   /* bound fire() of a PKIND_PY instrument, or NULL */
    PyObject *errors; /* list of (unix time, event, "Type: message") */
    double expires;   /* unix time after which it detaches; 0: never */
    int64_t nerrors, fired;
    int events, kind, disable_on_error, disabled, expired;
    int uses_now; /* its expression names `now`, or its fire() wants it */
    /* PKIND_COUNT: the sum of the values (int until a float comes) */
    int64_t isum;
    double fsum;
    int is_float;
    /* PKIND_HIST: exact count/min/max/sum, percentiles over a reservoir */
    int64_t n;
    double min, max, sum;
    double *samples;
    size_t nsamples;
    uint64_t rng;
    /* PKIND_LOG: "Probe (name) = str(value)" queued for (logger, pathname) (logq.c) */
    PyObject *log_target;
    int log_level;
    Py_ssize_t log_max_chars;
    /* PKIND_RECORD (record.c): the function's description, once */
    PyObject *rec_names, *rec_body; /* tuple of parameter names; REC_FUNCTION body */
    uint64_t rec_fn_id, rec_serial;
} ProbeInstrument;

/* The instruments of one target's code object (hook.c). */
typedef struct ProbeHook {
    PyObject_HEAD PyObject *module; /* the _native module (its state) */
    PyCodeObject *code;
    PyObject *varnames;    /* code.co_varnames, read once */
    PyObject *instruments; /* tuple of Instrument */
    PyObject *globals;     /* dict: the manager's global namespace */
    PyObject *now_fn;      /* callable() -> now, or None */
    PyObject *on_expire;   /* callable(instrument), or None */
    PyObject *patches;     /* 3.11 (patch.c): list of the references patched, or NULL */
    int mask;              /* the events of the instruments */
    int ns_at_call;        /* some instrument needs the namespace */
    int need_now;          /* ... and `now` in it */
    int stacked;           /* calls push a stack entry (return/error/end) */
    int catch_frame;       /* 3.11: the wrapper catches the target's frame, */
    int args_enough;       /* ... unless the call's arguments bind in order */
    int running;
} ProbeHook;

/* One call of a probed function at its end, for the record instrument. */
typedef struct ct_probe_call {
    PyCodeObject *code;
    PyObject *globals_of_target; /* the frame's globals (borrowed) */
    PyObject *ns;                /* the namespace, or NULL */
    PyObject *result, *exc;      /* one of them (borrowed), or neither */
    uint64_t start_ns, end_ns;
} ct_probe_call;

/* Writes `call` as a call record (CAPTURE_PROBE) onto the default tape for
 * record instrument `in`.  Returns 0, or -1 with an exception set. */
int ct_probe_record(ct_state *st, ProbeInstrument *in, const ct_probe_call *call);

/* 1 when `o` is an Instrument (or a subclass). */
int ct_probe_is_instrument(ct_state *st, PyObject *o);

/* Fires instrument `in` of module state `st` with `value` (borrowed) and
 * namespace `ns` (borrowed, may be NULL for C kinds).  Returns 0, or -1 with an exception set (the
 * caller records it with ct_probe_fail). */
int ct_probe_accumulate(ct_state *st, ProbeInstrument *in, PyObject *value, PyObject *ns);

/* Records the pending exception as an error of `in` at event `ev` (one
 * enum probe_event bit), clearing it; disables `in` under its policy.
 * Returns 0, or -1 when the error must propagate (KeyboardInterrupt,
 * MemoryError: left pending). */
int ct_probe_fail(ProbeInstrument *in, int ev);

/* The event name of bit `ev` ("call", "return", "error", "end"). */
const char *ct_probe_event_name(int ev);

/* Wall clock, seconds since the epoch. */
double ct_probe_wall(void);

extern PyType_Spec ProbeInstrument_spec;
extern PyType_Spec ProbeHook_spec;
extern PyType_Spec ProbeWrapper_spec;
extern PyType_Spec SpecReader_spec; /* specs.c */

/* 3.11 (hook.c): calls `func` (a function running h->code) for a
 * ProbeWrapper of `h`, firing the instruments of `h` when it is running.
 * Returns what the call returns (NULL with its exception set). */
PyObject *ct_probe_wrapper_call(ProbeHook *h, PyObject *func, PyObject *const *args, size_t nargsf,
                                PyObject *kwnames);

/* 3.11 (wrapper.c): a new ProbeWrapper of `h` standing in for `func` (a
 * function running h->code), or NULL with an exception set.  It takes
 * references to `h` and `func`. */
PyObject *ct_probe_wrapper_new(ct_state *st, ProbeHook *h, PyObject *func);

/* 3.11 (inplace311.c): what replaces `o` (borrowed), or NULL; it must
 * neither allocate nor run Python code. */
typedef PyObject *(*ct_frame_find)(const void *arg, PyObject *o);

/* 3.11 (inplace311.c): replaces each local variable of each frame on each
 * thread's stack that `find` replaces, or with `dry` only counts them.
 * Returns how many; cannot fail.  The caller holds references to the
 * objects replaced. */
Py_ssize_t ct_frames_swap_running(ct_frame_find find, const void *arg, int dry);

/* 3.11 (inplace311.c): the same for the frame of `gen`, a suspended or
 * running generator, coroutine or async generator (0 for anything else,
 * or one finished). */
Py_ssize_t ct_frames_swap_generator(PyObject *gen, ct_frame_find find, const void *arg, int dry);

/* 3.11 (inplace311.c): replaces, where they are, the keys of dict `o` or
 * the members of set `o` that `find` replaces by an object of the same
 * hash (0 for anything else), or with `dry` only counts the keys `find`
 * replaces (then it cannot fail).  Returns how many, or -1 with an
 * exception set (hashing a replacement may run Python code).  The caller
 * holds references to the objects replaced. */
Py_ssize_t ct_keys_swap(PyObject *o, ct_frame_find find, const void *arg, int dry);

/* 3.11 (patch.c): replaces every reference to the functions running
 * h->code that can be replaced by a ProbeWrapper (h->patches lists them).
 * Returns 0, or -1 with an exception set (what was patched stays listed,
 * for ct_probe_unpatch). */
int ct_probe_patch(ProbeHook *h);

/* 3.11 (patch.c): puts back every reference ct_probe_patch replaced (one
 * that changed since is left as it is).  Returns 0, or -1 with an
 * exception set. */
int ct_probe_unpatch(ProbeHook *h);

/* _native.probe_tool() -> the sys.monitoring tool id probes use, or None
 * before 3.12. */
PyObject *ct_probe_tool_py(PyObject *module, PyObject *unused);

/* _native.probe_specs(path, op, *args): the probe specs of a tape
 * (specs.c, which documents the operations).  Returns what the operation
 * returns, or NULL with TapeError set. */
PyObject *ct_probe_specs_py(PyObject *module, PyObject *args);

#endif
