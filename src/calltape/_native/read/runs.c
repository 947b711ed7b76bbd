/*
 * runs.c - one run at a time: the `session=` argument every reader method
 * shares (a session id or a list of them), Tape.last_run() (the newest
 * session's run: the session it descends from and every child process's
 * session below it), and Tape.functions(session=...) (each function's
 * aggregates over the calls of those sessions, read from the store's
 * per-session table, not by a scan of the calls).
 *
 * Invariants: session ids are positive (a non-positive id matches no
 * call); the store is called with the GIL released; Functions of a
 * session selection are new objects, never the tape's cached table (whose
 * aggregates are tape-wide).
 */
#include "reader.h"

int ct_session_ids(PyObject *session, int64_t **ids, size_t *n)
{
    *ids = NULL;
    *n = 0;
    int one = PyLong_Check(session) && !PyBool_Check(session);
    PyObject *seq = one ? NULL : PySequence_Fast(session, "");
    if (!one && (!seq || PyUnicode_Check(session) || PyBytes_Check(session)))
        goto bad;
    Py_ssize_t count = one ? 1 : PySequence_Fast_GET_SIZE(seq);
    *ids = PyMem_Malloc((size_t)(count ? count : 1) * sizeof(int64_t));
    if (!*ids) {
        Py_XDECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = one ? session : PySequence_Fast_GET_ITEM(seq, i);
        long long v = PyLong_Check(item) && !PyBool_Check(item) ? PyLong_AsLongLong(item) : -1;
        if (!PyLong_Check(item) || PyBool_Check(item) || (v == -1 && PyErr_Occurred())) {
            PyMem_Free(*ids);
            *ids = NULL;
            *n = 0;
            goto bad;
        }
        (*ids)[(*n)++] = (int64_t)v;
    }
    Py_XDECREF(seq);
    return 0;
bad:
    Py_XDECREF(seq);
    PyErr_Clear();
    PyErr_Format(PyExc_TypeError, "session must be a session id (an int) or a list of them, not %R",
                 session);
    return -1;
}

/* The store error of a cursor call as TapeError (`what`: "its sessions"). */
static store_cursor *open_cursor(ct_tape *t, const int64_t *ids, size_t n, store_err *e)
{
    store *s = t->sto;
    store_cursor *c;
    Py_BEGIN_ALLOW_THREADS
        c = ids ? store_read_session_functions(s, ids, n, e) : store_read_sessions(s, e);
    Py_END_ALLOW_THREADS
    return c;
}

/* The (id, parent) pairs of every session, newest first, into a new
 * PyMem array of 2 * *n ids (parent 0: none).  Returns 0 or -1 with
 * TapeError. */
static int session_links(ct_tape *t, int64_t **out, size_t *n)
{
    store_err e;
    *out = NULL;
    *n = 0;
    store_cursor *c = open_cursor(t, NULL, 0, &e);
    if (!c) {
        ct_tape_store_error(t, &e, "its sessions");
        return -1;
    }
    size_t cap = 0;
    store_row row;
    int rc;
    while ((rc = ct_tape_next_row(c, &row, &e)) == 1) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 64;
            int64_t *bigger = PyMem_Realloc(*out, cap * 2 * sizeof(int64_t));
            if (!bigger) {
                PyErr_NoMemory();
                rc = -2;
                break;
            }
            *out = bigger;
        }
        (*out)[2 * *n] = row.session.id;
        (*out)[2 * *n + 1] = row.session.parent == STORE_NONE ? 0 : row.session.parent;
        (*n)++;
    }
    if (rc == -1)
        ct_tape_store_error(t, &e, "its sessions");
    store_cursor_close(c);
    if (rc < 0) {
        PyMem_Free(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

/* The index in `links` of session `id`, or -1. */
static Py_ssize_t find_session(const int64_t *links, size_t n, int64_t id)
{
    for (size_t i = 0; i < n; i++)
        if (links[2 * i] == id)
            return (Py_ssize_t)i;
    return -1;
}

PyObject *ct_tape_last_run(ct_tape *t, PyObject *unused)
{
    (void)unused;
    if (ct_tape_check_open(t) < 0)
        return NULL;
    int64_t *links = NULL;
    size_t n = 0;
    if (session_links(t, &links, &n) < 0)
        return NULL;
    PyObject *out = PyList_New(0);
    char *in = n ? PyMem_Calloc(n, 1) : NULL;
    if (!out || (n && !in)) {
        if (n && !in)
            PyErr_NoMemory();
        goto error;
    }
    if (n) {
        /* the newest session (first: newest first), up to the oldest
         * ancestor the tape holds (a loop in damaged rows stops there) */
        size_t root = 0;
        for (size_t steps = 0; steps < n; steps++) {
            Py_ssize_t up = links[2 * root + 1] ? find_session(links, n, links[2 * root + 1]) : -1;
            if (up < 0)
                break;
            root = (size_t)up;
        }
        in[root] = 1;
        /* then everything below it: a parent is older, so ids ascending
         * settle a generation per pass at most */
        for (int grew = 1; grew;) {
            grew = 0;
            for (size_t i = 0; i < n; i++) {
                Py_ssize_t up = links[2 * i + 1] ? find_session(links, n, links[2 * i + 1]) : -1;
                if (!in[i] && up >= 0 && in[up]) {
                    in[i] = 1;
                    grew = 1;
                }
            }
        }
        for (size_t k = n; k-- > 0;) { /* oldest first */
            PyObject *id = in[k] ? PyLong_FromLongLong(links[2 * k]) : NULL;
            if (in[k] && (!id || PyList_Append(out, id) < 0)) {
                Py_XDECREF(id);
                goto error;
            }
            Py_XDECREF(id);
        }
    }
    PyMem_Free(links);
    PyMem_Free(in);
    return out;
error:
    PyMem_Free(links);
    PyMem_Free(in);
    Py_XDECREF(out);
    return NULL;
}

PyObject *ct_tape_functions_of(ct_tape *t, PyObject *session)
{
    int64_t *ids = NULL;
    size_t n = 0;
    if (ct_tape_check_open(t) < 0 || ct_session_ids(session, &ids, &n) < 0)
        return NULL;
    PyObject *out = PyList_New(0);
    if (!out || !n) {
        PyMem_Free(ids);
        return out;
    }
    store_err e;
    store_cursor *c = open_cursor(t, ids, n, &e);
    PyMem_Free(ids);
    if (!c) {
        Py_DECREF(out);
        return ct_tape_store_error(t, &e, "its functions");
    }
    store_row row;
    int rc;
    while ((rc = ct_tape_next_row(c, &row, &e)) == 1) {
        PyObject *fn = ct_function_from_row(t, &row.function);
        if (!fn || PyList_Append(out, fn) < 0) {
            Py_XDECREF(fn);
            rc = -2;
            break;
        }
        Py_DECREF(fn);
    }
    if (rc == -1)
        ct_tape_store_error(t, &e, "its functions");
    store_cursor_close(c);
    if (rc < 0)
        Py_CLEAR(out);
    return out;
}
