/*
 * stored.c - Call.stored(): a call's values as the tape stores them, for
 * tools that show recorded data without rebuilding it (the PyMonitor
 * facade's "raw data"): each value is a dict {"type": the type the tape
 * names, "preview": its bounded text}, and a container's holds its parts
 * to any depth: "items" (list, tuple, set and frozenset: a list of such
 * dicts; dict: a list of [key, value] pairs), an object's "attributes"
 * (name -> value, its __dict__ and __slots__) and "contents" (what a
 * subclass of a builtin holds); an argument that took its default says
 * "default": True; a second occurrence of one object is {"type":
 * "reference", "back": d} (the d-th container before it).
 *
 * Invariants: nothing is imported or rebuilt, so any tape can be read this
 * way, trusted or not; bytes that do not decode raise TapeError naming the
 * call; values nest at most WIRE_MAX_DEPTH deep, as the format allows.
 */
#include "reader.h"

static PyObject *stored_value(const uint8_t **p, const uint8_t *end, int depth);

/* Sets node[key] to the `n` values at *p (advanced): a list of nodes, or
 * of [key, value] pairs when `pairs`.  0, or -1 with an exception. */
static int stored_items(PyObject *node, const char *key, const uint8_t **p, const uint8_t *end,
                        uint64_t n, int pairs, int depth)
{
    PyObject *items = PyList_New(0), *k = NULL, *v = NULL, *pair = NULL;
    int rc = -1;
    if (!items)
        return -1;
    for (uint64_t i = 0; i < n; i++) {
        if (pairs && !(k = stored_value(p, end, depth + 1)))
            goto error;
        if (!(v = stored_value(p, end, depth + 1)))
            goto error;
        pair = pairs ? Py_BuildValue("[OO]", k, v) : Py_NewRef(v);
        if (!pair || PyList_Append(items, pair) < 0)
            goto error;
        Py_CLEAR(k);
        Py_CLEAR(v);
        Py_CLEAR(pair);
    }
    rc = PyDict_SetItemString(node, key, items);
error:
    Py_XDECREF(k);
    Py_XDECREF(v);
    Py_XDECREF(pair);
    Py_DECREF(items);
    return rc;
}

/* Sets node["attributes"] to the `n` (STR name, value) pairs at *p. */
static int stored_attributes(PyObject *node, const uint8_t **p, const uint8_t *end, uint64_t n,
                             int depth)
{
    PyObject *attrs = PyDict_New(), *name = NULL, *v = NULL;
    int rc = -1;
    if (!attrs)
        return -1;
    for (uint64_t i = 0; i < n; i++) {
        wire_tok t;
        const uint8_t *q = wire_next(*p, end, &t);
        if (!q || t.tag != WIRE_STR) {
            PyErr_SetString(PyExc_ValueError, "an attribute name is not a str");
            goto error;
        }
        *p = q;
        name = PyUnicode_DecodeUTF8((const char *)t.s, (Py_ssize_t)t.n, "surrogatepass");
        if (!name || !(v = stored_value(p, end, depth + 1)) || PyDict_SetItem(attrs, name, v) < 0)
            goto error;
        Py_CLEAR(name);
        Py_CLEAR(v);
    }
    rc = PyDict_SetItemString(node, "attributes", attrs);
error:
    Py_XDECREF(name);
    Py_XDECREF(v);
    Py_DECREF(attrs);
    return rc;
}

/* The parts of the container whose token `t` was read, its children at
 * *p (advanced past them), into `node`. */
static int stored_parts(PyObject *node, const wire_tok *t, const uint8_t **p, const uint8_t *end,
                        int depth)
{
    switch (t->tag) {
    case WIRE_LIST:
    case WIRE_TUPLE:
    case WIRE_SET:
    case WIRE_FROZENSET:
        return stored_items(node, "items", p, end, t->u, 0, depth);
    case WIRE_DICT:
        return stored_items(node, "items", p, end, t->u, 1, depth);
    case WIRE_OBJECT:
        if (wire_kind_has_contents(t->kind)) {
            PyObject *contents = stored_value(p, end, depth + 1);
            int rc = contents ? PyDict_SetItemString(node, "contents", contents) : -1;
            Py_XDECREF(contents);
            if (rc < 0)
                return -1;
        }
        return stored_attributes(node, p, end, t->u + t->u2, depth);
    default: /* an exception, a blob, ...: the preview says it all */
        for (uint64_t i = 0; i < t->children; i++)
            if (!(*p = wire_skip(*p, end))) {
                PyErr_SetString(PyExc_ValueError, "a value does not decode");
                return -1;
            }
        return 0;
    }
}

/* The stored form of the value at *p (advanced past it).  New reference,
 * or NULL with an exception (ValueError: the bytes do not decode). */
static PyObject *stored_value(const uint8_t **p, const uint8_t *end, int depth)
{
    const uint8_t *start = *p, *stop = wire_skip(start, end);
    wire_tok t;
    const uint8_t *q = stop ? wire_next(start, end, &t) : NULL;
    if (!q || depth > WIRE_MAX_DEPTH) {
        PyErr_SetString(PyExc_ValueError, "a value does not decode");
        return NULL;
    }
    if (t.tag == WIRE_DEFAULT) {
        *p = q;
        PyObject *inner = stored_value(p, end, depth + 1);
        if (inner && PyDict_SetItemString(inner, "default", Py_True) < 0)
            Py_CLEAR(inner);
        return inner;
    }
    PyObject *node = NULL, *type = NULL, *preview = NULL;
    if (t.tag == WIRE_REF) {
        node = Py_BuildValue("{s:s,s:K}", "type", "reference", "back", (unsigned long long)t.u);
        *p = stop;
        return node;
    }
    type = ct_value_type(start, stop);
    preview = type ? ct_preview_text(start, stop) : NULL;
    node = preview ? Py_BuildValue("{s:O,s:O}", "type", type, "preview", preview) : NULL;
    Py_XDECREF(type);
    Py_XDECREF(preview);
    *p = q;
    if (node && stored_parts(node, &t, p, end, depth) < 0)
        Py_CLEAR(node);
    if (node && *p != stop) {
        PyErr_SetString(PyExc_ValueError, "a value does not decode");
        Py_CLEAR(node);
    }
    return node;
}

/* The arguments: parameter name -> stored value. */
static PyObject *stored_args(ct_call *c, const uint8_t *p, const uint8_t *end)
{
    PyObject *names =
        c->flags & REC_UNBOUND ? Py_BuildValue("(ss)", "args", "kwargs") : Py_NewRef(c->fn->names);
    PyObject *out = names ? PyDict_New() : NULL, *v = NULL;
    if (!out)
        goto error;
    for (Py_ssize_t i = 0; p < end; i++) {
        if (!(v = stored_value(&p, end, 0)))
            goto error;
        PyObject *name = i < PyTuple_GET_SIZE(names) ? PyTuple_GET_ITEM(names, i) : NULL;
        if (name && PyDict_SetItem(out, name, v) < 0)
            goto error;
        Py_CLEAR(v);
    }
    Py_DECREF(names);
    return out;
error:
    Py_XDECREF(v);
    Py_XDECREF(out);
    Py_XDECREF(names);
    return NULL;
}

/* A DICT of names (the locals, the globals): name -> stored value. */
static PyObject *stored_names(const uint8_t *p, const uint8_t *end)
{
    wire_tok t;
    const uint8_t *q = wire_next(p, end, &t);
    if (!q || t.tag != WIRE_DICT) {
        PyErr_SetString(PyExc_ValueError, "the names are not a dict");
        return NULL;
    }
    PyObject *out = PyDict_New(), *name = NULL, *v = NULL;
    if (!out)
        return NULL;
    for (uint64_t i = 0; i < t.u; i++) {
        wire_tok k;
        const uint8_t *at = wire_next(q, end, &k);
        if (!at || k.tag != WIRE_STR) {
            PyErr_SetString(PyExc_ValueError, "a name is not a str");
            goto error;
        }
        q = at;
        name = PyUnicode_DecodeUTF8((const char *)k.s, (Py_ssize_t)k.n, "surrogatepass");
        if (!name || !(v = stored_value(&q, end, 1)) || PyDict_SetItem(out, name, v) < 0)
            goto error;
        Py_CLEAR(name);
        Py_CLEAR(v);
    }
    return out;
error:
    Py_XDECREF(name);
    Py_XDECREF(v);
    Py_DECREF(out);
    return NULL;
}

PyObject *ct_call_stored(ct_call *c, enum value_slot slot)
{
    if (!c->tape || !c->fn) {
        PyErr_SetString(PyExc_ValueError, "this Call was cleared");
        return NULL;
    }
    if (!(c->flags & value_flag(slot)))
        Py_RETURN_NONE;
    const uint8_t *p = ct_call_value(c, slot), *end = p + ct_call_value_len(c, slot);
    PyObject *out = NULL;
    if (slot == VALUE_ARGS)
        out = stored_args(c, p, end);
    else if (slot == VALUE_LOCALS || slot == VALUE_GLOBALS)
        out = stored_names(p, end);
    else
        out = stored_value(&p, end, 0);
    if (!out && PyErr_ExceptionMatches(PyExc_ValueError)) {
        PyErr_Clear();
        static const char *const what[VALUE_NSLOTS] = {"arguments", "result", "locals", "globals",
                                                       "yielded values"};
        ct_tape_damaged(c->tape, 0, "call %lld (%U), its %s", (long long)c->id, c->fn->full,
                        what[slot]);
    }
    return out;
}
