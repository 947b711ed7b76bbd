/*
 * reader.h - the reading side of the binding, shared by tape.c (the Tape
 * type: opening, caches, queries), callview.c (the Call type), views.c
 * (the Function, Session and Bound types), calls.c (search arguments,
 * matching, the Calls result and its iterator), contexts.c (the tests'
 * spans) and readable.c.
 *
 * Ownership: a Call holds strong references to its Tape and its Function;
 * a Tape holds its caches (functions by id, threads by (session, index));
 * a Function holds no reference to its Tape (its defaults are rebuilt with
 * the trust and allow list copied from it), so there is no cycle between
 * a Tape and its caches.  The store of a Tape stays open while any query
 * of it is open: close() waits for the last one (see ct_tape_query_close).
 * The reader sees the tape only through store.h (no SQL here): every
 * store call that may do I/O runs with the GIL released.
 */
#ifndef CALLTAPE_READER_H
#define CALLTAPE_READER_H

#include "store.h"
#include "binding.h"

typedef struct ct_tape {
    PyObject_HEAD store *sto; /* NULL once closed (`st` is always the module state) */
    PyObject *path;           /* str */
    PyObject *allow;          /* tuple of module names, or NULL */
    int trust;
    int closing;         /* close() was called while queries were open */
    Py_ssize_t nqueries; /* open queries on sto */
    PyObject *functions; /* dict: function id -> Function, or NULL before use */
    PyObject *threads;   /* dict: (session, index) -> (ident, name), or NULL */
    PyObject *contexts;  /* dict: session -> its test spans (contexts.c), or NULL */
    PyObject *sessions;  /* dict: session id -> Session, oldest first, for replay's
                            import folders (a session's folders never change), or NULL */
    PyObject *replayer;  /* the Replayer of replays without options (replay_tape.c), or
                            NULL before the first; it holds no reference to the Tape
                            between runs */
} ct_tape;

typedef struct ct_function {
    PyObject_HEAD int64_t id, line, calls, raised, total_ns, min_ns, max_ns, self_ns;
    int has_durations; /* min_ns and max_ns are known (calls > 0) */
    int has_total;     /* total_ns is known (not on sessions of older tapes) */
    int has_self;      /* self_ns is known (not on tapes older than self time) */
    int trust;
    PyObject *module, *qualname, *file, *full; /* str; full is "module.qualname" */
    PyObject *names;                           /* tuple of parameter names */
    PyObject *sig;                             /* bytes: the signature as recorded */
    PyObject *allow;                           /* tuple or NULL: for rebuilding defaults */
    PyObject *tape_path;                       /* str: the tape, for messages */
    PyObject *defaults;                        /* dict, rebuilt on first use */
    Py_ssize_t nparams;
    uint8_t *kinds;       /* inspect.Parameter kind of each parameter */
    Py_ssize_t *dflt_off; /* offset of each default value in sig, -1: none */
} ct_function;

/* One recorded call.  The encoded values follow the struct, slot after slot
 * in enum value_slot order (slot i from value_at[i] to value_at[i + 1],
 * empty when not recorded), so a Call is one allocation; arguments and
 * result are rebuilt on first access and kept. */
typedef struct ct_call {
    PyObject_VAR_HEAD ct_tape *tape; /* strong */
    ct_function *fn;                 /* strong */
    int64_t id, session, parent, depth, thread, start, duration;
    int64_t cpu_ns, rss_before, rss_after, rss_peak, energy_pkg, energy_dram;
    size_t value_at[VALUE_NSLOTS + 1]; /* offsets in data, by enum value_slot */
    uint8_t outcome;
    uint16_t flags;
    uint8_t rebuilt;    /* args and defaults are set */
    uint8_t result_set; /* result is set */
    PyObject *args;     /* dict: name -> value */
    PyObject *defaults; /* frozenset of names that took their default */
    PyObject *result;   /* the return value or ExceptionInfo */
    uint8_t data[];     /* the value slots' bytes */
} ct_call;

/* The encoded bytes of `slot` in a Call, and their length (0 when not
 * recorded). */
static inline const uint8_t *ct_call_value(const ct_call *c, enum value_slot slot)
{
    return c->data + c->value_at[slot];
}

static inline size_t ct_call_value_len(const ct_call *c, enum value_slot slot)
{
    return c->value_at[slot + 1] - c->value_at[slot];
}

/* ---- tape.c ---- */

/* Returns 0 when the tape is open, -1 with ValueError when closed. */
int ct_tape_check_open(ct_tape *t);

/* Sets TapeError "the tape <path> is damaged: <where>" (`fmt` and its
 * arguments as for PyUnicode_FromFormat make <where>), followed by ": " and
 * the message of the pending exception when one is pending; that one
 * becomes its cause.  A pending exception that is not damage (see
 * ct_damage; `any` as there) stays as it was.  Returns NULL. */
PyObject *ct_tape_damaged(ct_tape *t, int any, const char *fmt, ...);

/* Sets the exception for the store's error `e` met while reading `what`
 * ("its sessions"): TapeError "the tape <path> is damaged: reading <what>,
 * ..." for damage, TapeError "cannot read <what> from the tape <path>:
 * ..." for other failures (I/O, locks), MemoryError for memory.  Returns
 * NULL. */
PyObject *ct_tape_store_error(ct_tape *t, const store_err *e, const char *what);

/* The Function with tape id `id` (borrowed), loading the function table
 * again when it is not known yet (a tape being recorded grows).  NULL with
 * TapeError naming `call` (the call id that needs it) when the tape has no
 * such function. */
ct_function *ct_tape_function(ct_tape *t, int64_t id, int64_t call);

/* The function table as a dict id -> Function (borrowed), loaded on first
 * use; `fresh` reloads it: CT_FUNCTIONS_RELOAD always (aggregates change
 * while a process records), CT_FUNCTIONS_IF_GROWN when the tape holds
 * functions the cache lacks.  NULL with an exception set. */
enum { CT_FUNCTIONS_CACHED = 0, CT_FUNCTIONS_RELOAD = 1, CT_FUNCTIONS_IF_GROWN = 2 };
PyObject *ct_tape_functions(ct_tape *t, int fresh);

/* The Sessions of the tape with the ids in the set `wanted`, oldest first
 * (new list), read from the tape only when one of them was not read yet
 * (replay asks at every call).  NULL with an exception set. */
PyObject *ct_tape_sessions_of(ct_tape *t, PyObject *wanted);

/* The (ident, name) tuple of thread `index` of `session` (borrowed), or
 * Py_None when the tape does not know it; NULL with an exception set. */
PyObject *ct_tape_thread(ct_tape *t, int64_t session, int64_t index);

/* The thread table as a new list of (session, index, ident) tuples; NULL
 * with an exception set. */
PyObject *ct_tape_thread_rows(ct_tape *t);

/* Starts a search of the tape (GIL released inside).  Returns the query,
 * counted as open until ct_tape_query_close(), or NULL with TapeError (or
 * ValueError when the tape is closed). */
query *ct_tape_query_open(ct_tape *t, const query_filter *f);

/* Closes a query of ct_tape_query_open() (NULL allowed) and closes the
 * store if close() was called meanwhile and this was its last query. */
void ct_tape_query_close(ct_tape *t, query *q);

/* The next call of `q` (GIL released inside): 1 with `c`, its session and
 * function filled in, 0 at the end, -1 with TapeError set. */
int ct_tape_query_next(ct_tape *t, query *q, seg_call *c, int64_t *session, int64_t *function);

/* Sets the exception for the failed query_next of `q` (as
 * ct_tape_query_next does, for callers that call query_next with the GIL
 * released themselves).  Returns -1. */
int ct_tape_query_failed(ct_tape *t, query *q);

/* query_count of `q` (GIL released inside): 0 with *n set, or -1 with
 * TapeError set. */
int ct_tape_query_count(ct_tape *t, query *q, int64_t *n);

/* Rebuilds one value at *p (advancing it) with the tape's trust, allow
 * list and blob table; `memo` (a list, or NULL for a value alone) is the
 * group it belongs to, shared by the values of one group (the arguments of
 * a call).  New reference, or NULL with an exception set (TapeError,
 * without the tape's name, for damage: callers name the call with
 * ct_tape_damaged). */
PyObject *ct_tape_rebuild(ct_tape *t, const uint8_t **p, const uint8_t *end, PyObject *memo);

/* ---- export/export.c ---- */

/* Tape._export(format, fd, procs, session=None, since=, until=, base_ns=0,
 * aggregate_fd=-1):
 * streams the calls of those sessions (ids, or None: all) started within
 * [since, until] (wall ns) into the open file descriptor `fd` (not closed)
 * as "chrome", "jsonl" or "csv"; `procs` is a list of (session, pid,
 * label) naming the processes of a Chrome trace, `base_ns` the wall time
 * its ts 0 stands for; "results" writes results.csv to `fd` and the per
 * function results_aggregate.csv to `aggregate_fd` (both needed), the
 * aggregate computed while streaming.  Returns the number of calls written (new int), or
 * NULL with ValueError (format), OSError (a write) or TapeError. */
PyObject *ct_tape_export(ct_tape *t, PyObject *args, PyObject *kw);

/* ---- views.c ---- */

/* A new Call for `c` of function `fn` (borrowed) in `session`.  Copies the
 * value bytes.  NULL with an exception set. */
ct_call *ct_call_new(ct_tape *t, ct_function *fn, const seg_call *c, int64_t session);

/* The call's arguments (name -> rebuilt value), rebuilt once; borrowed.
 * NULL with an exception set (RefusedGlobal, TapeError). */
PyObject *ct_call_args(ct_call *c);

/* ---- readable.c ---- */

/* call.readable(): a new tuple (args, defaults, outcome) of the call's
 * values, each rebuilt on its own (one that cannot be rebuilt is a
 * calltape.Unreadable marker), and the frozenset of argument names that
 * took their default.  NULL with an exception (memory, KeyboardInterrupt, a malformed
 * value). */
PyObject *ct_call_readable(ct_call *c);

/* The type name of the encoded value at p (bounded by end), as far as the
 * bytes tell ("list", "shop.Cart", "?").  New reference, or NULL with
 * MemoryError. */
PyObject *ct_value_type(const uint8_t *p, const uint8_t *end);

/* The bounded preview text of the encoded value at p.  New reference, or
 * NULL with MemoryError. */
PyObject *ct_preview_text(const uint8_t *p, const uint8_t *end);

/* ---- stored.c ---- */

/* call.stored(name): the slot's values as the tape stores them (type,
 * preview and parts to any depth, nothing rebuilt; layout in stored.c),
 * None when the slot was not recorded.  New reference, or NULL with
 * TapeError when the bytes do not decode. */
PyObject *ct_call_stored(ct_call *c, enum value_slot slot);

/* call.readable_slot(name): the locals or globals (a new dict) or what the
 * call yielded (a new list) with each entry rebuilt on its own as
 * ct_call_readable does, or None when the slot was not recorded.  NULL
 * with an exception as ct_call_readable. */
PyObject *ct_call_readable_slot(ct_call *c, enum value_slot slot);

/* A new Function from a function row of the store (its bytes copied).
 * NULL with an exception set (TapeError for an unreadable signature). */
PyObject *ct_function_from_row(ct_tape *t, const store_function_row *row);

/* A new Session from a session row of the store (its bytes copied).  NULL
 * with an exception set. */
PyObject *ct_session_from_row(ct_tape *t, const store_session_row *row);

/* A timezone-aware (UTC) datetime for `ns` nanoseconds since the epoch,
 * exact to the microsecond (truncated).  New reference or NULL. */
PyObject *ct_datetime_from_ns(ct_state *st, int64_t ns);

/* ---- runs.c ---- */

/* The `session=` argument of the reader's methods (an id, or a list or
 * tuple of ids) as a new PyMem array of *n ids (*n may be 0).  Returns 0,
 * or -1 with TypeError. */
int ct_session_ids(PyObject *session, int64_t **ids, size_t *n);

/* Tape.last_run(): a new list of the session ids of the newest session's
 * run, oldest first (the ancestor it descends from and every session
 * below that one); empty for a tape without sessions.  NULL with
 * TapeError. */
PyObject *ct_tape_last_run(ct_tape *t, PyObject *unused);

/* Tape.functions(session=...): a new list of new Functions with their
 * aggregates over the calls of those sessions only, by id.  NULL with
 * TypeError or TapeError. */
PyObject *ct_tape_functions_of(ct_tape *t, PyObject *session);

/* ---- contexts.c ---- */

/* The node id of the test whose span in `session` holds `at` (a call's
 * start, wall ns): a new str, or None outside every test (and on tapes
 * older than the spans).  NULL with TapeError, or ValueError when the tape
 * is closed and the session's spans were never read. */
PyObject *ct_tape_test_of(ct_tape *t, int64_t session, int64_t at);

/* A copy of one session's test spans that the exporter reads with the GIL
 * released: by start, reach[i] the latest end of spans 0..i, name[i] the
 * UTF-8 of the node id (len[i] bytes), kept alive by `names`. */
typedef struct ct_test_spans {
    int64_t *start, *end, *reach;
    const char **name;
    Py_ssize_t *len;
    PyObject *names; /* list of str, strong */
    size_t n;
} ct_test_spans;

/* Copies the test spans of `session` (read now, newer ones included) into
 * `out`.  Returns 0, or -1 with TapeError or MemoryError (`out` then
 * empty).  Release it with ct_test_spans_free. */
int ct_tape_test_spans_copy(ct_tape *t, int64_t session, ct_test_spans *out);

/* The node id of the span of `s` holding `at` (a call's start, wall ns),
 * UTF-8, `*len` bytes; NULL outside every test.  Needs no GIL. */
const char *ct_test_spans_find(const ct_test_spans *s, int64_t at, Py_ssize_t *len);

/* Releases what ct_tape_test_spans_copy made (needs the GIL). */
void ct_test_spans_free(ct_test_spans *s);

/* The spans `test` (a node id, a node above tests, or a glob on node ids)
 * selects, as a new PyMem array of *n query_spans (*n may be 0: no such
 * test).  Returns 0, or -1 with TypeError (not a str) or TapeError. */
int ct_tape_test_spans(ct_tape *t, PyObject *test, query_span **spans, size_t *n);

/* Tape.tests(test=None, *, session=None): a new list of dicts (test,
 * session, start, end) of the tests those select, by session and start.
 * NULL with TypeError or TapeError. */
PyObject *ct_tape_tests(ct_tape *t, PyObject *args, PyObject *kw);

/* ---- calls.c ---- */

/* Tape.search(function=None, *, file, since, until, min_duration,
 * max_duration, outcome, session, thread, args, energy, order, limit,
 * captured, test):
 * validates the arguments and returns a new Calls.  NULL with ValueError or
 * TypeError naming the bad value. */
PyObject *ct_tape_search(ct_tape *t, PyObject *args, PyObject *kw);

/* Tape.calls(function=None): the matching calls in call id order, as a new
 * list.  NULL with an exception set. */
PyObject *ct_tape_calls_by_id(ct_tape *t, PyObject *function);

/* The calls `c` made directly (in any thread), oldest first: a new list,
 * or NULL. */
PyObject *ct_call_children(ct_call *c);

/* Tape.children(parent=None, *, session=None, min_duration=None,
 * limit=None): the calls a Call (or call id) made directly, or a session's
 * roots, oldest first, as a new Calls; NULL with TypeError, ValueError,
 * KeyError (no such call) or TapeError. */
PyObject *ct_tape_children(ct_tape *t, PyObject *args, PyObject *kw);

/* Seconds (int or float) or a datetime as ns since the epoch; `name` is
 * the parameter, for the TypeError.  Returns 0 or -1. */
int ct_time_to_ns(ct_state *st, PyObject *v, const char *name, int64_t *out);

/* Seconds >= 0 (int or float) as ns; `name` is the parameter, for the
 * TypeError or ValueError.  Returns 0 or -1. */
int ct_duration_to_ns(PyObject *v, const char *name, int64_t *out);

/* Tape.replay(*call_ids, rel=, abs=, globals=, record=, **filters): the
 * calls with those ids, or those a search with the filters finds (oldest
 * first), replayed as ct_replay_calls() does.  New Report or NULL. */
PyObject *ct_tape_replay(ct_tape *t, PyObject *ids, PyObject *kw);
/* The next row of the store cursor `c`, read with the GIL released: 1, 0
 * at the end, -1 with `e` filled (no exception set). */
int ct_tape_next_row(store_cursor *c, store_row *row, store_err *e);

/* What calltape._replay.replay_calls(t, calls, **options) does, run by the
 * Tape's default Replayer when `options` (a dict, or NULL) is empty
 * (replay/replay_tape.c).  New Report, or NULL with the replay's error
 * (ReplayRefused, TapeError, TypeError for a bad option, ...). */
PyObject *ct_replay_calls(ct_tape *t, PyObject *calls, PyObject *options);

/* Call.replay(**options) of `call` (a Call of `t`): as ct_replay_calls() of
 * [call], but returns its Outcome.  New reference, or NULL with the same
 * errors. */
PyObject *ct_replay_call(ct_tape *t, PyObject *call, PyObject *options);

extern PyType_Spec Call_spec;
extern PyType_Spec Function_spec;
extern PyType_Spec Session_spec;
extern PyType_Spec Bound_spec;
extern PyType_Spec Calls_spec;
extern PyType_Spec CallIter_spec;

/* Bound: arguments ready for function(*bound.args, **bound.kwargs). */
typedef struct ct_bound {
    PyObject_HEAD PyObject *args; /* tuple */
    PyObject *kwargs;             /* dict */
} ct_bound;

/* The module state of the type of `o` (a view or a Tape), borrowed. */
static inline ct_state *ct_state_of(PyObject *o)
{
    return PyType_GetModuleState(Py_TYPE(o));
}

/* "returned", "raised" or "closed": the name of a call's rec_outcome. */
static inline const char *ct_outcome_name(int outcome)
{
    static const char *const names[] = {"returned", "raised", "closed"};
    return names[outcome >= 0 && outcome < 3 ? outcome : 2];
}

/* The names of the enum rec_capture values, by value; NULL: unknown. */
static const char *const ct_capture_names[CAPTURE_LAST + 1] = {
    [CAPTURE_DECORATOR] = "decorator", [CAPTURE_MONITOR] = "monitor", [CAPTURE_FLAT] = "flat",
    [CAPTURE_PROBE] = "probe",         [CAPTURE_TIMER] = "timer",
};

/* The text in `b` (UTF-8, invalid bytes replaced) as a str, and frees `b`
 * (views.c).  New reference, or NULL with MemoryError when `b` failed. */
PyObject *ct_wbuf_text(wbuf *b);

/* Writes `seconds` in the unit a person reads best, three figures: "850
 * ns", "12.50 us", "150.0 us", "3.20 ms", "1.50 s" (views.c).  The one
 * duration formatter of the views (reprs) and the command line. */
void ct_format_duration(char *buf, size_t n, double seconds);
/* format_duration(seconds or None) -> str: ct_format_duration, "-" for
 * None.  New reference, or NULL with TypeError for a non-number. */
PyObject *ct_format_duration_py(PyObject *module, PyObject *seconds);

#endif
