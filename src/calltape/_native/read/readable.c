/*
 * readable.c - Call.readable(): a call's values for a person to read, each
 * rebuilt on its own, so that one value that cannot be rebuilt here (its
 * class's module is not importable, it was defined in the recorded
 * program's __main__ script, the reader does not allow it) does not hide
 * the others.  Such a value comes back as calltape.Unreadable(type,
 * preview, reason): the type it names (the class a pickle names first, a
 * codec's name, or the container), the bounded preview the tape bytes give
 * and the reason in one sentence.
 *
 * Call.readable() returns (args, defaults, outcome): name -> value, the
 * names that took their default, and the result or ExceptionInfo;
 * Call.readable_slot() the locals, globals or yielded values, entry by
 * entry.
 *
 * Invariants: only memory errors, KeyboardInterrupt and damage raise (a
 * TapeError naming the call: bytes that do not decode are not a reason
 * but a damaged tape); everything else a tape's value can do while being
 * rebuilt becomes a reason.  The call's cached args and result are neither
 * used nor set (they keep raising as before).
 */
#include "reader.h"

/* Reads a little-endian unsigned of `n` bytes at *p (advanced), or returns
 * -1 when fewer than `n` bytes remain. */
static int64_t take_le(const uint8_t **p, const uint8_t *end, int n)
{
    if (end - *p < n)
        return -1;
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | (*p)[i];
    *p += n;
    return v > INT64_MAX ? -1 : (int64_t)v;
}

/* "module.qualname" of the first global a pickle names (the class of the
 * object in every pickle Python writes for an instance), written to `out`;
 * 0, or -1 when the opening opcodes are not the usual ones. */
static int pickle_global(const uint8_t *p, const uint8_t *end, char *out, size_t outlen)
{
    const uint8_t *str[2] = {NULL, NULL};
    int64_t len[2] = {0, 0};
    for (int steps = 0; p < end && steps < 64; steps++) {
        uint8_t op = *p++;
        int64_t n = 0;
        switch (op) {
        case 0x80: /* PROTO */
            n = take_le(&p, end, 1) < 0 ? -1 : 0;
            break;
        case 0x95: /* FRAME */
            n = take_le(&p, end, 8) < 0 ? -1 : 0;
            break;
        case 0x94: /* MEMOIZE */
            break;
        case 'q': /* BINPUT */
            n = take_le(&p, end, 1) < 0 ? -1 : 0;
            break;
        case 'r': /* LONG_BINPUT */
            n = take_le(&p, end, 4) < 0 ? -1 : 0;
            break;
        case 0x8c: /* SHORT_BINUNICODE */
        case 'X':  /* BINUNICODE */
        case 0x8d: /* BINUNICODE8 */
            n = take_le(&p, end, op == 0x8c ? 1 : op == 'X' ? 4 : 8);
            if (n < 0 || end - p < n)
                return -1;
            str[0] = str[1];
            len[0] = len[1];
            str[1] = p;
            len[1] = n;
            p += n;
            n = 0;
            break;
        case 0x93: /* STACK_GLOBAL */
            if (!str[0])
                return -1;
            snprintf(out, outlen, "%.*s.%.*s", (int)len[0], (const char *)str[0], (int)len[1],
                     (const char *)str[1]);
            return 0;
        case 'c': { /* GLOBAL: "module\nname\n" */
            const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
            const uint8_t *nl2 = nl ? memchr(nl + 1, '\n', (size_t)(end - nl - 1)) : NULL;
            if (!nl2)
                return -1;
            snprintf(out, outlen, "%.*s.%.*s", (int)(nl - p), (const char *)p, (int)(nl2 - nl - 1),
                     (const char *)nl + 1);
            return 0;
        }
        default:
            return -1;
        }
        if (n < 0)
            return -1;
    }
    return -1;
}

/* The type name of the encoded value at p, as far as the bytes tell. */
PyObject *ct_value_type(const uint8_t *p, const uint8_t *end)
{
    static const struct {
        uint8_t tag;
        const char *name;
    } native[] = {{WIRE_LIST, "list"},
                  {WIRE_TUPLE, "tuple"},
                  {WIRE_DICT, "dict"},
                  {WIRE_SET, "set"},
                  {WIRE_FROZENSET, "frozenset"},
                  {WIRE_NONE, "NoneType"},
                  {WIRE_FALSE, "bool"},
                  {WIRE_TRUE, "bool"},
                  {WIRE_INT, "int"},
                  {WIRE_FLOAT, "float"},
                  {WIRE_REDACTED, "redacted"},
                  {WIRE_BLOB_INLINE, "stored value"},
                  {WIRE_BIGINT, "int"},
                  {WIRE_STR, "str"},
                  {WIRE_BYTES, "bytes"},
                  {WIRE_BLOB, "stored value"}};
    wire_tok t;
    const uint8_t *q = wire_next(p, end, &t);
    while (q && t.tag == WIRE_DEFAULT)
        q = wire_next(q, end, &t);
    if (!q)
        return PyUnicode_FromString("?");
    if (t.tag == WIRE_CODEC || t.tag == WIRE_TRUNCATED || t.tag == WIRE_UNENCODABLE ||
        t.tag == WIRE_EXCEPTION)
        return PyUnicode_DecodeUTF8((const char *)t.s, (Py_ssize_t)t.n, "replace");
    if (t.tag == WIRE_PICKLE) {
        char name[256];
        if (pickle_global(t.s, t.s + t.n, name, sizeof name) == 0)
            return PyUnicode_DecodeUTF8(name, (Py_ssize_t)strlen(name), "replace");
        return PyUnicode_FromString("pickled object");
    }
    if (t.tag == WIRE_OBJECT || t.tag == WIRE_GLOBAL) {
        char name[512];
        int n = snprintf(name, sizeof name, "%.*s.%.*s", (int)t.n, (const char *)t.s, (int)t.n2,
                         (const char *)t.s2);
        return PyUnicode_DecodeUTF8(name, n < (int)sizeof name ? n : (int)sizeof name - 1,
                                    "replace");
    }
    for (size_t i = 0; i < sizeof native / sizeof native[0]; i++)
        if (native[i].tag == t.tag)
            return PyUnicode_FromString(native[i].name);
    return PyUnicode_FromString("?");
}

PyObject *ct_preview_text(const uint8_t *p, const uint8_t *end)
{
    wbuf out;
    wbuf_init(&out, NULL, 0);
    wire_preview(p, end, &out, CT_PREVIEW_LIMIT);
    return ct_wbuf_text(&out);
}

/* The sentence saying why the pending exception kept a value of type `type`
 * from being rebuilt; the exception is cleared.  NULL with the
 * exception kept for KeyboardInterrupt and memory errors. */
static PyObject *reason_of_pending(ct_state *st, PyObject *type)
{
    if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt) ||
        PyErr_ExceptionMatches(PyExc_MemoryError))
        return NULL;
    PyObject *exc = ct_fetch_exc();
    PyObject *refused = ct_marker_type(st, "RefusedGlobal");
    if (refused && PyObject_TypeCheck(exc, (PyTypeObject *)refused)) {
        PyObject *out = PyUnicode_FromFormat("%S (on the command line: --trust or --allow"
                                             " MODULE)",
                                             exc);
        Py_DECREF(exc);
        return out;
    }
    PyObject *out = NULL;
    const char *name = PyUnicode_AsUTF8(type);
    if (name && strncmp(name, "__main__.", 9) == 0)
        out = PyUnicode_FromFormat("its class %U was defined in the script the recorded program"
                                   " ran as __main__, which is not loaded here",
                                   type);
    else
        out = PyUnicode_FromFormat("%s: %S", Py_TYPE(exc)->tp_name, exc);
    Py_DECREF(exc);
    if (!out)
        PyErr_Clear();
    return out ? out : PyUnicode_FromString("it cannot be rebuilt");
}

/* The value at *p (advanced past it) rebuilt, or an Unreadable marker;
 * *was_default tells whether the argument took its default.
 * New reference, or NULL with an exception. */
static PyObject *readable_value(ct_call *c, const uint8_t **p, const uint8_t *end, int *was_default,
                                PyObject *memo)
{
    ct_state *st = PyType_GetModuleState(Py_TYPE(c));
    const uint8_t *start = *p, *next = wire_skip(start, end);
    *was_default = start < end && *start == WIRE_DEFAULT;
    Py_ssize_t before = memo ? PyList_GET_SIZE(memo) : 0;
    PyObject *v = ct_tape_rebuild(c->tape, p, end, memo);
    if (v)
        return v;
    PyObject *damaged = ct_marker_type(st, "TapeError");
    if (!next || (damaged && PyErr_ExceptionMatches(damaged)))
        return NULL; /* a malformed value: TapeError as everywhere */
    *p = next;
    /* keep the group's memo counting as the tape does: the value's indices
     * stay reserved, so a later reference to them is unreadable too */
    int64_t taken = wire_memo_count(start, next);
    if (memo && (PyList_SetSlice(memo, before, PyList_GET_SIZE(memo), NULL) < 0 || taken < 0))
        return NULL;
    for (int64_t i = 0; memo && i < taken; i++)
        if (PyList_Append(memo, Py_None) < 0)
            return NULL;
    PyObject *type = ct_value_type(start, next), *preview = NULL, *reason = NULL, *out = NULL;
    PyObject *cls = ct_marker_type(st, "Unreadable");
    reason = type ? reason_of_pending(st, type) : NULL;
    preview = reason ? ct_preview_text(start, next) : NULL;
    if (preview && cls)
        out = PyObject_CallFunction(cls, "OOO", type, preview, reason);
    else if (preview)
        PyErr_SetString(PyExc_RuntimeError, "calltape.Unreadable is not bound");
    Py_XDECREF(type);
    Py_XDECREF(preview);
    Py_XDECREF(reason);
    return out;
}

PyObject *ct_call_readable(ct_call *c)
{
    if (!c->tape || !c->fn) {
        PyErr_SetString(PyExc_ValueError, "this Call was cleared");
        return NULL;
    }
    PyObject *args = PyDict_New(), *defaults = PySet_New(NULL), *names = NULL, *v = NULL;
    PyObject *outcome = NULL, *frozen = NULL, *memo = PyList_New(0);
    int was_default = 0;
    if (!args || !defaults || !memo)
        goto error;
    if (c->flags & REC_HAS_ARGS) {
        names = c->flags & REC_UNBOUND ? Py_BuildValue("(ss)", "args", "kwargs")
                                       : Py_NewRef(c->fn->names);
        if (!names)
            goto error;
        const uint8_t *p = ct_call_value(c, VALUE_ARGS);
        const uint8_t *end = p + ct_call_value_len(c, VALUE_ARGS);
        for (Py_ssize_t i = 0; p < end; i++) {
            v = readable_value(c, &p, end, &was_default, memo);
            if (!v) {
                ct_tape_damaged(c->tape, 0, "call %lld (%U), its arguments", (long long)c->id,
                                c->fn->full);
                goto error;
            }
            PyObject *name = i < PyTuple_GET_SIZE(names) ? PyTuple_GET_ITEM(names, i) : NULL;
            if (name && (PyDict_SetItem(args, name, v) < 0 ||
                         (was_default && PySet_Add(defaults, name) < 0)))
                goto error;
            Py_CLEAR(v);
        }
    }
    if (ct_call_value_len(c, VALUE_RESULT)) {
        const uint8_t *p = ct_call_value(c, VALUE_RESULT);
        outcome = readable_value(c, &p, p + ct_call_value_len(c, VALUE_RESULT), &was_default, NULL);
        if (!outcome)
            ct_tape_damaged(c->tape, 0, "call %lld (%U), its %s", (long long)c->id, c->fn->full,
                            c->outcome == OUTCOME_RAISED ? "exception" : "result");
    } else {
        outcome = Py_NewRef(Py_None);
    }
    frozen = outcome ? PyFrozenSet_New(defaults) : NULL;
    if (!frozen)
        goto error;
    Py_XDECREF(names);
    Py_DECREF(memo);
    Py_DECREF(defaults);
    return Py_BuildValue("(NNN)", args, frozen, outcome);
error:
    Py_XDECREF(memo);
    Py_XDECREF(names);
    Py_XDECREF(v);
    Py_XDECREF(args);
    Py_XDECREF(defaults);
    Py_XDECREF(outcome);
    return NULL;
}

/* The `n` entries of the container whose children start at `p` (a dict's
 * as pairs) into `out`, each rebuilt on its own; the container's own memo
 * index is taken first, as the tape counts it (a reference to the
 * container itself reads as None).  0, or -1 with an exception. */
static int readable_entries(ct_call *c, const uint8_t *p, const uint8_t *end, uint64_t n,
                            PyObject *out)
{
    int was_default = 0, rc = -1;
    PyObject *memo = PyList_New(0), *k = NULL, *v = NULL;
    if (!memo || PyList_Append(memo, Py_None) < 0)
        goto error;
    for (uint64_t i = 0; i < n; i++) {
        if (PyDict_Check(out) && !(k = readable_value(c, &p, end, &was_default, memo)))
            goto error;
        if (!(v = readable_value(c, &p, end, &was_default, memo)))
            goto error;
        if ((k ? PyDict_SetItem(out, k, v) : PyList_Append(out, v)) < 0)
            goto error;
        Py_CLEAR(k);
        Py_CLEAR(v);
    }
    rc = 0;
error:
    Py_XDECREF(k);
    Py_XDECREF(v);
    Py_XDECREF(memo);
    return rc;
}

PyObject *ct_call_readable_slot(ct_call *c, enum value_slot slot)
{
    if (!c->tape || !c->fn) {
        PyErr_SetString(PyExc_ValueError, "this Call was cleared");
        return NULL;
    }
    if (!(c->flags & value_flag(slot)))
        Py_RETURN_NONE;
    const uint8_t *p = ct_call_value(c, slot), *end = p + ct_call_value_len(c, slot);
    wire_tok t;
    const uint8_t *items = wire_next(p, end, &t);
    PyObject *out = NULL;
    int was_default = 0;
    if (items && (t.tag == WIRE_DICT || t.tag == WIRE_LIST)) {
        out = t.tag == WIRE_DICT ? PyDict_New() : PyList_New(0);
        if (out && readable_entries(c, items, end, t.u, out) < 0)
            Py_CLEAR(out);
    } else {
        out = readable_value(c, &p, end, &was_default, NULL);
    }
    if (!out && !PyErr_ExceptionMatches(PyExc_MemoryError) &&
        !PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
        ct_tape_damaged(c->tape, 0, "call %lld (%U), its %s", (long long)c->id, c->fn->full,
                        slot == VALUE_LOCALS    ? "locals"
                        : slot == VALUE_GLOBALS ? "globals"
                                                : "yielded values");
    return out;
}
