/*
 * views.c - what reading a tape returns besides calls: Function (a recorded
 * function and its aggregates), Session (one recording process) and Bound
 * (arguments ready to call a function again), and what every view shares:
 * times as datetimes, durations for a person (ct_format_duration, also the
 * command line's), encoded text as str.  The Call view is callview.c.
 *
 * Invariants: times are exact to the microsecond in datetimes and to the
 * nanosecond in *_ns attributes.  Anything the tape's bytes do not rebuild
 * (a value, a name that is not text, a signature, a time out of range) is a
 * TapeError naming the tape and the function or session, never another
 * exception type.
 */
#include "reader.h"

#include <stddef.h>
#include <structmember.h>

PyObject *ct_datetime_from_ns(ct_state *st, int64_t ns)
{
    int64_t us = ns >= 0 ? ns / 1000 : -((-ns + 999) / 1000);
    int64_t sec = us >= 0 ? us / 1000000 : -((-us + 999999) / 1000000);
    PyObject *td = PyObject_CallFunction(st->imported.dt_timedelta, "iLL", 0, (long long)sec,
                                         (long long)(us - sec * 1000000));
    if (!td)
        return NULL;
    PyObject *dt = PyNumber_Add(st->imported.dt_epoch, td);
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

PyObject *ct_wbuf_text(wbuf *b)
{
    PyObject *s = b->failed
                      ? PyErr_NoMemory()
                      : PyUnicode_DecodeUTF8((const char *)b->data, (Py_ssize_t)b->len, "replace");
    wbuf_free(b);
    return s;
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
    ct_state *st = ct_state_of((PyObject *)t);
    ct_function *f = PyObject_GC_New(ct_function, st->type.Function);
    if (!f)
        return NULL;
    /* every field set before the first exit */
    f->id = row->id;
    f->line = row->line;
    f->calls = row->calls;
    f->raised = row->raised;
    f->has_total = row->total_ns != STORE_NONE;
    f->total_ns = f->has_total ? row->total_ns : 0;
    f->has_self = row->self_ns != STORE_NONE;
    f->self_ns = f->has_self ? row->self_ns : 0;
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
    ct_state *st = ct_state_of((PyObject *)f);
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
        return seconds_or_none(f->has_total, f->total_ns);
    case 1:
        return seconds_or_none(f->has_durations, f->min_ns);
    case 2:
        return seconds_or_none(f->has_durations, f->max_ns);
    case 4:
        return seconds_or_none(f->has_self, f->self_ns);
    default:
        if (f->calls <= 0 || !f->has_total)
            Py_RETURN_NONE;
        return PyFloat_FromDouble((double)f->total_ns / 1e9 / (double)f->calls);
    }
}

static PyObject *Function_repr(PyObject *self)
{
    ct_function *f = (ct_function *)self;
    char mean[32] = "-", max[32] = "-";
    if (f->calls > 0 && f->has_total)
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
    {"total", (getter)Function_get_seconds, NULL,
     "total duration in seconds (inclusive); None when the tape does not know it", (void *)0},
    {"self_time", (getter)Function_get_seconds, NULL,
     "total duration minus that of the recorded direct children, in seconds (exclusive);"
     " None when the tape does not know it (calls recorded before calltape kept it)",
     (void *)4},
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
    ct_state *st = ct_state_of((PyObject *)t);
    ct_session *s = PyObject_GC_New(ct_session, st->type.Session);
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
