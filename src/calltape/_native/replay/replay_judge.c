/*
 * replay_judge.c - the rules of replay about one recorded call: whether its
 * recording allows a faithful replay (judged before anything is imported or
 * run: a generator closed early, a result or an argument that is a marker of
 * a value not recorded, at any depth; arguments not recorded; globals not
 * recorded when replaying with them), whether the recorded arguments still
 * bind to today's signature, and how what the call did today compares with
 * what it did then (passed, changed, failed, with the diff).
 *
 * make-tests asks these same rules (Replayer.skip_reason), so a call is
 * skipped for one reason whichever way out it takes.
 *
 * Invariants: a value that merely misbehaves (a failing __repr__, a marker
 * search that meets an odd object) never makes an error; values that
 * cannot be rebuilt become reasons unless the caller asks for strictness;
 * damage (TapeError), KeyboardInterrupt and memory errors always propagate.
 */
#include "replay.h"

void rp_recorded_clear(rp_recorded *rec)
{
    Py_CLEAR(rec->outcome);
    Py_CLEAR(rec->expected);
    Py_CLEAR(rec->named);
    Py_CLEAR(rec->patch);
    rec->raised = 0;
}

/* ---- before the call ----------------------------------------------------- */

PyObject *rp_bind_problem(PyObject *fn, PyObject *names, PyObject *args, PyObject *kwargs)
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

/* The parts of a standard-library value that keeps them in C (a partial's
 * func, args and keywords, a deque's items), from its own reduce, which runs
 * no user code, with the iterators of the reduce made lists; NULL (no
 * exception) when `v` is not one of those. */
static PyObject *reduced_parts(ct_state *st, PyObject *v)
{
    PyTypeObject *tp = Py_TYPE(v); /* a type made in C: its tp_name is module.name */
    if (tp->tp_dealloc == st->objects.subtype_dealloc || !ct_reduce_known(tp->tp_name))
        return NULL;
    PyObject *parts = NULL, *red = PyObject_CallMethod(v, "__reduce_ex__", "i", 4);
    if (!red || !PyTuple_Check(red))
        goto done;
    parts = PyList_New(0);
    for (Py_ssize_t i = 1; parts && i < PyTuple_GET_SIZE(red); i++) {
        PyObject *item = PyTuple_GET_ITEM(red, i);
        PyObject *part = PyIter_Check(item) ? PySequence_List(item) : Py_NewRef(item);
        if (!part || PyList_Append(parts, part) < 0)
            Py_CLEAR(parts);
        Py_XDECREF(part);
    }
done:
    Py_XDECREF(red);
    PyErr_Clear();
    return parts;
}

/* One walk of find_marker(): the marker classes (looked up once per walk,
 * each NULL before _bind()) and the values seen. */
typedef struct marker_walk {
    ct_state *st;
    PyObject *types[3]; /* borrowed: Redacted, Truncated, Unencodable */
    PyObject *seen;
} marker_walk;

/* 1 when `v` is (or holds, at any depth, inside lists, tuples, sets, dicts,
 * the attributes of objects and the parts of standard-library values such
 * as a partial's keywords) a marker of a value that was not
 * recorded; *found then names it (borrowed).  `w->seen` (a dict id -> the
 * value) keeps shared and cyclic values from being walked twice; it holds
 * each value it names, so that the lists made on the way (the parts of a
 * reduce, the values of slots) stay alive until the walk ends and no
 * later one can take the address, and so the id, of one walked before. */
static int find_marker_in(marker_walk *w, PyObject *v, PyObject **found, int depth)
{
    ct_state *st = w->st;
    PyObject *seen = w->seen;
    for (int i = 0; i < 3; i++) {
        PyObject *cls = w->types[i];
        if (cls && Py_TYPE(v) == (PyTypeObject *)cls) {
            *found = v;
            return 1;
        }
    }
    if (depth > WIRE_MAX_DEPTH || PyUnicode_Check(v) || PyLong_Check(v) || PyFloat_Check(v))
        return 0;
    PyObject *id = PyLong_FromVoidPtr(v);
    int fresh = id ? PyDict_Contains(seen, id) == 0 && PyDict_SetItem(seen, id, v) == 0 : 0;
    Py_XDECREF(id);
    PyErr_Clear();
    if (!fresh)
        return 0;
    PyObject *items = NULL, *k, *x;
    Py_ssize_t pos = 0;
    int hit = 0;
    if (PyList_Check(v) || PyTuple_Check(v)) {
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(v) && !hit; i++)
            hit = find_marker_in(w, PySequence_Fast_GET_ITEM(v, i), found, depth + 1);
    } else if (PyDict_Check(v)) {
        while (!hit && PyDict_Next(v, &pos, &k, &x))
            hit = find_marker_in(w, k, found, depth + 1) || find_marker_in(w, x, found, depth + 1);
    } else if (PyAnySet_Check(v)) {
        items = PySequence_List(v);
    } else if (Py_TYPE(v)->tp_dictoffset != 0 || (Py_TYPE(v)->tp_flags & Py_TPFLAGS_MANAGED_DICT)) {
        items = PyObject_GenericGetDict(v, NULL);
    }
    if (items && !hit)
        hit = find_marker_in(w, items, found, depth + 1);
    Py_XDECREF(items);
    PyObject *parts = hit || PyList_Check(v) || PyTuple_Check(v) ? NULL : reduced_parts(st, v);
    if (parts)
        hit = find_marker_in(w, parts, found, depth + 1);
    Py_XDECREF(parts);
    if (!hit && Py_TYPE(v)->tp_dealloc == st->objects.subtype_dealloc) {
        PyObject *slots = ct_slot_values(st, v);
        hit = slots && find_marker_in(w, slots, found, depth + 1);
        Py_XDECREF(slots);
    }
    PyErr_Clear();
    return hit;
}

static int find_marker(ct_state *st, PyObject *v, PyObject **found, int depth)
{
    static const char *const names[] = {"Redacted", "Truncated", "Unencodable"};
    if (PyLong_CheckExact(v) || PyUnicode_CheckExact(v) || PyFloat_CheckExact(v))
        return 0; /* no marker, and nothing inside: find_marker_in()'s answer, without a walk */
    marker_walk w = {st, {NULL, NULL, NULL}, PyDict_New()};
    for (int i = 0; i < 3; i++)
        w.types[i] = ct_marker_type(st, names[i]);
    int hit = w.seen ? find_marker_in(&w, v, found, depth) : 0;
    Py_XDECREF(w.seen);
    PyErr_Clear();
    return hit;
}

/* A recorded value could not be rebuilt (the pending exception): *reason
 * becomes "<what>: ExcType: message" and the exception is cleared; returns
 * 0.  A damaged tape (TapeError), KeyboardInterrupt and MemoryError are
 * not reasons, nor anything when `strict`: they stay pending, -1. */
static int pending_reason(rp_replayer *self, const char *what, int strict, PyObject **reason)
{
    PyObject *damaged = ct_marker_type(self->st, "TapeError");
    if (strict || PyErr_ExceptionMatches(PyExc_KeyboardInterrupt) ||
        PyErr_ExceptionMatches(PyExc_MemoryError) || (damaged && PyErr_ExceptionMatches(damaged)))
        return -1;
    PyObject *why = ct_describe_pending();
    *reason = why ? PyUnicode_FromFormat("%s: %U", what, why) : NULL;
    Py_XDECREF(why);
    return *reason ? 0 : -1;
}

/* The outcome and the recorded result (or exception): sets *reason for a
 * generator closed early and a result that is a marker.  0 or -1. */
static int judge_result(rp_replayer *self, PyObject *call, int strict, rp_recorded *rec,
                        PyObject **reason)
{
    rec->outcome = PyObject_GetAttr(call, self->attr[RP_A_OUTCOME]);
    if (!rec->outcome)
        return -1;
    if (PyUnicode_CompareWithASCIIString(rec->outcome, "closed") == 0) {
        *reason = PyUnicode_FromString("the recorded generator or coroutine was closed before it"
                                       " finished, so there is no outcome to compare");
        return *reason ? 0 : -1;
    }
    rec->raised = PyUnicode_CompareWithASCIIString(rec->outcome, "raised") == 0;
    rec->expected = PyObject_GetAttr(call, self->attr[rec->raised ? RP_A_EXCEPTION : RP_A_RESULT]);
    if (!rec->expected)
        return pending_reason(self, "the recorded outcome cannot be rebuilt", strict, reason);
    PyObject *marker = NULL;
    if (!rec->raised && find_marker(self->st, rec->expected, &marker, 0)) {
        *reason = PyUnicode_FromFormat("the recorded result is %R, so there is nothing to compare",
                                       marker);
        return *reason ? 0 : -1;
    }
    return 0;
}

/* The recorded arguments: sets *reason when they were not recorded, or an
 * argument is (or holds) a marker.  0 or -1. */
static int judge_arguments(rp_replayer *self, PyObject *call, Py_ssize_t nparams, int strict,
                           rp_recorded *rec, PyObject **reason)
{
    rec->named = PyObject_GetAttr(call, self->attr[RP_A_ARGS]);
    if (!rec->named) {
        /* the outcome is not shown for a call whose arguments do not rebuild */
        Py_CLEAR(rec->expected);
        return pending_reason(self, "the recorded arguments cannot be rebuilt", strict, reason);
    }
    if (!PyDict_Check(rec->named)) {
        PyErr_SetString(PyExc_TypeError, "call.args must be a dict");
        return -1;
    }
    if (PyDict_GET_SIZE(rec->named) == 0 && nparams > 0) {
        *reason = PyUnicode_FromString("the arguments were not recorded (recorded with"
                                       " args=False)");
        return *reason ? 0 : -1;
    }
    PyObject *name, *value, *marker = NULL;
    Py_ssize_t pos = 0;
    while (PyDict_Next(rec->named, &pos, &name, &value)) {
        if (find_marker(self->st, value, &marker, 0)) {
            *reason = PyUnicode_FromFormat("the argument %U was not recorded (%R)", name, marker);
            return *reason ? 0 : -1;
        }
    }
    return 0;
}

/* The recorded globals, when the replay patches them in.  0 or -1. */
static int judge_globals(rp_replayer *self, PyObject *call, int strict, rp_recorded *rec,
                         PyObject **reason)
{
    rec->patch = PyObject_GetAttr(call, self->attr[RP_A_GLOBALS]);
    if (!rec->patch) {
        Py_CLEAR(rec->expected);
        return pending_reason(self, "the recorded globals cannot be rebuilt", strict, reason);
    }
    if (!PyDict_Check(rec->patch)) {
        *reason = PyUnicode_FromString("the globals it read were not recorded (record it with"
                                       " globals=True to replay with globals='recorded')");
        return *reason ? 0 : -1;
    }
    return 0;
}

int rp_judge_recording(rp_replayer *self, PyObject *call, Py_ssize_t nparams, int strict,
                       rp_recorded *rec, PyObject **reason)
{
    *reason = NULL;
    if (judge_result(self, call, strict, rec, reason) < 0 || *reason)
        return *reason ? 0 : -1;
    if (judge_arguments(self, call, nparams, strict, rec, reason) < 0 || *reason)
        return *reason ? 0 : -1;
    if (self->recorded_globals && (judge_globals(self, call, strict, rec, reason) < 0 || *reason))
        return *reason ? 0 : -1;
    return 0;
}

/* ---- after the call ------------------------------------------------------ */

PyObject *rp_exc_type_name(PyObject *exc)
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

PyObject *rp_exc_message(PyObject *exc)
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

/* The call raised `exc` today: passed when it raised the same (type and
 * message) then, failed otherwise. */
static int judge_raised_now(const rp_recorded *rec, PyObject *exc, PyObject **diff)
{
    PyObject *tn = rp_exc_type_name(exc), *msg = rp_exc_message(exc);
    int status = -1;
    if (!tn || !msg)
        goto done;
    if (rec->raised) {
        PyObject *et = PyObject_GetAttrString(rec->expected, "type");
        PyObject *em = PyObject_GetAttrString(rec->expected, "message");
        int same = et && em && PyUnicode_Check(et) && PyUnicode_Check(em) &&
                   PyUnicode_Compare(et, tn) == 0 && PyUnicode_Compare(em, msg) == 0;
        PyErr_Clear();
        status = same ? RP_PASSED : RP_FAILED;
        if (!same)
            *diff = PyUnicode_FromFormat("exception: recorded %S: %S, raised now %U: %U", et, em,
                                         tn, msg);
        Py_XDECREF(et);
        Py_XDECREF(em);
    } else {
        status = RP_FAILED;
        *diff = PyUnicode_FromFormat("raised %U: %U, recorded a result", tn, msg);
    }
    if (status == RP_FAILED && !*diff)
        status = -1;
done:
    Py_XDECREF(tn);
    Py_XDECREF(msg);
    return status;
}

/* The recorded call raised and today's returned `result`: changed. */
static int judge_returned_now(const rp_recorded *rec, PyObject *result, PyObject **diff)
{
    PyObject *et = PyObject_GetAttrString(rec->expected, "type");
    PyObject *r = ct_cut_words(PyObject_Repr(result), 80);
    if (et && r)
        *diff = PyUnicode_FromFormat("result: recorded a raise of %S, returned %U now", et, r);
    PyErr_Clear();
    Py_XDECREF(et);
    Py_XDECREF(r);
    if (!*diff)
        *diff = PyUnicode_FromString("result: recorded a raise, returned now");
    return *diff ? RP_CHANGED : -1;
}

/* A generator recorded with yields=True: compares what it yielded then
 * (call.yielded; when it ends in a Truncated marker, only the values kept)
 * with what it yields now.  Returns 0 when the same or not recorded, 1 with
 * *diff set when not, -1 with an exception. */
static int compare_yields(rp_replayer *self, PyObject *call, PyObject *now, PyObject **diff)
{
    PyObject *then = PyObject_GetAttr(call, self->attr[RP_A_YIELDED]);
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

int rp_judge_outcome(rp_replayer *self, PyObject *call, const rp_recorded *rec, const rp_ran *ran,
                     PyObject **diff)
{
    if (ran->exc)
        return judge_raised_now(rec, ran->exc, diff);
    if (rec->raised)
        return judge_returned_now(rec, ran->result, diff);
    int rc = ct_compare(self->st, rec->expected, ran->result, self->rel, self->abs, "result", diff);
    if (rc == 0 && ran->yielded && PyList_Check(ran->yielded))
        rc = compare_yields(self, call, ran->yielded, diff);
    return rc < 0 ? -1 : rc ? RP_CHANGED : RP_PASSED;
}
