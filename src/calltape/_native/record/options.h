/*
 * options.h - the recording options, read and checked one way for every
 * way in (options.c): configure(), @calltape.record, calltape.monitor and,
 * through _native.check_options(), `calltape run`.  A bad value gets the
 * same exception and message from each of them.  The default tape's rule
 * ($CALLTAPE_TAPE, then ./calltape.db) lives here too.
 */
#ifndef CALLTAPE_OPTIONS_H
#define CALLTAPE_OPTIONS_H

#include "binding.h"

/* The options, by index; CT_OPT_BIT(i) is option i's bit in a set. */
enum ct_opt {
    CT_OPT_TAPE,
    CT_OPT_ARGS,
    CT_OPT_RESULT,
    CT_OPT_CPU,
    CT_OPT_MEMORY,
    CT_OPT_ENERGY,
    CT_OPT_LOCALS,
    CT_OPT_GLOBALS,
    CT_OPT_YIELDS,
    CT_OPT_SAMPLE,
    CT_OPT_MAX_VALUE_BYTES,
    CT_OPT_REDACT,
    CT_OPT_SANITIZE,
    CT_OPT_MAX_DEPTH,
    CT_NOPTS
};
#define CT_OPT_BIT(i) (1u << (i))
#define CT_OPT_ALL (CT_OPT_BIT(CT_NOPTS) - 1u)

/* The smallest max_value_bytes (a marker must fit). */
#define CT_VALUE_LIMIT_MIN 16

/* The options once read.  A value not given (or None, for those whose
 * None means "the default") keeps the default noted. */
typedef struct ct_options {
    PyObject *tape; /* str: os.fspath() of the value; NULL: the default tape */
    int args, result, cpu, memory, locals, globals, yields; /* 0 or 1; args, result: 1 */
    int energy;                                             /* -1: not given, else 0 or 1 */
    Py_ssize_t sample;                                      /* >= 1; 1 */
    Py_ssize_t max_value_bytes; /* >= CT_VALUE_LIMIT_MIN, or -1: not given */
    Py_ssize_t max_depth;       /* >= 0 (0: no limit); 0 */
    int redact;                 /* -1: not given; 0: False; 1: True or names */
    PyObject *redact_exact;     /* with names: frozenset of lower-case names, else NULL */
    PyObject *redact_patterns;  /* with names: tuple of lower-case globs, else NULL */
    PyObject *sanitize;         /* callable, or NULL */
} ct_options;

/* Takes the options in `accepted` (a set of CT_OPT_BIT) out of the keyword
 * dict `kw` (may be NULL): their values go to v[] (borrowed from `kw`;
 * NULL: not given), a new dict of the other keywords (or NULL when `kw` is
 * NULL) to *rest, for the caller's own arguments.  Returns 0, or -1 with
 * an exception set. */
int ct_options_take(PyObject *kw, unsigned accepted, PyObject *v[CT_NOPTS], PyObject **rest);

/* Reads and checks the values v[] (NULL: not given) into `o`, defaults for
 * the others.  Returns 0, or -1 with the one exception a bad value gets
 * (`o` then holds no references).  `o` holds new references: release them
 * with ct_options_release. */
int ct_options_read(PyObject *const v[CT_NOPTS], ct_options *o);

/* Releases the references `o` holds.  Never fails. */
void ct_options_release(ct_options *o);

/* The default tape: $CALLTAPE_TAPE when set and not empty, else
 * "calltape.db" (relative to the working folder).  New str, or NULL with
 * an exception. */
PyObject *ct_default_tape(void);

/* _native.configure(*, tape, flush_interval, on_full, buffer_bytes, redact,
 * max_value_bytes, energy, pickle). */
PyObject *ct_configure_py(PyObject *m, PyObject *args, PyObject *kw);
/* _native.check_options(**options): None when every recording option given
 * is good, else the exception record() or monitor() would raise. */
PyObject *ct_check_options_py(PyObject *m, PyObject *args, PyObject *kw);
/* _native.default_tape() -> ct_default_tape(). */
PyObject *ct_default_tape_py(PyObject *m, PyObject *unused);

#endif
