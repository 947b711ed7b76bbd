/*
 * module.c - the _native module: multi-phase init, module state, the
 * engines (one per tape path), configuration, flush, statistics, codecs,
 * fork and exit hooks.
 *
 * Invariants: every engine slot lives until the module is freed (a
 * Recorder may cache a pointer to it); configure() only changes what later
 * calls use; nothing here raises into a recorded call (ct_append and
 * ct_warn_once save and restore the pending exception).
 */
#include "capture.h"
#include "reader.h"
#include "recorder.h"

#include <unistd.h>

static ct_state *get_state(PyObject *m)
{
    return (ct_state *)PyModule_GetState(m);
}

void ct_warn_once(ct_state *st, const char *kind, const char *msg)
{
    PyObject *saved = ct_fetch_exc();
    PyObject *key = PyUnicode_FromString(kind);
    if (key && PySet_Contains(st->warned, key) == 0 && PySet_Add(st->warned, key) == 0) {
        if (PyErr_WarnEx(st->warn_category ? st->warn_category : PyExc_RuntimeWarning, msg, 1) < 0)
            PyErr_Clear();
    }
    Py_XDECREF(key);
    PyErr_Clear();
    ct_restore_exc(saved);
}

static void report_errors(ct_state *st, ct_engine_slot *slot)
{
    char msg[300];
    char full[400];
    if (engine_take_errors(slot->eng, msg, sizeof msg)) {
        snprintf(full, sizeof full,
                 "calltape cannot write to %s: %s (calls are still run;"
                 " unrecorded ones are counted in calltape.stats())",
                 engine_path(slot->eng), msg);
        ct_warn_once(st, "store", full);
    }
}

void ct_append(ct_state *st, ct_engine_slot *slot, const uint8_t *rec, size_t n)
{
    if (!slot->exported && (!slot->begun || (st->seq & 255) == 0))
        ct_session_begin(st, slot);
    int rc = engine_append(slot->eng, rec, n);
    if (rc == ENGINE_DROPPED || (st->seq & 1023) == 0)
        report_errors(st, slot);
}

static PyObject *absolute_path(PyObject *path)
{
    PyObject *os_path = PyImport_ImportModule("os.path");
    if (!os_path)
        return NULL;
    PyObject *r = PyObject_CallMethod(os_path, "abspath", "O", path);
    Py_DECREF(os_path);
    return r;
}

/* Writes sys.argv as a wire LIST of STR: text only, never a pickle, so that
 * reading a session runs nothing.  An int, float, bool, bytes or None item
 * is written as its repr, any other non-str as its type name in angle
 * brackets. */
static void put_argv(wbuf *b, PyObject *argv)
{
    Py_ssize_t n = argv && PyList_Check(argv) ? PyList_GET_SIZE(argv) : 0;
    wbuf_byte(b, WIRE_LIST);
    wbuf_varint(b, (uint64_t)n);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(argv, i);
        PyTypeObject *tp = Py_TYPE(item);
        int plain = item == Py_None || tp == &PyLong_Type || tp == &PyFloat_Type ||
                    tp == &PyBool_Type || tp == &PyBytes_Type; /* repr runs no program code */
        PyObject *raw = PyUnicode_Check(item)
                            ? PyUnicode_AsEncodedString(item, "utf-8", "surrogatepass")
                        : plain ? PyObject_Repr(item)
                                : PyUnicode_FromFormat("<%s>", tp->tp_name);
        if (raw && PyUnicode_Check(raw))
            Py_SETREF(raw, PyUnicode_AsUTF8String(raw));
        if (!raw) {
            PyErr_Clear();
            wire_tagged_bytes(b, WIRE_STR, "", 0);
            continue;
        }
        wire_tagged_bytes(b, WIRE_STR, PyBytes_AS_STRING(raw), (size_t)PyBytes_GET_SIZE(raw));
        Py_DECREF(raw);
    }
}

/* Where the program finds its modules, for the session row: sys.path[0]
 * made absolute (the script's folder; the working folder for -m, -c and
 * ""), and the working folder.  New references in folders[0] and [1], each
 * NULL when unknown; never leaves an exception set. */
static void program_folders(PyObject *folders[2])
{
    PyObject *path = PySys_GetObject("path"); /* borrowed */
    PyObject *first =
        path && PyList_Check(path) && PyList_GET_SIZE(path) > 0 ? PyList_GET_ITEM(path, 0) : NULL;
    folders[0] = first && PyUnicode_Check(first) ? absolute_path(first) : NULL;
    PyObject *here = PyUnicode_FromString(".");
    folders[1] = here ? absolute_path(here) : NULL;
    Py_XDECREF(here);
    PyErr_Clear();
}

/* Fills `o` from the module state; the session description points into
 * `argv` (filled here) and `folders` (new references the caller releases
 * after engine_new copied them). */
static void build_options(ct_state *st, engine_options *o, wbuf *argv, PyObject *folders[2])
{
    memset(o, 0, sizeof *o);
    o->flush_interval_ns = (uint64_t)(st->flush_interval * 1e9);
    o->max_buffer_bytes = (size_t)st->buffer_bytes;
    o->on_full_drop = st->on_full_drop;
    o->blob_min_bytes = CT_BLOB_MIN;
    o->mpi_rank = -1;
    const char *rank = getenv("OMPI_COMM_WORLD_RANK");
    if (!rank)
        rank = getenv("PMI_RANK");
    if (rank)
        o->mpi_rank = atoll(rank);
    PyObject *info = st->session_info;
    PyObject *v;
    o->host = (v = PyDict_GetItemString(info, "host")) ? PyUnicode_AsUTF8(v) : NULL;
    o->python_version = (v = PyDict_GetItemString(info, "python")) ? PyUnicode_AsUTF8(v) : NULL;
    o->calltape_version = (v = PyDict_GetItemString(info, "version")) ? PyUnicode_AsUTF8(v) : NULL;
    put_argv(argv, PySys_GetObject("argv"));
    o->argv = argv->data;
    o->argv_len = argv->len;
    program_folders(folders);
    o->sys_path0 = folders[0] ? PyUnicode_AsUTF8(folders[0]) : NULL;
    o->cwd = folders[1] ? PyUnicode_AsUTF8(folders[1]) : NULL;
    PyErr_Clear();
}

/* The slot of the engine for the absolute path `abs`, or NULL (never an
 * exception).  Runs no Python code: the GIL is not let go. */
static ct_engine_slot *find_slot(ct_state *st, PyObject *abs)
{
    for (size_t i = 0; i < st->nengines; i++)
        if (PyUnicode_Compare(st->engines[i]->path, abs) == 0)
            return st->engines[i];
    PyErr_Clear();
    return NULL;
}

/* Creates the engine for the absolute path `abs` (a new reference, always
 * taken).  Returns its slot (borrowed), or NULL with an exception set.
 * build_options() runs Python code (os.path.abspath), where another thread
 * may take the GIL and make its own first record onto the same tape: the
 * table is looked up again after it, and from there to the insertion
 * nothing lets the GIL go, so a path never gets two engines (two sessions
 * of one process). */
static ct_engine_slot *new_slot(ct_state *st, PyObject *abs)
{
    engine_options o;
    wbuf argv;
    PyObject *folders[2];
    wbuf_init(&argv, NULL, 0);
    build_options(st, &o, &argv, folders);
    ct_engine_slot *slot = find_slot(st, abs); /* made meanwhile by another thread */
    engine *e = NULL;
    char err[300] = "out of memory";
    if (slot)
        goto done;
    /* The table may grow; the slots it points to never move (Recorders and
     * pending generators keep pointers to them). */
    if (st->nengines == st->capengines) {
        size_t cap = st->capengines ? 2 * st->capengines : 8;
        ct_engine_slot **grown = PyMem_Realloc(st->engines, cap * sizeof(ct_engine_slot *));
        if (!grown)
            goto done;
        st->engines = grown;
        st->capengines = cap;
    }
    slot = PyMem_Calloc(1, sizeof *slot);
    o.path = slot ? PyUnicode_AsUTF8(abs) : NULL;
    o.parent_session = ct_inherited_session(o.path);
    e = o.path ? engine_new(&o, err, sizeof err) : NULL;
    if (!e) {
        PyMem_Free(slot);
        slot = NULL;
        goto done;
    }
    st->engines[st->nengines++] = slot;
    slot->eng = e;
    slot->path = Py_NewRef(abs);
    slot->serial = ++st->next_serial;
done:
    wbuf_free(&argv);
    Py_XDECREF(folders[0]);
    Py_XDECREF(folders[1]);
    Py_DECREF(abs);
    if (!slot && !PyErr_Occurred())
        PyErr_SetString(PyExc_MemoryError, err);
    return slot;
}

ct_engine_slot *ct_engine_for(ct_state *st, PyObject *path)
{
    int is_default = path == NULL;
    if (is_default) {
        if (st->default_slot)
            return st->default_slot;
        path = st->tape_path;
    }
    PyObject *abs = absolute_path(path); /* Python code: other threads may run */
    if (!abs)
        return NULL;
    ct_engine_slot *slot = find_slot(st, abs);
    if (slot)
        Py_DECREF(abs);
    else
        slot = new_slot(st, abs);
    if (slot && is_default)
        st->default_slot = slot;
    return slot;
}

/* ---- Python-facing functions ---- */

static PyObject *configure(PyObject *m, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"tape",         "flush_interval", "on_full",
                             "buffer_bytes", "redact",         "max_value_bytes",
                             "energy",       "pickle",         NULL};
    PyObject *tape = Py_None, *flush = Py_None, *on_full = Py_None, *buf = Py_None;
    PyObject *redact = Py_None, *maxb = Py_None, *energy = Py_None, *pickle = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|$OOOOOOOO:configure", kwlist, &tape, &flush,
                                     &on_full, &buf, &redact, &maxb, &energy, &pickle))
        return NULL;
    ct_state *st = get_state(m);
    if (pickle != Py_None) {
        PyObject *types = ct_type_tuple(pickle, "pickle");
        PyObject *set = types ? PySet_New(types) : NULL;
        Py_XDECREF(types);
        if (!set)
            return NULL;
        Py_XSETREF(st->pickle_types, set);
        ct_typecache_clear(&st->types);
    }
    if (energy != Py_None) {
        int on = PyObject_IsTrue(energy);
        if (on < 0)
            return NULL;
        st->energy_default = on ? CT_ENERGY_CONFIGURED : 0;
        if (on)
            ct_energy_open(st); /* an unavailable counter is reported now, once */
    }
    if (flush != Py_None) {
        double f = PyFloat_AsDouble(flush);
        if (f == -1.0 && PyErr_Occurred())
            return NULL;
        if (!(f > 0 && f <= 3600))
            return PyErr_Format(PyExc_ValueError,
                                "flush_interval must be between 0 and 3600"
                                " seconds, not %R",
                                flush);
        st->flush_interval = f;
    }
    if (on_full != Py_None) {
        if (!PyUnicode_Check(on_full) || (PyUnicode_CompareWithASCIIString(on_full, "wait") &&
                                          PyUnicode_CompareWithASCIIString(on_full, "drop")))
            return PyErr_Format(PyExc_ValueError, "on_full must be 'wait' or 'drop', not %R",
                                on_full);
        st->on_full_drop = PyUnicode_CompareWithASCIIString(on_full, "drop") == 0;
    }
    if (buf != Py_None) {
        Py_ssize_t n = PyLong_AsSsize_t(buf);
        if (n == -1 && PyErr_Occurred())
            return NULL;
        if (n < (4 << 20))
            return PyErr_Format(PyExc_ValueError, "buffer_bytes must be at least 4 MiB, not %zd",
                                n);
        st->buffer_bytes = n;
    }
    if (maxb != Py_None) {
        Py_ssize_t n = PyLong_AsSsize_t(maxb);
        if (n == -1 && PyErr_Occurred())
            return NULL;
        if (n < 16)
            return PyErr_Format(PyExc_ValueError, "max_value_bytes must be at least 16, not %zd",
                                n);
        st->max_value_bytes = n;
    }
    if (redact != Py_None)
        ct_redact_memo_clear(st); /* the rules change: decide names again */
    if (redact == Py_False) {     /* off: the built-in names and those configured */
        st->redact_default = 0;
        Py_CLEAR(st->redact_exact);
        Py_CLEAR(st->redact_patterns);
    } else if (redact == Py_True) {
        st->redact_default = 1;
    } else if (redact != Py_None) {
        PyObject *ex, *pats;
        if (ct_split_redact(redact, &ex, &pats) < 0)
            return NULL;
        Py_XSETREF(st->redact_exact, ex);
        Py_XSETREF(st->redact_patterns, pats);
        st->redact_default = 1;
    }
    if (tape != Py_None) {
        PyObject *p = PyOS_FSPath(tape);
        if (!p)
            return NULL;
        if (!PyUnicode_Check(p)) {
            Py_DECREF(p);
            return PyErr_Format(PyExc_TypeError, "tape must be a str path, not %R", tape);
        }
        PyObject *abs = absolute_path(p);
        Py_DECREF(p);
        if (!abs)
            return NULL;
        ct_engine_slot *old = st->default_slot;
        int same = PyUnicode_Compare(abs, st->tape_path) == 0;
        Py_SETREF(st->tape_path, abs);
        if (!same)
            st->default_slot = NULL; /* threads recording meanwhile use the new tape */
        if (!same && old && !old->pinned) {
            /* the old default tape is no longer used: write it out and stop
             * its writer; it starts again if a late call still uses it */
            Py_BEGIN_ALLOW_THREADS
                engine_park(old->eng, 30000000000ull);
            Py_END_ALLOW_THREADS
            engine_trim(old->eng); /* with the GIL: no append runs */
        }
    }
    Py_RETURN_NONE;
}

static PyObject *flush_all(ct_state *st, double timeout)
{
    int rc = 0;
    for (size_t i = 0; i < st->nengines; i++) {
        ct_engine_slot *slot = st->engines[i];
        if (slot->counters_dirty || (st->counters_dirty && i == 0))
            ct_emit_counters(st, slot); /* (values of no call: on the first tape) */
        int r;
        Py_BEGIN_ALLOW_THREADS
            r = engine_flush(slot->eng, (uint64_t)(timeout * 1e9));
        Py_END_ALLOW_THREADS
        report_errors(st, slot);
        if (r != 0)
            rc = 1;
    }
    return PyBool_FromLong(rc == 0);
}

static PyObject *flush(PyObject *m, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"timeout", NULL};
    PyObject *timeout = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:flush", kwlist, &timeout))
        return NULL;
    double t = 60.0;
    if (timeout != Py_None) {
        t = PyFloat_AsDouble(timeout);
        if (t == -1.0 && PyErr_Occurred())
            return NULL;
        if (t < 0)
            return PyErr_Format(PyExc_ValueError, "timeout must be >= 0, not %R", timeout);
    }
    return flush_all(get_state(m), t);
}

static long long value_count(const ct_state *st, int which)
{
    long long n = (long long)st->counters[which] + (long long)st->totals[which];
    for (size_t i = 0; i < st->nengines; i++)
        n += (long long)st->engines[i]->counters[which];
    return n;
}

static PyObject *stats(PyObject *m, PyObject *unused)
{
    (void)unused;
    ct_state *st = get_state(m);
    engine_stats total, one;
    memset(&total, 0, sizeof total);
    PyObject *errors = PyList_New(0);
    if (!errors)
        return NULL;
    int64_t session = 0;
    for (size_t i = 0; i < st->nengines; i++) {
        engine_get_stats(st->engines[i]->eng, &one);
        total.appended_records += one.appended_records;
        total.written_calls += one.written_calls;
        total.written_segments += one.written_segments;
        total.written_bytes += one.written_bytes;
        total.written_functions += one.written_functions;
        total.dropped_calls += one.dropped_calls;
        total.write_errors += one.write_errors;
        if (i == 0)
            session = one.session_id;
        if (one.last_error[0]) {
            PyObject *s = PyUnicode_FromString(one.last_error);
            if (!s || PyList_Append(errors, s) < 0) {
                Py_XDECREF(s);
                Py_DECREF(errors);
                return NULL;
            }
            Py_DECREF(s);
        }
    }
    return Py_BuildValue(
        "{s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:L,s:L,s:L,s:L,s:L,s:N,s:O}", "recorded",
        (unsigned long long)st->seq, "written", (unsigned long long)total.written_calls,
        "functions", (unsigned long long)total.written_functions, "segments",
        (unsigned long long)total.written_segments, "bytes",
        (unsigned long long)total.written_bytes, "dropped", (unsigned long long)total.dropped_calls,
        "write_errors", (unsigned long long)total.write_errors, "unencodable",
        value_count(st, CT_UNENCODABLE), "pickled", value_count(st, CT_PICKLED), "redacted",
        value_count(st, CT_REDACTED), "truncated", value_count(st, CT_TRUNCATED), "session",
        (long long)session, "errors", errors, "tape", st->tape_path);
}

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

static PyObject *after_fork_child(PyObject *m, PyObject *unused)
{
    (void)unused;
    ct_state *st = get_state(m);
    for (size_t i = 0; i < st->nengines; i++) {
        engine_set_seq_floor(st->engines[i]->eng, st->seq + 1);
        /* the child begins (and exports) a session of its own, and announces
         * every function again: what the parent had announced but not yet
         * written is the parent's, dropped in the child */
        st->engines[i]->begun = st->engines[i]->exported = 0;
        st->engines[i]->serial = ++st->next_serial;
        /* native thread ids changed: announce threads again */
        if (st->engines[i]->seen)
            memset(st->engines[i]->seen, 0, st->engines[i]->nseen);
    }
    memset(st->counters, 0, sizeof st->counters);
    st->counters_dirty = 0;
    for (size_t i = 0; i < st->nengines; i++) { /* the parent's, sent by the parent */
        memset(st->engines[i]->counters, 0, sizeof st->engines[i]->counters);
        st->engines[i]->counters_dirty = 0;
    }
    ct_rss_forget(st); /* /proc/self/statm named the parent */
    PySet_Clear(st->warned);
    Py_RETURN_NONE;
}

static PyObject *shutdown(PyObject *m, PyObject *unused)
{
    (void)unused;
    ct_state *st = get_state(m);
    ct_monitor_stop_running(st); /* one still running at exit: its calls so far are kept */
    PyObject *r = flush_all(st, 30.0);
    Py_XDECREF(r);
    PyErr_Clear();
    /* The engines stay open: calls made after this hook (exit handlers
     * registered before calltape's, daemon threads, finalizers) are still
     * recorded, and written when the module is freed (or, if the
     * interpreter never frees it, by the engine's own exit hook). */
    Py_RETURN_NONE;
}

void ct_count_late_call(ct_state *st, ct_engine_slot *slot)
{
    if (st->finalized && slot)
        engine_count_dropped(slot->eng, 1);
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
    {"configure", (PyCFunction)(void (*)(void))configure, METH_VARARGS | METH_KEYWORDS,
     "configure(*, tape=None, flush_interval=None, on_full=None, buffer_bytes=None,"
     " redact=None, max_value_bytes=None, energy=None)"},
    {"flush", (PyCFunction)(void (*)(void))flush, METH_VARARGS | METH_KEYWORDS,
     "flush(timeout=None) -> bool"},
    {"stats", stats, METH_NOARGS, "stats() -> dict of recording counters"},
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
    {"_after_fork_child", after_fork_child, METH_NOARGS, NULL},
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
    const char *env = getenv("CALLTAPE_TAPE");
    PyObject *p = PyUnicode_DecodeFSDefault(env && *env ? env : "calltape.db");
    if (!p)
        return -1;
    st->tape_path = absolute_path(p);
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
    for (size_t i = 0; i < st->nengines; i++) {
        engine_free(st->engines[i]->eng);
        Py_CLEAR(st->engines[i]->path);
        PyMem_Free(st->engines[i]->seen);
        PyMem_Free(st->engines[i]);
    }
    PyMem_Free(st->engines);
    st->engines = NULL;
    ct_energy_close(st);
    ct_rss_forget(st);
    st->nengines = 0;
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
