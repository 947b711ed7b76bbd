/*
 * replay.c - the Replayer type: re-executes recorded calls in today's code
 * and compares what they do now with what the tape says they did.
 *
 * For one call (any object with the public Call attributes: id, module,
 * qualname, outcome, args, bound, result, exception) it
 *   1. refuses (ReplayRefused) unless the Replayer trusts the tape or its
 *      allowlist covers the function's module: replaying runs code;
 *   2. resolves module + qualname to the callable once per function
 *      (cached; resolve.c): imports the module as the recorded program did
 *      (a function of a script run as __main__ from that script's file),
 *      walks the qualname, takes the raw class attribute for methods, and
 *      unwraps @calltape.record (Recorder.__wrapped__), classmethod and
 *      staticmethod, so the original function is called with the recorded
 *      bound arguments, `self` or `cls` included; while a call of a script
 *      is replayed, the script's module stands in for sys.modules["__main__"]
 *      so that values of its classes rebuild;
 *   3. skips, with a reason, what cannot be replayed faithfully: a function
 *      that cannot be imported or has moved, a nested function, arguments
 *      not recorded or recorded as markers, a signature that no longer binds
 *      the recorded arguments, a recorded result that is a marker, a
 *      generator closed early;
 *   4. calls it with recording suspended on this thread (unless record_tape
 *      is set: then the function is wrapped by a Recorder writing to that
 *      tape), runs generators to the end (collecting what they yield) and
 *      coroutines and async generators through the Python helpers given;
 *      optionally with recorded module globals patched in and restored
 *      afterwards, on every path;
 *   5. compares (compare.c) and returns an Outcome built by the Python class
 *      given: status passed, changed (returns something else), failed
 *      (raises where it did not, or another exception), skipped.
 *
 * Invariants: one call never raises out of replay() except ReplayRefused,
 * KeyboardInterrupt and memory errors; the thread's recording context, the
 * patched globals and sys.modules["__main__"] are restored on every exit
 * path.
 */
#include "reader.h"
#include "recorder.h"

#include <math.h>

enum { ST_PASSED, ST_CHANGED, ST_FAILED, ST_SKIPPED };
static const char *const status_names[] = {"passed", "changed", "failed", "skipped"};
/* The Call attributes replay reads, interned once per Replayer. */
enum {
    A_ID,
    A_MODULE,
    A_QUALNAME,
    A_OUTCOME,
    A_EXCEPTION,
    A_RESULT,
    A_ARGS,
    A_BOUND,
    A_KWARGS,
    A_GLOBALS,
    A_YIELDED,
    A_FILE,
    A_FUNC,
    A_PARAMETERS,
    A_COUNT
};
static const char *const attr_names[] = {"id",      "module", "qualname", "outcome",   "exception",
                                         "result",  "args",   "bound",    "kwargs",    "globals",
                                         "yielded", "file",   "func",     "parameters"};

typedef struct Replayer {
    PyObject_HEAD ct_state *st;
    PyObject *module_ref;
    PyObject *outcome_type;  /* callable(call_id, function, status, result, expected,
                                exception, duration, diff, reason, yielded) */
    PyObject *run_coroutine; /* callable(coroutine) -> its result */
    PyObject *run_asyncgen;  /* callable(async generator) -> list of values */
    PyObject *allow;         /* tuple of module prefixes */
    PyObject *record_tape;   /* str, or NULL: do not record */
    PyObject *cache;         /* dict (module, qualname) -> entry tuple */
    PyObject *status[4];     /* "passed", "changed", "failed", "skipped" */
    PyObject *attr[A_COUNT]; /* attribute names */
    double rel, abs;
    int trust;
    int recorded_globals; /* patch call.globals in for each call */
} Replayer;

/* A cache entry: (callable or None, kind, function or None, varnames or
 * None, "module.qualname", reason or None, the script module standing in
 * for __main__ or None): callable None means the function cannot be
 * replayed, for `reason`. */
enum { E_CALLABLE, E_KIND, E_FN, E_NAMES, E_NAME, E_REASON, E_MAIN, E_SIZE };

static int module_covered(PyObject *allow, PyObject *module)
{
    const char *mod = PyUnicode_AsUTF8(module);
    if (!mod)
        return -1;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(allow); i++) {
        const char *a = PyUnicode_AsUTF8(PyTuple_GET_ITEM(allow, i));
        if (!a)
            return -1;
        size_t n = strlen(a);
        if (strncmp(mod, a, n) == 0 && (mod[n] == 0 || mod[n] == '.'))
            return 1;
    }
    return 0;
}

static int check_allowed(Replayer *self, PyObject *module)
{
    if (self->trust)
        return 0;
    int ok = module_covered(self->allow, module);
    if (ok)
        return ok < 0 ? -1 : 0;
    PyObject *cls = ct_marker_type(self->st, "ReplayRefused");
    PyErr_Format(cls ? cls : PyExc_PermissionError,
                 "refusing to replay calls of module %U: replaying runs its code, so open the"
                 " tape with trust=True or allow=['%U'] (command line: --trust or --allow %U)",
                 module, module, module);
    return -1;
}

/* ---- resolving module + qualname (resolve.c) ----------------------------- */

/* "ExcType: message" of the pending exception, which is cleared. */
static PyObject *describe_pending(void)
{
    PyObject *exc = ct_fetch_exc();
    if (!exc)
        return PyUnicode_FromString("unknown error");
    PyObject *r = PyUnicode_FromFormat("%s: %S", Py_TYPE(exc)->tp_name, exc);
    Py_DECREF(exc);
    if (!r)
        PyErr_Clear();
    return r ? r : PyUnicode_FromString("error");
}

/* The uniform cache entry for module.qualname (recorded in `file`).  New
 * reference or NULL. */
static PyObject *resolve(ct_state *st, PyObject *record_tape, PyObject *module, PyObject *qualname,
                         PyObject *file)
{
    PyObject *raw = ct_resolve(st, record_tape, module, qualname, file);
    if (!raw)
        return NULL;
    PyObject *name = PyUnicode_FromFormat("%U.%U", module, qualname);
    PyObject *out = NULL;
    if (name && PyUnicode_Check(raw))
        out = Py_BuildValue("(OiOOOOO)", Py_None, KIND_PLAIN, Py_None, Py_None, name, raw, Py_None);
    else if (name)
        out = Py_BuildValue("(OOOOOOO)", PyTuple_GET_ITEM(raw, CT_R_CALLABLE),
                            PyTuple_GET_ITEM(raw, CT_R_KIND), PyTuple_GET_ITEM(raw, CT_R_FN),
                            PyTuple_GET_ITEM(raw, CT_R_NAMES), name, Py_None,
                            PyTuple_GET_ITEM(raw, CT_R_MAIN));
    Py_XDECREF(name);
    Py_DECREF(raw);
    return out;
}

/* ---- checks before the call ---------------------------------------------- */

/* Returns a str reason when the recorded arguments no longer bind to the
 * parameters of function `fn` (names: its varnames), NULL when they do (or
 * NULL with an exception). */
static PyObject *bind_problem(PyObject *fn, PyObject *names, PyObject *args, PyObject *kwargs)
{
    PyCodeObject *co = (PyCodeObject *)PyFunction_GetCode(fn);
    Py_ssize_t argc = co->co_argcount, posonly = co->co_posonlyargcount;
    Py_ssize_t kwonly = co->co_kwonlyargcount, nparams = argc + kwonly;
    int varargs = (co->co_flags & CO_VARARGS) != 0, varkw = (co->co_flags & CO_VARKEYWORDS) != 0;
    Py_ssize_t nargs = PyTuple_GET_SIZE(args);
    uint8_t filled[256];
    if (nparams > (Py_ssize_t)sizeof filled)
        return NULL; /* unusual: the call itself will tell */
    memset(filled, 0, sizeof filled);
    if (nargs > argc && !varargs)
        return PyUnicode_FromFormat("the signature no longer binds the recorded arguments: it"
                                    " takes %zd positional arguments, %zd were recorded",
                                    argc, nargs);
    for (Py_ssize_t i = 0; i < nargs && i < argc; i++)
        filled[i] = 1;
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (kwargs && PyDict_Next(kwargs, &pos, &key, &value)) {
        Py_ssize_t j = -1;
        for (Py_ssize_t i = posonly; i < nparams && j < 0; i++) {
            int eq = PyUnicode_Compare(PyTuple_GET_ITEM(names, i), key);
            if (eq == -1 && PyErr_Occurred())
                return NULL;
            if (eq == 0)
                j = i;
        }
        if (j < 0 && !varkw)
            return PyUnicode_FromFormat("the signature no longer binds the recorded arguments:"
                                        " it has no parameter %R any more",
                                        key);
        if (j >= 0 && filled[j])
            return PyUnicode_FromFormat("the signature no longer binds the recorded arguments:"
                                        " %R would get two values",
                                        key);
        if (j >= 0)
            filled[j] = 1;
    }
    PyObject *defaults = PyFunction_GetDefaults(fn);
    PyObject *kwdefaults = PyFunction_GetKwDefaults(fn);
    Py_ssize_t ndef = defaults ? PyTuple_GET_SIZE(defaults) : 0;
    for (Py_ssize_t i = 0; i < nparams; i++) {
        if (filled[i] || (i < argc && i >= argc - ndef))
            continue;
        PyObject *name = PyTuple_GET_ITEM(names, i);
        if (i >= argc && kwdefaults) {
            int has = PyDict_Contains(kwdefaults, name);
            if (has < 0)
                return NULL;
            if (has)
                continue;
        }
        return PyUnicode_FromFormat("the signature no longer binds the recorded arguments: the"
                                    " required parameter %R was not recorded",
                                    name);
    }
    return NULL;
}

/* 1 when `v` is (or holds, at any depth, inside lists, tuples, sets, dicts
 * and the attributes of objects) a marker of a value that was not
 * recorded; *found then names it (borrowed).  `seen` (a set of ids, or
 * NULL at the top) keeps shared and cyclic values from being walked twice. */
static int find_marker_in(ct_state *st, PyObject *v, PyObject **found, int depth, PyObject *seen)
{
    static const char *const names[] = {"Redacted", "Truncated", "Unencodable"};
    for (int i = 0; i < 3; i++) {
        PyObject *cls = ct_marker_type(st, names[i]);
        if (cls && Py_TYPE(v) == (PyTypeObject *)cls) {
            *found = v;
            return 1;
        }
    }
    if (depth > WIRE_MAX_DEPTH || PyUnicode_Check(v) || PyLong_Check(v) || PyFloat_Check(v))
        return 0;
    PyObject *id = PyLong_FromVoidPtr(v);
    int fresh = id ? PySet_Contains(seen, id) == 0 && PySet_Add(seen, id) == 0 : 0;
    Py_XDECREF(id);
    PyErr_Clear();
    if (!fresh)
        return 0;
    PyObject *items = NULL, *k, *x;
    Py_ssize_t pos = 0;
    int hit = 0;
    if (PyList_Check(v) || PyTuple_Check(v)) {
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(v) && !hit; i++)
            hit = find_marker_in(st, PySequence_Fast_GET_ITEM(v, i), found, depth + 1, seen);
    } else if (PyDict_Check(v)) {
        while (!hit && PyDict_Next(v, &pos, &k, &x))
            hit = find_marker_in(st, k, found, depth + 1, seen) ||
                  find_marker_in(st, x, found, depth + 1, seen);
    } else if (PyAnySet_Check(v)) {
        items = PySequence_List(v);
    } else if (Py_TYPE(v)->tp_dictoffset != 0 || (Py_TYPE(v)->tp_flags & Py_TPFLAGS_MANAGED_DICT)) {
        items = PyObject_GenericGetDict(v, NULL);
    }
    if (items && !hit)
        hit = find_marker_in(st, items, found, depth + 1, seen);
    Py_XDECREF(items);
    if (!hit && Py_TYPE(v)->tp_dealloc == st->subtype_dealloc) {
        PyObject *slots = ct_slot_values(st, v);
        hit = slots && find_marker_in(st, slots, found, depth + 1, seen);
        Py_XDECREF(slots);
    }
    PyErr_Clear();
    return hit;
}

static int find_marker(ct_state *st, PyObject *v, PyObject **found, int depth)
{
    PyObject *seen = PySet_New(NULL);
    int hit = seen ? find_marker_in(st, v, found, depth, seen) : 0;
    Py_XDECREF(seen);
    PyErr_Clear();
    return hit;
}

/* ---- the call ------------------------------------------------------------ */

/* Patches `patch` into `globals`; fills `saved` (name -> old value) and
 * `absent` (names not there before).  Returns 0 or -1. */
static int patch_globals(PyObject *globals, PyObject *patch, PyObject *saved, PyObject *absent)
{
    PyObject *name, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(patch, &pos, &name, &value)) {
        PyObject *old = PyDict_GetItemWithError(globals, name);
        if (!old && PyErr_Occurred())
            return -1;
        if (old ? PyDict_SetItem(saved, name, old) : PyList_Append(absent, name))
            return -1;
        if (PyDict_SetItem(globals, name, value) < 0)
            return -1;
    }
    return 0;
}

/* Puts back what patch_globals() replaced.  Never fails; keeps a pending
 * exception. */
static void restore_globals(PyObject *globals, PyObject *saved, PyObject *absent)
{
    PyObject *exc = ct_fetch_exc();
    PyObject *name, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(saved, &pos, &name, &value))
        if (PyDict_SetItem(globals, name, value) < 0)
            PyErr_Clear();
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(absent); i++)
        if (PyDict_DelItem(globals, PyList_GET_ITEM(absent, i)) < 0)
            PyErr_Clear();
    ct_restore_exc(exc);
}

/* Runs a generator to its end: *yielded gets the list of values.  Returns
 * the return value (new reference) or NULL with an exception. */
static PyObject *drain(PyObject *gen, PyObject **yielded)
{
    PyObject *list = PyList_New(0);
    if (!list)
        return NULL;
    for (;;) {
        PyObject *v = NULL;
        PySendResult r = PyIter_Send(gen, Py_None, &v);
        if (r == PYGEN_NEXT) {
            int rc = PyList_Append(list, v);
            Py_DECREF(v);
            if (rc < 0)
                break;
            continue;
        }
        if (r == PYGEN_RETURN) {
            *yielded = list;
            return v;
        }
        break;
    }
    Py_DECREF(list);
    return NULL;
}

/* Calls the entry with the arguments; the outcome goes to *result or to
 * *exc (new references), *yielded for generators.  Returns -1 only for a
 * KeyboardInterrupt, which is left pending. */
static int run_call(Replayer *self, PyObject *entry, PyObject *args, PyObject *kwargs,
                    PyObject *patch, PyObject **result, PyObject **exc, PyObject **yielded,
                    uint64_t *duration)
{
    PyObject *callable = PyTuple_GET_ITEM(entry, E_CALLABLE);
    int kind = (int)PyLong_AsLong(PyTuple_GET_ITEM(entry, E_KIND));
    PyObject *fn = PyTuple_GET_ITEM(entry, E_FN);
    PyObject *saved = NULL, *absent = NULL, *globals = NULL;
    if (patch && fn != Py_None) {
        globals = PyFunction_GetGlobals(fn);
        saved = PyDict_New();
        absent = PyList_New(0);
        if (!saved || !absent || patch_globals(globals, patch, saved, absent) < 0) {
            if (saved && absent)
                restore_globals(globals, saved, absent);
            Py_XDECREF(saved);
            Py_XDECREF(absent);
            *exc = ct_fetch_exc();
            return 0;
        }
    }
    ct_thread *t = ct_thread_get();
    int quiet = self->record_tape == NULL;
    if (quiet)
        t->busy++;
    uint64_t start = ct_now_ns();
    PyObject *r = PyObject_Call(callable, args, kwargs);
    if (r && kind == KIND_GENERATOR && PyIter_Check(r)) {
        Py_SETREF(r, drain(r, yielded));
    } else if (r && kind == KIND_COROUTINE) {
        Py_SETREF(r, PyObject_CallOneArg(self->run_coroutine, r));
    } else if (r && kind == KIND_ASYNC_GENERATOR) {
        PyObject *values = PyObject_CallOneArg(self->run_asyncgen, r);
        Py_SETREF(r, values ? Py_NewRef(Py_None) : NULL);
        *yielded = values;
    }
    *duration = ct_now_ns() - start;
    if (quiet)
        t->busy--;
    if (saved) {
        restore_globals(globals, saved, absent);
        Py_DECREF(saved);
        Py_DECREF(absent);
    }
    if (r) {
        *result = r;
        return 0;
    }
    if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
        return -1;
    *exc = ct_fetch_exc();
    return 0;
}

/* "module.Qualname" of an exception's type, as the recorder writes it. */
static PyObject *exc_type_name(PyObject *exc)
{
    PyTypeObject *tp = Py_TYPE(exc);
    PyObject *mod = PyObject_GetAttrString((PyObject *)tp, "__module__");
    PyObject *qual = PyObject_GetAttrString((PyObject *)tp, "__qualname__");
    PyObject *full = NULL;
    if (mod && qual && PyUnicode_Check(mod) && PyUnicode_Check(qual))
        full = PyUnicode_FromFormat("%U.%U", mod, qual);
    PyErr_Clear();
    Py_XDECREF(mod);
    Py_XDECREF(qual);
    return full ? full : PyUnicode_FromString(tp->tp_name);
}

static PyObject *exc_message(PyObject *exc)
{
    PyObject *msg = PyObject_Str(exc);
    if (!msg) {
        PyErr_Clear();
        return PyUnicode_FromString("<str() failed>");
    }
    if (PyUnicode_GET_LENGTH(msg) > 2000) /* the recorder keeps 2000 characters */
        Py_SETREF(msg, PyUnicode_Substring(msg, 0, 2000));
    return msg;
}

/* ---- the Replayer type --------------------------------------------------- */

static PyObject *Replayer_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {
        "outcome", "run_coroutine", "run_asyncgen",     "trust", "allow", "rel",
        "abs",     "record_tape",   "recorded_globals", NULL};
    PyObject *outcome, *run_coro, *run_agen, *allow = NULL, *record_tape = NULL;
    int trust = 0, recorded_globals = 0;
    double rel = 0.0, abs_tol = 0.0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO|$pOddOp:Replayer", kwlist, &outcome, &run_coro,
                                     &run_agen, &trust, &allow, &rel, &abs_tol, &record_tape,
                                     &recorded_globals))
        return NULL;
    if (ct_check_tolerance(rel, abs_tol) < 0)
        return NULL;
    PyObject *allow_t = allow && allow != Py_None ? PySequence_Tuple(allow) : PyTuple_New(0);
    if (!allow_t)
        return NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(allow_t); i++) {
        if (!PyUnicode_Check(PyTuple_GET_ITEM(allow_t, i))) {
            PyErr_Format(PyExc_TypeError, "allow must hold module names (str), not %R",
                         PyTuple_GET_ITEM(allow_t, i));
            Py_DECREF(allow_t);
            return NULL;
        }
    }
    Replayer *self = (Replayer *)type->tp_alloc(type, 0);
    if (!self) {
        Py_DECREF(allow_t);
        return NULL;
    }
    PyObject *m = PyType_GetModule(type);
    self->st = PyModule_GetState(m);
    self->module_ref = Py_NewRef(m);
    self->outcome_type = Py_NewRef(outcome);
    self->run_coroutine = Py_NewRef(run_coro);
    self->run_asyncgen = Py_NewRef(run_agen);
    self->allow = allow_t;
    self->record_tape = record_tape && record_tape != Py_None ? Py_NewRef(record_tape) : NULL;
    self->cache = PyDict_New();
    self->rel = rel;
    self->abs = abs_tol;
    self->trust = trust;
    self->recorded_globals = recorded_globals;
    for (int i = 0; i < 4; i++) {
        self->status[i] = PyUnicode_InternFromString(status_names[i]);
        if (!self->status[i]) {
            Py_DECREF(self);
            return NULL;
        }
    }
    for (int i = 0; i < A_COUNT; i++) {
        self->attr[i] = PyUnicode_InternFromString(attr_names[i]);
        if (!self->attr[i]) {
            Py_DECREF(self);
            return NULL;
        }
    }
    if (!self->cache) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int Replayer_traverse(Replayer *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->module_ref);
    Py_VISIT(self->outcome_type);
    Py_VISIT(self->run_coroutine);
    Py_VISIT(self->run_asyncgen);
    Py_VISIT(self->allow);
    Py_VISIT(self->record_tape);
    Py_VISIT(self->cache);
    for (int i = 0; i < 4; i++)
        Py_VISIT(self->status[i]);
    for (int i = 0; i < A_COUNT; i++)
        Py_VISIT(self->attr[i]);
    return 0;
}

static int Replayer_clear(Replayer *self)
{
    Py_CLEAR(self->module_ref);
    Py_CLEAR(self->outcome_type);
    Py_CLEAR(self->run_coroutine);
    Py_CLEAR(self->run_asyncgen);
    Py_CLEAR(self->allow);
    Py_CLEAR(self->record_tape);
    Py_CLEAR(self->cache);
    for (int i = 0; i < 4; i++)
        Py_CLEAR(self->status[i]);
    for (int i = 0; i < A_COUNT; i++)
        Py_CLEAR(self->attr[i]);
    return 0;
}

static void Replayer_dealloc(Replayer *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Replayer_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *Replayer_check(Replayer *self, PyObject *module)
{
    if (!PyUnicode_Check(module))
        return PyErr_Format(PyExc_TypeError, "module must be a str, not %R", module);
    if (check_allowed(self, module) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* The cached entry (borrowed) for module.qualname recorded in `file`. */
static PyObject *lookup(Replayer *self, PyObject *module, PyObject *qualname, PyObject *file)
{
    PyObject *key = PyTuple_Pack(3, module, qualname, file);
    if (!key)
        return NULL;
    PyObject *entry = PyDict_GetItemWithError(self->cache, key);
    if (!entry && !PyErr_Occurred()) {
        PyObject *fresh = resolve(self->st, self->record_tape, module, qualname, file);
        if (fresh && PyDict_SetItem(self->cache, key, fresh) == 0)
            entry = fresh; /* the cache keeps it alive */
        Py_XDECREF(fresh);
    }
    Py_DECREF(key);
    return entry;
}

/* Stands `script` (a module) in for sys.modules["__main__"] while a call of
 * the script is replayed, so that values of its classes rebuild; returns
 * the module it replaced (new reference; Py_None when there was none), or
 * NULL with an exception. */
static PyObject *main_swap(PyObject *script)
{
    PyObject *modules = PyImport_GetModuleDict(); /* borrowed */
    PyObject *old = PyDict_GetItemString(modules, "__main__");
    old = Py_NewRef(old ? old : Py_None);
    if (PyDict_SetItemString(modules, "__main__", script) < 0)
        Py_CLEAR(old);
    return old;
}

/* Puts back what main_swap() replaced (`old` is consumed).  Keeps a pending
 * exception. */
static void main_restore(PyObject *old)
{
    PyObject *exc = ct_fetch_exc();
    PyObject *modules = PyImport_GetModuleDict();
    if ((old == Py_None ? PyDict_DelItemString(modules, "__main__")
                        : PyDict_SetItemString(modules, "__main__", old)) < 0)
        PyErr_Clear();
    Py_DECREF(old);
    ct_restore_exc(exc);
}

/* Builds the Outcome.  Steals nothing. */
static PyObject *make_outcome(Replayer *self, PyObject *call_id, PyObject *function, int status,
                              PyObject *result, PyObject *expected, PyObject *exc, double duration,
                              PyObject *diff, PyObject *reason, PyObject *yielded)
{
    PyObject *st = self->status[status];
    PyObject *dur = duration >= 0 ? PyFloat_FromDouble(duration) : Py_NewRef(Py_None);
    if (!dur)
        return NULL;
#define OR_NONE(x) ((x) ? (x) : Py_None)
    PyObject *argv[10] = {call_id,           function,        st,  OR_NONE(result),
                          OR_NONE(expected), OR_NONE(exc),    dur, OR_NONE(diff),
                          OR_NONE(reason),   OR_NONE(yielded)};
#undef OR_NONE
    PyObject *out = PyObject_Vectorcall(self->outcome_type, argv, 10, NULL);
    Py_DECREF(dur);
    return out;
}

/* A skipped outcome whose reason is the pending exception (cleared).  A
 * damaged tape (TapeError) is not a reason to skip: it stays pending and
 * NULL is returned, as for KeyboardInterrupt and MemoryError. */
static PyObject *skip_pending(Replayer *self, PyObject *call_id, PyObject *function,
                              const char *what)
{
    PyObject *damaged = ct_marker_type(self->st, "TapeError");
    if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt) ||
        PyErr_ExceptionMatches(PyExc_MemoryError) || (damaged && PyErr_ExceptionMatches(damaged)))
        return NULL;
    PyObject *why = describe_pending();
    PyObject *reason = why ? PyUnicode_FromFormat("%s: %U", what, why) : NULL;
    Py_XDECREF(why);
    if (!reason)
        return NULL;
    PyObject *out =
        make_outcome(self, call_id, function, ST_SKIPPED, NULL, NULL, NULL, -1, NULL, reason, NULL);
    Py_DECREF(reason);
    return out;
}

/* A generator recorded with yields=True: compares what it yielded then
 * (call.yielded; when it ends in a Truncated marker, only the values kept)
 * with what it yields now.  Returns 0 when the same or not recorded, 1 with
 * *diff set when not, -1 with an exception. */
static int compare_yields(Replayer *self, PyObject *call, PyObject *now, PyObject **diff)
{
    PyObject *then = PyObject_GetAttr(call, self->attr[A_YIELDED]);
    if (!then) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return -1;
        PyErr_Clear(); /* a Call without yielded */
        return 0;
    }
    int rc = 0;
    if (PyList_Check(then)) {
        Py_ssize_t n = PyList_GET_SIZE(then);
        PyObject *cls = ct_marker_type(self->st, "Truncated");
        PyObject *a = NULL, *b = NULL;
        if (n && cls && PyObject_TypeCheck(PyList_GET_ITEM(then, n - 1), (PyTypeObject *)cls)) {
            a = PyList_GetSlice(then, 0, n - 1);
            b = PyList_GetSlice(now, 0, n - 1);
        } else {
            a = Py_NewRef(then);
            b = Py_NewRef(now);
        }
        rc = a && b ? ct_compare(self->st, a, b, self->rel, self->abs, "yielded", diff) : -1;
        Py_XDECREF(a);
        Py_XDECREF(b);
    }
    Py_DECREF(then);
    return rc;
}

/* Replays `call` whose function's cache entry is `entry` (borrowed).
 * Returns the Outcome, or NULL with an exception. */
static PyObject *replay_entry(Replayer *self, PyObject *call, PyObject *call_id, PyObject *entry,
                              Py_ssize_t nparams)
{
    ct_state *st = self->st;
    PyObject *patch = NULL, *function = NULL;
    PyObject *outcome = NULL, *expected = NULL, *named = NULL, *bound = NULL;
    PyObject *pargs = NULL, *pkwargs = NULL, *reason = NULL, *result = NULL, *exc = NULL;
    PyObject *yielded = NULL, *diff = NULL, *out = NULL;
    int status = ST_SKIPPED;
    double seconds = -1;

    function = Py_NewRef(PyTuple_GET_ITEM(entry, E_NAME));
    if (PyTuple_GET_ITEM(entry, E_REASON) != Py_None) {
        reason = Py_NewRef(PyTuple_GET_ITEM(entry, E_REASON));
        goto finish;
    }
    outcome = PyObject_GetAttr(call, self->attr[A_OUTCOME]);
    if (!outcome)
        goto error;
    if (PyUnicode_CompareWithASCIIString(outcome, "closed") == 0) {
        reason = PyUnicode_FromString("the recorded generator or coroutine was closed before it"
                                      " finished, so there is no outcome to compare");
        goto finish;
    }
    int raised = PyUnicode_CompareWithASCIIString(outcome, "raised") == 0;
    expected = PyObject_GetAttr(call, self->attr[raised ? A_EXCEPTION : A_RESULT]);
    if (!expected) {
        out = skip_pending(self, call_id, function, "the recorded outcome cannot be rebuilt");
        goto done;
    }
    PyObject *marker = NULL;
    if (!raised && find_marker(st, expected, &marker, 0)) {
        reason = PyUnicode_FromFormat("the recorded result is %R, so there is nothing to compare",
                                      marker);
        goto finish;
    }
    named = PyObject_GetAttr(call, self->attr[A_ARGS]);
    if (!named || !PyDict_Check(named)) {
        if (!named)
            out = skip_pending(self, call_id, function, "the recorded arguments cannot be rebuilt");
        else
            PyErr_SetString(PyExc_TypeError, "call.args must be a dict");
        goto done;
    }
    if (PyDict_GET_SIZE(named) == 0 && nparams > 0) {
        reason = PyUnicode_FromString("the arguments were not recorded (recorded with"
                                      " args=False)");
        goto finish;
    }
    PyObject *name, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(named, &pos, &name, &value)) {
        if (find_marker(st, value, &marker, 0)) {
            reason = PyUnicode_FromFormat("the argument %U was not recorded (%R)", name, marker);
            goto finish;
        }
    }
    if (self->recorded_globals) {
        patch = PyObject_GetAttr(call, self->attr[A_GLOBALS]);
        if (!patch) {
            out = skip_pending(self, call_id, function, "the recorded globals cannot be rebuilt");
            goto done;
        }
        if (!PyDict_Check(patch)) {
            reason = PyUnicode_FromString("the globals it read were not recorded (record it with"
                                          " globals=True to replay with globals='recorded')");
            goto finish;
        }
    }
    bound = PyObject_GetAttr(call, self->attr[A_BOUND]);
    if (!bound) {
        out = skip_pending(self, call_id, function, "the recorded arguments cannot be rebuilt");
        goto done;
    }
    pargs = PyObject_GetAttr(bound, self->attr[A_ARGS]);
    pkwargs = PyObject_GetAttr(bound, self->attr[A_KWARGS]);
    if (!pargs || !pkwargs || !PyTuple_Check(pargs) || !PyDict_Check(pkwargs)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "call.bound must have a tuple args, a dict kwargs");
        goto error;
    }
    PyObject *fn = PyTuple_GET_ITEM(entry, E_FN), *names = PyTuple_GET_ITEM(entry, E_NAMES);
    if (fn != Py_None) {
        reason = bind_problem(fn, names, pargs, pkwargs);
        if (reason || PyErr_Occurred())
            goto finish;
    }
    uint64_t ns = 0;
    if (run_call(self, entry, pargs, pkwargs, patch, &result, &exc, &yielded, &ns) < 0)
        goto error;
    seconds = (double)ns / 1e9;
    if (exc) {
        PyObject *tn = exc_type_name(exc), *msg = exc_message(exc);
        if (!tn || !msg) {
            Py_XDECREF(tn);
            Py_XDECREF(msg);
            goto error;
        }
        if (raised) {
            PyObject *et = PyObject_GetAttrString(expected, "type");
            PyObject *em = PyObject_GetAttrString(expected, "message");
            int same = et && em && PyUnicode_Check(et) && PyUnicode_Check(em) &&
                       PyUnicode_Compare(et, tn) == 0 && PyUnicode_Compare(em, msg) == 0;
            PyErr_Clear();
            status = same ? ST_PASSED : ST_FAILED;
            if (!same)
                diff = PyUnicode_FromFormat("exception: recorded %S: %S, raised now %U: %U", et, em,
                                            tn, msg);
            Py_XDECREF(et);
            Py_XDECREF(em);
        } else {
            status = ST_FAILED;
            diff = PyUnicode_FromFormat("raised %U: %U, recorded a result", tn, msg);
        }
        Py_DECREF(tn);
        Py_DECREF(msg);
        if (status == ST_FAILED && !diff)
            goto error;
    } else if (raised) {
        PyObject *et = PyObject_GetAttrString(expected, "type");
        PyObject *r = PyObject_Repr(result);
        if (et && r) {
            PyObject *cut = PyUnicode_GET_LENGTH(r) > 80 ? PyUnicode_Substring(r, 0, 77) : NULL;
            diff = PyUnicode_FromFormat("result: recorded a raise of %S, returned %U%s now", et,
                                        cut ? cut : r, cut ? "..." : "");
            Py_XDECREF(cut);
        }
        PyErr_Clear();
        Py_XDECREF(et);
        Py_XDECREF(r);
        status = ST_CHANGED;
        if (!diff)
            diff = PyUnicode_FromString("result: recorded a raise, returned now");
    } else {
        int rc = ct_compare(st, expected, result, self->rel, self->abs, "result", &diff);
        if (rc < 0)
            goto error;
        status = rc ? ST_CHANGED : ST_PASSED;
        if (rc == 0 && yielded && PyList_Check(yielded)) {
            rc = compare_yields(self, call, yielded, &diff);
            if (rc < 0)
                goto error;
            status = rc ? ST_CHANGED : ST_PASSED;
        }
    }
finish:
    if (PyErr_Occurred())
        goto error;
    out = make_outcome(self, call_id, function, status, result, expected, exc, seconds, diff,
                       reason, yielded);
    goto done;
error:
    Py_CLEAR(out);
done:
    Py_XDECREF(function);
    Py_XDECREF(outcome);
    Py_XDECREF(expected);
    Py_XDECREF(named);
    Py_XDECREF(patch);
    Py_XDECREF(bound);
    Py_XDECREF(pargs);
    Py_XDECREF(pkwargs);
    Py_XDECREF(reason);
    Py_XDECREF(result);
    Py_XDECREF(exc);
    Py_XDECREF(yielded);
    Py_XDECREF(diff);
    return out;
}

/* How many parameters the call's own function row has (call.func.parameters:
 * the row of the version of the function that made this call, not of a newer
 * one of the same name), -1 when the call does not say.  -2 with an
 * exception. */
static Py_ssize_t recorded_parameters(Replayer *self, PyObject *call)
{
    if (Py_TYPE(call) == self->st->Call_type)
        return ((ct_call *)call)->fn->nparams;
    PyObject *fn = PyObject_GetAttr(call, self->attr[A_FUNC]);
    PyObject *names = fn ? PyObject_GetAttr(fn, self->attr[A_PARAMETERS]) : NULL;
    Py_XDECREF(fn);
    if (!names) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return -2;
        PyErr_Clear(); /* a call-like object without its function row */
        return -1;
    }
    Py_ssize_t n = PyObject_Length(names);
    Py_DECREF(names);
    return n < 0 ? -2 : n;
}

static PyObject *Replayer_replay(Replayer *self, PyObject *call)
{
    Py_ssize_t nparams = recorded_parameters(self, call);
    if (nparams == -2)
        return NULL;
    PyObject *call_id = PyObject_GetAttr(call, self->attr[A_ID]);
    PyObject *module = PyObject_GetAttr(call, self->attr[A_MODULE]);
    PyObject *qualname = PyObject_GetAttr(call, self->attr[A_QUALNAME]);
    PyObject *file = PyObject_GetAttr(call, self->attr[A_FILE]);
    PyObject *out = NULL, *entry = NULL;
    if (!file && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear(); /* a call-like object without a file */
        file = Py_NewRef(Py_None);
    }
    if (!call_id || !module || !qualname || !file)
        goto done;
    if (!PyUnicode_Check(module) || !PyUnicode_Check(qualname)) {
        PyErr_SetString(PyExc_TypeError, "call.module and call.qualname must be str");
        goto done;
    }
    if (check_allowed(self, module) < 0) /* before the import runs any code */
        goto done;
    entry = lookup(self, module, qualname, file); /* borrowed */
    if (!entry)
        goto done;
    PyObject *script = PyTuple_GET_ITEM(entry, E_MAIN);
    PyObject *old_main = script != Py_None ? main_swap(script) : NULL;
    if (script != Py_None && !old_main)
        goto done;
    out = replay_entry(self, call, call_id, entry, nparams);
    if (old_main)
        main_restore(old_main);
done:
    Py_XDECREF(call_id);
    Py_XDECREF(module);
    Py_XDECREF(qualname);
    Py_XDECREF(file);
    return out;
}

/* The session this process records the replayed calls in, or None. */
static PyObject *Replayer_session(Replayer *self, PyObject *unused)
{
    (void)unused;
    if (!self->record_tape)
        Py_RETURN_NONE;
    ct_engine_slot *slot = ct_engine_for(self->st, self->record_tape);
    if (!slot)
        return NULL;
    engine_stats s;
    engine_get_stats(slot->eng, &s);
    if (!s.session_id)
        Py_RETURN_NONE;
    return PyLong_FromLongLong(s.session_id);
}

static PyMethodDef Replayer_methods[] = {
    {"session", (PyCFunction)Replayer_session, METH_NOARGS,
     "session() -> the session id the replayed calls were recorded in, or None"},
    {"check", (PyCFunction)Replayer_check, METH_O,
     "check(module): raise ReplayRefused unless calls of `module` may be replayed"},
    {"replay", (PyCFunction)Replayer_replay, METH_O,
     "replay(call) -> Outcome (judged by the call's own function row)"},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot Replayer_slots[] = {
    {Py_tp_new, Replayer_new},
    {Py_tp_dealloc, Replayer_dealloc},
    {Py_tp_traverse, Replayer_traverse},
    {Py_tp_clear, Replayer_clear},
    {Py_tp_methods, Replayer_methods},
    {Py_tp_doc, "Replayer(outcome, run_coroutine, run_asyncgen, *, trust=False, allow=(),"
                " rel=0.0, abs=0.0, record_tape=None, recorded_globals=False): re-executes recorded"
                " calls"},
    {0, NULL},
};

PyType_Spec Replayer_spec = {
    .name = "calltape._native.Replayer",
    .basicsize = sizeof(Replayer),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = Replayer_slots,
};
