/*
 * calls.c - searching a tape from Python: Tape.search() validates its
 * arguments and turns them into a query_filter (query.c) plus the filters
 * the segments cannot answer; Calls is the result, and its iterator
 * streams Call objects.
 *
 * Matching: `function` is an exact qualname, a module-qualified name, a
 * glob (POSIX fnmatch(3)) on either, a bare name (no dot, a glob too) that
 * matches the last part of a qualname, or a callable given each Function;
 * `file` is a glob on the path, a glob on its tail, or a substring.  Both
 * become the list of function ids the query reads.  `args` compares the
 * rebuilt argument values with PyObject_RichCompareBool (a TypeError or
 * ValueError while comparing, as numpy arrays raise, is no match); `thread`
 * becomes the query's (session, thread index) when one thread has that
 * ident, else a filter on the pairs; `energy` bounds go into the query;
 * `test` becomes the query's spans (contexts.c resolves a node id into
 * its tests' time in their sessions), which the query intersects with the
 * session and time bounds.
 *
 * Children (Tape.children, Call.children) are a search by parent, which the
 * store answers from its children index (store.h); Calls.count() counts
 * without making Call objects (query_count).
 *
 * Invariants: iterating a Calls runs the search again in bounded memory
 * (one Call at a time, segments as query.c loads them); len() and indexing
 * read it once into a list that is kept; a limit counts calls after every
 * filter.
 */
#include "reader.h"

#include <fnmatch.h>
#include <math.h>

typedef struct ct_calls {
    PyObject_HEAD ct_tape *tape;
    query_filter f;    /* f.functions points into ids */
    int64_t *ids;      /* owned */
    int empty;         /* no call can match */
    int64_t *sessions; /* owned: f.sessions points into it, or NULL */
    query_span *spans; /* owned: f.spans points into it, or NULL */
    int64_t *pairs;    /* thread filter: (session, index) pairs, or NULL */
    size_t npairs;
    PyObject *args_filter; /* dict name -> wanted value, or NULL */
    int64_t limit;         /* after every filter; -1: none */
    PyObject *list;        /* the calls, once read whole */
} ct_calls;

typedef struct ct_call_iter {
    PyObject_HEAD ct_calls *calls; /* strong */
    query *q;                      /* NULL when exhausted */
    int64_t n;                     /* calls returned */
    int busy;
    int64_t last_fid;
    ct_function *last_fn; /* strong: the function of the previous row */
} ct_call_iter;

/* ---- function and file matching ---- */

static int text_matches(const char *pattern, int glob, const char *text)
{
    return glob ? fnmatch(pattern, text, FNM_NOESCAPE) == 0 : strcmp(pattern, text) == 0;
}

static int is_glob(const char *s)
{
    return strpbrk(s, "*?[") != NULL;
}

/* 1 when `f` is named by `function` (str or callable), 0 when not, -1 on
 * error (the callable raised). */
static int function_matches(ct_function *f, PyObject *function)
{
    if (!PyUnicode_Check(function)) {
        PyObject *r = PyObject_CallOneArg(function, (PyObject *)f);
        int ok = r ? PyObject_IsTrue(r) : -1;
        Py_XDECREF(r);
        return ok;
    }
    const char *want = PyUnicode_AsUTF8(function);
    const char *qualname = PyUnicode_AsUTF8(f->qualname);
    const char *full = PyUnicode_AsUTF8(f->full);
    if (!want || !qualname || !full)
        return -1;
    int glob = is_glob(want);
    if (text_matches(want, glob, qualname) || text_matches(want, glob, full))
        return 1;
    /* a bare name (no dot) names the last part of a qualname: `take` is
     * Inventory.take, and every other method or nested function so named */
    const char *last = strrchr(qualname, '.');
    return !strchr(want, '.') && last && text_matches(want, glob, last + 1);
}

/* 1 when the file of `f` matches `file`: a glob on the whole path or on
 * its tail after any '/', or a substring. */
static int file_matches(ct_function *f, const char *file, const char *tail_glob)
{
    const char *path = PyUnicode_AsUTF8(f->file);
    if (!path)
        return -1;
    return fnmatch(file, path, FNM_NOESCAPE) == 0 || fnmatch(tail_glob, path, FNM_NOESCAPE) == 0 ||
           strstr(path, file) != NULL;
}

/* Fills c->ids with the functions `function` and `file` name. */
static int select_functions(ct_calls *c, PyObject *function, PyObject *file)
{
    if (function == Py_None && file == Py_None)
        return 0;
    if (function != Py_None && !PyUnicode_Check(function) && !PyCallable_Check(function)) {
        PyErr_Format(PyExc_TypeError,
                     "function must be a name, a glob or a callable taking a Function, not %R",
                     function);
        return -1;
    }
    if (file != Py_None && !PyUnicode_Check(file)) {
        PyErr_Format(PyExc_TypeError, "file must be a str (a glob or part of a path), not %R",
                     file);
        return -1;
    }
    PyObject *table = ct_tape_functions(c->tape, CT_FUNCTIONS_IF_GROWN);
    if (!table)
        return -1;
    const char *fpat = file == Py_None ? NULL : PyUnicode_AsUTF8(file);
    PyObject *tail = fpat ? PyUnicode_FromFormat("*/%U", file) : NULL;
    const char *tail_glob = tail ? PyUnicode_AsUTF8(tail) : NULL;
    if (fpat && !tail_glob) {
        Py_XDECREF(tail);
        return -1;
    }
    /* a snapshot: a callable may run any code, even reading this tape */
    PyObject *fns = PyDict_Values(table);
    Py_ssize_t n = fns ? PyList_GET_SIZE(fns) : 0;
    c->ids = fns ? PyMem_Malloc((size_t)(n ? n : 1) * sizeof(int64_t)) : NULL;
    int rc = c->ids ? 0 : -1;
    if (fns && !c->ids)
        PyErr_NoMemory();
    size_t found = 0;
    for (Py_ssize_t i = 0; rc == 0 && i < n; i++) {
        ct_function *f = (ct_function *)PyList_GET_ITEM(fns, i);
        int ok = fpat ? file_matches(f, fpat, tail_glob) : 1;
        if (ok == 1 && function != Py_None)
            ok = function_matches(f, function);
        if (ok < 0)
            rc = -1;
        else if (ok)
            c->ids[found++] = f->id;
    }
    Py_XDECREF(fns);
    Py_XDECREF(tail);
    if (rc < 0)
        return -1;
    if (found == 0)
        c->empty = 1;
    c->f.functions = c->ids;
    c->f.nfunctions = found;
    return 0;
}

/* ---- the other filters ---- */

/* `session`: one id (the query's session) or several (its session list;
 * ids that cannot be a session's dropped).  Returns 0 or -1. */
static int select_sessions(ct_calls *c, PyObject *session)
{
    int64_t *ids = NULL;
    size_t n = 0;
    if (ct_session_ids(session, &ids, &n) < 0)
        return -1;
    size_t kept = 0;
    for (size_t i = 0; i < n; i++)
        if (ids[i] > 0)
            ids[kept++] = ids[i];
    if (kept == 0)
        c->empty = 1;
    if (kept == 1) {
        c->f.session = ids[0];
        PyMem_Free(ids);
        return 0;
    }
    PyMem_Free(c->sessions);
    c->sessions = ids;
    c->f.sessions = ids;
    c->f.nsessions = kept;
    if (!kept) {
        c->f.session = -1; /* matches nothing (empty says so already) */
        c->f.nsessions = 0;
    }
    return 0;
}

/* 1 when session `s` is one the search selected. */
static int session_selected(const ct_calls *c, int64_t s)
{
    if (c->f.session > 0)
        return c->f.session == s;
    for (size_t i = 0; i < c->f.nsessions; i++)
        if (c->f.sessions[i] == s)
            return 1;
    return c->f.nsessions == 0;
}

static int select_thread(ct_calls *c, PyObject *thread)
{
    if (!PyLong_Check(thread) || PyBool_Check(thread)) {
        PyErr_Format(PyExc_TypeError, "thread must be a thread ident (an int), not %R", thread);
        return -1;
    }
    PyObject *rows = ct_tape_thread_rows(c->tape);
    if (!rows)
        return -1;
    Py_ssize_t n = PyList_GET_SIZE(rows);
    c->pairs = PyMem_Malloc((size_t)(n ? n : 1) * 2 * sizeof(int64_t));
    if (!c->pairs) {
        Py_DECREF(rows);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *row = PyList_GET_ITEM(rows, i);
        int64_t session = PyLong_AsLongLong(PyTuple_GET_ITEM(row, 0));
        int eq = PyObject_RichCompareBool(PyTuple_GET_ITEM(row, 2), thread, Py_EQ);
        if (eq < 0) {
            Py_DECREF(rows);
            return -1;
        }
        if (eq && session_selected(c, session)) {
            c->pairs[2 * c->npairs] = session;
            c->pairs[2 * c->npairs + 1] = PyLong_AsLongLong(PyTuple_GET_ITEM(row, 1));
            c->npairs++;
        }
    }
    Py_DECREF(rows);
    if (c->npairs == 0) {
        c->empty = 1;
    } else if (c->npairs == 1) {
        /* one thread: the query answers it */
        c->f.session = c->pairs[0];
        c->f.thread = c->pairs[1];
        PyMem_Free(c->pairs);
        c->pairs = NULL;
        c->npairs = 0;
    }
    return 0;
}

/* `test`: the spans of the tests it selects; none: no call matches. */
static int select_test(ct_calls *c, PyObject *test)
{
    size_t n = 0;
    if (ct_tape_test_spans(c->tape, test, &c->spans, &n) < 0)
        return -1;
    if (n == 0)
        c->empty = 1;
    c->f.spans = c->spans;
    c->f.nspans = n;
    return 0;
}

static int select_energy(ct_calls *c, PyObject *energy)
{
    if (!PyDict_Check(energy)) {
        PyErr_Format(PyExc_TypeError,
                     "energy must be a dict of upper bounds in microjoules, such as"
                     " {'pkg': 100.0}, not %R",
                     energy);
        return -1;
    }
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(energy, &pos, &key, &value)) {
        int which = 0;
        if (PyUnicode_Check(key) && PyUnicode_CompareWithASCIIString(key, "pkg") == 0)
            which = QUERY_MAX_PKG;
        else if (PyUnicode_Check(key) && PyUnicode_CompareWithASCIIString(key, "dram") == 0)
            which = QUERY_MAX_DRAM;
        if (!which) {
            PyErr_Format(PyExc_ValueError,
                         "unknown energy domain %R: the energy filter takes 'pkg' and 'dram'", key);
            return -1;
        }
        double d = PyFloat_AsDouble(value);
        if (d == -1.0 && PyErr_Occurred()) {
            PyErr_Format(PyExc_TypeError, "the energy bound of %R must be a number, not %R", key,
                         value);
            return -1;
        }
        if (!(d >= 0)) {
            PyErr_Format(PyExc_ValueError,
                         "the energy bound of %R must be >= 0 microjoules, not %R", key, value);
            return -1;
        }
        int64_t bound = d >= 9.2e18 ? INT64_MAX : (int64_t)floor(d);
        c->f.energy_bounds |= which;
        if (which == QUERY_MAX_PKG)
            c->f.max_energy_pkg = bound;
        else
            c->f.max_energy_dram = bound;
    }
    return 0;
}

/* The recorded value of argument `name`, rebuilt alone, or with the
 * arguments before it when it refers to one of them (new reference); NULL
 * without an exception when the call has no such argument. */
static PyObject *rebuild_arg(ct_call *c, PyObject *name)
{
    if (c->rebuilt)
        return Py_XNewRef(PyDict_GetItemWithError(c->args, name));
    if (!(c->flags & REC_HAS_ARGS))
        return NULL;
    Py_ssize_t index = -1;
    if (c->flags & REC_UNBOUND) {
        if (PyUnicode_CompareWithASCIIString(name, "args") == 0)
            index = 0;
        else if (PyUnicode_CompareWithASCIIString(name, "kwargs") == 0)
            index = 1;
    } else {
        for (Py_ssize_t i = 0; i < c->fn->nparams && index < 0; i++) {
            int eq = PyUnicode_Compare(PyTuple_GET_ITEM(c->fn->names, i), name) == 0;
            if (eq)
                index = i;
        }
        PyErr_Clear(); /* a non-str key: no such argument */
    }
    const uint8_t *p = ct_call_value(c, VALUE_ARGS);
    const uint8_t *end = p + ct_call_value_len(c, VALUE_ARGS);
    const uint8_t *at = p;
    for (Py_ssize_t i = 0; i < index && at && at < end; i++)
        at = wire_skip(at, end);
    if (index >= 0 && !at)
        return ct_tape_damaged(c->tape, 0, "call %lld (%U), its arguments cannot be decoded",
                               (long long)c->id, c->fn->full);
    if (index < 0 || at >= end)
        return NULL;
    PyObject *v = ct_tape_rebuild(c->tape, &at, end, NULL);
    if (!v && index > 0) {
        /* it may refer to an earlier argument: rebuild them too, as one group */
        PyErr_Clear();
        PyObject *memo = PyList_New(0);
        for (Py_ssize_t i = 0; memo && i <= index; i++) {
            Py_XSETREF(v, ct_tape_rebuild(c->tape, &p, end, memo));
            if (!v)
                break;
        }
        Py_XDECREF(memo);
    }
    if (!v)
        ct_tape_damaged(c->tape, 0, "call %lld (%U), its argument %U", (long long)c->id,
                        c->fn->full, name);
    return v;
}

/* 1 when every argument named in `want` equals the recorded one, 0 when
 * not, -1 on error (a value that cannot be rebuilt). */
static int args_match(ct_call *c, PyObject *want)
{
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(want, &pos, &key, &value)) {
        PyObject *have = rebuild_arg(c, key);
        if (!have)
            return PyErr_Occurred() ? -1 : 0;
        int eq = PyObject_RichCompareBool(have, value, Py_EQ);
        Py_DECREF(have);
        if (eq < 0) {
            if (!PyErr_ExceptionMatches(PyExc_TypeError) &&
                !PyErr_ExceptionMatches(PyExc_ValueError))
                return -1;
            PyErr_Clear(); /* e.g. arrays, whose == is element-wise */
            eq = 0;
        }
        if (!eq)
            return 0;
    }
    return 1;
}

/* ---- Calls ---- */

static ct_calls *calls_new(ct_tape *t)
{
    ct_state *st = PyType_GetModuleState(Py_TYPE(t));
    ct_calls *c = PyObject_GC_New(ct_calls, st->type.Calls);
    if (!c)
        return NULL;
    c->tape = (ct_tape *)Py_NewRef((PyObject *)t);
    memset(&c->f, 0, sizeof c->f);
    c->f.thread = -1;
    c->f.since = INT64_MIN;
    c->f.until = INT64_MAX;
    c->f.max_duration = INT64_MAX;
    c->f.outcome = -1;
    c->f.newest_first = 1;
    c->f.limit = -1;
    c->ids = NULL;
    c->sessions = NULL;
    c->spans = NULL;
    c->empty = 0;
    c->pairs = NULL;
    c->npairs = 0;
    c->args_filter = NULL;
    c->limit = -1;
    c->list = NULL;
    PyObject_GC_Track(c);
    return c;
}

/* `limit` (an int >= 0) into *out: 0, or -1 with ValueError. */
static int parse_limit(PyObject *limit, int64_t *out)
{
    long long n = PyLong_Check(limit) ? PyLong_AsLongLong(limit) : -1;
    if (PyErr_Occurred() || n < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "limit must be an int >= 0 or None, not %R", limit);
        return -1;
    }
    *out = (int64_t)n;
    return 0;
}

static int outcome_code(PyObject *outcome)
{
    static const char *const names[] = {"returned", "raised", "closed"};
    for (int i = 0; PyUnicode_Check(outcome) && i < 3; i++)
        if (PyUnicode_CompareWithASCIIString(outcome, names[i]) == 0)
            return i;
    PyErr_Format(PyExc_ValueError, "outcome must be 'returned', 'raised' or 'closed', not %R",
                 outcome);
    return -1;
}

/* The enum rec_capture named `captured`.  Returns it, or -1 with
 * ValueError. */
static int capture_code(PyObject *captured)
{
    for (int i = 1; PyUnicode_Check(captured) && i <= CAPTURE_LAST; i++)
        if (PyUnicode_CompareWithASCIIString(captured, ct_capture_names[i]) == 0)
            return i;
    PyErr_Format(PyExc_ValueError,
                 "captured must be 'decorator', 'monitor', 'flat', 'probe' or 'timer', not %R",
                 captured);
    return -1;
}

PyObject *ct_tape_search(ct_tape *t, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {
        "function", "file", "since",  "until", "min_duration", "max_duration", "outcome", "session",
        "thread",   "args", "energy", "order", "limit",        "captured",     "test",    NULL};
    PyObject *function = Py_None, *file = Py_None, *since = Py_None, *until = Py_None;
    PyObject *min_d = Py_None, *max_d = Py_None, *outcome = Py_None, *session = Py_None;
    PyObject *thread = Py_None, *args_f = Py_None, *energy = Py_None, *order = NULL;
    PyObject *limit = Py_None, *captured = Py_None, *test = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O$OOOOOOOOOOOOOO:search", kwlist, &function, &file,
                                     &since, &until, &min_d, &max_d, &outcome, &session, &thread,
                                     &args_f, &energy, &order, &limit, &captured, &test))
        return NULL;
    if (ct_tape_check_open(t) < 0)
        return NULL;
    ct_state *st = PyType_GetModuleState(Py_TYPE(t));
    ct_calls *c = calls_new(t);
    if (!c)
        return NULL;
    query_filter *f = &c->f;
    if (order && (!PyUnicode_Check(order) || (PyUnicode_CompareWithASCIIString(order, "newest") &&
                                              PyUnicode_CompareWithASCIIString(order, "oldest")))) {
        PyErr_Format(PyExc_ValueError, "order must be 'newest' or 'oldest', not %R", order);
        goto error;
    }
    f->newest_first = !order || PyUnicode_CompareWithASCIIString(order, "newest") == 0;
    if (outcome != Py_None && (f->outcome = outcome_code(outcome)) < 0)
        goto error;
    if (captured != Py_None && (f->capture = capture_code(captured)) < 0)
        goto error;
    if (limit != Py_None && parse_limit(limit, &c->limit) < 0)
        goto error;
    if (since != Py_None && ct_time_to_ns(st, since, "since", &f->since) < 0)
        goto error;
    if (until != Py_None && ct_time_to_ns(st, until, "until", &f->until) < 0)
        goto error;
    if (min_d != Py_None && ct_duration_to_ns(min_d, "min_duration", &f->min_duration) < 0)
        goto error;
    if (max_d != Py_None && ct_duration_to_ns(max_d, "max_duration", &f->max_duration) < 0)
        goto error;
    if (session != Py_None && select_sessions(c, session) < 0)
        goto error;
    if (select_functions(c, function, file) < 0)
        goto error;
    if (thread != Py_None && select_thread(c, thread) < 0)
        goto error;
    if (test != Py_None && select_test(c, test) < 0)
        goto error;
    if (args_f != Py_None) {
        if (!PyDict_Check(args_f)) {
            PyErr_Format(PyExc_TypeError, "args must be a dict of parameter name -> value, not %R",
                         args_f);
            goto error;
        }
        if (PyDict_GET_SIZE(args_f))
            c->args_filter = PyDict_Copy(args_f);
        if (PyDict_GET_SIZE(args_f) && !c->args_filter)
            goto error;
    }
    if (energy != Py_None && select_energy(c, energy) < 0)
        goto error;
    /* the query applies the limit itself unless a filter comes after it */
    if (!c->pairs && !c->args_filter)
        f->limit = c->limit;
    return (PyObject *)c;
error:
    Py_DECREF(c);
    return NULL;
}

static int Calls_traverse(ct_calls *c, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(c));
    Py_VISIT(c->tape);
    Py_VISIT(c->args_filter);
    Py_VISIT(c->list);
    return 0;
}

static int Calls_clear(ct_calls *c)
{
    Py_CLEAR(c->tape);
    Py_CLEAR(c->args_filter);
    Py_CLEAR(c->list);
    return 0;
}

static void Calls_dealloc(ct_calls *c)
{
    PyTypeObject *tp = Py_TYPE(c);
    PyObject_GC_UnTrack(c);
    Calls_clear(c);
    PyMem_Free(c->ids);
    PyMem_Free(c->sessions);
    PyMem_Free(c->spans);
    PyMem_Free(c->pairs);
    tp->tp_free((PyObject *)c);
    Py_DECREF(tp);
}

static PyObject *Calls_iter(PyObject *self)
{
    ct_calls *c = (ct_calls *)self;
    if (!c->tape) {
        PyErr_SetString(PyExc_ValueError, "this search was cleared");
        return NULL;
    }
    ct_state *st = PyType_GetModuleState(Py_TYPE(self));
    query *q = NULL;
    if (!c->empty && c->limit != 0) {
        q = ct_tape_query_open(c->tape, &c->f);
        if (!q)
            return NULL;
    }
    ct_call_iter *it = PyObject_GC_New(ct_call_iter, st->type.CallIter);
    if (!it) {
        ct_tape_query_close(c->tape, q);
        return NULL;
    }
    it->calls = (ct_calls *)Py_NewRef(self);
    it->q = q;
    it->n = 0;
    it->busy = 0;
    it->last_fid = 0;
    it->last_fn = NULL;
    PyObject_GC_Track(it);
    return (PyObject *)it;
}

/* The calls, read once and kept (borrowed). */
static PyObject *calls_list(ct_calls *c)
{
    if (c->list)
        return c->list;
    PyObject *it = Calls_iter((PyObject *)c);
    if (!it)
        return NULL;
    PyObject *list = PySequence_List(it);
    Py_DECREF(it);
    if (list && !c->list)
        c->list = list;
    else
        Py_XDECREF(list);
    return c->list;
}

static Py_ssize_t Calls_len(PyObject *self)
{
    PyObject *list = calls_list((ct_calls *)self);
    return list ? PyList_GET_SIZE(list) : -1;
}

static PyObject *Calls_subscript(PyObject *self, PyObject *index)
{
    PyObject *list = calls_list((ct_calls *)self);
    return list ? PyObject_GetItem(list, index) : NULL;
}

static PyObject *Calls_repr(PyObject *self)
{
    ct_calls *c = (ct_calls *)self;
    enum { SHOWN = 10 };
    PyObject *shown = PyList_New(0), *it = NULL, *item = NULL, *out = NULL;
    PyObject *newline = NULL, *body = NULL;
    if (!shown)
        return NULL;
    Py_ssize_t total = -1; /* unknown until read whole */
    if (c->list) {
        total = PyList_GET_SIZE(c->list);
        for (Py_ssize_t i = 0; i < total && i < SHOWN; i++)
            if (PyList_Append(shown, PyList_GET_ITEM(c->list, i)) < 0)
                goto done;
    } else {
        /* stream a few: a repr never reads millions of calls */
        it = Calls_iter(self);
        if (!it)
            goto done;
        while (PyList_GET_SIZE(shown) <= SHOWN && (item = PyIter_Next(it)))
            if (PyList_Append(shown, item) < 0)
                goto done;
            else
                Py_CLEAR(item);
        if (PyErr_Occurred())
            goto done;
        if (PyList_GET_SIZE(shown) <= SHOWN)
            total = PyList_GET_SIZE(shown);
    }
    newline = PyUnicode_FromString("\n  ");
    Py_ssize_t n = PyList_GET_SIZE(shown) < SHOWN ? PyList_GET_SIZE(shown) : SHOWN;
    PyObject *reprs = PyList_New(n);
    for (Py_ssize_t i = 0; reprs && i < n; i++) {
        PyObject *r = PyObject_Repr(PyList_GET_ITEM(shown, i));
        if (!r) {
            Py_CLEAR(reprs);
            break;
        }
        PyList_SET_ITEM(reprs, i, r);
    }
    body = reprs && newline ? PyUnicode_Join(newline, reprs) : NULL;
    Py_XDECREF(reprs);
    if (!body)
        goto done;
    if (total < 0)
        out = PyUnicode_FromFormat("<Calls: more than %d; the first %d:>\n  %U\n  ... (len() reads"
                                   " them all)",
                                   SHOWN, SHOWN, body);
    else if (total > SHOWN)
        out = PyUnicode_FromFormat("<Calls: %zd calls>\n  %U\n  ... %zd more", total, body,
                                   total - SHOWN);
    else if (total == 0)
        out = PyUnicode_FromString("<Calls: no calls>");
    else
        out = PyUnicode_FromFormat("<Calls: %zd call%s>\n  %U", total, total == 1 ? "" : "s", body);
done:
    Py_XDECREF(item);
    Py_XDECREF(it);
    Py_XDECREF(shown);
    Py_XDECREF(newline);
    Py_XDECREF(body);
    return out;
}

static PyObject *Calls_count(PyObject *self, PyObject *unused)
{
    (void)unused;
    ct_calls *c = (ct_calls *)self;
    if (!c->tape) {
        PyErr_SetString(PyExc_ValueError, "this search was cleared");
        return NULL;
    }
    if (c->empty)
        return PyLong_FromLong(0);
    if (c->pairs || c->args_filter) { /* filters after the query: count what it returns */
        int64_t keep = c->limit, n = 0;
        c->limit = -1;
        PyObject *it = Calls_iter(self), *item;
        c->limit = keep;
        while (it && (item = PyIter_Next(it))) {
            n++;
            Py_DECREF(item);
        }
        Py_XDECREF(it);
        return !it || PyErr_Occurred() ? NULL : PyLong_FromLongLong(n);
    }
    query_filter f = c->f;
    f.limit = -1;
    query *q = ct_tape_query_open(c->tape, &f);
    if (!q)
        return NULL;
    int64_t n = 0;
    int rc = ct_tape_query_count(c->tape, q, &n);
    ct_tape_query_close(c->tape, q);
    return rc < 0 ? NULL : PyLong_FromLongLong(n);
}

static PyMethodDef Calls_methods[] = {
    {"count", Calls_count, METH_NOARGS,
     "count() -> int: how many calls the search finds, its limit aside, counted without\n"
     "making them (a parent's children the children index counts are not even read)."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot Calls_slots[] = {
    {Py_tp_methods, Calls_methods},
    {Py_tp_dealloc, Calls_dealloc},
    {Py_tp_traverse, Calls_traverse},
    {Py_tp_clear, Calls_clear},
    {Py_tp_iter, Calls_iter},
    {Py_tp_repr, Calls_repr},
    {Py_mp_length, Calls_len},
    {Py_mp_subscript, Calls_subscript},
    {Py_sq_length, Calls_len},
    {Py_tp_doc, "The calls a search found.  Iterating streams them from the tape (each\n"
                "iteration runs the search again, in bounded memory); indexing and len()\n"
                "read the search once and keep the result."},
    {0, NULL},
};

PyType_Spec Calls_spec = {
    .name = "calltape.Calls",
    .basicsize = sizeof(ct_calls),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = Calls_slots,
};

/* ---- the iterator ---- */

static void iter_finish(ct_call_iter *it)
{
    if (it->q) {
        ct_tape_query_close(it->calls->tape, it->q);
        it->q = NULL;
    }
    Py_CLEAR(it->last_fn);
}

static int thread_selected(const ct_calls *c, int64_t session, int64_t thread)
{
    for (size_t i = 0; i < c->npairs; i++)
        if (c->pairs[2 * i] == session && c->pairs[2 * i + 1] == thread)
            return 1;
    return 0;
}

static PyObject *CallIter_next(PyObject *self)
{
    ct_call_iter *it = (ct_call_iter *)self;
    ct_calls *c = it->calls;
    if (!it->q)
        return NULL;
    if (it->busy) {
        PyErr_SetString(PyExc_RuntimeError, "this search is being iterated by another thread");
        return NULL;
    }
    while (c->limit < 0 || it->n < c->limit) {
        seg_call row;
        int64_t session, fid;
        it->busy = 1;
        int rc = ct_tape_query_next(c->tape, it->q, &row, &session, &fid);
        it->busy = 0;
        if (rc <= 0)
            break;
        if (c->pairs && !thread_selected(c, session, row.thread))
            continue;
        if (!it->last_fn || fid != it->last_fid) {
            ct_function *fn = ct_tape_function(c->tape, fid, row.id);
            if (!fn)
                break;
            Py_XSETREF(it->last_fn, (ct_function *)Py_NewRef((PyObject *)fn));
            it->last_fid = fid;
        }
        ct_call *call = ct_call_new(c->tape, it->last_fn, &row, session);
        if (!call)
            break;
        if (c->args_filter) {
            int ok = args_match(call, c->args_filter);
            if (ok <= 0) {
                Py_DECREF(call);
                if (ok < 0)
                    break;
                continue;
            }
        }
        it->n++;
        return (PyObject *)call;
    }
    iter_finish(it);
    return NULL;
}

static int CallIter_traverse(ct_call_iter *it, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(it));
    Py_VISIT(it->calls);
    Py_VISIT(it->last_fn);
    return 0;
}

static int CallIter_clear(ct_call_iter *it)
{
    if (it->calls)
        iter_finish(it);
    Py_CLEAR(it->calls);
    return 0;
}

static void CallIter_dealloc(ct_call_iter *it)
{
    PyTypeObject *tp = Py_TYPE(it);
    PyObject_GC_UnTrack(it);
    CallIter_clear(it);
    tp->tp_free((PyObject *)it);
    Py_DECREF(tp);
}

static PyType_Slot CallIter_slots[] = {
    {Py_tp_dealloc, CallIter_dealloc}, {Py_tp_traverse, CallIter_traverse},
    {Py_tp_clear, CallIter_clear},     {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, CallIter_next},   {0, NULL},
};

PyType_Spec CallIter_spec = {
    .name = "calltape._native.CallIterator",
    .basicsize = sizeof(ct_call_iter),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = CallIter_slots,
};

/* ---- searches made for a Call or a Tape ---- */

/* The filter of the children of `call` (through the children index). */
static void children_of(ct_calls *c, const ct_call *call)
{
    c->f.session = call->session;
    c->f.since = call->start; /* a child starts after its parent did */
    c->f.parent = call->id;
    c->f.parent_end = call->start + call->duration;
    c->f.newest_first = 0;
}

PyObject *ct_call_children(ct_call *call)
{
    ct_calls *c = calls_new(call->tape);
    if (!c)
        return NULL;
    children_of(c, call);
    PyObject *out = PySequence_List((PyObject *)c);
    Py_DECREF(c);
    return out;
}

PyObject *ct_tape_children(ct_tape *t, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"parent", "session", "min_duration", "limit", NULL};
    PyObject *parent = Py_None, *session = Py_None, *min_d = Py_None, *limit = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O$OOO:children", kwlist, &parent, &session, &min_d,
                                     &limit))
        return NULL;
    if (ct_tape_check_open(t) < 0)
        return NULL;
    ct_state *st = PyType_GetModuleState(Py_TYPE(t));
    if ((parent == Py_None) == (session == Py_None)) {
        PyErr_SetString(PyExc_TypeError,
                        "children() takes a parent (a Call or a call id) or a session, not both");
        return NULL;
    }
    ct_calls *c = calls_new(t);
    PyObject *call = NULL;
    if (!c)
        return NULL;
    if (parent != Py_None) {
        call = Py_IS_TYPE(parent, st->type.Call)
                   ? Py_NewRef(parent)
                   : PyObject_CallMethod((PyObject *)t, "call", "O", parent);
        if (!call)
            goto error;
        children_of(c, (ct_call *)call);
    } else {
        long long sid =
            PyLong_Check(session) && !PyBool_Check(session) ? PyLong_AsLongLong(session) : -1;
        if (sid <= 0) {
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError, "session must be a session id (an int > 0), not %R",
                         session);
            goto error;
        }
        c->f.session = sid;
        c->f.parent = -sid;
        c->f.newest_first = 0;
    }
    if (min_d != Py_None && ct_duration_to_ns(min_d, "min_duration", &c->f.min_duration) < 0)
        goto error;
    if (limit != Py_None && parse_limit(limit, &c->limit) < 0)
        goto error;
    c->f.limit = c->limit;
    Py_XDECREF(call);
    return (PyObject *)c;
error:
    Py_XDECREF(call);
    Py_DECREF(c);
    return NULL;
}

static int by_id(const void *a, const void *b)
{
    int64_t x = (*(ct_call *const *)a)->id, y = (*(ct_call *const *)b)->id;
    return (x > y) - (x < y);
}

PyObject *ct_tape_calls_by_id(ct_tape *t, PyObject *function)
{
    if (ct_tape_check_open(t) < 0)
        return NULL;
    ct_calls *c = calls_new(t);
    if (!c)
        return NULL;
    c->f.newest_first = 0;
    PyObject *it = NULL, *out = NULL;
    if (select_functions(c, function, Py_None) == 0 && (it = Calls_iter((PyObject *)c)))
        out = PySequence_List(it);
    if (out)
        qsort(((PyListObject *)out)->ob_item, (size_t)PyList_GET_SIZE(out), sizeof(PyObject *),
              by_id);
    Py_XDECREF(it);
    Py_DECREF(c);
    return out;
}
