/*
 * emit.h - the records every capture path writes, built one way (emit.c):
 * a finished call (REC_CALL, the hot builder below, inlined into its
 * callers), a function's description (REC_FUNCTION, built once per
 * function from its code or signature), a thread's row (REC_THREAD).
 *
 * Layering: emit calls the value capture (capture.c, objects.c), the
 * instruments and the sink; @record (recorder.c, pending.c) and the
 * monitor (monitor*.c) call emit, never each other.
 */
#ifndef CALLTAPE_EMIT_H
#define CALLTAPE_EMIT_H

#include "binding.h"
#include "instruments/instruments.h"
#include "sink.h"

#include <sys/resource.h>

/* How the values of one recorded function are captured: shared by the
 * Recorder and the monitor.  `sanitize` is borrowed (or NULL). */
typedef struct ct_site {
    uint64_t fn_id;
    PyObject *sanitize;
    const ct_redact *redact; /* ct_redact_active() rules, or NULL */
    PyObject *pickle;        /* tuple of types to pickle, or NULL */
    Py_ssize_t max_value_bytes;
    int result;      /* record the return value */
    int max_depth;   /* of the values written (ct_capture.max_depth); 0: the format's */
    uint8_t capture; /* the enum rec_capture its records carry */
} ct_site;

/* ---- function descriptions ----------------------------------------------- */

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

/* Writes the module name `mod` of a recorded function as ct_put_text does,
 * "__main__" for "__mp_main__" when that is the program's main module (a
 * multiprocessing spawn or forkserver child): the name the parent used. */
void ct_put_module(wbuf *b, PyObject *mod);

/* What a function's description is made of.  All borrowed. */
typedef struct ct_fn_desc {
    PyObject *module, *qualname, *file; /* str, or NULL ("") */
    long line;
    PyObject *names;         /* tuple: the parameter names */
    PyCodeObject *code;      /* their kinds; NULL: (*args, **kwargs) of a callable */
    PyObject *func;          /* a function whose defaults are written, or NULL: none */
    const uint8_t *redacted; /* per parameter: its default is written REDACTED */
    PyObject *sanitize;      /* callable(name, default) filtering defaults, or NULL */
    ct_capture *cap;         /* how defaults are captured (with `func` only) */
} ct_fn_desc;

/* Builds the REC_FUNCTION body (after kind and id): module, qualname, file,
 * line, signature (a LIST of TUPLE(name, kind[, default])).  Runs the
 * sanitize callable on defaults.  Returns a new bytes object, or NULL with
 * an exception set. */
PyObject *ct_describe_function(ct_state *st, const ct_fn_desc *d);

/* Appends the REC_FUNCTION of process-local function `fn_id` whose body
 * (module, qualname, file, line, signature) is the bytes `body`.  Returns 0,
 * or -1 when memory ran out (nothing appended; no exception set). */
int ct_emit_function(ct_state *st, ct_engine_slot *slot, uint64_t fn_id, PyObject *body);

/* ---- threads ------------------------------------------------------------- */

/* Announces the current thread to `slot`'s engine (a REC_THREAD with its
 * name) if not done yet.  Never raises. */
void ct_thread_announce(ct_state *st, ct_engine_slot *slot, ct_thread *t);

/* ---- calls --------------------------------------------------------------- */

/* Writes the kind and the fixed head of a REC_CALL at `q`, which must have
 * CT_CALL_HEAD_MAX bytes of room; returns the end. */
#define CT_CALL_HEAD_MAX (1 + REC_CALL_HEAD)
static inline uint8_t *ct_put_call_head(uint8_t *q, uint64_t fn_id, const ct_callinfo *ci,
                                        uint64_t end, int outcome, uint16_t flags)
{
    *q++ = REC_CALL;
    return rec_put_call_head(q, fn_id, ci->thread, ci->depth, ci->seq, ci->parent, ci->start,
                             end - ci->start, flags, (uint8_t)outcome);
}

/* Builds and appends the REC_CALL of a finished call of `site`: `args`
 * holds the encoded arguments (flagged in ci->flags); `result` the return
 * value or `exc` the exception (or neither, for a closed generator);
 * `locals` and `globals` the encoded locals and globals (each one DICT
 * value, or NULL), `yields` what a generator yielded (one LIST, or NULL).
 * Never raises; a pending exception is left as it was.  Always inlined, so
 * that the callers that pass no locals, globals or yields compile without
 * their code. */
static inline __attribute__((always_inline)) void
ct_emit_build(ct_state *st, const ct_site *site, ct_engine_slot *slot, const ct_callinfo *ci,
              const uint8_t *args, size_t args_len, uint64_t end, int outcome, PyObject *result,
              PyObject *exc, const wbuf *locals, const wbuf *globals, const wbuf *yields)
{
    ct_thread *t = &ct_tls_thread;
    uint8_t rstore[256];
    wbuf res;
    wbuf_init(&res, rstore, sizeof rstore);
    uint16_t flags = ci->flags | rec_capture_flags((enum rec_capture)site->capture);
    /* explicit per slot, not a loop: a loop over the slots keeps an array on
     * the hot path's stack (measured), where these NULL tests compile away */
    if (locals)
        flags |= value_flag(VALUE_LOCALS);
    if (globals)
        flags |= value_flag(VALUE_GLOBALS);
    if (yields)
        flags |= value_flag(VALUE_YIELDS);
    t->busy++;
    if (exc) {
        ct_capture_exception(st, &res, exc);
        flags |= REC_HAS_RESULT;
    } else if (result && site->result) {
        ct_capture cap = {st, site->max_value_bytes, 1, site->redact, NULL, site->pickle};
        cap.max_depth = site->max_depth;
        if (site->sanitize) {
            ct_capture_sanitized(&cap, &res, site->sanitize, NULL, result);
        } else if (!ct_capture_small(&res, result)) {
            ct_capture_other(&cap, &res, result);
        }
        if (cap.blobbed)
            flags |= REC_HAS_BLOBS;
        flags |= REC_HAS_RESULT;
    }
    t->busy--;
    uint64_t cpu = 0;
    int64_t rss_after = 0, peak = 0;
    if (flags & REC_HAS_CPU) /* read by the caller, inside the wall interval */
        cpu = ci->cpu_end > ci->cpu_start ? ci->cpu_end - ci->cpu_start : 0;
    if (flags & REC_HAS_MEMORY) {
        struct rusage ru;
        rss_after = ct_read_rss(st);
        t->rss_after = rss_after; /* for @timer's lines (timer.c) */
        /* @timer shows no peak: its calls spare the system call, and their
         * peak on the tape is the larger of RSS before and after */
        if (site->capture != CAPTURE_TIMER && getrusage(RUSAGE_SELF, &ru) == 0)
            peak = (int64_t)ru.ru_maxrss * 1024;
        /* the high-water mark is kept in other units and updated lazily by
         * the kernel: the peak is at least what was seen around the call */
        if (peak < ci->rss_before)
            peak = ci->rss_before;
        if (peak < rss_after)
            peak = rss_after;
    }
    uint8_t store[512];
    wbuf b;
    ct_frame_begin(&b, store, sizeof store);
    uint8_t *q = ct_put_call_head(b.data + b.len, site->fn_id, ci, end, outcome, flags);
    size_t flags_at = (size_t)(q - b.data) - REC_CALL_HEAD + REC_CALL_FLAGS_AT; /* low byte */
    b.len = (size_t)(q - b.data);
    if (flags & REC_HAS_CPU)
        wbuf_varint(&b, cpu);
    if (flags & REC_HAS_MEMORY) {
        wbuf_varint(&b, (uint64_t)ci->rss_before);
        wbuf_varint(&b, (uint64_t)rss_after);
        wbuf_varint(&b, (uint64_t)peak);
    }
    if (flags & REC_HAS_ENERGY)
        ct_energy_end(st, ci, &b, &b.data[flags_at]);
    /* the slots in enum value_slot order: args, result, then the frame's */
    if (flags & value_flag(VALUE_ARGS)) {
        wbuf_varint(&b, args_len);
        wbuf_put(&b, args, args_len);
    }
    if (flags & value_flag(VALUE_RESULT)) {
        wbuf_varint(&b, res.len);
        wbuf_put(&b, res.data, res.len);
    }
    if (locals) {
        wbuf_varint(&b, locals->len);
        wbuf_put(&b, locals->data, locals->len);
    }
    if (globals) {
        wbuf_varint(&b, globals->len);
        wbuf_put(&b, globals->data, globals->len);
    }
    if (yields) {
        wbuf_varint(&b, yields->len);
        wbuf_put(&b, yields->data, yields->len);
    }
    if (!res.failed) {
        ct_counters_due(st, slot, end);
        ct_append_framed(st, slot, &b);
    }
    wbuf_free(&b);
    wbuf_free(&res);
}

/* ct_emit_build out of line, for the paths off the hot one (the monitor's
 * full records, a generator's end, calls with locals or globals). */
void ct_emit_site_call(ct_state *st, const ct_site *site, ct_engine_slot *slot,
                       const ct_callinfo *ci, const uint8_t *args, size_t args_len, uint64_t end,
                       int outcome, PyObject *result, PyObject *exc, const wbuf *locals,
                       const wbuf *globals, const wbuf *yields);

#endif
