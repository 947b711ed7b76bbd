/*
 * framedata.h - what a recorded call saw besides its arguments
 * (framedata.c): the globals it reads and its locals at return, and the
 * encoder of such named values shared by @record and the monitor.
 */
#ifndef CALLTAPE_FRAMEDATA_H
#define CALLTAPE_FRAMEDATA_H

#include "binding.h"

/* The global names code object `code` (nested code included) loads,
 * dunders excluded: a new tuple, or NULL with an exception. */
PyObject *ct_global_names(PyObject *code);
/* name -> value for those `names` present in the dict `globals` whose
 * value is data (not a module, function, class or Recorder).  New dict or
 * NULL with an exception. */
PyObject *ct_globals_snapshot(ct_state *st, PyObject *globals, PyObject *names);

/* Encodes the dict `d` of named values (locals, globals) as one DICT onto
 * `b`, values at most `limit` bytes and `max_depth` deep (0: the format's):
 * names that match the redaction rules `rd` become REDACTED (at any
 * depth), `sanitize` (or NULL) filters the others.
 * Never raises. */
void ct_encode_named(ct_state *st, wbuf *b, PyObject *d, Py_ssize_t limit, int max_depth,
                     const ct_redact *rd, PyObject *sanitize);

/* The function running in `frame`, whose code is `code` (borrowed), or NULL
 * when it cannot be told.  Never raises. */
PyObject *ct_frame_function(PyFrameObject *frame, PyCodeObject *code);

/* One call watching for its frame's locals; lives on the C stack. */
typedef struct ct_locals_watch {
    PyObject *code;     /* borrowed: the code object watched */
    PyObject *snapshot; /* dict of the latest return of that code, or NULL */
    struct ct_locals_watch *prev;
#if PY_VERSION_HEX < 0x030C0000
    Py_tracefunc saved_func; /* the profile function replaced for the call */
    PyObject *saved_obj;
    int nested; /* an outer watch's profile function was already installed */
#endif
} ct_locals_watch;
/* Prepares `func` for locals capture (3.12+: instruments its code object's
 * returns).  Returns 0, or -1 with an exception (e.g. the tool id is taken). */
int ct_locals_enable(ct_state *st, PyObject *func);
/* Starts watching `code` on this thread (nested watches stack). */
void ct_locals_begin(ct_locals_watch *w, PyObject *code);
/* Stops watching and returns the locals at return, or, when `exc` is the
 * exception the call raised, at the raise: a new dict, or NULL when none
 * were seen.  Never raises; keeps a pending exception. */
PyObject *ct_locals_end(ct_locals_watch *w, PyObject *exc);

#endif
