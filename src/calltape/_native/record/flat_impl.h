/*
 * flat_impl.h - what flat.c (the wrapper, the activation stack, the events)
 * and flat_out.c (what an activation gives: the breakdown, the callbacks,
 * the tape's records) share of calltape.flat_profile.
 */
#ifndef CALLTAPE_FLAT_IMPL_H
#define CALLTAPE_FLAT_IMPL_H

#include "flat.h"

typedef struct FlatProfile {
    PyObject_HEAD vectorcallfunc vectorcall;
    PyObject *module_ref;    /* the _native module: its state */
    PyObject *func;          /* the function profiled (__wrapped__) */
    PyObject *run;           /* what is called: func (timed from events), or its rewrite */
    PyObject *code;          /* its code object (events set on it), or NULL */
    PyObject *result_cls;    /* callable(function, total, limit, calls) */
    PyObject *below, *above; /* callables, or None */
    PyObject *logger;        /* gates the levels below, or None */
    PyObject *is_enabled;    /* "isEnabledFor", interned */
    PyObject *log_cache;     /* logger._cache (level -> bool), or NULL */
    PyObject *log_dict;      /* logger.__dict__ (its `disabled`), or NULL */
    PyObject *str_disabled;  /* "disabled", interned */
    PyObject *keep;          /* frozenset of callables and names (only=), or NULL */
    PyObject *drop;          /* the same for ignore=, or NULL */
    PyObject *dict;
    double limit;                 /* seconds; < 0: no limit (never above) */
    int below_level, above_level; /* logging levels: skip when not enabled */
    int ignore_builtins, warned, wrap_kind;
    int body; /* FLAT_BODY_*: what calling func returns */
} FlatProfile;

enum { FLAT_FUNCTION, FLAT_CLASSMETHOD, FLAT_STATICMETHOD };

/* What the profiled function's body is: run at the call, or later by a
 * generator or coroutine it returns (each resume a part of the activation). */
enum { FLAT_BODY_PLAIN, FLAT_BODY_GENERATOR, FLAT_BODY_COROUTINE };

/* ---- one activation's calls, by call site and callee ---------------------- */

typedef struct flat_site {
    PyObject *callee; /* strong; NULL: a free slot */
    const void *key;  /* what the site is found by: callee, or a bound builtin's method */
    long offset;      /* of the CALL instruction in the code */
    uint64_t count, total_ns, max_ns, first_ns;
} flat_site;

typedef struct flat_act {
    PyObject *code; /* borrowed: its FlatProfile holds it */
    flat_site *sites;
    size_t cap, n;      /* cap a power of two, n used */
    flat_site *pending; /* the inner call being timed, or NULL */
    uint64_t since;     /* when it started */
    void *frame;        /* 3.11: the activation's frame (identity only), or NULL */
} flat_act;

/* Counts one more call of `site`, made at `now`. */
static inline void flat_site_begin(flat_site *site, uint64_t now)
{
    if (!site->count++)
        site->first_ns = now;
}

/* Adds a call of `d` ns to `site`'s total and maximum. */
static inline void flat_site_time(flat_site *site, uint64_t d)
{
    site->total_ns += d;
    if (d > site->max_ns)
        site->max_ns = d;
}

/* Ends the inner call being timed in `a` at `now`. */
static inline void flat_act_close(flat_act *a, uint64_t now)
{
    if (!a->pending)
        return;
    flat_site_time(a->pending, now - a->since);
    a->pending = NULL;
}

/* Starts timing a call of `site` (NULL: none, memory ran out) at `now`,
 * until the next flat_act_close of `a`. */
static inline void flat_act_open(flat_act *a, flat_site *site, uint64_t now)
{
    if (!site)
        return;
    flat_site_begin(site, now);
    a->pending = site;
    a->since = now;
}

/* Runs the above or below callback for the activation `a` (NULL: no
 * breakdown, as on 3.11) that took `total_ns`.  Never raises (but a
 * KeyboardInterrupt is left pending). */
void flat_report(FlatProfile *fp, flat_act *a, uint64_t total_ns);

/* Writes each kept call site of `a` onto `slot`'s tape as a child call of
 * the recorded call running on this thread.  Never raises. */
void flat_emit_children(FlatProfile *fp, flat_act *a, ct_engine_slot *slot);

#endif
