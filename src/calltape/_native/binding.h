/*
 * binding.h - shared declarations of the CPython binding (_native).
 *
 * The module state holds every Python object the binding needs; C files
 * reach it through PyType_GetModuleState() of their heap types or through
 * the `ct_state *` kept by Recorder objects (which own a reference to the
 * module, so the state outlives them).
 */
#ifndef CALLTAPE_BINDING_H
#define CALLTAPE_BINDING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <pthread.h>

#include "../../engine/engine.h"

#define CT_VALUE_LIMIT_DEFAULT 65536
#define CT_BLOB_MIN 4096
#define CT_PREVIEW_LIMIT 200

enum ct_counter { CT_UNENCODABLE, CT_PICKLED, CT_REDACTED, CT_TRUNCATED, CT_DROPPED, CT_NCOUNTERS };

typedef struct ct_engine_slot {
    engine *eng;
    PyObject *path; /* str */
    uint64_t serial;
    int pinned;    /* a Recorder with tape= uses it */
    uint8_t *seen; /* by thread index: its REC_THREAD was sent (reset by fork) */
    size_t nseen;
} ct_engine_slot;

/* The running calltape.monitor, read by its hooks (monitor.c). */
typedef struct ct_monitor_state {
    struct Monitor *mon; /* strong while running, else NULL */
    struct ct_state *st;
    ct_engine_slot *slot;
    PyObject *parked;       /* dict: frame -> bytes (suspended generator entries) */
    PyObject *disable;      /* sys.monitoring.DISABLE */
    Py_ssize_t extra_index; /* code extra slot of the decisions, -1: none yet */
    pthread_key_t key;      /* frees a thread's shadow stack when it ends */
    int key_made;
    uint64_t generation;
} ct_monitor_state;

/* One RAPL counter (energy.c). */
typedef struct ct_energy_counter {
    int fd;         /* energy_uj, open; -1: none */
    uint64_t range; /* max_energy_range_uj, 0: unknown */
} ct_energy_counter;

/* Recorder.opt_energy; ct_state.energy_default is CT_ENERGY_CONFIGURED or
 * 0, so that (opt_energy & (CT_ENERGY_ON | energy_default)) says "read". */
enum ct_energy_option { CT_ENERGY_OFF = 0, CT_ENERGY_ON = 1, CT_ENERGY_CONFIGURED = 2 };

typedef struct ct_energy {
    int state; /* 0: not opened yet, 1: readable, -1: unavailable (warned) */
    ct_energy_counter pkg, dram;
} ct_energy;

typedef struct ct_state {
    PyTypeObject *Recorder_type;
    PyTypeObject *Pending_type;
    PyTypeObject *AsyncGenProxy_type;
    PyTypeObject *Tape_type;
    PyTypeObject *Call_type;
    PyTypeObject *Calls_type;
    PyTypeObject *CallIter_type;
    PyTypeObject *Function_type;
    PyTypeObject *Session_type;
    PyTypeObject *Bound_type;
    PyTypeObject *RestrictedUnpickler_type;
    PyTypeObject *Replayer_type;
    PyTypeObject *Monitor_type;
    PyObject *module;         /* borrowed: the module owns the state */
    PyObject *codecs;         /* dict: type -> (name, encode, decode) */
    PyObject *codec_decoders; /* dict: name -> decode */
    PyObject *codec_cache;    /* dict: type -> (name, encode) or None */
    PyObject *pickle_dumps, *pickle_loads, *pickle_Unpickler, *bytes_io;
    PyObject *current_allow; /* borrowed: allowlist of the load running now */
    PyObject *np_load;       /* numpy.load, imported on first ndarray rebuilt */
    PyObject *dt_datetime;   /* datetime.datetime */
    PyObject *dt_timedelta;  /* datetime.timedelta */
    PyObject *dt_epoch;      /* datetime(1970, 1, 1, tzinfo=timezone.utc) */
    PyObject *protocol5;
    PyObject *redact_exact;    /* frozenset of lower-case names */
    PyObject *redact_patterns; /* tuple of lower-case glob patterns */
    int redact_default;        /* the built-in list applies */
    PyObject *marker_types;    /* dict name -> class, set by _bind() */
    PyObject *warn_category;   /* RecordingWarning */
    PyObject *warned;          /* set of problem kinds already reported */
    PyObject *tape_path;       /* str: the configured default tape */
    PyObject *session_info;    /* dict with host, argv, python, version */
    ct_engine_slot **engines;  /* one per tape path; the slots never move */
    size_t capengines;
    ct_engine_slot *default_slot; /* engine of tape_path, once used */
    size_t nengines;
    uint64_t seq;                   /* last call seq handed out in this process */
    uint64_t next_fn;               /* next process-local function id */
    uint64_t next_thread;           /* next process-local thread index */
    uint64_t next_serial;           /* engine serials */
    int64_t counters[CT_NCOUNTERS]; /* not yet sent to the writer */
    int64_t totals[CT_NCOUNTERS];   /* sent so far, for stats() */
    int counters_dirty;
    Py_ssize_t max_value_bytes;
    double flush_interval;
    Py_ssize_t buffer_bytes;
    int on_full_drop;
    int enabled;
    int locals_tool_ready;     /* sys.monitoring tool for locals=True claimed */
    PyObject *decorated_codes; /* set: code objects of @record functions */
    uint64_t monitor_generation;
    ct_monitor_state monitor;
    uint8_t energy_default; /* CT_ENERGY_CONFIGURED after configure(energy=True), else 0 */
    ct_energy energy;
} ct_state;

/* module.c */
/* Returns the engine for `path` (NULL: the default tape), creating it on
 * first use.  Returns NULL with an exception set on failure. Borrowed. */
ct_engine_slot *ct_engine_for(ct_state *st, PyObject *path);
/* Appends a record to `slot`'s engine and reports store trouble once as a
 * RecordingWarning.  Never raises; any pending exception is preserved. */
void ct_append(ct_state *st, ct_engine_slot *slot, const uint8_t *rec, size_t n);
/* Issues a RecordingWarning for problem `kind` once per process.  Never
 * raises; saves and restores a pending exception. */
void ct_warn_once(ct_state *st, const char *kind, const char *msg);

/* energy.c */
/* Opens the RAPL counters on first use.  Returns 1 when they can be read,
 * -1 when not (a RecordingWarning names the path, once).  Never raises. */
int ct_energy_open(ct_state *st);
/* Closes the counters (module teardown). */
void ct_energy_close(ct_state *st);
/* Reads the package and DRAM counters (dram 0 without a DRAM zone).
 * Returns 0, or -1 when a counter cannot be read. */
int ct_energy_read(const ct_energy *en, uint64_t *pkg, uint64_t *dram);
/* Microjoules from `start` to `end` of counter `c`, across a wrap. */
uint64_t ct_energy_delta(const ct_energy_counter *c, uint64_t start, uint64_t end);

/* capture.c */
typedef struct ct_capture {
    ct_state *st;
    Py_ssize_t limit; /* max encoded bytes of one top-level value */
    int top;          /* top-level values may go to the blob store */
} ct_capture;
/* Encodes `v` as one wire value onto `b`.  Never raises: failures become
 * UNENCODABLE or TRUNCATED markers and are counted.  Returns 0, or -1 when
 * `b` ran out of memory. */
int ct_capture_value(ct_capture *c, wbuf *b, PyObject *v);
/* The same for a value ct_capture_small() already declined. */
int ct_capture_other(ct_capture *c, wbuf *b, PyObject *v);
/* The commonest small values, written without the general checks: they can
 * neither fail nor come near the size or blob thresholds.  Returns 1 when
 * done. */
static inline int ct_capture_small(wbuf *b, PyObject *v)
{
    PyTypeObject *tp = Py_TYPE(v);
    if (b->cap - b->len < 32)
        return 0;
    uint8_t *p = b->data + b->len;
    if (tp == &PyLong_Type) {
#if PY_VERSION_HEX >= 0x030C0000
        if (!_PyLong_IsCompact((PyLongObject *)v))
            return 0;
        long long x = (long long)_PyLong_CompactValue((PyLongObject *)v);
#else
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow)
            return 0;
#endif
        *p++ = WIRE_INT;
        p = put_varint_raw(p, zigzag(x));
    } else if (tp == &PyFloat_Type) {
        double d = PyFloat_AS_DOUBLE(v);
        *p++ = WIRE_FLOAT;
        memcpy(p, &d, 8);
        p += 8;
    } else if (tp == &PyUnicode_Type && PyUnicode_IS_COMPACT_ASCII(v) &&
               PyUnicode_GET_LENGTH(v) <= 20) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(v);
        *p++ = WIRE_STR;
        *p++ = (uint8_t)n;
        memcpy(p, PyUnicode_DATA(v), (size_t)n);
        p += n;
    } else if (v == Py_None) {
        *p++ = WIRE_NONE;
    } else if (v == Py_True || v == Py_False) {
        *p++ = v == Py_True ? WIRE_TRUE : WIRE_FALSE;
    } else {
        return 0;
    }
    b->len = (size_t)(p - b->data);
    return 1;
}

/* Writes a REDACTED marker in place of a value and counts it. */
static inline void ct_put_redacted(ct_state *st, wbuf *b)
{
    wbuf_byte(b, WIRE_REDACTED);
    st->counters[CT_REDACTED]++;
    st->counters_dirty = 1;
}

/* Encodes an exception (type, message, frames) as a WIRE_EXCEPTION. */
void ct_capture_exception(ct_state *st, wbuf *b, PyObject *exc);
/* 1 when the parameter name should be redacted under (extra, use_default). */
int ct_should_redact(ct_state *st, PyObject *name, PyObject *extra_exact, PyObject *extra_patterns,
                     int use_default);

/* Splits an iterable of names into a frozenset of exact lower-case names
 * and a tuple of lower-case glob patterns (new references).  Returns 0, or
 * -1 with TypeError naming the bad item. */
int ct_split_redact(PyObject *names, PyObject **exact, PyObject **patterns);

/* The class the Python layer bound under `name` (TapeError, Redacted, ...),
 * borrowed, or NULL before _bind(). */
static inline PyObject *ct_marker_type(const ct_state *st, const char *name)
{
    return st->marker_types ? PyDict_GetItemString(st->marker_types, name) : NULL;
}

/* Turns the pending exception into damage (rebuild.c): a TapeError whose
 * message is "<prefix>: <the original message>" (prefix may be NULL), with
 * the original as its __cause__.  A pending TapeError is always turned;
 * with `any`, so is any other Exception except RefusedGlobal (a refusal,
 * not damage) and MemoryError; everything else (KeyboardInterrupt, ...)
 * stays pending as it was.  With nothing pending, sets TapeError(prefix).
 * Returns NULL. */
PyObject *ct_damage(ct_state *st, int any, PyObject *prefix);

/* rebuild.c */
typedef struct ct_rebuild {
    ct_state *st;
    int trust;
    PyObject *allow;       /* tuple of module prefixes */
    PyObject *blob_loader; /* callable(hash bytes) -> bytes, or NULL */
} ct_rebuild;
/* Decodes one value at *p (advancing it).  New reference, or NULL with an
 * exception set (TapeError for malformed bytes, UnpicklingError naming a
 * refused global). */
PyObject *ct_rebuild_value(ct_rebuild *r, const uint8_t **p, const uint8_t *end);
PyObject *ct_restricted_unpickler_spec_type(PyObject *module, PyObject *base);

/* compare.c */
/* Compares a recorded value with a replayed one (rules in compare.c).
 * Returns 0 when they count as equal, 1 when not (*diff then holds a new
 * str naming where, starting with `root`, e.g. "result[2].price: 9.5 !=
 * 9.75"), or -1 with an exception set. */
int ct_compare(ct_state *st, PyObject *expected, PyObject *actual, double rel, double abs,
               const char *root, PyObject **diff);
/* Returns 0 when rel and abs are usable tolerances (>= 0, not NaN), or -1
 * with ValueError naming them. */
int ct_check_tolerance(double rel, double abs);
/* compare(expected, actual, *, rel=0.0, abs=0.0) -> None or the diff. */
PyObject *ct_compare_py(PyObject *module, PyObject *args, PyObject *kw);

/* values.c */
/* encode(value) -> bytes: one wire value, no blobs, no size limit. */
PyObject *ct_encode_py(PyObject *module, PyObject *v);
/* decode(data, *, trust=False, allow=()) -> the value encode() wrote. */
PyObject *ct_decode_py(PyObject *module, PyObject *args, PyObject *kw);
/* literal(value) -> Python source evaluating to an equal value, or None. */
PyObject *ct_literal_py(PyObject *module, PyObject *v);

/* replay.c */
/* resolve(module, qualname) -> the function replay would call (imported,
 * @calltape.record, classmethod and staticmethod unwrapped), or LookupError
 * with the reason it cannot be found. */
PyObject *ct_resolve_py(PyObject *module, PyObject *args);

/* recorder.c / pending.c / replay.c */
extern PyType_Spec Replayer_spec;
extern PyType_Spec Recorder_spec;
extern PyType_Spec Pending_spec;
extern PyType_Spec AsyncGenProxy_spec;
extern PyType_Spec Tape_spec;
extern PyType_Spec Monitor_spec;

/* Releases what the monitor state holds (module clear). */
void ct_monitor_clear(ct_state *st);
/* Stops the running calltape.monitor, if any.  Never raises. */
void ct_monitor_stop_running(ct_state *st);

/* Sends the value counters gathered since the last call (unencodable,
 * pickled, ...) to `slot`'s writer as a REC_COUNTERS record and adds them to
 * the totals that stats() reports.  Never raises. */
void ct_emit_counters(ct_state *st, ct_engine_slot *slot);

/* Per-thread recording context (recorder.c). */
typedef struct ct_thread {
    uint64_t parent; /* seq of the innermost recorded call running */
    uint64_t depth;
    uint64_t index; /* process-local thread index, 0: not assigned */
    int busy;       /* inside calltape's own code: do not record */
} ct_thread;
/* The per-thread context (recorder.c).  A C11 thread-local with the
 * initial-exec model: reaching it costs one instruction. */
extern __attribute__((tls_model("initial-exec"))) _Thread_local ct_thread ct_tls_thread;
/* The calling thread's recording context. */
static inline ct_thread *ct_thread_get(void)
{
    return &ct_tls_thread;
}
/* 1 when `slot`'s engine was told about thread `t`. */
static inline int ct_thread_known(const ct_engine_slot *slot, const ct_thread *t)
{
    return t->index && t->index < slot->nseen && slot->seen[t->index];
}

/* Announces the current thread to `slot`'s engine if needed. */
void ct_thread_announce(ct_state *st, ct_engine_slot *slot, ct_thread *t);

static inline uint64_t ct_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#if PY_VERSION_HEX < 0x030C0000
static inline PyObject *ct_fetch_exc(void)
{
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    if (!t)
        return NULL;
    PyErr_NormalizeException(&t, &v, &tb);
    if (tb && v)
        PyException_SetTraceback(v, tb);
    Py_XDECREF(t);
    Py_XDECREF(tb);
    return v;
}
static inline void ct_restore_exc(PyObject *v)
{
    if (!v)
        return;
    PyObject *tb = PyException_GetTraceback(v);
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(v)), v, tb);
}
#else
#define ct_fetch_exc() PyErr_GetRaisedException()
#define ct_restore_exc(v) PyErr_SetRaisedException(v)
#endif

#endif
