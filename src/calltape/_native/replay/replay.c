/*
 * replay.c - the Replayer type: re-executes recorded calls in today's code
 * and compares what they do now with what the tape says they did.
 *
 * Replayer(tape, *, rel, abs, globals, record).run(calls) is what
 * Tape.replay runs (replay_tape.c: a Tape keeps one Replayer for replays
 * without options; calltape._replay.replay_calls makes one too), and
 * Call.replay runs the same for one call, returning its Outcome:
 *   1. a first pass over `calls` (a list, or a search, which streams again)
 *      refuses (ReplayRefused) before any call runs unless the tape is
 *      trusted or its allowlist covers every module: replaying runs code;
 *      and notes the sessions, whose folders are put in front of sys.path
 *      (as the recorded program had them) for the second pass;
 *   2. the second pass replays each call (no Call is kept alive: a lighter
 *      heap for the GC); for one call it
 *      - resolves module + qualname to the callable once per function
 *        (cached; resolve.c: imports the module as the recorded program
 *        did, unwraps @calltape.record and the descriptors); while a call of
 *        a script is replayed, the script's module stands in for
 *        sys.modules["__main__"] so that values of its classes rebuild;
 *      - skips, with a reason, what cannot be replayed faithfully: a
 *        function that cannot be imported or has moved (resolve.c), and
 *        what the recording or today's signature rules out (replay_judge.c:
 *        judged by the call's own function row, not by a newer version of
 *        the function of the same name);
 *      - calls it (replay_run.c) with recording suspended on this thread
 *        unless the replay records (record=True: the function is wrapped by
 *        a Recorder writing to the tape);
 *      - compares (replay_judge.c, compare.c) and builds an Outcome (its
 *        slots filled as Outcome.__init__ fills them, without its frame);
 *   3. returns a Report of the outcomes (and the session the replayed calls
 *      were recorded in).
 * Outcome and Report are Python classes (calltape._replay) handed to C by
 * Replayer.bind() when that module is imported, with the helpers that run
 * coroutines and async generators on a fresh event loop.  make-tests and
 * calltape.testing ask a Replayer too: skip_reason(call) (the recording's
 * rules), call(fn, ...) (how a call is run to its end) and raised(exc) (an
 * exception as the recorder names it).
 *
 * Invariants: one call never raises out of replay() except ReplayRefused,
 * TapeError, KeyboardInterrupt and memory errors; the thread's recording
 * context, the patched globals, sys.path and sys.modules["__main__"] are
 * restored on every exit path.
 */
#include "replay.h"

#include <structmember.h>

static const char *const status_names[RP_NSTATUS] = {"passed", "changed", "failed", "skipped"};
static const char *const attr_names[RP_A_COUNT] = {
    "id",     "module",  "qualname", "outcome", "exception", "result",     "args",   "bound",
    "kwargs", "globals", "yielded",  "file",    "func",      "parameters", "session"};
/* Outcome's fields, in the order Outcome() takes them (make_outcome). */
static const char *const outcome_fields[RP_OUTCOME_FIELDS] = {
    "call_id",   "function", "status", "result", "expected",
    "exception", "duration", "diff",   "reason", "yielded"};
/* The names under which Replayer.bind() keeps the Python side in the
 * module's dict of bound classes (ct_marker_type). */
static const char *const bound_names[] = {"Outcome", "Report", "_run_coroutine", "_run_asyncgen"};

/* A cache entry: (callable or None, kind, function or None, varnames or
 * None, "module.qualname", reason or None, the script module standing in
 * for __main__ or None): callable None means the function cannot be
 * replayed, for `reason`. */
enum { E_CALLABLE, E_KIND, E_FN, E_NAMES, E_NAME, E_REASON, E_MAIN, E_SIZE };

/* ---- may this module's code run? ----------------------------------------- */

/* 1 when `module` is one of `allow` (a tuple of str) or inside one of them, 0
 * when not, -1 with an exception set. */
static int module_covered(PyObject *allow, PyObject *module)
{
    Py_ssize_t n = 0, an = 0;
    const char *mod = PyUnicode_AsUTF8AndSize(module, &n);
    if (!mod)
        return -1;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(allow); i++) {
        const char *a = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(allow, i), &an);
        if (!a)
            return -1;
        if (ct_module_within(mod, (size_t)n, a, (size_t)an))
            return 1;
    }
    return 0;
}

static int check_allowed(rp_replayer *self, PyObject *module)
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

/* The cached entry (borrowed) for module.qualname recorded in `file`. */
static PyObject *lookup(rp_replayer *self, PyObject *module, PyObject *qualname, PyObject *file)
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

/* ---- one call ------------------------------------------------------------ */

/* How many parameters the call's own function row has (call.func.parameters:
 * the row of the version of the function that made this call, not of a newer
 * one of the same name), -1 when the call does not say.  -2 with an
 * exception. */
static Py_ssize_t recorded_parameters(rp_replayer *self, PyObject *call)
{
    if (Py_TYPE(call) == self->st->type.Call)
        return ((ct_call *)call)->fn->nparams;
    PyObject *fn = PyObject_GetAttr(call, self->attr[RP_A_FUNC]);
    PyObject *names = fn ? PyObject_GetAttr(fn, self->attr[RP_A_PARAMETERS]) : NULL;
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

/* Builds the Outcome.  Steals nothing. */
static PyObject *make_outcome(rp_replayer *self, PyObject *call_id, PyObject *function, int status,
                              const rp_ran *ran, PyObject *expected, PyObject *diff,
                              PyObject *reason)
{
    PyObject *name = self->status[status];
    PyObject *dur =
        status != RP_SKIPPED ? PyFloat_FromDouble((double)ran->ns / 1e9) : Py_NewRef(Py_None);
    if (!dur)
        return NULL;
#define OR_NONE(x) ((x) ? (x) : Py_None)
    PyObject *argv[RP_OUTCOME_FIELDS] = {
        call_id,           function, name,          OR_NONE(ran->result), OR_NONE(expected),
        OR_NONE(ran->exc), dur,      OR_NONE(diff), OR_NONE(reason),      OR_NONE(ran->yielded)};
#undef OR_NONE
    PyObject *out = NULL;
    if (!self->outcome_offset[0]) {
        out = PyObject_Vectorcall(self->outcome_type, argv, RP_OUTCOME_FIELDS, NULL);
    } else if ((out = ((PyTypeObject *)self->outcome_type)
                          ->tp_alloc((PyTypeObject *)self->outcome_type, 0))) {
        /* what Outcome.__init__ does, without its frame: each slot set */
        for (int i = 0; i < RP_OUTCOME_FIELDS; i++)
            *(PyObject **)((char *)out + self->outcome_offset[i]) = Py_NewRef(argv[i]);
    }
    Py_DECREF(dur);
    return out;
}

/* The recorded bound arguments (call.bound.args, .kwargs: new references).
 * Returns 0 (with *reason set when they cannot be rebuilt) or -1. */
static int bound_arguments(rp_replayer *self, PyObject *call, PyObject **pargs, PyObject **pkwargs,
                           PyObject **reason)
{
    PyObject *bound = PyObject_GetAttr(call, self->attr[RP_A_BOUND]);
    if (!bound) {
        PyObject *damaged = ct_marker_type(self->st, "TapeError");
        if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt) ||
            PyErr_ExceptionMatches(PyExc_MemoryError) ||
            (damaged && PyErr_ExceptionMatches(damaged)))
            return -1;
        PyObject *exc = ct_fetch_exc();
        *reason = exc ? PyUnicode_FromFormat("the recorded arguments cannot be rebuilt: %s: %S",
                                             Py_TYPE(exc)->tp_name, exc)
                      : NULL;
        Py_XDECREF(exc);
        return *reason ? 0 : -1;
    }
    *pargs = PyObject_GetAttr(bound, self->attr[RP_A_ARGS]);
    *pkwargs = PyObject_GetAttr(bound, self->attr[RP_A_KWARGS]);
    Py_DECREF(bound);
    if (!*pargs || !*pkwargs || !PyTuple_Check(*pargs) || !PyDict_Check(*pkwargs)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "call.bound must have a tuple args, a dict kwargs");
        return -1;
    }
    return 0;
}

/* Replays `call` whose function's cache entry is `entry` (borrowed).
 * Returns the Outcome, or NULL with an exception. */
static PyObject *replay_entry(rp_replayer *self, PyObject *call, PyObject *call_id, PyObject *entry,
                              Py_ssize_t nparams)
{
    PyObject *function = PyTuple_GET_ITEM(entry, E_NAME), *fn = PyTuple_GET_ITEM(entry, E_FN);
    PyObject *pargs = NULL, *pkwargs = NULL, *reason = NULL, *diff = NULL, *out = NULL;
    rp_recorded rec = {0};
    rp_ran ran = {0};
    int status = RP_SKIPPED;

    if (PyTuple_GET_ITEM(entry, E_REASON) != Py_None) {
        reason = Py_NewRef(PyTuple_GET_ITEM(entry, E_REASON));
        goto finish;
    }
    if (rp_judge_recording(self, call, nparams, 0, &rec, &reason) < 0)
        goto done;
    if (reason)
        goto finish;
    if (bound_arguments(self, call, &pargs, &pkwargs, &reason) < 0)
        goto done;
    if (reason) {
        Py_CLEAR(rec.expected); /* not shown for arguments that do not rebuild */
        goto finish;
    }
    if (fn != Py_None) {
        reason = rp_bind_problem(fn, PyTuple_GET_ITEM(entry, E_NAMES), pargs, pkwargs);
        if (reason || PyErr_Occurred())
            goto finish;
    }
    int kind = (int)PyLong_AsLong(PyTuple_GET_ITEM(entry, E_KIND));
    if (rp_run(self, PyTuple_GET_ITEM(entry, E_CALLABLE), kind, fn, pargs, pkwargs, rec.patch,
               self->record_tape == NULL, &ran) < 0)
        goto done;
    status = rp_judge_outcome(self, call, &rec, &ran, &diff);
finish:
    if (status >= 0 && !PyErr_Occurred())
        out = make_outcome(self, call_id, function, status, &ran, rec.expected, diff, reason);
done:
    rp_recorded_clear(&rec);
    Py_XDECREF(pargs);
    Py_XDECREF(pkwargs);
    Py_XDECREF(reason);
    Py_XDECREF(ran.result);
    Py_XDECREF(ran.exc);
    Py_XDECREF(ran.yielded);
    Py_XDECREF(diff);
    return out;
}

/* Replays one call: its module checked, its function resolved, the
 * script's module standing in for __main__ when it was a script's.  New
 * Outcome or NULL with an exception. */
static PyObject *replay_one(rp_replayer *self, PyObject *call)
{
    Py_ssize_t nparams = recorded_parameters(self, call);
    if (nparams == -2)
        return NULL;
    PyObject *call_id = PyObject_GetAttr(call, self->attr[RP_A_ID]);
    PyObject *module = PyObject_GetAttr(call, self->attr[RP_A_MODULE]);
    PyObject *qualname = PyObject_GetAttr(call, self->attr[RP_A_QUALNAME]);
    PyObject *file = PyObject_GetAttr(call, self->attr[RP_A_FILE]);
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
    PyObject *old_main = script != Py_None ? rp_main_swap(script) : NULL;
    if (script != Py_None && !old_main)
        goto done;
    out = replay_entry(self, call, call_id, entry, nparams);
    if (old_main)
        rp_main_restore(old_main);
done:
    Py_XDECREF(call_id);
    Py_XDECREF(module);
    Py_XDECREF(qualname);
    Py_XDECREF(file);
    return out;
}

/* ---- many calls ---------------------------------------------------------- */

/* The first pass: every module checked (in the order first met), and the
 * set of sessions the calls were recorded in (new reference, or NULL). */
static PyObject *first_pass(rp_replayer *self, PyObject *calls)
{
    PyObject *modules = PyDict_New(), *sessions = PySet_New(NULL), *it = NULL, *c = NULL;
    if (!modules || !sessions || !(it = PyObject_GetIter(calls)))
        goto error;
    while ((c = PyIter_Next(it))) {
        PyObject *m = PyObject_GetAttr(c, self->attr[RP_A_MODULE]);
        PyObject *s = m ? PyObject_GetAttr(c, self->attr[RP_A_SESSION]) : NULL;
        int rc = s ? PyDict_SetItem(modules, m, Py_None) | PySet_Add(sessions, s) : -1;
        Py_XDECREF(m);
        Py_XDECREF(s);
        Py_CLEAR(c);
        if (rc < 0)
            goto error;
    }
    if (PyErr_Occurred())
        goto error;
    PyObject *m, *unused;
    Py_ssize_t pos = 0;
    while (PyDict_Next(modules, &pos, &m, &unused)) {
        if (!PyUnicode_Check(m)) {
            PyErr_SetString(PyExc_TypeError, "call.module must be a str");
            goto error;
        }
        if (check_allowed(self, m) < 0)
            goto error;
    }
    Py_DECREF(modules);
    Py_DECREF(it);
    return sessions;
error:
    Py_XDECREF(modules);
    Py_XDECREF(sessions);
    Py_XDECREF(it);
    return NULL;
}

/* Puts the folders of `sessions` of the tape (oldest first), then the
 * current folder, in front of sys.path where they are missing, as
 * calltape._replay.recorded_imports does.  Returns the list of folders
 * added (new reference) or NULL. */
static PyObject *push_recorded_folders(rp_replayer *self, PyObject *sessions)
{
    /* the Tape keeps the sessions it read: a session's folders never change */
    int tape = self->tape && Py_IS_TYPE(self->tape, self->st->type.Tape);
    PyObject *rows = tape ? ct_tape_sessions_of((ct_tape *)self->tape, sessions) : PyList_New(0);
    PyObject *args = rows ? PyTuple_Pack(1, rows) : NULL;
    PyObject *folders = args ? ct_recorded_folders_py(self->module_ref, args, NULL) : NULL;
    PyObject *added = folders ? ct_import_path_push_py(self->module_ref, folders) : NULL;
    Py_XDECREF(rows);
    Py_XDECREF(args);
    Py_XDECREF(folders);
    return added;
}

/* The session this process records the replayed calls in, or None. */
static PyObject *Replayer_session(rp_replayer *self, PyObject *unused)
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

/* The Report of `outcomes`: with the session they were recorded in when
 * the replay records (after a flush, so that the session is on the tape). */
static PyObject *make_report(rp_replayer *self, PyObject *outcomes)
{
    PyObject *session = NULL;
    if (self->record_tape && PyList_GET_SIZE(outcomes)) {
        PyObject *flushed = PyObject_CallMethod(self->module_ref, "flush", NULL);
        session = flushed ? Replayer_session(self, NULL) : NULL;
        Py_XDECREF(flushed);
        if (!session)
            return NULL;
    }
    PyObject *argv[2] = {outcomes, session ? session : Py_None};
    PyObject *report = PyObject_Vectorcall(self->report_type, argv, 2, NULL);
    Py_XDECREF(session);
    return report;
}

/* first_pass() of the one call `call`: its module checked, and the set of
 * its session (new reference, or NULL). */
static PyObject *first_pass_one(rp_replayer *self, PyObject *call)
{
    PyObject *m = PyObject_GetAttr(call, self->attr[RP_A_MODULE]);
    PyObject *s = m ? PyObject_GetAttr(call, self->attr[RP_A_SESSION]) : NULL;
    PyObject *sessions = s ? PySet_New(NULL) : NULL;
    int rc = sessions ? PySet_Add(sessions, s) : -1;
    if (rc == 0 && !PyUnicode_Check(m)) {
        PyErr_SetString(PyExc_TypeError, "call.module must be a str");
        rc = -1;
    }
    if (rc == 0)
        rc = check_allowed(self, m);
    Py_XDECREF(m);
    Py_XDECREF(s);
    if (rc < 0)
        Py_CLEAR(sessions);
    return sessions;
}

PyObject *rp_replay_single(rp_replayer *self, PyObject *call)
{
    PyObject *sessions = first_pass_one(self, call), *added = NULL, *out = NULL;
    added = sessions ? push_recorded_folders(self, sessions) : NULL;
    if (added) {
        out = replay_one(self, call);
        PyObject *r = ct_import_path_pop_py(self->module_ref, added); /* keeps a pending error */
        Py_XDECREF(r);
    }
    if (out && self->record_tape) { /* as make_report: the session is on the tape after */
        PyObject *flushed = PyObject_CallMethod(self->module_ref, "flush", NULL);
        PyObject *session = flushed ? Replayer_session(self, NULL) : NULL;
        if (!session)
            Py_CLEAR(out);
        Py_XDECREF(flushed);
        Py_XDECREF(session);
    }
    Py_XDECREF(added);
    Py_XDECREF(sessions);
    return out;
}

PyObject *rp_replayer_run(rp_replayer *self, PyObject *calls)
{
    PyObject *sessions = first_pass(self, calls);
    PyObject *added = sessions ? push_recorded_folders(self, sessions) : NULL;
    PyObject *outcomes = added ? PyList_New(0) : NULL, *it = NULL, *c, *report = NULL;
    Py_XDECREF(sessions);
    if (!outcomes || !(it = PyObject_GetIter(calls)))
        goto done;
    while ((c = PyIter_Next(it))) {
        PyObject *o = replay_one(self, c);
        int rc = o ? PyList_Append(outcomes, o) : -1;
        Py_XDECREF(o);
        Py_DECREF(c);
        if (rc < 0)
            goto done;
    }
done:
    if (added) {
        PyObject *r = ct_import_path_pop_py(self->module_ref, added); /* keeps a pending error */
        Py_XDECREF(r);
    }
    if (outcomes && !PyErr_Occurred())
        report = make_report(self, outcomes);
    Py_XDECREF(it);
    Py_XDECREF(added);
    Py_XDECREF(outcomes);
    return report;
}

/* ---- what make-tests and calltape.testing ask ---------------------------- */

static PyObject *Replayer_skip_reason(rp_replayer *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"call", "strict", NULL};
    PyObject *call, *reason = NULL;
    int strict = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|$p:skip_reason", kwlist, &call, &strict))
        return NULL;
    Py_ssize_t nparams = recorded_parameters(self, call);
    if (nparams == -2)
        return NULL;
    rp_recorded rec = {0};
    int rc = rp_judge_recording(self, call, nparams, strict, &rec, &reason);
    rp_recorded_clear(&rec);
    if (rc < 0)
        return NULL;
    return reason ? reason : Py_NewRef(Py_None);
}

static PyObject *Replayer_call(rp_replayer *self, PyObject *args, PyObject *kw)
{
    if (PyTuple_GET_SIZE(args) < 1) {
        PyErr_SetString(PyExc_TypeError, "call() needs the function to call");
        return NULL;
    }
    PyObject *fn = PyTuple_GET_ITEM(args, 0);
    PyObject *rest = PyTuple_GetSlice(args, 1, PyTuple_GET_SIZE(args));
    if (!rest)
        return NULL;
    rp_ran ran = {0};
    /* as replay runs a call, but recording is not suspended: a test's
     * recorded callees record as they did */
    int rc = rp_run(self, fn, rp_kind_of(fn), PyFunction_Check(fn) ? fn : Py_None, rest, kw, NULL,
                    0, &ran);
    Py_DECREF(rest);
    Py_XDECREF(ran.yielded);
    if (rc < 0)
        return NULL;
    if (ran.exc) {
        ct_restore_exc(ran.exc);
        return NULL;
    }
    return ran.result;
}

static PyObject *Replayer_raised(rp_replayer *self, PyObject *exc)
{
    (void)self;
    if (!PyExceptionInstance_Check(exc))
        return PyErr_Format(PyExc_TypeError, "raised() needs an exception, not %R", exc);
    PyObject *tn = rp_exc_type_name(exc), *msg = tn ? rp_exc_message(exc) : NULL;
    PyObject *out = msg ? PyTuple_Pack(2, tn, msg) : NULL;
    Py_XDECREF(tn);
    Py_XDECREF(msg);
    return out;
}

static PyObject *Replayer_replay(rp_replayer *self, PyObject *call)
{
    return replay_one(self, call);
}

static PyObject *Replayer_check(rp_replayer *self, PyObject *module)
{
    if (!PyUnicode_Check(module))
        return PyErr_Format(PyExc_TypeError, "module must be a str, not %R", module);
    if (check_allowed(self, module) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* Replayer.bind(outcome, report, run_coroutine, run_asyncgen): keeps the
 * Python side of replay in the module's dict of bound classes. */
static PyObject *Replayer_bind(PyObject *cls, PyObject *args)
{
    PyObject *given[4];
    if (!PyArg_ParseTuple(args, "OOOO:bind", &given[0], &given[1], &given[2], &given[3]))
        return NULL;
    ct_state *st = PyType_GetModuleState((PyTypeObject *)cls);
    if (!st)
        return NULL;
    if (!st->marker_types) {
        PyErr_SetString(PyExc_RuntimeError, "calltape is not initialised (_bind was not called)");
        return NULL;
    }
    for (int i = 0; i < 4; i++) {
        if (!PyCallable_Check(given[i]))
            return PyErr_Format(PyExc_TypeError, "%s must be callable, not %R", bound_names[i],
                                given[i]);
        if (PyDict_SetItemString(st->marker_types, bound_names[i], given[i]) < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

/* ---- the Replayer type --------------------------------------------------- */

/* Reads the options of a replay of `tape` (or of no tape) into `self`.
 * Returns 0 or -1 with an exception. */
static int replayer_options(rp_replayer *self, PyObject *tape, PyObject *globals, int record)
{
    PyObject *allow = NULL, *trust = NULL;
    if (tape != Py_None) {
        trust = PyObject_GetAttrString(tape, "trust");
        allow = trust ? PyObject_GetAttrString(tape, "allow") : NULL;
        self->trust = trust ? PyObject_IsTrue(trust) : -1;
        if (self->trust >= 0 && allow && record)
            self->record_tape = PyObject_GetAttrString(tape, "path");
        if (self->trust < 0 || !allow || (record && !self->record_tape))
            goto error;
        self->tape = Py_NewRef(tape);
    }
    self->allow = allow && allow != Py_None ? PySequence_Tuple(allow) : PyTuple_New(0);
    if (!self->allow)
        goto error;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(self->allow); i++)
        if (!PyUnicode_Check(PyTuple_GET_ITEM(self->allow, i))) {
            PyErr_Format(PyExc_TypeError, "allow must hold module names (str), not %R",
                         PyTuple_GET_ITEM(self->allow, i));
            goto error;
        }
    self->recorded_globals = globals != Py_None;
    Py_XDECREF(trust);
    Py_XDECREF(allow);
    return 0;
error:
    Py_XDECREF(trust);
    Py_XDECREF(allow);
    return -1;
}

/* Where the Outcome class keeps each field: outcome_offset[] filled when
 * every field is an object slot of it (__slots__), else left all 0.
 * Returns 0, or -1 with an exception (one other than AttributeError). */
static int outcome_offsets(rp_replayer *self)
{
    Py_ssize_t off[RP_OUTCOME_FIELDS];
    PyTypeObject *tp = (PyTypeObject *)self->outcome_type;
    if (!PyType_Check(self->outcome_type) || tp->tp_itemsize || !tp->tp_alloc)
        return 0;
    for (int i = 0; i < RP_OUTCOME_FIELDS; i++) {
        PyObject *d = PyObject_GetAttrString(self->outcome_type, outcome_fields[i]);
        if (!d) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError))
                return -1;
            PyErr_Clear();
            return 0;
        }
        PyMemberDef *m =
            Py_IS_TYPE(d, &PyMemberDescr_Type) ? ((PyMemberDescrObject *)d)->d_member : NULL;
        off[i] = m && m->type == T_OBJECT_EX && !(m->flags & READONLY) &&
                         PyType_IsSubtype(tp, PyDescr_TYPE(d))
                     ? m->offset
                     : 0;
        Py_DECREF(d);
        if (off[i] <= 0)
            return 0;
    }
    memcpy(self->outcome_offset, off, sizeof off);
    return 0;
}

/* Takes the Python side given to bind() (importing calltape._replay, which
 * binds it, on first use).  Returns 0 or -1. */
static int replayer_bound(rp_replayer *self)
{
    PyObject **slots[4] = {&self->outcome_type, &self->report_type, &self->run_coroutine,
                           &self->run_asyncgen};
    if (!ct_marker_type(self->st, bound_names[0])) {
        PyObject *m = PyImport_ImportModule("calltape._replay");
        if (!m)
            return -1;
        Py_DECREF(m);
    }
    for (int i = 0; i < 4; i++) {
        PyObject *v = ct_marker_type(self->st, bound_names[i]);
        if (!v) {
            PyErr_Format(PyExc_RuntimeError, "calltape._replay did not bind %s", bound_names[i]);
            return -1;
        }
        *slots[i] = Py_NewRef(v);
    }
    return outcome_offsets(self);
}

static PyObject *Replayer_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"tape", "rel", "abs", "globals", "record", NULL};
    PyObject *tape = Py_None, *globals = Py_None;
    int record = 0;
    double rel = 0.0, abs_tol = 0.0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O$ddOp:Replayer", kwlist, &tape, &rel, &abs_tol,
                                     &globals, &record))
        return NULL;
    if (globals != Py_None &&
        (!PyUnicode_Check(globals) || PyUnicode_CompareWithASCIIString(globals, "recorded")))
        return PyErr_Format(PyExc_ValueError, "globals must be None or 'recorded', not %R",
                            globals);
    if (ct_check_tolerance(rel, abs_tol) < 0)
        return NULL;
    rp_replayer *self = (rp_replayer *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    PyObject *m = PyType_GetModule(type);
    self->st = PyModule_GetState(m);
    self->module_ref = Py_NewRef(m);
    self->rel = rel;
    self->abs = abs_tol;
    self->cache = PyDict_New();
    if (!self->cache || replayer_options(self, tape, globals, record) < 0 ||
        replayer_bound(self) < 0)
        goto error;
    if (!self->st->replay_names) {
        PyErr_SetString(PyExc_RuntimeError, "calltape._native was cleared");
        goto error;
    }
    self->names = Py_NewRef(self->st->replay_names);
    for (int i = 0; i < RP_NSTATUS; i++)
        self->status[i] = PyTuple_GET_ITEM(self->names, i);
    for (int i = 0; i < RP_A_COUNT; i++)
        self->attr[i] = PyTuple_GET_ITEM(self->names, RP_NSTATUS + i);
    return (PyObject *)self;
error:
    Py_DECREF(self);
    return NULL;
}

static int Replayer_traverse(rp_replayer *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->module_ref);
    Py_VISIT(self->outcome_type);
    Py_VISIT(self->report_type);
    Py_VISIT(self->run_coroutine);
    Py_VISIT(self->run_asyncgen);
    Py_VISIT(self->tape);
    Py_VISIT(self->allow);
    Py_VISIT(self->record_tape);
    Py_VISIT(self->cache);
    Py_VISIT(self->names);
    return 0;
}

static int Replayer_clear(rp_replayer *self)
{
    Py_CLEAR(self->module_ref);
    Py_CLEAR(self->outcome_type);
    Py_CLEAR(self->report_type);
    Py_CLEAR(self->run_coroutine);
    Py_CLEAR(self->run_asyncgen);
    Py_CLEAR(self->tape);
    Py_CLEAR(self->allow);
    Py_CLEAR(self->record_tape);
    Py_CLEAR(self->cache);
    memset(self->status, 0, sizeof self->status); /* borrowed from names */
    memset(self->attr, 0, sizeof self->attr);
    Py_CLEAR(self->names);
    return 0;
}

static void Replayer_dealloc(rp_replayer *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Replayer_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMethodDef Replayer_methods[] = {
    {"run", (PyCFunction)rp_replayer_run, METH_O,
     "run(calls) -> Report: every module checked before any call runs, then each call"
     " replayed (calls is iterated twice: a list, or a search)"},
    {"replay", (PyCFunction)Replayer_replay, METH_O,
     "replay(call) -> Outcome (judged by the call's own function row)"},
    {"check", (PyCFunction)Replayer_check, METH_O,
     "check(module): raise ReplayRefused unless calls of `module` may be replayed"},
    {"skip_reason", (PyCFunction)(void (*)(void))Replayer_skip_reason, METH_VARARGS | METH_KEYWORDS,
     "skip_reason(call, *, strict=False) -> why the recording of `call` rules out a faithful"
     " replay, or None (nothing imported or run; strict: values that do not rebuild raise)"},
    {"call", (PyCFunction)(void (*)(void))Replayer_call, METH_VARARGS | METH_KEYWORDS,
     "call(fn, *args, **kwargs) -> what fn returns when run as replay runs it (a generator"
     " to its end, a coroutine or an async generator on a fresh event loop)"},
    {"raised", (PyCFunction)Replayer_raised, METH_O,
     "raised(exc) -> (type, message) of an exception as the recorder writes them"},
    {"session", (PyCFunction)Replayer_session, METH_NOARGS,
     "session() -> the session id the replayed calls were recorded in, or None"},
    {"bind", (PyCFunction)Replayer_bind, METH_VARARGS | METH_CLASS,
     "bind(outcome, report, run_coroutine, run_asyncgen): the Python side of replay,"
     " given by calltape._replay when it is imported"},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot Replayer_slots[] = {
    {Py_tp_new, Replayer_new},
    {Py_tp_dealloc, Replayer_dealloc},
    {Py_tp_traverse, Replayer_traverse},
    {Py_tp_clear, Replayer_clear},
    {Py_tp_methods, Replayer_methods},
    {Py_tp_doc, "Replayer(tape=None, *, rel=0.0, abs=0.0, globals=None, record=False):"
                " re-executes recorded calls of the tape under its trust and allow list"},
    {0, NULL},
};

PyObject *ct_replay_names_new(void)
{
    PyObject *names = PyTuple_New(RP_NSTATUS + RP_A_COUNT);
    for (int i = 0; names && i < RP_NSTATUS + RP_A_COUNT; i++) {
        PyObject *s = PyUnicode_InternFromString(i < RP_NSTATUS ? status_names[i]
                                                                : attr_names[i - RP_NSTATUS]);
        if (!s)
            Py_CLEAR(names);
        else
            PyTuple_SET_ITEM(names, i, s);
    }
    return names;
}

PyType_Spec Replayer_spec = {
    .name = "calltape._native.Replayer",
    .basicsize = sizeof(rp_replayer),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = Replayer_slots,
};
