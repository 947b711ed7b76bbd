/*
 * recorder.c - @calltape.record: the Recorder type (vectorcall, descriptor,
 * GC) and the per-thread recording context.
 *
 * Hot path of a recorded call: bind the arguments to parameter names with
 * the layout precomputed from the code object, encode them into a stack
 * buffer, read the monotonic clock, call, read it again, encode the result,
 * append one record.  No I/O, no locks (the GIL serializes producers).
 *
 * The per-thread context (parent seq, depth, thread index, re-entrancy
 * flag) is a C11 thread-local: it is per-thread by nature, and reaching it
 * costs one TLS access instead of a dict lookup in the thread state.
 * Invariants: the context is restored on every exit path; while `busy` is
 * set (calltape is running user code such as a codec or sanitize), nested
 * recorded calls are passed through unrecorded.
 */
#include "recorder.h"

#include "flat.h"
#include "options.h"
#include "pending.h"
#include "timer.h"

#include <structmember.h>

__attribute__((tls_model("initial-exec"))) _Thread_local ct_thread ct_tls_thread;

/* Builds the REC_FUNCTION body of the recorded function (emit.c).
 * Returns a new bytes object or NULL with an error. */
static PyObject *describe_function(Recorder *r)
{
    ct_state *st = r->st;
    PyObject *module = PyObject_GetAttrString(r->func, "__module__");
    PyObject *qualname = PyObject_GetAttrString(r->func, "__qualname__");
    PyErr_Clear();
    int is_fn = PyFunction_Check(r->func);
    PyCodeObject *co = is_fn ? (PyCodeObject *)PyFunction_GET_CODE(r->func) : NULL;
    ct_capture cap = {st, r->max_value_bytes, 0, ct_redact_active(st, &r->redact), NULL, r->pickle};
    ct_fn_desc d = {.module = module,
                    .qualname = qualname,
                    .file = co ? co->co_filename : NULL,
                    .line = co ? co->co_firstlineno : 0,
                    .names = r->names,
                    .code = r->bound ? co : NULL,
                    .func = r->bound ? r->func : NULL,
                    .redacted = r->redacted,
                    .sanitize = r->sanitize,
                    .cap = &cap};
    PyObject *out = ct_describe_function(st, &d);
    Py_XDECREF(module);
    Py_XDECREF(qualname);
    return out;
}

static __attribute__((noinline)) void announce_function(Recorder *r, ct_engine_slot *slot)
{
    if (!r->fn_record) {
        PyObject *saved = ct_fetch_exc();
        ct_thread *t = &ct_tls_thread;
        t->busy++;
        r->fn_record = describe_function(r);
        t->busy--;
        PyErr_Clear();
        ct_restore_exc(saved);
        if (!r->fn_record)
            return;
    }
    if (ct_emit_function(r->st, slot, r->fn_id, r->fn_record) == 0)
        r->announced_serial = slot->serial;
}

/* ---- argument binding --------------------------------------------------- */

/* Encodes an argument value that is neither redacted, sanitized nor a
 * default: the commonest small values inline, any other in capture.c. */
static inline void put_plain(ct_capture *cap, wbuf *b, PyObject *v)
{
    if (!ct_capture_small(b, v))
        ct_capture_other(cap, b, v);
}

/* Encodes one argument value (redaction, sanitize, DEFAULT marker). */
static void put_arg(Recorder *r, ct_capture *cap, wbuf *b, Py_ssize_t i, PyObject *v, int dflt)
{
    if (!dflt && !r->redacted[i] && !r->sanitize) {
        put_plain(cap, b, v);
        return;
    }
    if (dflt)
        wbuf_byte(b, WIRE_DEFAULT);
    if (r->redacted[i]) {
        ct_put_redacted(r->st, b);
        return;
    }
    if (r->sanitize) {
        ct_capture_sanitized(cap, b, r->sanitize, PyTuple_GET_ITEM(r->names, i), v);
        return;
    }
    ct_capture_value(cap, b, v);
}

/* The positional arguments of a callable that is not a function, as one
 * TUPLE, those at the place of a parameter named as a secret REDACTED. */
static void put_positional(Recorder *r, ct_capture *cap, wbuf *b, PyObject *t)
{
    Py_ssize_t n = PyTuple_GET_SIZE(t);
    wbuf_byte(b, WIRE_TUPLE);
    wbuf_varint(b, (uint64_t)n);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i < r->npos_secret && r->pos_secret[i])
            ct_put_redacted(r->st, b);
        else
            ct_capture_value(cap, b, PyTuple_GET_ITEM(t, i));
    }
}

static Py_ssize_t find_param(Recorder *r, PyObject *name)
{
    Py_ssize_t hi = r->argcount + r->kwonly;
    for (Py_ssize_t i = r->posonly; i < hi; i++)
        if (PyTuple_GET_ITEM(r->names, i) == name)
            return i;
    for (Py_ssize_t i = r->posonly; i < hi; i++) {
        int eq = PyUnicode_Compare(PyTuple_GET_ITEM(r->names, i), name) == 0;
        if (eq)
            return i;
    }
    PyErr_Clear();
    return -1;
}

/* The arguments as the caller passed them: a tuple and a dict (new
 * references).  Returns 0, or -1 with no exception left set. */
static int raw_arguments(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                         PyObject **tuple, PyObject **dict)
{
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *t = PyTuple_New(nargs), *d = PyDict_New();
    if (!t || !d)
        goto error;
    for (Py_ssize_t i = 0; i < nargs; i++)
        PyTuple_SET_ITEM(t, i, Py_NewRef(args[i]));
    for (Py_ssize_t j = 0; j < nkw; j++)
        if (PyDict_SetItem(d, PyTuple_GET_ITEM(kwnames, j), args[nargs + j]) < 0)
            goto error;
    *tuple = t;
    *dict = d;
    return 0;
error:
    PyErr_Clear();
    Py_XDECREF(t);
    Py_XDECREF(d);
    return -1;
}

/* The arguments of a callable that is not a function: TUPLE and DICT as
 * passed.  Returns 0, or 1 when they could not be read. */
static __attribute__((noinline)) int encode_unbound(Recorder *r, ct_capture *cap, wbuf *b,
                                                    PyObject *const *args, Py_ssize_t nargs,
                                                    PyObject *kwnames)
{
    PyObject *t, *d;
    if (raw_arguments(args, nargs, kwnames, &t, &d) < 0)
        return 1;
    if (r->pos_secret)
        put_positional(r, cap, b, t);
    else
        put_arg(r, cap, b, 0, t, 0);
    put_arg(r, cap, b, 1, d, 0);
    Py_DECREF(t);
    Py_DECREF(d);
    return 0;
}

/* Arguments bound to parameters: slots[i] the value given for parameter i
 * (NULL: its default), the extra positional and keyword arguments (new
 * references, or NULL). */
typedef struct bound_args {
    PyObject **slots;
    PyObject *extra_pos, *extra_kw;
} bound_args;

/* Binds the arguments as the call will: returns 0, or 1 when they do not
 * bind (too many, an unknown or repeated keyword, a missing parameter
 * without a default), never with an exception left set. */
static int bind_args(Recorder *r, bound_args *ba, PyObject *const *args, Py_ssize_t nargs,
                     PyObject *kwnames)
{
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    Py_ssize_t npos = nargs < r->argcount ? nargs : r->argcount;
    for (Py_ssize_t i = 0; i < npos; i++)
        ba->slots[i] = args[i];
    if (nargs > r->argcount) {
        if (!r->has_varargs || !(ba->extra_pos = PyTuple_New(nargs - r->argcount)))
            return 1;
        for (Py_ssize_t i = r->argcount; i < nargs; i++)
            PyTuple_SET_ITEM(ba->extra_pos, i - r->argcount, Py_NewRef(args[i]));
    }
    for (Py_ssize_t j = 0; j < nkw; j++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, j);
        Py_ssize_t i = find_param(r, name);
        if (i >= 0 && !ba->slots[i]) {
            ba->slots[i] = args[nargs + j];
        } else if (i < 0 && r->has_varkw) {
            if (!ba->extra_kw && !(ba->extra_kw = PyDict_New()))
                return 1;
            if (PyDict_SetItem(ba->extra_kw, name, args[nargs + j]) < 0)
                return 1;
        } else {
            return 1;
        }
    }
    PyObject *defaults = PyFunction_GET_DEFAULTS(r->func);
    PyObject *kwdefaults = PyFunction_GET_KW_DEFAULTS(r->func);
    Py_ssize_t ndef = defaults ? PyTuple_GET_SIZE(defaults) : 0;
    for (Py_ssize_t i = 0; i < r->argcount + r->kwonly; i++) {
        if (ba->slots[i])
            continue;
        PyObject *d = NULL;
        if (i < r->argcount && i >= r->argcount - ndef)
            d = PyTuple_GET_ITEM(defaults, i - (r->argcount - ndef));
        else if (i >= r->argcount && kwdefaults)
            d = PyDict_GetItemWithError(kwdefaults, PyTuple_GET_ITEM(r->names, i));
        if (!d)
            return 1;
    }
    return 0;
}

/* Writes the bound arguments in parameter order (defaults marked). */
static void put_bound(Recorder *r, ct_capture *cap, wbuf *b, bound_args *ba)
{
    PyObject *defaults = PyFunction_GET_DEFAULTS(r->func);
    PyObject *kwdefaults = PyFunction_GET_KW_DEFAULTS(r->func);
    Py_ssize_t ndef = defaults ? PyTuple_GET_SIZE(defaults) : 0;
    for (Py_ssize_t i = 0; i < r->argcount + r->kwonly; i++) {
        if (ba->slots[i]) {
            put_arg(r, cap, b, i, ba->slots[i], 0);
        } else {
            PyObject *d = i < r->argcount
                              ? PyTuple_GET_ITEM(defaults, i - (r->argcount - ndef))
                              : PyDict_GetItem(kwdefaults, PyTuple_GET_ITEM(r->names, i));
            put_arg(r, cap, b, i, d, 1);
        }
    }
    Py_ssize_t i = r->argcount + r->kwonly;
    if (r->has_varargs) {
        if (!ba->extra_pos)
            ba->extra_pos = PyTuple_New(0);
        put_arg(r, cap, b, i++, ba->extra_pos ? ba->extra_pos : Py_None, 0);
    }
    if (r->has_varkw) {
        if (!ba->extra_kw)
            ba->extra_kw = PyDict_New();
        put_arg(r, cap, b, i, ba->extra_kw ? ba->extra_kw : Py_None, 0);
    }
}

/* encode_args beyond its fast path: binds keywords, defaults, *args and
 * **kwargs; when they do not bind, writes the raw TUPLE and DICT instead
 * and returns 1. */
static __attribute__((noinline)) int encode_bound(Recorder *r, ct_capture *cap, wbuf *b,
                                                  PyObject *const *args, Py_ssize_t nargs,
                                                  PyObject *kwnames)
{
    PyObject *slots_small[16] = {NULL};
    bound_args ba = {slots_small, NULL, NULL};
    if (r->nparams > 16 && !(ba.slots = PyMem_Calloc((size_t)r->nparams, sizeof(PyObject *))))
        return 1;
    int rc = bind_args(r, &ba, args, nargs, kwnames);
    PyErr_Clear();
    if (rc == 0)
        put_bound(r, cap, b, &ba);
    Py_XDECREF(ba.extra_pos);
    Py_XDECREF(ba.extra_kw);
    if (ba.slots != slots_small)
        PyMem_Free(ba.slots);
    PyErr_Clear();
    if (rc) {
        /* raw form: what the caller passed */
        b->len = 0;
        PyObject *t, *d;
        if (raw_arguments(args, nargs, kwnames, &t, &d) == 0) {
            ct_capture_value(cap, b, t);
            ct_capture_value(cap, b, d);
            Py_DECREF(t);
            Py_DECREF(d);
        }
    }
    return rc;
}

/* Encodes the arguments in parameter order.  Returns 0, or 1 when they do
 * not bind (the call will raise TypeError): then a TUPLE and a DICT of the
 * raw arguments are written instead. */
static int encode_args(Recorder *r, ct_capture *cap, wbuf *b, PyObject *const *args,
                       Py_ssize_t nargs, PyObject *kwnames)
{
    if (!r->bound)
        return encode_unbound(r, cap, b, args, nargs, kwnames);
    /* fast path: positional only, exactly the positional parameters */
    if ((!kwnames || PyTuple_GET_SIZE(kwnames) == 0) && nargs == r->argcount &&
        r->nparams == r->argcount) {
        for (Py_ssize_t i = 0; i < nargs; i++) /* plain values without a call */
            if (r->sanitize || r->redacted[i])
                put_arg(r, cap, b, i, args[i], 0);
            else
                put_plain(cap, b, args[i]);
        return 0;
    }
    return encode_bound(r, cap, b, args, nargs, kwnames);
}

/* ---- records ------------------------------------------------------------ */

/* The REC_CALL of a call of Recorder `r` with its options (the hot path:
 * the builder is inlined here). */
static void emit_call(Recorder *r, ct_engine_slot *slot, const ct_callinfo *ci, const wbuf *args,
                      uint64_t end, int outcome, PyObject *result, PyObject *exc)
{
    ct_site site = ct_recorder_site(r);
    ct_emit_build(r->st, &site, slot, ci, args->data, args->len, end, outcome, result, exc, NULL,
                  NULL, NULL);
}

/* ---- locals and globals (framedata.c finds them) --------------------------- */

/* ct_encode_named with the recorder's redaction and sanitize. */
static void encode_named(Recorder *r, wbuf *b, PyObject *d)
{
    ct_encode_named(r->st, b, d, r->max_value_bytes, 0, &r->redact, r->sanitize);
}

/* Before the call (locals=True / globals=True; out of the common path):
 * encodes the module globals it reads into `gb` and starts watching for
 * its locals.  On failure `gb` is marked failed (no globals recorded). */
static __attribute__((noinline)) void frame_begin_call(Recorder *r, wbuf *gb,
                                                       ct_locals_watch *watch)
{
    wbuf_init(gb, NULL, 0);
    if (r->opt_globals) {
        ct_thread *t = &ct_tls_thread;
        t->busy++;
        PyObject *d = ct_globals_snapshot(r->st, PyFunction_GET_GLOBALS(r->func), r->global_names);
        if (d) {
            encode_named(r, gb, d);
            Py_DECREF(d);
        } else {
            PyErr_Clear();
            gb->failed = 1;
        }
        t->busy--;
    }
    if (r->opt_locals)
        ct_locals_begin(watch, PyFunction_GET_CODE(r->func));
}

/* After the call: records it with its locals and globals; a pending
 * exception (the call raised) is kept. */
static __attribute__((noinline)) void frame_end_call(Recorder *r, ct_engine_slot *slot,
                                                     const ct_callinfo *ci, const wbuf *ab,
                                                     uint64_t end, PyObject *res, wbuf *gb,
                                                     ct_locals_watch *watch)
{
    PyObject *exc = res ? NULL : ct_fetch_exc();
    PyObject *locals = r->opt_locals ? ct_locals_end(watch, exc) : NULL;
    wbuf lb;
    wbuf_init(&lb, NULL, 0);
    if (locals) {
        ct_thread *t = &ct_tls_thread;
        t->busy++;
        encode_named(r, &lb, locals);
        t->busy--;
        Py_DECREF(locals);
    }
    if (res || exc) {
        ct_site site = ct_recorder_site(r);
        ct_emit_site_call(r->st, &site, slot, ci, ab->data, ab->len, end,
                          res ? OUTCOME_RETURNED : OUTCOME_RAISED, res, exc,
                          locals && !lb.failed ? &lb : NULL,
                          r->opt_globals && !gb->failed ? gb : NULL, NULL);
    }
    ct_restore_exc(exc);
    wbuf_free(&lb);
    wbuf_free(gb);
}

/* ---- the call ------------------------------------------------------------ */

/* The engine of r's tape at the first call that needs it (kept when the
 * tape is r's own); NULL when it cannot be made (the call runs
 * unrecorded).  Never leaves an exception set. */
static __attribute__((noinline)) ct_engine_slot *first_slot(Recorder *r)
{
    ct_engine_slot *slot = ct_engine_for(r->st, r->tape);
    if (!slot) {
        PyErr_Clear();
        return NULL;
    }
    if (r->tape) {
        r->slot = slot;
        slot->pinned = 1;
    }
    return slot;
}

/* The slot a call of `r` records into, the function and the thread
 * announced there; NULL when there is none (the call is not recorded).
 * Shared by the call and by metrics blocks. */
static inline ct_engine_slot *call_slot(Recorder *r, ct_state *st, ct_thread *t)
{
    ct_engine_slot *slot = r->tape ? r->slot : st->sink.default_slot;
    if (!slot && !(slot = first_slot(r)))
        return NULL;
    if (r->announced_serial != slot->serial)
        announce_function(r, slot);
    if (!ct_thread_known(slot, t))
        ct_thread_announce(st, slot, t);
    return slot;
}

/* The call's place (seq, parent, depth, thread) and the readings its
 * options ask for before it runs, into `ci` (flags added to). */
static inline void call_info(Recorder *r, ct_state *st, ct_thread *t, ct_callinfo *ci)
{
    ci->seq = ++st->rec.seq;
    ci->parent = t->parent;
    ci->depth = t->depth;
    ci->thread = t->index;
    if (r->opt_cpu)
        ci->flags |= REC_HAS_CPU; /* the clock is read by ct_call_begin */
    if (r->opt_memory) {
        ci->flags |= REC_HAS_MEMORY;
        ci->rss_before = ct_read_rss(st);
    }
}

/* The clocks at the call's start; a thread's starts strictly increase,
 * since (pid, thread, start) names the call (call_uuid). */
static inline void call_start(ct_thread *t, ct_callinfo *ci)
{
    ct_call_begin(ci);
    if (ci->start <= t->last_start)
        ci->start = t->last_start + 1;
    t->last_start = ci->start;
}

/* The call returned a generator, coroutine or async generator `res`
 * (owned): it is recorded, and a timer's lines written, when that finishes.  Returns what the
 * caller gets (the wrapper, or `res` when it could not be wrapped: then the call is recorded as
 * closed now). */
static __attribute__((noinline)) PyObject *defer_call(Recorder *r, ct_engine_slot *slot,
                                                      const ct_callinfo *ci, const wbuf *ab,
                                                      PyObject *res, PyObject *const *args,
                                                      Py_ssize_t nargs, PyObject *kwnames)
{
    ct_deferred d;
    memset(&d, 0, sizeof d);
    wbuf_init(&d.timer_args, NULL, 0);
    if (r->timer) { /* the arguments' text now: they may change before it finishes */
        d.timed = 1;
        ct_timer_arguments(r, args, nargs, kwnames, &d.timer_args);
    }
    d.recorder = (Recorder *)Py_NewRef(r);
    d.slot = slot;
    d.ci = *ci;
    d.want_yields = r->opt_yields;
    d.flat = r->flat ? ct_flat_run_new(r->flat) : NULL;
    wbuf_init(&d.args, NULL, 0);
    wbuf_put(&d.args, ab->data, ab->len);
    PyObject *wrapped = ct_pending_wrap(r->st, res, &d, r->kind);
    if (wrapped) {
        Py_SETREF(res, wrapped);
    } else {
        PyErr_Clear();
        ct_deferred_finish(&d, OUTCOME_CLOSED, NULL, NULL);
        ct_flat_run_free(d.flat);
    }
    return res;
}

/* The call itself: through the flat profiler when `r` has one (its inner
 * calls written onto `slot`'s tape when not NULL). */
static inline PyObject *call_func(Recorder *r, PyObject *const *args, size_t nargsf,
                                  PyObject *kwnames, ct_engine_slot *slot)
{
    if (r->flat)
        return ct_flat_call(r->flat, args, nargsf, kwnames, slot);
#if PY_VERSION_HEX < 0x030C0000
    if (r->probe) /* probes/patch.c */
        return PyObject_Vectorcall(r->probe, args, nargsf, kwnames);
#endif
    return PyObject_Vectorcall(r->func, args, nargsf, kwnames);
}

static PyObject *Recorder_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf,
                                     PyObject *kwnames)
{
    Recorder *r = (Recorder *)op;
    ct_state *st = r->st;
    ct_thread *t = &ct_tls_thread;
    if (!st->rec.enabled || t->busy) {
        if (st->rec.finalized && !t->busy) /* too late to record: counted */
            ct_count_late_call(st, r->tape ? r->slot : st->sink.default_slot);
        return call_func(r, args, nargsf, kwnames, NULL);
    }
    if (r->sample > 1 && (r->sample_counter++ % r->sample) != 0)
        return call_func(r, args, nargsf, kwnames, NULL);
    ct_engine_slot *slot = call_slot(r, st, t);
    if (!slot)
        return call_func(r, args, nargsf, kwnames, NULL);

    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    uint8_t astore[256];
    wbuf ab;
    wbuf_init(&ab, astore, sizeof astore);
    ct_callinfo ci;
    ci.flags = 0;
    if (r->opt_args) {
        ct_memo memo; /* one group: identity between the arguments survives */
        CT_MEMO_START(&memo);
        ct_capture cap = {st,    r->max_value_bytes, 1, ct_redact_active(st, &r->redact),
                          &memo, r->pickle};
        t->busy++;
        ci.flags |= REC_HAS_ARGS;
        if (encode_args(r, &cap, &ab, args, nargs, kwnames))
            ci.flags |= REC_UNBOUND;
        if (cap.blobbed)
            ci.flags |= REC_HAS_BLOBS;
        ct_memo_free(&memo);
        t->busy--;
    }
    call_info(r, st, t, &ci);
    /* on: CT_ENERGY_ON, or CT_ENERGY_CONFIGURED while configure(energy=True) */
    if (r->opt_energy & (CT_ENERGY_ON | st->rec.energy_default))
        ct_energy_start(st, &ci);
    if (r->kind != KIND_PLAIN)
        ci.flags |= REC_ASYNC;
    wbuf gb; /* the globals, encoded at entry: only when opt_frame */
    ct_locals_watch watch;
    if (r->opt_frame)
        frame_begin_call(r, &gb, &watch);
    t->parent = ci.seq;
    t->depth = ci.depth + 1;
    call_start(t, &ci);
    PyObject *res = call_func(r, args, nargsf, kwnames, slot);
    uint64_t end = ct_call_end(&ci);
    t->parent = ci.parent;
    t->depth = ci.depth;

    if (r->opt_frame) {
        frame_end_call(r, slot, &ci, &ab, end, res, &gb, &watch);
    } else if (!res) {
        PyObject *exc = ct_fetch_exc();
        if (exc) {
            emit_call(r, slot, &ci, &ab, end, OUTCOME_RAISED, NULL, exc);
            if (r->timer)
                ct_timer_after(r, slot, &ci, end, args, nargs, kwnames, exc);
        }
        ct_restore_exc(exc);
    } else if (r->kind != KIND_PLAIN &&
               (PyGen_CheckExact(res) || PyCoro_CheckExact(res) || PyAsyncGen_CheckExact(res))) {
        res = defer_call(r, slot, &ci, &ab, res, args, nargs, kwnames);
    } else {
        emit_call(r, slot, &ci, &ab, end, OUTCOME_RETURNED, res, NULL);
        if (r->timer)
            ct_timer_after(r, slot, &ci, end, args, nargs, kwnames, NULL);
    }
    wbuf_free(&ab);
    return res;
}

int ct_recorder_block_begin(Recorder *r, ct_callinfo *ci, ct_engine_slot **slotp)
{
    ct_state *st = r->st;
    ct_thread *t = &ct_tls_thread;
    if (!st->rec.enabled || t->busy)
        return -1;
    ct_engine_slot *slot = call_slot(r, st, t);
    if (!slot)
        return -1;
    memset(ci, 0, sizeof *ci);
    call_info(r, st, t, ci);
    call_start(t, ci);
    *slotp = slot;
    return 0;
}

void ct_recorder_block_end(Recorder *r, ct_engine_slot *slot, ct_callinfo *ci)
{
    uint64_t end = ct_call_end(ci);
    wbuf none;
    wbuf_init(&none, NULL, 0);
    emit_call(r, slot, ci, &none, end, OUTCOME_RETURNED, NULL, NULL);
    if (r->timer)
        ct_timer_after(r, slot, ci, end, NULL, 0, NULL, NULL);
}

/* ---- type ------------------------------------------------------------------ */

static int setup_signature(Recorder *r)
{
    if (!PyFunction_Check(r->func)) {
        r->bound = 0;
        r->nparams = 2;
        r->names = Py_BuildValue("(ss)", "args", "kwargs");
        return r->names ? 0 : -1;
    }
    PyCodeObject *co = (PyCodeObject *)PyFunction_GET_CODE(r->func);
    r->bound = 1;
    r->argcount = co->co_argcount;
    r->posonly = co->co_posonlyargcount;
    r->kwonly = co->co_kwonlyargcount;
    r->has_varargs = (co->co_flags & CO_VARARGS) != 0;
    r->has_varkw = (co->co_flags & CO_VARKEYWORDS) != 0;
    r->nparams = ct_param_count(co);
    if (co->co_flags & CO_ASYNC_GENERATOR)
        r->kind = KIND_ASYNC_GENERATOR;
    else if (co->co_flags & CO_COROUTINE)
        r->kind = KIND_COROUTINE;
    else if (co->co_flags & CO_GENERATOR)
        r->kind = KIND_GENERATOR;
    PyObject *varnames = PyObject_GetAttrString((PyObject *)co, "co_varnames");
    if (!varnames)
        return -1;
    r->names = PyTuple_GetSlice(varnames, 0, r->nparams);
    Py_DECREF(varnames);
    return r->names ? 0 : -1;
}

/* For a callable that is not a function (a functools.partial, an object
 * with __call__): which leading positional arguments take parameters named
 * as secrets, from inspect.signature, once.  Returns 0 (also when there is
 * no signature), or -1 with MemoryError. */
static int find_positional_secrets(Recorder *r)
{
    PyObject *inspect = PyImport_ImportModule("inspect");
    PyObject *sig = inspect ? PyObject_CallMethod(inspect, "signature", "O", r->func) : NULL;
    PyObject *params = sig ? PyObject_GetAttrString(sig, "parameters") : NULL;
    PyObject *values = params ? PyMapping_Values(params) : NULL;
    Py_ssize_t n = values ? PyList_GET_SIZE(values) : 0;
    int rc = 0, any = 0;
    uint8_t *secret = n ? PyMem_Calloc((size_t)n, 1) : NULL;
    if (n && !secret) {
        rc = -1;
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t i = 0;
    for (; i < n; i++) {
        PyObject *p = PyList_GET_ITEM(values, i);
        PyObject *kind = PyObject_GetAttrString(p, "kind");
        long k = kind ? PyLong_AsLong(kind) : -1; /* 0 positional-only, 1 positional or keyword */
        Py_XDECREF(kind);
        if (k != 0 && k != 1)
            break;
        PyObject *name = PyObject_GetAttrString(p, "name");
        secret[i] = name ? (uint8_t)ct_should_redact(r->st, name, &r->redact) : 0;
        any |= secret[i];
        Py_XDECREF(name);
    }
    if (any) {
        r->pos_secret = secret;
        r->npos_secret = i;
        secret = NULL;
    }
done:
    if (rc == 0)
        PyErr_Clear(); /* no signature: nothing is known by name */
    PyMem_Free(secret);
    Py_XDECREF(values);
    Py_XDECREF(params);
    Py_XDECREF(sig);
    Py_XDECREF(inspect);
    return rc;
}

/* What is called for what was decorated: the function inside a
 * classmethod or staticmethod, else `func` itself, which must be callable.
 * Returns 0, or -1 with an exception. */
static int recorder_unwrap(Recorder *r, PyObject *func)
{
    r->wrapped = Py_NewRef(func);
    r->wrap = WRAP_FUNCTION;
    if (PyObject_TypeCheck(func, &PyClassMethod_Type) ||
        PyObject_TypeCheck(func, &PyStaticMethod_Type)) {
        r->wrap =
            PyObject_TypeCheck(func, &PyClassMethod_Type) ? WRAP_CLASSMETHOD : WRAP_STATICMETHOD;
        r->func = PyObject_GetAttrString(func, "__func__");
        return r->func ? 0 : -1;
    }
    if (!PyCallable_Check(func)) {
        PyErr_Format(PyExc_TypeError,
                     "calltape.record needs a function or other callable, not %.100s",
                     Py_TYPE(func)->tp_name);
        return -1;
    }
    r->func = Py_NewRef(func);
    return 0;
}

/* Takes the options that need nothing of the function (o's references
 * move to `r`). */
static void recorder_options(Recorder *r, ct_options *o)
{
    ct_state *st = r->st;
    r->opt_args = (uint8_t)o->args;
    r->opt_result = (uint8_t)o->result;
    r->opt_cpu = (uint8_t)o->cpu;
    r->opt_memory = (uint8_t)o->memory;
    r->opt_energy = o->energy < 0 ? CT_ENERGY_CONFIGURED : o->energy ? CT_ENERGY_ON : CT_ENERGY_OFF;
    if (o->energy > 0)
        ct_energy_open(st); /* an unavailable counter is reported now, once */
    r->sample = (uint32_t)(o->sample > UINT32_MAX ? UINT32_MAX : o->sample);
    r->sanitize = o->sanitize;
    r->tape = o->tape;
    r->max_value_bytes = o->max_value_bytes < 0 ? st->rec.max_value_bytes : o->max_value_bytes;
    r->redact.use_default = o->redact != 0;
    r->redact.exact = o->redact_exact;
    r->redact.patterns = o->redact_patterns;
    memset(o, 0, sizeof *o); /* its references are r's now */
}

/* yields=, locals= and globals=, which only some functions can have.
 * Returns 0, or -1 with TypeError naming the function. */
static int recorder_frame_options(Recorder *r, int want_yields, int want_locals, int want_globals)
{
    if (want_yields) {
        if (r->kind != KIND_GENERATOR) {
            PyErr_Format(PyExc_TypeError,
                         "yields=True is recorded for generator functions, not for %R", r->func);
            return -1;
        }
        r->opt_yields = 1;
    }
    if (!want_locals && !want_globals)
        return 0;
    if (!PyFunction_Check(r->func) || r->kind != KIND_PLAIN) {
        PyErr_Format(PyExc_TypeError,
                     "locals=True and globals=True are recorded for plain Python functions,"
                     " not for %R (a generator, coroutine or non-Python callable)",
                     r->func);
        return -1;
    }
    r->opt_locals = (uint8_t)want_locals;
    r->opt_globals = (uint8_t)want_globals;
    r->opt_frame = 1;
    if (want_globals && !(r->global_names = ct_global_names(PyFunction_GET_CODE(r->func))))
        return -1;
    if (want_locals && ct_locals_enable(r->st, r->func) < 0)
        return -1;
    return 0;
}

/* Which parameters name secrets, and the function's id and __dict__.
 * Returns 0, or -1 with an exception. */
static int recorder_finish(Recorder *r)
{
    ct_state *st = r->st;
    /* calltape.monitor leaves the calls of this function to the Recorder */
    if (PyFunction_Check(r->func) &&
        PySet_Add(st->rec.decorated_codes, PyFunction_GET_CODE(r->func)) < 0)
        return -1;
    r->redacted = PyMem_Calloc((size_t)r->nparams + 1, 1);
    if (!r->redacted) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; r->bound && i < r->nparams; i++)
        r->redacted[i] = (uint8_t)ct_should_redact(st, PyTuple_GET_ITEM(r->names, i), &r->redact);
    if (!r->bound && find_positional_secrets(r) < 0)
        return -1;
    r->fn_id = ++st->rec.next_fn;
    PyObject *fdict = PyObject_GetAttrString(r->func, "__dict__");
    if (fdict && PyDict_Check(fdict))
        r->dict = PyDict_Copy(fdict);
    else
        r->dict = PyDict_New();
    Py_XDECREF(fdict);
    PyErr_Clear();
    return r->dict ? 0 : -1;
}

static PyObject *Recorder_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"func", "pickle", "flat", "timer", NULL};
    PyObject *func, *pickle = Py_None, *flat = Py_None, *timer = Py_None, *v[CT_NOPTS], *rest;
    ct_options o;
    unsigned accepted = CT_OPT_ALL & ~CT_OPT_BIT(CT_OPT_MAX_DEPTH);
    if (ct_options_take(kw, accepted, v, &rest) < 0)
        return NULL;
    int ok = PyArg_ParseTupleAndKeywords(args, rest, "O|$OOO:record", kwlist, &func, &pickle, &flat,
                                         &timer);
    Py_XDECREF(rest);
    ct_state *st = ok ? PyType_GetModuleState(type) : NULL;
    if (!st || ct_options_read(v, &o) < 0)
        return NULL;
    Recorder *r = (Recorder *)type->tp_alloc(type, 0);
    if (!r) {
        ct_options_release(&o);
        return NULL;
    }
    r->vectorcall = Recorder_vectorcall;
    r->st = st;
    r->module_ref = Py_NewRef(st->module);
    int want_yields = o.yields, want_locals = o.locals, want_globals = o.globals;
    recorder_options(r, &o);
    if (flat != Py_None) { /* calltape.flat_profile(record=True): flat wraps func */
        if (!ct_flat_check(st, flat)) {
            PyErr_Format(PyExc_TypeError, "record(flat=) takes a FlatProfile, not %R", flat);
            Py_DECREF(r);
            return NULL;
        }
        r->flat = Py_NewRef(flat);
    }
    if (timer != Py_None) { /* calltape.timer / catch_errors: the outputs besides the tape */
        if (!ct_timer_sink_check(st, timer)) {
            PyErr_Format(PyExc_TypeError, "record(timer=) takes a TimerSink, not %R", timer);
            Py_DECREF(r);
            return NULL;
        }
        r->timer = Py_NewRef(timer);
    }
    if ((pickle != Py_None && !(r->pickle = ct_type_tuple(pickle, "pickle"))) ||
        recorder_unwrap(r, func) < 0 || setup_signature(r) < 0 ||
        recorder_frame_options(r, want_yields, want_locals, want_globals) < 0 ||
        recorder_finish(r) < 0) {
        Py_DECREF(r);
        return NULL;
    }
    return (PyObject *)r;
}

static int Recorder_traverse(Recorder *r, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(r));
    Py_VISIT(r->module_ref);
    Py_VISIT(r->func);
    Py_VISIT(r->probe);
    Py_VISIT(r->wrapped);
    Py_VISIT(r->dict);
    Py_VISIT(r->sanitize);
    Py_VISIT(r->pickle);
    Py_VISIT(r->flat);
    Py_VISIT(r->timer);
    return 0;
}

static int Recorder_clear(Recorder *r)
{
    Py_CLEAR(r->func);
    Py_CLEAR(r->probe);
    Py_CLEAR(r->wrapped);
    Py_CLEAR(r->dict);
    Py_CLEAR(r->sanitize);
    Py_CLEAR(r->pickle);
    Py_CLEAR(r->flat);
    Py_CLEAR(r->timer);
    Py_CLEAR(r->timer_name);
    Py_CLEAR(r->tape);
    Py_CLEAR(r->redact.exact);
    Py_CLEAR(r->redact.patterns);
    Py_CLEAR(r->names);
    Py_CLEAR(r->fn_record);
    Py_CLEAR(r->global_names);
    Py_CLEAR(r->module_ref);
    return 0;
}

static void Recorder_dealloc(Recorder *r)
{
    PyTypeObject *tp = Py_TYPE(r);
    PyObject_GC_UnTrack(r);
    Recorder_clear(r);
    PyMem_Free(r->redacted);
    PyMem_Free(r->pos_secret);
    tp->tp_free((PyObject *)r);
    Py_DECREF(tp);
}

static PyObject *Recorder_descr_get(PyObject *self, PyObject *obj, PyObject *type)
{
    Recorder *r = (Recorder *)self;
    if (r->wrap == WRAP_STATICMETHOD)
        return Py_NewRef(self);
    if (r->wrap == WRAP_CLASSMETHOD) {
        PyObject *cls = type ? type : (PyObject *)Py_TYPE(obj);
        return PyMethod_New(self, cls);
    }
    if (obj == NULL || obj == Py_None)
        return Py_NewRef(self);
    return PyMethod_New(self, obj);
}

static PyObject *forward(Recorder *r, const char *name)
{
    return PyObject_GetAttrString(r->func, name);
}

/* __name__, __qualname__, __module__, __doc__: the wrapped function's own */
static PyObject *Recorder_get_forwarded(Recorder *r, void *name)
{
    return forward(r, (const char *)name);
}

static PyObject *Recorder_get_wrapped(Recorder *r, void *c)
{
    (void)c;
    return Py_NewRef(r->wrapped);
}
static PyObject *Recorder_get_tape(Recorder *r, void *c)
{
    (void)c;
    return Py_NewRef(r->tape ? r->tape : Py_None);
}

/* What the recorder does not have itself is the function's, read through
 * its flat profile when it has one (which has `limit` and `mechanism` and
 * forwards the rest to the same function). */
static PyObject *Recorder_getattro(PyObject *self, PyObject *name)
{
    PyObject *v = PyObject_GenericGetAttr(self, name);
    if (v || !PyErr_ExceptionMatches(PyExc_AttributeError))
        return v;
    PyErr_Clear();
    Recorder *r = (Recorder *)self;
    return PyObject_GetAttr(r->flat ? r->flat : r->func, name);
}

static PyObject *Recorder_reduce(PyObject *self, PyObject *unused)
{
    (void)unused;
    return forward((Recorder *)self, "__qualname__");
}

static PyObject *Recorder_repr(PyObject *self)
{
    Recorder *r = (Recorder *)self;
    PyObject *q = forward(r, "__qualname__");
    if (!q) {
        PyErr_Clear();
        return PyUnicode_FromFormat("<calltape.record of %R>", r->func);
    }
    PyObject *out = PyUnicode_FromFormat("<calltape.record %U>", q);
    Py_DECREF(q);
    return out;
}

static PyGetSetDef Recorder_getset[] = {
    {"__name__", (getter)Recorder_get_forwarded, NULL, NULL, "__name__"},
    {"__qualname__", (getter)Recorder_get_forwarded, NULL, NULL, "__qualname__"},
    {"__module__", (getter)Recorder_get_forwarded, NULL, NULL, "__module__"},
    {"__doc__", (getter)Recorder_get_forwarded, NULL, NULL, "__doc__"},
    {"__wrapped__", (getter)Recorder_get_wrapped, NULL, NULL, NULL},
    {"tape", (getter)Recorder_get_tape, NULL, "the tape path of this function, or None", NULL},
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef Recorder_methods[] = {
    {"__reduce__", Recorder_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Recorder_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(Recorder, vectorcall), READONLY, NULL},
    {"__dictoffset__", T_PYSSIZET, offsetof(Recorder, dict), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot Recorder_slots[] = {
    {Py_tp_new, Recorder_new},           {Py_tp_dealloc, Recorder_dealloc},
    {Py_tp_traverse, Recorder_traverse}, {Py_tp_clear, Recorder_clear},
    {Py_tp_call, PyVectorcall_Call},     {Py_tp_descr_get, Recorder_descr_get},
    {Py_tp_getattro, Recorder_getattro}, {Py_tp_getset, Recorder_getset},
    {Py_tp_methods, Recorder_methods},   {Py_tp_members, Recorder_members},
    {Py_tp_repr, Recorder_repr},         {0, NULL},
};

PyType_Spec Recorder_spec = {
    .name = "calltape.Recorder",
    .basicsize = sizeof(Recorder),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .slots = Recorder_slots,
};
