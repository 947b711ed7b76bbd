/*
 * flat_out.c - what an activation of calltape.flat_profile gives: its
 * breakdown (the kept call sites, slowest first), the above or below
 * callback with a result object, and, with record=True, its call sites as
 * child call records on the tape (CAPTURE_FLAT), each callee described
 * once per tape.
 *
 * Invariants: nothing here raises into the program (a callback's error is
 * one RecordingWarning per profile; a KeyboardInterrupt is left pending);
 * an activation's table is only read here.
 */
#include "flat_impl.h"

#include "emit.h"

/* ---- after an activation ----------------------------------------------------- */

/* 1 when code object `co` is in `set`: its qualname, or a name ending with
 * "." and its qualname (its module is not known), or a function of it. */
static int code_in_names(PyObject *set, PyCodeObject *co)
{
    PyObject *it = PyObject_GetIter(set), *item;
    int found = 0;
    Py_ssize_t q = PyUnicode_GET_LENGTH(co->co_qualname);
    while (it && !found && (item = PyIter_Next(it))) {
        if (PyFunction_Check(item)) {
            found = PyFunction_GET_CODE(item) == (PyObject *)co;
        } else if (PyUnicode_Check(item)) {
            Py_ssize_t n = PyUnicode_GET_LENGTH(item);
            found = n >= q && PyUnicode_Tailmatch(item, co->co_qualname, n - q, n, 1) == 1 &&
                    (n == q || PyUnicode_READ_CHAR(item, n - q - 1) == '.');
        }
        Py_DECREF(item);
    }
    Py_XDECREF(it);
    PyErr_Clear();
    return found;
}

/* 1 when `o` is in the name set `set`: itself, or its "module.qualname"
 * or its qualname.  0 when not; never raises. */
static int in_names(PyObject *set, PyObject *o)
{
    int r = PySet_Contains(set, o);
    if (r != 0) {
        PyErr_Clear();
        return r > 0;
    }
    if (PyCode_Check(o)) /* 3.11: a Python callee known by its code */
        return code_in_names(set, (PyCodeObject *)o);
    PyObject *q = PyObject_GetAttrString(o, "__qualname__");
    PyObject *m = q ? PyObject_GetAttrString(o, "__module__") : NULL;
    PyErr_Clear();
    PyObject *full = q && m && PyUnicode_Check(m) ? PyUnicode_FromFormat("%U.%S", m, q) : NULL;
    PyErr_Clear();
    r = (q && PySet_Contains(set, q) > 0) || (full && PySet_Contains(set, full) > 0);
    PyErr_Clear();
    Py_XDECREF(full);
    Py_XDECREF(m);
    Py_XDECREF(q);
    return r;
}

/* A callable written in C (len, list.append, a C method), or whose module
 * is builtins. */
static int is_builtin(PyObject *o)
{
    if (PyCFunction_Check(o) || Py_IS_TYPE(o, &PyMethodDescr_Type) ||
        Py_IS_TYPE(o, &PyWrapperDescr_Type) || Py_IS_TYPE(o, &PyClassMethodDescr_Type))
        return 1;
    PyObject *m = PyObject_GetAttrString(o, "__module__");
    PyErr_Clear();
    int r = m && PyUnicode_Check(m) && PyUnicode_CompareWithASCIIString(m, "builtins") == 0;
    Py_XDECREF(m);
    return r;
}

static int kept(FlatProfile *fp, PyObject *callee)
{
    if (fp->ignore_builtins && is_builtin(callee))
        return 0;
    if (fp->drop && in_names(fp->drop, callee))
        return 0;
    return !fp->keep || in_names(fp->keep, callee);
}

static int by_total(const void *x, const void *y)
{
    const flat_site *a = *(flat_site *const *)x, *b = *(flat_site *const *)y;
    return a->total_ns < b->total_ns ? 1 : a->total_ns > b->total_ns ? -1 : 0;
}

/* The breakdown of `a`: a list of (callee, line, count, total, max), the
 * slowest first (times in seconds).  New reference or NULL. */
static PyObject *breakdown(FlatProfile *fp, flat_act *a)
{
    flat_site **order = PyMem_Malloc((a->n ? a->n : 1) * sizeof(flat_site *));
    PyObject *rows = order ? PyList_New(0) : NULL;
    if (!rows)
        goto error;
    size_t n = 0;
    for (size_t i = 0; i < a->cap; i++)
        if (a->sites[i].callee && kept(fp, a->sites[i].callee))
            order[n++] = &a->sites[i];
    qsort((void *)order, n, sizeof(flat_site *), by_total);
    for (size_t i = 0; i < n; i++) {
        flat_site *s = order[i];
        int line = PyCode_Addr2Line((PyCodeObject *)a->code, (int)s->offset);
        PyObject *row = Py_BuildValue("(OiKdd)", s->callee, line, (unsigned long long)s->count,
                                      (double)s->total_ns / 1e9, (double)s->max_ns / 1e9);
        if (!row || PyList_Append(rows, row) < 0) {
            Py_XDECREF(row);
            goto error;
        }
        Py_DECREF(row);
    }
    PyMem_Free(order);
    return rows;
error:
    PyMem_Free(order);
    Py_XDECREF(rows);
    if (!PyErr_Occurred())
        PyErr_NoMemory();
    return NULL;
}

/* 1 when the callback's `level` gate lets it run (no gate, or the logger
 * is enabled for it); 0 when not; -1 with an exception. */
static int gate_open(FlatProfile *fp, int level)
{
    if (!level || fp->logger == Py_None)
        return 1;
    PyObject *lvl = PyLong_FromLong(level); /* a small int: cached by CPython */
    if (lvl && fp->log_cache) {             /* what isEnabledFor would answer, without the call */
        PyObject *off = PyDict_GetItemWithError(fp->log_dict, fp->str_disabled);
        PyObject *v = off == Py_False ? PyDict_GetItemWithError(fp->log_cache, lvl) : NULL;
        PyErr_Clear();
        if (v == Py_True || v == Py_False) {
            Py_DECREF(lvl);
            return v == Py_True;
        }
    }
    PyObject *argv[2] = {fp->logger, lvl};
    PyObject *r = lvl ? PyObject_VectorcallMethod(fp->is_enabled, argv,
                                                  2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL)
                      : NULL;
    int open = r ? PyObject_IsTrue(r) : -1;
    Py_XDECREF(r);
    Py_XDECREF(lvl);
    return open;
}

/* Runs the above or below callback for the activation `a` that took
 * `total_ns`.  Never raises (but a KeyboardInterrupt is left pending). */
void flat_report(FlatProfile *fp, flat_act *a, uint64_t total_ns)
{
    double total = (double)total_ns / 1e9;
    int above = fp->limit >= 0 && total >= fp->limit;
    PyObject *cb = above ? fp->above : fp->below;
    if (cb == Py_None)
        return;
    PyObject *rows = NULL, *res = NULL, *r = NULL, *limit = NULL;
    int open = gate_open(fp, above ? fp->above_level : fp->below_level);
    if (open <= 0)
        goto done;
    rows = a ? breakdown(fp, a) : PyList_New(0);
    if (!rows)
        goto done;
    limit = fp->limit >= 0 ? PyFloat_FromDouble(fp->limit) : Py_NewRef(Py_None);
    res =
        limit ? PyObject_CallFunction(fp->result_cls, "OdOO", fp->func, total, limit, rows) : NULL;
    if (res)
        r = PyObject_CallOneArg(cb, res);
done:
    if (!r && PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
        PyObject *what = ct_describe_pending();
        if (what && !fp->warned) {
            fp->warned = 1;
            ct_state *st = (ct_state *)PyModule_GetState(fp->module_ref);
            PyObject *msg = PyUnicode_FromFormat(
                "calltape.flat_profile: the %s callback of %R raised %U; the call's result is"
                " unchanged (reported once)",
                above ? "above" : "below", fp->func, what);
            if (!msg || PyErr_WarnEx(st->sink.warn_category, PyUnicode_AsUTF8(msg), 1) < 0)
                PyErr_Clear();
            Py_XDECREF(msg);
        }
        Py_XDECREF(what);
    }
    Py_XDECREF(r);
    Py_XDECREF(res);
    Py_XDECREF(limit);
    Py_XDECREF(rows);
}

/* ---- onto the tape ------------------------------------------------------------ */

/* How a callee is known on tapes: its process-local function id and its
 * description, announced again to each new engine (serial). */
typedef struct flat_fn {
    uint64_t fn_id, serial;
    PyObject *body; /* bytes: the REC_FUNCTION body */
} flat_fn;

static void fn_free(PyObject *capsule)
{
    flat_fn *f = PyCapsule_GetPointer(capsule, "calltape.flat_fn");
    if (f) {
        Py_XDECREF(f->body);
        PyMem_Free(f);
    }
}

/* What a callee is filed under: a Python function by its code (shared by
 * every closure made of it), anything else by itself. */
static PyObject *fn_key(PyObject *callee)
{
    return PyFunction_Check(callee) ? PyFunction_GET_CODE(callee) : callee;
}

/* The description of `callee` (module, qualname, file, line; parameters
 * as (*args, **kwargs): the flat profiler records no arguments).  New
 * reference or NULL with an exception. */
static PyObject *fn_describe(ct_state *st, PyObject *callee)
{
    PyObject *mod = PyObject_GetAttrString(callee, "__module__");
    PyErr_Clear();
    if (!mod || !PyUnicode_Check(mod)) {
        PyObject *owner = PyObject_GetAttrString(callee, "__objclass__"); /* list.append */
        PyErr_Clear();
        Py_XSETREF(mod, owner ? PyObject_GetAttrString(owner, "__module__") : NULL);
        PyErr_Clear();
        Py_XDECREF(owner);
    }
    /* 3.11's profile hook knows a Python callee by its code alone */
    PyCodeObject *co = PyFunction_Check(callee) ? (PyCodeObject *)PyFunction_GET_CODE(callee)
                       : PyCode_Check(callee)   ? (PyCodeObject *)callee
                                                : NULL;
    PyObject *qual = PyCode_Check(callee) ? Py_NewRef(co->co_qualname)
                                          : PyObject_GetAttrString(callee, "__qualname__");
    PyErr_Clear();
    if (!qual || !PyUnicode_Check(qual))
        Py_XSETREF(qual, PyUnicode_FromString(Py_TYPE(callee)->tp_name));
    PyObject *names = Py_BuildValue("(ss)", "args", "kwargs");
    PyObject *out = NULL;
    if (qual && names) {
        ct_fn_desc d = {.module = mod && PyUnicode_Check(mod) ? mod : NULL,
                        .qualname = qual,
                        .file = co ? co->co_filename : NULL,
                        .line = co ? co->co_firstlineno : 0,
                        .names = names};
        out = ct_describe_function(st, &d);
    }
    Py_XDECREF(names);
    Py_XDECREF(qual);
    Py_XDECREF(mod);
    return out;
}

/* The function id of `callee` on `slot`'s tape, announced there when
 * new.  Returns 0 with *id set, or -1 with an exception. */
static int fn_id_of(ct_state *st, ct_engine_slot *slot, PyObject *callee, uint64_t *id)
{
    if (!st->flat.fns && !(st->flat.fns = PyDict_New()))
        return -1;
    PyObject *key = fn_key(callee);
    PyObject *cap = PyDict_GetItemWithError(st->flat.fns, key); /* borrowed */
    flat_fn *f = cap ? PyCapsule_GetPointer(cap, "calltape.flat_fn") : NULL;
    if (!f) {
        if (PyErr_Occurred() || !(f = PyMem_Calloc(1, sizeof *f)))
            return PyErr_Occurred() ? -1 : (PyErr_NoMemory(), -1);
        PyObject *c = PyCapsule_New(f, "calltape.flat_fn", fn_free);
        if (!c) {
            PyMem_Free(f);
            return -1;
        }
        int rc = PyDict_SetItem(st->flat.fns, key, c);
        Py_DECREF(c);
        if (rc < 0 || !(f->body = fn_describe(st, callee)))
            return -1;
        f->fn_id = ++st->rec.next_fn;
    }
    if (f->serial != slot->serial) {
        if (ct_emit_function(st, slot, f->fn_id, f->body) < 0)
            return PyErr_NoMemory(), -1;
        f->serial = slot->serial;
    }
    *id = f->fn_id;
    return 0;
}

/* Writes each kept call site of activation `a` as a call record
 * (CAPTURE_FLAT) child of the recorded call running on this thread: the
 * callee's function, starting at its first call, lasting its total, its
 * result a dict of count, max (seconds) and line.  Never raises. */
void flat_emit_children(FlatProfile *fp, flat_act *a, ct_engine_slot *slot)
{
    ct_state *st = (ct_state *)PyModule_GetState(fp->module_ref);
    ct_thread *t = &ct_tls_thread;
    PyObject *saved = ct_fetch_exc();
    t->busy++;
    for (size_t i = 0; i < a->cap; i++) {
        flat_site *s = &a->sites[i];
        uint64_t fn_id;
        if (!s->callee || !kept(fp, s->callee) || fn_id_of(st, slot, s->callee, &fn_id) < 0) {
            PyErr_Clear();
            continue;
        }
        int line = PyCode_Addr2Line((PyCodeObject *)a->code, (int)s->offset);
        PyObject *row = Py_BuildValue("{sKsdsi}", "count", (unsigned long long)s->count, "max",
                                      (double)s->max_ns / 1e9, "line", line);
        if (!row) {
            PyErr_Clear();
            continue;
        }
        ct_callinfo ci;
        memset(&ci, 0, sizeof ci);
        ci.seq = ++st->rec.seq;
        ci.parent = t->parent;
        ci.depth = t->depth;
        ci.thread = t->index;
        ci.start = s->first_ns;
        ct_site site = {fn_id, NULL, NULL, NULL, st->rec.max_value_bytes, 1, 0, CAPTURE_FLAT};
        ct_emit_site_call(st, &site, slot, &ci, NULL, 0, s->first_ns + s->total_ns,
                          OUTCOME_RETURNED, row, NULL, NULL, NULL, NULL);
        Py_DECREF(row);
    }
    t->busy--;
    ct_restore_exc(saved);
}
