/*
 * logq.h - the queue of finished log lines (logq.c): @calltape.timer's JSON
 * and console lines and the probes' LogInstrument lines are made in C on
 * the calling thread, queued here, and handed to their `logging` logger by
 * one background thread.
 */
#ifndef CALLTAPE_LOGQ_H
#define CALLTAPE_LOGQ_H

#include "binding.h"

/* One queued line. */
typedef struct ct_logq_line {
    PyObject *target; /* owned: what the hand function receives (a logger, a pathname) */
    int level;
    int64_t created_ns; /* wall clock when it was queued */
    unsigned long thread_ident;
    const char *thread_name; /* the queuing thread's (its ct_thread.log_name, copied to `text`) */
    char *text;              /* UTF-8, `len` bytes, then the thread's name: in the */
    size_t len;              /* texts' ring (logq.bytes), or malloc'd */
    uint64_t bytes_end;      /* where it ends in the ring's bytes (0: malloc'd) */
} ct_logq_line;

/* Sets up the queue of module state `st` (at module init).  Returns 0, or
 * -1 with MemoryError. */
int ct_logq_init(ct_state *st);
/* Frees what is queued and the ring (module free; the GIL held). */
void ct_logq_free(ct_state *st);
/* In a forked child: the parent's queued lines are the parent's (dropped
 * here), the locks made anew, no drainer running.  The GIL held. */
void ct_logq_after_fork(ct_state *st);

/* Queues the line `text` (`len` bytes of UTF-8) at `level` for `target`
 * (the GIL held; the first line of a process starts the drainer).  A full
 * queue drops it and counts it.  Never raises, leaves no exception set. */
void ct_logq_put(ct_state *st, PyObject *target, int level, const char *text, size_t len);

/* ---- the records (logrecord.c) ---- */
typedef struct ct_logrec_cache ct_logrec_cache;

/* Makes the record cache of `st` (its interned names).  0, or -1 with an
 * exception (what was made is freed by ct_logrec_free). */
int ct_logrec_init(ct_state *st);
/* Frees the cache and what it holds (the GIL held). */
void ct_logrec_free(ct_state *st);
/* Releases the templates and logging's methods (module clear, fork). */
void ct_logrec_forget(ct_state *st);
/* Visits the references the cache holds. */
int ct_logrec_traverse(ct_state *st, visitproc visit, void *arg);
/* Reads logging's state for the next lines (once per batch): templates are
 * remade at their next use.  Never raises; the pending exception is kept. */
void ct_logrec_begin(ct_state *st);
/* Hands line `l` (its text the str `text`) to its logger: 1 when handed
 * here (or dropped by the logger's level), 0 when the Python hand function
 * must do it, -1 with an exception (a handler raised). */
int ct_logrec_hand(ct_state *st, const ct_logq_line *l, PyObject *text);

/* _native.logq_setup(hand, start): the Python callables (calltape._logq):
 * hand(target, level, text, created, thread_ident, thread_name). */
PyObject *ct_logq_setup_py(PyObject *m, PyObject *args);
/* _native.logq_run(): the drainer's body, until logq_stop(). */
PyObject *ct_logq_run_py(PyObject *m, PyObject *unused);
/* _native.logq_flush(timeout=None) -> bool: every line queued before the
 * call handed to its handlers (False: the timeout passed first). */
PyObject *ct_logq_flush_py(PyObject *m, PyObject *args);
/* _native.logq_stop(): the drainer leaves once the queue is empty; later
 * lines are handed on the calling thread. */
PyObject *ct_logq_stop_py(PyObject *m, PyObject *unused);
/* _native.logq_stats() -> {"queued", "handed", "dropped", "waiting", "capacity"}. */
PyObject *ct_logq_stats_py(PyObject *m, PyObject *unused);

#endif
