/*
 * monitor_events.h - the events of a call under calltape.monitor: it
 * starts (its arguments and globals captured onto the thread's shadow
 * stack), ends (its record emitted), suspends (a generator's entry parked)
 * or resumes.  Included by the one hook file of this build
 * (monitor_sysmon.c on 3.12+, monitor_profile.c on 3.11), so that these
 * static functions inline into the hooks as when they were one file.
 * Invariants: see monitor.c.
 */
#ifndef CALLTAPE_MONITOR_EVENTS_H
#define CALLTAPE_MONITOR_EVENTS_H

#include "monitor_impl.h"

#include <stdlib.h>

/* ---- the shadow stack --------------------------------------------------- */

/* The calling thread's stack, created on first use; NULL when out of
 * memory.  `key` frees it when the thread ends. */
static mon_stack *stack_get(pthread_key_t key)
{
    mon_stack *s = ct_mon_tls_stack;
    if (s)
        return s;
    s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    wbuf_init(&s->arena, NULL, 0);
    (void)pthread_setspecific(key, s);
    ct_mon_tls_stack = s;
    return s;
}

static mon_entry *stack_push(mon_stack *s)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 64;
        mon_entry *v = realloc(s->v, cap * sizeof *v);
        if (!v)
            return NULL;
        s->v = v;
        s->cap = cap;
    }
    return &s->v[s->n++];
}

/* ---- recording ---------------------------------------------------------- */

/* Encodes the arguments of the running frame of `co` into the arena.
 * Returns REC_HAS_BLOBS when one went to the blob store, else 0. */
static int capture_args(mon_active *a, mon_stack *s, ct_codeinfo *info, ct_thread *t,
                        Py_ssize_t limit)
{
    PyFrameObject *frame = PyEval_GetFrame(); /* borrowed */
    if (!frame)
        return 0;
    ct_memo memo; /* one group: identity between the arguments survives */
    CT_MEMO_START(&memo);
    ct_capture cap = {a->st, limit, 1, ct_redact_active(a->st, &mon_redact), &memo, NULL};
    cap.max_depth = a->mon->max_value_depth;
    wbuf *b = &s->arena;
    Py_ssize_t n = PyTuple_GET_SIZE(info->names);
    t->busy++;
#if PY_VERSION_HEX < 0x030C0000
    PyObject *locals = PyFrame_GetLocals(frame);
#endif
    /* an argument that is its parameter's default object took the default */
    PyCodeObject *co = PyFrame_GetCode(frame);
    PyObject *fn = ct_frame_function(frame, co);
    PyObject *defaults = fn ? PyFunction_GET_DEFAULTS(fn) : NULL;
    PyObject *kwdefaults = fn ? PyFunction_GET_KW_DEFAULTS(fn) : NULL;
    Py_ssize_t first_default = co->co_argcount - (defaults ? PyTuple_GET_SIZE(defaults) : 0);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PyTuple_GET_ITEM(info->names, i);
        if (info->redacted[i]) {
            ct_put_redacted(a->st, b);
            continue;
        }
#if PY_VERSION_HEX >= 0x030C0000
        PyObject *v = PyFrame_GetVar(frame, name);
#else
        PyObject *v = locals ? PyObject_GetItem(locals, name) : NULL;
#endif
        if (!v) {
            PyErr_Clear();
            wbuf_byte(b, WIRE_NONE);
            continue;
        }
        PyObject *dflt = NULL;
        if (defaults && i >= first_default && i < co->co_argcount)
            dflt = PyTuple_GET_ITEM(defaults, i - first_default);
        else if (kwdefaults && ct_param_kind(co, i) == 3)
            dflt = PyDict_GetItemWithError(kwdefaults, name);
        if (dflt == v)
            wbuf_byte(b, WIRE_DEFAULT);
        PyErr_Clear();
        if (!ct_capture_small(b, v))
            ct_capture_other(&cap, b, v);
        Py_DECREF(v);
    }
    Py_DECREF(co);
#if PY_VERSION_HEX < 0x030C0000
    Py_XDECREF(locals);
#endif
    ct_memo_free(&memo);
    PyErr_Clear();
    t->busy--;
    return cap.blobbed ? REC_HAS_BLOBS : 0;
}

/* Encodes the module globals the code `co` reads (names cached in `info`)
 * into the arena as one DICT; nothing when they cannot be found. */
static void capture_globals(mon_active *a, mon_stack *s, ct_codeinfo *info, PyObject *co,
                            ct_thread *t, Py_ssize_t limit)
{
    t->busy++;
    if (!info->global_names)
        info->global_names = ct_global_names(co);
    PyObject *globals = PyEval_GetGlobals(); /* borrowed */
    PyObject *d = info->global_names && globals
                      ? ct_globals_snapshot(a->st, globals, info->global_names)
                      : NULL;
    if (d) {
        size_t before = s->arena.len;
        ct_encode_named(a->st, &s->arena, d, limit, a->mon->max_value_depth, &mon_redact, NULL);
        if (s->arena.failed)
            s->arena.len = before;
        Py_DECREF(d);
    }
    PyErr_Clear();
    t->busy--;
}

/* The frame's locals at its return or raise, encoded as one DICT into `b`.
 * Returns 0, or -1 when there are none to record. */
static int capture_locals(mon_active *a, wbuf *b, ct_thread *t, Py_ssize_t limit)
{
    PyFrameObject *frame = PyEval_GetFrame(); /* borrowed */
    if (!frame)
        return -1;
    t->busy++;
    PyObject *saved = ct_fetch_exc();
    PyObject *locals = PyFrame_GetLocals(frame), *d = NULL;
    if (locals && PyDict_Check(locals))
        d = Py_NewRef(locals);
    else if (locals && (d = PyDict_New()) && PyDict_Update(d, locals) < 0)
        Py_CLEAR(d); /* 3.13: a proxy, copied */
    if (d)
        ct_encode_named(a->st, b, d, limit, a->mon->max_value_depth, &mon_redact, NULL);
    int rc = d && !b->failed ? 0 : -1;
    Py_XDECREF(d);
    Py_XDECREF(locals);
    PyErr_Clear();
    ct_restore_exc(saved);
    t->busy--;
    return rc;
}

/* The generator or coroutine running the current frame of `co`, for a
 * generator code (identity only; NULL otherwise). */
static PyObject *running_gen(PyCodeObject *co)
{
    if (!(co->co_flags & (CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR)))
        return NULL;
    PyFrameObject *frame = PyEval_GetFrame(); /* borrowed */
    PyObject *gen = frame ? PyFrame_GetGenerator(frame) : NULL;
    Py_XDECREF(gen); /* the frame keeps it alive; only its address is kept */
    return gen;
}

/* A call of `co` starts.  Never raises. */
static void on_start(mon_active *a, PyCodeObject *co, ct_codeinfo *info)
{
    ct_thread *t = ct_thread_get();
    mon_stack *s = stack_get(a->key);
    if (!s)
        return;
    Monitor *m = a->mon;
    ct_engine_slot *slot = a->slot;
    mon_entry *e = stack_push(s);
    if (!e)
        return;
    e->code = co;
    e->gen = info->is_gen ? running_gen(co) : NULL;
    e->info = NULL;
    e->generation = a->generation;
    e->saved_parent = t->parent;
    e->saved_depth = t->depth;
    e->args_at = s->arena.len;
    e->args_len = 0;
    e->globals_len = 0;
    if ((m->max_depth && t->depth >= (uint64_t)m->max_depth) ||
        (m->sample > 1 && (info->sample_counter++ % m->sample) != 0))
        return; /* on the stack so that its return is matched, not recorded */
    if (info->seen_generation != a->generation) {
        info->seen_generation = a->generation;
        m->functions_seen++;
    }
    if (info->announced_serial != slot->serial &&
        ct_emit_function(a->st, slot, info->fn_id, info->fn_record) == 0)
        info->announced_serial = slot->serial;
    if (!ct_thread_known(slot, t))
        ct_thread_announce(a->st, slot, t);
    e->info = info;
    m->calls_seen++;
    ct_callinfo *ci = &e->ci;
    ci->flags = info->is_gen ? REC_ASYNC : 0;
    if (m->opt_cpu)
        ci->flags |= REC_HAS_CPU; /* the clock is read by ct_call_begin */
    if (m->opt_memory) {
        ci->flags |= REC_HAS_MEMORY;
        ci->rss_before = ct_read_rss(a->st);
    }
    if (m->opt_energy)
        ct_energy_start(a->st, ci);
    ci->seq = ++a->st->rec.seq;
    ci->parent = t->parent;
    ci->depth = t->depth;
    ci->thread = t->index;
    t->parent = ci->seq;
    t->depth = ci->depth + 1;
    if (m->opt_args) {
        /* may run user code (pickling), which may switch threads: the
         * entry is found again by index, the monitor kept alive */
        size_t at = s->n - 1;
        Py_INCREF(m);
        int blobs = capture_args(a, s, info, t, m->max_value_bytes);
        e = &s->v[at];
        e->args_len = s->arena.len - e->args_at;
        e->ci.flags |= REC_HAS_ARGS | blobs;
        Py_DECREF(m);
    }
    if (m->opt_globals) {
        size_t at = s->n - 1;
        Py_INCREF(m);
        capture_globals(a, s, info, (PyObject *)co, t, m->max_value_bytes);
        e = &s->v[at];
        e->globals_len = s->arena.len - e->args_at - e->args_len;
        Py_DECREF(m);
    }
    ct_call_begin(&e->ci);
}

/* Finds the entry of `co` run by `gen` near the top of the stack `s`
 * (NULL: the thread has none yet): its index, or -1. */
static Py_ssize_t find_entry(const mon_stack *s, PyCodeObject *co, PyObject *gen)
{
    for (size_t k = 0; s && k < s->n && k < MON_SCAN; k++) {
        const mon_entry *e = &s->v[s->n - 1 - k];
        if (e->code == co && e->gen == gen)
            return (Py_ssize_t)(s->n - 1 - k);
    }
    return -1;
}

/* The record of a call with nothing to capture at its end (no result,
 * exception, CPU, memory, energy, locals or globals) and under 40 bytes of
 * arguments: written straight into a stack buffer.  Its body is at most
 * CT_CALL_HEAD_MAX + 1 + 39 < 128 bytes, so its length prefix is one byte. */
static void emit_plain(mon_active *a, const mon_entry *e, const uint8_t *args, uint64_t end,
                       int outcome)
{
    uint8_t buf[1 + CT_CALL_HEAD_MAX + 1 + 40];
    uint16_t flags = e->ci.flags | rec_capture_flags(CAPTURE_MONITOR);
    uint8_t *q = ct_put_call_head(buf + 1, e->info->fn_id, &e->ci, end, outcome, flags);
    if (e->ci.flags & REC_HAS_ARGS) {
        *q++ = (uint8_t)e->args_len;
        memcpy(q, args, e->args_len);
        q += e->args_len;
    }
    buf[0] = (uint8_t)(q - buf - 1);
    ct_counters_due(a->st, a->slot, end);
    ct_append(a->st, a->slot, buf, (size_t)(q - buf));
}

/* The record of stack entry `i` in full: result or exception, CPU,
 * memory, energy, the frame's locals (monitor(locals=True)) and the globals
 * encoded at its start (globals=True). */
static __attribute__((noinline)) void emit_full(mon_active *a, Monitor *m, mon_stack *s, size_t i,
                                                uint64_t end, int outcome, PyObject *res,
                                                PyObject *exc)
{
    ct_thread *t = ct_thread_get();
    wbuf lb;
    wbuf_init(&lb, NULL, 0);
    Py_INCREF(m);
    int have_locals = m->opt_locals && capture_locals(a, &lb, t, m->max_value_bytes) == 0;
    mon_entry *e = &s->v[i]; /* capture may have run user code */
    wbuf gb;
    wbuf_init(&gb, s->arena.data + e->args_at + e->args_len, e->globals_len);
    gb.len = e->globals_len;
    ct_site site = {e->info->fn_id,
                    NULL,
                    ct_redact_active(a->st, &mon_redact),
                    NULL,
                    m->max_value_bytes,
                    m->opt_result,
                    m->max_value_depth,
                    CAPTURE_MONITOR};
    ct_emit_site_call(a->st, &site, a->slot, &e->ci, s->arena.data + e->args_at, e->args_len, end,
                      outcome, res, exc, have_locals ? &lb : NULL, e->globals_len ? &gb : NULL,
                      NULL);
    Py_DECREF(m);
    wbuf_free(&lb);
}

/* A call of `co` ends with `outcome` (`value`: result or exception). */
static void on_end(mon_active *a, PyCodeObject *co, int outcome, PyObject *value)
{
    Monitor *m = a->mon;                                    /* running: every caller checked */
    uint64_t cpu_end = m->opt_cpu ? ct_thread_cpu_ns() : 0; /* nested in end */
    uint64_t end = ct_now_ns();
    mon_stack *s = ct_mon_tls_stack;
    Py_ssize_t i = find_entry(s, co, running_gen(co));
    if (i < 0)
        return;
    mon_entry *e = &s->v[i];
    PyObject *gen = e->gen; /* e may move while the call is emitted */
    ct_thread *t = ct_thread_get();
    if (e->info && e->generation == a->generation) {
        e->ci.cpu_end = cpu_end;
        PyObject *res = outcome == OUTCOME_RETURNED ? value : NULL;
        PyObject *exc = outcome == OUTCOME_RAISED ? value : NULL;
        if (outcome == OUTCOME_RAISED && exc &&
            PyErr_GivenExceptionMatches(exc, PyExc_GeneratorExit)) {
            outcome = OUTCOME_CLOSED;
            exc = NULL;
        }
        if (exc && !PyExceptionInstance_Check(exc))
            exc = NULL;
        t->parent = e->saved_parent;
        t->depth = e->saved_depth;
        if (!exc && !(res && m->opt_result) && !m->opt_locals && !e->globals_len &&
            !(e->ci.flags & REC_HAS_EXTRAS) && e->args_len < 40)
            emit_plain(a, e, s->arena.data + e->args_at, end, outcome);
        else
            emit_full(a, m, s, (size_t)i, end, outcome, res, exc);
    }
    if (gen)
        ct_park_forget(&a->parked, gen); /* it finished: its slot is no longer needed */
    mon_unwind_to(s, (size_t)i, t);
}

/* A generator or coroutine of `co` suspends: its entry leaves the stack
 * and waits in the parking table under its generator.  Returns 1, or 0
 * when it has no entry on this thread's stack. */
static int on_suspend(mon_active *a, PyCodeObject *co)
{
    mon_stack *s = ct_mon_tls_stack;
    Py_ssize_t i = find_entry(s, co, running_gen(co));
    if (i < 0)
        return 0;
    mon_entry *e = &s->v[i];
    ct_thread *t = ct_thread_get();
    /* parked even when not recorded (sampled out, too deep): its next
     * yield or return must not be taken for an outer call of the same code.
     * The arena is NULL when nothing was kept. */
    size_t n = e->args_len + e->globals_len;
    if (e->gen && ct_park_put(&a->parked, e->gen, a->park_gone, e, sizeof *e,
                              n ? s->arena.data + e->args_at : NULL, n) < 0)
        PyErr_Clear();
    mon_unwind_to(s, (size_t)i, t);
    return 1;
}

/* A generator or coroutine of `co` resumes: its parked entry, if any,
 * goes back on this thread's stack.  Returns 1, or 0 when it had none. */
static int on_resume(mon_active *a, PyCodeObject *co)
{
    if (!a->parked.nparked)
        return 0;
    PyObject *gen = running_gen(co);
    mon_stack *s = gen ? stack_get(a->key) : NULL;
    size_t len = 0;
    const uint8_t *p = s ? ct_park_take(&a->parked, gen, &len) : NULL;
    mon_entry *e = p && len >= sizeof *e ? stack_push(s) : NULL;
    if (!e)
        return 0;
    memcpy(e, p, sizeof *e);
    e->code = co;
    e->args_at = s->arena.len;
    wbuf_put(&s->arena, p + sizeof *e, e->args_len + e->globals_len);
    ct_thread *t = ct_thread_get();
    e->saved_parent = t->parent; /* this caller gets the thread back */
    e->saved_depth = t->depth;
    if (e->info) {
        t->parent = e->ci.seq;
        t->depth = e->ci.depth + 1;
    }
    return 1;
}

#endif
