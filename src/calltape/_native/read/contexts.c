/*
 * contexts.c - the tests of a tape: the spans of each session's time the
 * pytest plugin named by a test's node id (store_context, kind "test"),
 * read to answer Tape.search(test=) (the spans a test name selects, which
 * the query then bounds its search with: query_span), Call.test (the test
 * whose span holds the call's start, in the call's session) and
 * Tape.tests().
 *
 * A test name selects: the node id itself; else the node ids below it
 * (`tests/test_cart.py` selects that file's tests, `...::TestCart` a
 * class's, `...::test_total` its parametrized ids, a folder its files'),
 * or, when it holds a glob character (*?[), the node ids that glob
 * matches (fnmatch(3)).  A span still open (its test running, or its
 * process killed in it) reaches to the end of time.
 *
 * Invariants: each session's spans are read once into a table the Tape
 * keeps (t->contexts), ordered by id and so by start, with reach[i] the
 * latest end among spans 0..i, so that a lookup is a binary search even
 * where spans overlap; a table is only ever grown or updated in place
 * (never replaced: threads reading one Tape share it), and its users hold
 * its capsule while they use it; a lookup that may depend on spans written after the
 * table was read (a call after the last span's start, or in a span still
 * open) reads the session's newer spans first (the last one again, for its
 * end), so a tape being recorded is answered as it is now; every store
 * call runs with the GIL released.
 */
#include "reader.h"

#include <fnmatch.h>

/* One session's test spans, by id (so by start). */
typedef struct ct_spans {
    int64_t *id, *start, *end, *reach; /* end and reach: INT64_MAX while open */
    PyObject *names;                   /* list of str, by span */
    size_t n, cap;
} ct_spans;

static const store_bytes TEST_KIND = {(const uint8_t *)"test", 4};

static void spans_free(ct_spans *s)
{
    if (!s)
        return;
    PyMem_Free(s->id);
    PyMem_Free(s->start);
    PyMem_Free(s->end);
    PyMem_Free(s->reach);
    Py_XDECREF(s->names);
    PyMem_Free(s);
}

static void spans_capsule_free(PyObject *capsule)
{
    spans_free(PyCapsule_GetPointer(capsule, "calltape.spans"));
}

/* Room for one more span in `s`.  Returns 0, or -1 with MemoryError. */
static int spans_grow(ct_spans *s)
{
    if (s->n < s->cap)
        return 0;
    size_t cap = s->cap ? 2 * s->cap : 16;
    int64_t **cols[4] = {&s->id, &s->start, &s->end, &s->reach};
    for (int i = 0; i < 4; i++) {
        int64_t *p = PyMem_Realloc(*cols[i], cap * sizeof(int64_t));
        if (!p) {
            PyErr_NoMemory();
            return -1;
        }
        *cols[i] = p;
    }
    s->cap = cap;
    return 0;
}

/* The row's name as a str (invalid UTF-8 replaced, as a damaged tape may
 * hold; none: "").  New reference or NULL. */
static PyObject *row_name(const store_context *r)
{
    if (!r->name.p)
        return PyUnicode_FromStringAndSize("", 0);
    return PyUnicode_DecodeUTF8((const char *)r->name.p, (Py_ssize_t)r->name.n, "replace");
}

/* What a pass over the spans does with each row: 0 to go on, -1 on error. */
typedef int (*span_fn)(void *ctx, const store_context *row);

/* Calls `fn` with each span `f` lists (store_read_contexts).  Returns 0,
 * or -1 with an exception set (TapeError for the store's). */
static int each_span(ct_tape *t, const store_context_filter *f, span_fn fn, void *ctx)
{
    if (ct_tape_check_open(t) < 0)
        return -1;
    store *s = t->sto;
    store_err e;
    store_cursor *c;
    Py_BEGIN_ALLOW_THREADS
        c = store_read_contexts(s, f, &e);
    Py_END_ALLOW_THREADS
    if (!c) {
        ct_tape_store_error(t, &e, "its tests");
        return -1;
    }
    store_row row;
    int rc;
    while ((rc = ct_tape_next_row(c, &row, &e)) == 1)
        if (fn(ctx, &row.context) < 0)
            break;
    if (rc < 0)
        ct_tape_store_error(t, &e, "its tests");
    store_cursor_close(c);
    return rc == 0 ? 0 : -1;
}

/* ---- one session's spans, for Call.test ---- */

/* Where span `id` is in `s`, or where it goes (ids ascend). */
static size_t table_slot(const ct_spans *s, int64_t id)
{
    size_t a = 0, b = s->n;
    while (a < b) {
        size_t m = a + (b - a) / 2;
        if (s->id[m] < id)
            a = m + 1;
        else
            b = m;
    }
    return a;
}

/* Adds a span to the table, or replaces the one of its id (the table is
 * read again from its last span on, maybe by two threads at once: a row
 * may come that the table holds already). */
static int add_to_table(void *ctx, const store_context *r)
{
    ct_spans *s = ctx;
    size_t i = table_slot(s, r->id);
    int known = i < s->n && s->id[i] == r->id;
    if (!known && i < s->n)
        return 0; /* older than the table's last span, yet not in it: not a row of ours */
    if (!known && spans_grow(s) < 0)
        return -1;
    PyObject *name = row_name(r);
    if (!name)
        return -1;
    if (!known) {
        int rc = PyList_Append(s->names, name);
        Py_DECREF(name);
        if (rc < 0)
            return -1;
        s->n++;
    } else if (PyList_SetItem(s->names, (Py_ssize_t)i, name) < 0) {
        return -1;
    }
    s->id[i] = r->id;
    s->start[i] = r->start_ns;
    s->end[i] = r->end_ns == STORE_NONE ? INT64_MAX : r->end_ns;
    for (size_t k = i; k < s->n; k++) /* an end known now lowers the reach after it */
        s->reach[k] = k && s->reach[k - 1] > s->end[k] ? s->reach[k - 1] : s->end[k];
    return 0;
}

/* Reads the spans of `session` from id `from` on into `s`.  0 or -1. */
static int read_table(ct_tape *t, int64_t session, int64_t from, ct_spans *s)
{
    store_context_filter f = {TEST_KIND, {NULL, 0}, session, from};
    return each_span(t, &f, add_to_table, s);
}

/* The cached table of `session`, read on first use, as a new reference to
 * its capsule, which the caller holds while it uses the table (*out).
 * NULL with an exception set. */
static PyObject *session_table(ct_tape *t, int64_t session, ct_spans **out)
{
    if (!t->contexts && !(t->contexts = PyDict_New()))
        return NULL;
    PyObject *key = PyLong_FromLongLong((long long)session);
    PyObject *held = key ? PyDict_GetItemWithError(t->contexts, key) : NULL;
    if (held || !key || PyErr_Occurred()) {
        Py_XDECREF(key);
        *out = held ? PyCapsule_GetPointer(held, "calltape.spans") : NULL;
        return Py_XNewRef(held);
    }
    ct_spans *s = PyMem_Calloc(1, sizeof *s);
    if (!s)
        PyErr_NoMemory();
    if (s && (!(s->names = PyList_New(0)) || read_table(t, session, 0, s) < 0)) {
        spans_free(s);
        s = NULL;
    }
    PyObject *capsule = s ? PyCapsule_New(s, "calltape.spans", spans_capsule_free) : NULL;
    if (s && !capsule)
        spans_free(s);
    /* the store was read with the GIL released: another thread may have
     * made the table meanwhile, and the first one made stays */
    PyObject *kept = capsule && t->contexts ? PyDict_SetDefault(t->contexts, key, capsule) : NULL;
    if (capsule && !t->contexts)
        PyErr_Format(PyExc_ValueError, "the tape %U is closed", t->path);
    Py_DECREF(key);
    Py_XDECREF(capsule);
    *out = kept ? PyCapsule_GetPointer(kept, "calltape.spans") : NULL;
    return Py_XNewRef(kept);
}

/* The span of the `n` spans (by start; reach[i] the latest end of 0..i)
 * holding `at`, latest start first; -1 when none does. */
static Py_ssize_t span_at(const int64_t *start, const int64_t *end, const int64_t *reach, size_t n,
                          int64_t at)
{
    size_t a = 0, b = n; /* the first span starting after `at` */
    while (a < b) {
        size_t m = a + (b - a) / 2;
        if (start[m] <= at)
            a = m + 1;
        else
            b = m;
    }
    for (size_t i = a; i > 0 && reach[i - 1] >= at; i--)
        if (end[i - 1] >= at)
            return (Py_ssize_t)(i - 1);
    return -1;
}

static Py_ssize_t find_span(const ct_spans *s, int64_t at)
{
    return span_at(s->start, s->end, s->reach, s->n, at);
}

int ct_tape_test_spans_copy(ct_tape *t, int64_t session, ct_test_spans *out)
{
    memset(out, 0, sizeof *out);
    ct_spans *s = NULL;
    PyObject *owner = session_table(t, session, &s);
    if (!owner)
        return -1;
    /* what was written since the table was read (a tape being recorded) */
    if (t->sto && !t->closing && read_table(t, session, s->n ? s->id[s->n - 1] : 0, s) < 0) {
        Py_DECREF(owner);
        return -1;
    }
    size_t n = s->n;
    out->start = PyMem_Malloc((n ? n : 1) * sizeof(int64_t));
    out->end = PyMem_Malloc((n ? n : 1) * sizeof(int64_t));
    out->reach = PyMem_Malloc((n ? n : 1) * sizeof(int64_t));
    out->name = PyMem_Malloc((n ? n : 1) * sizeof(const char *));
    out->len = PyMem_Malloc((n ? n : 1) * sizeof(Py_ssize_t));
    out->names = PyList_GetSlice(s->names, 0, (Py_ssize_t)n); /* the strs stay alive */
    int ok = out->start && out->end && out->reach && out->name && out->len && out->names;
    for (size_t i = 0; ok && i < n; i++) {
        out->start[i] = s->start[i];
        out->end[i] = s->end[i];
        out->reach[i] = s->reach[i];
        out->name[i] = PyUnicode_AsUTF8AndSize(PyList_GET_ITEM(out->names, i), &out->len[i]);
        ok = out->name[i] != NULL;
    }
    out->n = n;
    Py_DECREF(owner);
    if (!ok) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        ct_test_spans_free(out);
        return -1;
    }
    return 0;
}

const char *ct_test_spans_find(const ct_test_spans *s, int64_t at, Py_ssize_t *len)
{
    Py_ssize_t i = s->n ? span_at(s->start, s->end, s->reach, s->n, at) : -1;
    if (i < 0)
        return NULL;
    *len = s->len[i];
    return s->name[i];
}

void ct_test_spans_free(ct_test_spans *s)
{
    PyMem_Free(s->start);
    PyMem_Free(s->end);
    PyMem_Free(s->reach);
    PyMem_Free(s->name);
    PyMem_Free(s->len);
    Py_CLEAR(s->names);
    memset(s, 0, sizeof *s);
}

PyObject *ct_tape_test_of(ct_tape *t, int64_t session, int64_t at)
{
    ct_spans *s = NULL;
    PyObject *owner = session_table(t, session, &s);
    if (!owner)
        return NULL;
    Py_ssize_t i = find_span(s, at);
    /* spans written since the table was read could hold it: read them (the
     * last span again, whose end may be known now); with the tape closed,
     * what was read stands */
    int newer = s->n == 0 || at > s->start[s->n - 1];
    if ((newer && (i < 0 || s->end[i] == INT64_MAX)) && t->sto && !t->closing) {
        if (read_table(t, session, s->n ? s->id[s->n - 1] : 0, s) < 0) {
            Py_DECREF(owner);
            return NULL;
        }
        i = find_span(s, at);
    }
    PyObject *out = i < 0 ? Py_NewRef(Py_None) : Py_NewRef(PyList_GET_ITEM(s->names, i));
    Py_DECREF(owner);
    return out;
}

/* ---- selecting tests by name, for search(test=) and tests() ---- */

/* 1 when the node id `name` (`n` bytes) is selected by `want` (`wn`
 * bytes, NUL-terminated): below it, or matched by it as a glob. */
static int name_selected(const char *want, size_t wn, int glob, const uint8_t *name, size_t n)
{
    if (glob) {
        char stack[512];
        char *text = n < sizeof stack ? stack : PyMem_Malloc(n + 1);
        if (!text)
            return 0;
        if (n)
            memcpy(text, name, n);
        text[n] = 0;
        int hit = fnmatch(want, text, 0) == 0;
        if (text != stack)
            PyMem_Free(text);
        return hit;
    }
    if (n <= wn || memcmp(name, want, wn) != 0)
        return 0;
    char next = (char)name[wn];
    return next == '[' || next == '/' || (next == ':' && n > wn + 1 && name[wn + 1] == ':') ||
           (wn && want[wn - 1] == '/');
}

/* A selection's spans, grown as rows come. */
typedef struct selection {
    const char *want;
    size_t wn;
    int glob, exact;         /* exact: the rows are of the name itself */
    const int64_t *sessions; /* keep only these sessions (n 0: all) */
    size_t nsessions;
    query_span *spans; /* PyMem */
    size_t n, cap;
    ct_state *st;
    PyObject *list;                /* tests(): the dicts made, or NULL (search) */
    int64_t last_session, last_id; /* tests(): the row the last dict came from */
} selection;

static int session_kept(const selection *sel, int64_t session)
{
    for (size_t i = 0; i < sel->nsessions; i++)
        if (sel->sessions[i] == session)
            return 1;
    return sel->nsessions == 0;
}

/* tests(): a dict for the row, or the last dict's end moved to the row's
 * when the row continues its test (the same name, the next span of the
 * session: a test paused around a fixture of a wider scope). */
static int add_test_dict(selection *sel, const store_context *r, PyObject *name)
{
    Py_ssize_t n = PyList_GET_SIZE(sel->list);
    PyObject *last = n ? PyList_GET_ITEM(sel->list, n - 1) : NULL;
    PyObject *end =
        r->end_ns == STORE_NONE ? Py_NewRef(Py_None) : ct_datetime_from_ns(sel->st, r->end_ns);
    int rc = -1;
    if (!end)
        return -1;
    if (last && sel->last_session == r->session && sel->last_id + 1 == r->id) {
        int same = PyUnicode_Compare(PyDict_GetItemString(last, "test"), name) == 0;
        if (same) {
            rc = PyDict_SetItemString(last, "end", end);
            goto done;
        }
    }
    PyObject *start = ct_datetime_from_ns(sel->st, r->start_ns);
    PyObject *d = start ? Py_BuildValue("{s:O,s:L,s:N,s:O}", "test", name, "session",
                                        (long long)r->session, "start", start, "end", end)
                        : NULL;
    rc = d ? PyList_Append(sel->list, d) : -1;
    Py_XDECREF(d);
done:
    Py_DECREF(end);
    sel->last_session = r->session;
    sel->last_id = r->id;
    return rc;
}

static int add_selected(void *ctx, const store_context *r)
{
    selection *sel = ctx;
    if (!session_kept(sel, r->session) ||
        (!sel->exact && !name_selected(sel->want, sel->wn, sel->glob, r->name.p, r->name.n)))
        return 0;
    if (sel->list) {
        PyObject *name = row_name(r);
        int rc = name ? add_test_dict(sel, r, name) : -1;
        Py_XDECREF(name);
        return rc;
    }
    if (sel->n == sel->cap) {
        size_t cap = sel->cap ? 2 * sel->cap : 16;
        query_span *p = PyMem_Realloc(sel->spans, cap * sizeof *p);
        if (!p) {
            PyErr_NoMemory();
            return -1;
        }
        sel->spans = p;
        sel->cap = cap;
    }
    query_span *p = &sel->spans[sel->n++];
    p->session = r->session;
    p->since = r->start_ns;
    p->until = r->end_ns == STORE_NONE ? INT64_MAX : r->end_ns;
    return 0;
}

/* Runs the selection of `test` (a str, or None: every test) over the
 * tape's spans: the spans of the node id itself when there are any, else
 * those of the node ids below it or matched by it.  0, or -1 with an
 * exception set (TypeError for a `test` that is not a str). */
static int select_tests(ct_tape *t, PyObject *test, selection *sel)
{
    if (test != Py_None && !PyUnicode_Check(test)) {
        PyErr_Format(PyExc_TypeError, "test must be a pytest node id (a str), not %R", test);
        return -1;
    }
    Py_ssize_t wn = 0;
    sel->want = test == Py_None ? NULL : PyUnicode_AsUTF8AndSize(test, &wn);
    if (test != Py_None && !sel->want)
        return -1;
    sel->wn = (size_t)wn;
    sel->glob = sel->want && strpbrk(sel->want, "*?[") != NULL;
    store_context_filter f = {TEST_KIND, {(const uint8_t *)sel->want, sel->wn}, 0, 0};
    if (sel->want) {
        sel->exact = 1;
        if (each_span(t, &f, add_selected, sel) < 0)
            return -1;
        if (sel->n || (sel->list && PyList_GET_SIZE(sel->list)))
            return 0;
    }
    /* no test of that very id: the ones below it, or a glob's; None: all */
    sel->exact = sel->want == NULL;
    f.name.p = NULL;
    f.name.n = 0;
    return each_span(t, &f, add_selected, sel);
}

int ct_tape_test_spans(ct_tape *t, PyObject *test, query_span **spans, size_t *n)
{
    selection sel = {0};
    *spans = NULL;
    *n = 0;
    if (test == Py_None) {
        PyErr_SetString(PyExc_TypeError, "test must be a pytest node id (a str), not None");
        return -1;
    }
    if (select_tests(t, test, &sel) < 0) {
        PyMem_Free(sel.spans);
        return -1;
    }
    *spans = sel.spans;
    *n = sel.n;
    return 0;
}

PyObject *ct_tape_tests(ct_tape *t, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"test", "session", NULL};
    PyObject *test = Py_None, *session = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O$O:tests", kwlist, &test, &session))
        return NULL;
    selection sel = {0};
    int64_t *ids = NULL;
    if (session != Py_None && ct_session_ids(session, &ids, &sel.nsessions) < 0)
        return NULL;
    sel.sessions = ids;
    sel.st = ct_state_of((PyObject *)t);
    sel.list = PyList_New(0);
    /* session=[] names no session: no test */
    if (sel.list && !(session != Py_None && sel.nsessions == 0) && select_tests(t, test, &sel) < 0)
        Py_CLEAR(sel.list);
    PyMem_Free(ids);
    PyMem_Free(sel.spans);
    return sel.list;
}
