/*
 * emit.c - the records every capture path writes, built one way: a
 * function's description (once per function, from its code object or, for
 * another callable, as (*args, **kwargs)), a thread's row, and the
 * out-of-line REC_CALL builder (the inlined one is in emit.h).
 *
 * Invariants: nothing here raises into a recorded call (a pending exception
 * is saved and restored around any Python code run); a record that ran out
 * of memory is not appended.
 */
#include "emit.h"

#include <sys/syscall.h>
#include <unistd.h>

/* ---- function descriptions ----------------------------------------------- */

void ct_put_module(wbuf *b, PyObject *mod)
{
    if (mod && PyUnicode_Check(mod) && PyUnicode_CompareWithASCIIString(mod, "__mp_main__") == 0) {
        PyObject *modules = PySys_GetObject("modules"); /* borrowed */
        PyObject *main = modules ? PyDict_GetItemString(modules, "__main__") : NULL;
        PyObject *mp = modules ? PyDict_GetItemString(modules, "__mp_main__") : NULL;
        if (main && main == mp) {
            wbuf_varint(b, 8);
            wbuf_put(b, "__main__", 8);
            return;
        }
    }
    ct_put_text(b, mod);
}
/* Writes the default `dflt` of parameter `name` (index `i`) into the
 * signature `sig`: REDACTED for a secret, Unencodable when sanitize raised. */
static void put_default(const ct_fn_desc *d, wbuf *sig, Py_ssize_t i, PyObject *name,
                        PyObject *dflt)
{
    if (d->redacted[i]) {
        wbuf_byte(sig, WIRE_REDACTED);
    } else if (d->sanitize) {
        ct_capture_sanitized(d->cap, sig, d->sanitize, name, dflt);
    } else {
        ct_capture_value(d->cap, sig, dflt);
    }
}

/* The signature: LIST of TUPLE(name, kind[, default]). */
static void put_signature(const ct_fn_desc *d, wbuf *sig)
{
    Py_ssize_t n = PyTuple_GET_SIZE(d->names);
    wbuf_byte(sig, WIRE_LIST);
    wbuf_varint(sig, (uint64_t)n);
    PyCodeObject *co = d->code;
    PyObject *defaults = d->func && co ? PyFunction_GET_DEFAULTS(d->func) : NULL;
    PyObject *kwdefaults = d->func && co ? PyFunction_GET_KW_DEFAULTS(d->func) : NULL;
    Py_ssize_t ndef = defaults ? PyTuple_GET_SIZE(defaults) : 0;
    Py_ssize_t argcount = co ? co->co_argcount : 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PyTuple_GET_ITEM(d->names, i);
        PyObject *dflt = NULL;
        int kind = co ? ct_param_kind(co, i) : (i == 0 ? 2 : 4); /* (*args, **kwargs) */
        if (defaults && i < argcount && i >= argcount - ndef)
            dflt = PyTuple_GET_ITEM(defaults, i - (argcount - ndef));
        if (kind == 3 && kwdefaults)
            dflt = PyDict_GetItemWithError(kwdefaults, name);
        PyErr_Clear();
        wbuf_byte(sig, WIRE_TUPLE);
        wbuf_varint(sig, dflt ? 3 : 2);
        wbuf_byte(sig, WIRE_STR);
        ct_put_text(sig, name);
        wire_int(sig, kind);
        if (dflt)
            put_default(d, sig, i, name, dflt);
    }
}

PyObject *ct_describe_function(ct_state *st, const ct_fn_desc *d)
{
    (void)st;
    wbuf b, sig;
    wbuf_init(&b, NULL, 0);
    wbuf_init(&sig, NULL, 0);
    ct_put_module(&b, d->module);
    ct_put_text(&b, d->qualname);
    ct_put_text(&b, d->file);
    wbuf_varint(&b, (uint64_t)d->line);
    put_signature(d, &sig);
    wbuf_varint(&b, sig.len);
    wbuf_put(&b, sig.data, sig.len);
    PyObject *out = b.failed || sig.failed
                        ? PyErr_NoMemory()
                        : PyBytes_FromStringAndSize((char *)b.data, (Py_ssize_t)b.len);
    wbuf_free(&sig);
    wbuf_free(&b);
    return out;
}

int ct_emit_function(ct_state *st, ct_engine_slot *slot, uint64_t fn_id, PyObject *body)
{
    wbuf b;
    ct_frame_begin(&b, NULL, 0);
    wbuf_byte(&b, REC_FUNCTION);
    wbuf_varint(&b, fn_id);
    wbuf_put(&b, PyBytes_AS_STRING(body), (size_t)PyBytes_GET_SIZE(body));
    int rc = b.failed ? -1 : 0;
    if (rc == 0)
        ct_append_framed(st, slot, &b);
    wbuf_free(&b);
    return rc;
}

/* ---- threads ------------------------------------------------------------- */

void ct_thread_announce(ct_state *st, ct_engine_slot *slot, ct_thread *t)
{
    if (t->index == 0)
        t->index = ++st->rec.next_thread;
    if (ct_thread_known(slot, t))
        return;
    if (t->index >= slot->nseen) {
        size_t n = slot->nseen ? slot->nseen : 16;
        while (n <= t->index)
            n *= 2;
        uint8_t *seen = PyMem_Realloc(slot->seen, n);
        if (!seen)
            return; /* the thread row is missing; its calls are still recorded */
        memset(seen + slot->nseen, 0, n - slot->nseen);
        slot->seen = seen;
        slot->nseen = n;
    }
    slot->seen[t->index] = 1;
    uint8_t storage[256];
    wbuf body;
    ct_frame_begin(&body, storage, sizeof storage);
    wbuf_byte(&body, REC_THREAD);
    wbuf_varint(&body, t->index);
    wbuf_varint(&body, (uint64_t)PyThread_get_thread_ident());
    wbuf_varint(&body, (uint64_t)syscall(SYS_gettid));
    /* The thread's name, from threading when it is already imported. */
    const char *name = "";
    Py_ssize_t nlen = 0;
    PyObject *saved = ct_fetch_exc();
    PyObject *mod = PySys_GetObject("modules"); /* borrowed */
    PyObject *th = mod ? PyDict_GetItemString(mod, "threading") : NULL;
    PyObject *cur = th ? PyObject_CallMethod(th, "current_thread", NULL) : NULL;
    PyObject *pyname = cur ? PyObject_GetAttrString(cur, "name") : NULL;
    if (pyname && PyUnicode_Check(pyname))
        name = PyUnicode_AsUTF8AndSize(pyname, &nlen);
    if (!name) {
        name = "";
        nlen = 0;
    }
    wbuf_varint(&body, (uint64_t)nlen);
    wbuf_put(&body, name, (size_t)nlen);
    Py_XDECREF(pyname);
    Py_XDECREF(cur);
    PyErr_Clear();
    ct_restore_exc(saved);
    ct_append_framed(st, slot, &body);
    wbuf_free(&body);
}

/* ---- calls --------------------------------------------------------------- */

void ct_emit_site_call(ct_state *st, const ct_site *site, ct_engine_slot *slot,
                       const ct_callinfo *ci, const uint8_t *args, size_t args_len, uint64_t end,
                       int outcome, PyObject *result, PyObject *exc, const wbuf *locals,
                       const wbuf *globals, const wbuf *yields)
{
    ct_emit_build(st, site, slot, ci, args, args_len, end, outcome, result, exc, locals, globals,
                  yields);
}
