/*
 * sink.c - where the records of every capture path go: the engines (one
 * per tape path, created at first use), appending a framed record, the
 * value counters record, RecordingWarnings (once per problem), flush()
 * and stats().
 *
 * The default tape is a path, or (configure(tape=callable)) a namer asked
 * for the path when a call first needs the tape.
 *
 * Invariants: every engine slot lives until the module is freed (a
 * Recorder, a pending generator or the monitor may keep a pointer to it);
 * a path never gets two engines (two sessions of one process); nothing
 * here raises into a recorded call (ct_append and ct_warn_once save and
 * restore the pending exception).
 */
#include "sink.h"

#include "lifecycle.h"
#include "store.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static ct_state *get_state(PyObject *m)
{
    return (ct_state *)PyModule_GetState(m);
}

/* ---- warnings ------------------------------------------------------------ */

/* Whether `code` is calltape's own or its launcher's: a file of the
 * package (`prefix`: its folder and a slash), runpy (python -m calltape),
 * or the `calltape` console script. */
static int launcher_code(PyCodeObject *code, PyObject *prefix)
{
    PyObject *file = code->co_filename;
    if (!PyUnicode_Check(file))
        return 0;
    if (PyUnicode_Tailmatch(file, prefix, 0, PY_SSIZE_T_MAX, -1) == 1 ||
        PyUnicode_CompareWithASCIIString(file, "<frozen runpy>") == 0)
        return 1;
    static const char *const tails[] = {"/runpy.py", "/bin/calltape", NULL};
    for (int i = 0; tails[i]; i++) {
        PyObject *tail = PyUnicode_FromString(tails[i]);
        int match = tail && PyUnicode_Tailmatch(file, tail, 0, PY_SSIZE_T_MAX, 1) == 1;
        Py_XDECREF(tail);
        if (match)
            return 1;
    }
    PyErr_Clear();
    return 0;
}

/* The stacklevel that points a warning at the user's line: 1 (the running
 * frame) plus the frames of calltape's own code and its launcher on top of
 * it (a warning issued while calltape's Python code runs: flush(), or
 * `calltape run` starting to record, where no user frame is left and
 * Python says sys:1).  Never fails (1 when the package is not found). */
static int user_stacklevel(void)
{
    PyObject *name = PyUnicode_FromString("calltape");
    PyObject *mod = name ? PyImport_GetModule(name) : NULL;
    PyObject *paths = mod ? PyObject_GetAttrString(mod, "__path__") : NULL;
    PyObject *first = paths ? PySequence_GetItem(paths, 0) : NULL;
    PyObject *prefix = first ? PyUnicode_FromFormat("%U/", first) : NULL;
    Py_XDECREF(name);
    Py_XDECREF(mod);
    Py_XDECREF(paths);
    Py_XDECREF(first);
    PyErr_Clear();
    int level = 1;
    PyFrameObject *f = prefix ? PyEval_GetFrame() : NULL; /* borrowed */
    Py_XINCREF(f);
    while (f) {
        PyCodeObject *code = PyFrame_GetCode(f);
        int ours = launcher_code(code, prefix);
        Py_DECREF(code);
        if (!ours)
            break;
        level++;
        Py_SETREF(f, PyFrame_GetBack(f));
    }
    Py_XDECREF(f);
    Py_XDECREF(prefix);
    PyErr_Clear();
    return level;
}

void ct_warn_once(ct_state *st, const char *kind, const char *msg)
{
    PyObject *saved = ct_fetch_exc();
    PyObject *key = PyUnicode_FromString(kind);
    if (key && PySet_Contains(st->sink.warned, key) == 0 && PySet_Add(st->sink.warned, key) == 0) {
        if (PyErr_WarnEx(st->sink.warn_category ? st->sink.warn_category : PyExc_RuntimeWarning,
                         msg, user_stacklevel()) < 0)
            PyErr_Clear();
    }
    Py_XDECREF(key);
    PyErr_Clear();
    ct_restore_exc(saved);
}

static void report_errors(ct_state *st, ct_engine_slot *slot)
{
    char msg[1024];
    char full[1400], shown[256];
    if (engine_take_errors(slot->eng, msg, sizeof msg)) {
        if (strstr(msg, "recording goes on into the spool")) { /* writer.c: nothing lost */
            snprintf(full, sizeof full, "calltape: %s", msg);
            ct_warn_once(st, "spool", full);
            return;
        }
        store_redact(engine_path(slot->eng), shown, sizeof shown); /* a URL's password */
        snprintf(full, sizeof full,
                 "calltape cannot write to %s: %s (calls are still run;"
                 " unrecorded ones are counted in calltape.stats())",
                 shown, msg);
        ct_warn_once(st, "store", full);
    }
}

/* After an append that did not simply succeed (or every 1,024th record):
 * back-pressure waits with the GIL released, then errors are reported. */
static __attribute__((noinline)) void append_after(ct_state *st, ct_engine_slot *slot,
                                                   const uint8_t *rec, size_t n, int rc)
{
    while (rc == ENGINE_FULL) {
        Py_BEGIN_ALLOW_THREADS
            engine_wait_room(slot->eng, n);
        Py_END_ALLOW_THREADS
        rc = engine_append(slot->eng, rec, n);
    }
    report_errors(st, slot);
}

void ct_append(ct_state *st, ct_engine_slot *slot, const uint8_t *rec, size_t n)
{
    if (!slot->exported && (!slot->begun || (st->rec.seq & 255) == 0))
        ct_session_begin(st, slot);
    int rc = engine_append(slot->eng, rec, n);
    if (rc != ENGINE_APPENDED || (st->rec.seq & 1023) == 0)
        append_after(st, slot, rec, n, rc);
}

/* ---- engines ------------------------------------------------------------- */

PyObject *ct_absolute_path(PyObject *path)
{
    const char *text = PyUnicode_Check(path) ? PyUnicode_AsUTF8(path) : NULL;
    if (!text)
        PyErr_Clear(); /* not text: os.path.abspath says why */
    if (text && strstr(text, "://"))
        return Py_NewRef(path); /* a server's URL (postgresql://...): as given */
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

/* sys.argv as the program was typed: `-m app.child 50` rather than the
 * module's file that runpy put in sys.argv[0], when sys.orig_argv says the
 * program ran with -m and its arguments are still those (a program that
 * rewrote sys.argv keeps its own).  New reference, or NULL (no argv) with
 * no exception set. */
static PyObject *typed_argv(void)
{
    PyObject *argv = PySys_GetObject("argv"), *orig = PySys_GetObject("orig_argv");
    if (!argv || !PyList_Check(argv))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(argv),
               m = orig && PyList_Check(orig) ? PyList_GET_SIZE(orig) : 0;
    Py_ssize_t i = 1;
    while (i < m && !(PyUnicode_Check(PyList_GET_ITEM(orig, i)) &&
                      PyUnicode_CompareWithASCIIString(PyList_GET_ITEM(orig, i), "-m") == 0))
        i++;
    if (n < 1 || i + 1 >= m || m - (i + 2) != n - 1)
        return Py_NewRef(argv);
    PyObject *tail = PyList_GetSlice(orig, i + 2, m), *mine = PyList_GetSlice(argv, 1, n);
    int same = tail && mine ? PyObject_RichCompareBool(tail, mine, Py_EQ) : -1;
    PyObject *out = same == 1 ? PyList_New(0) : NULL;
    if (out) {
        PyObject *flag = PyUnicode_FromString("-m");
        if (!flag || PyList_Append(out, flag) < 0 ||
            PyList_Append(out, PyList_GET_ITEM(orig, i + 1)) < 0 ||
            PyList_SetSlice(out, 2, 2, mine) < 0)
            Py_CLEAR(out);
        Py_XDECREF(flag);
    }
    Py_XDECREF(tail);
    Py_XDECREF(mine);
    PyErr_Clear();
    return out ? out : Py_NewRef(argv);
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
    folders[0] = first && PyUnicode_Check(first) ? ct_absolute_path(first) : NULL;
    PyObject *here = PyUnicode_FromString(".");
    folders[1] = here ? ct_absolute_path(here) : NULL;
    Py_XDECREF(here);
    PyErr_Clear();
}

/* The rank mpi4py gives this process when the program imported mpi4py.MPI
 * (MPI is then initialized: importing it here would initialize MPI in a
 * program that does not use it), or -1.  Never leaves an exception set. */
static long long mpi4py_rank(void)
{
    PyObject *name = PyUnicode_FromString("mpi4py.MPI");
    PyObject *mpi = name ? PyImport_GetModule(name) : NULL;
    PyObject *comm = mpi ? PyObject_GetAttrString(mpi, "COMM_WORLD") : NULL;
    PyObject *rank = comm ? PyObject_CallMethod(comm, "Get_rank", NULL) : NULL;
    long long r = rank && PyLong_Check(rank) ? PyLong_AsLongLong(rank) : -1;
    Py_XDECREF(rank);
    Py_XDECREF(comm);
    Py_XDECREF(mpi);
    Py_XDECREF(name);
    PyErr_Clear();
    return r >= 0 ? r : -1;
}

/* The MPI rank of this process: mpi4py's when the program uses it, else
 * what Open MPI (OMPI_COMM_WORLD_RANK), an MPICH-style launcher (PMI_RANK)
 * or Slurm's srun (SLURM_PROCID) gave it, or -1 (none); an empty variable
 * counts as unset.  A value that is not a rank is reported once and left
 * out. */
static long long mpi_rank(ct_state *st)
{
    long long r = mpi4py_rank();
    if (r >= 0)
        return r;
    static const char *const names[] = {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID"};
    const char *name = NULL, *rank = NULL;
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !rank; i++)
        if ((rank = getenv(name = names[i])) && !*rank)
            rank = NULL; /* set but empty: as unset */
    if (!rank)
        return -1;
    char *end = NULL;
    errno = 0;
    r = strtoll(rank, &end, 10);
    if (end != rank && *end == 0 && errno == 0 && r >= 0)
        return r;
    char msg[200];
    snprintf(msg, sizeof msg,
             "calltape: %s=%.40s is not an MPI rank (a number from 0);"
             " sessions of this process have no rank",
             name, rank);
    ct_warn_once(st, "mpi_rank", msg);
    return -1;
}

PyObject *ct_mpi_rank_py(PyObject *m, PyObject *unused)
{
    (void)unused;
    long long r = mpi_rank(get_state(m));
    return r >= 0 ? PyLong_FromLongLong(r) : Py_NewRef(Py_None);
}

/* Fills `o` from the module state; the session description points into
 * `argv` (filled here) and `folders` (new references the caller releases
 * after engine_new copied them). */
static void build_options(ct_state *st, engine_options *o, wbuf *argv, PyObject *folders[2])
{
    memset(o, 0, sizeof *o);
    o->flush_interval_ns = (uint64_t)(st->sink.flush_interval * 1e9);
    o->max_buffer_bytes = (size_t)st->sink.buffer_bytes;
    o->on_full_drop = st->sink.on_full_drop;
    o->retain = st->sink.retain;
    o->mpi_rank = mpi_rank(st);
    PyObject *info = st->sink.session_info;
    PyObject *v;
    o->host = (v = PyDict_GetItemString(info, "host")) ? PyUnicode_AsUTF8(v) : NULL;
    o->python_version = (v = PyDict_GetItemString(info, "python")) ? PyUnicode_AsUTF8(v) : NULL;
    o->calltape_version = (v = PyDict_GetItemString(info, "version")) ? PyUnicode_AsUTF8(v) : NULL;
    PyObject *typed = typed_argv();
    put_argv(argv, typed);
    Py_XDECREF(typed);
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
    for (size_t i = 0; i < st->sink.nengines; i++)
        if (PyUnicode_Compare(st->sink.engines[i]->path, abs) == 0)
            return st->sink.engines[i];
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
    if (st->sink.nengines == st->sink.capengines) {
        size_t cap = st->sink.capengines ? 2 * st->sink.capengines : 8;
        ct_engine_slot **grown = PyMem_Realloc(st->sink.engines, cap * sizeof(ct_engine_slot *));
        if (!grown)
            goto done;
        st->sink.engines = grown;
        st->sink.capengines = cap;
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
    st->sink.engines[st->sink.nengines++] = slot;
    slot->eng = e;
    slot->path = Py_NewRef(abs);
    slot->serial = ++st->sink.next_serial;
done:
    wbuf_free(&argv);
    Py_XDECREF(folders[0]);
    Py_XDECREF(folders[1]);
    Py_DECREF(abs);
    if (!slot && !PyErr_Occurred())
        PyErr_SetString(PyExc_MemoryError, err);
    return slot;
}

/* Sets os.environ["CALLTAPE_TAPE"] to `abs`, as calltape.configure(tape=)
 * does, so that child processes record onto the same tape.  Never raises. */
static void export_tape(PyObject *abs)
{
    PyObject *os = PyImport_ImportModule("os");
    PyObject *environ = os ? PyObject_GetAttrString(os, "environ") : NULL;
    PyObject *key = PyUnicode_FromString("CALLTAPE_TAPE");
    if (environ && key)
        PyObject_SetItem(environ, key, abs);
    Py_XDECREF(key);
    Py_XDECREF(environ);
    Py_XDECREF(os);
    PyErr_Clear();
}

/* Asks the namer of configure(tape=namer) for the default tape: its
 * answer (a str path or an os.PathLike), made absolute, becomes the
 * default tape, exported as CALLTAPE_TAPE, and the namer is dropped.  The
 * namer runs with calltape's busy flag set: the calls it makes are not
 * recorded.  Returns 0, or -1 with an exception set when it raised or
 * answered something else (reported once; it is asked again at the next
 * call that needs the tape). */
static __attribute__((noinline)) int name_default_tape(ct_state *st)
{
    PyObject *namer = Py_NewRef(st->sink.tape_namer), *got = NULL, *path = NULL, *abs = NULL;
    ct_thread *t = &ct_tls_thread;
    t->busy++;
    got = PyObject_CallNoArgs(namer);
    t->busy--;
    path = got ? PyOS_FSPath(got) : NULL;
    if (path && !PyUnicode_Check(path)) {
        PyErr_Format(PyExc_TypeError, "it answered %.100s, not a str path", Py_TYPE(path)->tp_name);
        Py_CLEAR(path);
    }
    abs = path ? ct_absolute_path(path) : NULL;
    if (!abs)
        goto error;
    if (st->sink.tape_namer == namer) { /* not replaced while it ran */
        Py_CLEAR(st->sink.tape_namer);
        Py_SETREF(st->sink.tape_path, Py_NewRef(abs));
        export_tape(abs);
    }
    Py_DECREF(abs);
    Py_DECREF(path);
    Py_DECREF(got);
    Py_DECREF(namer);
    return 0;
error:;
    PyObject *exc = ct_fetch_exc();
    PyObject *text = exc ? PyObject_Str(exc) : NULL;
    const char *said = text && PyUnicode_Check(text) ? PyUnicode_AsUTF8(text) : NULL;
    PyObject *who = PyObject_Repr(namer);
    const char *name = who ? PyUnicode_AsUTF8(who) : NULL;
    char msg[400];
    snprintf(msg, sizeof msg,
             "calltape: the tape namer %.100s given to configure(tape=...) failed (%.60s: %.200s);"
             " calls are not recorded until it names a tape",
             name ? name : "?", exc ? Py_TYPE(exc)->tp_name : "?", said ? said : "");
    PyErr_Clear();
    Py_XDECREF(who);
    Py_XDECREF(text);
    ct_warn_once(st, "tape_namer", msg);
    if (exc)
        ct_restore_exc(exc);
    else
        PyErr_SetString(PyExc_RuntimeError, "the tape namer failed");
    Py_XDECREF(got);
    Py_XDECREF(path);
    Py_DECREF(namer);
    return -1;
}

ct_engine_slot *ct_engine_for(ct_state *st, PyObject *path)
{
    int is_default = path == NULL;
    if (is_default) {
        if (st->sink.default_slot)
            return st->sink.default_slot;
        if (st->sink.tape_namer && name_default_tape(st) < 0)
            return NULL;
        path = st->sink.tape_path;
    }
    Py_INCREF(path);                        /* configure() may replace the default meanwhile */
    PyObject *abs = ct_absolute_path(path); /* Python code: other threads may run */
    ct_engine_slot *slot = abs ? find_slot(st, abs) : NULL;
    if (slot)
        Py_DECREF(abs);
    else if (abs)
        slot = new_slot(st, abs); /* Python code again */
    /* the default only when it is still the configured tape: a configure(tape=)
     * that ran meanwhile chose another, which the next call opens */
    if (slot && is_default && path == st->sink.tape_path && !st->sink.tape_namer)
        st->sink.default_slot = slot;
    Py_DECREF(path);
    return slot;
}

/* The default tape `old` (may be NULL) is no longer used: its writer
 * writes out what it holds and stops (it starts again if a late call still
 * uses it), unless a Recorder or monitor pinned it. */
static void leave_default(ct_engine_slot *old)
{
    if (!old || old->pinned)
        return;
    Py_BEGIN_ALLOW_THREADS
        engine_park(old->eng, 30000000000ull);
    Py_END_ALLOW_THREADS
    engine_trim(old->eng); /* with the GIL: no append runs */
}

void ct_sink_set_default(ct_state *st, PyObject *abs)
{
    ct_engine_slot *old = st->sink.default_slot;
    int same = PyUnicode_Compare(abs, st->sink.tape_path) == 0;
    Py_SETREF(st->sink.tape_path, Py_NewRef(abs));
    Py_CLEAR(st->sink.tape_namer); /* a path given names the tape now */
    if (!same) {
        st->sink.default_slot = NULL; /* threads recording meanwhile use the new tape */
        leave_default(old);
    }
}

void ct_sink_set_namer(ct_state *st, PyObject *namer)
{
    ct_engine_slot *old = st->sink.default_slot;
    Py_XSETREF(st->sink.tape_namer, Py_NewRef(namer));
    st->sink.default_slot = NULL;
    leave_default(old);
}

void ct_sink_free(ct_state *st)
{
    for (size_t i = 0; i < st->sink.nengines; i++) {
        Py_BEGIN_ALLOW_THREADS /* up to 5 s: its last round, the join */
            engine_free(st->sink.engines[i]->eng);
        Py_END_ALLOW_THREADS
        Py_CLEAR(st->sink.engines[i]->path);
        PyMem_Free(st->sink.engines[i]->seen);
        PyMem_Free(st->sink.engines[i]);
    }
    PyMem_Free(st->sink.engines);
    st->sink.engines = NULL;
    st->sink.nengines = 0;
}

void ct_count_late_call(ct_state *st, ct_engine_slot *slot)
{
    if (st->rec.finalized && slot)
        engine_count_dropped(slot->eng, 1);
}

PyObject *ct_begin_session_py(PyObject *m, PyObject *tape)
{
    ct_state *st = get_state(m);
    ct_engine_slot *slot = ct_engine_for(st, tape == Py_None ? NULL : tape);
    if (!slot)
        return NULL;
    return PyLong_FromLongLong((long long)ct_session_begin_now(st, slot));
}

/* ---- counters, flush, stats ---------------------------------------------- */

void ct_emit_counters(ct_state *st, ct_engine_slot *slot)
{
    uint8_t storage[64];
    wbuf b;
    ct_frame_begin(&b, storage, sizeof storage);
    wbuf_byte(&b, REC_COUNTERS);
    for (int i = 0; i < CT_NCOUNTERS; i++) {
        slot->counters[i] += st->sink.counters[i];
        st->sink.totals[i] += slot->counters[i];
    }
    for (int i = 0; i < 5; i++)
        wbuf_varint(&b, (uint64_t)slot->counters[i]);
    memset(st->sink.counters, 0, sizeof st->sink.counters);
    memset(slot->counters, 0, sizeof slot->counters);
    st->sink.counters_dirty = slot->counters_dirty = 0;
    ct_append_framed(st, slot, &b);
}

PyObject *ct_flush_all(ct_state *st, double timeout)
{
    int rc = 0;
    for (size_t i = 0; i < st->sink.nengines; i++) {
        ct_engine_slot *slot = st->sink.engines[i];
        if (slot->counters_dirty || (st->sink.counters_dirty && i == 0))
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

PyObject *ct_flush_py(PyObject *m, PyObject *args, PyObject *kw)
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
    return ct_flush_all(get_state(m), t);
}

static long long value_count(const ct_state *st, int which)
{
    long long n = (long long)st->sink.counters[which] + (long long)st->sink.totals[which];
    for (size_t i = 0; i < st->sink.nengines; i++)
        n += (long long)st->sink.engines[i]->counters[which];
    return n;
}

PyObject *ct_stats_py(PyObject *m, PyObject *unused)
{
    (void)unused;
    ct_state *st = get_state(m);
    engine_stats total, one;
    memset(&total, 0, sizeof total);
    PyObject *errors = PyList_New(0);
    if (!errors)
        return NULL;
    int64_t session = 0;
    for (size_t i = 0; i < st->sink.nengines; i++) {
        engine_get_stats(st->sink.engines[i]->eng, &one);
        total.appended_records += one.appended_records;
        total.written_calls += one.written_calls;
        total.written_segments += one.written_segments;
        total.written_bytes += one.written_bytes;
        total.written_functions += one.written_functions;
        total.writer_cpu_ns += one.writer_cpu_ns;
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
        "{s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:L,s:L,s:L,s:L,s:K,s:L,s:N,s:O}", "recorded",
        (unsigned long long)st->rec.seq, "written", (unsigned long long)total.written_calls,
        "functions", (unsigned long long)total.written_functions, "segments",
        (unsigned long long)total.written_segments, "bytes",
        (unsigned long long)total.written_bytes, "dropped", (unsigned long long)total.dropped_calls,
        "write_errors", (unsigned long long)total.write_errors, "unencodable",
        value_count(st, CT_UNENCODABLE), "pickled", value_count(st, CT_PICKLED), "redacted",
        value_count(st, CT_REDACTED), "truncated", value_count(st, CT_TRUNCATED), "writer_cpu_ns",
        (unsigned long long)total.writer_cpu_ns, "session", (long long)session, "errors", errors,
        "tape", st->sink.tape_path);
}
