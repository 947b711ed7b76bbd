/*
 * options.c - the recording options, read and checked one way for every
 * way in: configure(), @calltape.record (recorder.c), calltape.monitor
 * (monitor.c) and `calltape run` (cli.py, through check_options()); and
 * configure() itself, which also sets the writer's options (flush
 * interval, buffer, what to do when it is full) and the pickled types.
 *
 * Each entry point takes its recording options out of its keywords with
 * ct_options_take (one table of names), parses its own arguments from
 * what is left, and reads the options with ct_options_read: one
 * conversion and one message per bad value, whoever was given it.
 *
 * Invariants: nothing is changed by a configure() call that raises (every
 * value is checked before any is applied); configure() only changes what
 * later calls use.
 */
#include "options.h"

#include "capture.h"
#include "instruments/instruments.h"
#include "sink.h"

#include <stdlib.h>

static const char *const opt_names[CT_NOPTS] = {
    [CT_OPT_TAPE] = "tape",
    [CT_OPT_ARGS] = "args",
    [CT_OPT_RESULT] = "result",
    [CT_OPT_CPU] = "cpu",
    [CT_OPT_MEMORY] = "memory",
    [CT_OPT_ENERGY] = "energy",
    [CT_OPT_LOCALS] = "locals",
    [CT_OPT_GLOBALS] = "globals",
    [CT_OPT_YIELDS] = "yields",
    [CT_OPT_SAMPLE] = "sample",
    [CT_OPT_MAX_VALUE_BYTES] = "max_value_bytes",
    [CT_OPT_REDACT] = "redact",
    [CT_OPT_SANITIZE] = "sanitize",
    [CT_OPT_MAX_DEPTH] = "max_depth",
};

int ct_options_take(PyObject *kw, unsigned accepted, PyObject *v[CT_NOPTS], PyObject **rest)
{
    for (int i = 0; i < CT_NOPTS; i++)
        v[i] = NULL;
    *rest = NULL;
    if (!kw)
        return 0;
    PyObject *r = PyDict_Copy(kw);
    if (!r)
        return -1;
    for (int i = 0; i < CT_NOPTS; i++) {
        if (!(accepted & CT_OPT_BIT(i)))
            continue;
        PyObject *val = PyDict_GetItemString(kw, opt_names[i]); /* borrowed */
        if (val && PyDict_DelItemString(r, opt_names[i]) < 0) {
            Py_DECREF(r);
            return -1;
        }
        v[i] = val;
    }
    *rest = r;
    return 0;
}

/* ---- one reader per kind of value ------------------------------------------ */

/* v NULL or None: not given (*out untouched). */
static int given(PyObject *v)
{
    return v && v != Py_None;
}

/* A flag: its truth (None is False, as for any object). */
static int read_flag(PyObject *v, int *out)
{
    if (!v)
        return 0;
    int t = PyObject_IsTrue(v);
    if (t < 0)
        return -1;
    *out = t;
    return 0;
}

/* An integer option named `name`, at least `min`; `what` says what it
 * must be in the message. */
static int read_count(PyObject *v, const char *name, Py_ssize_t min, const char *what,
                      Py_ssize_t *out)
{
    if (!given(v))
        return 0;
    if (!PyIndex_Check(v)) {
        PyErr_Format(PyExc_TypeError, "%s must be an integer %s, not %.100s %.200R", name, what,
                     Py_TYPE(v)->tp_name, v);
        return -1;
    }
    Py_ssize_t n = PyNumber_AsSsize_t(v, PyExc_OverflowError);
    if (n == -1 && PyErr_Occurred())
        return -1;
    if (n < min) {
        PyErr_Format(PyExc_ValueError, "%s must be an integer %s, not %zd", name, what, n);
        return -1;
    }
    *out = n;
    return 0;
}

/* tape: a str path or an os.PathLike giving one. */
static int read_tape(PyObject *v, PyObject **out)
{
    if (!given(v))
        return 0;
    PyObject *p = PyOS_FSPath(v);
    if (!p && !PyErr_ExceptionMatches(PyExc_TypeError))
        return -1;
    if (!p || !PyUnicode_Check(p)) {
        Py_XDECREF(p);
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "tape must be a str path, not %R", v);
        return -1;
    }
    *out = p;
    return 0;
}

/* redact: True, False, or an iterable of names and glob patterns. */
static int read_redact(PyObject *v, ct_options *o)
{
    if (!given(v))
        return 0;
    if (v == Py_False || v == Py_True) {
        o->redact = v == Py_True;
        return 0;
    }
    if (ct_split_redact(v, &o->redact_exact, &o->redact_patterns) < 0)
        return -1;
    o->redact = 1;
    return 0;
}

static int read_sanitize(PyObject *v, PyObject **out)
{
    if (!given(v))
        return 0;
    if (!PyCallable_Check(v)) {
        PyErr_Format(PyExc_TypeError, "sanitize must be callable, not %.100s", Py_TYPE(v)->tp_name);
        return -1;
    }
    *out = Py_NewRef(v);
    return 0;
}

int ct_options_read(PyObject *const v[CT_NOPTS], ct_options *o)
{
    memset(o, 0, sizeof *o);
    o->args = o->result = 1;
    o->energy = -1;
    o->sample = 1;
    o->max_value_bytes = -1;
    o->redact = -1;
    if (read_tape(v[CT_OPT_TAPE], &o->tape) < 0 || read_flag(v[CT_OPT_ARGS], &o->args) < 0 ||
        read_flag(v[CT_OPT_RESULT], &o->result) < 0 || read_flag(v[CT_OPT_CPU], &o->cpu) < 0 ||
        read_flag(v[CT_OPT_MEMORY], &o->memory) < 0 ||
        (given(v[CT_OPT_ENERGY]) && read_flag(v[CT_OPT_ENERGY], &o->energy) < 0) ||
        read_flag(v[CT_OPT_LOCALS], &o->locals) < 0 ||
        read_flag(v[CT_OPT_GLOBALS], &o->globals) < 0 ||
        read_flag(v[CT_OPT_YIELDS], &o->yields) < 0 ||
        read_count(v[CT_OPT_SAMPLE], "sample", 1, ">= 1", &o->sample) < 0 ||
        read_count(v[CT_OPT_MAX_VALUE_BYTES], "max_value_bytes", CT_VALUE_LIMIT_MIN, ">= 16",
                   &o->max_value_bytes) < 0 ||
        read_count(v[CT_OPT_MAX_DEPTH], "max_depth", 0, ">= 0 (0: no limit)", &o->max_depth) < 0 ||
        read_redact(v[CT_OPT_REDACT], o) < 0 ||
        read_sanitize(v[CT_OPT_SANITIZE], &o->sanitize) < 0) {
        ct_options_release(o);
        return -1;
    }
    return 0;
}

void ct_options_release(ct_options *o)
{
    Py_CLEAR(o->tape);
    Py_CLEAR(o->redact_exact);
    Py_CLEAR(o->redact_patterns);
    Py_CLEAR(o->sanitize);
}

PyObject *ct_default_tape(void)
{
    const char *env = getenv("CALLTAPE_TAPE");
    return PyUnicode_DecodeFSDefault(env && *env ? env : "calltape.db");
}

PyObject *ct_default_tape_py(PyObject *m, PyObject *unused)
{
    (void)m;
    (void)unused;
    return ct_default_tape();
}

PyObject *ct_check_options_py(PyObject *m, PyObject *args, PyObject *kw)
{
    (void)m;
    PyObject *v[CT_NOPTS], *rest = NULL;
    if (PyTuple_GET_SIZE(args) != 0)
        return PyErr_Format(PyExc_TypeError, "check_options() takes keyword arguments only");
    if (ct_options_take(kw, CT_OPT_ALL, v, &rest) < 0)
        return NULL;
    if (rest && PyDict_GET_SIZE(rest)) {
        PyObject *key = NULL, *val;
        Py_ssize_t pos = 0;
        PyDict_Next(rest, &pos, &key, &val);
        PyErr_Format(PyExc_TypeError, "%R is not a recording option", key);
        Py_DECREF(rest);
        return NULL;
    }
    Py_XDECREF(rest);
    ct_options o;
    if (ct_options_read(v, &o) < 0)
        return NULL;
    ct_options_release(&o);
    Py_RETURN_NONE;
}

/* ---- configure() ------------------------------------------------------------ */

/* configure()'s own values, checked before any is applied. */
typedef struct ct_config {
    double flush_interval;   /* < 0: not given */
    int on_full_drop;        /* -1: not given */
    Py_ssize_t buffer_bytes; /* 0: not given */
    PyObject *pickle_types;  /* new set, or NULL: not given */
} ct_config;

static int read_config(PyObject *flush, PyObject *on_full, PyObject *buf, PyObject *pickle,
                       ct_config *c)
{
    c->flush_interval = -1;
    c->on_full_drop = -1;
    c->buffer_bytes = 0;
    c->pickle_types = NULL;
    if (flush != Py_None) {
        if (!PyFloat_Check(flush) && !PyIndex_Check(flush)) {
            PyErr_Format(PyExc_TypeError,
                         "flush_interval must be a number of seconds between 0 and 3600"
                         " (such as 0.5), not %.100s %R",
                         Py_TYPE(flush)->tp_name, flush);
            return -1;
        }
        double f = PyFloat_AsDouble(flush);
        if (f == -1.0 && PyErr_Occurred())
            return -1;
        if (!(f > 0 && f <= 3600)) {
            PyErr_Format(PyExc_ValueError,
                         "flush_interval must be between 0 and 3600 seconds, not %R", flush);
            return -1;
        }
        c->flush_interval = f;
    }
    if (on_full != Py_None) {
        if (!PyUnicode_Check(on_full) || (PyUnicode_CompareWithASCIIString(on_full, "wait") &&
                                          PyUnicode_CompareWithASCIIString(on_full, "drop"))) {
            PyErr_Format(PyExc_ValueError, "on_full must be 'wait' or 'drop', not %R", on_full);
            return -1;
        }
        c->on_full_drop = PyUnicode_CompareWithASCIIString(on_full, "drop") == 0;
    }
    if (buf != Py_None) {
        if (!PyIndex_Check(buf) || PyBool_Check(buf)) {
            PyErr_Format(PyExc_TypeError,
                         "buffer_bytes must be an integer number of bytes, at least 4 MiB"
                         " (such as 64 << 20 for 64 MiB), not %.100s %R",
                         Py_TYPE(buf)->tp_name, buf);
            return -1;
        }
        Py_ssize_t n = PyNumber_AsSsize_t(buf, PyExc_OverflowError);
        if (n == -1 && PyErr_Occurred())
            return -1;
        if (n < (4 << 20)) {
            PyErr_Format(PyExc_ValueError,
                         "buffer_bytes must be an integer number of bytes, at least 4 MiB"
                         " (4194304), not %zd",
                         n);
            return -1;
        }
        c->buffer_bytes = n;
    }
    if (pickle != Py_None) {
        PyObject *types = ct_type_tuple(pickle, "pickle");
        c->pickle_types = types ? PySet_New(types) : NULL;
        Py_XDECREF(types);
        if (!c->pickle_types)
            return -1;
    }
    return 0;
}

/* configure(retain=...) into `p`: a dict of rules ({"older_than": "7d",
 * "max_size": "2GB", "keep_sessions": 10}: texts or integers) or the same
 * rules as one text ("older_than=7d,max_size=2GB", as CALLTAPE_RETAIN),
 * read by retain_parse.  0, or -1 with TypeError or ValueError set. */
static int read_retain(PyObject *v, retain_policy *p)
{
    PyObject *text = NULL;
    if (PyUnicode_Check(v)) {
        text = Py_NewRef(v);
    } else if (PyDict_Check(v)) {
        PyObject *parts = PyList_New(0), *key, *value;
        Py_ssize_t pos = 0;
        while (parts && PyDict_Next(v, &pos, &key, &value)) {
            if (!PyUnicode_Check(key) || !(PyUnicode_Check(value) || PyLong_Check(value)) ||
                PyBool_Check(value)) {
                PyErr_Format(PyExc_TypeError,
                             "retain takes rule names and texts or integers, such as"
                             " {\"older_than\": \"7d\", \"max_size\": \"2GB\","
                             " \"keep_sessions\": 10}, not %R: %R",
                             key, value);
                Py_CLEAR(parts);
                break;
            }
            PyObject *item = PyUnicode_FromFormat("%U=%S", key, value);
            if (!item || PyList_Append(parts, item) < 0)
                Py_CLEAR(parts);
            Py_XDECREF(item);
        }
        if (parts) {
            PyObject *comma = PyUnicode_FromString(",");
            text = comma ? PyUnicode_Join(comma, parts) : NULL;
            Py_XDECREF(comma);
            Py_DECREF(parts);
        }
    } else {
        PyErr_Format(PyExc_TypeError,
                     "retain must be a dict of rules such as {\"older_than\": \"7d\","
                     " \"max_size\": \"2GB\"} (or their text \"older_than=7d,max_size=2GB\"),"
                     " not %.100s",
                     Py_TYPE(v)->tp_name);
    }
    if (!text)
        return -1;
    const char *utf8 = PyUnicode_AsUTF8(text);
    char err[300];
    int rc = utf8 ? retain_parse(utf8, p, err, sizeof err) : -1;
    if (rc < 0 && utf8)
        PyErr_Format(PyExc_ValueError, "retain: %s", err);
    Py_DECREF(text);
    if (rc < 0)
        return -1;
    /* the engine's zeros mean "no rule" */
    p->older_than_ns = p->older_than_ns < 0 ? 0 : p->older_than_ns;
    p->keep_sessions = p->keep_sessions < 0 ? 0 : p->keep_sessions;
    p->max_bytes = p->max_bytes < 0 ? 0 : p->max_bytes;
    return 0;
}

/* Applies the recording options configure() takes (all checked). */
static int apply_options(ct_state *st, ct_options *o)
{
    if (o->energy >= 0) {
        st->rec.energy_default = o->energy ? CT_ENERGY_CONFIGURED : 0;
        if (o->energy)
            ct_energy_open(st); /* an unavailable counter is reported now, once */
    }
    if (o->max_value_bytes >= 0)
        st->rec.max_value_bytes = o->max_value_bytes;
    if (o->redact >= 0)
        ct_redact_memo_clear(st); /* the rules change: decide names again */
    if (o->redact == 0) {         /* off: the built-in names and those configured */
        st->redaction.builtin = 0;
        Py_CLEAR(st->redaction.exact);
        Py_CLEAR(st->redaction.patterns);
    } else if (o->redact == 1) {
        st->redaction.builtin = 1;
        if (o->redact_exact) { /* names given (not just True) */
            Py_XSETREF(st->redaction.exact, Py_NewRef(o->redact_exact));
            Py_XSETREF(st->redaction.patterns, Py_XNewRef(o->redact_patterns));
        }
    }
    if (o->tape) {
        PyObject *abs = ct_absolute_path(o->tape);
        if (!abs)
            return -1;
        ct_sink_set_default(st, abs);
        Py_DECREF(abs);
    }
    return 0;
}

PyObject *ct_configure_py(PyObject *m, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"flush_interval", "on_full", "buffer_bytes", "pickle", "retain", NULL};
    PyObject *flush = Py_None, *on_full = Py_None, *buf = Py_None, *pickle = Py_None;
    PyObject *retain = Py_None;
    PyObject *v[CT_NOPTS], *rest = NULL;
    unsigned accepted = CT_OPT_BIT(CT_OPT_TAPE) | CT_OPT_BIT(CT_OPT_REDACT) |
                        CT_OPT_BIT(CT_OPT_MAX_VALUE_BYTES) | CT_OPT_BIT(CT_OPT_ENERGY);
    if (ct_options_take(kw, accepted, v, &rest) < 0)
        return NULL;
    int ok = PyArg_ParseTupleAndKeywords(args, rest, "|$OOOOO:configure", kwlist, &flush, &on_full,
                                         &buf, &pickle, &retain);
    Py_XDECREF(rest);
    if (!ok)
        return NULL;
    ct_state *st = (ct_state *)PyModule_GetState(m);
    ct_options o;
    ct_config c;
    /* tape=callable: a namer asked for the tape when a call first needs it */
    PyObject *namer = v[CT_OPT_TAPE];
    if (namer && namer != Py_None && !PyUnicode_Check(namer) && PyCallable_Check(namer) &&
        !PyObject_HasAttrString(namer, "__fspath__"))
        v[CT_OPT_TAPE] = NULL;
    else
        namer = NULL;
    if (ct_options_read(v, &o) < 0)
        return NULL;
    retain_policy rp = {0};
    if (read_config(flush, on_full, buf, pickle, &c) < 0 ||
        (retain != Py_None && read_retain(retain, &rp) < 0)) {
        Py_XDECREF(c.pickle_types);
        ct_options_release(&o);
        return NULL;
    }
    if (retain != Py_None)
        st->sink.retain = rp;
    if (c.pickle_types) {
        Py_XSETREF(st->objects.pickle_types, c.pickle_types);
        ct_typecache_clear(&st->objects.types);
    }
    if (c.flush_interval > 0)
        st->sink.flush_interval = c.flush_interval;
    if (c.on_full_drop >= 0)
        st->sink.on_full_drop = c.on_full_drop;
    if (c.buffer_bytes)
        st->sink.buffer_bytes = c.buffer_bytes;
    int rc = apply_options(st, &o);
    ct_options_release(&o);
    if (rc < 0)
        return NULL;
    if (namer)
        ct_sink_set_namer(st, namer);
    Py_RETURN_NONE;
}
