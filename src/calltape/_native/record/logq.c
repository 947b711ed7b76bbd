/*
 * logq.c - log lines written off the calling thread: one bounded FIFO of
 * finished lines per process (st->logq) and the one background thread
 * (the drainer, calltape._logq) that hands them to their `logging` logger.
 *
 * The calling thread formats the line in C and queues its bytes with the
 * logger it is for (ct_logq_put, the GIL held: no Python object is made
 * there).  The drainer takes up to LOGQ_BATCH lines at a time and hands
 * each, in queue order, to its logger: logrecord.c makes the LogRecord with
 * the time and thread of the queuing and does logger.handle()'s work (the
 * logger's level, filters and handlers), or, for loggers and record
 * factories of the user's own, the hand function (calltape._logq._hand)
 * does it in Python.
 *
 * Ordering: one FIFO filled under the GIL and one drainer, so lines reach
 * the handlers in the order they were queued, across all threads of the
 * process (and so in program order within a thread).  They are written
 * after the call that made them returned; logq_flush() waits until every
 * line queued before it was handed.  Lines of different processes are not
 * ordered with each other.
 *
 * Invariants: `mu` is never held while waiting for the GIL (the drainer
 * takes it with the GIL released, the queuing threads only briefly); a
 * full queue drops the new line and counts it (one RecordingWarning names
 * the count); in a forked child the parent's queued lines are dropped (the
 * parent hands them) and the child starts a drainer of its own at its first
 * line; the drainer runs with its thread marked busy, so calls made by the
 * handlers are not recorded.
 */
#include "logq.h"

#include "instruments/instruments.h"
#include "sink.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

#define LOGQ_CAP 65536
#define LOGQ_BATCH 256
#define LOGQ_BYTES (1 << 20) /* the texts' ring (malloc'd past it) */

static ct_state *state_of(PyObject *m)
{
    return (ct_state *)PyModule_GetState(m);
}

int ct_logq_init(ct_state *st)
{
    pthread_mutex_init(&st->logq.mu, NULL);
    pthread_cond_init(&st->logq.more, NULL);
    pthread_cond_init(&st->logq.done, NULL);
    st->logq.ring = calloc(LOGQ_CAP, sizeof *st->logq.ring);
    if (!st->logq.ring) {
        PyErr_NoMemory();
        return -1;
    }
    st->logq.cap = LOGQ_CAP;
    return ct_logrec_init(st);
}

/* Gives back the text of handed line `l` (`mu` held): lines leave in
 * queue order, so the texts' ring is free up to the end of this one. */
static void text_release(ct_state *st, ct_logq_line *l)
{
    if (l->bytes_end)
        st->logq.bytes_head = l->bytes_end;
    else
        free(l->text);
    l->text = NULL;
}

/* Room for `need` bytes of text at the tail of the texts' ring (`mu` held),
 * never split at its end: where the line's text goes, with *end set to
 * where it ends in the ring's count of bytes; NULL when full. */
static char *text_take(ct_state *st, size_t need, uint64_t *end)
{
    if (!st->logq.bytes && !(st->logq.bytes = malloc(LOGQ_BYTES)))
        return NULL;
    size_t at = (size_t)(st->logq.bytes_tail % LOGQ_BYTES);
    size_t skip = at + need > LOGQ_BYTES ? LOGQ_BYTES - at : 0;
    if (need > LOGQ_BYTES / 4 ||
        st->logq.bytes_tail + skip + need - st->logq.bytes_head > LOGQ_BYTES)
        return NULL;
    st->logq.bytes_tail += skip + need;
    *end = st->logq.bytes_tail;
    return st->logq.bytes + (skip ? 0 : at);
}

/* Releases every queued line (the GIL held). */
static void drop_queued(ct_state *st)
{
    for (size_t i = 0; i < st->logq.n; i++) {
        ct_logq_line *l = &st->logq.ring[(st->logq.head + i) % st->logq.cap];
        Py_CLEAR(l->target);
        text_release(st, l);
    }
    st->logq.head = st->logq.n = 0;
    st->logq.bytes_head = st->logq.bytes_tail = 0;
}

void ct_logq_free(ct_state *st)
{
    if (st->logq.ring)
        drop_queued(st);
    free(st->logq.ring);
    st->logq.ring = NULL;
    free(st->logq.bytes);
    st->logq.bytes = NULL;
    Py_CLEAR(st->logq.hand);
    Py_CLEAR(st->logq.start);
    ct_logrec_free(st);
}

void ct_logq_after_fork(ct_state *st)
{
    /* the parent's drainer may have held them at fork(): made anew */
    pthread_mutex_init(&st->logq.mu, NULL);
    pthread_cond_init(&st->logq.more, NULL);
    pthread_cond_init(&st->logq.done, NULL);
    if (st->logq.ring)
        drop_queued(st);
    st->logq.queued = st->logq.handed = 0;
    st->logq.dropped = st->logq.dropped_warned = 0;
    st->logq.pid = 0;
    st->logq.running = st->logq.stop = st->logq.sleeping = 0;
    st->logq.drainer = 0;
    ct_logrec_forget(st);
}

/* Hands line `l` to its logger (the GIL held): on the drainer through
 * logrecord.c, else (or when that cannot) by the hand function; a failure
 * is warned about once.  Leaves no exception set. */
static void hand_one(ct_state *st, const ct_logq_line *l, int drainer)
{
    PyObject *text = PyUnicode_DecodeUTF8(l->text, (Py_ssize_t)l->len, "replace");
    int done = !text ? -1 : drainer ? ct_logrec_hand(st, l, text) : 0;
    if (!done) {
        PyObject *r =
            PyObject_CallFunction(st->logq.hand, "OiOdks", l->target, l->level, text,
                                  (double)l->created_ns / 1e9, l->thread_ident, l->thread_name);
        done = r ? 1 : -1;
        Py_XDECREF(r);
    }
    Py_XDECREF(text);
    if (done > 0)
        return;
    PyErr_Clear();
    ct_warn_once(st, "logq_hand",
                 "calltape could not hand a log line to logging: its handler raised");
}

/* One RecordingWarning, the first time lines were found dropped. */
static void warn_dropped(ct_state *st)
{
    pthread_mutex_lock(&st->logq.mu);
    uint64_t d = st->logq.dropped, warned = st->logq.dropped_warned;
    if (d && !warned)
        st->logq.dropped_warned = d;
    pthread_mutex_unlock(&st->logq.mu);
    if (!d || warned)
        return;
    char msg[200];
    snprintf(msg, sizeof msg,
             "calltape's log queue was full (%d lines waiting for the logging handlers): %llu"
             " lines dropped so far (_native.logq_stats() counts them)",
             LOGQ_CAP, (unsigned long long)d);
    ct_warn_once(st, "logq_full", msg);
}

static int64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Starts this process's drainer (once per process; the GIL held).
 * Returns 1 when one runs or will, 0 when lines are handed inline. */
static int ensure_drainer(ct_state *st, long pid)
{
    if (st->logq.stop || !st->logq.start)
        return 0;
    if (st->logq.pid == pid)
        return 1;
    st->logq.pid = pid; /* before start(): a line it logs does not start another */
    ct_thread *t = &ct_tls_thread;
    t->busy++;
    PyObject *r = PyObject_CallNoArgs(st->logq.start);
    t->busy--;
    if (r) {
        Py_DECREF(r);
        return 1;
    }
    PyErr_Clear();
    st->logq.pid = 0;
    ct_warn_once(st, "logq_start",
                 "calltape could not start its log thread: log lines are written by the calling"
                 " thread");
    return 0;
}

/* The calling thread's name in threading, read at its first line. */
static const char *thread_name(ct_thread *t)
{
    if (t->log_name_known)
        return t->log_name;
    t->log_name_known = 1;
    snprintf(t->log_name, sizeof t->log_name, "Thread-%lu", PyThread_get_thread_ident());
    PyObject *saved = ct_fetch_exc();
    PyObject *mods = PySys_GetObject("modules"); /* borrowed */
    PyObject *th = mods ? PyDict_GetItemString(mods, "threading") : NULL;
    t->busy++;
    PyObject *cur = th ? PyObject_CallMethod(th, "current_thread", NULL) : NULL;
    t->busy--;
    PyObject *name = cur ? PyObject_GetAttrString(cur, "name") : NULL;
    const char *u = name && PyUnicode_Check(name) ? PyUnicode_AsUTF8(name) : NULL;
    if (u)
        snprintf(t->log_name, sizeof t->log_name, "%s", u);
    Py_XDECREF(name);
    Py_XDECREF(cur);
    PyErr_Clear();
    ct_restore_exc(saved);
    return t->log_name;
}

void ct_logq_put(ct_state *st, PyObject *target, int level, const char *text, size_t len)
{
    if (!st->logq.ring || !st->logq.hand)
        return;
    ct_thread *t = &ct_tls_thread;
    const char *tname = thread_name(t);
    ct_logq_line l = {target, level, 0, PyThread_get_thread_ident(), tname, NULL, len};
    if (!ensure_drainer(st, ct_pid(st))) {
        l.created_ns = wall_ns();
        l.text = (char *)text;
        t->busy++;
        hand_one(st, &l, 0);
        t->busy--;
        return;
    }
    size_t nlen = strlen(tname) + 1, need = len + nlen;
    l.created_ns = wall_ns(); /* no Python code from here on: stamps follow queue order */
    pthread_mutex_lock(&st->logq.mu);
    if (st->logq.n == st->logq.cap) {
        st->logq.dropped++;
        pthread_mutex_unlock(&st->logq.mu);
        return;
    }
    /* the ring of texts, freed in queue order (malloc here and free on the
     * drainer cost more) */
    if (!(l.text = text_take(st, need, &l.bytes_end)) && !(l.text = malloc(need))) {
        pthread_mutex_unlock(&st->logq.mu);
        return;
    }
    memcpy(l.text, text, len);
    memcpy(l.text + len, tname, nlen);
    l.thread_name = l.text + len;
    l.target = Py_NewRef(target); /* the GIL is held */
    st->logq.ring[(st->logq.head + st->logq.n) % st->logq.cap] = l;
    st->logq.n++;
    st->logq.queued++;
    if (st->logq.sleeping) /* a drainer at work takes this line with its next batch */
        pthread_cond_signal(&st->logq.more);
    pthread_mutex_unlock(&st->logq.mu);
}

/* ---- the Python side --------------------------------------------------------- */

PyObject *ct_logq_setup_py(PyObject *m, PyObject *args)
{
    ct_state *st = state_of(m);
    PyObject *hand, *start;
    if (!PyArg_ParseTuple(args, "OO:logq_setup", &hand, &start))
        return NULL;
    if (!PyCallable_Check(hand) || !PyCallable_Check(start))
        return PyErr_Format(PyExc_TypeError, "logq_setup needs two callables");
    Py_XSETREF(st->logq.hand, Py_NewRef(hand));
    Py_XSETREF(st->logq.start, Py_NewRef(start));
    Py_RETURN_NONE;
}

/* Takes up to LOGQ_BATCH lines into `out`, waiting for one (the GIL
 * released by the caller).  Returns how many; 0 when asked to stop. */
static size_t take_batch(ct_state *st, ct_logq_line *out)
{
    pthread_mutex_lock(&st->logq.mu);
    while (!st->logq.n && !st->logq.stop) {
        st->logq.sleeping = 1;
        pthread_cond_wait(&st->logq.more, &st->logq.mu);
        st->logq.sleeping = 0;
    }
    size_t k = 0;
    while (k < LOGQ_BATCH && st->logq.n) {
        out[k++] = st->logq.ring[st->logq.head];
        st->logq.head = (st->logq.head + 1) % st->logq.cap;
        st->logq.n--;
    }
    if (!k) {
        st->logq.running = 0;
        pthread_cond_broadcast(&st->logq.done);
    }
    pthread_mutex_unlock(&st->logq.mu);
    return k;
}

PyObject *ct_logq_run_py(PyObject *m, PyObject *unused)
{
    (void)unused;
    ct_state *st = state_of(m);
    ct_logq_line *batch = malloc(LOGQ_BATCH * sizeof *batch);
    if (!batch)
        return PyErr_NoMemory();
    ct_thread *t = &ct_tls_thread;
    t->busy++; /* what the handlers call is not recorded */
    pthread_mutex_lock(&st->logq.mu);
    st->logq.running = 1;
    st->logq.drainer = PyThread_get_thread_ident();
    pthread_mutex_unlock(&st->logq.mu);
    for (;;) {
        size_t k;
        Py_BEGIN_ALLOW_THREADS
            ;
            k = take_batch(st, batch);
        Py_END_ALLOW_THREADS;
        if (!k)
            break;
        ct_logrec_begin(st);
        for (size_t i = 0; i < k; i++) {
            hand_one(st, &batch[i], 1);
            Py_CLEAR(batch[i].target);
        }
        pthread_mutex_lock(&st->logq.mu);
        for (size_t i = 0; i < k; i++)
            text_release(st, &batch[i]);
        st->logq.handed += k;
        pthread_cond_broadcast(&st->logq.done);
        pthread_mutex_unlock(&st->logq.mu);
        warn_dropped(st);
    }
    t->busy--;
    free(batch);
    Py_RETURN_NONE;
}

/* Waits until `target` lines were handed or the drainer left, up to
 * `deadline` (CLOCK_REALTIME ns, 0: none).  Returns 1 when they were. */
static int wait_handed(ct_state *st, uint64_t target, int64_t deadline)
{
    int ok;
    pthread_mutex_lock(&st->logq.mu);
    for (;;) {
        /* a drainer started but not yet running counts as running */
        int alive = st->logq.running || (!st->logq.stop && st->logq.pid && st->logq.n);
        ok = st->logq.handed >= target || !alive;
        if (ok || (deadline && wall_ns() >= deadline))
            break;
        int64_t until = wall_ns() + 50000000; /* wakes to look at the clock */
        if (deadline && until > deadline)
            until = deadline;
        struct timespec ts = {(time_t)(until / 1000000000), (long)(until % 1000000000)};
        pthread_cond_timedwait(&st->logq.done, &st->logq.mu, &ts);
    }
    pthread_mutex_unlock(&st->logq.mu);
    return ok;
}

PyObject *ct_logq_flush_py(PyObject *m, PyObject *args)
{
    ct_state *st = state_of(m);
    PyObject *timeout = Py_None;
    if (!PyArg_ParseTuple(args, "|O:flush_logs", &timeout))
        return NULL;
    double secs = -1;
    if (timeout != Py_None && ((secs = PyFloat_AsDouble(timeout)) < 0 || secs != secs)) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "flush_logs(timeout=) must be None or >= 0, not %R",
                         timeout);
        return NULL;
    }
    if (!st->logq.ring || st->logq.pid != ct_pid(st))
        Py_RETURN_TRUE; /* no drainer in this process: nothing queued */
    if (st->logq.drainer == PyThread_get_thread_ident())
        Py_RETURN_TRUE; /* a handler flushing: what it waits for is its own caller */
    pthread_mutex_lock(&st->logq.mu);
    uint64_t target = st->logq.queued;
    pthread_mutex_unlock(&st->logq.mu);
    int64_t deadline = secs >= 0 ? wall_ns() + (int64_t)(secs * 1e9) : 0;
    int ok;
    Py_BEGIN_ALLOW_THREADS
        ;
        ok = wait_handed(st, target, deadline);
    Py_END_ALLOW_THREADS;
    warn_dropped(st);
    return PyBool_FromLong(ok);
}

PyObject *ct_logq_stop_py(PyObject *m, PyObject *unused)
{
    (void)unused;
    ct_state *st = state_of(m);
    if (!st->logq.ring)
        Py_RETURN_NONE;
    pthread_mutex_lock(&st->logq.mu);
    st->logq.stop = 1;
    pthread_cond_broadcast(&st->logq.more);
    pthread_mutex_unlock(&st->logq.mu);
    Py_RETURN_NONE;
}

PyObject *ct_logq_stats_py(PyObject *m, PyObject *unused)
{
    (void)unused;
    ct_state *st = state_of(m);
    pthread_mutex_lock(&st->logq.mu);
    unsigned long long q = st->logq.queued, h = st->logq.handed, d = st->logq.dropped;
    unsigned long long w = st->logq.n;
    pthread_mutex_unlock(&st->logq.mu);
    return Py_BuildValue("{s:K,s:K,s:K,s:K,s:i}", "queued", q, "handed", h, "dropped", d, "waiting",
                         w, "capacity", LOGQ_CAP);
}
