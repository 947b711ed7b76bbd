/*
 * module.c - the _native module: multi-phase init, the module state (made,
 * traversed, cleared, freed), the method table, and the few functions that
 * only set state (register_codec, _bind) or join the parts at exit
 * (_shutdown).  configure() and the recording options: options.c.  Where records go: sink.c; the
 * ways in: recorder.c, monitor*.c; the ways out: tape.c, views.c, replay.c.
 *
 * Invariants: this file is the top of the binding: it calls the other
 * files, none calls it.
 */
#include "record/capture.h"
#include "instruments/instruments.h"
#include "lifecycle.h"
#include "record/monitor.h"
#include "record/options.h"
#include "read/reader.h"
#include "sink.h"

static ct_state *get_state(PyObject *m)
{
    return (ct_state *)PyModule_GetState(m);
}

/* ---- Python-facing functions ---- */

static PyObject *register_codec(PyObject *m, PyObject *args)
{
    PyObject *type, *name, *enc, *dec;
    if (!PyArg_ParseTuple(args, "OUOO:register_codec", &type, &name, &enc, &dec))
        return NULL;
    if (!PyType_Check(type))
        return PyErr_Format(PyExc_TypeError, "register_codec needs a type, not %R", type);
    if (!PyCallable_Check(enc) || !PyCallable_Check(dec))
        return PyErr_Format(PyExc_TypeError, "the encode and decode of codec %R must be callable",
                            name);
    if (PyUnicode_CompareWithASCIIString(name, "numpy.ndarray") == 0)
        return PyErr_Format(PyExc_ValueError, "the codec name %R is reserved", name);
    ct_state *st = get_state(m);
    PyObject *entry = PyTuple_Pack(3, name, enc, dec);
    if (!entry || PyDict_SetItem(st->codecs, type, entry) < 0 ||
        PyDict_SetItem(st->codec_decoders, name, dec) < 0) {
        Py_XDECREF(entry);
        return NULL;
    }
    Py_DECREF(entry);
    ct_typecache_clear(&st->types);
    Py_RETURN_NONE;
}

static PyObject *bind_python(PyObject *m, PyObject *args)
{
    PyObject *markers, *info;
    if (!PyArg_ParseTuple(args, "O!O!:_bind", &PyDict_Type, &markers, &PyDict_Type, &info))
        return NULL;
    ct_state *st = get_state(m);
    Py_XSETREF(st->marker_types, Py_NewRef(markers));
    Py_XSETREF(st->session_info, Py_NewRef(info));
    PyObject *w = PyDict_GetItemString(markers, "RecordingWarning");
    Py_XSETREF(st->warn_category, Py_XNewRef(w));
    Py_RETURN_NONE;
}

static PyObject *shutdown(PyObject *m, PyObject *unused)
{
    (void)unused;
    ct_state *st = get_state(m);
    PyObject *r = ct_flush_all(st, 30.0);
    Py_XDECREF(r);
    PyErr_Clear();
    /* The engines stay open and a running monitor keeps running: calls made
     * after this hook (exit handlers registered before calltape's, daemon
     * threads, __del__ and finalizers at teardown) are still recorded, and
     * written when the module is freed (or, if the interpreter never frees
     * it, by the engine's own exit hook). */
    Py_RETURN_NONE;
}

static PyObject *preview(PyObject *m, PyObject *args)
{
    (void)m;
    Py_buffer view;
    Py_ssize_t limit = CT_PREVIEW_LIMIT;
    if (!PyArg_ParseTuple(args, "y*|n:preview", &view, &limit))
        return NULL;
    wbuf out;
    wbuf_init(&out, NULL, 0);
    const uint8_t *p = view.buf, *end = p + view.len;
    int first = 1;
    while (p && p < end) {
        if (!first)
            wbuf_put(&out, ", ", 2);
        first = 0;
        p = wire_preview(p, end, &out, (size_t)limit);
    }
    PyBuffer_Release(&view);
    PyObject *s = PyUnicode_DecodeUTF8((const char *)out.data, (Py_ssize_t)out.len, "replace");
    wbuf_free(&out);
    return s;
}

static PyMethodDef module_methods[] = {
    {"configure", (PyCFunction)(void (*)(void))ct_configure_py, METH_VARARGS | METH_KEYWORDS,
     "configure(*, tape=None, flush_interval=None, on_full=None, buffer_bytes=None,"
     " redact=None, max_value_bytes=None, energy=None)"},
    {"check_options", (PyCFunction)(void (*)(void))ct_check_options_py,
     METH_VARARGS | METH_KEYWORDS,
     "check_options(**options): the error record() or monitor() would raise for a bad"
     " recording option, else None"},
    {"default_tape", ct_default_tape_py, METH_NOARGS,
     "default_tape() -> $CALLTAPE_TAPE when set, else 'calltape.db'"},
    {"flush", (PyCFunction)(void (*)(void))ct_flush_py, METH_VARARGS | METH_KEYWORDS,
     "flush(timeout=None) -> bool"},
    {"stats", ct_stats_py, METH_NOARGS, "stats() -> dict of recording counters"},
    {"register_codec", register_codec, METH_VARARGS, "register_codec(type, name, encode, decode)"},
    {"preview", preview, METH_VARARGS, "preview(wire_bytes, limit=200) -> str"},
    {"format_duration", ct_format_duration_py, METH_O,
     "format_duration(seconds or None) -> str: 850 ns, 12.50 us, 3.20 ms, 1.50 s, or -"},
    {"compare", (PyCFunction)(void (*)(void))ct_compare_py, METH_VARARGS | METH_KEYWORDS,
     "compare(expected, actual, *, rel=0.0, abs=0.0) -> None when equal, else where they"
     " differ"},
    {"encode", ct_encode_py, METH_O, "encode(value) -> bytes of one tape value (no blobs)"},
    {"decode", (PyCFunction)(void (*)(void))ct_decode_py, METH_VARARGS | METH_KEYWORDS,
     "decode(data, *, trust=False, allow=()) -> the value"},
    {"literal", ct_literal_py, METH_O,
     "literal(value) -> Python source for an equal value, or None when it has none"},
    {"check_writable", ct_check_writable_py, METH_O,
     "check_writable(path): TapeError unless a recording could write the tape at path"},
    {"resolve", (PyCFunction)(void (*)(void))ct_resolve_py, METH_VARARGS | METH_KEYWORDS,
     "resolve(module, qualname, file=None) -> the original function, found as replay finds"
     " it (file: the recorded script of a __main__ function); LookupError says why not"},
    {"push_import_path", ct_import_path_push_py, METH_O,
     "push_import_path(folders) -> the folders put in front of sys.path (those not on it)"},
    {"pop_import_path", ct_import_path_pop_py, METH_O,
     "pop_import_path(added): takes out of sys.path what push_import_path put there"},
    {"recorded_folders", (PyCFunction)(void (*)(void))ct_recorded_folders_py,
     METH_VARARGS | METH_KEYWORDS,
     "recorded_folders(sessions, *, current=True) -> their sys.path[0] and working folders,"
     " then the current folder"},
    {"_bind", bind_python, METH_VARARGS, NULL},
    {"_after_fork_child", ct_after_fork_child_py, METH_NOARGS, NULL},
    {"_before_fork", ct_before_fork_py, METH_NOARGS, NULL},
    {"_begin_session", ct_begin_session_py, METH_O,
     "_begin_session(tape) -> the id of this process's session on tape (None: the default),"
     " begun now; 0 when the tape cannot be written"},
    {"_install_sigterm", ct_install_sigterm_py, METH_NOARGS,
     "_install_sigterm() -> True when calltape's SIGTERM handler was installed"},
    {"_on_sigterm", ct_on_sigterm_py, METH_VARARGS, NULL},
    {"_children_session", ct_children_session_py, METH_NOARGS, NULL},
    {"_watch_children", ct_watch_children_py, METH_NOARGS, NULL},
    {"_shutdown", shutdown, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static int module_exec(PyObject *m)
{
    ct_state *st = get_state(m);
    st->module = m;
    st->enabled = 1;
    st->max_value_bytes = CT_VALUE_LIMIT_DEFAULT;
    st->flush_interval = 0.1;
    st->buffer_bytes = 64 << 20;
    st->redact_default = 1;
    st->codecs = PyDict_New();
    st->codec_decoders = PyDict_New();
    st->warned = PySet_New(NULL);
    st->protocol5 = PyLong_FromLong(5);
    st->session_info = PyDict_New();
    st->decorated_codes = PySet_New(NULL);
    st->monitor.extra_index = -1;
    st->statm_fd = -1;
    if (!st->decorated_codes || !st->codecs || !st->codec_decoders || !st->warned ||
        !st->protocol5 || !st->session_info)
        return -1;
    PyObject *probe =
        PyObject_CallFunction((PyObject *)&PyType_Type, "s()N", "_calltape_probe", PyDict_New());
    if (!probe)
        return -1;
    st->subtype_dealloc = ((PyTypeObject *)probe)->tp_dealloc; /* that of every Python class */
    Py_DECREF(probe);
    PyObject *pickle = PyImport_ImportModule("pickle");
    if (!pickle)
        return -1;
    st->pickle_dumps = PyObject_GetAttrString(pickle, "dumps");
    st->pickle_loads = PyObject_GetAttrString(pickle, "loads");
    st->pickle_Unpickler = PyObject_GetAttrString(pickle, "Unpickler");
    Py_DECREF(pickle);
    if (!st->pickle_dumps || !st->pickle_loads || !st->pickle_Unpickler)
        return -1;
    PyObject *dt = PyImport_ImportModule("datetime");
    if (!dt)
        return -1;
    st->dt_datetime = PyObject_GetAttrString(dt, "datetime");
    st->dt_timedelta = PyObject_GetAttrString(dt, "timedelta");
    PyObject *tz = PyObject_GetAttrString(dt, "timezone");
    PyObject *utc = tz ? PyObject_GetAttrString(tz, "utc") : NULL;
    Py_XDECREF(tz);
    Py_DECREF(dt);
    if (utc && st->dt_datetime)
        st->dt_epoch =
            PyObject_CallFunction(st->dt_datetime, "iiiiiiiO", 1970, 1, 1, 0, 0, 0, 0, utc);
    Py_XDECREF(utc);
    if (!st->dt_datetime || !st->dt_timedelta || !st->dt_epoch)
        return -1;
    PyObject *p = ct_default_tape();
    if (!p)
        return -1;
    st->tape_path = ct_absolute_path(p);
    Py_DECREF(p);
    if (!st->tape_path)
        return -1;
#define ADD_TYPE(field, spec, base)                                                                \
    do {                                                                                           \
        st->field = (PyTypeObject *)PyType_FromModuleAndSpec(m, &(spec), base);                    \
        if (!st->field || PyModule_AddType(m, st->field) < 0)                                      \
            return -1;                                                                             \
    } while (0)
    ADD_TYPE(Recorder_type, Recorder_spec, NULL);
    ADD_TYPE(Pending_type, Pending_spec, NULL);
    ADD_TYPE(AsyncGenProxy_type, AsyncGenProxy_spec, NULL);
    ADD_TYPE(Tape_type, Tape_spec, NULL);
    ADD_TYPE(Replayer_type, Replayer_spec, NULL);
    ADD_TYPE(Call_type, Call_spec, NULL);
    ADD_TYPE(Calls_type, Calls_spec, NULL);
    ADD_TYPE(CallIter_type, CallIter_spec, NULL);
    ADD_TYPE(Function_type, Function_spec, NULL);
    ADD_TYPE(Session_type, Session_spec, NULL);
    ADD_TYPE(Bound_type, Bound_spec, NULL);
    ADD_TYPE(Monitor_type, Monitor_spec, NULL);
    st->RestrictedUnpickler_type = (PyTypeObject *)ct_restricted_unpickler_type(
        m, st->pickle_Unpickler, &st->unpickler_rules_offset);
    if (!st->RestrictedUnpickler_type)
        return -1;
#undef ADD_TYPE
    return 0;
}

static int module_traverse(PyObject *m, visitproc visit, void *arg)
{
    ct_state *st = get_state(m);
    Py_VISIT(st->Recorder_type);
    Py_VISIT(st->Pending_type);
    Py_VISIT(st->AsyncGenProxy_type);
    Py_VISIT(st->Tape_type);
    Py_VISIT(st->Replayer_type);
    Py_VISIT(st->Call_type);
    Py_VISIT(st->Calls_type);
    Py_VISIT(st->CallIter_type);
    Py_VISIT(st->Function_type);
    Py_VISIT(st->Session_type);
    Py_VISIT(st->Bound_type);
    Py_VISIT(st->dt_datetime);
    Py_VISIT(st->dt_timedelta);
    Py_VISIT(st->dt_epoch);
    Py_VISIT(st->RestrictedUnpickler_type);
    Py_VISIT(st->codecs);
    Py_VISIT(st->codec_decoders);
    Py_VISIT(st->pickle_types);
    if (ct_typecache_traverse(&st->types, visit, arg) < 0)
        return -1;
    Py_VISIT(st->marker_types);
    Py_VISIT(st->warn_category);
    Py_VISIT(st->session_info);
    Py_VISIT(st->sigterm_prev);
    Py_VISIT(st->Monitor_type);
    Py_VISIT(st->decorated_codes);
    if (ct_redact_memo_traverse(st, visit, arg) < 0)
        return -1;
    return ct_monitor_traverse(st, visit, arg);
}

static int module_clear(PyObject *m)
{
    ct_state *st = get_state(m);
    ct_monitor_stop_running(st); /* one still running at exit: its calls so far are kept */
    /* calls from here on are only counted (ct_count_late_call) */
    st->enabled = 0;
    st->finalized = 1;
    Py_CLEAR(st->Recorder_type);
    Py_CLEAR(st->Pending_type);
    Py_CLEAR(st->AsyncGenProxy_type);
    Py_CLEAR(st->Tape_type);
    Py_CLEAR(st->Replayer_type);
    Py_CLEAR(st->Call_type);
    Py_CLEAR(st->Calls_type);
    Py_CLEAR(st->CallIter_type);
    Py_CLEAR(st->Function_type);
    Py_CLEAR(st->Session_type);
    Py_CLEAR(st->Bound_type);
    Py_CLEAR(st->dt_datetime);
    Py_CLEAR(st->dt_timedelta);
    Py_CLEAR(st->dt_epoch);
    Py_CLEAR(st->RestrictedUnpickler_type);
    Py_CLEAR(st->codecs);
    Py_CLEAR(st->codec_decoders);
    Py_CLEAR(st->pickle_types);
    ct_typecache_clear(&st->types);
    Py_CLEAR(st->pickle_dumps);
    Py_CLEAR(st->pickle_loads);
    Py_CLEAR(st->pickle_Unpickler);
    Py_CLEAR(st->bytes_io);
    Py_CLEAR(st->np_load);
    Py_CLEAR(st->protocol5);
    Py_CLEAR(st->redact_exact);
    Py_CLEAR(st->redact_patterns);
    ct_redact_memo_clear(st);
    Py_CLEAR(st->marker_types);
    Py_CLEAR(st->warn_category);
    Py_CLEAR(st->warned);
    Py_CLEAR(st->tape_path);
    Py_CLEAR(st->session_info);
    Py_CLEAR(st->sigterm_prev);
    Py_CLEAR(st->Monitor_type);
    Py_CLEAR(st->decorated_codes);
    ct_monitor_clear(st);
    return 0;
}

static void module_free(void *m)
{
    ct_state *st = get_state(m);
    ct_sink_free(st);
    ct_energy_close(st);
    ct_rss_forget(st);
    module_clear(m);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "calltape._native",
    .m_doc = "The C engine of calltape.",
    .m_size = sizeof(ct_state),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC PyInit__native(void)
{
    return PyModuleDef_Init(&module_def);
}
