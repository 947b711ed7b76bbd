/*
 * replay.h - the parts of replay shared by replay.c (the Replayer type and
 * its loop over calls), replay_judge.c (what the recording allows, and how
 * the outcome of today's call compares) and replay_run.c (running one call).
 *
 * replay_tape.c holds the ways in from a Tape and a Call (Tape.replay,
 * Call.replay), with the Tape's default Replayer.
 *
 * The Replayer holds everything replay needs for one run: the Python
 * classes handed to C when calltape._replay is imported (Outcome, Report,
 * the helpers that run coroutines and async generators), the trust rules of
 * the tape, the tolerances, and a cache of resolved functions.
 *
 * Invariants: every PyObject field of rp_replayer is a strong reference or
 * NULL, but status[] and attr[], borrowed from `names`, which it holds;
 * rp_recorded fields are strong references or NULL and are released
 * by rp_recorded_clear().
 */
#ifndef CALLTAPE_REPLAY_H
#define CALLTAPE_REPLAY_H

#include "read/reader.h"
#include "record/recorder.h"

enum { RP_PASSED, RP_CHANGED, RP_FAILED, RP_SKIPPED, RP_NSTATUS };

/* The Call attributes replay reads, interned once in the module state
 * (ct_replay_names_new: after the RP_NSTATUS status names). */
enum {
    RP_A_ID,
    RP_A_MODULE,
    RP_A_QUALNAME,
    RP_A_OUTCOME,
    RP_A_EXCEPTION,
    RP_A_RESULT,
    RP_A_ARGS,
    RP_A_BOUND,
    RP_A_KWARGS,
    RP_A_GLOBALS,
    RP_A_YIELDED,
    RP_A_FILE,
    RP_A_FUNC,
    RP_A_PARAMETERS,
    RP_A_SESSION,
    RP_A_COUNT
};

/* The fields of an Outcome (calltape._replay), in the order Outcome()
 * takes them. */
enum { RP_OUTCOME_FIELDS = 10 };

typedef struct rp_replayer {
    PyObject_HEAD ct_state *st;
    PyObject *module_ref;
    PyObject *outcome_type;       /* callable(call_id, function, status, result, expected,
                                     exception, duration, diff, reason, yielded) */
    PyObject *report_type;        /* callable(outcomes, session) */
    PyObject *run_coroutine;      /* callable(coroutine) -> its result */
    PyObject *run_asyncgen;       /* callable(async generator) -> list of values */
    PyObject *tape;               /* the tape replayed (for its sessions), or NULL */
    PyObject *allow;              /* tuple of module prefixes */
    PyObject *record_tape;        /* str, or NULL: do not record */
    PyObject *cache;              /* dict (module, qualname, file) -> entry tuple */
    PyObject *names;              /* the module state's tuple of interned names */
    PyObject *status[RP_NSTATUS]; /* borrowed from names: "passed", "changed", ... */
    PyObject *attr[RP_A_COUNT];   /* borrowed from names: the attribute names */
    /* where an Outcome keeps each of its ten fields (its __slots__), in
     * make_outcome's order, so that one is filled without running
     * Outcome.__init__; all 0 when the class has no such slots (it is
     * called instead) */
    Py_ssize_t outcome_offset[RP_OUTCOME_FIELDS];
    double rel, abs;
    int trust;
    int recorded_globals; /* patch call.globals in for each call */
    int busy;             /* a Tape's default Replayer in a run (replay calls nested
                             in a replayed call get a Replayer of their own) */
} rp_replayer;

/* What the recording says of one call, read before it runs. */
typedef struct rp_recorded {
    PyObject *outcome;  /* str: "returned", "raised" or "closed" */
    PyObject *expected; /* the recorded result, or its ExceptionInfo */
    PyObject *named;    /* dict: the recorded arguments by name */
    PyObject *patch;    /* dict of recorded globals (globals="recorded"), or NULL */
    int raised;         /* the recorded call raised */
} rp_recorded;

/* What running one call today gave: the result or the exception, what a
 * generator yielded, and how long it took. */
typedef struct rp_ran {
    PyObject *result, *exc, *yielded;
    uint64_t ns;
} rp_ran;

/* ---- replay.c ---- */

/* Replayer.run(calls): every module of `calls` checked before any call
 * runs, the recorded folders put on sys.path, each call replayed.  Returns
 * the Report (new reference), or NULL with ReplayRefused, TapeError,
 * KeyboardInterrupt or a memory error. */
PyObject *rp_replayer_run(rp_replayer *self, PyObject *calls);

/* As rp_replayer_run() of the one call `call`, but returns its Outcome
 * (new reference) rather than a Report of it; NULL with the same errors. */
PyObject *rp_replay_single(rp_replayer *self, PyObject *call);

/* ---- replay_judge.c ---- */

/* Releases the references of `rec` and sets its fields to NULL. */
void rp_recorded_clear(rp_recorded *rec);

/* Reads what the recording of `call` says and judges whether it can be
 * replayed, from the recording alone (nothing is imported or run):
 * `nparams` is the parameter count of the call's own function row (-1:
 * unknown).  Returns 0 with *reason a new str when it cannot (the generator
 * was closed early, the result or an argument is a marker, the arguments
 * were not recorded, the globals were not recorded), 0 with *reason NULL
 * when it can; `rec` is filled as far as it was read either way.  A value
 * that cannot be rebuilt is a reason too, unless `strict` (then -1 with the
 * rebuild's exception pending); -1 with an exception for a damaged tape
 * (TapeError), KeyboardInterrupt and memory errors. */
int rp_judge_recording(rp_replayer *self, PyObject *call, Py_ssize_t nparams, int strict,
                       rp_recorded *rec, PyObject **reason);

/* A str reason when the recorded arguments no longer bind to the
 * parameters of function `fn` (names: its varnames), NULL when they do (or
 * NULL with an exception). */
PyObject *rp_bind_problem(PyObject *fn, PyObject *names, PyObject *args, PyObject *kwargs);

/* Compares what `ran` did today with the recording `rec` of `call`.
 * Returns RP_PASSED, RP_CHANGED or RP_FAILED (*diff a new str for the
 * latter two), or -1 with an exception. */
int rp_judge_outcome(rp_replayer *self, PyObject *call, const rp_recorded *rec, const rp_ran *ran,
                     PyObject **diff);

/* "module.Qualname" of an exception's type, as the recorder writes it.  New
 * reference or NULL. */
PyObject *rp_exc_type_name(PyObject *exc);

/* str(exc) cut to the 2000 characters the recorder keeps ("<str() failed>"
 * when str raises).  New reference or NULL. */
PyObject *rp_exc_message(PyObject *exc);

/* ---- replay_run.c ---- */

/* Calls `callable` (of KIND_* `kind`; `fn` its function or Py_None) with
 * the arguments, `patch` (a dict, or NULL) patched into fn's globals for
 * the call, recording suspended on this thread when `quiet`; generators are
 * run to their end, coroutines and async generators through the
 * Replayer's helpers.  Fills `ran` (new references).  Returns -1 only for a
 * KeyboardInterrupt, which is left pending. */
int rp_run(rp_replayer *self, PyObject *callable, int kind, PyObject *fn, PyObject *args,
           PyObject *kwargs, PyObject *patch, int quiet, rp_ran *ran);

/* The KIND_* of a callable: from the code flags of a Python function,
 * KIND_PLAIN for anything else. */
int rp_kind_of(PyObject *fn);

/* Stands `script` (a module) in for sys.modules["__main__"]; returns the
 * module it replaced (new reference; Py_None when there was none), or NULL
 * with an exception. */
PyObject *rp_main_swap(PyObject *script);

/* Puts back what rp_main_swap() replaced (`old` is consumed).  Keeps a
 * pending exception. */
void rp_main_restore(PyObject *old);

#endif
