/*
 * instrument.c - the Instrument type of calltape.probes: what an instrument
 * is made of (its name, its value expression compiled once, its event, its
 * lifespan and error policy), its status (the errors it met, with their
 * time and event), and the two instruments that keep their state in C:
 * count (the sum of its values) and histogram (count, min, max and mean
 * exact; percentiles over a uniform reservoir of PROBE_RESERVOIR values),
 * and the log instrument's line, made here and queued for the log thread
 * (record/logq.c).  Python subclasses (user instruments, a LogInstrument
 * subclass defining fire() or emit()) define fire().
 *
 * Invariants: an Instrument's expression is compiled at construction and
 * never again; a constant expression (one naming nothing) is evaluated
 * there once; the error list never holds more than PROBE_MAX_ERRORS.
 */
#include "probes.h"

#include "record/logq.h"

#include <math.h>
#include <structmember.h>

#define PROBE_RESERVOIR 4096

static const char *const event_names[] = {"call", "return", "error", "end"};

const char *ct_probe_event_name(int ev)
{
    for (int i = 0; i < 4; i++)
        if (ev == (1 << i))
            return event_names[i];
    return "?";
}

double ct_probe_wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int ct_probe_is_instrument(ct_state *st, PyObject *o)
{
    return PyObject_TypeCheck(o, st->type.ProbeInstrument);
}

/* The events named by `ev`: "call", "return", "error", "end", or several
 * joined by "|".  Returns the mask, or -1 with ValueError set. */
static int parse_events(PyObject *ev)
{
    const char *s = PyUnicode_AsUTF8(ev);
    if (!s)
        return -1;
    int mask = 0;
    while (*s) {
        const char *bar = strchr(s, '|');
        size_t n = bar ? (size_t)(bar - s) : strlen(s);
        int bit = 0;
        for (int i = 0; i < 4; i++)
            if (strlen(event_names[i]) == n && strncmp(s, event_names[i], n) == 0)
                bit = 1 << i;
        if (!bit) {
            PyErr_Format(PyExc_ValueError,
                         "unknown probe event %R: use 'call', 'return', 'error' or 'end'", ev);
            return -1;
        }
        mask |= bit;
        s += n + (bar != NULL);
    }
    if (!mask)
        PyErr_SetString(PyExc_ValueError, "a probe instrument needs an event");
    return mask ? mask : -1;
}

/* 1 when code object `co` names nothing (nor do the code objects inside). */
static int names_nothing(PyCodeObject *co)
{
    if (PyTuple_GET_SIZE(co->co_names) > 0)
        return 0;
    PyObject *consts = co->co_consts;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(consts); i++)
        if (PyCode_Check(PyTuple_GET_ITEM(consts, i)))
            return 0;
    return 1;
}

/* 1 when code object `co` (or one inside it) names `name`. */
static int names_name(PyCodeObject *co, const char *name)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(co->co_names); i++)
        if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(co->co_names, i), name) == 0)
            return 1;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(co->co_consts); i++) {
        PyObject *c = PyTuple_GET_ITEM(co->co_consts, i);
        if (PyCode_Check(c) && names_name((PyCodeObject *)c, name))
            return 1;
    }
    return 0;
}

/* Compiles self->value; evaluates it once when it is a constant (and
 * evaluating it did not fail). */
static int compile_value(ProbeInstrument *self)
{
    const char *src = PyUnicode_AsUTF8(self->value);
    PyObject *file = src ? PyUnicode_FromFormat("<probe %U>", self->name) : NULL;
    const char *fname = file ? PyUnicode_AsUTF8(file) : NULL;
    PyObject *code = fname ? Py_CompileString(src, fname, Py_eval_input) : NULL;
    Py_XDECREF(file);
    if (!code)
        return -1;
    Py_XSETREF(self->code, code);
    Py_CLEAR(self->constant);
    Py_CLEAR(self->bare);
    PyObject *stripped = PyObject_CallMethod(self->value, "strip", NULL);
    if (!stripped)
        return -1;
    PyCodeObject *co = (PyCodeObject *)code;
    if (PyUnicode_IsIdentifier(stripped) && PyTuple_GET_SIZE(co->co_names) == 1 &&
        PyUnicode_Compare(PyTuple_GET_ITEM(co->co_names, 0), stripped) == 0) {
        self->bare = Py_NewRef(PyTuple_GET_ITEM(co->co_names, 0));
        PyUnicode_InternInPlace(&self->bare);
    }
    Py_DECREF(stripped);
    self->uses_now = self->uses_now || names_name((PyCodeObject *)code, "now");
    if (names_nothing((PyCodeObject *)code)) {
        PyObject *g = Py_BuildValue("{s:{}}", "__builtins__");
        self->constant = g ? PyEval_EvalCode(code, g, g) : NULL;
        Py_XDECREF(g);
        if (!self->constant) /* "1 / 0": it fails at each event, as any other */
            PyErr_Clear();
    }
    return 0;
}

/* A log instrument's level, max_chars and (logger, pathname) target, read
 * from its attributes once (at construction). */
static int log_setup(ProbeInstrument *self)
{
    PyObject *o = (PyObject *)self;
    PyObject *level = PyObject_GetAttrString(o, "level");
    PyObject *max = level ? PyObject_GetAttrString(o, "max_chars") : NULL;
    PyObject *target = max ? PyObject_GetAttrString(o, "_log_target") : NULL;
    int rc = -1;
    if (target) {
        long lv = PyLong_AsLong(level);
        Py_ssize_t mx = PyNumber_AsSsize_t(max, PyExc_OverflowError);
        if (PyErr_Occurred() || mx < 4) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_ValueError, "LogInstrument.max_chars must be >= 4, not %zd", mx);
        } else {
            self->log_level = (int)lv;
            self->log_max_chars = mx;
            Py_XSETREF(self->log_target, Py_NewRef(target));
            rc = 0;
        }
    }
    Py_XDECREF(level);
    Py_XDECREF(max);
    Py_XDECREF(target);
    return rc;
}

static int Instrument_init(ProbeInstrument *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"name",   "value", "event", "lifespan", "expires", "disable_on_error",
                             "custom", NULL};
    PyObject *name, *value = NULL, *event = NULL, *lifespan = Py_None, *expires = Py_None;
    PyObject *custom = Py_None;
    int disable = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "U|UU$OOpO:Instrument", kwlist, &name, &value,
                                     &event, &lifespan, &expires, &disable, &custom))
        return -1;
    Py_XSETREF(self->name, Py_NewRef(name));
    if (!value)
        value = PyUnicode_FromString("1");
    else
        Py_INCREF(value);
    if (!value)
        return -1;
    Py_XSETREF(self->value, value);
    if (custom == Py_None) {
        custom = PyDict_New();
        if (!custom)
            return -1;
    } else if (PyDict_Check(custom)) {
        Py_INCREF(custom);
    } else {
        PyErr_Format(PyExc_TypeError, "custom must be a dict, not %R", custom);
        return -1;
    }
    Py_XSETREF(self->custom, custom);
    int mask = 0;
    if (event) {
        mask = parse_events(event);
    } else {
        PyObject *ret = PyUnicode_FromString("return");
        mask = ret ? parse_events(ret) : -1;
        Py_XDECREF(ret);
    }
    if (mask < 0)
        return -1;
    self->events = mask;
    self->expires = 0;
    if (lifespan != Py_None) {
        double minutes = PyFloat_AsDouble(lifespan);
        if (minutes == -1.0 && PyErr_Occurred())
            return -1;
        self->expires = ct_probe_wall() + minutes * 60.0;
    } else if (expires != Py_None) {
        self->expires = PyFloat_AsDouble(expires);
        if (self->expires == -1.0 && PyErr_Occurred())
            return -1;
    }
    self->disable_on_error = disable;
    if (!self->errors && !(self->errors = PyList_New(0)))
        return -1;
    PyObject *kind = PyObject_GetAttrString((PyObject *)Py_TYPE(self), "_kind");
    if (!kind && !PyErr_ExceptionMatches(PyExc_AttributeError))
        return -1;
    PyErr_Clear();
    self->kind = kind ? (int)PyLong_AsLong(kind) : PKIND_PY;
    Py_XDECREF(kind);
    if (self->kind == -1 && PyErr_Occurred())
        return -1;
    PyObject *wants = PyObject_GetAttrString((PyObject *)Py_TYPE(self), "_namespace_now");
    self->uses_now = self->kind == PKIND_PY && (!wants || PyObject_IsTrue(wants) == 1);
    Py_XDECREF(wants);
    PyErr_Clear();
    if ((self->kind == PKIND_LOG || self->kind == PKIND_PRINT) && log_setup(self) < 0)
        return -1;
    if (self->kind == PKIND_PY) {
        Py_CLEAR(self->fire);
        self->fire = PyObject_GetAttrString((PyObject *)self, "fire");
        if (!self->fire)
            return -1;
    }
    return compile_value(self);
}

/* ---- the C instruments ------------------------------------------------------ */

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s ? *s : 0x9E3779B97F4A7C15ull;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static int hist_add(ProbeInstrument *in, PyObject *value)
{
    if (!PyLong_Check(value) && !PyFloat_Check(value)) {
        PyErr_Format(PyExc_TypeError, "a histogram takes ints and floats, not %.100s",
                     Py_TYPE(value)->tp_name);
        return -1;
    }
    double v = PyFloat_AsDouble(value);
    if (v == -1.0 && PyErr_Occurred())
        return -1;
    if (!in->samples && !(in->samples = PyMem_Malloc(PROBE_RESERVOIR * sizeof(double)))) {
        PyErr_NoMemory();
        return -1;
    }
    if (in->n == 0 || v < in->min)
        in->min = v;
    if (in->n == 0 || v > in->max)
        in->max = v;
    in->sum += v;
    in->n++;
    if (in->nsamples < PROBE_RESERVOIR) {
        in->samples[in->nsamples++] = v;
    } else {
        uint64_t j = xorshift(&in->rng) % (uint64_t)in->n;
        if (j < PROBE_RESERVOIR)
            in->samples[j] = v;
    }
    return 0;
}

static int count_add(ProbeInstrument *in, PyObject *value)
{
    if (PyLong_CheckExact(value) && !in->is_float) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (!overflow && !__builtin_add_overflow(in->isum, v, &in->isum))
            return 0;
    }
    if (!PyLong_Check(value) && !PyFloat_Check(value)) {
        PyErr_Format(PyExc_TypeError, "a count adds ints and floats, not %.100s",
                     Py_TYPE(value)->tp_name);
        return -1;
    }
    double v = PyFloat_AsDouble(value);
    if (v == -1.0 && PyErr_Occurred())
        return -1;
    if (!in->is_float) {
        in->fsum = (double)in->isum;
        in->is_float = 1;
    }
    in->fsum += v;
    return 0;
}

/* Writes line `b` and a newline to in's `out` (when None or false:
 * sys.stdout at this moment), as Diagnose's LogInstrument prints.  0, or -1
 * with an exception. */
static int print_line(ct_state *st, ProbeInstrument *in, wbuf *b)
{
    wbuf_put(b, "\n", 1);
    if (b->failed)
        return PyErr_NoMemory(), -1;
    if (!st->probes.out_name && !(st->probes.out_name = PyUnicode_InternFromString("out")))
        return -1;
    if (!st->probes.write_name && !(st->probes.write_name = PyUnicode_InternFromString("write")))
        return -1;
    PyObject *line = PyUnicode_DecodeUTF8((const char *)b->data, (Py_ssize_t)b->len, "replace");
    PyObject *out = line ? PyObject_GetAttr((PyObject *)in, st->probes.out_name) : NULL;
    int given = out ? PyObject_IsTrue(out) : -1;
    if (given == 0) {
        Py_SETREF(out, Py_XNewRef(PySys_GetObject("stdout"))); /* borrowed, made owned */
        if (!out || out == Py_None)
            PyErr_SetString(PyExc_RuntimeError, "sys.stdout is gone: the probe line is lost");
    }
    PyObject *r = given >= 0 && out && out != Py_None
                      ? PyObject_CallMethodOneArg(out, st->probes.write_name, line)
                      : NULL;
    Py_XDECREF(line);
    Py_XDECREF(out);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* "Probe (name) = " + the `nt` bytes of `t`: queued for in's logger (the
 * log thread hands it), or printed by a print instrument.  0, or -1 with
 * an exception. */
static int log_line(ct_state *st, ProbeInstrument *in, const char *t, Py_ssize_t nt)
{
    Py_ssize_t nn;
    const char *name = PyUnicode_AsUTF8AndSize(in->name, &nn);
    if (!name)
        return -1;
    uint8_t store[512];
    wbuf b;
    wbuf_init(&b, store, sizeof store);
    wbuf_put(&b, "Probe (", 7);
    wbuf_put(&b, name, (size_t)nn);
    wbuf_put(&b, ") = ", 4);
    wbuf_put(&b, t, (size_t)nt);
    int rc = 0;
    if (in->kind == PKIND_PRINT)
        rc = print_line(st, in, &b);
    else if (!b.failed)
        ct_logq_put(st, in->log_target, in->log_level, (const char *)b.data, b.len);
    wbuf_free(&b);
    return rc;
}

/* "Probe (name) = str(value)" (the text cut to max_chars, "..." ending
 * it), queued or printed; a None value is neither. */
static int log_add(ct_state *st, ProbeInstrument *in, PyObject *value)
{
    if (value == Py_None)
        return 0;
    if (PyLong_CheckExact(value)) { /* an int's text, as str() gives it, without a str made */
        int overflow = 0;
        long long iv = PyLong_AsLongLongAndOverflow(value, &overflow); /* an exact int: no error */
        uint8_t digits[24];
        wbuf d;
        wbuf_init(&d, digits, sizeof digits);
        wbuf_decimal(&d, iv); /* never past `digits`: 20 bytes at most */
        if (!overflow && (Py_ssize_t)d.len <= in->log_max_chars)
            return log_line(st, in, (const char *)d.data, (Py_ssize_t)d.len);
    }
    PyObject *text = PyObject_Str(value);
    if (!text)
        return -1;
    if (PyUnicode_GET_LENGTH(text) > in->log_max_chars) {
        PyObject *cut = PyUnicode_Substring(text, 0, in->log_max_chars - 3);
        Py_SETREF(text, cut ? PyUnicode_FromFormat("%U...", cut) : NULL);
        Py_XDECREF(cut);
        if (!text)
            return -1;
    }
    Py_ssize_t nt;
    const char *t = PyUnicode_AsUTF8AndSize(text, &nt);
    int rc = t ? log_line(st, in, t, nt) : -1;
    Py_DECREF(text);
    return rc;
}

int ct_probe_accumulate(ct_state *st, ProbeInstrument *in, PyObject *value, PyObject *ns)
{
    in->fired++;
    switch (in->kind) {
    case PKIND_LOG:
    case PKIND_PRINT:
        return log_add(st, in, value);
    case PKIND_COUNT:
        return count_add(in, value);
    case PKIND_HIST:
        return hist_add(in, value);
    default: {
        PyObject *r = PyObject_CallFunctionObjArgs(in->fire, value, ns ? ns : Py_None, NULL);
        Py_XDECREF(r);
        return r ? 0 : -1;
    }
    }
}

int ct_probe_fail(ProbeInstrument *in, int ev)
{
    PyObject *msg = ct_describe_pending();
    if (!msg)
        return -1;
    in->nerrors++;
    if (in->disable_on_error)
        in->disabled = 1;
    PyObject *entry = Py_BuildValue("(dsN)", ct_probe_wall(), ct_probe_event_name(ev), msg);
    if (!entry || PyList_Append(in->errors, entry) < 0 ||
        (PyList_GET_SIZE(in->errors) > PROBE_MAX_ERRORS && PySequence_DelItem(in->errors, 0) < 0))
        PyErr_Clear();
    Py_XDECREF(entry);
    return 0;
}

/* ---- Python-facing ---------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* percentiles(qs) -> list of the q-th percentiles (0..100) of the values
 * seen, by linear interpolation over the reservoir; None when empty. */
static PyObject *Instrument_percentiles(ProbeInstrument *self, PyObject *qs)
{
    PyObject *seq = PySequence_Fast(qs, "percentiles() takes a sequence of numbers");
    if (!seq)
        return NULL;
    PyObject *out = PyList_New(PySequence_Fast_GET_SIZE(seq));
    double *sorted = NULL;
    size_t n = self->nsamples;
    if (!out)
        goto error;
    if (n && !(sorted = PyMem_Malloc(n * sizeof(double)))) {
        PyErr_NoMemory();
        goto error;
    }
    if (n) {
        memcpy(sorted, self->samples, n * sizeof(double));
        qsort(sorted, n, sizeof(double), cmp_double);
    }
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        double q = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, i));
        if (q == -1.0 && PyErr_Occurred())
            goto error;
        if (q < 0 || q > 100) {
            PyErr_Format(PyExc_ValueError, "a percentile is between 0 and 100, not %g", q);
            goto error;
        }
        PyObject *v;
        if (!n) {
            v = Py_NewRef(Py_None);
        } else {
            double pos = q / 100.0 * (double)(n - 1);
            size_t lo = (size_t)floor(pos), hi = lo + 1 < n ? lo + 1 : lo;
            v = PyFloat_FromDouble(sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - (double)lo));
            if (!v)
                goto error;
        }
        PyList_SET_ITEM(out, i, v);
    }
    PyMem_Free(sorted);
    Py_DECREF(seq);
    return out;
error:
    PyMem_Free(sorted);
    Py_DECREF(seq);
    Py_XDECREF(out);
    return NULL;
}

/* stats() -> {"count", "min", "max", "mean", "sum"} of a histogram. */
static PyObject *Instrument_stats(ProbeInstrument *self, PyObject *unused)
{
    (void)unused;
    if (!self->n)
        return Py_BuildValue("{s:i,s:O,s:O,s:O,s:d}", "count", 0, "min", Py_None, "max", Py_None,
                             "mean", Py_None, "sum", 0.0);
    return Py_BuildValue("{s:L,s:d,s:d,s:d,s:d}", "count", (long long)self->n, "min", self->min,
                         "max", self->max, "mean", self->sum / (double)self->n, "sum", self->sum);
}

static PyObject *Instrument_reset(ProbeInstrument *self, PyObject *unused)
{
    (void)unused;
    self->isum = 0;
    self->fsum = 0;
    self->is_float = 0;
    self->n = 0;
    self->nsamples = 0;
    self->sum = self->min = self->max = 0;
    self->fired = 0;
    Py_RETURN_NONE;
}

static PyObject *get_count(ProbeInstrument *self, void *c)
{
    (void)c;
    return self->is_float ? PyFloat_FromDouble(self->fsum) : PyLong_FromLongLong(self->isum);
}

static PyObject *get_event(ProbeInstrument *self, void *c)
{
    (void)c;
    PyObject *parts = PyList_New(0);
    for (int i = 0; parts && i < 4; i++) {
        if (!(self->events & (1 << i)))
            continue;
        PyObject *s = PyUnicode_FromString(event_names[i]);
        if (!s || PyList_Append(parts, s) < 0)
            Py_CLEAR(parts);
        Py_XDECREF(s);
    }
    if (!parts)
        return NULL;
    PyObject *bar = PyUnicode_FromString("|");
    PyObject *r = bar ? PyUnicode_Join(bar, parts) : NULL;
    Py_XDECREF(bar);
    Py_DECREF(parts);
    return r;
}

static PyObject *get_errors(ProbeInstrument *self, void *c)
{
    (void)c;
    return PyList_GetSlice(self->errors, 0, PY_SSIZE_T_MAX);
}

static PyObject *get_status(ProbeInstrument *self, void *c)
{
    (void)c;
    Py_ssize_t n = PyList_GET_SIZE(self->errors);
    if (!n)
        return Py_NewRef(Py_None);
    return Py_NewRef(PyTuple_GET_ITEM(PyList_GET_ITEM(self->errors, n - 1), 2));
}

static PyObject *get_expires(ProbeInstrument *self, void *c)
{
    (void)c;
    return self->expires ? PyFloat_FromDouble(self->expires) : Py_NewRef(Py_None);
}

static int set_expires(ProbeInstrument *self, PyObject *v, void *c)
{
    (void)c;
    if (!v || v == Py_None) {
        self->expires = 0;
        return 0;
    }
    double d = PyFloat_AsDouble(v);
    if (d == -1.0 && PyErr_Occurred())
        return -1;
    self->expires = d;
    self->expired = 0;
    return 0;
}

static PyGetSetDef Instrument_getset[] = {
    {"count", (getter)get_count, NULL, "the sum of a count instrument's values", NULL},
    {"event", (getter)get_event, NULL, "when it fires: call, return, error or end", NULL},
    {"errors", (getter)get_errors, NULL, "[(unix time, event, 'Type: message')], last 20", NULL},
    {"status", (getter)get_status, NULL, "None, or the last error's message", NULL},
    {"expires", (getter)get_expires, (setter)set_expires, "unix time it detaches, or None", NULL},
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef Instrument_members[] = {
    {"name", T_OBJECT_EX, offsetof(ProbeInstrument, name), READONLY, NULL},
    {"value", T_OBJECT_EX, offsetof(ProbeInstrument, value), READONLY, NULL},
    {"custom", T_OBJECT_EX, offsetof(ProbeInstrument, custom), READONLY, NULL},
    {"fired", T_LONGLONG, offsetof(ProbeInstrument, fired), READONLY, "times it fired"},
    {"nerrors", T_LONGLONG, offsetof(ProbeInstrument, nerrors), READONLY, "errors met"},
    {"disabled", T_INT, offsetof(ProbeInstrument, disabled), 0, "1: it no longer fires"},
    {"expired", T_INT, offsetof(ProbeInstrument, expired), READONLY, "1: its lifespan ended"},
    {"disable_on_error", T_INT, offsetof(ProbeInstrument, disable_on_error), 0, NULL},
    {"events", T_INT, offsetof(ProbeInstrument, events), READONLY, "enum probe_event mask"},
    {"__dictoffset__", T_PYSSIZET, offsetof(ProbeInstrument, dict), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef Instrument_methods[] = {
    {"percentiles", (PyCFunction)Instrument_percentiles, METH_O,
     "percentiles(qs) -> the q-th percentiles (0..100) of a histogram's values"},
    {"stats", (PyCFunction)Instrument_stats, METH_NOARGS,
     "stats() -> {count, min, max, mean, sum} of a histogram's values"},
    {"reset", (PyCFunction)Instrument_reset, METH_NOARGS, "reset(): forgets the values seen"},
    {NULL, NULL, 0, NULL},
};

static int Instrument_traverse(ProbeInstrument *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->dict);
    Py_VISIT(self->custom);
    Py_VISIT(self->constant);
    Py_VISIT(self->fire);
    Py_VISIT(self->errors);
    Py_VISIT(self->log_target);
    return 0;
}

static int Instrument_clear(ProbeInstrument *self)
{
    Py_CLEAR(self->dict);
    Py_CLEAR(self->name);
    Py_CLEAR(self->value);
    Py_CLEAR(self->custom);
    Py_CLEAR(self->code);
    Py_CLEAR(self->constant);
    Py_CLEAR(self->bare);
    Py_CLEAR(self->fire);
    Py_CLEAR(self->errors);
    Py_CLEAR(self->rec_names);
    Py_CLEAR(self->rec_body);
    Py_CLEAR(self->log_target);
    return 0;
}

static void Instrument_dealloc(ProbeInstrument *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Instrument_clear(self);
    PyMem_Free(self->samples);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyType_Slot Instrument_slots[] = {
    {Py_tp_doc, "Instrument(name, value='1', event='return', *, lifespan=None, expires=None,"
                " disable_on_error=False, custom=None): fired by a probe with the value of"
                " its expression"},
    {Py_tp_init, Instrument_init},
    {Py_tp_dealloc, Instrument_dealloc},
    {Py_tp_traverse, Instrument_traverse},
    {Py_tp_clear, Instrument_clear},
    {Py_tp_getset, Instrument_getset},
    {Py_tp_members, Instrument_members},
    {Py_tp_methods, Instrument_methods},
    {0, NULL},
};

PyType_Spec ProbeInstrument_spec = {
    .name = "calltape._native.Instrument",
    .basicsize = sizeof(ProbeInstrument),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = Instrument_slots,
};
