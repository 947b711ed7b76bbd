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
    PyObject *tape;       /* str or NULL */
    PyObject *sanitize;   /* callable or NULL */
    PyObject *pickle;     /* tuple of types to pickle (record(pickle=)), or NULL */
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

/* Everything measured around one call, before its outcome is known. */
typedef struct ct_callinfo {
    uint64_t seq, parent, depth, thread, start;
    uint16_t flags;
    uint64_t cpu_start, cpu_end; /* thread CPU clock, read inside [start, end] */
    int64_t rss_before;
    uint64_t energy_pkg, energy_dram; /* counters at the start */
} ct_callinfo;

/* How the values of one recorded function are captured: shared by the
 * Recorder and the monitor.  `sanitize` is borrowed (or NULL). */
typedef struct ct_site {
    uint64_t fn_id;
    PyObject *sanitize;
    const ct_redact *redact; /* ct_redact_active() rules, or NULL */
    PyObject *pickle;        /* tuple of types to pickle, or NULL */
    Py_ssize_t max_value_bytes;
    int result;    /* record the return value */
    int max_depth; /* of the values written (ct_capture.max_depth); 0: the format's */
} ct_site;

/* Builds and appends the REC_CALL of a finished call of `site`: `args`
 * holds the encoded arguments (flagged in ci->flags); `result` the return
 * value or `exc` the exception (or neither, for a closed generator);
 * `locals` and `globals` the encoded locals and globals (each one DICT
 * value, or NULL).  Never raises; a pending exception is left as it was. */
void ct_emit_site_call(ct_state *st, const ct_site *site, ct_engine_slot *slot,
                       const ct_callinfo *ci, const uint8_t *args, size_t args_len, uint64_t end,
                       int outcome, PyObject *result, PyObject *exc, const wbuf *locals,
                       const wbuf *globals);

/* Appends the REC_FUNCTION of process-local function `fn_id` whose body
 * (module, qualname, file, line, signature) is the bytes `body`.  Returns 0,
 * or -1 when memory ran out (nothing appended; no exception set). */
int ct_emit_function(ct_state *st, ct_engine_slot *slot, uint64_t fn_id, PyObject *body);

/* Reads the energy counters at the start of a call and flags REC_HAS_ENERGY
 * in ci->flags when they could be read (ct_emit_site_call reads the end).
 * Never raises. */
void ct_energy_start(ct_state *st, ct_callinfo *ci);

/* The resident set size of this process in bytes (0 when unknown), read
 * with pread from /proc/self/statm opened once per process (st->statm_fd;
 * ct_rss_forget closes it in a forked child).  Never raises. */
int64_t ct_read_rss(ct_state *st);
/* Closes the statm file of the parent (in a forked child). */
void ct_rss_forget(ct_state *st);
/* CPU time of the calling thread in ns. */
uint64_t ct_thread_cpu_ns(void);

/* Starts the measured interval of a call: the wall clock, then the thread
 * CPU clock, so that the CPU interval lies inside the wall interval.  What
 * calltape does before (reading RSS, encoding the arguments) is outside
 * both. */
static inline void ct_call_begin(ct_callinfo *ci)
{
    ci->start = ct_now_ns();
    if (ci->flags & REC_HAS_CPU)
        ci->cpu_start = ct_thread_cpu_ns();
}

/* Ends it in the nested order: the thread CPU clock, then the wall clock.
 * Returns the wall end. */
static inline uint64_t ct_call_end(ct_callinfo *ci)
{
    if (ci->flags & REC_HAS_CPU)
        ci->cpu_end = ct_thread_cpu_ns();
    return ct_now_ns();
}

/* The parameters of code object `co`: positional, keyword-only, *args and
 * **kwargs, in that order (as in co_varnames). */
static inline Py_ssize_t ct_param_count(const PyCodeObject *co)
{
    return co->co_argcount + co->co_kwonlyargcount + ((co->co_flags & CO_VARARGS) != 0) +
           ((co->co_flags & CO_VARKEYWORDS) != 0);
}

/* The inspect.Parameter kind of parameter `i` of `co` (0 positional-only,
 * 1 positional-or-keyword, 2 *args, 3 keyword-only, 4 **kwargs). */
static inline int ct_param_kind(const PyCodeObject *co, Py_ssize_t i)
{
    if (i < co->co_posonlyargcount)
        return 0;
    if (i < co->co_argcount)
        return 1;
    if (i < co->co_argcount + co->co_kwonlyargcount)
        return 3;
    if ((co->co_flags & CO_VARARGS) && i == co->co_argcount + co->co_kwonlyargcount)
        return 2;
    return 4;
}

/* Writes the str `s` as varint length + UTF-8 bytes ("" when not a str).
 * Never raises. */
void ct_put_text(wbuf *b, PyObject *s);

/* Writes the fixed fields of a REC_CALL (kind to flags) at `q`, which must
 * have CT_CALL_HEAD_MAX bytes of room; returns the end. */
#define CT_CALL_HEAD_MAX (1 + 7 * 10 + 1 + 3)
static inline uint8_t *ct_put_call_head(uint8_t *q, uint64_t fn_id, const ct_callinfo *ci,
                                        uint64_t end, int outcome, uint16_t flags)
{
    *q++ = REC_CALL;
    q = put_varint_raw(q, fn_id);
    q = put_varint_raw(q, ci->seq);
    q = put_varint_raw(q, ci->parent);
    q = put_varint_raw(q, ci->depth);
    q = put_varint_raw(q, ci->thread);
    q = put_varint_raw(q, ci->start);
    q = put_varint_raw(q, end - ci->start);
    *q++ = (uint8_t)outcome;
    if (flags < 0x80) /* one byte, as before locals/globals */
        *q++ = (uint8_t)flags;
    else
        q = put_varint_raw(q, flags);
    return q;
}

/* ct_emit_site_call for a call of Recorder `r`, with its options. */
void ct_emit_call(Recorder *r, ct_engine_slot *slot, const ct_callinfo *ci, const wbuf *args,
                  uint64_t end, int outcome, PyObject *result, PyObject *exc);
/* The same with the encoded locals and globals (each one DICT value, or
 * NULL) of a plain function's call recorded with locals=/globals=True, and
 * the yields (one LIST value, or NULL) of a generator with yields=True. */
void ct_emit_call_frame(Recorder *r, ct_engine_slot *slot, const ct_callinfo *ci, const wbuf *args,
                        uint64_t end, int outcome, PyObject *result, PyObject *exc,
                        const wbuf *locals, const wbuf *globals, const wbuf *yields);

/* framedata.c: locals and globals of a call (plain functions only). */

/* The global names code object `code` (nested code included) loads,
 * dunders excluded: a new tuple, or NULL with an exception. */
PyObject *ct_global_names(PyObject *code);
/* name -> value for those `names` present in the dict `globals` whose
 * value is data (not a module, function, class or Recorder).  New dict or
 * NULL with an exception. */
PyObject *ct_globals_snapshot(ct_state *st, PyObject *globals, PyObject *names);

/* Encodes the dict `d` of named values (locals, globals) as one DICT onto
 * `b`, values at most `limit` bytes and `max_depth` deep (0: the format's):
 * names that match the redaction rules `rd` become REDACTED (at any
 * depth), `sanitize` (or NULL) filters the others.
 * Never raises. */
void ct_encode_named(ct_state *st, wbuf *b, PyObject *d, Py_ssize_t limit, int max_depth,
                     const ct_redact *rd, PyObject *sanitize);

/* The function running in `frame`, whose code is `code` (borrowed), or NULL
 * when it cannot be told.  Never raises. */
PyObject *ct_frame_function(PyFrameObject *frame, PyCodeObject *code);

/* One call watching for its frame's locals; lives on the C stack. */
typedef struct ct_locals_watch {
    PyObject *code;     /* borrowed: the code object watched */
    PyObject *snapshot; /* dict of the latest return of that code, or NULL */
    struct ct_locals_watch *prev;
#if PY_VERSION_HEX < 0x030C0000
    Py_tracefunc saved_func; /* the profile function replaced for the call */
    PyObject *saved_obj;
    int nested; /* an outer watch's profile function was already installed */
#endif
} ct_locals_watch;
/* Prepares `func` for locals capture (3.12+: instruments its code object's
 * returns).  Returns 0, or -1 with an exception (e.g. the tool id is taken). */
int ct_locals_enable(ct_state *st, PyObject *func);
/* Starts watching `code` on this thread (nested watches stack). */
void ct_locals_begin(ct_locals_watch *w, PyObject *code);
/* Stops watching and returns the locals at return, or, when `exc` is the
 * exception the call raised, at the raise: a new dict, or NULL when none
 * were seen.  Never raises; keeps a pending exception. */
PyObject *ct_locals_end(ct_locals_watch *w, PyObject *exc);

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
} ct_deferred;

/* Records the outcome (once) and releases the arguments. */
void ct_deferred_finish(ct_deferred *d, int outcome, PyObject *result, PyObject *exc);
/* Wraps `inner` (generator, coroutine or async generator); takes over `d`.
 * New reference, or NULL with an exception set. */
PyObject *ct_pending_wrap(ct_state *st, PyObject *inner, ct_deferred *d, int kind);

#endif
