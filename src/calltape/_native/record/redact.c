/*
 * redact.c - which names are secrets: parameters, keywords, dict keys,
 * attributes, locals and globals whose name matches the built-in list, the
 * configured names and patterns, or a capture path's own.
 *
 * Invariants: matching runs no code of the program (a str subclass is read
 * as str, and str.lower itself is used, not an override) and never raises.
 */
#include "binding.h"

#include <fnmatch.h>

static const struct {
    const char *name;
    size_t len;
} default_secret_names[] = {
    {"password", 8}, {"passwd", 6},         {"secret", 6}, {"token", 5},       {"api_key", 7},
    {"apikey", 6},   {"authorization", 13}, {"cookie", 6}, {"credential", 10}, {"private_key", 11},
};

/* 1 when the lower-case `s` (n bytes) is one of the built-in names. */
static int redact_default_name(const char *s, size_t n)
{
    for (size_t i = 0; i < sizeof default_secret_names / sizeof *default_secret_names; i++)
        if (default_secret_names[i].len == n && memcmp(s, default_secret_names[i].name, n) == 0)
            return 1;
    return 0;
}

/* 1 when the lower-case str `lower` (whose UTF-8 is `s`) is in the frozenset
 * `exact` or matches a glob of `patterns` (either may be NULL or None). */
static int redact_listed(PyObject *lower, const char *s, PyObject *exact, PyObject *patterns)
{
    if (exact && exact != Py_None && PySet_GET_SIZE(exact) && PySet_Contains(exact, lower) == 1)
        return 1;
    Py_ssize_t n = patterns && patterns != Py_None ? PyTuple_GET_SIZE(patterns) : 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *pat = PyUnicode_AsUTF8(PyTuple_GET_ITEM(patterns, i));
        if (pat && fnmatch(pat, s, 0) == 0)
            return 1;
    }
    return 0;
}

/* ---- remembered decisions -------------------------------------------------
 * A capture path without names of its own decides by the configured rules
 * alone, so its decision for one str object holds until configure() changes
 * them: attribute names, keyword names and dict keys are the same interned
 * objects at every call.  An open-addressing table by address, emptied when
 * it is half full, so it stays bounded. */

#define REDACT_MEMO_CAP 2048

static size_t memo_slot(const PyObject *name)
{
    uintptr_t h = (uintptr_t)name >> 4;
    return (size_t)((h ^ (h >> 15)) * 0x9E3779B97F4A7C15ull) & (REDACT_MEMO_CAP - 1);
}

/* The remembered decision for `name`, or -1. */
static int memo_get(const struct ct_redact_memo *m, const PyObject *name)
{
    if (!m->names)
        return -1;
    for (size_t i = memo_slot(name); m->names[i]; i = (i + 1) & (REDACT_MEMO_CAP - 1))
        if (m->names[i] == name)
            return m->hit[i];
    return -1;
}

static void memo_put(ct_state *st, PyObject *name, int hit)
{
    struct ct_redact_memo *m = &st->redaction.memo;
    if (m->n * 2 >= REDACT_MEMO_CAP)
        ct_redact_memo_clear(st);
    if (!m->names) {
        m->names = calloc(REDACT_MEMO_CAP, sizeof(PyObject *));
        m->hit = calloc(REDACT_MEMO_CAP, 1);
        if (!m->names || !m->hit) {
            ct_redact_memo_clear(st);
            return; /* not remembered: decided again next time */
        }
        m->cap = REDACT_MEMO_CAP;
    }
    size_t i = memo_slot(name);
    while (m->names[i])
        i = (i + 1) & (REDACT_MEMO_CAP - 1);
    m->names[i] = Py_NewRef(name);
    m->hit[i] = (uint8_t)hit;
    m->n++;
}

void ct_redact_memo_clear(ct_state *st)
{
    struct ct_redact_memo *m = &st->redaction.memo;
    PyObject **names = m->names;
    size_t cap = m->cap;
    free(m->hit);
    memset(m, 0, sizeof *m);
    for (size_t i = 0; names && i < cap; i++)
        Py_XDECREF(names[i]);
    free(names);
}

int ct_redact_memo_traverse(const ct_state *st, visitproc visit, void *arg)
{
    for (size_t i = 0; st->redaction.memo.names && i < st->redaction.memo.cap; i++)
        Py_VISIT(st->redaction.memo.names[i]);
    return 0;
}

static int should_redact(ct_state *st, PyObject *name, const ct_redact *rd);

int ct_should_redact(ct_state *st, PyObject *name, const ct_redact *rd)
{
    int own = (rd->exact && PySet_GET_SIZE(rd->exact)) ||
              (rd->patterns && PyTuple_GET_SIZE(rd->patterns));
    if (!own && !rd->use_default)
        return 0;
    if (own || !PyUnicode_CheckExact(name))
        return should_redact(st, name, rd);
    int hit = memo_get(&st->redaction.memo, name);
    if (hit < 0) {
        hit = should_redact(st, name, rd);
        memo_put(st, name, hit);
    }
    return hit;
}

/* ct_should_redact, decided now. */
static int should_redact(ct_state *st, PyObject *name, const ct_redact *rd)
{
    if (!PyUnicode_Check(name))
        return 0;
    char small[64];
    const char *s;
    Py_ssize_t n = PyUnicode_GET_LENGTH(name);
    PyObject *lower = NULL;
    int hit = 0;
    if (PyUnicode_IS_ASCII(name) && n < (Py_ssize_t)sizeof small) {
        const char *raw = (const char *)PyUnicode_DATA(name);
        for (Py_ssize_t i = 0; i < n; i++)
            small[i] = (char)(raw[i] >= 'A' && raw[i] <= 'Z' ? raw[i] + 32 : raw[i]);
        small[n] = 0;
        s = small;
        if (rd->use_default && st->redaction.builtin && redact_default_name(s, (size_t)n))
            return 1;
        int sets = (rd->exact && PySet_GET_SIZE(rd->exact)) ||
                   (rd->patterns && PyTuple_GET_SIZE(rd->patterns)) ||
                   (rd->use_default && (st->redaction.exact || st->redaction.patterns));
        if (!sets)
            return 0;
        lower = PyUnicode_FromStringAndSize(small, n);
    } else {
        /* str.lower itself, not a method a str subclass may override */
        lower = PyObject_CallMethod((PyObject *)&PyUnicode_Type, "lower", "O", name);
        s = lower ? PyUnicode_AsUTF8(lower) : NULL;
        if (!s)
            goto done;
        if (rd->use_default && st->redaction.builtin && redact_default_name(s, strlen(s)))
            hit = 1;
    }
    if (!lower)
        goto done;
    if (!hit && rd->use_default)
        hit = redact_listed(lower, PyUnicode_AsUTF8(lower), st->redaction.exact,
                            st->redaction.patterns);
    if (!hit)
        hit = redact_listed(lower, PyUnicode_AsUTF8(lower), rd->exact, rd->patterns);
done:
    PyErr_Clear();
    Py_XDECREF(lower);
    return hit;
}

int ct_split_redact(PyObject *names, PyObject **exact, PyObject **patterns)
{
    PyObject *ex = PySet_New(NULL), *pats = PyList_New(0), *it = NULL, *item = NULL;
    if (PyUnicode_Check(names)) {
        PyErr_SetString(PyExc_TypeError, "redact must be a list of parameter names, not a str");
        goto error;
    }
    if (!ex || !pats || !(it = PyObject_GetIter(names)))
        goto error;
    while ((item = PyIter_Next(it))) {
        if (!PyUnicode_Check(item)) {
            PyErr_Format(PyExc_TypeError, "redact names must be str, not %.100s",
                         Py_TYPE(item)->tp_name);
            goto error;
        }
        PyObject *lower = PyObject_CallMethod(item, "lower", NULL);
        if (!lower)
            goto error;
        const char *s = PyUnicode_AsUTF8(lower);
        int rc = s && strpbrk(s, "*?[") ? PyList_Append(pats, lower) : PySet_Add(ex, lower);
        Py_DECREF(lower);
        if (!s || rc < 0)
            goto error;
        Py_CLEAR(item);
    }
    if (PyErr_Occurred())
        goto error;
    Py_DECREF(it);
    *exact = PyFrozenSet_New(ex);
    Py_DECREF(ex);
    *patterns = PyList_AsTuple(pats);
    Py_DECREF(pats);
    if (!*exact || !*patterns) {
        Py_CLEAR(*exact);
        Py_CLEAR(*patterns);
        return -1;
    }
    return 0;
error:
    Py_XDECREF(item);
    Py_XDECREF(it);
    Py_XDECREF(ex);
    Py_XDECREF(pats);
    return -1;
}
