/*
 * views.c - what reading a tape returns: Call (one recorded call, its
 * values rebuilt lazily, once), Function (a recorded function and its
 * aggregates), Session (one recording process) and Bound (arguments ready
 * to call a function again).
 *
 * Invariants: a Call copies its encoded values when it is made, so it
 * stays valid after its search moved on or its tape was closed (only
 * values stored in the blob table then need the tape open); rebuilt values
 * are cached on the object and never rebuilt twice; times are exact to the
 * microsecond in datetimes and to the nanosecond in *_ns attributes.
 * Anything the tape's bytes do not rebuild (a value, a name that is not
 * text, a signature, a time out of range) is a TapeError naming the tape
 * and the call, function or session, never another exception type.
 */
#include "reader.h"

#include <stddef.h>
#include <structmember.h>

static const char *const outcome_names[] = {"returned", "raised", "closed"};

PyObject *ct_datetime_from_ns(ct_state *st, int64_t ns)
{
    int64_t us = ns >= 0 ? ns / 1000 : -((-ns + 999) / 1000);
    int64_t sec = us >= 0 ? us / 1000000 : -((-us + 999999) / 1000000);
    PyObject *td = PyObject_CallFunction(st->dt_timedelta, "iLL", 0, (long long)sec,
                                         (long long)(us - sec * 1000000));
    if (!td)
        return NULL;
    PyObject *dt = PyNumber_Add(st->dt_epoch, td);
    Py_DECREF(td);
    return dt;
}

void ct_format_duration(char *buf, size_t n, double seconds)
{
    static const struct {
        const char *unit;
        double scale;
    } units[] = {{"s", 1.0}, {"ms", 1e-3}, {"us", 1e-6}};
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (seconds >= units[i].scale) {
            double v = seconds / units[i].scale;
            snprintf(buf, n, v < 100 ? "%.2f %s" : "%.1f %s", v, units[i].unit);
            return;
        }
    }
    snprintf(buf, n, "%.0f ns", seconds * 1e9);
}

PyObject *ct_format_duration_py(PyObject *module, PyObject *seconds)
{
    (void)module;
    if (seconds == Py_None)
        return PyUnicode_FromString("-");
    double v = PyFloat_AsDouble(seconds);
    if (v == -1.0 && PyErr_Occurred())
        return NULL;
    char buf[64];
    ct_format_duration(buf, sizeof buf, v);
    return PyUnicode_FromString(buf);
}

/* ct_format_duration of `ns` nanoseconds. */
static void format_ns(char *buf, size_t n, int64_t ns)
{
    ct_format_duration(buf, n, (double)ns / 1e9);
}

static ct_state *state_of(PyObject *o)
{
    return PyType_GetModuleState(Py_TYPE(o));
}

/* ======================================================================== */
/* Function                                                                 */
/* ======================================================================== */

/* The text of a column (none: ""); NULL with UnicodeDecodeError when it
 * is not UTF-8 (callers report it as damage). */
static PyObject *column_text(store_bytes b)
{
    const char *s = (const char *)b.p;
    return PyUnicode_DecodeUTF8(s ? s : "", s ? (Py_ssize_t)b.n : 0, "surrogatepass");
}

/* Reads the parameter at *p of a recorded signature, TUPLE(STR name, INT
 * kind[, default]), into slot `i` of `f` (*p advanced past it).  Returns
 * 0, or -1 (an exception set only when Python failed). */
static int parse_parameter(ct_function *f, Py_ssize_t i, const uint8_t **p, const uint8_t *end,
                           const uint8_t *base)
{
    wire_tok tuple, name, kind;
    const uint8_t *q = wire_next(*p, end, &tuple);
    if (!q || tuple.tag != WIRE_TUPLE || (tuple.u != 2 && tuple.u != 3))
        return -1;
    q = wire_next(q, end, &name);
    if (!q || name.tag != WIRE_STR)
        return -1;
    q = wire_next(q, end, &kind);
    int64_t k = q && kind.tag == WIRE_INT ? unzigzag(kind.u) : -1;
    if (k < 0 || k > 4)
        return -1;
    PyObject *text =
        PyUnicode_DecodeUTF8((const char *)name.s, (Py_ssize_t)name.n, "surrogatepass");
    if (!text)
        return -1;
    PyTuple_SET_ITEM(f->names, i, text);
    f->kinds[i] = (uint8_t)k;
    f->dflt_off[i] = tuple.u == 3 ? (Py_ssize_t)(q - base) : -1;
    *p = tuple.u == 3 ? wire_skip(q, end) : q;
    return *p ? 0 : -1;
}

/* Reads names, kinds and default offsets from the recorded signature: a
 * LIST of TUPLE(STR name, INT kind[, default]).  Returns 0, or -1. */
static int parse_signature(ct_function *f)
{
    const uint8_t *base = (const uint8_t *)PyBytes_AS_STRING(f->sig);
    const uint8_t *end = base + PyBytes_GET_SIZE(f->sig);
    wire_tok list;
    const uint8_t *p = wire_next(base, end, &list);
    if (!p || list.tag != WIRE_LIST)
        return -1;
    f->nparams = (Py_ssize_t)list.u;
    f->names = PyTuple_New(f->nparams);
    f->kinds = PyMem_Calloc((size_t)list.u + 1, 1);
    f->dflt_off = PyMem_Calloc((size_t)list.u + 1, sizeof(Py_ssize_t));
    if (!f->names || !f->kinds || !f->dflt_off)
        return -1;
    for (Py_ssize_t i = 0; i < f->nparams; i++)
        if (parse_parameter(f, i, &p, end, base) < 0)
            return -1;
    return 0;
}

PyObject *ct_function_from_row(ct_tape *t, const store_function_row *row)
{
    ct_state *st = state_of((PyObject *)t);
    ct_function *f = PyObject_GC_New(ct_function, st->Function_type);
    if (!f)
        return NULL;
    /* every field set before the first exit */
    f->id = row->id;
    f->line = row->line;
    f->calls = row->calls;
    f->raised = row->raised;
    f->total_ns = row->total_ns;
    f->has_durations = row->min_ns != STORE_NONE;
    f->min_ns = row->min_ns != STORE_NONE ? row->min_ns : 0;
    f->max_ns = row->max_ns != STORE_NONE ? row->max_ns : 0;
    f->trust = t->trust;
    f->allow = Py_XNewRef(t->allow);
    f->tape_path = Py_NewRef(t->path);
    f->names = f->defaults = NULL;
    f->kinds = NULL;
    f->dflt_off = NULL;
    f->nparams = 0;
    f->module = column_text(row->module);
    f->qualname = column_text(row->qualname);
    f->file = column_text(row->file);
    f->sig =
        PyBytes_FromStringAndSize((const char *)row->signature.p, (Py_ssize_t)row->signature.n);
    f->full =
        f->module && f->qualname ? PyUnicode_FromFormat("%U.%U", f->module, f->qualname) : NULL;
    PyObject_GC_Track(f);
    if (!f->module || !f->qualname || !f->file || !f->sig || !f->full) {
        ct_tape_damaged(t, 1, "function %lld has a name or file that is not text",
                        (long long)f->id);
        goto error;
    }
    if (parse_signature(f) < 0) {
        ct_tape_damaged(t, 1, "function %lld (%U), its signature cannot be read", (long long)f->id,
                        f->full);
        goto error;
    }
    return (PyObject *)f;
error:
    Py_DECREF(f);
    return NULL;
}

static int Function_traverse(ct_function *f, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(f));
    Py_VISIT(f->defaults);
    return 0;
}

static int Function_clear(ct_function *f)
{
    Py_CLEAR(f->module);
    Py_CLEAR(f->qualname);
    Py_CLEAR(f->file);
    Py_CLEAR(f->full);
    Py_CLEAR(f->names);
    Py_CLEAR(f->sig);
    Py_CLEAR(f->allow);
    Py_CLEAR(f->tape_path);
    Py_CLEAR(f->defaults);
    return 0;
}

static void Function_dealloc(ct_function *f)
{
    PyTypeObject *tp = Py_TYPE(f);
    PyObject_GC_UnTrack(f);
    Function_clear(f);
    PyMem_Free(f->kinds);
    PyMem_Free(f->dflt_off);
    tp->tp_free((PyObject *)f);
    Py_DECREF(tp);
}

/* The defaults dict, rebuilt on first use (borrowed).  NULL with an
 * exception: TapeError naming the tape, the function and the parameter
 * for a default that does not rebuild. */
static PyObject *function_defaults(ct_function *f)
{
    if (f->defaults)
        return f->defaults;
    ct_state *st = state_of((PyObject *)f);
    PyObject *d = PyDict_New();
    ct_rebuild rb = {st, f->trust, f->allow, NULL};
    const uint8_t *base = (const uint8_t *)PyBytes_AS_STRING(f->sig);
    const uint8_t *end = base + PyBytes_GET_SIZE(f->sig);
    for (Py_ssize_t i = 0; d && i < f->nparams; i++) {
        if (f->dflt_off[i] < 0)
            continue;
        const uint8_t *p = base + f->dflt_off[i];
        PyObject *v = ct_rebuild_value(&rb, &p, end);
        if (!v) {
            PyObject *where = PyUnicode_FromFormat(
                "the tape %U is damaged: function %lld (%U), the default of %U", f->tape_path,
                (long long)f->id, f->full, PyTuple_GET_ITEM(f->names, i));
            if (where)
                ct_damage(st, 0, where);
            Py_XDECREF(where);
        }
        if (!v || PyDict_SetItem(d, PyTuple_GET_ITEM(f->names, i), v) < 0)
            Py_CLEAR(d);
        Py_XDECREF(v);
    }
    f->defaults = d;
    return d;
}

static PyObject *Function_get_defaults(ct_function *f, void *c)
{
    (void)c;
    PyObject *d = function_defaults(f);
    return d ? PyDict_Copy(d) : NULL;
}

static PyObject *Function_get_parameters(ct_function *f, void *c)
{
    (void)c;
    return PySequence_List(f->names);
}

static PyObject *Function_get_kinds(ct_function *f, void *c)
{
    (void)c;
    PyObject *out = PyList_New(f->nparams);
    for (Py_ssize_t i = 0; out && i < f->nparams; i++) {
        PyObject *k = PyLong_FromLong(f->kinds[i]);
        if (!k) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, k);
    }
    return out;
}

static PyObject *seconds_or_none(int known, int64_t ns)
{
    if (!known)
        Py_RETURN_NONE;
    return PyFloat_FromDouble((double)ns / 1e9);
}

static PyObject *Function_get_seconds(ct_function *f, void *which)
{
    switch ((int)(intptr_t)which) {
    case 0:
        return PyFloat_FromDouble((double)f->total_ns / 1e9);
    case 1:
        return seconds_or_none(f->has_durations, f->min_ns);
    case 2:
        return seconds_or_none(f->has_durations, f->max_ns);
    default:
        if (f->calls <= 0)
            Py_RETURN_NONE;
        return PyFloat_FromDouble((double)f->total_ns / 1e9 / (double)f->calls);
    }
}

static PyObject *Function_repr(PyObject *self)
{
    ct_function *f = (ct_function *)self;
    char mean[32] = "-", max[32] = "-";
    if (f->calls > 0)
        format_ns(mean, sizeof mean, f->total_ns / f->calls);
    if (f->has_durations)
        format_ns(max, sizeof max, f->max_ns);
    PyObject *params = PyUnicode_FromString(", ");
    PyObject *joined = params ? PyUnicode_Join(params, f->names) : NULL;
    Py_XDECREF(params);
    if (!joined)
        return NULL;
    PyObject *out =
        PyUnicode_FromFormat("<Function %U(%U) at %U:%lld: %lld call%s, %lld raised,"
                             " mean %s, max %s>",
                             f->full, joined, f->file, (long long)f->line, (long long)f->calls,
                             f->calls == 1 ? "" : "s", (long long)f->raised, mean, max);
    Py_DECREF(joined);
    return out;
}

static PyMemberDef Function_members[] = {
    {"id", T_LONGLONG, offsetof(ct_function, id), READONLY, "the function's id on the tape"},
    {"module", T_OBJECT, offsetof(ct_function, module), READONLY, NULL},
    {"qualname", T_OBJECT, offsetof(ct_function, qualname), READONLY, NULL},
    {"file", T_OBJECT, offsetof(ct_function, file), READONLY, "the source file"},
    {"line", T_LONGLONG, offsetof(ct_function, line), READONLY, "its first line"},
    {"calls", T_LONGLONG, offsetof(ct_function, calls), READONLY, "recorded calls"},
    {"raised", T_LONGLONG, offsetof(ct_function, raised), READONLY, "calls that raised"},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef Function_getset[] = {
    {"parameters", (getter)Function_get_parameters, NULL, "parameter names, in order", NULL},
    {"kinds", (getter)Function_get_kinds, NULL, "inspect.Parameter kinds, in parameter order",
     NULL},
    {"defaults", (getter)Function_get_defaults, NULL, "parameter name -> default value", NULL},
    {"total", (getter)Function_get_seconds, NULL, "total duration in seconds", (void *)0},
    {"min", (getter)Function_get_seconds, NULL, "shortest call in seconds, None before any",
     (void *)1},
    {"max", (getter)Function_get_seconds, NULL, "longest call in seconds, None before any",
     (void *)2},
    {"mean", (getter)Function_get_seconds, NULL, "mean duration in seconds, None before any",
     (void *)3},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Function_slots[] = {
    {Py_tp_dealloc, Function_dealloc},
    {Py_tp_traverse, Function_traverse},
    {Py_tp_clear, Function_clear},
    {Py_tp_members, Function_members},
    {Py_tp_getset, Function_getset},
    {Py_tp_repr, Function_repr},
    {Py_tp_doc, "A recorded function with its aggregates (durations in seconds)."},
    {0, NULL},
};

PyType_Spec Function_spec = {
    .name = "calltape.Function",
    .basicsize = sizeof(ct_function),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = Function_slots,
};

/* ======================================================================== */
/* Session                                                                  */
/* ======================================================================== */

typedef struct ct_session {
    PyObject_HEAD PyObject *id, *pid, *ppid, *parent, *host, *argv, *python, *version, *start, *end,
        *mpi_rank, *counters, *sys_path0, *cwd;
} ct_session;

#define SESSION_NFIELDS 14

static PyObject **session_fields(ct_session *s)
{
    return &s->id;
}

static PyObject *int_or_none(int64_t v)
{
    if (v == STORE_NONE)
        Py_RETURN_NONE;
    return PyLong_FromLongLong(v);
}

/* The text of a column, or None when the tape holds none. */
static PyObject *text_or_none(store_bytes b)
{
    return b.p ? column_text(b) : Py_NewRef(Py_None);
}

PyObject *ct_session_from_row(ct_tape *t, const store_session_row *row)
{
    ct_state *st = state_of((PyObject *)t);
    ct_session *s = PyObject_GC_New(ct_session, st->Session_type);
    if (!s)
        return NULL;
    memset(session_fields(s), 0, SESSION_NFIELDS * sizeof(PyObject *));
    PyObject_GC_Track(s);
    static const char *const counters[] = {"unencodable", "pickled", "redacted", "truncated",
                                           "dropped"};
    s->id = PyLong_FromLongLong(row->id);
    s->start = ct_datetime_from_ns(st, row->start_ns);
    s->end = row->end_ns == STORE_NONE ? Py_NewRef(Py_None) : ct_datetime_from_ns(st, row->end_ns);
    s->host = column_text(row->host);
    s->pid = int_or_none(row->pid);
    s->ppid = int_or_none(row->ppid);
    s->parent = int_or_none(row->parent);
    s->python = column_text(row->python);
    s->version = column_text(row->calltape);
    s->mpi_rank = int_or_none(row->mpi_rank);
    if (s->mpi_rank && PyLong_Check(s->mpi_rank) && PyLong_AsLong(s->mpi_rank) < 0)
        Py_SETREF(s->mpi_rank, Py_NewRef(Py_None));
    s->counters = PyDict_New();
    for (int i = 0; s->counters && i < 5; i++) {
        PyObject *v = PyLong_FromLongLong(row->counters[i]);
        if (!v || PyDict_SetItemString(s->counters, counters[i], v) < 0)
            Py_CLEAR(s->counters);
        Py_XDECREF(v);
    }
    s->sys_path0 = text_or_none(row->sys_path0);
    s->cwd = text_or_none(row->cwd);
    s->argv = ct_rebuild_texts(PyType_GetModuleState(Py_TYPE(t)), row->argv.p, row->argv.n);
    for (int i = 0; i < SESSION_NFIELDS; i++)
        if (!session_fields(s)[i]) {
            /* a text, a time or the argv the row does not hold */
            ct_tape_damaged(t, 1, "session %lld cannot be read", (long long)row->id);
            Py_DECREF(s);
            return NULL;
        }
    return (PyObject *)s;
}

static int Session_traverse(ct_session *s, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(s));
    for (int i = 0; i < SESSION_NFIELDS; i++)
        Py_VISIT(session_fields(s)[i]);
    return 0;
}

static int Session_clear(ct_session *s)
{
    for (int i = 0; i < SESSION_NFIELDS; i++)
        Py_CLEAR(session_fields(s)[i]);
    return 0;
}

static void Session_dealloc(ct_session *s)
{
    PyTypeObject *tp = Py_TYPE(s);
    PyObject_GC_UnTrack(s);
    Session_clear(s);
    tp->tp_free((PyObject *)s);
    Py_DECREF(tp);
}

static PyObject *Session_repr(PyObject *self)
{
    ct_session *s = (ct_session *)self;
    PyObject *dropped = PyDict_GetItemString(s->counters, "dropped");
    return PyUnicode_FromFormat("<Session %S: pid %S on %U, started %S, argv %R, Python %U,"
                                " calltape %U, %S dropped>",
                                s->id, s->pid, s->host, s->start, s->argv, s->python, s->version,
                                dropped ? dropped : Py_None);
}

static PyMemberDef Session_members[] = {
    {"id", T_OBJECT, offsetof(ct_session, id), READONLY, "the session's id on the tape"},
    {"pid", T_OBJECT, offsetof(ct_session, pid), READONLY, NULL},
    {"ppid", T_OBJECT, offsetof(ct_session, ppid), READONLY, NULL},
    {"parent", T_OBJECT, offsetof(ct_session, parent), READONLY,
     "the session of the process that forked this one, or None"},
    {"host", T_OBJECT, offsetof(ct_session, host), READONLY, NULL},
    {"argv", T_OBJECT, offsetof(ct_session, argv), READONLY, NULL},
    {"python", T_OBJECT, offsetof(ct_session, python), READONLY, "the Python version"},
    {"version", T_OBJECT, offsetof(ct_session, version), READONLY, "the calltape version"},
    {"start", T_OBJECT, offsetof(ct_session, start), READONLY, "start time (UTC datetime)"},
    {"end", T_OBJECT, offsetof(ct_session, end), READONLY,
     "time of the last write (UTC datetime), or None"},
    {"mpi_rank", T_OBJECT, offsetof(ct_session, mpi_rank), READONLY, "MPI rank, or None"},
    {"counters", T_OBJECT, offsetof(ct_session, counters), READONLY,
     "unencodable, pickled, redacted, truncated and dropped values"},
    {"sys_path0", T_OBJECT, offsetof(ct_session, sys_path0), READONLY,
     "the program's sys.path[0], absolute (where it found its modules), or None"},
    {"cwd", T_OBJECT, offsetof(ct_session, cwd), READONLY, "the program's working folder, or None"},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot Session_slots[] = {
    {Py_tp_dealloc, Session_dealloc},
    {Py_tp_traverse, Session_traverse},
    {Py_tp_clear, Session_clear},
    {Py_tp_members, Session_members},
    {Py_tp_repr, Session_repr},
    {Py_tp_doc, "One process that recorded onto the tape."},
    {0, NULL},
};

PyType_Spec Session_spec = {
    .name = "calltape.Session",
    .basicsize = sizeof(ct_session),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = Session_slots,
};

/* ======================================================================== */
/* Bound                                                                    */
/* ======================================================================== */

typedef struct ct_bound {
    PyObject_HEAD PyObject *args; /* tuple */
    PyObject *kwargs;             /* dict */
} ct_bound;

static int Bound_traverse(ct_bound *b, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(b));
    Py_VISIT(b->args);
    Py_VISIT(b->kwargs);
    return 0;
}

static int Bound_clear(ct_bound *b)
{
    Py_CLEAR(b->args);
    Py_CLEAR(b->kwargs);
    return 0;
}

static void Bound_dealloc(ct_bound *b)
{
    PyTypeObject *tp = Py_TYPE(b);
    PyObject_GC_UnTrack(b);
    Bound_clear(b);
    tp->tp_free((PyObject *)b);
    Py_DECREF(tp);
}

static PyObject *Bound_repr(PyObject *self)
{
    ct_bound *b = (ct_bound *)self;
    return PyUnicode_FromFormat("Bound(args=%R, kwargs=%R)", b->args, b->kwargs);
}

static PyMemberDef Bound_members[] = {
    {"args", T_OBJECT, offsetof(ct_bound, args), READONLY, "positional arguments (tuple)"},
    {"kwargs", T_OBJECT, offsetof(ct_bound, kwargs), READONLY, "keyword arguments (dict)"},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot Bound_slots[] = {
    {Py_tp_dealloc, Bound_dealloc},
    {Py_tp_traverse, Bound_traverse},
    {Py_tp_clear, Bound_clear},
    {Py_tp_members, Bound_members},
    {Py_tp_repr, Bound_repr},
    {Py_tp_doc, "Arguments ready for function(*bound.args, **bound.kwargs)."},
    {0, NULL},
};

PyType_Spec Bound_spec = {
    .name = "calltape.Bound",
    .basicsize = sizeof(ct_bound),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = Bound_slots,
};

/* ======================================================================== */
/* Call                                                                     */
/* ======================================================================== */

ct_call *ct_call_new(ct_tape *t, ct_function *fn, const seg_call *c, int64_t session)
{
    ct_state *st = state_of((PyObject *)t);
    size_t args_len = (c->flags & REC_HAS_ARGS) ? c->args_len : 0;
    size_t result_len = (c->flags & REC_HAS_RESULT) ? c->result_len : 0;
    size_t locals_len = (c->flags & REC_HAS_LOCALS) ? c->locals_len : 0;
    size_t globals_len = (c->flags & REC_HAS_GLOBALS) ? c->globals_len : 0;
    size_t yields_len = (c->flags & REC_HAS_YIELDS) ? c->yields_len : 0;
    ct_call *call = PyObject_GC_NewVar(
        ct_call, st->Call_type,
        (Py_ssize_t)(args_len + result_len + locals_len + globals_len + yields_len));
    if (!call)
        return NULL;
    call->tape = (ct_tape *)Py_NewRef((PyObject *)t);
    call->fn = (ct_function *)Py_NewRef((PyObject *)fn);
    call->id = c->id;
    call->session = session;
    call->parent = c->parent;
    call->depth = c->depth;
    call->thread = c->thread;
    call->start = c->start;
    call->duration = c->duration;
    call->cpu_ns = c->cpu_ns;
    call->rss_before = c->rss_before;
    call->rss_after = c->rss_after;
    call->rss_peak = c->rss_peak;
    call->energy_pkg = c->energy_pkg;
    call->energy_dram = c->energy_dram;
    call->outcome = c->outcome;
    call->flags = c->flags;
    call->args_len = args_len;
    call->result_len = result_len;
    call->locals_len = locals_len;
    call->globals_len = globals_len;
    call->yields_len = yields_len;
    call->rebuilt = call->result_set = 0;
    call->args = call->defaults = call->result = NULL;
    if (args_len)
        memcpy(call->data, c->args, args_len);
    if (result_len)
        memcpy(call->data + args_len, c->result, result_len);
    if (locals_len)
        memcpy(call->data + args_len + result_len, c->locals, locals_len);
    if (globals_len)
        memcpy(call->data + args_len + result_len + locals_len, c->globals, globals_len);
    if (yields_len)
        memcpy(call->data + args_len + result_len + locals_len + globals_len, c->yields,
               yields_len);
    PyObject_GC_Track(call);
    return call;
}

static int Call_traverse(ct_call *c, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(c));
    Py_VISIT(c->tape);
    Py_VISIT(c->fn);
    Py_VISIT(c->args);
    Py_VISIT(c->defaults);
    Py_VISIT(c->result);
    return 0;
}

static int Call_clear(ct_call *c)
{
    Py_CLEAR(c->tape);
    Py_CLEAR(c->fn);
    Py_CLEAR(c->args);
    Py_CLEAR(c->defaults);
    Py_CLEAR(c->result);
    c->rebuilt = c->result_set = 0;
    return 0;
}

static void Call_dealloc(ct_call *c)
{
    PyTypeObject *tp = Py_TYPE(c);
    PyObject_GC_UnTrack(c);
    Call_clear(c);
    tp->tp_free((PyObject *)c);
    Py_DECREF(tp);
}

static int call_alive(ct_call *c)
{
    if (c->tape && c->fn)
        return 0;
    PyErr_SetString(PyExc_ValueError, "this Call was cleared");
    return -1;
}

/* Sets the TapeError of call `c`, whose `what` ("its result") does not
 * rebuild, after the pending TapeError if any (see ct_tape_damaged).
 * Returns NULL. */
static PyObject *call_damaged(ct_call *c, const char *what)
{
    return ct_tape_damaged(c->tape, 0, "call %lld (%U), %s", (long long)c->id, c->fn->full, what);
}

/* The one value in the `n` bytes at `p` of call `c`, rebuilt: a new
 * reference, or NULL with call_damaged's TapeError (or RefusedGlobal, ...)
 * when it does not rebuild or does not fill the bytes. */
static PyObject *call_value(ct_call *c, const char *what, const uint8_t *p, size_t n)
{
    const uint8_t *end = p + n;
    PyObject *v = ct_tape_rebuild(c->tape, &p, end, NULL);
    if (v && p != end) {
        Py_CLEAR(v);
        PyObject *cls = ct_marker_type(state_of((PyObject *)c), "TapeError");
        PyErr_SetString(cls ? cls : PyExc_ValueError, "bytes are left after its value");
    }
    return v ? v : call_damaged(c, what);
}

PyObject *ct_call_args(ct_call *c)
{
    if (c->rebuilt)
        return c->args;
    if (call_alive(c) < 0)
        return NULL;
    PyObject *args = PyDict_New(), *defaults = PySet_New(NULL), *v = NULL;
    PyObject *memo = PyList_New(0); /* the arguments are one group */
    if (!args || !defaults || !memo)
        goto error;
    if (c->flags & REC_HAS_ARGS) {
        PyObject *raw_names = NULL;
        PyObject *names = c->fn->names;
        if (c->flags & REC_UNBOUND) {
            raw_names = Py_BuildValue("(ss)", "args", "kwargs");
            if (!raw_names)
                goto error;
            names = raw_names;
        }
        const uint8_t *p = c->data, *end = c->data + c->args_len;
        Py_ssize_t i = 0;
        for (; p < end; i++) {
            int was_default = *p == WIRE_DEFAULT;
            v = ct_tape_rebuild(c->tape, &p, end, memo);
            if (!v) {
                Py_XDECREF(raw_names);
                call_damaged(c, "its arguments");
                goto error;
            }
            if (i < PyTuple_GET_SIZE(names)) {
                PyObject *name = PyTuple_GET_ITEM(names, i);
                if (PyDict_SetItem(args, name, v) < 0 ||
                    (was_default && PySet_Add(defaults, name) < 0)) {
                    Py_XDECREF(raw_names);
                    goto error;
                }
            }
            Py_CLEAR(v);
        }
        Py_ssize_t want = PyTuple_GET_SIZE(names);
        Py_XDECREF(raw_names);
        if (i != want) {
            ct_tape_damaged(c->tape, 0,
                            "call %lld (%U) holds %zd argument values for %zd parameters",
                            (long long)c->id, c->fn->full, i, want);
            goto error;
        }
    }
    Py_CLEAR(memo);
    PyObject *frozen = PyFrozenSet_New(defaults);
    Py_DECREF(defaults);
    if (!frozen) {
        Py_DECREF(args);
        return NULL;
    }
    if (c->rebuilt) {
        /* another thread rebuilt them while unpickling let it run: keep one */
        Py_DECREF(args);
        Py_DECREF(frozen);
        return c->args;
    }
    c->args = args;
    c->defaults = frozen;
    c->rebuilt = 1;
    return c->args;
error:
    Py_XDECREF(v);
    Py_XDECREF(memo);
    Py_XDECREF(args);
    Py_XDECREF(defaults);
    return NULL;
}

/* The return value or the ExceptionInfo, rebuilt once (borrowed). */
static PyObject *call_outcome_value(ct_call *c)
{
    if (c->result_set)
        return c->result;
    if (call_alive(c) < 0)
        return NULL;
    PyObject *v;
    if (c->result_len)
        v = call_value(c, c->outcome == OUTCOME_RAISED ? "its exception" : "its result",
                       c->data + c->args_len, c->result_len);
    else
        v = Py_NewRef(Py_None);
    if (!v)
        return NULL;
    if (c->result_set) {
        /* another thread rebuilt it meanwhile: keep one */
        Py_DECREF(v);
        return c->result;
    }
    c->result = v;
    c->result_set = 1;
    return v;
}

static PyObject *Call_get_args(ct_call *c, void *unused)
{
    (void)unused;
    return Py_XNewRef(ct_call_args(c));
}

static PyObject *Call_get_defaults(ct_call *c, void *unused)
{
    (void)unused;
    return ct_call_args(c) ? Py_NewRef(c->defaults) : NULL;
}

static PyObject *Call_get_result(ct_call *c, void *which)
{
    int want_exception = which != NULL;
    if ((c->outcome == OUTCOME_RAISED) != want_exception)
        Py_RETURN_NONE;
    return Py_XNewRef(call_outcome_value(c));
}

/* Which parameters Bound leaves out (keep[i] = 0): those that took their
 * default, so that the call made again takes today's default object itself
 * (a sentinel keeps its identity).  A positional-only parameter before a
 * kept positional-only one, and every positional one when *args holds
 * values, cannot be left out. */
static void bound_keep(ct_call *c, PyObject *values, PyObject *names, const uint8_t *kinds,
                       Py_ssize_t n, uint8_t *keep)
{
    Py_ssize_t last_posonly = -1, varargs = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        int dflt = c->defaults && PySet_Contains(c->defaults, name) == 1;
        keep[i] = (uint8_t)!dflt;
        if (kinds[i] == 0 && !dflt)
            last_posonly = i;
        if (kinds[i] == 2)
            varargs = i;
    }
    PyErr_Clear();
    PyObject *extra =
        varargs >= 0 ? PyDict_GetItemWithError(values, PyTuple_GET_ITEM(names, varargs)) : NULL;
    int extra_args = extra && PyTuple_Check(extra) && PyTuple_GET_SIZE(extra) > 0;
    PyErr_Clear();
    for (Py_ssize_t i = 0; i < n; i++)
        if ((kinds[i] == 0 && i < last_posonly) || (extra_args && kinds[i] <= 1))
            keep[i] = 1;
}

static PyObject *Call_get_bound(ct_call *c, void *unused)
{
    (void)unused;
    PyObject *values = ct_call_args(c);
    if (!values)
        return NULL;
    static const uint8_t raw_kinds[2] = {2, 4}; /* *args, **kwargs */
    int unbound = (c->flags & REC_UNBOUND) != 0;
    Py_ssize_t n = unbound ? 2 : c->fn->nparams;
    const uint8_t *kinds = unbound ? raw_kinds : c->fn->kinds;
    ct_bound *b = NULL;
    PyObject *pos = PyList_New(0), *kw = PyDict_New(), *names = NULL;
    uint8_t keep_small[32], *keep = n <= 32 ? keep_small : PyMem_Malloc((size_t)n);
    if (!keep)
        PyErr_NoMemory();
    if (!pos || !kw || !keep)
        goto error;
    names = unbound ? Py_BuildValue("(ss)", "args", "kwargs") : Py_NewRef(c->fn->names);
    if (!names)
        goto error;
    bound_keep(c, values, names, kinds, n, keep);
    int gap = 0; /* a positional parameter was left out: the next go by keyword */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        PyObject *v = keep[i] ? PyDict_GetItemWithError(values, name) : NULL;
        if (!v) {
            if (PyErr_Occurred())
                goto error;
            gap |= kinds[i] <= 1;
            continue;
        }
        int rc;
        switch (kinds[i]) {
        case 0: /* positional-only */
            rc = PyList_Append(pos, v);
            break;
        case 1: /* positional or keyword */
            rc = gap ? PyDict_SetItem(kw, name, v) : PyList_Append(pos, v);
            break;
        case 2: /* *args */
            rc = PyList_SetSlice(pos, PyList_GET_SIZE(pos), PyList_GET_SIZE(pos), v);
            break;
        case 3: /* keyword-only */
            rc = PyDict_SetItem(kw, name, v);
            break;
        default: /* **kwargs */
            rc = PyDict_Update(kw, v);
            break;
        }
        if (rc < 0)
            goto error;
    }
    ct_state *st = state_of((PyObject *)c);
    b = PyObject_GC_New(ct_bound, st->Bound_type);
    if (!b)
        goto error;
    b->args = PyList_AsTuple(pos);
    b->kwargs = Py_NewRef(kw);
    PyObject_GC_Track(b);
    if (!b->args)
        Py_CLEAR(b);
error:
    if (keep != keep_small)
        PyMem_Free(keep);
    Py_XDECREF(names);
    Py_XDECREF(pos);
    Py_XDECREF(kw);
    return (PyObject *)b;
}

static PyObject *Call_get_int(ct_call *c, void *which)
{
    switch ((int)(intptr_t)which) {
    case 0:
        return PyLong_FromLongLong(c->id);
    case 1:
        return PyLong_FromLongLong(c->session);
    case 2:
        if (!c->parent)
            Py_RETURN_NONE;
        return PyLong_FromLongLong(c->parent);
    case 3:
        return PyLong_FromLongLong(c->depth);
    case 4:
        return PyLong_FromLongLong(c->start);
    default:
        return PyLong_FromLongLong(c->duration);
    }
}

static PyObject *Call_get_fn_attr(ct_call *c, void *which)
{
    if (call_alive(c) < 0)
        return NULL;
    switch ((int)(intptr_t)which) {
    case 0:
        return Py_NewRef(c->fn->qualname);
    case 1:
        return Py_NewRef(c->fn->module);
    case 2:
        return Py_NewRef(c->fn->file);
    default:
        return PyLong_FromLongLong(c->fn->line);
    }
}

static PyObject *Call_get_time(ct_call *c, void *end)
{
    PyObject *t = ct_datetime_from_ns(state_of((PyObject *)c), c->start + (end ? c->duration : 0));
    if (!t && c->tape && c->fn)
        ct_tape_damaged(c->tape, 1, "call %lld (%U), its %s time is out of range", (long long)c->id,
                        c->fn->full, end ? "end" : "start");
    return t;
}

static PyObject *Call_get_duration(ct_call *c, void *unused)
{
    (void)unused;
    return PyFloat_FromDouble((double)c->duration / 1e9);
}

static PyObject *Call_get_outcome(ct_call *c, void *unused)
{
    (void)unused;
    return PyUnicode_FromString(outcome_names[c->outcome < 3 ? c->outcome : 2]);
}

static PyObject *Call_get_cpu_time(ct_call *c, void *unused)
{
    (void)unused;
    if (!(c->flags & REC_HAS_CPU))
        Py_RETURN_NONE;
    return PyFloat_FromDouble((double)c->cpu_ns / 1e9);
}

static PyObject *Call_get_memory(ct_call *c, void *unused)
{
    (void)unused;
    if (!(c->flags & REC_HAS_MEMORY))
        Py_RETURN_NONE;
    return Py_BuildValue("{s:L,s:L,s:L}", "rss_before", (long long)c->rss_before, "rss_after",
                         (long long)c->rss_after, "peak", (long long)c->rss_peak);
}

static PyObject *Call_get_energy(ct_call *c, void *unused)
{
    (void)unused;
    if (!(c->flags & REC_HAS_ENERGY))
        Py_RETURN_NONE;
    if (c->energy_dram == ENERGY_DRAM_NONE)
        return Py_BuildValue("{s:d}", "pkg", (double)c->energy_pkg);
    return Py_BuildValue("{s:d,s:d}", "pkg", (double)c->energy_pkg, "dram",
                         (double)(c->energy_dram - 1));
}

static PyObject *Call_get_thread(ct_call *c, void *name)
{
    if (call_alive(c) < 0)
        return NULL;
    PyObject *row = ct_tape_thread(c->tape, c->session, c->thread);
    if (!row)
        return NULL;
    if (row == Py_None)
        Py_RETURN_NONE;
    return Py_NewRef(PyTuple_GET_ITEM(row, name ? 1 : 0));
}

/* call.locals (which NULL) or call.globals: a new dict each time. */
static PyObject *Call_get_frame_data(ct_call *c, void *which)
{
    int globals = which != NULL;
    if (!(c->flags & (globals ? REC_HAS_GLOBALS : REC_HAS_LOCALS)))
        Py_RETURN_NONE;
    if (call_alive(c) < 0)
        return NULL;
    const uint8_t *p = c->data + c->args_len + c->result_len + (globals ? c->locals_len : 0);
    return call_value(c, globals ? "its globals" : "its locals", p,
                      globals ? c->globals_len : c->locals_len);
}

/* call.yielded: the list of values a generator recorded with yields=True
 * yielded (a new list each time), else None. */
static PyObject *Call_get_yielded(ct_call *c, void *unused)
{
    (void)unused;
    if (!(c->flags & REC_HAS_YIELDS))
        Py_RETURN_NONE;
    if (call_alive(c) < 0)
        return NULL;
    const uint8_t *p = c->data + c->args_len + c->result_len + c->locals_len + c->globals_len;
    return call_value(c, "what it yielded", p, c->yields_len);
}

/* The bounded preview of the arguments (values in parameter order). */
static PyObject *call_preview(ct_call *c, size_t limit)
{
    wbuf out;
    wbuf_init(&out, NULL, 0);
    const uint8_t *p = c->data, *end = c->data + c->args_len;
    for (int first = 1; p && p < end; first = 0) {
        if (!first)
            wbuf_put(&out, ", ", 2);
        p = wire_preview(p, end, &out, limit);
    }
    PyObject *s =
        out.failed ? PyErr_NoMemory()
                   : PyUnicode_DecodeUTF8((const char *)out.data, (Py_ssize_t)out.len, "replace");
    wbuf_free(&out);
    return s;
}

static PyObject *Call_get_preview(ct_call *c, void *unused)
{
    (void)unused;
    return call_preview(c, CT_PREVIEW_LIMIT);
}

static PyObject *Call_get_function_obj(ct_call *c, void *unused)
{
    (void)unused;
    if (call_alive(c) < 0)
        return NULL;
    return Py_NewRef((PyObject *)c->fn);
}

static PyObject *Call_children(PyObject *self, PyObject *unused)
{
    (void)unused;
    if (call_alive((ct_call *)self) < 0)
        return NULL;
    return ct_call_children((ct_call *)self);
}

static PyObject *Call_replay(PyObject *self, PyObject *args, PyObject *kw)
{
    ct_call *c = (ct_call *)self;
    if (PyTuple_GET_SIZE(args)) {
        PyErr_SetString(PyExc_TypeError, "Call.replay() takes keyword arguments only");
        return NULL;
    }
    if (call_alive(c) < 0)
        return NULL;
    PyObject *calls = PyList_New(1), *report = NULL, *outcomes = NULL, *first = NULL;
    if (!calls)
        return NULL;
    PyList_SET_ITEM(calls, 0, Py_NewRef(self));
    report = ct_replay_calls(c->tape, calls, kw);
    outcomes = report ? PyObject_GetAttrString(report, "outcomes") : NULL;
    first = outcomes ? PySequence_GetItem(outcomes, 0) : NULL;
    Py_XDECREF(outcomes);
    Py_XDECREF(report);
    Py_DECREF(calls);
    return first;
}

/* Two Calls are equal when they are the same call of the same tape file. */
static PyObject *Call_richcompare(PyObject *a, PyObject *b, int op)
{
    if ((op != Py_EQ && op != Py_NE) || Py_TYPE(a) != Py_TYPE(b))
        Py_RETURN_NOTIMPLEMENTED;
    ct_call *x = (ct_call *)a, *y = (ct_call *)b;
    int same = x->id == y->id;
    if (same && x->tape != y->tape) {
        if (!x->tape || !y->tape)
            same = 0;
        else if ((same = PyObject_RichCompareBool(x->tape->path, y->tape->path, Py_EQ)) < 0)
            return NULL;
    }
    return PyBool_FromLong(op == Py_EQ ? same : !same);
}

static Py_hash_t Call_hash(PyObject *self)
{
    Py_hash_t h = (Py_hash_t)((ct_call *)self)->id;
    return h == -1 ? -2 : h;
}

static PyObject *Call_repr(PyObject *self)
{
    ct_call *c = (ct_call *)self;
    if (call_alive(c) < 0)
        return NULL;
    char dur[32];
    format_ns(dur, sizeof dur, c->duration);
    PyObject *args = call_preview(c, 120), *outcome = NULL, *out = NULL;
    if (!args)
        return NULL;
    if (c->result_len) {
        wbuf res;
        wbuf_init(&res, NULL, 0);
        const uint8_t *p = c->data + c->args_len;
        wire_preview(p, p + c->result_len, &res, 80);
        PyObject *text = res.failed ? PyErr_NoMemory()
                                    : PyUnicode_DecodeUTF8((const char *)res.data,
                                                           (Py_ssize_t)res.len, "replace");
        outcome = text ? PyUnicode_FromFormat("%s %U", outcome_names[c->outcome % 3], text) : NULL;
        Py_XDECREF(text);
        wbuf_free(&res);
    } else {
        outcome = PyUnicode_FromString(outcome_names[c->outcome % 3]);
    }
    if (outcome)
        out = PyUnicode_FromFormat("<Call %lld %U(%U) %U in %s>", (long long)c->id, c->fn->qualname,
                                   args, outcome, dur);
    Py_DECREF(args);
    Py_XDECREF(outcome);
    return out;
}

static PyGetSetDef Call_getset[] = {
    {"id", (getter)Call_get_int, NULL, "the call's id on the tape", (void *)0},
    {"session", (getter)Call_get_int, NULL, "the id of the recording session", (void *)1},
    {"parent", (getter)Call_get_int, NULL, "id of the nearest recorded caller, or None", (void *)2},
    {"depth", (getter)Call_get_int, NULL, "recorded callers above this call", (void *)3},
    {"start_ns", (getter)Call_get_int, NULL, "start, ns since the epoch", (void *)4},
    {"duration_ns", (getter)Call_get_int, NULL, "duration in ns", (void *)5},
    {"qualname", (getter)Call_get_fn_attr, NULL, "the function's qualified name", (void *)0},
    {"function", (getter)Call_get_fn_attr, NULL, "the function's qualified name", (void *)0},
    {"module", (getter)Call_get_fn_attr, NULL, "the function's module", (void *)1},
    {"file", (getter)Call_get_fn_attr, NULL, "the function's source file", (void *)2},
    {"line", (getter)Call_get_fn_attr, NULL, "the function's first line", (void *)3},
    {"func", (getter)Call_get_function_obj, NULL, "the recorded Function", NULL},
    {"start", (getter)Call_get_time, NULL, "start time (UTC datetime)", NULL},
    {"end", (getter)Call_get_time, NULL, "end time (UTC datetime)", (void *)1},
    {"duration", (getter)Call_get_duration, NULL, "duration in seconds", NULL},
    {"outcome", (getter)Call_get_outcome, NULL, "'returned', 'raised' or 'closed'", NULL},
    {"cpu_time", (getter)Call_get_cpu_time, NULL, "thread CPU seconds, None unless recorded", NULL},
    {"memory", (getter)Call_get_memory, NULL,
     "{'rss_before', 'rss_after', 'peak'} in bytes, None unless recorded", NULL},
    {"energy", (getter)Call_get_energy, NULL,
     "{'pkg': uJ, 'dram': uJ} (dram when the machine has it), None unless recorded", NULL},
    {"thread", (getter)Call_get_thread, NULL, "the thread's ident (threading.get_ident())", NULL},
    {"thread_name", (getter)Call_get_thread, NULL, "the thread's name", (void *)1},
    {"args", (getter)Call_get_args, NULL, "parameter name -> rebuilt value", NULL},
    {"defaults", (getter)Call_get_defaults, NULL, "names of arguments that took their default",
     NULL},
    {"bound", (getter)Call_get_bound, NULL,
     "Bound: args and kwargs to call the function again (defaulted parameters left out)", NULL},
    {"result", (getter)Call_get_result, NULL, "the rebuilt return value (None if it raised)", NULL},
    {"exception", (getter)Call_get_result, NULL, "ExceptionInfo when the call raised, else None",
     (void *)1},
    {"locals", (getter)Call_get_frame_data, NULL,
     "dict of the locals at return or raise; None unless recorded with locals=True", NULL},
    {"globals", (getter)Call_get_frame_data, NULL,
     "dict of the module globals the function read, at entry; None unless recorded with"
     " globals=True",
     (void *)1},
    {"yielded", (getter)Call_get_yielded, NULL,
     "list of what a generator recorded with yields=True yielded (ending in"
     " Truncated('yields', n) when n more were left out); None otherwise",
     NULL},
    {"preview", (getter)Call_get_preview, NULL, "bounded, sanitized text of the arguments", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyObject *Call_readable(PyObject *self, PyObject *unused)
{
    (void)unused;
    return ct_call_readable((ct_call *)self);
}

static PyMethodDef Call_methods[] = {
    {"readable", Call_readable, METH_NOARGS,
     "readable() -> (args, defaults, outcome): the values for reading, each rebuilt on its\n"
     "own (one that cannot be rebuilt here is calltape.Unreadable(type, preview, reason)),\n"
     "the names of arguments that took their default, and the result or ExceptionInfo.\n\n"
     ">>> args, defaults, result = tape.call(42).readable()"},
    {"children", Call_children, METH_NOARGS,
     "children() -> list of the recorded calls this call made directly, oldest first."},
    {"replay", (PyCFunction)(void (*)(void))Call_replay, METH_VARARGS | METH_KEYWORDS,
     "replay(*, rel=0.0, abs=0.0, globals=None, record=False) -> Outcome\n\n"
     "Calls the function again, today's code, with the recorded arguments, and compares\n"
     "with what was recorded; see Tape.replay.\n\n"
     ">>> outcome = tape.call(42).replay(rel=1e-9)\n"
     ">>> outcome.ok, outcome.result, outcome.expected, outcome.diff"},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot Call_slots[] = {
    {Py_tp_dealloc, Call_dealloc},
    {Py_tp_traverse, Call_traverse},
    {Py_tp_clear, Call_clear},
    {Py_tp_getset, Call_getset},
    {Py_tp_methods, Call_methods},
    {Py_tp_repr, Call_repr},
    {Py_tp_richcompare, Call_richcompare},
    {Py_tp_hash, Call_hash},
    {Py_tp_doc, "One recorded call; its values are rebuilt on first access, once.\n\n"
                ">>> c = tape.search(function='price', limit=1)[0]\n"
                ">>> c.args, c.result, c.duration, c.thread"},
    {0, NULL},
};

PyType_Spec Call_spec = {
    .name = "calltape.Call",
    .basicsize = offsetof(ct_call, data),
    .itemsize = 1,
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = Call_slots,
};
