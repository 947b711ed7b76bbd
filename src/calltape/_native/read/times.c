/*
 * times.c - the times and durations a reader's caller passes (search's,
 * children's and export's since/until, min_duration/max_duration) as ns.
 *
 * A time is a datetime (a naive one is local time, as datetime.now()
 * gives) or seconds since the epoch; a duration is seconds >= 0.  Values
 * past int64's range clamp to it; NaN and bools are refused with one
 * sentence naming the parameter.
 */
#include "reader.h"

#include <math.h>

static int64_t clamp_ns(double ns)
{
    if (ns >= 9.2e18)
        return INT64_MAX;
    if (ns <= -9.2e18)
        return INT64_MIN;
    return (int64_t)llround(ns);
}

int ct_time_to_ns(ct_state *st, PyObject *v, const char *name, int64_t *out)
{
    int is_dt = PyObject_IsInstance(v, st->imported.dt_datetime);
    if (is_dt < 0)
        return -1;
    if (!is_dt) {
        if (PyBool_Check(v) || !(PyLong_Check(v) || PyFloat_Check(v))) {
            PyErr_Format(PyExc_TypeError,
                         "%s must be a datetime or seconds since the epoch, not %R", name, v);
            return -1;
        }
        double d = PyFloat_AsDouble(v);
        if (d == -1.0 && PyErr_Occurred())
            return -1;
        if (isnan(d)) {
            PyErr_Format(PyExc_ValueError, "%s must be a time, not %R", name, v);
            return -1;
        }
        *out = clamp_ns(d * 1e9);
        return 0;
    }
    PyObject *aware = NULL, *td = NULL, *tz = PyObject_GetAttrString(v, "tzinfo");
    if (!tz)
        return -1;
    /* a naive time is local time, as datetime.now() gives */
    aware = tz == Py_None ? PyObject_CallMethod(v, "astimezone", NULL) : Py_NewRef(v);
    Py_DECREF(tz);
    td = aware ? PyNumber_Subtract(aware, st->imported.dt_epoch) : NULL;
    Py_XDECREF(aware);
    if (!td)
        return -1;
    long long part[3] = {0, 0, 0};
    static const char *const names[3] = {"days", "seconds", "microseconds"};
    for (int i = 0; i < 3; i++) {
        PyObject *x = PyObject_GetAttrString(td, names[i]);
        part[i] = x ? PyLong_AsLongLong(x) : -1;
        Py_XDECREF(x);
        if (PyErr_Occurred()) {
            Py_DECREF(td);
            return -1;
        }
    }
    Py_DECREF(td);
    long long sec = part[0] * 86400 + part[1];
    if (sec > 9200000000LL || sec < -9200000000LL)
        *out = sec > 0 ? INT64_MAX : INT64_MIN;
    else
        *out = sec * 1000000000LL + part[2] * 1000;
    return 0;
}

int ct_duration_to_ns(PyObject *v, const char *name, int64_t *out)
{
    double d = PyFloat_AsDouble(v);
    if (d == -1.0 && PyErr_Occurred()) {
        PyErr_Format(PyExc_TypeError, "%s must be a number of seconds, not %R", name, v);
        return -1;
    }
    if (!(d >= 0)) {
        PyErr_Format(PyExc_ValueError, "%s must be >= 0 seconds, not %R", name, v);
        return -1;
    }
    *out = clamp_ns(d * 1e9);
    return 0;
}
