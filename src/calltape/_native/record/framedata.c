/*
 * framedata.c - what a recorded call saw besides its arguments: the module
 * globals it reads (captured at entry) and its locals at return or raise,
 * for @calltape.record(globals=True, locals=True).
 *
 * Globals: the names a function's code (and the code nested in it) loads,
 * co_names, found once when the Recorder is made; at each call those present
 * in func.__globals__ whose values are data (not modules, functions,
 * classes or recorded functions) and whose names are not dunders.
 *
 * Locals at return:
 *   - 3.12+: sys.monitoring PY_RETURN *local* events on just the recorded
 *     code objects, under tool id CT_LOCALS_TOOL (not PROFILER_ID, which
 *     calltape.monitor uses); the callback copies the returning frame's
 *     locals when this thread is watching that code object.  Functions
 *     recorded without locals=True are never instrumented.
 *   - 3.11: a profile function installed for the duration of the call
 *     (the one it replaces, if any, is called on and restored afterwards).
 * Locals at raise: the frame of the traceback's first entry (the recorded
 * function's own frame, which keeps its locals after it finished).
 * With recursion the outermost frame returns last, so its copy wins.
 *
 * Invariants: nothing here raises into the recorded call: failures mean
 * no locals for that call; the watch stack and the profile function are
 * restored on every path.
 */
#include "framedata.h"

#define CT_LOCALS_TOOL 4
#define CT_LOCALS_TOOL_NAME "calltape locals"

static _Thread_local ct_locals_watch *tls_watch;

/* ---- globals ------------------------------------------------------------- */

static int add_names(PyObject *code, PyObject *seen, PyObject *out, int depth)
{
    PyObject *names = PyObject_GetAttrString(code, "co_names");
    PyObject *consts = names ? PyObject_GetAttrString(code, "co_consts") : NULL;
    int rc = -1;
    if (!names || !consts || !PyTuple_Check(names) || !PyTuple_Check(consts))
        goto done;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(names); i++) {
        PyObject *n = PyTuple_GET_ITEM(names, i);
        Py_ssize_t len = PyUnicode_GET_LENGTH(n);
        if (len > 4 && PyUnicode_READ_CHAR(n, 0) == '_' && PyUnicode_READ_CHAR(n, 1) == '_' &&
            PyUnicode_READ_CHAR(n, len - 1) == '_' && PyUnicode_READ_CHAR(n, len - 2) == '_')
            continue; /* dunder */
        int has = PySet_Contains(seen, n);
        if (has < 0 || (!has && (PySet_Add(seen, n) < 0 || PyList_Append(out, n) < 0)))
            goto done;
    }
    for (Py_ssize_t i = 0; depth < 16 && i < PyTuple_GET_SIZE(consts); i++) {
        PyObject *c = PyTuple_GET_ITEM(consts, i);
        if (PyCode_Check(c) && add_names(c, seen, out, depth + 1) < 0)
            goto done;
    }
    rc = 0;
done:
    Py_XDECREF(names);
    Py_XDECREF(consts);
    return rc;
}

PyObject *ct_global_names(PyObject *code)
{
    PyObject *seen = PySet_New(NULL), *out = PyList_New(0), *t = NULL;
    if (seen && out && add_names(code, seen, out, 0) == 0)
        t = PyList_AsTuple(out);
    Py_XDECREF(seen);
    Py_XDECREF(out);
    return t;
}

static int is_data(ct_state *st, PyObject *v)
{
    return !(PyModule_Check(v) || PyType_Check(v) || PyFunction_Check(v) || PyCFunction_Check(v) ||
             PyMethod_Check(v) || PyObject_TypeCheck(v, st->type.Recorder));
}

PyObject *ct_globals_snapshot(ct_state *st, PyObject *globals, PyObject *names)
{
    PyObject *out = PyDict_New();
    if (!out)
        return NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(names); i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i);
        PyObject *v = PyDict_GetItemWithError(globals, name);
        if (!v && PyErr_Occurred())
            goto error;
        if (v && is_data(st, v) && PyDict_SetItem(out, name, v) < 0)
            goto error;
    }
    return out;
error:
    Py_DECREF(out);
    return NULL;
}

/* ---- locals -------------------------------------------------------------- */

/* A plain dict of the frame's locals (3.13 gives a proxy).  New reference
 * or NULL (error cleared). */
static PyObject *frame_locals(PyFrameObject *frame)
{
    PyObject *loc = PyFrame_GetLocals(frame);
    PyObject *d = NULL;
    if (loc) {
        d = PyDict_New();
        if (d && PyDict_Merge(d, loc, 1) < 0)
            Py_CLEAR(d);
        Py_DECREF(loc);
    }
    if (!d)
        PyErr_Clear();
    return d;
}

/* Copies the locals of `frame` into the innermost watch when it watches
 * the frame's code. */
static void snapshot(PyFrameObject *frame)
{
    ct_locals_watch *w = tls_watch;
    if (!w || !frame)
        return;
    PyCodeObject *code = PyFrame_GetCode(frame);
    int mine = (PyObject *)code == w->code;
    Py_DECREF(code);
    if (!mine)
        return;
    PyObject *exc = ct_fetch_exc();
    PyObject *d = frame_locals(frame);
    if (d)
        Py_XSETREF(w->snapshot, d);
    ct_restore_exc(exc);
}

#if PY_VERSION_HEX >= 0x030C0000

/* sys.monitoring callback for PY_RETURN: (code, offset, retval). */
static PyObject *on_return(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    ct_locals_watch *w = tls_watch;
    if (w && nargs >= 1 && args[0] == w->code)
        snapshot(PyEval_GetFrame());
    Py_RETURN_NONE;
}

static PyMethodDef on_return_def = {"_locals_on_return", (PyCFunction)(void (*)(void))on_return,
                                    METH_FASTCALL, NULL};

/* Claims the tool id and registers the callback once per process. */
static int monitoring_ready(ct_state *st, PyObject *mon)
{
    if (st->rec.locals_tool_ready)
        return 0;
    PyObject *name = PyObject_CallMethod(mon, "get_tool", "i", CT_LOCALS_TOOL);
    if (!name)
        return -1;
    int ours =
        PyUnicode_Check(name) && PyUnicode_CompareWithASCIIString(name, CT_LOCALS_TOOL_NAME) == 0;
    int free_id = name == Py_None;
    if (!ours && !free_id) {
        PyErr_Format(PyExc_RuntimeError,
                     "locals=True needs sys.monitoring tool id %d, which %R already uses",
                     CT_LOCALS_TOOL, name);
        Py_DECREF(name);
        return -1;
    }
    Py_DECREF(name);
    if (free_id) {
        PyObject *r =
            PyObject_CallMethod(mon, "use_tool_id", "is", CT_LOCALS_TOOL, CT_LOCALS_TOOL_NAME);
        if (!r)
            return -1;
        Py_DECREF(r);
    }
    PyObject *cb = PyCFunction_NewEx(&on_return_def, st->module, NULL);
    PyObject *events = cb ? PyObject_GetAttrString(mon, "events") : NULL;
    PyObject *ev = events ? PyObject_GetAttrString(events, "PY_RETURN") : NULL;
    PyObject *r =
        ev ? PyObject_CallMethod(mon, "register_callback", "iOO", CT_LOCALS_TOOL, ev, cb) : NULL;
    Py_XDECREF(cb);
    Py_XDECREF(events);
    Py_XDECREF(ev);
    if (!r)
        return -1;
    Py_DECREF(r);
    st->rec.locals_tool_ready = 1;
    return 0;
}

int ct_locals_enable(ct_state *st, PyObject *func)
{
    PyObject *mon = PySys_GetObject("monitoring"); /* borrowed */
    if (!mon) {
        PyErr_SetString(PyExc_RuntimeError, "locals=True needs sys.monitoring");
        return -1;
    }
    if (monitoring_ready(st, mon) < 0)
        return -1;
    PyObject *events = PyObject_GetAttrString(mon, "events");
    PyObject *ev = events ? PyObject_GetAttrString(events, "PY_RETURN") : NULL;
    PyObject *r = ev ? PyObject_CallMethod(mon, "set_local_events", "iOO", CT_LOCALS_TOOL,
                                           PyFunction_GET_CODE(func), ev)
                     : NULL;
    Py_XDECREF(events);
    Py_XDECREF(ev);
    if (!r)
        return -1;
    Py_DECREF(r);
    return 0;
}

void ct_locals_begin(ct_locals_watch *w, PyObject *code)
{
    w->code = code;
    w->snapshot = NULL;
    w->prev = tls_watch;
    tls_watch = w;
}

#else /* 3.11: a profile function for the duration of the call */

static int on_profile(PyObject *obj, PyFrameObject *frame, int what, PyObject *arg)
{
    (void)obj;
    ct_locals_watch *w = tls_watch;
    if (!w)
        return 0;
    if (what == PyTrace_RETURN)
        snapshot(frame);
    if (w->saved_func)
        return w->saved_func(w->saved_obj, frame, what, arg);
    return 0;
}

int ct_locals_enable(ct_state *st, PyObject *func)
{
    (void)st;
    (void)func;
    return 0;
}

void ct_locals_begin(ct_locals_watch *w, PyObject *code)
{
    PyThreadState *ts = PyThreadState_Get();
    w->code = code;
    w->snapshot = NULL;
    w->prev = tls_watch;
    w->nested = ts->c_profilefunc == on_profile && w->prev;
    if (w->nested) { /* an outer watch installed it: chain to what it replaced */
        w->saved_func = w->prev->saved_func;
        w->saved_obj = Py_XNewRef(w->prev->saved_obj);
        tls_watch = w;
        return;
    }
    w->saved_func = ts->c_profilefunc;
    w->saved_obj = Py_XNewRef(ts->c_profileobj);
    tls_watch = w;
    PyObject *exc = ct_fetch_exc();
    PyEval_SetProfile(on_profile, NULL);
    ct_restore_exc(exc);
}

#endif

PyObject *ct_locals_end(ct_locals_watch *w, PyObject *exc)
{
    tls_watch = w->prev;
#if PY_VERSION_HEX < 0x030C0000
    if (!w->nested) {
        PyObject *pending = ct_fetch_exc();
        PyEval_SetProfile(w->saved_func, w->saved_obj);
        PyErr_Clear();
        ct_restore_exc(pending);
    }
    Py_CLEAR(w->saved_obj);
#endif
    if (exc && !w->snapshot) {
        PyObject *tb = PyException_GetTraceback(exc);
        if (tb && PyTraceBack_Check(tb)) {
            PyFrameObject *frame = ((PyTracebackObject *)tb)->tb_frame;
            PyCodeObject *code = frame ? PyFrame_GetCode(frame) : NULL;
            if (code && (PyObject *)code == w->code) {
                PyObject *saved = ct_fetch_exc();
                w->snapshot = frame_locals(frame);
                ct_restore_exc(saved);
            }
            Py_XDECREF(code);
        }
        Py_XDECREF(tb);
    }
    PyObject *d = w->snapshot;
    w->snapshot = NULL;
    return d;
}

/* ---- the function of a running frame ---------------------------------------- */

/* CPython keeps the function of a running frame in its interpreter frame,
 * which no public API of 3.11-3.13 exposes.  These mirror the first fields
 * of the private structs (Include/internal/pycore_frame.h): the frame
 * object's pointer to its interpreter frame, and there the function; the
 * result is checked before use (a function whose code is the frame's). */
struct ct_frame_head {
    PyObject_HEAD PyFrameObject *f_back;
    void *f_frame;
};
#if PY_VERSION_HEX >= 0x030C0000
struct ct_iframe_head {
    PyObject *f_code_or_executable;
    void *previous;
    PyObject *f_funcobj;
};
#define CT_IFRAME_FUNC(h) ((h)->f_funcobj)
#else
struct ct_iframe_head {
    PyObject *f_func;
};
#define CT_IFRAME_FUNC(h) ((h)->f_func)
#endif

PyObject *ct_frame_function(PyFrameObject *frame, PyCodeObject *code)
{
#if PY_VERSION_HEX >= 0x030E0000
    (void)frame;
    (void)code;
    return NULL; /* the layout above is known for 3.11 to 3.13 only */
#else
    struct ct_iframe_head *h = ((struct ct_frame_head *)frame)->f_frame;
    PyObject *fn = h ? CT_IFRAME_FUNC(h) : NULL;
    if (!fn || !PyFunction_Check(fn) || PyFunction_GET_CODE(fn) != (PyObject *)code)
        return NULL;
    return fn;
#endif
}

/* ---- encoding named values --------------------------------------------- */

void ct_encode_named(ct_state *st, wbuf *b, PyObject *d, Py_ssize_t limit, int max_depth,
                     const ct_redact *rd, PyObject *sanitize)
{
    ct_capture cap = {st, limit, 0, ct_redact_active(st, rd)};
    cap.max_depth = max_depth;
    PyObject *name, *v;
    Py_ssize_t pos = 0;
    wbuf_byte(b, WIRE_DICT);
    wbuf_varint(b, (uint64_t)PyDict_GET_SIZE(d));
    while (PyDict_Next(d, &pos, &name, &v)) {
        ct_capture_value(&cap, b, name);
        if (cap.redact && ct_should_redact(st, name, cap.redact)) {
            ct_put_redacted(st, b);
        } else if (sanitize) {
            ct_capture_sanitized(&cap, b, sanitize, name, v);
        } else {
            ct_capture_value(&cap, b, v);
        }
    }
}
