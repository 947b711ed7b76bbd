/*
 * flat.c - calltape.flat_profile: the FlatProfile type, a wrapper (like
 * Recorder: vectorcall, descriptor, GC) that times every call made
 * directly inside one function, per activation.
 *
 * An activation starts and ends in the wrapper, so it is exact and
 * balanced whatever the function does (returns, raises, recurses).  Each
 * activation aggregates its calls by call site and callee (count, total,
 * maximum) in a small open-addressing table on this thread's activation
 * stack, reused from one activation to the next.  The inner calls are
 * timed in one of two ways:
 *
 * - call sites (a plain function whose source is in a file): the wrapper
 *   calls a rewrite of the function (calltape/rewrite.py, flat_sites) in
 *   which each direct call `f(a, k=b)` is `ct_flat_site_call(offset, f, a,
 *   k=b)`, offset being the original code's CALL instruction: the call is
 *   timed exactly, from before it to after it, with no event at all;
 * - events, for the rest (generators, coroutines, code with no source): the
 *   sys.monitoring CALL event set on that function's code object alone
 *   (tool FLAT_TOOL_ID).  Each CALL ends the inner call timed before it and
 *   starts timing the new one, and the return ends the last: an inner call
 *   runs from its CALL to the next direct call or the return, so the
 *   function's own bytecode between two calls counts for the call before it.
 *
 * Either way calls deeper down count inside the direct call that made them,
 * and the inner calls' times never add up to more than the total.
 *
 * What an activation gives (the breakdown, the callbacks, the tape's
 * records) is flat_out.c's.
 *
 * Invariants: code outside profiled functions has no event set (the
 * events are local to the code objects that some FlatProfile wraps, and
 * removed when the last one goes); the callbacks never raise into the
 * program; a user callback that raises is reported once (per profile) as a
 * RecordingWarning and the call's own result or exception is unchanged.
 * On 3.11 (no sys.monitoring) the events come from a profile hook set on
 * the thread while a profiled activation runs (none while none runs, and
 * never over another profiler's): a direct call is timed exactly, from its
 * CALL or C_CALL to its RETURN or C_RETURN.
 */
#include "flat_impl.h"

#include "pending.h"

#include <pthread.h>
#include <structmember.h>

#if PY_VERSION_HEX >= 0x030C0000
#define FLAT_SYSMON 1
#else
#define FLAT_SYSMON 0
#endif

/* sys.monitoring's OPTIMIZER_ID: the monitor holds 2, probes 3, locals 4 */
#define FLAT_TOOL_ID 5

/* 1 when `fp` times its inner calls from events (it has no call-site rewrite). */
static inline int uses_events(const FlatProfile *fp)
{
    return fp->run == fp->func;
}

/* ---- the per-thread activation stack -------------------------------------- */

typedef struct flat_stack {
    flat_act *v;
    size_t n, cap;
    size_t hooked; /* 3.11: the depth whose activation set the profile hook, or 0 */
} flat_stack;

static __attribute__((tls_model("initial-exec"))) _Thread_local flat_stack *flat_tls;
static pthread_key_t flat_key;
static pthread_once_t flat_key_once = PTHREAD_ONCE_INIT;

/* A thread's stack when the thread ends: its tables (every callee was
 * released when its activation ended). */
static void stack_free(void *p)
{
    flat_stack *s = p;
    for (size_t i = 0; i < s->cap; i++)
        free(s->v[i].sites);
    free(s->v);
    free(s);
}

static void key_make(void)
{
    (void)pthread_key_create(&flat_key, stack_free);
}

/* This thread's stack, made on first use; NULL when memory ran out. */
static flat_stack *stack_get(void)
{
    if (flat_tls)
        return flat_tls;
    pthread_once(&flat_key_once, key_make);
    flat_stack *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    flat_tls = s;
    (void)pthread_setspecific(flat_key, s);
    return s;
}

/* Pushes an activation of `code`.  Returns it, or NULL (memory). */
static flat_act *act_push(flat_stack *s, PyObject *code)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 8;
        flat_act *v = realloc(s->v, cap * sizeof *v);
        if (!v)
            return NULL;
        memset(v + s->cap, 0, (cap - s->cap) * sizeof *v);
        s->v = v;
        s->cap = cap;
    }
    flat_act *a = &s->v[s->n];
    if (!a->sites) {
        if (!(a->sites = calloc(16, sizeof *a->sites)))
            return NULL;
        a->cap = 16;
    }
    a->code = code;
    a->n = 0;
    a->pending = NULL;
    a->frame = NULL;
    s->n++;
    return a;
}

/* Releases the callees of the top activation and pops it. */
static void act_pop(flat_stack *s)
{
    flat_act *a = &s->v[--s->n];
    if (a->n)
        for (size_t i = 0; i < a->cap; i++)
            Py_CLEAR(a->sites[i].callee);
    a->n = 0;
    a->pending = NULL;
}

static size_t site_hash(const void *key, long offset, size_t mask)
{
    uint64_t h = ((uint64_t)(uintptr_t)key >> 4) ^ ((uint64_t)offset * 0x9E3779B97F4A7C15ull);
    return (size_t)(h ^ (h >> 29)) & mask;
}

/* Doubles the table of `a`.  Returns 0, or -1 (memory: the table stays). */
static int act_grow(flat_act *a)
{
    size_t cap = a->cap * 2;
    flat_site *v = calloc(cap, sizeof *v);
    if (!v)
        return -1;
    for (size_t i = 0; i < a->cap; i++) {
        flat_site *o = &a->sites[i];
        if (!o->callee)
            continue;
        size_t j = site_hash(o->key, o->offset, cap - 1);
        while (v[j].callee)
            j = (j + 1) & (cap - 1);
        v[j] = *o;
    }
    free(a->sites);
    a->sites = v;
    a->cap = cap;
    return 0;
}

/* What a callee's calls are aggregated by: a bound method's function (a new
 * bound method each call), a bound builtin's method definition (`d.get`:
 * the same), else the callee.  `*callee` becomes what the site keeps. */
static const void *site_key(PyObject **callee)
{
    if (PyMethod_Check(*callee))
        return *callee = PyMethod_GET_FUNCTION(*callee);
    if (PyCFunction_Check(*callee)) {
        PyObject *self = PyCFunction_GET_SELF(*callee);
        if (self && !PyModule_Check(self))
            return ((PyCFunctionObject *)*callee)->m_ml;
    }
    return *callee;
}

/* The site of `callee` at `offset` in `a`, added when new; NULL (memory). */
static flat_site *act_site(flat_act *a, PyObject *callee, long offset)
{
    const void *key = site_key(&callee);
    if (4 * (a->n + 1) > 3 * a->cap && act_grow(a) < 0)
        return NULL;
    size_t mask = a->cap - 1, i = site_hash(key, offset, mask);
    for (;; i = (i + 1) & mask) {
        flat_site *s = &a->sites[i];
        if (s->key == key && s->offset == offset && s->callee)
            return s;
        if (!s->callee) {
            s->callee = Py_NewRef(callee);
            s->key = key;
            s->offset = offset;
            s->count = s->total_ns = s->max_ns = 0;
            a->n++;
            return s;
        }
    }
}

/* ---- CPython 3.11: a profile hook while an activation runs ------------------ */

#if !FLAT_SYSMON
/* flat_act.frame once the activation's frame returned or yielded. */
#define FLAT_FRAME_DONE ((void *)1)

/* The hook of this thread while a profiled function runs on it: a direct
 * call of the activation on top is a Python frame whose parent is the
 * activation's frame (from its CALL to its RETURN), or a C function called
 * from that frame (C_CALL to C_RETURN or C_EXCEPTION).  The activation's
 * frame is the first frame of its code to start after it was pushed. */
static int profile_cb(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg)
{
    (void)obj;
    flat_stack *s = flat_tls;
    if (!s || !s->n)
        return 0;
    flat_act *a = &s->v[s->n - 1];
    if (!a->frame) {
        if (what == PyTrace_CALL) {
            PyCodeObject *co = PyFrame_GetCode(frame); /* new reference */
            if ((PyObject *)co == a->code)
                a->frame = frame;
            Py_DECREF(co);
        }
        return 0;
    }
    if (a->frame == FLAT_FRAME_DONE)
        return 0;
    if (what == PyTrace_RETURN && (void *)frame == a->frame) {
        /* its own return (or yield): no frame of its may match any more */
        a->frame = FLAT_FRAME_DONE;
        return 0;
    }
    PyObject *callee = NULL;
    int suspends = 0; /* a generator or coroutine's frame: it returns at each yield */
    if (what == PyTrace_CALL || what == PyTrace_RETURN) {
        PyFrameObject *from = PyFrame_GetBack(frame); /* new reference */
        Py_XDECREF(from);                             /* compared, never used */
        if ((void *)from != a->frame)
            return 0;
        PyCodeObject *co = PyFrame_GetCode(frame);
        Py_DECREF(co); /* the frame holds it */
        callee = (PyObject *)co;
        suspends = (co->co_flags & (CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR)) != 0;
    } else if ((void *)frame != a->frame) {
        return 0;
    }
    uint64_t now = ct_now_ns();
    if (what == PyTrace_CALL || what == PyTrace_C_CALL) {
        if (suspends && a->pending && a->pending->callee == callee)
            return 0; /* resumed: the same inner call goes on (an await) */
        flat_act_close(a, now);
        flat_act_open(a,
                      act_site(a, what == PyTrace_CALL ? callee : arg,
                               (long)PyFrame_GetLasti((PyFrameObject *)a->frame)),
                      now);
    } else if (!suspends && (what == PyTrace_RETURN || what == PyTrace_C_RETURN ||
                             what == PyTrace_C_EXCEPTION)) {
        flat_act_close(a, now); /* a suspended one ends at the next call or the end */
    }
    return 0;
}
#endif

/* After a push: sets the 3.11 hook unless it is set (by an activation
 * below, or by another profiler: then only the total is measured). */
static void hook_on(flat_stack *s)
{
#if !FLAT_SYSMON
    if (s->hooked || PyThreadState_Get()->c_profilefunc)
        return;
    PyObject *saved = ct_fetch_exc();
    PyEval_SetProfile(profile_cb, NULL);
    PyErr_Clear(); /* an audit hook's refusal: left unhooked */
    ct_restore_exc(saved);
    if (PyThreadState_Get()->c_profilefunc == profile_cb)
        s->hooked = s->n;
#else
    (void)s;
#endif
}

/* Before the pop of the activation that set the hook: takes it off. */
static void hook_off(flat_stack *s)
{
#if !FLAT_SYSMON
    if (!s->hooked || s->hooked != s->n)
        return;
    s->hooked = 0;
    PyObject *saved = ct_fetch_exc();
    if (PyThreadState_Get()->c_profilefunc == profile_cb)
        PyEval_SetProfile(NULL, NULL);
    PyErr_Clear();
    ct_restore_exc(saved);
#else
    (void)s;
#endif
}

/* ---- call sites: the rewrite's timed calls ------------------------------------- */

PyObject *ct_flat_site_call(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames)
{
    (void)module;
    if (nargs < 2) {
        PyErr_SetString(PyExc_TypeError, "flat_site_call(offset, callee, ...) takes 2 or more"
                                         " arguments");
        return NULL;
    }
    long offset = PyLong_AsLong(args[0]);
    if (offset == -1 && PyErr_Occurred())
        return NULL;
    PyObject *callee = args[1];
    flat_stack *s = flat_tls;
    size_t depth = s ? s->n : 0;
    uint64_t start = ct_now_ns();
    /* no PY_VECTORCALL_ARGUMENTS_OFFSET: args may be a tuple's items */
    PyObject *res = PyObject_Vectorcall(callee, args + 2, (size_t)(nargs - 2), kwnames);
    uint64_t end = ct_now_ns();
    if (!depth || s->n < depth) /* run outside its wrapper, or unwound */
        return res;
    flat_act *a = &s->v[depth - 1]; /* found again: the call may have moved the stack */
    flat_site *site = act_site(a, callee, offset);
    if (site) {
        flat_site_begin(site, start);
        flat_site_time(site, end - start);
    }
    return res;
}

/* ---- sys.monitoring -------------------------------------------------------- */

/* CALL(code, offset, callable, arg0): a direct call of the activation on
 * top of this thread's stack begins. */
static PyObject *cb_call(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    flat_stack *s = flat_tls;
    if (!s || !s->n || nargs < 3)
        Py_RETURN_NONE;
    flat_act *a = &s->v[s->n - 1];
    if (a->code != args[0]) /* the code run outside its wrapper */
        Py_RETURN_NONE;
    uint64_t now = ct_now_ns();
    flat_act_close(a, now);
    long offset = PyLong_AsLong(args[1]);
    flat_act_open(a, act_site(a, args[2], offset), now);
    Py_RETURN_NONE;
}

static PyMethodDef cb_call_def = {"CALL", (PyCFunction)(void (*)(void))cb_call, METH_FASTCALL,
                                  NULL};

/* sys.monitoring.<name>(*args built from fmt): new reference or NULL. */
static PyObject *sysmon(const char *name, const char *fmt, ...)
{
    PyObject *sm = PySys_GetObject("monitoring"); /* borrowed */
    if (!sm)
        return PyErr_Format(PyExc_RuntimeError, "flat_profile needs sys.monitoring");
    PyObject *fn = PyObject_GetAttrString(sm, name);
    if (!fn)
        return NULL;
    va_list va;
    va_start(va, fmt);
    PyObject *a = Py_VaBuildValue(fmt, va);
    va_end(va);
    PyObject *r = a ? PyObject_CallObject(fn, a) : NULL;
    Py_XDECREF(a);
    Py_DECREF(fn);
    return r;
}

static long event_bit(const char *name)
{
    PyObject *sm = PySys_GetObject("monitoring");
    PyObject *ev = sm ? PyObject_GetAttrString(sm, "events") : NULL;
    PyObject *bit = ev ? PyObject_GetAttrString(ev, name) : NULL;
    long r = bit ? PyLong_AsLong(bit) : -1;
    Py_XDECREF(bit);
    Py_XDECREF(ev);
    return r;
}

/* Claims the tool id and registers the CALL callback (first profile).
 * Returns 0, or -1 with an exception. */
static int tool_claim(ct_state *st, PyObject *module)
{
    if (st->flat.tool_held)
        return 0;
    PyObject *holder = sysmon("get_tool", "(i)", FLAT_TOOL_ID);
    if (!holder)
        return -1;
    if (holder != Py_None) {
        PyErr_Format(PyExc_RuntimeError,
                     "cannot profile with calltape.flat_profile: sys.monitoring tool id %d is"
                     " held by %R",
                     FLAT_TOOL_ID, holder);
        Py_DECREF(holder);
        return -1;
    }
    Py_DECREF(holder);
    PyObject *r = sysmon("use_tool_id", "(is)", FLAT_TOOL_ID, "calltape flat_profile");
    if (!r)
        return -1;
    Py_DECREF(r);
    PyObject *fn = PyCFunction_NewEx(&cb_call_def, module, NULL);
    r = fn ? sysmon("register_callback", "(ilO)", FLAT_TOOL_ID, event_bit("CALL"), fn) : NULL;
    Py_XDECREF(fn);
    if (!r) {
        PyObject *saved = ct_fetch_exc();
        Py_XDECREF(sysmon("free_tool_id", "(i)", FLAT_TOOL_ID));
        PyErr_Clear();
        ct_restore_exc(saved);
        return -1;
    }
    Py_DECREF(r);
    st->flat.tool_held = 1;
    return 0;
}

/* One more (delta 1) or one fewer (-1) FlatProfile of `code`: the CALL
 * event is set on it with the first and removed with the last (and the
 * tool id freed with the last of all).  Returns 0, or -1 with an exception. */
static int code_count(ct_state *st, PyObject *module, PyObject *code, int delta)
{
    if (!st->flat.codes && (delta < 0 || !(st->flat.codes = PyDict_New())))
        return delta < 0 ? 0 : -1; /* after the module's state was cleared: nothing */
    PyObject *n = PyDict_GetItemWithError(st->flat.codes, code); /* borrowed */
    if (!n && PyErr_Occurred())
        return -1;
    long now = (n ? PyLong_AsLong(n) : 0) + delta;
    if (delta > 0 && now == 1) {
        if (tool_claim(st, module) < 0)
            return -1;
        PyObject *r = sysmon("set_local_events", "(iOl)", FLAT_TOOL_ID, code, event_bit("CALL"));
        if (!r)
            return -1;
        Py_DECREF(r);
    }
    if (now <= 0) {
        if (PyDict_DelItem(st->flat.codes, code) < 0)
            return -1;
        PyObject *r = sysmon("set_local_events", "(iOi)", FLAT_TOOL_ID, code, 0);
        if (!r)
            return -1;
        Py_DECREF(r);
        if (PyDict_GET_SIZE(st->flat.codes) == 0 && st->flat.tool_held) {
            r = sysmon("free_tool_id", "(i)", FLAT_TOOL_ID);
            if (!r)
                return -1;
            Py_DECREF(r);
            st->flat.tool_held = 0;
        }
        return 0;
    }
    PyObject *v = PyLong_FromLong(now);
    int rc = v ? PyDict_SetItem(st->flat.codes, code, v) : -1;
    Py_XDECREF(v);
    return rc;
}

/* Pops the activations above `depth` (never expected: every activation
 * pops its own), taking off the 3.11 hook an activation among them set. */
static void unwind_to(flat_stack *s, size_t depth)
{
    while (s->n > depth) {
        hook_off(s);
        act_pop(s);
    }
}

/* ---- activations that suspend: generators and coroutines ---------------------- */

struct ct_flat_run {
    FlatProfile *fp; /* strong */
    flat_act act;    /* while suspended: the activation's table (its callees strong) */
    uint64_t first_ns, resumed_ns, running_ns;
    size_t depth; /* on the stack while resumed: its position + 1; 0 when not */
    int started, finished;
};

ct_flat_run *ct_flat_run_new(PyObject *flat)
{
    FlatProfile *fp = (FlatProfile *)flat;
    if (fp->body == FLAT_BODY_PLAIN || !fp->code)
        return NULL;
    ct_flat_run *run = PyMem_Calloc(1, sizeof *run);
    if (!run || !(run->act.sites = calloc(16, sizeof(flat_site)))) {
        PyMem_Free(run);
        return NULL;
    }
    run->act.cap = 16;
    run->act.code = fp->code;
    run->fp = (FlatProfile *)Py_NewRef(flat);
    return run;
}

/* Swaps the table of stack entry `e` with the run's (O(1)). */
static void run_swap(ct_flat_run *run, flat_act *e)
{
    flat_act tmp = *e;
    *e = run->act;
    run->act = tmp;
}

void ct_flat_run_resume(ct_flat_run *run)
{
    if (!run || run->finished || run->depth)
        return;
    flat_stack *s = stack_get();
    if (!s || !act_push(s, run->fp->code))
        return;
    run_swap(run, &s->v[s->n - 1]); /* the entry now holds the run's table */
    run->depth = s->n;
    s->v[s->n - 1].frame = NULL; /* 3.11: the frame resumed is found again */
    hook_on(s);
    run->resumed_ns = ct_now_ns();
    if (!run->started) {
        run->started = 1;
        run->first_ns = run->resumed_ns;
    }
}

void ct_flat_run_suspend(ct_flat_run *run, int finished, ct_engine_slot *slot)
{
    flat_stack *s = flat_tls;
    if (!run || !run->depth || !s || s->n < run->depth)
        return;
    uint64_t now = ct_now_ns();
    unwind_to(s, run->depth);
    hook_off(s);
    flat_act *e = &s->v[s->n - 1];
    /* a generator's inner call ends at its yield; a coroutine's goes on
     * while it waits: the time awaited inside an inner call counts for it */
    if (run->fp->body == FLAT_BODY_GENERATOR || finished)
        flat_act_close(e, now);
    run_swap(run, e); /* the entry gets back the clean table it lent */
    e->n = 0;
    e->pending = NULL;
    s->n--;
    run->depth = 0;
    run->running_ns += now - run->resumed_ns;
    if (!finished)
        return;
    run->finished = 1;
    PyObject *exc = ct_fetch_exc();
    if (slot)
        flat_emit_children(run->fp, &run->act, slot);
    /* a generator took the time it ran; a coroutine, the time until it was done */
    flat_report(run->fp, &run->act,
                run->fp->body == FLAT_BODY_GENERATOR ? run->running_ns : now - run->first_ns);
    if (PyErr_Occurred()) /* a KeyboardInterrupt in a callback: it wins */
        Py_XDECREF(exc);
    else
        ct_restore_exc(exc);
    for (size_t i = 0; i < run->act.cap; i++)
        Py_CLEAR(run->act.sites[i].callee);
    run->act.n = 0;
}

void ct_flat_run_free(ct_flat_run *run)
{
    if (!run)
        return;
    for (size_t i = 0; i < run->act.cap; i++)
        Py_CLEAR(run->act.sites[i].callee);
    free(run->act.sites);
    Py_CLEAR(run->fp);
    PyMem_Free(run);
}

int ct_flat_run_traverse(ct_flat_run *run, visitproc visit, void *arg)
{
    if (run)
        Py_VISIT(run->fp);
    return 0;
}

int ct_flat_suspends(PyObject *flat)
{
    return ((FlatProfile *)flat)->body != FLAT_BODY_PLAIN;
}

/* ---- the call ---------------------------------------------------------------- */

PyObject *ct_flat_call(PyObject *flat, PyObject *const *args, size_t nargsf, PyObject *kwnames,
                       ct_engine_slot *slot)
{
    FlatProfile *fp = (FlatProfile *)flat;
    if (fp->body != FLAT_BODY_PLAIN) {
        /* the body runs later, in the generator or coroutine returned */
        PyObject *res = PyObject_Vectorcall(fp->run, args, nargsf, kwnames);
        if (slot || !res || !(PyGen_CheckExact(res) || PyCoro_CheckExact(res)))
            return res; /* slot: the Recorder wraps it itself (pending.c) */
        ct_state *st = (ct_state *)PyModule_GetState(fp->module_ref);
        ct_deferred d;
        memset(&d, 0, sizeof d);
        d.done = 1; /* nothing recorded: only timed */
        d.flat = ct_flat_run_new(flat);
        if (!d.flat)
            return res;
        PyObject *w = ct_pending_wrap(
            st, res, &d, fp->body == FLAT_BODY_COROUTINE ? KIND_COROUTINE : KIND_GENERATOR);
        if (!w) { /* runs untimed */
            PyErr_Clear();
            ct_flat_run_free(d.flat);
            return res;
        }
        Py_DECREF(res); /* the wrapper holds it */
        return w;
    }
    flat_stack *s = fp->code ? stack_get() : NULL;
    size_t depth = s && act_push(s, fp->code) ? s->n : 0;
    /* with no activation of its own, the rewrite's calls would land in the one below */
    PyObject *run = depth ? fp->run : fp->func;
    if (depth && uses_events(fp))
        hook_on(s);
    uint64_t start = ct_now_ns();
    PyObject *res = PyObject_Vectorcall(run, args, nargsf, kwnames);
    uint64_t end = ct_now_ns();
    flat_act *a = NULL;
    if (depth) {
        unwind_to(s, depth);
        a = &s->v[depth - 1]; /* found again: inner activations may have moved it */
        flat_act_close(a, end);
    }
    PyObject *exc = res ? NULL : ct_fetch_exc();
    if (depth)
        hook_off(s); /* before any code of the report runs */
    if (a && slot)
        flat_emit_children(fp, a, slot);
    flat_report(fp, a, end - start);
    if (depth)
        act_pop(s);
    if (PyErr_Occurred()) { /* a KeyboardInterrupt in a callback */
        Py_XDECREF(exc);
        Py_CLEAR(res);
        return NULL;
    }
    ct_restore_exc(exc);
    return res;
}

static PyObject *Flat_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf,
                                 PyObject *kwnames)
{
    return ct_flat_call(op, args, nargsf, kwnames, NULL);
}

int ct_flat_check(ct_state *st, PyObject *o)
{
    return PyObject_TypeCheck(o, st->type.FlatProfile);
}

/* ---- the type ------------------------------------------------------------------ */

/* FlatProfile(func, result_cls, limit=None, below=None, above=None,
 * logger=None, below_level=0, above_level=0, ignore_builtins=False,
 * only=None, ignore=None, kind=0, run=None): `run`, when given, is func's
 * call-site rewrite (called instead of func, with no event set). */
static PyObject *Flat_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {
        "func",        "result_cls", "limit",  "below",           "above", "logger", "below_level",
        "above_level", "only",       "ignore", "ignore_builtins", "kind",  "run",    NULL};
    PyObject *func, *result_cls, *limit = Py_None, *below = Py_None, *above = Py_None;
    PyObject *logger = Py_None, *only = Py_None, *ignore = Py_None, *run = Py_None;
    int below_level = 0, above_level = 0, ignore_builtins = 0, kind = FLAT_FUNCTION;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|OOOOiiOOpiO:FlatProfile", kwlist, &func,
                                     &result_cls, &limit, &below, &above, &logger, &below_level,
                                     &above_level, &only, &ignore, &ignore_builtins, &kind, &run))
        return NULL;
    PyObject *module = PyType_GetModule(type);
    ct_state *st = module ? (ct_state *)PyModule_GetState(module) : NULL;
    if (!st)
        return NULL;
    double lim = -1;
    if (limit != Py_None && (lim = PyFloat_AsDouble(limit)) < 0) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "flat_profile: limit must be 0 or more seconds, not %R",
                         limit);
        return NULL;
    }
    FlatProfile *fp = (FlatProfile *)type->tp_alloc(type, 0);
    if (!fp)
        return NULL;
    fp->vectorcall = Flat_vectorcall;
    fp->module_ref = Py_NewRef(module);
    fp->func = Py_NewRef(func);
    fp->run = Py_NewRef(run == Py_None ? func : run);
    fp->result_cls = Py_NewRef(result_cls);
    fp->below = Py_NewRef(below);
    fp->above = Py_NewRef(above);
    fp->logger = Py_NewRef(logger);
    if (!(fp->is_enabled = PyUnicode_InternFromString("isEnabledFor")) ||
        !(fp->str_disabled = PyUnicode_InternFromString("disabled")))
        goto error;
    if (logger != Py_None) {
        /* logging answers isEnabledFor from the logger's _cache, cleared in
         * place when levels change: read there first (flat_out.c gate_open) */
        PyObject *cache = PyObject_GetAttrString(logger, "_cache");
        PyObject *dict = PyObject_GetAttrString(logger, "__dict__");
        PyErr_Clear();
        if (cache && PyDict_CheckExact(cache) && dict && PyDict_Check(dict)) {
            fp->log_cache = Py_NewRef(cache);
            fp->log_dict = Py_NewRef(dict);
        }
        Py_XDECREF(cache);
        Py_XDECREF(dict);
    }
    fp->limit = lim;
    fp->below_level = below_level;
    fp->above_level = above_level;
    fp->ignore_builtins = ignore_builtins;
    fp->wrap_kind = kind;
    if ((only != Py_None && !(fp->keep = PyFrozenSet_New(only))) ||
        (ignore != Py_None && !(fp->drop = PyFrozenSet_New(ignore))))
        goto error;
    if (PyFunction_Check(func)) {
        PyObject *code = PyFunction_GET_CODE(func);
        int flags = ((PyCodeObject *)code)->co_flags;
        fp->body = (flags & CO_COROUTINE)   ? FLAT_BODY_COROUTINE
                   : (flags & CO_GENERATOR) ? FLAT_BODY_GENERATOR
                                            : FLAT_BODY_PLAIN;
        if (run != Py_None && (fp->body != FLAT_BODY_PLAIN || !PyCallable_Check(run))) {
            PyErr_Format(PyExc_TypeError,
                         "FlatProfile: run= is the call-site rewrite of a plain function, not %R",
                         run);
            goto error;
        }
        if (flags & CO_ASYNC_GENERATOR) {
            PyErr_Format(PyExc_TypeError,
                         "flat_profile: %R is an async generator function, which flat_profile"
                         " does not profile",
                         func);
            goto error;
        }
        /* fp->code only once counted: release_code takes off what was set */
        if (FLAT_SYSMON && uses_events(fp) && code_count(st, module, code, 1) < 0)
            goto error;
        fp->code = Py_NewRef(code);
    }
    return (PyObject *)fp;
error:
    Py_DECREF(fp);
    return NULL;
}

static int Flat_traverse(FlatProfile *fp, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(fp));
    Py_VISIT(fp->module_ref);
    Py_VISIT(fp->func);
    Py_VISIT(fp->run);
    Py_VISIT(fp->code);
    Py_VISIT(fp->result_cls);
    Py_VISIT(fp->below);
    Py_VISIT(fp->above);
    Py_VISIT(fp->logger);
    Py_VISIT(fp->log_cache);
    Py_VISIT(fp->log_dict);
    Py_VISIT(fp->keep);
    Py_VISIT(fp->drop);
    Py_VISIT(fp->dict);
    return 0;
}

/* Takes the CALL event off the code when this was its last profile. */
static void release_code(FlatProfile *fp)
{
    if (!FLAT_SYSMON || !fp->code || !fp->module_ref || !uses_events(fp))
        return;
    ct_state *st = (ct_state *)PyModule_GetState(fp->module_ref);
    PyObject *saved = ct_fetch_exc();
    if (st && code_count(st, fp->module_ref, fp->code, -1) < 0)
        PyErr_Clear(); /* at interpreter exit sys.monitoring may be gone */
    ct_restore_exc(saved);
}

static int Flat_clear(FlatProfile *fp)
{
    release_code(fp);
    Py_CLEAR(fp->code);
    Py_CLEAR(fp->module_ref);
    Py_CLEAR(fp->func);
    Py_CLEAR(fp->run);
    Py_CLEAR(fp->result_cls);
    Py_CLEAR(fp->below);
    Py_CLEAR(fp->above);
    Py_CLEAR(fp->logger);
    Py_CLEAR(fp->is_enabled);
    Py_CLEAR(fp->log_cache);
    Py_CLEAR(fp->log_dict);
    Py_CLEAR(fp->str_disabled);
    Py_CLEAR(fp->keep);
    Py_CLEAR(fp->drop);
    Py_CLEAR(fp->dict);
    return 0;
}

static void Flat_dealloc(FlatProfile *fp)
{
    PyTypeObject *tp = Py_TYPE(fp);
    PyObject_GC_UnTrack(fp);
    Flat_clear(fp);
    tp->tp_free((PyObject *)fp);
    Py_DECREF(tp);
}

static PyObject *Flat_descr_get(PyObject *self, PyObject *obj, PyObject *type)
{
    FlatProfile *fp = (FlatProfile *)self;
    if (fp->wrap_kind == FLAT_STATICMETHOD)
        return Py_NewRef(self);
    if (fp->wrap_kind == FLAT_CLASSMETHOD)
        return PyMethod_New(self, type ? type : (PyObject *)Py_TYPE(obj));
    if (obj == NULL || obj == Py_None)
        return Py_NewRef(self);
    return PyMethod_New(self, obj);
}

static PyObject *Flat_get_forwarded(FlatProfile *fp, void *name)
{
    return PyObject_GetAttrString(fp->func, (const char *)name);
}

static PyObject *Flat_get_wrapped(FlatProfile *fp, void *c)
{
    (void)c;
    return Py_NewRef(fp->func);
}

static PyObject *Flat_get_mechanism(FlatProfile *fp, void *c)
{
    (void)c;
    if (!fp->code)
        return Py_NewRef(Py_None);
    return PyUnicode_FromString(!uses_events(fp) ? "call sites"
                                : FLAT_SYSMON    ? "sys.monitoring"
                                                 : "profile hook");
}

static PyObject *Flat_get_limit(FlatProfile *fp, void *c)
{
    (void)c;
    return fp->limit >= 0 ? PyFloat_FromDouble(fp->limit) : Py_NewRef(Py_None);
}

static PyObject *Flat_getattro(PyObject *self, PyObject *name)
{
    PyObject *v = PyObject_GenericGetAttr(self, name);
    if (v || !PyErr_ExceptionMatches(PyExc_AttributeError))
        return v;
    PyErr_Clear();
    return PyObject_GetAttr(((FlatProfile *)self)->func, name);
}

static PyObject *Flat_repr(PyObject *self)
{
    PyObject *q = Flat_get_forwarded((FlatProfile *)self, "__qualname__");
    if (!q) {
        PyErr_Clear();
        return PyUnicode_FromFormat("<calltape.flat_profile of %R>", ((FlatProfile *)self)->func);
    }
    PyObject *out = PyUnicode_FromFormat("<calltape.flat_profile %S>", q);
    Py_DECREF(q);
    return out;
}

static PyGetSetDef Flat_getset[] = {
    {"__name__", (getter)Flat_get_forwarded, NULL, NULL, "__name__"},
    {"__qualname__", (getter)Flat_get_forwarded, NULL, NULL, "__qualname__"},
    {"__module__", (getter)Flat_get_forwarded, NULL, NULL, "__module__"},
    {"__doc__", (getter)Flat_get_forwarded, NULL, NULL, "__doc__"},
    {"__wrapped__", (getter)Flat_get_wrapped, NULL, NULL, NULL},
    {"limit", (getter)Flat_get_limit, NULL, "the limit in seconds, or None", NULL},
    {"mechanism", (getter)Flat_get_mechanism, NULL,
     "how inner calls are timed: 'call sites', 'sys.monitoring', 'profile hook' or None", NULL},
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef Flat_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(FlatProfile, vectorcall), READONLY, NULL},
    {"__dictoffset__", T_PYSSIZET, offsetof(FlatProfile, dict), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot Flat_slots[] = {
    {Py_tp_new, Flat_new},
    {Py_tp_dealloc, Flat_dealloc},
    {Py_tp_traverse, Flat_traverse},
    {Py_tp_clear, Flat_clear},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_descr_get, Flat_descr_get},
    {Py_tp_getattro, Flat_getattro},
    {Py_tp_getset, Flat_getset},
    {Py_tp_members, Flat_members},
    {Py_tp_repr, Flat_repr},
    {0, NULL},
};

PyType_Spec FlatProfile_spec = {
    .name = "calltape.FlatProfile",
    .basicsize = sizeof(FlatProfile),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .slots = Flat_slots,
};
