/*
 * timer.h - what @calltape.timer and @calltape.catch_errors add to a
 * Recorder (timer.c): a TimerSink, the outputs one call's numbers go to
 * besides the tape: a CSV row appended to a results file, a JSON line and
 * a console message queued for their logging loggers (logq.c), a row
 * tuple handed to a Python callable (the Parquet writer).  All the text is
 * made here, in C; Python only owns the logging handlers and pyarrow.
 */
#ifndef CALLTAPE_TIMER_H
#define CALLTAPE_TIMER_H

#include "binding.h"
#include "instruments/instruments.h"

typedef struct Recorder Recorder;

typedef struct ct_timer_sink {
    PyObject_HEAD int csv_fd;  /* the results CSV opened O_APPEND, or -1 */
    int errors;                /* catch_errors: raised calls only, the error row layout */
    int resources;             /* the message and row carry CPU time and memory */
    Py_ssize_t max_arg_length; /* each argument's text cut to it (+ "..."), or -1 */
    PyObject *csv_path;        /* str, or NULL */
    PyObject *text_sanitize;   /* callable(str) -> str for argument texts, or NULL */
    PyObject *log;             /* (logger, pathname): the JSON lines' logger (logq.c), or NULL */
    PyObject *console;         /* (logger, pathname): the console lines' logger, or NULL */
    PyObject *rows;            /* callable(tuple), or NULL */
    int64_t stamp_sec;         /* the second whose local time `stamp` holds */
    char stamp[40];            /* "2025-01-01 12:00:00", or "" */
} ct_timer_sink;

/* Returns 1 when `v` is a TimerSink. */
int ct_timer_sink_check(ct_state *st, PyObject *v);

/* After a call of `r` (which has a TimerSink) was recorded onto `slot`:
 * writes its outputs.  `exc` is the exception it raised (borrowed) or NULL.
 * Runs user code (str() of the arguments, the sanitizer, the logging
 * handlers) with the thread marked busy; never raises (a failing output
 * is reported once as a RecordingWarning) and leaves no exception set. */
void ct_timer_after(Recorder *r, ct_engine_slot *slot, const ct_callinfo *ci, uint64_t end,
                    PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, PyObject *exc);

/* The arguments' text of a call of `r` ({"args": [...], "kwargs": {...}},
 * sanitized and cut) appended to `out`, made at the call: a generator's
 * lines are written when it finishes (ct_timer_after_made).  Runs str() and
 * the sanitizer with the thread marked busy; never raises.  Nothing when
 * `r`'s timer writes no output. */
void ct_timer_arguments(Recorder *r, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                        wbuf *out);
/* ct_timer_after with the arguments' text made before (ct_timer_arguments). */
void ct_timer_after_made(Recorder *r, ct_engine_slot *slot, const ct_callinfo *ci, uint64_t end,
                         const wbuf *arguments, PyObject *exc);

/* _native.timer_begin(recorder) -> bytes: a block's start (metrics_start),
 * measured as a call of `recorder`'s function begins. */
PyObject *ct_timer_begin_py(PyObject *m, PyObject *recorder);
/* _native.timer_end(recorder, start) -> str: records the block begun with
 * `start` as a call of `recorder` and writes its outputs; returns its
 * UUID.  ValueError for a start of another process or recorder. */
PyObject *ct_timer_end_py(PyObject *m, PyObject *args);
/* _native.call_uuid(pid, thread_index, start_ns) -> str (engine's call_uuid). */
PyObject *ct_call_uuid_py(PyObject *m, PyObject *args);

#endif
