/*
 * lifecycle.h - the recording across a process's life and its children
 * (lifecycle.c): sessions, fork, SIGTERM.
 */
#ifndef CALLTAPE_LIFECYCLE_H
#define CALLTAPE_LIFECYCLE_H

#include "binding.h"

/* Begins this process's session on `slot` at its first record (starts the
 * writer, never waits) and, once the writer created it, exports it as
 * CALLTAPE_SESSION when `slot` is the default tape's, so that child
 * processes name it as their parent.  Never raises; saves and restores a
 * pending exception. */
void ct_session_begin(ct_state *st, ct_engine_slot *slot);
/* Begins the session of `slot` now, waiting briefly for the writer to
 * create it, and exports it as ct_session_begin does.  Returns its id, 0
 * when the tape cannot be written.  Never raises. */
int64_t ct_session_begin_now(ct_state *st, ct_engine_slot *slot);
/* The session a parent process exported for the tape `path` (absolute), or
 * 0 when none (CALLTAPE_SESSION unset, malformed or naming another tape). */
int64_t ct_inherited_session(const char *path);
/* _native._before_fork(), _native._after_fork_child(),
 * _native._install_sigterm() and _native._on_sigterm(signum, frame). */
PyObject *ct_before_fork_py(PyObject *m, PyObject *unused);
PyObject *ct_after_fork_child_py(PyObject *m, PyObject *unused);
PyObject *ct_install_sigterm_py(PyObject *m, PyObject *unused);
PyObject *ct_on_sigterm_py(PyObject *m, PyObject *args);
/* _native._children_session(): before a child process starts, the session
 * it will name as parent is written and exported.  _native._watch_children():
 * installs the audit hook that does so for subprocesses, exec and spawn. */
PyObject *ct_children_session_py(PyObject *m, PyObject *unused);
PyObject *ct_watch_children_py(PyObject *m, PyObject *unused);

#endif
