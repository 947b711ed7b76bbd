/*
 * monitor_impl.h - what the files of calltape.monitor share: the per-code
 * decision, the shadow stack, the Monitor object, and the entry points of
 * each file.  The files, from the top:
 *   monitor.c          the Monitor type: options, start, stop;
 *   monitor_sysmon.c   the hooks on sys.monitoring (3.12+), or
 *   monitor_profile.c  the hooks on a C profile function (3.11): each
 *                      includes monitor_events.h, the events of a call
 *                      (start, end, suspend, resume), so that they inline
 *                      into the hooks;
 *   monitor_code.c     which code is recorded, its description, the parked
 *                      generators' callback.
 * See monitor.c for the design and invariants.
 */
#ifndef CALLTAPE_MONITOR_IMPL_H
#define CALLTAPE_MONITOR_IMPL_H

#include "emit.h"
#include "framedata.h"
#include "monitor.h"
#include "sink.h"

#include <pthread.h>

/* calltape run redacts the built-in and configured names of secrets. */
static const ct_redact mon_redact = {NULL, NULL, 1};

#if PY_VERSION_HEX >= 0x030C0000
#define CT_SYS_MONITORING 1
#else
#define CT_SYS_MONITORING 0
#endif

#if PY_VERSION_HEX >= 0x030C0000
#define code_get_extra PyUnstable_Code_GetExtra
#define code_set_extra PyUnstable_Code_SetExtra
#define request_code_extra PyUnstable_Eval_RequestCodeExtraIndex
#else
#define code_get_extra _PyCode_GetExtra
#define code_set_extra _PyCode_SetExtra
#define request_code_extra _PyEval_RequestCodeExtraIndex
#endif

#define MON_TOOL_ID 2 /* sys.monitoring.PROFILER_ID */
#define MON_SCAN 8    /* how deep a return is looked for in the stack */

/* ---- per-code decisions ------------------------------------------------- */

typedef struct ct_codeinfo {
    uint64_t generation; /* of the monitor the decision was made for */
    int record;          /* 1: record calls of this code */
    int is_gen;          /* generator, coroutine or async generator */
    uint64_t fn_id;      /* 0 until first recorded */
    uint64_t announced_serial;
    PyObject *fn_record;      /* bytes: REC_FUNCTION body, or NULL */
    PyObject *names;          /* tuple of parameter names */
    PyObject *global_names;   /* tuple: the globals it reads (monitor(globals=True)) */
    uint8_t *redacted;        /* per parameter */
    uint64_t seen_generation; /* counted in Monitor.functions */
    uint32_t sample_counter;
} ct_codeinfo;

/* Frees a ct_codeinfo (the code extra slot's destructor). */
void ct_mon_codeinfo_free(void *p);

/* ---- the shadow stack --------------------------------------------------- */

typedef struct mon_entry {
    PyCodeObject *code; /* identity only */
    PyObject *gen;     /* the generator or coroutine running it (borrowed while it runs), or NULL */
    ct_codeinfo *info; /* NULL: a call that is not recorded (sampled out, too deep) */
    uint64_t generation;                /* of the monitor that pushed it */
    uint64_t saved_parent, saved_depth; /* the thread's, when it was pushed */
    ct_callinfo ci;
    size_t args_at, args_len; /* in the arena */
    size_t globals_len;       /* encoded globals, in the arena after the arguments */
} mon_entry;

typedef struct mon_stack {
    mon_entry *v;
    size_t n, cap;
    wbuf arena;
} mon_stack;

/* The calling thread's stack, or NULL before its first recorded call. */
extern __attribute__((tls_model("initial-exec"))) _Thread_local mon_stack *ct_mon_tls_stack;
/* Frees a thread's stack (the pthread key's destructor). */
void ct_mon_stack_free(void *p);

/* Pops the stack down to (not including) index `i`, restoring the parent
 * link of the thread to what it was when entry `i` was pushed (started or
 * resumed: a generator resumed by another caller returns to that one). */
static inline void mon_unwind_to(mon_stack *s, size_t i, ct_thread *t)
{
    if (i >= s->n)
        return;
    t->parent = s->v[i].saved_parent;
    t->depth = s->v[i].saved_depth;
    s->arena.len = s->v[i].args_at;
    s->n = i;
}

/* ---- the Monitor object ------------------------------------------------- */

typedef struct Monitor {
    PyObject_HEAD PyObject *modules; /* tuple of str: module prefixes to record */
    PyObject *paths;                 /* tuple of str: directories to record */
    PyObject *exclude;               /* tuple of str: glob patterns */
    PyObject *never;                 /* tuple of str: directories never recorded */
    PyObject *tape;                  /* str or NULL */
    PyObject *module_ref;
    ct_state *st;
    Py_ssize_t max_value_bytes, max_depth;
    int max_value_depth; /* nesting of the values written; 0: the format's */
    uint32_t sample;
    uint8_t opt_args, opt_result, opt_cpu, opt_memory, opt_energy, opt_locals, opt_globals;
    int running;
    uint64_t generation;
    uint64_t calls_seen;     /* recorded calls started */
    uint64_t functions_seen; /* functions with recorded calls */
} Monitor;

typedef ct_monitor_state mon_active;

static inline mon_active *active_of(PyObject *module)
{
    return &((ct_state *)PyModule_GetState(module))->rec.monitor;
}

/* The info kept in `co`'s extra slot (a decision of any generation), or
 * NULL when there is none yet. */
static inline ct_codeinfo *code_info(const mon_active *a, PyCodeObject *co)
{
    void *extra = NULL;
    if (code_get_extra((PyObject *)co, a->extra_index, &extra) < 0) {
        PyErr_Clear();
        return NULL;
    }
    return extra;
}

/* 1 when `info` holds a decision of the running monitor. */
static inline int decided(const mon_active *a, const ct_codeinfo *info)
{
    return info && info->generation == a->generation;
}

/* monitor_code.c */
/* Makes the decision for `co` under the running monitor into `info` (its
 * code_info(), NULL: none yet).  Returns the info, or NULL on failure (then
 * not recorded).  `globals` (borrowed, may be NULL) are those of the
 * running frame.  Never raises. */
ct_codeinfo *ct_mon_decide(mon_active *a, PyCodeObject *co, ct_codeinfo *info, PyObject *globals);
/* The entry (a mon_entry and its encoded values, `len` bytes) of a parked
 * generator or coroutine whose object is gone without finishing: recorded
 * as closed now.  `ctx` is the mon_active.  Never raises. */
void ct_mon_emit_abandoned(void *ctx, const uint8_t *entry, size_t len);
/* The weak references' callback of parked generators (self: the module). */
extern PyMethodDef ct_mon_parked_gone_def;

/* monitor_sysmon.c or monitor_profile.c */
/* Installs the hooks for the running monitor `a`.  Returns 0, or -1 with
 * an exception (another profiler holds the hooks). */
int ct_mon_hooks_install(PyObject *module, mon_active *a);
/* Removes them.  Never raises; keeps a pending exception. */
void ct_mon_hooks_remove(PyObject *module, mon_active *a);

#endif
