/*
 * monitor.c - calltape.monitor / `calltape run`: record the calls of whole
 * programs without decorators, onto the same tape and in the same call
 * records as @calltape.record.
 *
 * Hooks: on CPython 3.12+ sys.monitoring with the profiler tool id; the
 * callbacks below are METH_FASTCALL C functions, and a code object that is
 * not recorded gets DISABLE so that it runs at full speed after its first
 * call.  On 3.11 a C profile function (PyEval_SetProfile) on every thread,
 * with threading.setprofile() covering threads started later.
 *
 * The decision for a code object (record it or not, its function id, its
 * parameter layout) is made once and kept in the code object's extra slot
 * (a ct_codeinfo), tagged with the monitor generation it was made for.
 *
 * Each thread keeps a shadow stack of the calls it is running (its own
 * thread-local array, freed by a pthread key destructor when the thread
 * ends); encoded arguments wait in a per-thread LIFO byte arena.  Events are
 * not trusted to arrive balanced: a return is matched against the stack by
 * code object (and, for a generator or coroutine, by the generator running
 * it: one being closed while it is freed may run its frame once more after
 * its entry was recorded as closed, and must not be taken for another
 * generator of the same code below it), unmatched returns (calls that began
 * before monitoring) are ignored, and entries above a match are dropped.  A generator or coroutine
 * that suspends leaves the stack: its entry is parked (parking.c) under its
 * generator, whose weak reference's callback records it as closed if it is
 * freed without resuming, until it resumes, so one record covers its whole
 * life, as with the decorator.
 *
 * Invariants: callbacks never raise and never leave an exception set; while
 * calltape runs its own or user code for capture (ct_thread.busy), events
 * are ignored; the decorator and the monitor share ct_thread, so parent ids
 * link calls recorded either way.
 */
#include "recorder.h"

#include <fnmatch.h>
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

static void codeinfo_free(void *p)
{
    ct_codeinfo *ci = p;
    if (!ci)
        return;
    Py_XDECREF(ci->fn_record);
    Py_XDECREF(ci->names);
    Py_XDECREF(ci->global_names);
    PyMem_Free(ci->redacted);
    PyMem_Free(ci);
}

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

static __attribute__((tls_model("initial-exec"))) _Thread_local mon_stack *tls_stack;

static void stack_free(void *p)
{
    mon_stack *s = p;
    if (!s)
        return;
    wbuf_free(&s->arena);
    free(s->v);
    free(s);
}

/* The calling thread's stack, created on first use; NULL when out of
 * memory.  `key` frees it when the thread ends. */
static mon_stack *stack_get(pthread_key_t key)
{
    mon_stack *s = tls_stack;
    if (s)
        return s;
    s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    wbuf_init(&s->arena, NULL, 0);
    (void)pthread_setspecific(key, s);
    tls_stack = s;
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

static mon_active *active_of(PyObject *module)
{
    return &((ct_state *)PyModule_GetState(module))->monitor;
}

static int text_starts(PyObject *s, PyObject *prefix)
{
    return PyUnicode_Tailmatch(s, prefix, 0, PY_SSIZE_T_MAX, -1) == 1;
}

/* 1 when module `mod` is `prefix` or inside package `prefix`. */
static int module_within(PyObject *mod, PyObject *prefix)
{
    if (!text_starts(mod, prefix))
        return 0;
    Py_ssize_t n = PyUnicode_GET_LENGTH(prefix);
    return PyUnicode_GET_LENGTH(mod) == n || PyUnicode_READ_CHAR(mod, n) == '.';
}

static int any_glob(PyObject *patterns, const char *text)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(patterns); i++) {
        const char *pat = PyUnicode_AsUTF8(PyTuple_GET_ITEM(patterns, i));
        if (pat && fnmatch(pat, text, 0) == 0)
            return 1;
    }
    PyErr_Clear();
    return 0;
}

/* Whether calls of `co`, defined in module `mod`, are recorded by `m`. */
static int wants(Monitor *m, PyCodeObject *co, PyObject *mod)
{
    if (!(co->co_flags & CO_OPTIMIZED)) /* module and class bodies */
        return 0;
    PyObject *file = co->co_filename;
    int in = 0;
    for (Py_ssize_t i = 0; !in && mod && i < PyTuple_GET_SIZE(m->modules); i++)
        in = module_within(mod, PyTuple_GET_ITEM(m->modules, i));
    /* a path naming this very file (the module of `run -m`) */
    for (Py_ssize_t i = 0; !in && i < PyTuple_GET_SIZE(m->paths); i++)
        in = PyUnicode_Compare(file, PyTuple_GET_ITEM(m->paths, i)) == 0;
    if (!in) {
        /* files under an excluded directory (stdlib, site-packages,
         * calltape) only come in by module name */
        if (PyUnicode_GET_LENGTH(file) == 0 || PyUnicode_READ_CHAR(file, 0) == '<')
            return 0;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(m->never); i++)
            if (text_starts(file, PyTuple_GET_ITEM(m->never, i)))
                return 0;
        if (PyTuple_GET_SIZE(m->paths) == 0)
            in = PyTuple_GET_SIZE(m->modules) == 0;
        for (Py_ssize_t i = 0; !in && i < PyTuple_GET_SIZE(m->paths); i++)
            in = text_starts(file, PyTuple_GET_ITEM(m->paths, i));
    }
    if (!in || PyTuple_GET_SIZE(m->exclude) == 0)
        return in;
    const char *ms = mod ? PyUnicode_AsUTF8(mod) : "";
    const char *qs = PyUnicode_AsUTF8(co->co_qualname);
    if (!ms || !qs) {
        PyErr_Clear();
        return in;
    }
    char full[512];
    snprintf(full, sizeof full, "%s.%s", ms, qs);
    if (any_glob(m->exclude, ms) || any_glob(m->exclude, full) || any_glob(m->exclude, qs))
        return 0;
    for (Py_ssize_t i = 0; mod && i < PyTuple_GET_SIZE(m->exclude); i++)
        if (module_within(mod, PyTuple_GET_ITEM(m->exclude, i)))
            return 0;
    return 1;
}

/* Fills the function description of `info` (names, redaction, the
 * REC_FUNCTION body).  Returns 0, or -1 with an exception set. */
static int describe_code(ct_state *st, ct_codeinfo *info, PyCodeObject *co, PyObject *mod)
{
    Py_ssize_t n = ct_param_count(co);
    PyObject *varnames = PyObject_GetAttrString((PyObject *)co, "co_varnames");
    if (!varnames)
        return -1;
    Py_XSETREF(info->names, PyTuple_GetSlice(varnames, 0, n)); /* a retry after a failure */
    Py_DECREF(varnames);
    PyMem_Free(info->redacted);
    info->redacted = PyMem_Calloc((size_t)n + 1, 1);
    if (!info->names || !info->redacted) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        info->redacted[i] =
            (uint8_t)ct_should_redact(st, PyTuple_GET_ITEM(info->names, i), &mon_redact);
    wbuf b;
    wbuf_init(&b, NULL, 0);
    ct_put_module(&b, mod);
    ct_put_text(&b, co->co_qualname);
    ct_put_text(&b, co->co_filename);
    wbuf_varint(&b, (uint64_t)co->co_firstlineno);
    wbuf sig;
    wbuf_init(&sig, NULL, 0);
    wbuf_byte(&sig, WIRE_LIST);
    wbuf_varint(&sig, (uint64_t)n);
    for (Py_ssize_t i = 0; i < n; i++) {
        wbuf_byte(&sig, WIRE_TUPLE);
        wbuf_varint(&sig, 2);
        wbuf_byte(&sig, WIRE_STR);
        ct_put_text(&sig, PyTuple_GET_ITEM(info->names, i));
        wire_int(&sig, ct_param_kind(co, i));
    }
    wbuf_varint(&b, sig.len);
    wbuf_put(&b, sig.data, sig.len);
    info->fn_record = b.failed || sig.failed
                          ? PyErr_NoMemory()
                          : PyBytes_FromStringAndSize((char *)b.data, (Py_ssize_t)b.len);
    wbuf_free(&sig);
    wbuf_free(&b);
    if (!info->fn_record)
        return -1;
    info->fn_id = ++st->next_fn;
    return 0;
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

/* Makes the decision for `co` under the running monitor into `info` (its
 * code_info(), NULL: none yet).  Returns the info, or NULL on failure (then
 * not recorded).  `globals` (borrowed, may be NULL) are those of the
 * running frame. */
static ct_codeinfo *decide(mon_active *a, PyCodeObject *co, ct_codeinfo *info, PyObject *globals)
{
    if (!info) {
        info = PyMem_Calloc(1, sizeof *info);
        if (!info)
            return NULL;
        if (code_set_extra((PyObject *)co, a->extra_index, info) < 0) {
            PyErr_Clear();
            PyMem_Free(info);
            return NULL;
        }
    }
    info->generation = a->generation;
    info->is_gen = (co->co_flags & (CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR)) != 0;
    PyObject *mod = globals ? PyDict_GetItemString(globals, "__name__") : NULL;
    if (mod && !PyUnicode_Check(mod))
        mod = NULL;
    info->record =
        wants(a->mon, co, mod) && PySet_Contains(a->st->decorated_codes, (PyObject *)co) == 0;
    PyErr_Clear();
    if (info->record && !info->fn_record && describe_code(a->st, info, co, mod) < 0) {
        PyErr_Clear();
        info->record = 0;
    }
    return info;
}

/* 1 when `info` holds a decision of the running monitor. */
static inline int decided(const mon_active *a, const ct_codeinfo *info)
{
    return info && info->generation == a->generation;
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
    ci->seq = ++a->st->seq;
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

/* Pops the stack down to (not including) index `i`, restoring the parent
 * link of the thread to what it was when entry `i` was pushed (started or
 * resumed: a generator resumed by another caller returns to that one). */
static void unwind_to(mon_stack *s, size_t i, ct_thread *t)
{
    if (i >= s->n)
        return;
    t->parent = s->v[i].saved_parent;
    t->depth = s->v[i].saved_depth;
    s->arena.len = s->v[i].args_at;
    s->n = i;
}

/* The record of a call with nothing to capture at its end (no result,
 * exception, CPU, memory, energy, locals or globals) and under 40 bytes of
 * arguments: written straight into a stack buffer.  Its body is at most
 * CT_CALL_HEAD_MAX + 1 + 39 < 128 bytes, so its length prefix is one byte. */
static void emit_plain(mon_active *a, const mon_entry *e, const uint8_t *args, uint64_t end,
                       int outcome)
{
    uint8_t buf[1 + CT_CALL_HEAD_MAX + 1 + 40];
    uint8_t *q = ct_put_call_head(buf + 1, e->info->fn_id, &e->ci, end, outcome, e->ci.flags);
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
                    m->max_value_depth};
    ct_emit_site_call(a->st, &site, a->slot, &e->ci, s->arena.data + e->args_at, e->args_len, end,
                      outcome, res, exc, have_locals ? &lb : NULL, e->globals_len ? &gb : NULL);
    Py_DECREF(m);
    wbuf_free(&lb);
}

/* A call of `co` ends with `outcome` (`value`: result or exception). */
static void on_end(mon_active *a, PyCodeObject *co, int outcome, PyObject *value)
{
    uint64_t cpu_end = a->mon && a->mon->opt_cpu ? ct_thread_cpu_ns() : 0; /* nested in end */
    uint64_t end = ct_now_ns();
    mon_stack *s = tls_stack;
    Py_ssize_t i = find_entry(s, co, running_gen(co));
    if (i < 0)
        return;
    mon_entry *e = &s->v[i];
    PyObject *gen = e->gen; /* e may move while the call is emitted */
    ct_thread *t = ct_thread_get();
    if (e->info && e->generation == a->generation) {
        Monitor *m = a->mon;
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
            !(e->ci.flags & (REC_HAS_CPU | REC_HAS_MEMORY | REC_HAS_ENERGY)) && e->args_len < 40)
            emit_plain(a, e, s->arena.data + e->args_at, end, outcome);
        else
            emit_full(a, m, s, (size_t)i, end, outcome, res, exc);
    }
    if (gen)
        ct_park_forget(&a->parked, gen); /* it finished: its slot is no longer needed */
    unwind_to(s, (size_t)i, t);
}

/* The entry (a mon_entry and its encoded values, `len` bytes) of a parked
 * generator or coroutine whose object is gone without finishing: recorded
 * as closed now.  `ctx` is the mon_active. */
static void emit_abandoned(void *ctx, const uint8_t *entry, size_t len)
{
    mon_active *a = ctx;
    mon_entry e;
    if (len < sizeof e)
        return;
    memcpy(&e, entry, sizeof e);
    if (!e.info || !a->mon || e.generation != a->generation)
        return;
    ct_site site = {e.info->fn_id, NULL, NULL, NULL, a->mon->max_value_bytes, 0};
    e.ci.cpu_end = ct_thread_cpu_ns();
    ct_emit_site_call(a->st, &site, a->slot, &e.ci, entry + sizeof e, e.args_len, ct_now_ns(),
                      OUTCOME_CLOSED, NULL, NULL, NULL, NULL);
}

/* Weak reference callback (self: the module): the generator of a parked
 * entry was freed without finishing. */
static PyObject *parked_gone(PyObject *module, PyObject *wr)
{
    PyObject *saved = ct_fetch_exc();
    mon_active *a = active_of(module);
    size_t len = 0;
    uint8_t *entry = ct_park_gone(&a->parked, wr, &len);
    if (entry) {
        emit_abandoned(a, entry, len);
        free(entry);
    }
    PyErr_Clear();
    ct_restore_exc(saved);
    return Py_NewRef(Py_None);
}

static PyMethodDef parked_gone_def = {"_calltape_parked_gone", parked_gone, METH_O, NULL};

/* A generator or coroutine of `co` suspends: its entry leaves the stack
 * and waits in the parking table under its generator.  Returns 1, or 0
 * when it has no entry on this thread's stack. */
static int on_suspend(mon_active *a, PyCodeObject *co)
{
    mon_stack *s = tls_stack;
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
    unwind_to(s, (size_t)i, t);
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

/* ---- hooks: sys.monitoring (3.12+) ------------------------------------- */

#if CT_SYS_MONITORING

/* Common prologue: the code's decision, or NULL to ignore the event.
 * *disable is set when the event should return DISABLE. */
static ct_codeinfo *hook_info(mon_active *a, PyObject *code, int *disable)
{
    *disable = 0;
    if (!a->mon || !PyCode_Check(code) || ct_thread_get()->busy)
        return NULL;
    ct_codeinfo *info = code_info(a, (PyCodeObject *)code);
    if (!decided(a, info))
        info = decide(a, (PyCodeObject *)code, info, PyEval_GetGlobals());
    if (info && info->record)
        return info;
    *disable = 1;
    return NULL;
}

static PyObject *hook_result(mon_active *a, int disable)
{
    return Py_NewRef(disable && a->disable ? a->disable : Py_None);
}

enum mon_event { EV_START, EV_RESUME, EV_RETURN, EV_YIELD, EV_UNWIND, EV_THROW };

/* Every sys.monitoring callback: (code, offset[, value]).  Inlined into
 * each callback with its event constant, so each compiles to its own path. */
static inline __attribute__((always_inline)) PyObject *
mon_event(PyObject *module, PyObject *const *args, Py_ssize_t nargs, int ev)
{
    mon_active *a = active_of(module);
    int disable = 0;
    if (nargs < (ev == EV_RETURN || ev == EV_UNWIND ? 3 : 1))
        return Py_NewRef(Py_None);
    PyCodeObject *co = (PyCodeObject *)args[0];
    if (ev == EV_RETURN) {
        /* the common case: the call on top of this thread's stack returns */
        mon_stack *s = tls_stack;
        if (s && s->n && s->v[s->n - 1].code == co && !s->v[s->n - 1].gen && a->mon &&
            !ct_tls_thread.busy) {
            on_end(a, co, OUTCOME_RETURNED, args[2]);
            return Py_NewRef(Py_None);
        }
    }
    if ((ev == EV_YIELD || ev == EV_RESUME) && a->mon && !ct_tls_thread.busy &&
        (ev == EV_YIELD ? on_suspend(a, co) : on_resume(a, co)))
        return Py_NewRef(Py_None); /* a recorded generator: no decision to look up */
    ct_codeinfo *info = hook_info(a, args[0], &disable);
    if (info) {
        PyObject *saved;
        switch (ev) {
        case EV_START:
            on_start(a, co, info);
            break;
        case EV_RESUME: /* tried above: nothing parked */
        case EV_YIELD:  /* tried above: not on the stack */
            break;
        case EV_RETURN:
            on_end(a, co, OUTCOME_RETURNED, args[2]);
            break;
        default: /* an exception is on its way: keep it as it is */
            saved = ct_fetch_exc();
            if (ev == EV_UNWIND)
                on_end(a, co, OUTCOME_RAISED, args[2]);
            else
                on_resume(a, co); /* PY_THROW resumes a generator */
            ct_restore_exc(saved);
        }
    }
    /* PY_UNWIND and PY_THROW cannot be disabled per code */
    return ev == EV_UNWIND || ev == EV_THROW ? Py_NewRef(Py_None) : hook_result(a, disable);
}

#define MON_CALLBACK(name, ev)                                                                     \
    static PyObject *name(PyObject *module, PyObject *const *args, Py_ssize_t nargs)               \
    {                                                                                              \
        return mon_event(module, args, nargs, ev);                                                 \
    }
MON_CALLBACK(mon_py_start, EV_START)
MON_CALLBACK(mon_py_resume, EV_RESUME)
MON_CALLBACK(mon_py_return, EV_RETURN)
MON_CALLBACK(mon_py_yield, EV_YIELD)
MON_CALLBACK(mon_py_unwind, EV_UNWIND)
MON_CALLBACK(mon_py_throw, EV_THROW)
#undef MON_CALLBACK

static PyMethodDef hook_defs[] = {
    {"PY_START", (PyCFunction)(void (*)(void))mon_py_start, METH_FASTCALL, NULL},
    {"PY_RESUME", (PyCFunction)(void (*)(void))mon_py_resume, METH_FASTCALL, NULL},
    {"PY_RETURN", (PyCFunction)(void (*)(void))mon_py_return, METH_FASTCALL, NULL},
    {"PY_YIELD", (PyCFunction)(void (*)(void))mon_py_yield, METH_FASTCALL, NULL},
    {"PY_UNWIND", (PyCFunction)(void (*)(void))mon_py_unwind, METH_FASTCALL, NULL},
    {"PY_THROW", (PyCFunction)(void (*)(void))mon_py_throw, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

/* Calls sys.monitoring.<name>(*args built from fmt).  New reference or
 * NULL with an exception set. */
static PyObject *sysmon_call(const char *name, const char *fmt, ...)
{
    PyObject *sm = PySys_GetObject("monitoring"); /* borrowed */
    if (!sm) {
        PyErr_SetString(PyExc_RuntimeError, "sys.monitoring is not available");
        return NULL;
    }
    PyObject *fn = PyObject_GetAttrString(sm, name);
    if (!fn)
        return NULL;
    va_list va;
    va_start(va, fmt);
    PyObject *args = Py_VaBuildValue(fmt, va);
    va_end(va);
    PyObject *r = args ? PyObject_CallObject(fn, args) : NULL;
    Py_XDECREF(args);
    Py_DECREF(fn);
    return r;
}

static int hooks_install(PyObject *module, mon_active *a)
{
    PyObject *holder = sysmon_call("get_tool", "(i)", MON_TOOL_ID);
    if (!holder)
        return -1;
    if (holder != Py_None) {
        PyErr_Format(PyExc_RuntimeError,
                     "cannot start calltape.monitor: sys.monitoring tool id %d (PROFILER_ID) is"
                     " held by %R; stop that profiler first",
                     MON_TOOL_ID, holder);
        Py_DECREF(holder);
        return -1;
    }
    Py_DECREF(holder);
    PyObject *r = sysmon_call("use_tool_id", "(is)", MON_TOOL_ID, "calltape");
    if (!r)
        return -1;
    Py_DECREF(r);
    PyObject *sm = PySys_GetObject("monitoring");
    PyObject *events = sm ? PyObject_GetAttrString(sm, "events") : NULL;
    if (!events)
        goto error;
    long mask = 0;
    for (PyMethodDef *d = hook_defs; d->ml_name; d++) {
        PyObject *ev = PyObject_GetAttrString(events, d->ml_name);
        long bit = ev ? PyLong_AsLong(ev) : -1;
        Py_XDECREF(ev);
        if (bit < 0 && PyErr_Occurred()) {
            Py_DECREF(events);
            goto error;
        }
        PyObject *fn = PyCFunction_NewEx(d, module, NULL);
        r = fn ? sysmon_call("register_callback", "(ilO)", MON_TOOL_ID, bit, fn) : NULL;
        Py_XDECREF(fn);
        if (!r) {
            Py_DECREF(events);
            goto error;
        }
        Py_DECREF(r);
        mask |= bit;
    }
    Py_DECREF(events);
    if (!a->disable) {
        a->disable = PyObject_GetAttrString(sm, "DISABLE");
        if (!a->disable)
            goto error;
    }
    r = sysmon_call("restart_events", "()");
    if (!r)
        goto error;
    Py_DECREF(r);
    r = sysmon_call("set_events", "(il)", MON_TOOL_ID, mask);
    if (!r)
        goto error;
    Py_DECREF(r);
    return 0;
error:;
    PyObject *saved = ct_fetch_exc();
    r = sysmon_call("free_tool_id", "(i)", MON_TOOL_ID);
    Py_XDECREF(r);
    PyErr_Clear();
    ct_restore_exc(saved);
    return -1;
}

static void hooks_remove(PyObject *module, mon_active *a)
{
    (void)module;
    (void)a;
    PyObject *saved = ct_fetch_exc();
    PyObject *r = sysmon_call("set_events", "(ii)", MON_TOOL_ID, 0);
    Py_XDECREF(r);
    /* code switched off with DISABLE runs events again for the next user
     * of the profiler id (cProfile on 3.12+) */
    r = sysmon_call("restart_events", "()");
    Py_XDECREF(r);
    for (PyMethodDef *d = hook_defs; d->ml_name; d++) {
        PyObject *sm = PySys_GetObject("monitoring");
        PyObject *events = sm ? PyObject_GetAttrString(sm, "events") : NULL;
        PyObject *ev = events ? PyObject_GetAttrString(events, d->ml_name) : NULL;
        if (ev) {
            r = sysmon_call("register_callback", "(iOO)", MON_TOOL_ID, ev, Py_None);
            Py_XDECREF(r);
        }
        Py_XDECREF(ev);
        Py_XDECREF(events);
    }
    r = sysmon_call("free_tool_id", "(i)", MON_TOOL_ID);
    Py_XDECREF(r);
    PyErr_Clear();
    ct_restore_exc(saved);
}

#else /* ---- hooks: PyEval_SetProfile (3.11) ---------------------------- */

/* 1 when the generator frame `frame` has a parked entry. */
static int is_parked(mon_active *a, PyFrameObject *frame)
{
    PyObject *gen = PyFrame_GetGenerator(frame);
    int r = gen ? ct_park_has(&a->parked, gen) : 0;
    Py_XDECREF(gen);
    return r;
}

/* 1 when the frame of `co` stopped at a YIELD_VALUE (it yielded rather
 * than returned).  3.11 only: its YIELD_VALUE opcode is 86. */
static int frame_yielded(PyFrameObject *frame, PyCodeObject *co)
{
    int lasti = PyFrame_GetLasti(frame);
    PyObject *code = lasti >= 0 ? PyCode_GetCode(co) : NULL;
    int r = code && lasti < PyBytes_GET_SIZE(code) && (uint8_t)PyBytes_AS_STRING(code)[lasti] == 86;
    Py_XDECREF(code);
    PyErr_Clear();
    return r;
}

static int profile_hook(PyObject *module, PyFrameObject *frame, int what, PyObject *arg)
{
    if (what != PyTrace_CALL && what != PyTrace_RETURN)
        return 0;
    mon_active *a = active_of(module);
    if (!a->mon || ct_thread_get()->busy)
        return 0;
    PyCodeObject *co = PyFrame_GetCode(frame);
    PyObject *saved = ct_fetch_exc();
    ct_codeinfo *info = code_info(a, co);
    if (!decided(a, info)) {
        PyObject *globals = PyFrame_GetGlobals(frame);
        info = decide(a, co, info, globals);
        Py_XDECREF(globals);
    }
    if (info && info->record) {
        if (what == PyTrace_CALL) {
            if (info->is_gen && a->parked.nparked && is_parked(a, frame))
                on_resume(a, co);
            else if (!info->is_gen || !frame_yielded(frame, co))
                on_start(a, co, info); /* (a generator resumed at a yield is no start) */
        } else if (arg && info->is_gen && frame_yielded(frame, co)) {
            on_suspend(a, co);
        } else if (arg) {
            on_end(a, co, OUTCOME_RETURNED, arg);
        } else {
            /* 3.11's profiler hook does not show the exception; one leaving a
             * generator at a yield was thrown in there, almost always by
             * close() (GeneratorExit) */
            on_end(a, co,
                   info->is_gen && frame_yielded(frame, co) ? OUTCOME_CLOSED : OUTCOME_RAISED,
                   NULL);
        }
    }
    Py_DECREF(co);
    PyErr_Clear();
    ct_restore_exc(saved);
    return 0;
}

static PyObject *thread_hook(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)args;
    (void)nargs;
    PyEval_SetProfile((Py_tracefunc)profile_hook, module);
    return Py_NewRef(Py_None);
}

static PyMethodDef thread_hook_def = {
    "_calltape_thread_profile", (PyCFunction)(void (*)(void))thread_hook, METH_FASTCALL, NULL};

static int set_threading_profile(PyObject *fn)
{
    PyObject *threading = PyImport_ImportModule("threading");
    if (!threading)
        return -1;
    PyObject *r = PyObject_CallMethod(threading, "setprofile", "O", fn);
    Py_DECREF(threading);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

static int hooks_install(PyObject *module, mon_active *a)
{
    (void)a;
    PyThreadState *me = PyThreadState_Get();
    for (PyThreadState *ts = PyInterpreterState_ThreadHead(me->interp); ts;
         ts = PyThreadState_Next(ts))
        if (ts->c_profilefunc && ts->c_profilefunc != (Py_tracefunc)profile_hook) {
            PyErr_SetString(PyExc_RuntimeError,
                            "cannot start calltape.monitor: another profiler (sys.setprofile)"
                            " is active; stop it first");
            return -1;
        }
    PyObject *fn = PyCFunction_NewEx(&thread_hook_def, module, NULL);
    if (!fn || set_threading_profile(fn) < 0) {
        Py_XDECREF(fn);
        return -1;
    }
    Py_DECREF(fn);
    for (PyThreadState *ts = PyInterpreterState_ThreadHead(me->interp); ts;
         ts = PyThreadState_Next(ts))
        if (_PyEval_SetProfile(ts, (Py_tracefunc)profile_hook, module) < 0)
            return -1;
    return 0;
}

static void hooks_remove(PyObject *module, mon_active *a)
{
    (void)module;
    (void)a;
    PyObject *saved = ct_fetch_exc();
    if (set_threading_profile(Py_None) < 0)
        PyErr_Clear();
    PyThreadState *me = PyThreadState_Get();
    for (PyThreadState *ts = PyInterpreterState_ThreadHead(me->interp); ts;
         ts = PyThreadState_Next(ts))
        if (ts->c_profilefunc == (Py_tracefunc)profile_hook &&
            _PyEval_SetProfile(ts, NULL, NULL) < 0)
            PyErr_Clear();
    ct_restore_exc(saved);
}

#endif

/* ---- Monitor: start / stop ---------------------------------------------- */

static PyObject *Monitor_start(PyObject *self, PyObject *unused)
{
    (void)unused;
    Monitor *m = (Monitor *)self;
    ct_state *st = m->st;
    mon_active *a = &st->monitor;
    if (a->mon) {
        PyErr_SetString(PyExc_RuntimeError,
                        a->mon == m ? "this calltape.monitor is already running"
                                    : "another calltape.monitor is already running in this"
                                      " process; stop it first");
        return NULL;
    }
    ct_engine_slot *slot = ct_engine_for(st, m->tape);
    if (!slot)
        return NULL;
    if (m->tape)
        slot->pinned = 1;
    if (!a->key_made) {
        if (pthread_key_create(&a->key, stack_free) != 0)
            return PyErr_Format(PyExc_RuntimeError, "cannot create a thread key");
        a->key_made = 1;
    }
    if (a->extra_index < 0) {
        a->extra_index = request_code_extra(codeinfo_free);
        if (a->extra_index < 0)
            return PyErr_Format(PyExc_RuntimeError, "no code extra slot is left for calltape");
    }
    if (!a->park_gone && !(a->park_gone = PyCFunction_NewEx(&parked_gone_def, st->module, NULL)))
        return NULL;
    a->st = st;
    a->slot = slot;
    a->generation = ++st->monitor_generation;
    a->mon = (Monitor *)Py_NewRef(self);
    if (hooks_install(st->module, a) < 0) {
        Py_CLEAR(a->mon);
        return NULL;
    }
    m->running = 1;
    return Py_NewRef(self);
}

/* Records the generators still parked as closed (they never finished). */
static void close_parked(mon_active *a)
{
    ct_park_drain(&a->parked, emit_abandoned, a);
}

static PyObject *Monitor_stop(PyObject *self, PyObject *unused)
{
    (void)unused;
    Monitor *m = (Monitor *)self;
    mon_active *a = &m->st->monitor;
    if (a->mon != m)
        return Py_NewRef(Py_None);
    hooks_remove(m->st->module, a);
    close_parked(a);
    mon_stack *s = tls_stack;
    if (s) { /* calls still running on this thread are not recorded */
        ct_thread *t = ct_thread_get();
        unwind_to(s, 0, t);
    }
    m->running = 0;
    Py_CLEAR(a->mon);
    a->generation = ++m->st->monitor_generation;
    return Py_NewRef(Py_None);
}

static PyObject *Monitor_exit(PyObject *self, PyObject *args)
{
    (void)args;
    return Monitor_stop(self, NULL);
}

/* ---- Monitor: type ------------------------------------------------------ */

/* A tuple of str from an iterable of str (or one str). */
static PyObject *str_tuple(PyObject *v, const char *what)
{
    if (v == Py_None)
        return PyTuple_New(0);
    if (PyUnicode_Check(v))
        return PyTuple_Pack(1, v);
    PyObject *t = PySequence_Tuple(v);
    if (!t)
        return NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(t); i++)
        if (!PyUnicode_Check(PyTuple_GET_ITEM(t, i))) {
            PyErr_Format(PyExc_TypeError, "%s must be strings, not %.100s", what,
                         Py_TYPE(PyTuple_GET_ITEM(t, i))->tp_name);
            Py_DECREF(t);
            return NULL;
        }
    return t;
}

static PyObject *Monitor_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"include",         "exclude", "paths",     "never",           "args",
                             "result",          "cpu",     "memory",    "energy",          "locals",
                             "globals",         "tape",    "max_depth", "max_value_bytes", "sample",
                             "max_value_depth", NULL};
    PyObject *include = Py_None, *exclude = Py_None, *paths = Py_None, *never = Py_None;
    PyObject *tape = Py_None;
    int a = 1, res = 1, cpu = 0, mem = 0, energy = 0, locals = 0, globals = 0;
    Py_ssize_t max_depth = 0, max_bytes = -1, sample = 1, value_depth = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|OO$OOpppppppOnnnn:monitor", kwlist, &include,
                                     &exclude, &paths, &never, &a, &res, &cpu, &mem, &energy,
                                     &locals, &globals, &tape, &max_depth, &max_bytes, &sample,
                                     &value_depth))
        return NULL;
    if (value_depth < 0)
        return PyErr_Format(PyExc_ValueError, "max_value_depth must be >= 0 (0: no limit), not %zd",
                            value_depth);
    if (sample < 1)
        return PyErr_Format(PyExc_ValueError, "sample must be an integer >= 1, not %zd", sample);
    if (max_depth < 0)
        return PyErr_Format(PyExc_ValueError, "max_depth must be >= 0 (0: no limit), not %zd",
                            max_depth);
    if (max_bytes != -1 && max_bytes < 16)
        return PyErr_Format(PyExc_ValueError, "max_value_bytes must be at least 16, not %zd",
                            max_bytes);
    ct_state *st = PyType_GetModuleState(type);
    if (!st)
        return NULL;
    Monitor *m = (Monitor *)type->tp_alloc(type, 0);
    if (!m)
        return NULL;
    m->st = st;
    m->module_ref = Py_NewRef(st->module);
    m->modules = str_tuple(include, "include");
    m->exclude = m->modules ? str_tuple(exclude, "exclude") : NULL;
    m->paths = m->exclude ? str_tuple(paths, "paths") : NULL;
    m->never = m->paths ? str_tuple(never, "never") : NULL;
    if (!m->never)
        goto error;
    if (tape != Py_None) {
        m->tape = PyOS_FSPath(tape);
        if (!m->tape)
            goto error;
        if (!PyUnicode_Check(m->tape)) {
            PyErr_SetString(PyExc_TypeError, "tape must be a str path");
            goto error;
        }
    }
    m->opt_args = (uint8_t)a;
    m->opt_result = (uint8_t)res;
    m->opt_cpu = (uint8_t)cpu;
    m->opt_memory = (uint8_t)mem;
    m->opt_energy = (uint8_t)energy;
    m->opt_locals = (uint8_t)locals;
    m->opt_globals = (uint8_t)globals;
    if (energy)
        ct_energy_open(st); /* an unavailable counter is reported now, once */
    m->max_depth = max_depth;
    m->max_value_depth = (int)(value_depth > 1000 ? 1000 : value_depth);
    m->max_value_bytes = max_bytes == -1 ? st->max_value_bytes : max_bytes;
    m->sample = (uint32_t)(sample > UINT32_MAX ? UINT32_MAX : sample);
    return (PyObject *)m;
error:
    Py_DECREF(m);
    return NULL;
}

static int Monitor_traverse(Monitor *m, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(m));
    Py_VISIT(m->module_ref);
    return 0;
}

static int Monitor_clear(Monitor *m)
{
    Py_CLEAR(m->modules);
    Py_CLEAR(m->exclude);
    Py_CLEAR(m->paths);
    Py_CLEAR(m->never);
    Py_CLEAR(m->tape);
    Py_CLEAR(m->module_ref);
    return 0;
}

static void Monitor_dealloc(Monitor *m)
{
    PyTypeObject *tp = Py_TYPE(m);
    PyObject_GC_UnTrack(m);
    Monitor_clear(m);
    tp->tp_free((PyObject *)m);
    Py_DECREF(tp);
}

static PyObject *Monitor_get_running(Monitor *m, void *c)
{
    (void)c;
    return PyBool_FromLong(m->running);
}

static PyObject *Monitor_get_calls(Monitor *m, void *c)
{
    (void)c;
    return PyLong_FromUnsignedLongLong(m->calls_seen);
}

static PyObject *Monitor_get_functions(Monitor *m, void *c)
{
    (void)c;
    return PyLong_FromUnsignedLongLong(m->functions_seen);
}

static PyObject *Monitor_repr(Monitor *m)
{
    return PyUnicode_FromFormat("<calltape.monitor include=%R exclude=%R %s>", m->modules,
                                m->exclude, m->running ? "running" : "stopped");
}

static PyGetSetDef Monitor_getset[] = {
    {"running", (getter)Monitor_get_running, NULL, "True between start() and stop()", NULL},
    {"calls", (getter)Monitor_get_calls, NULL, "recorded calls started so far", NULL},
    {"functions", (getter)Monitor_get_functions, NULL, "functions with recorded calls", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef Monitor_methods[] = {
    {"start", Monitor_start, METH_NOARGS, "start() -> self: begin recording"},
    {"stop", Monitor_stop, METH_NOARGS, "stop(): stop recording (idempotent)"},
    {"__enter__", Monitor_start, METH_NOARGS, NULL},
    {"__exit__", Monitor_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot Monitor_slots[] = {
    {Py_tp_new, Monitor_new},           {Py_tp_dealloc, Monitor_dealloc},
    {Py_tp_traverse, Monitor_traverse}, {Py_tp_clear, Monitor_clear},
    {Py_tp_getset, Monitor_getset},     {Py_tp_methods, Monitor_methods},
    {Py_tp_repr, Monitor_repr},         {0, NULL},
};

PyType_Spec Monitor_spec = {
    .name = "calltape.Monitor",
    .basicsize = sizeof(Monitor),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = Monitor_slots,
};

void ct_monitor_stop_running(ct_state *st)
{
    PyObject *mon = (PyObject *)st->monitor.mon;
    if (!mon)
        return;
    PyObject *saved = ct_fetch_exc();
    Py_INCREF(mon);
    PyObject *r = Monitor_stop(mon, NULL);
    Py_XDECREF(r);
    Py_DECREF(mon);
    PyErr_Clear();
    ct_restore_exc(saved);
}

void ct_monitor_clear(ct_state *st)
{
    mon_active *a = &st->monitor;
    Py_CLEAR(a->mon);
    ct_park_drain(&a->parked, NULL, NULL);
    Py_CLEAR(a->park_gone);
    Py_CLEAR(a->disable);
}

int ct_monitor_traverse(const ct_state *st, visitproc visit, void *arg)
{
    const mon_active *a = &st->monitor;
    Py_VISIT((PyObject *)a->mon);
    Py_VISIT(a->park_gone);
    return ct_park_traverse(&a->parked, visit, arg);
}
