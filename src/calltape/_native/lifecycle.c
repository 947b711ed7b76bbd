/*
 * lifecycle.c - the recording across the life of a process and its
 * children: the session begun before the first record and exported to
 * child processes, the writer parked around fork(), SIGTERM flushing what
 * is pending before the process dies as it would have, and the counters
 * and thread announcements a forked child starts again.
 *
 * Invariants:
 *   - a process's session is begun (its writer started) at its first
 *     record, without waiting; before a child process can start (fork,
 *     multiprocessing spawn and forkserver, subprocess, exec) the session is
 *     written and exported as CALLTAPE_SESSION, the child's parent;
 *   - at fork() time no calltape thread exists and nothing appended is
 *     unwritten: the child inherits every function definition and the
 *     parent's session id, and starts its own writer at its first append;
 *   - the SIGTERM handler is installed only over the default disposition
 *     or a Python handler, only from the main thread, and always chains to
 *     what it replaced: the process ends exactly as it would have;
 *   - over the default disposition it is a C handler, not a Python one: a
 *     Python handler runs only when the main thread next runs bytecode, so
 *     a SIGTERM arriving just before a blocking call (a Pool worker about
 *     to wait on its queue's lock) would never be acted on.  The C handler
 *     only asks the writers for a final round (engine_final_round, which is
 *     async-signal-safe); the writer that answers first ends the process
 *     with SIGTERM, as the default disposition would have at once;
 *   - nothing here raises into the user's program;
 *   - layering: this file calls the engine and instruments.c only (sink.c
 *     calls it at a tape's first record).
 */
#include "lifecycle.h"

#include "instruments/instruments.h"
#include "record/logq.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#define CT_BEGIN_TIMEOUT_NS 2000000000ull /* the session row of a new process */
#define CT_FORK_TIMEOUT_NS 5000000000ull  /* writing what is pending before fork */
#define CT_SIGTERM_FLUSH_S 5.0
#define CT_SIGTERM_FLUSH_NS 5000000000ull

static ct_state *state_of(PyObject *m)
{
    return (ct_state *)PyModule_GetState(m);
}

/* ---- sessions ------------------------------------------------------------ */

/* os.environ["CALLTAPE_SESSION"] = "<id>:<tape>".  Never raises. */
static void export_session(int64_t id, PyObject *path)
{
    PyObject *saved = ct_fetch_exc();
    ct_tls_thread.busy++;
    PyObject *os = PyImport_ImportModule("os");
    PyObject *environ = os ? PyObject_GetAttrString(os, "environ") : NULL;
    PyObject *key = PyUnicode_FromString("CALLTAPE_SESSION");
    PyObject *value = PyUnicode_FromFormat("%lld:%U", (long long)id, path);
    if (environ && key && value && PyObject_SetItem(environ, key, value) < 0)
        PyErr_Clear();
    Py_XDECREF(value);
    Py_XDECREF(key);
    Py_XDECREF(environ);
    Py_XDECREF(os);
    PyErr_Clear();
    ct_tls_thread.busy--;
    ct_restore_exc(saved);
}

/* Exports the session of `slot` when known, waiting up to `timeout_ns`
 * for the writer to create it.  Only the default tape's session is
 * exported (children record onto CALLTAPE_TAPE). */
static void export_when_known(ct_state *st, ct_engine_slot *slot, uint64_t timeout_ns)
{
    if (!st->sink.tape_path || PyUnicode_Compare(slot->path, st->sink.tape_path) != 0) {
        slot->exported = 1; /* (two str compare without error) */
        return;
    }
    engine_stats s;
    engine_get_stats(slot->eng, &s);
    int64_t id = s.session_id;
    if (!id && timeout_ns)
        id = engine_begin(slot->eng, timeout_ns);
    if (id > 0) {
        slot->exported = 1;
        export_session(id, slot->path);
    }
}

void ct_session_begin(ct_state *st, ct_engine_slot *slot)
{
    if (!slot->begun) {
        slot->begun = 1;
        engine_begin(slot->eng, 0); /* starts the writer, which creates the session */
    }
    export_when_known(st, slot, 0);
}

/* Before a child process can start: the session it will name as its
 * parent is written and exported (waiting briefly for the writer). */
static void session_for_children(ct_state *st)
{
    ct_engine_slot *slot = st->sink.default_slot;
    if (slot && slot->begun && !slot->exported)
        export_when_known(st, slot, CT_BEGIN_TIMEOUT_NS);
}

/* A C audit hook: the events of starting a program (subprocess, exec,
 * posix_spawn, system).  multiprocessing's spawn and forkserver children
 * are announced by _native._children_session() (calltape/__init__.py). */
static int audit_hook(const char *event, PyObject *args, void *data)
{
    (void)args;
    if (event[0] != 's' && event[0] != 'o')
        return 0;
    if (strcmp(event, "subprocess.Popen") == 0 || strcmp(event, "os.posix_spawn") == 0 ||
        strcmp(event, "os.exec") == 0 || strcmp(event, "os.spawn") == 0 ||
        strcmp(event, "os.system") == 0) {
        PyObject *saved = ct_fetch_exc();
        session_for_children(state_of((PyObject *)data));
        ct_restore_exc(saved);
    }
    return 0;
}

PyObject *ct_children_session_py(PyObject *m, PyObject *unused)
{
    (void)unused;
    session_for_children(state_of(m));
    Py_RETURN_NONE;
}

PyObject *ct_watch_children_py(PyObject *m, PyObject *unused)
{
    (void)unused;
    ct_state *st = state_of(m);
    if (st->life.watching_children)
        Py_RETURN_NONE;
    /* the hook lives as long as the interpreter: it keeps the module alive */
    if (PySys_AddAuditHook(audit_hook, Py_NewRef(m)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    st->life.watching_children = 1;
    Py_RETURN_NONE;
}

int64_t ct_inherited_session(const char *path)
{
    const char *v = getenv("CALLTAPE_SESSION");
    if (!v || !path)
        return 0;
    char *end = NULL;
    long long id = strtoll(v, &end, 10);
    if (end == v || *end != ':' || id <= 0 || strcmp(end + 1, path) != 0)
        return 0;
    return (int64_t)id;
}

int64_t ct_session_begin_now(ct_state *st, ct_engine_slot *slot)
{
    slot->begun = 1;
    export_when_known(st, slot, CT_BEGIN_TIMEOUT_NS);
    engine_stats s;
    engine_get_stats(slot->eng, &s);
    return s.session_id;
}

/* ---- fork ---------------------------------------------------------------- */

PyObject *ct_before_fork_py(PyObject *m, PyObject *unused)
{
    (void)unused;
    ct_state *st = state_of(m);
    /* The GIL stays held: no producer can append (and restart a writer)
     * until fork() is done; the writer is plain C and never waits for it. */
    for (size_t i = 0; i < st->sink.nengines; i++) {
        engine_pause(st->sink.engines[i]->eng, CT_FORK_TIMEOUT_NS);
        if (st->sink.engines[i]->begun && !st->sink.engines[i]->exported) /* for later children */
            export_when_known(st, st->sink.engines[i], 0);
    }
    Py_RETURN_NONE;
}

PyObject *ct_after_fork_child_py(PyObject *m, PyObject *unused)
{
    (void)unused;
    ct_state *st = state_of(m);
    for (size_t i = 0; i < st->sink.nengines; i++) {
        engine_set_seq_floor(st->sink.engines[i]->eng, st->rec.seq + 1);
        /* the child begins (and exports) a session of its own, and announces
         * every function again: what the parent had announced but not yet
         * written is the parent's, dropped in the child */
        st->sink.engines[i]->begun = st->sink.engines[i]->exported = 0;
        st->sink.engines[i]->serial = ++st->sink.next_serial;
        /* native thread ids changed: announce threads again */
        if (st->sink.engines[i]->seen)
            memset(st->sink.engines[i]->seen, 0, st->sink.engines[i]->nseen);
    }
    memset(st->sink.counters, 0, sizeof st->sink.counters);
    st->sink.counters_dirty = 0;
    for (size_t i = 0; i < st->sink.nengines; i++) { /* the parent's, sent by the parent */
        memset(st->sink.engines[i]->counters, 0, sizeof st->sink.engines[i]->counters);
        st->sink.engines[i]->counters_dirty = 0;
    }
    ct_rss_forget(st); /* /proc/self/statm named the parent */
    ct_logq_after_fork(st);
    PySet_Clear(st->sink.warned);
    Py_RETURN_NONE;
}

/* ---- SIGTERM ------------------------------------------------------------- */

/* signal.<name>, new reference or NULL with an exception. */
static PyObject *signal_attr(const char *name)
{
    PyObject *mod = PyImport_ImportModule("signal");
    PyObject *r = mod ? PyObject_GetAttrString(mod, name) : NULL;
    Py_XDECREF(mod);
    return r;
}

/* signal.signal(SIGTERM, handler).  Returns 0, or -1 with an exception
 * (ValueError outside the main thread). */
static int set_handler(PyObject *handler)
{
    PyObject *fn = signal_attr("signal");
    PyObject *r = fn ? PyObject_CallFunction(fn, "iO", SIGTERM, handler) : NULL;
    Py_XDECREF(fn);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* Dies of SIGTERM: the default disposition back, the signal raised and
 * let through.  Async-signal-safe; called in the handler or in a writer. */
static void die_of_sigterm(void)
{
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(SIGTERM, &dfl, NULL);
    raise(SIGTERM);
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    pthread_sigmask(SIG_UNBLOCK, &term, NULL); /* delivered here at the latest */
}

/* 1 when called from the main thread, 0 otherwise or on error (cleared). */
static int in_main_thread(void)
{
    PyObject *threading = PyImport_ImportModule("threading");
    PyObject *cur = threading ? PyObject_CallMethod(threading, "current_thread", NULL) : NULL;
    PyObject *main = threading ? PyObject_CallMethod(threading, "main_thread", NULL) : NULL;
    int r = cur && main && cur == main;
    Py_XDECREF(main);
    Py_XDECREF(cur);
    Py_XDECREF(threading);
    PyErr_Clear();
    return r;
}

/* The C SIGTERM handler, in whichever thread the kernel chose. */
static void on_sigterm_c(int signum)
{
    (void)signum;
    int saved_errno = errno;
    if (!engine_final_round(die_of_sigterm, CT_SIGTERM_FLUSH_NS))
        die_of_sigterm(); /* nothing is pending */
    errno = saved_errno;
}

/* Installs on_sigterm_c over the default disposition.  Returns 1, or 0
 * when SIGTERM is not at its default in the kernel (a C handler Python
 * does not know of) or cannot be set. */
static int install_c_handler(void)
{
    struct sigaction cur, mine;
    if (sigaction(SIGTERM, NULL, &cur) != 0 || (cur.sa_flags & SA_SIGINFO) ||
        cur.sa_handler != SIG_DFL)
        return 0;
    memset(&mine, 0, sizeof mine);
    mine.sa_handler = on_sigterm_c;
    sigemptyset(&mine.sa_mask);
    mine.sa_flags = SA_RESTART; /* the program's calls are not disturbed */
    return sigaction(SIGTERM, &mine, NULL) == 0;
}

PyObject *ct_install_sigterm_py(PyObject *m, PyObject *unused)
{
    (void)unused;
    ct_state *st = state_of(m);
    PyObject *mine = PyObject_GetAttrString(m, "_on_sigterm");
    PyObject *getsignal = signal_attr("getsignal");
    PyObject *dfl = signal_attr("SIG_DFL");
    PyObject *cur = getsignal ? PyObject_CallFunction(getsignal, "i", SIGTERM) : NULL;
    int installed = 0;
    if (!mine || !cur || !dfl)
        goto done;
    /* None: set from C by someone else; SIG_IGN: the program chose to live on */
    int is_dfl = PyObject_RichCompareBool(cur, dfl, Py_EQ);
    if (is_dfl < 0 || (!is_dfl && !PyCallable_Check(cur)) ||
        PyObject_RichCompareBool(cur, mine, Py_EQ) == 1)
        goto done;
    if (is_dfl) {
        /* only from the main thread, as signal.signal() would */
        installed = in_main_thread() && install_c_handler();
        goto done;
    }
    if (set_handler(mine) < 0)
        goto done;
    Py_XSETREF(st->life.sigterm_prev, Py_NewRef(cur));
    installed = 1;
done:
    PyErr_Clear(); /* a failure to install leaves SIGTERM as it was */
    Py_XDECREF(cur);
    Py_XDECREF(dfl);
    Py_XDECREF(getsignal);
    Py_XDECREF(mine);
    return PyBool_FromLong(installed);
}

PyObject *ct_on_sigterm_py(PyObject *m, PyObject *args)
{
    ct_state *st = state_of(m);
    PyObject *r = PyObject_CallMethod(m, "flush", "d", CT_SIGTERM_FLUSH_S);
    Py_XDECREF(r);
    PyErr_Clear(); /* what could not be written is counted; the signal goes on */
    PyObject *prev = st->life.sigterm_prev; /* installed over a Python handler only */
    if (prev && PyCallable_Check(prev))
        return PyObject_CallObject(prev, args);
    Py_RETURN_NONE;
}
