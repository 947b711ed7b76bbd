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
#include "record/flat.h"
#include "instruments/instruments.h"
#include "lifecycle.h"
#include "record/logq.h"
#include "record/monitor.h"
#include "record/options.h"
#include "probes/probes.h"
#include "read/reader.h"
#include "record/timer.h"
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
    if (!entry || PyDict_SetItem(st->objects.codecs, type, entry) < 0 ||
        PyDict_SetItem(st->objects.codec_decoders, name, dec) < 0) {
        Py_XDECREF(entry);
        return NULL;
    }
    Py_DECREF(entry);
    ct_typecache_clear(&st->objects.types);
    Py_RETURN_NONE;
}

static PyObject *bind_python(PyObject *m, PyObject *args)
{
    PyObject *markers, *info;
    if (!PyArg_ParseTuple(args, "O!O!:_bind", &PyDict_Type, &markers, &PyDict_Type, &info))
        return NULL;
    ct_state *st = get_state(m);
    Py_XSETREF(st->marker_types, Py_NewRef(markers));
    Py_XSETREF(st->sink.session_info, Py_NewRef(info));
    PyObject *w = PyDict_GetItemString(markers, "RecordingWarning");
    Py_XSETREF(st->sink.warn_category, Py_XNewRef(w));
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

static PyObject *unregister_codec(PyObject *m, PyObject *type)
{
    if (!PyType_Check(type))
        return PyErr_Format(PyExc_TypeError, "unregister_codec needs a type, not %R", type);
    ct_state *st = get_state(m);
    PyObject *entry = PyDict_GetItemWithError(st->objects.codecs, type); /* borrowed */
    if (!entry)
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_False);
    /* its decoder stays: values recorded with it still rebuild */
    if (PyDict_DelItem(st->objects.codecs, type) < 0)
        return NULL;
    ct_typecache_clear(&st->objects.types);
    Py_RETURN_TRUE;
}

/* nop(*args) -> None: nothing at all, as fast as a C function can be
 * called; bench run registers it as empty sys.monitoring callbacks, to
 * show what CPython's dispatch of an event costs before any recording. */
static PyObject *nop(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    (void)m;
    (void)args;
    (void)nargs;
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"nop", (PyCFunction)(void (*)(void))nop, METH_FASTCALL,
     "nop(*args) -> None, doing nothing: the cheapest callback (bench run's floor)"},
    {"flat_site_call", (PyCFunction)(void (*)(void))ct_flat_site_call,
     METH_FASTCALL | METH_KEYWORDS,
     "flat_site_call(offset, callee, *args, **kwargs): a timed call of flat_profile's rewrite"},
    {"configure", (PyCFunction)(void (*)(void))ct_configure_py, METH_VARARGS | METH_KEYWORDS,
     "configure(*, tape=None, flush_interval=None, on_full=None, buffer_bytes=None,"
     " redact=None, max_value_bytes=None, energy=None, retain=None)"},
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
    {"unregister_codec", unregister_codec, METH_O,
     "unregister_codec(type) -> whether a codec was registered for type: its values are"
     " captured as before it was (its decoder stays, for the values it encoded)"},
    {"mpi_rank", ct_mpi_rank_py, METH_NOARGS,
     "mpi_rank() -> the MPI rank a session begun now names (mpi4py, launcher variables), or"
     " None"},
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
    {"prune", ct_prune_py, METH_VARARGS,
     "prune(path, before_ns, keep_sessions=-1, max_bytes=-1) -> (sessions, calls, size):"
     " deletes the sessions that ended before before_ns, are not among the newest"
     " keep_sessions, or are the oldest while the tape is over max_bytes"},
    {"parse_size", ct_parse_size_py, METH_O,
     "parse_size(text) -> bytes: '2GB', '500MiB' (ValueError when it is not a size)"},
    {"copy", ct_copy_py, METH_VARARGS,
     "copy(src, dst) -> (sessions, calls): copies the tape src onto the tape dst"},
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
    {"probe_tool", ct_probe_tool_py, METH_NOARGS,
     "probe_tool() -> the sys.monitoring tool id of calltape's probes, or None before 3.12"},
    {"timer_begin", ct_timer_begin_py, METH_O,
     "timer_begin(recorder) -> the start of a block measured as a call of recorder's function"
     " (None when not recorded)"},
    {"timer_end", ct_timer_end_py, METH_VARARGS,
     "timer_end(recorder, start) -> the block's UUID: records it and writes its outputs"},
    {"call_uuid", ct_call_uuid_py, METH_VARARGS,
     "call_uuid(pid, thread_index, start_ns) -> the UUID of the call these name"},
    {"probe_specs", ct_probe_specs_py, METH_VARARGS,
     "probe_specs(path, op, *args): the probe specs of a tape (version, read, put, delete, mark)"},
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
    {"logq_setup", ct_logq_setup_py, METH_VARARGS,
     "logq_setup(hand, start): the log queue's hand function and drainer starter"},
    {"logq_run", ct_logq_run_py, METH_NOARGS,
     "logq_run(): the log drainer's body, until logq_stop()"},
    {"logq_flush", ct_logq_flush_py, METH_VARARGS,
     "logq_flush(timeout=None) -> True once every line queued before it was handed"},
    {"logq_stop", ct_logq_stop_py, METH_NOARGS,
     "logq_stop(): the drainer leaves once the queue is empty"},
    {"logq_stats", ct_logq_stats_py, METH_NOARGS,
     "logq_stats() -> {'queued', 'handed', 'dropped', 'waiting', 'capacity'}"},
    {NULL, NULL, 0, NULL},
};

/* The module state's references into pickle, sys and datetime.  0, or -1
 * with an exception set. */
static int import_helpers(ct_state *st)
{
    PyObject *pickle = PyImport_ImportModule("pickle");
    if (!pickle)
        return -1;
    st->imported.pickle_dumps = PyObject_GetAttrString(pickle, "dumps");
    st->imported.pickle_loads = PyObject_GetAttrString(pickle, "loads");
    st->imported.pickle_Unpickler = PyObject_GetAttrString(pickle, "Unpickler");
    Py_DECREF(pickle);
    if (!st->imported.pickle_dumps || !st->imported.pickle_loads || !st->imported.pickle_Unpickler)
        return -1;
    PyObject *sys = PyImport_ImportModule("sys");
    st->imported.sys_dict = sys ? Py_NewRef(PyModule_GetDict(sys)) : NULL;
    Py_XDECREF(sys);
    if (!st->imported.sys_dict)
        return -1;
    PyObject *dt = PyImport_ImportModule("datetime");
    if (!dt)
        return -1;
    st->imported.dt_datetime = PyObject_GetAttrString(dt, "datetime");
    st->imported.dt_timedelta = PyObject_GetAttrString(dt, "timedelta");
    PyObject *tz = PyObject_GetAttrString(dt, "timezone");
    PyObject *utc = tz ? PyObject_GetAttrString(tz, "utc") : NULL;
    Py_XDECREF(tz);
    Py_DECREF(dt);
    if (utc && st->imported.dt_datetime)
        st->imported.dt_epoch = PyObject_CallFunction(st->imported.dt_datetime, "iiiiiiiO", 1970, 1,
                                                      1, 0, 0, 0, 0, utc);
    Py_XDECREF(utc);
    if (!st->imported.dt_datetime || !st->imported.dt_timedelta || !st->imported.dt_epoch)
        return -1;
    return 0;
}

static int module_exec(PyObject *m)
{
    ct_state *st = get_state(m);
    st->module = m;
    st->rec.enabled = 1;
    st->rec.max_value_bytes = CT_VALUE_LIMIT_DEFAULT;
    st->sink.flush_interval = 0.1;
    st->sink.buffer_bytes = 64 << 20;
    st->redaction.builtin = 1;
    st->objects.codecs = PyDict_New();
    st->objects.codec_decoders = PyDict_New();
    st->sink.warned = PySet_New(NULL);
    st->imported.protocol5 = PyLong_FromLong(5);
    st->sink.session_info = PyDict_New();
    st->rec.decorated_codes = PySet_New(NULL);
    st->replay_names = ct_replay_names_new();
    st->names.spec = PyUnicode_InternFromString("__spec__");
    st->names.initializing = PyUnicode_InternFromString("_initializing");
    st->names.name = PyUnicode_InternFromString("__name__");
    st->names.sys_path0 = PyUnicode_InternFromString("sys_path0");
    st->names.cwd = PyUnicode_InternFromString("cwd");
    st->names.path = PyUnicode_InternFromString("path");
    st->rec.monitor.extra_index = -1;
    st->instr.statm_fd = -1;
    st->instr.stat_fd = -1;
    if (ct_logq_init(st) < 0)
        return -1;
    if (!st->rec.decorated_codes || !st->objects.codecs || !st->objects.codec_decoders ||
        !st->sink.warned || !st->imported.protocol5 || !st->sink.session_info ||
        !st->replay_names || !st->names.spec || !st->names.initializing || !st->names.name ||
        !st->names.sys_path0 || !st->names.cwd || !st->names.path)
        return -1;
    PyObject *probe =
        PyObject_CallFunction((PyObject *)&PyType_Type, "s()N", "_calltape_probe", PyDict_New());
    if (!probe)
        return -1;
    st->objects.subtype_dealloc =
        ((PyTypeObject *)probe)->tp_dealloc; /* that of every Python class */
    Py_DECREF(probe);
    if (import_helpers(st) < 0)
        return -1;
    PyObject *p = ct_default_tape();
    if (!p)
        return -1;
    st->sink.tape_path = ct_absolute_path(p);
    Py_DECREF(p);
    if (!st->sink.tape_path)
        return -1;
#define ADD_TYPE(field, spec, base)                                                                \
    do {                                                                                           \
        st->type.field = (PyTypeObject *)PyType_FromModuleAndSpec(m, &(spec), base);               \
        if (!st->type.field || PyModule_AddType(m, st->type.field) < 0)                            \
            return -1;                                                                             \
    } while (0)
    ADD_TYPE(Recorder, Recorder_spec, NULL);
    ADD_TYPE(Pending, Pending_spec, NULL);
    ADD_TYPE(AsyncGenProxy, AsyncGenProxy_spec, NULL);
    ADD_TYPE(Tape, Tape_spec, NULL);
    ADD_TYPE(Replayer, Replayer_spec, NULL);
    ADD_TYPE(Call, Call_spec, NULL);
    ADD_TYPE(Calls, Calls_spec, NULL);
    ADD_TYPE(CallIter, CallIter_spec, NULL);
    ADD_TYPE(Function, Function_spec, NULL);
    ADD_TYPE(Session, Session_spec, NULL);
    ADD_TYPE(Bound, Bound_spec, NULL);
    ADD_TYPE(Monitor, Monitor_spec, NULL);
    ADD_TYPE(ProbeInstrument, ProbeInstrument_spec, NULL);
    ADD_TYPE(ProbeHook, ProbeHook_spec, NULL);
    ADD_TYPE(SpecReader, SpecReader_spec, NULL);
#if PY_VERSION_HEX < 0x030C0000
    ADD_TYPE(ProbeWrapper, ProbeWrapper_spec, NULL);
#endif
    ADD_TYPE(Context, Context_spec, NULL);
    ADD_TYPE(FlatProfile, FlatProfile_spec, NULL);
    ADD_TYPE(TimerSink, TimerSink_spec, NULL);
    st->type.RestrictedUnpickler = (PyTypeObject *)ct_restricted_unpickler_type(
        m, st->imported.pickle_Unpickler, &st->imported.unpickler_rules_offset);
    if (!st->type.RestrictedUnpickler)
        return -1;
#undef ADD_TYPE
    return 0;
}

/* Every reference the module state owns, once: module_traverse visits and
 * module_clear releases this one list, so the two cannot disagree.  (The
 * type cache, the redaction memo and the monitor have their own pairs.) */
#define CT_STATE_REFS(X)                                                                           \
    X(marker_types)                                                                                \
    X(replay_names)                                                                                \
    X(names.spec)                                                                                  \
    X(names.initializing)                                                                          \
    X(names.name)                                                                                  \
    X(names.sys_path0)                                                                             \
    X(names.cwd)                                                                                   \
    X(names.path)                                                                                  \
    X(type.Recorder)                                                                               \
    X(type.Pending)                                                                                \
    X(type.AsyncGenProxy)                                                                          \
    X(type.Monitor)                                                                                \
    X(type.Tape)                                                                                   \
    X(type.Call)                                                                                   \
    X(type.Calls)                                                                                  \
    X(type.CallIter)                                                                               \
    X(type.Function)                                                                               \
    X(type.Session)                                                                                \
    X(type.Bound)                                                                                  \
    X(type.RestrictedUnpickler)                                                                    \
    X(type.Replayer)                                                                               \
    X(type.ProbeInstrument)                                                                        \
    X(type.ProbeHook)                                                                              \
    X(type.ProbeWrapper)                                                                           \
    X(type.SpecReader)                                                                             \
    X(type.Context)                                                                                \
    X(type.FlatProfile)                                                                            \
    X(type.TimerSink)                                                                              \
    X(flat.codes)                                                                                  \
    X(flat.fns)                                                                                    \
    X(probes.registry)                                                                             \
    X(probes.keys)                                                                                 \
    X(probes.out_name)                                                                             \
    X(probes.write_name)                                                                           \
    X(objects.codecs)                                                                              \
    X(objects.codec_decoders)                                                                      \
    X(objects.pickle_types)                                                                        \
    X(imported.pickle_dumps)                                                                       \
    X(imported.pickle_loads)                                                                       \
    X(imported.pickle_Unpickler)                                                                   \
    X(imported.bytes_io)                                                                           \
    X(imported.np_load)                                                                            \
    X(imported.sys_dict)                                                                           \
    X(imported.dt_datetime)                                                                        \
    X(imported.dt_timedelta)                                                                       \
    X(imported.dt_epoch)                                                                           \
    X(imported.protocol5)                                                                          \
    X(redaction.exact)                                                                             \
    X(redaction.patterns)                                                                          \
    X(sink.tape_path)                                                                              \
    X(sink.tape_namer)                                                                             \
    X(sink.session_info)                                                                           \
    X(sink.warn_category)                                                                          \
    X(sink.warned)                                                                                 \
    X(life.sigterm_prev)                                                                           \
    X(logq.hand)                                                                                   \
    X(logq.start)                                                                                  \
    X(rec.decorated_codes)

static int module_traverse(PyObject *m, visitproc visit, void *arg)
{
    ct_state *st = get_state(m);
#define VISIT_REF(field) Py_VISIT(st->field);
    CT_STATE_REFS(VISIT_REF)
#undef VISIT_REF
    if (ct_typecache_traverse(&st->objects.types, visit, arg) < 0)
        return -1;
    if (ct_redact_memo_traverse(st, visit, arg) < 0 || ct_logrec_traverse(st, visit, arg) < 0)
        return -1;
    return ct_monitor_traverse(st, visit, arg);
}

static int module_clear(PyObject *m)
{
    ct_state *st = get_state(m);
    ct_monitor_stop_running(st); /* one still running at exit: its calls so far are kept */
    /* calls from here on are only counted (ct_count_late_call) */
    st->rec.enabled = 0;
    st->rec.finalized = 1;
    PyMem_Free(st->probes.started); /* the registry's hooks go with it */
    st->probes.started = NULL;
    st->probes.nstarted = 0;
#define CLEAR_REF(field) Py_CLEAR(st->field);
    CT_STATE_REFS(CLEAR_REF)
#undef CLEAR_REF
    ct_typecache_clear(&st->objects.types);
    ct_redact_memo_clear(st);
    ct_logrec_forget(st);
    ct_monitor_clear(st);
    return 0;
}

static void module_free(void *m)
{
    ct_state *st = get_state(m);
    ct_sink_free(st);
    ct_logq_free(st);
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
