/*
 * replay_tape.c - the ways into replay from a Tape and a Call: Tape.replay
 * (call ids or search filters, and the replay's options) and Call.replay,
 * and the default Replayer each Tape keeps for a replay without options.
 *
 * A replay without options (no rel, abs, globals or record) is run by the
 * Tape's default Replayer: made at the first such replay, its interned
 * names, bound classes and the tape's trust rules (fixed when the tape was
 * opened) are kept, so that a call replayed one by one (`for c in
 * tape.search(...): c.replay()`) does not make a Replayer each time.  A
 * replay with options gets a Replayer of its own, as calltape._replay's
 * replay_calls makes.
 *
 * Invariants: a run of the default Replayer starts and ends with its cache
 * of resolved functions empty (so what one run resolved never decides
 * another, and nothing resolved outlives its run), and it holds its Tape
 * only during a run (the Tape holds it: no cycle between runs); a replay
 * that starts while it runs (a replayed call replaying calls) gets a
 * Replayer of its own; a Tape of a subclass (whose trust or allow may be
 * its own properties) never keeps one.
 */
#include "replay.h"

/* The Replayer for a replay of `t` with `options` (a dict, or NULL): the
 * Tape's default one, marked busy with its tape set, when there are no
 * options and it is free; else a new one.  New reference or NULL. */
static rp_replayer *replayer_for(ct_tape *t, PyObject *options)
{
    ct_state *st = PyType_GetModuleState(Py_TYPE(t));
    if (!st)
        return NULL;
    int plain = !options || PyDict_GET_SIZE(options) == 0;
    int keeps = plain && Py_IS_TYPE(t, st->type.Tape);
    rp_replayer *rp = (rp_replayer *)t->replayer;
    if (keeps && rp && !rp->busy) {
        rp->busy = 1;
        Py_XSETREF(rp->tape, Py_NewRef((PyObject *)t));
        return (rp_replayer *)Py_NewRef((PyObject *)rp);
    }
    PyObject *args = PyTuple_Pack(1, (PyObject *)t);
    PyObject *fresh = args ? PyObject_Call((PyObject *)st->type.Replayer, args, options) : NULL;
    Py_XDECREF(args);
    if (fresh && keeps && !t->replayer) {
        t->replayer = Py_NewRef(fresh);
        ((rp_replayer *)fresh)->busy = 1;
    }
    return (rp_replayer *)fresh;
}

/* Ends a run of `rp` (consumed): the default Replayer of `t` lets go of
 * the tape and of what it resolved, and is free again.  Keeps a pending
 * exception. */
static void replayer_done(ct_tape *t, rp_replayer *rp)
{
    if ((PyObject *)rp == t->replayer) {
        PyObject *exc = ct_fetch_exc();
        PyDict_Clear(rp->cache);
        Py_CLEAR(rp->tape);
        rp->busy = 0;
        ct_restore_exc(exc);
    }
    Py_DECREF(rp);
}

/* Runs `run` (a whole list of calls, or one call) on the Replayer for a
 * replay of `t` with `options`.  What `run` returns. */
static PyObject *with_replayer(ct_tape *t, PyObject *options,
                               PyObject *(*run)(rp_replayer *, PyObject *), PyObject *arg)
{
    rp_replayer *rp = replayer_for(t, options);
    if (!rp)
        return NULL;
    PyObject *out = run(rp, arg);
    replayer_done(t, rp);
    return out;
}

PyObject *ct_replay_calls(ct_tape *t, PyObject *calls, PyObject *options)
{
    return with_replayer(t, options, rp_replayer_run, calls);
}

PyObject *ct_replay_call(ct_tape *t, PyObject *call, PyObject *options)
{
    return with_replayer(t, options, rp_replay_single, call);
}

PyObject *ct_tape_replay(ct_tape *t, PyObject *ids, PyObject *kw)
{
    static const char *const options[] = {"rel", "abs", "globals", "record", NULL};
    PyObject *opts = PyDict_New(), *filters = PyDict_New(), *calls = NULL, *report = NULL;
    PyObject *key, *value, *empty = NULL;
    Py_ssize_t pos = 0;
    if (!opts || !filters)
        goto error;
    while (kw && PyDict_Next(kw, &pos, &key, &value)) {
        int is_option = 0;
        for (int i = 0; options[i] && !is_option; i++)
            is_option = PyUnicode_CompareWithASCIIString(key, options[i]) == 0;
        if (PyDict_SetItem(is_option ? opts : filters, key, value) < 0)
            goto error;
    }
    if (PyTuple_GET_SIZE(ids) && PyDict_GET_SIZE(filters)) {
        PyErr_SetString(PyExc_ValueError, "give call ids or search filters, not both");
        goto error;
    }
    if (PyTuple_GET_SIZE(ids)) {
        calls = PyList_New(0);
        for (Py_ssize_t i = 0; calls && i < PyTuple_GET_SIZE(ids); i++) {
            PyObject *c = PyObject_CallMethod((PyObject *)t, "call", "O", PyTuple_GET_ITEM(ids, i));
            if (!c || PyList_Append(calls, c) < 0)
                Py_CLEAR(calls);
            Py_XDECREF(c);
        }
    } else {
        /* the calls a search finds, oldest first unless the filters say */
        PyObject *oldest = PyUnicode_FromString("oldest");
        int rc = !oldest ? -1
                 : PyDict_GetItemString(filters, "order")
                     ? 0
                     : PyDict_SetItemString(filters, "order", oldest);
        Py_XDECREF(oldest);
        if (rc < 0)
            goto error;
        empty = PyTuple_New(0);
        calls = empty ? ct_tape_search(t, empty, filters) : NULL;
    }
    if (calls)
        report = ct_replay_calls(t, calls, opts);
error:
    Py_XDECREF(opts);
    Py_XDECREF(filters);
    Py_XDECREF(calls);
    Py_XDECREF(empty);
    return report;
}
