/*
 * monitor_code.c - which code calltape.monitor records and what it says
 * about it: the include / paths / never / exclude rules, the decision kept
 * in the code object's extra slot (made once per monitor generation), the
 * function's description, and the parked generators that were freed
 * without finishing.
 *
 * Invariants: nothing here raises (a failed decision means "not
 * recorded"); a decision is only trusted for the generation it was made
 * for.
 */
#include "monitor_impl.h"

#include <fnmatch.h>

__attribute__((tls_model("initial-exec"))) _Thread_local mon_stack *ct_mon_tls_stack;

void ct_mon_codeinfo_free(void *p)
{
    ct_codeinfo *ci = p;
    if (!ci)
        return;
    Py_XDECREF(ci->fn_record);
    Py_XDECREF(ci->names);
    Py_XDECREF(ci->global_names);
    PyMem_Free(ci->redacted);
    PyMem_Free(ci);
}

void ct_mon_stack_free(void *p)
{
    mon_stack *s = p;
    if (!s)
        return;
    wbuf_free(&s->arena);
    free(s->v);
    free(s);
}

static int text_starts(PyObject *s, PyObject *prefix)
{
    return PyUnicode_Tailmatch(s, prefix, 0, PY_SSIZE_T_MAX, -1) == 1;
}

/* 1 when module `mod` is `prefix` or inside package `prefix` (both str). */
static int module_within(PyObject *mod, PyObject *prefix)
{
    Py_ssize_t n = 0, pn = 0;
    const char *m = PyUnicode_AsUTF8AndSize(mod, &n);
    const char *p = m ? PyUnicode_AsUTF8AndSize(prefix, &pn) : NULL;
    if (!p) {
        PyErr_Clear();
        return 0;
    }
    return ct_module_within(m, (size_t)n, p, (size_t)pn);
}

static int any_glob(PyObject *patterns, const char *text)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(patterns); i++) {
        const char *pat = PyUnicode_AsUTF8(PyTuple_GET_ITEM(patterns, i));
        if (pat && fnmatch(pat, text, 0) == 0)
            return 1;
    }
    PyErr_Clear();
    return 0;
}

/* Whether calls of `co`, defined in module `mod`, are recorded by `m`. */
static int wants(Monitor *m, PyCodeObject *co, PyObject *mod)
{
    if (!(co->co_flags & CO_OPTIMIZED)) /* module and class bodies */
        return 0;
    PyObject *file = co->co_filename;
    int in = 0;
    for (Py_ssize_t i = 0; !in && mod && i < PyTuple_GET_SIZE(m->modules); i++)
        in = module_within(mod, PyTuple_GET_ITEM(m->modules, i));
    /* a path naming this very file (the module of `run -m`) */
    for (Py_ssize_t i = 0; !in && i < PyTuple_GET_SIZE(m->paths); i++)
        in = PyUnicode_Compare(file, PyTuple_GET_ITEM(m->paths, i)) == 0;
    if (!in) {
        /* files under an excluded directory (stdlib, site-packages,
         * calltape) only come in by module name */
        if (PyUnicode_GET_LENGTH(file) == 0 || PyUnicode_READ_CHAR(file, 0) == '<')
            return 0;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(m->never); i++)
            if (text_starts(file, PyTuple_GET_ITEM(m->never, i)))
                return 0;
        if (PyTuple_GET_SIZE(m->paths) == 0)
            in = PyTuple_GET_SIZE(m->modules) == 0;
        for (Py_ssize_t i = 0; !in && i < PyTuple_GET_SIZE(m->paths); i++)
            in = text_starts(file, PyTuple_GET_ITEM(m->paths, i));
    }
    if (!in || PyTuple_GET_SIZE(m->exclude) == 0)
        return in;
    const char *ms = mod ? PyUnicode_AsUTF8(mod) : "";
    const char *qs = PyUnicode_AsUTF8(co->co_qualname);
    if (!ms || !qs) {
        PyErr_Clear();
        return in;
    }
    char full[512];
    snprintf(full, sizeof full, "%s.%s", ms, qs);
    if (any_glob(m->exclude, ms) || any_glob(m->exclude, full) || any_glob(m->exclude, qs))
        return 0;
    for (Py_ssize_t i = 0; mod && i < PyTuple_GET_SIZE(m->exclude); i++)
        if (module_within(mod, PyTuple_GET_ITEM(m->exclude, i)))
            return 0;
    return 1;
}

/* Fills the function description of `info` (names, redaction, the
 * REC_FUNCTION body).  Returns 0, or -1 with an exception set. */
static int describe_code(ct_state *st, ct_codeinfo *info, PyCodeObject *co, PyObject *mod)
{
    Py_ssize_t n = ct_param_count(co);
    PyObject *varnames = PyObject_GetAttrString((PyObject *)co, "co_varnames");
    if (!varnames)
        return -1;
    Py_XSETREF(info->names, PyTuple_GetSlice(varnames, 0, n)); /* a retry after a failure */
    Py_DECREF(varnames);
    PyMem_Free(info->redacted);
    info->redacted = PyMem_Calloc((size_t)n + 1, 1);
    if (!info->names || !info->redacted) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        info->redacted[i] =
            (uint8_t)ct_should_redact(st, PyTuple_GET_ITEM(info->names, i), &mon_redact);
    /* no defaults: the monitor records what the frame holds */
    ct_fn_desc d = {.module = mod,
                    .qualname = co->co_qualname,
                    .file = co->co_filename,
                    .line = co->co_firstlineno,
                    .names = info->names,
                    .code = co,
                    .redacted = info->redacted};
    info->fn_record = ct_describe_function(st, &d);
    if (!info->fn_record)
        return -1;
    info->fn_id = ++st->rec.next_fn;
    return 0;
}

ct_codeinfo *ct_mon_decide(mon_active *a, PyCodeObject *co, ct_codeinfo *info, PyObject *globals)
{
    if (!info) {
        info = PyMem_Calloc(1, sizeof *info);
        if (!info)
            return NULL;
        if (code_set_extra((PyObject *)co, a->extra_index, info) < 0) {
            PyErr_Clear();
            PyMem_Free(info);
            return NULL;
        }
    }
    info->generation = a->generation;
    info->is_gen = (co->co_flags & (CO_GENERATOR | CO_COROUTINE | CO_ASYNC_GENERATOR)) != 0;
    PyObject *mod = globals ? PyDict_GetItemString(globals, "__name__") : NULL;
    if (mod && !PyUnicode_Check(mod))
        mod = NULL;
    info->record =
        wants(a->mon, co, mod) && PySet_Contains(a->st->rec.decorated_codes, (PyObject *)co) == 0;
    PyErr_Clear();
    if (info->record && !info->fn_record && describe_code(a->st, info, co, mod) < 0) {
        PyErr_Clear();
        info->record = 0;
    }
    return info;
}

/* ---- parked generators freed without finishing ------------------------- */

void ct_mon_emit_abandoned(void *ctx, const uint8_t *entry, size_t len)
{
    mon_active *a = ctx;
    mon_entry e;
    if (len < sizeof e)
        return;
    memcpy(&e, entry, sizeof e);
    if (!e.info || !a->mon || e.generation != a->generation)
        return;
    ct_site site = {e.info->fn_id,           NULL, NULL, NULL,
                    a->mon->max_value_bytes, 0,    0,    CAPTURE_MONITOR};
    e.ci.cpu_end = ct_thread_cpu_ns();
    ct_emit_site_call(a->st, &site, a->slot, &e.ci, entry + sizeof e, e.args_len, ct_now_ns(),
                      OUTCOME_CLOSED, NULL, NULL, NULL, NULL, NULL);
}

/* Weak reference callback (self: the module): the generator of a parked
 * entry was freed without finishing. */
static PyObject *parked_gone(PyObject *module, PyObject *wr)
{
    PyObject *saved = ct_fetch_exc();
    mon_active *a = active_of(module);
    size_t len = 0;
    uint8_t *entry = ct_park_gone(&a->parked, wr, &len);
    if (entry) {
        ct_mon_emit_abandoned(a, entry, len);
        free(entry);
    }
    PyErr_Clear();
    ct_restore_exc(saved);
    return Py_NewRef(Py_None);
}

PyMethodDef ct_mon_parked_gone_def = {"_calltape_parked_gone", parked_gone, METH_O, NULL};
