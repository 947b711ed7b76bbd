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

#include "engine.h"

#define CT_VALUE_LIMIT_DEFAULT 65536
#define CT_BLOB_MIN 4096
#define CT_PREVIEW_LIMIT 200

enum ct_counter { CT_UNENCODABLE, CT_PICKLED, CT_REDACTED, CT_TRUNCATED, CT_DROPPED, CT_NCOUNTERS };

typedef struct ct_engine_slot {
    engine *eng;
    PyObject *path; /* str */
    uint64_t serial;
    int pinned;    /* a Recorder with tape= uses it */
    int begun;     /* this process's session was begun (lifecycle.c; reset by fork) */
    int exported;  /* ... and exported to child processes as CALLTAPE_SESSION */
    uint8_t *seen; /* by thread index: its REC_THREAD was sent (reset by fork) */
    int64_t counters[CT_NCOUNTERS]; /* of the calls on this tape, not yet sent */
    int counters_dirty;
    uint64_t counters_sent_ns; /* when they were last sent (ct_now_ns) */
    size_t nseen;
} ct_engine_slot;

/* One generator's place in the parking table (parking.c). */
typedef struct ct_park_slot {
    Py_hash_t hash; /* of the generator */
    PyObject *wr;   /* weak reference to it, with the monitor's callback */
    uint8_t *bytes; /* the parked entry (malloc'd, cap bytes) */
    size_t len, cap;
    uint8_t state;  /* empty, live, dead */
    uint8_t parked; /* 1: bytes[0:len] waits for the next resume */
} ct_park_slot;

/* Suspended generators' entries, by generator (parking.c). */
typedef struct ct_parking {
    ct_park_slot *v;
    size_t cap;     /* a power of two, or 0 */
    size_t used;    /* live and dead slots */
    size_t live;    /* live slots */
    size_t nparked; /* live slots holding an entry */
} ct_parking;

/* The running calltape.monitor, read by its hooks (monitor.c). */
typedef struct ct_monitor_state {
    struct Monitor *mon; /* strong while running, else NULL */
    struct ct_state *st;
    ct_engine_slot *slot;
    ct_parking parked;      /* suspended generators' entries */
    PyObject *park_gone;    /* the weak references' callback (self: the module) */
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

/* How instances of one type are captured (objects.c), decided once. */
enum ct_how {
    CT_BY_UNDECIDED = 0,
    CT_BY_CODEC,
    CT_BY_PICKLE,
    CT_BY_NDARRAY,
    CT_BY_OBJECT,
    CT_BY_GLOBAL, /* builtin functions and modules: by name */
    CT_BY_REFUSE,
};

/* 1 when the type named `full` (module.qualname, or a built-in type's
 * tp_name) is a standard-library data type captured by its own reduce,
 * which runs no user code (typeinfo.c's list), 0 when not.  Never raises. */
int ct_reduce_known(const char *full);

typedef struct ct_typeinfo {
    PyTypeObject *tp; /* the key, borrowed; NULL: a free slot */
    PyObject *alive;  /* weak reference to tp (heap types), else NULL */
    uint8_t how;      /* enum ct_how */
    uint8_t kind;     /* CT_BY_OBJECT: an enum wire_kind */
    PyObject *codec;  /* CT_BY_CODEC: (name, encode, decode) */
    uint8_t *header;  /* varint n + module, varint n + qualname */
    size_t header_len;
    struct PyMemberDef **slots; /* the __slots__ of its Python classes */
    PyObject **slot_names;      /* their names (str, owned), in the same order */
    size_t nslots;
    uint8_t over_streak; /* top-level values of it over the budget in a row */
    uint32_t over_skip;  /* of those to come, how many are not encoded */
    uint8_t *refused;    /* CT_BY_REFUSE: its UNENCODABLE marker, encoded once */
    size_t refused_len;
    PyObject *module_dict; /* of its module, when it has module-level instances */
    PyObject *singletons;  /* tuple: the names those instances have there */
} ct_typeinfo;

/* Open-addressing table of ct_typeinfo keyed by type pointer. */
typedef struct ct_typecache {
    ct_typeinfo *v;
    size_t cap, n;
} ct_typecache;

/* The module state, grouped by the part that owns each field.  Every
 * reference in it is listed once in module.c (CT_STATE_REFS), which both
 * module_traverse and module_clear follow. */
typedef struct ct_state {
    PyObject *module;       /* borrowed: the module owns the state */
    PyObject *marker_types; /* dict name -> class, set by _bind() */
    PyObject *replay_names; /* tuple of the names replay uses, interned once
                               (ct_replay_names_new, replay/replay.c) */
    struct {                /* attribute names resolve.c reads at every replayed call,
                               interned once at module exec */
        PyObject *spec, *initializing, *name, *sys_path0, *cwd, *path;
    } names;
    struct { /* the module's heap types */
        PyTypeObject *Recorder, *Pending, *AsyncGenProxy, *Monitor;
        PyTypeObject *Tape, *Call, *Calls, *CallIter, *Function, *Session, *Bound;
        PyTypeObject *RestrictedUnpickler, *Replayer;
        PyTypeObject *ProbeInstrument, *ProbeHook; /* probes/ */
        PyTypeObject *ProbeWrapper;                /* probes/wrapper.c: 3.11 only, else NULL */
        PyTypeObject *SpecReader;                  /* probes/specs.c */
        PyTypeObject *Context;                     /* record/context.c */
        PyTypeObject *FlatProfile;                 /* record/flat.c */
        PyTypeObject *TimerSink;                   /* record/timer.c */
    } type;
    struct {             /* calltape.flat_profile (record/flat.c) */
        PyObject *codes; /* dict: code -> how many FlatProfiles wrap it, or NULL */
        PyObject *fns;   /* dict: code or callable -> capsule of its flat_fn, or NULL */
        int tool_held;   /* the flat profiler's tool id is ours */
    } flat;
    struct {                             /* run-time probes (probes/hook.c) */
        PyObject *registry;              /* dict: code -> started ProbeHook, or NULL */
        PyObject *keys;                  /* tuple: the namespace's interned names, or NULL */
        PyObject *out_name, *write_name; /* "out", "write" (print instruments), or NULL */
        struct ProbeHook **started;      /* the registry's hooks, for the callbacks' scan */
        size_t nstarted;
        int tool_held; /* the probe tool id is ours */
    } probes;
    struct {                        /* how values other than built-in data are written */
        PyObject *codecs;           /* dict: type -> (name, encode, decode) */
        PyObject *codec_decoders;   /* dict: name -> decode */
        ct_typecache types;         /* how each type seen is captured (typeinfo.c) */
        PyObject *pickle_types;     /* set of types to pickle (configure(pickle=)), or NULL */
        destructor subtype_dealloc; /* tp_dealloc of every class defined in Python */
    } objects;
    struct { /* what the binding uses of other modules, imported at init */
        PyObject *pickle_dumps, *pickle_loads, *pickle_Unpickler, *bytes_io;
        Py_ssize_t unpickler_rules_offset; /* where a RestrictedUnpickler keeps its rules */
        PyObject *np_load;                 /* numpy.load, imported on first ndarray rebuilt */
        PyObject *sys_dict;                /* sys.__dict__, where PySys_GetObject looks */
        PyObject *dt_datetime;             /* datetime.datetime */
        PyObject *dt_timedelta;            /* datetime.timedelta */
        PyObject *dt_epoch;                /* datetime(1970, 1, 1, tzinfo=timezone.utc) */
        PyObject *protocol5;
    } imported;
    struct {                    /* which names are secrets (redact.c) */
        PyObject *exact;        /* frozenset of lower-case names */
        PyObject *patterns;     /* tuple of lower-case glob patterns */
        int builtin;            /* the built-in list applies */
        struct ct_redact_memo { /* decisions for names under the configured rules alone */
            PyObject **names;   /* str, owned; NULL: a free slot */
            uint8_t *hit;
            size_t cap, n;
        } memo;
    } redaction;
    struct {                      /* where records go (sink.c) */
        PyObject *tape_path;      /* str: the configured default tape */
        PyObject *tape_namer;     /* configure(tape=callable): asked for the default
                                     tape at its first use, then cleared; or NULL */
        PyObject *session_info;   /* dict with host, argv, python, version */
        PyObject *warn_category;  /* RecordingWarning */
        PyObject *warned;         /* set of problem kinds already reported */
        ct_engine_slot **engines; /* one per tape path; the slots never move */
        size_t nengines, capengines;
        ct_engine_slot *default_slot;   /* engine of tape_path, once used */
        uint64_t next_serial;           /* engine serials */
        int64_t counters[CT_NCOUNTERS]; /* of the value being captured, not yet a call's */
        int64_t totals[CT_NCOUNTERS];   /* sent so far, for stats() */
        int counters_dirty;
        double flush_interval;
        Py_ssize_t buffer_bytes;
        int on_full_drop;
        retain_policy retain; /* configure(retain=...); zeros: none */
    } sink;
    struct {                    /* the process's life and children (lifecycle.c) */
        PyObject *sigterm_prev; /* the SIGTERM handler calltape's replaced, or NULL */
        int watching_children;  /* the audit hook of lifecycle.c is installed */
    } life;
    struct {                   /* the recording: ids, switches, the monitor */
        uint64_t seq;          /* last call seq handed out in this process */
        uint64_t next_fn;      /* next process-local function id */
        uint64_t next_thread;  /* next process-local thread index */
        uint64_t next_context; /* last span id handed out (record/context.c) */
        Py_ssize_t max_value_bytes;
        int enabled;
        int finalized;             /* the module was cleared: calls are counted, not recorded */
        int locals_tool_ready;     /* sys.monitoring tool for locals=True claimed */
        uint8_t energy_default;    /* CT_ENERGY_CONFIGURED after configure(energy=True), else 0 */
        PyObject *decorated_codes; /* set: code objects of @record functions */
        uint64_t monitor_generation;
        ct_monitor_state monitor;
    } rec;
    struct {                 /* log lines handed to `logging` off the calling thread (logq.c) */
        pthread_mutex_t mu;  /* guards everything below but the Python objects */
        pthread_cond_t more; /* signalled at each line queued, and at stop */
        pthread_cond_t done; /* signalled when the drainer has handed a batch */
        struct ct_logq_line *ring; /* `cap` slots, `n` queued from `head` */
        size_t cap, head, n;
        char *bytes;                     /* the queued lines' texts (LOGQ_BYTES, made at need) */
        uint64_t bytes_head, bytes_tail; /* bytes ever freed, ever taken */
        uint64_t queued, handed;         /* lines ever queued, ever handed (or dropped at fork) */
        uint64_t dropped;                /* lines refused by a full queue */
        uint64_t dropped_warned;         /* dropped when the warning was issued (0: not yet) */
        long pid;                        /* the process whose drainer runs (0: none started) */
        int stop;                        /* the drainer is asked to leave */
        int running;                     /* a drainer is in ct_logq_run */
        int sleeping;                    /* it waits for `more`: the next line signals it */
        unsigned long drainer;           /* its thread ident */
        PyObject *hand;                  /* callable(target, level, text, created, thread_ident) */
        PyObject *start;                 /* callable(): starts the drainer thread */
        struct ct_logrec_cache *recs;    /* the LogRecord templates (logrecord.c) */
    } logq;
    struct { /* instruments shared by every capture path (instruments/) */
        ct_energy energy;
        int statm_fd;    /* /proc/self/statm for memory=True (ct_read_rss) */
        int statm_state; /* 0: not opened yet, 1: open, -1: cannot be read */
        long page_size;
        int stat_fd;    /* /proc/self/stat for @timer's thread count (ct_thread_count) */
        int stat_state; /* as statm_state */
        long pid;       /* getpid(), read once per process (ct_pid; 0: not yet) */
    } instr;
} ct_state;

/* capture.c */

/* Which names are secrets: the built-in and configured names (when
 * use_default) and the extra exact names and glob patterns of one capture
 * path (lower-case; NULL for none). */
typedef struct ct_redact {
    PyObject *exact;    /* frozenset of str, or NULL */
    PyObject *patterns; /* tuple of str, or NULL */
    int use_default;
} ct_redact;

/* The objects of one group of values encoded together (the arguments of a
 * call, its result, ...), by memo index (engine.h, "Identity"): `next` is
 * the next index; only values that may occur again (ct_memo_shared) have an
 * entry (a strong reference), and a hash index once there are many. */
#define CT_MEMO_INLINE 16
typedef struct ct_memo_entry {
    PyObject *obj;
    size_t index;
    uint8_t open; /* its contents are being written: it cannot be referred to */
} ct_memo_entry;
typedef struct ct_memo {
    size_t next;
    ct_memo_entry *v; /* inline_v until it grows */
    size_t n, cap;
    uint32_t *table; /* entry + 1 by object address; 0: empty */
    size_t tcap;
    ct_memo_entry inline_v[CT_MEMO_INLINE];
} ct_memo;
/* Starts an empty memo (no allocation until it outgrows its inline room). */
#define CT_MEMO_START(m)                                                                           \
    ((m)->next = 0, (m)->v = (m)->inline_v, (m)->n = 0, (m)->cap = CT_MEMO_INLINE,                 \
     (m)->table = NULL, (m)->tcap = 0)
/* ct_memo_free of a memo that holds something. */
void ct_memo_release(ct_memo *m);
/* Releases the references and memory of `m` and empties it.  Inline: most
 * memos hold nothing (no value occurred twice). */
static inline void ct_memo_free(ct_memo *m)
{
    if (m->n || m->table || m->v != m->inline_v)
        ct_memo_release(m);
    else
        m->next = 0;
}

typedef struct ct_capture {
    ct_state *st;
    Py_ssize_t limit;        /* max encoded bytes of one top-level value */
    int top;                 /* top-level values may go to the blob store */
    const ct_redact *redact; /* the values of dict keys that name secrets are
                                REDACTED at any depth; NULL: none */
    ct_memo *memo;           /* the group's memo; NULL: each value is a group */
    PyObject *pickle;        /* tuple of types to pickle (record(pickle=)), or NULL */
    size_t top_start;        /* where the top-level value being written starts */
    int max_depth;           /* deepest nesting written; 0: as deep as the format allows */
    int blobbed;             /* set when a top-level value went to the blob store */
    int opaque_cut;          /* > 0 while writing the attributes of an object that holds
                                opaque state (objects.c): nothing this deep is walked */
} ct_capture;

/* The nesting a capture writes to (the format's bound when unset). */
static inline int ct_capture_depth(const ct_capture *c)
{
    return c->max_depth > 0 && c->max_depth < WIRE_MAX_DEPTH - 4 ? c->max_depth
                                                                 : WIRE_MAX_DEPTH - 4;
}
/* Encodes `v` as one wire value onto `b`.  Never raises: failures become
 * UNENCODABLE or TRUNCATED markers and are counted.  Returns 0, or -1 when
 * `b` ran out of memory. */
int ct_capture_value(ct_capture *c, wbuf *b, PyObject *v);
/* The same for a value ct_capture_small() already declined. */
int ct_capture_other(ct_capture *c, wbuf *b, PyObject *v);
/* Writes the str `s` as varint length + UTF-8 bytes ("" when not a str).
 * Never raises. */
void ct_put_text(wbuf *b, PyObject *s);
/* Encodes what `sanitize(name, v)` returns in place of `v` (`name` a str,
 * or NULL for "return").  A sanitizer that raises is never a reason to write
 * `v`: the value becomes UNENCODABLE(type of v, "sanitize raised <exception
 * type>") and is counted, whichever slot it fills (an argument, a default, the
 * result, a local or a global); the exception is cleared, except that a
 * KeyboardInterrupt is raised again at the program's next bytecode.  Returns
 * 0, or -1 when `b` ran out of memory. */
int ct_capture_sanitized(ct_capture *c, wbuf *b, PyObject *sanitize, PyObject *name, PyObject *v);
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
    st->sink.counters[CT_REDACTED]++;
    st->sink.counters_dirty = 1;
}

/* 1 when the C type `solid` (the built-in base of a Python class) holds
 * no state of its own beyond object's (datetime.tzinfo, say): instances of
 * the class are then recorded and made like plain objects. */
int ct_stateless_base(const PyTypeObject *solid);

/* The values of the set __slots__ of `v` (those of its classes defined in
 * Python), read directly: a new list, or NULL with MemoryError. */
PyObject *ct_slot_values(const ct_state *st, PyObject *v);

/* The types `types` (a type or an iterable of types) as a new tuple, or
 * NULL with TypeError naming `option`. */
PyObject *ct_type_tuple(PyObject *types, const char *option);

/* Encodes an exception (type, message, frames) as a WIRE_EXCEPTION. */
void ct_capture_exception(ct_state *st, wbuf *b, PyObject *exc);
/* 1 when `name` (a parameter, a keyword, a dict key, a local or a global)
 * names a secret under the rules `rd`; 0 otherwise, also for a non-str.
 * Runs no code of the program (str subclasses are read as str).  Never
 * raises. */
int ct_should_redact(ct_state *st, PyObject *name, const ct_redact *rd);
/* The rules `rd` when some name can match them, else NULL (nothing to
 * check inside values). */
static inline const ct_redact *ct_redact_active(const ct_state *st, const ct_redact *rd)
{
    int configured = st->redaction.builtin ||
                     (st->redaction.exact && PySet_GET_SIZE(st->redaction.exact)) ||
                     (st->redaction.patterns && PyTuple_GET_SIZE(st->redaction.patterns));
    int extra = (rd->exact && PySet_GET_SIZE(rd->exact)) ||
                (rd->patterns && PyTuple_GET_SIZE(rd->patterns));
    return extra || (rd->use_default && configured) ? rd : NULL;
}

/* Splits an iterable of names into a frozenset of exact lower-case names
 * and a tuple of lower-case glob patterns (new references).  Returns 0, or
 * -1 with TypeError naming the bad item. */
int ct_split_redact(PyObject *names, PyObject **exact, PyObject **patterns);

/* Forgets the decisions ct_should_redact remembered (the configured rules
 * changed, or the module is cleared).  Never fails. */
void ct_redact_memo_clear(ct_state *st);

/* Visits the names the decisions are remembered for (GC support). */
int ct_redact_memo_traverse(const ct_state *st, visitproc visit, void *arg);

/* 1 with *out (a new reference) when `o` has the attribute `name`, 0 with
 * *out NULL when it has not (the AttributeError cleared), -1 with another
 * exception. */
static inline int ct_optional_attr(PyObject *o, const char *name, PyObject **out)
{
    *out = PyObject_GetAttrString(o, name);
    if (*out)
        return 1;
    if (!PyErr_ExceptionMatches(PyExc_AttributeError))
        return -1;
    PyErr_Clear();
    return 0;
}

/* 1 when the module named by the `n` bytes at `mod` is the one named by
 * the `pn` bytes at `pkg` or lies inside it as a package ("shop.cart" in
 * "shop", not "shopping"), else 0.  The one "module inside package"
 * matcher: allow lists (allow.c), replay's allow list and the monitor's
 * include and exclude lists. */
static inline int ct_module_within(const char *mod, size_t n, const char *pkg, size_t pn)
{
    return n >= pn && memcmp(mod, pkg, pn) == 0 && (n == pn || mod[pn] == '.');
}

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
 * not damage), ImportError (a module not installed here) and MemoryError;
 * everything else (KeyboardInterrupt, ...) stays pending as it was.  With nothing pending, sets
 * TapeError(prefix). Returns NULL. */
PyObject *ct_damage(ct_state *st, int any, PyObject *prefix);

/* rebuild.c */
typedef struct ct_rebuild {
    ct_state *st;
    int trust;
    PyObject *allow;       /* tuple of allowed names: modules or module.name */
    PyObject *blob_loader; /* callable(hash bytes) -> bytes, or NULL */
    PyObject *memo;        /* list: the group's objects by memo index (None:
                              reserved); NULL: each value is a group */
    PyObject *blob_owner;  /* borrowed: the Tape whose load_blob(hash) reads a blob
                              when blob_loader is NULL (looked up at the first
                              blob only), or NULL */
} ct_rebuild;
/* Decodes one value at *p (advancing it).  New reference, or NULL with an
 * exception set (TapeError for malformed bytes, UnpicklingError naming a
 * refused global). */
PyObject *ct_rebuild_value(ct_rebuild *r, const uint8_t **p, const uint8_t *end);
/* Decodes the value at rd (one nested at `depth`) with r->memo set.  New
 * reference, or NULL with an exception. */
PyObject *ct_rebuild_nested(ct_rebuild *r, wreader *rd, int depth);

/* rebuild_object.c: the OBJECT, GLOBAL or REF of the token `t` (read by
 * wire_next; an OBJECT's children follow at `rd`).  New reference, or NULL
 * with an exception (TapeError when malformed, RefusedGlobal for a name
 * not allowed). */
PyObject *ct_rebuild_object(ct_rebuild *r, wreader *rd, int depth, const wire_tok *t);
PyObject *ct_rebuild_global(ct_rebuild *r, const wire_tok *t);
PyObject *ct_rebuild_ref(ct_rebuild *r, const wire_tok *t);
/* Gives `v` (NULL: reserved for now, filled later) the next memo index.
 * 0, or -1 with an exception. */
int ct_rebuild_memo_push(ct_rebuild *r, PyObject *v, Py_ssize_t *index);

/* A session's argv (a wire LIST) as a list of str, without rebuilding
 * anything: a STR item is its text, any other its preview.  New
 * reference, or NULL with TapeError when malformed. */
PyObject *ct_rebuild_texts(ct_state *st, const uint8_t *p, size_t n);

/* allow.c */
/* The object a tape value names as `module`.`name`, when the rules of `r`
 * allow it (new reference): a name on the built-in list of data types or
 * on r->allow, or an object defined in an allowed module and reached from
 * it through classes only; anything with r->trust.  NULL with RefusedGlobal
 * naming the global when refused, or the ImportError or AttributeError of an
 * allowed one that cannot be found here. */
PyObject *ct_allow_resolve(const ct_rebuild *r, const char *module, const char *name);
/* 1 when `obj` is one of the built-in list of data types and pure
 * functions (by its __module__ and __qualname__): what a recorded reduce
 * may call.  Never raises. */
int ct_allow_is_safe(PyObject *obj);
/* Loads pickle bytes under the rules of `r` (pickle.loads when trusted).
 * New reference, or NULL with the unpickler's exception (RefusedGlobal for
 * a refused global). */
PyObject *ct_unpickle(const ct_rebuild *r, const uint8_t *p, size_t n);
/* Creates the RestrictedUnpickler type, a subclass of `base`
 * (pickle.Unpickler) whose instances keep their rules at *offset.  New
 * reference, or NULL with an exception set. */
PyObject *ct_restricted_unpickler_type(PyObject *module, PyObject *base, Py_ssize_t *offset);

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
/* `text` (a str, stolen) cut to at most `max` characters at a word
 * boundary, ending in "\u2026" when cut (a single word longer than `max`
 * is cut where it must).  New reference, or NULL with an exception. */
PyObject *ct_cut_words(PyObject *text, Py_ssize_t max);
/* compare(expected, actual, *, rel=0.0, abs=0.0) -> None or the diff. */
PyObject *ct_compare_py(PyObject *module, PyObject *args, PyObject *kw);

/* values.c */
/* encode(value) -> bytes: one wire value, no blobs, no size limit. */
PyObject *ct_encode_py(PyObject *module, PyObject *v);
/* decode(data, *, trust=False, allow=()) -> the value encode() wrote. */
PyObject *ct_decode_py(PyObject *module, PyObject *args, PyObject *kw);
/* literal(value) -> Python source evaluating to an equal value, or None. */
PyObject *ct_literal_py(PyObject *module, PyObject *v);

/* tape.c */
/* check_writable(path) -> None when a recording could write the tape at
 * `path` (see store_check_write), else TapeError with the reason. */
PyObject *ct_check_writable_py(PyObject *module, PyObject *path);
/* prune(path, before_ns, keep_sessions=-1, max_bytes=-1) -> (sessions, calls,
 * size): store_prune on the tape at `path` (sessions that ended before
 * before_ns; with keep_sessions >= 0 those not among the newest
 * keep_sessions; with max_bytes >= 0 the oldest while the tape is larger),
 * then store_size; the GIL released; TapeError with one sentence. */
PyObject *ct_prune_py(PyObject *module, PyObject *args);

/* parse_size(text) -> bytes (retain_parse_size); ValueError with one
 * sentence naming the text. */
PyObject *ct_parse_size_py(PyObject *module, PyObject *arg);

/* copy(src, dst) -> (sessions, calls) copied: store_copy, the GIL released;
 * TapeError with its one sentence on failure. */
PyObject *ct_copy_py(PyObject *module, PyObject *args);

/* resolve.c */
/* What replay calls for a recorded module + qualname, found as the recorded
 * program found it (see resolve.c; `file`, the recorded source file or
 * NULL, finds a script run as __main__): a new tuple indexed by CT_R_*
 * (the callable, wrapped in a Recorder writing to `record_tape` when that
 * is not NULL; its KIND_*; the function or None; its varnames or None; for
 * __main__ the script's module, else None), or a new str saying why it
 * cannot be replayed, or NULL with an exception (memory, KeyboardInterrupt). */
enum { CT_R_CALLABLE, CT_R_KIND, CT_R_FN, CT_R_NAMES, CT_R_MAIN, CT_R_SIZE };
PyObject *ct_resolve(ct_state *st, PyObject *record_tape, PyObject *module, PyObject *qualname,
                     PyObject *file);
/* resolve(module, qualname, file=None) -> the function replay would call
 * (imported, @calltape.record, classmethod and staticmethod unwrapped), or
 * LookupError with the reason it cannot be found. */
PyObject *ct_resolve_py(PyObject *module, PyObject *args, PyObject *kw);
/* push_import_path(folders) -> the list of those folders that were not on
 * sys.path and are now in front of it, in the order given. */
PyObject *ct_import_path_push_py(PyObject *module, PyObject *folders);
/* pop_import_path(added): takes out of sys.path what push_import_path
 * added.  Keeps a pending exception (then returns NULL). */
PyObject *ct_import_path_pop_py(PyObject *module, PyObject *added);
/* recorded_folders(sessions, *, current=True) -> the sys_path0 and cwd of
 * each session, then (when `current`) the current folder, each once: where
 * replay imports from. */
PyObject *ct_recorded_folders_py(PyObject *module, PyObject *args, PyObject *kw);

/* The names replay uses (its statuses, then the Call attributes it reads,
 * in replay.h's order), interned: a new tuple made once at module exec, or
 * NULL with an exception. */
PyObject *ct_replay_names_new(void);

/* The types: recorder.c, pending.c, replay.c, tape.c, monitor.c */
extern PyType_Spec Replayer_spec;
extern PyType_Spec Recorder_spec;
extern PyType_Spec FlatProfile_spec; /* record/flat.c */
extern PyType_Spec Pending_spec;
extern PyType_Spec AsyncGenProxy_spec;
extern PyType_Spec Tape_spec;
extern PyType_Spec Monitor_spec;
extern PyType_Spec Context_spec;   /* record/context.c */
extern PyType_Spec TimerSink_spec; /* record/timer.c */

/* Appends the `n` bytes of UTF-8 at `s` as a JSON string, quotes included
 * (export.c; also the lines of @calltape.timer).  Never fails (a failed
 * allocation marks `b` failed). */
void ct_put_json(wbuf *b, const char *s, size_t n);

/* Appends the `n` bytes at `s` as one RFC 4180 CSV field: quoted (quotes
 * doubled) always, or with `always_quoted` 0 only when it holds a comma, a
 * quote or a line end (export.c; also the rows of @calltape.timer).  Never
 * fails (a failed allocation marks `b` failed). */
void ct_put_csv(wbuf *b, const char *s, size_t n, int always_quoted);

/* ---- parking.c: suspended generators' entries --------------------------- */

/* Parks `n1` + `n2` bytes (`b1` then `b2`) under generator `gen` (borrowed),
 * with `callback` (borrowed) called when the generator is freed.  Returns 0,
 * or -1 with an exception set (nothing is parked). */
int ct_park_put(ct_parking *p, PyObject *gen, PyObject *callback, const void *b1, size_t n1,
                const void *b2, size_t n2);

/* The entry parked under `gen`, no longer parked (borrowed: valid until the
 * next call on `p`), its length in *len; NULL when none.  Never raises. */
const uint8_t *ct_park_take(ct_parking *p, PyObject *gen, size_t *len);

/* 1 when an entry is parked under `gen`, else 0.  Never raises. */
int ct_park_has(const ct_parking *p, PyObject *gen);

/* Generator `gen` finished: its slot, if any, is freed.  Never raises. */
void ct_park_forget(ct_parking *p, PyObject *gen);

/* The generator of weak reference `wr` is gone: its slot is freed; returns
 * the entry that was parked (malloc'd: the caller frees it, length in *len)
 * or NULL.  Never raises. */
uint8_t *ct_park_gone(ct_parking *p, PyObject *wr, size_t *len);

/* Calls fn(ctx, entry, len) for each parked entry (fn may be NULL), then
 * empties the table and releases its weak references. */
void ct_park_drain(ct_parking *p, void (*fn)(void *, const uint8_t *, size_t), void *ctx);

/* Visits the weak references `p` owns.  Returns what `visit` returned. */
int ct_park_traverse(const ct_parking *p, visitproc visit, void *arg);
/* Per-thread recording context (recorder.c). */
typedef struct ct_thread {
    uint64_t parent; /* seq of the innermost recorded call running */
    uint64_t depth;
    uint64_t index;      /* process-local thread index, 0: not assigned */
    int busy;            /* inside calltape's own code: do not record */
    uint64_t last_start; /* monotonic start of this thread's last @record call: the next
                            one starts later (a call's UUID names its start) */
    int64_t rss_after;   /* RSS read at the end of the last call recorded with memory */
    char log_name[64];   /* threading's name at the thread's first queued log line (logq.c) */
    int log_name_known;
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

/* "ExcType: message" of the pending exception, which is cleared: a new
 * reference.  NULL with the exception kept pending when it is a
 * KeyboardInterrupt or a MemoryError (never a reason to go on). */
static inline PyObject *ct_describe_pending(void)
{
    if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt) ||
        PyErr_ExceptionMatches(PyExc_MemoryError))
        return NULL;
    PyObject *exc = ct_fetch_exc();
    if (!exc)
        return PyUnicode_FromString("unknown error");
    PyObject *r = PyUnicode_FromFormat("%s: %S", Py_TYPE(exc)->tp_name, exc);
    Py_DECREF(exc);
    if (!r)
        PyErr_Clear();
    return r ? r : PyUnicode_FromString("error");
}

#endif
