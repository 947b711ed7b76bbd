/*
 * compare.c - is a replayed value the same as the recorded one, and if not,
 * where do they differ?
 *
 * Rules, in order, applied recursively:
 *   - the same object, or `==` says equal (numpy arrays never take this
 *     path: their == is element-wise);
 *   - numpy arrays: same dtype and shape, then element-wise (NaN equals NaN;
 *     floating dtypes within the tolerance);
 *   - floats (and float/int pairs): NaN equals NaN (decimal NaNs too), and
 *     |a - b| <= max(rel * max(|a|, |b|), abs);
 *   - lists and tuples item by item, dicts key by key, sets as sets;
 *   - an object of the same type as the recorded one with the same encoded
 *     wire form (what the tape would hold: its type and state) is equal,
 *     whether its type has no __eq__, its == fails or its == says no;
 *   - objects of one type with a __dict__ are searched attribute by
 *     attribute to say where they differ.
 * The diff names the place, Python-style, recorded value first:
 * "result['items'][2].price: 9.5 != 9.75".
 *
 * Invariants: never raises for a value that merely misbehaves (a failing
 * __eq__ or __repr__ is an inequality or a placeholder); returns -1 only on
 * memory exhaustion or interpreter errors it cannot swallow.
 */
#include "binding.h"

#include <math.h>

#define PATH_MAX_BYTES 400
#define REPR_MAX 80

typedef struct cmp {
    ct_state *st;
    double rel, abs;
    char path[PATH_MAX_BYTES];
    size_t plen;
    PyObject *diff; /* str once a difference was found */
} cmp;

static int cmp_values(cmp *c, PyObject *a, PyObject *b, int depth);

static void path_put(cmp *c, const char *s, size_t n)
{
    if (c->plen + n >= PATH_MAX_BYTES - 4) {
        if (c->plen + 3 < PATH_MAX_BYTES) {
            memcpy(c->path + c->plen, "...", 3);
            c->plen += 3;
        }
        c->path[c->plen] = 0;
        return;
    }
    memcpy(c->path + c->plen, s, n);
    c->plen += n;
    c->path[c->plen] = 0;
}

/* Appends "[repr(key)]" (or ".name" when attr). */
static void path_push(cmp *c, PyObject *key, int attr)
{
    PyObject *r = attr ? PyObject_Str(key) : PyObject_Repr(key);
    const char *s = r ? PyUnicode_AsUTF8(r) : NULL;
    if (!s) {
        PyErr_Clear();
        s = "?";
    }
    size_t n = strlen(s);
    if (n > 60)
        n = 60;
    path_put(c, attr ? "." : "[", 1);
    path_put(c, s, n);
    if (!attr)
        path_put(c, "]", 1);
    Py_XDECREF(r);
}

static int word_char(Py_UCS4 ch)
{
    return Py_UNICODE_ISALNUM(ch) || ch == '_';
}

PyObject *ct_cut_words(PyObject *text, Py_ssize_t max)
{
    if (!text || PyUnicode_GET_LENGTH(text) <= max)
        return text;
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    Py_ssize_t at = max - 1; /* room for the ellipsis */
    /* back to a boundary: not between two word characters */
    Py_ssize_t end = at;
    while (end > max / 2 && word_char(PyUnicode_READ(kind, data, end - 1)) &&
           word_char(PyUnicode_READ(kind, data, end)))
        end--;
    if (end > max / 2)
        at = end;
    while (at > 1 && PyUnicode_READ(kind, data, at - 1) == ' ')
        at--;
    PyObject *cut = PyUnicode_Substring(text, 0, at);
    Py_DECREF(text);
    if (!cut)
        return NULL;
    PyObject *out = PyUnicode_FromFormat("%U%s", cut, "\xe2\x80\xa6"); /* U+2026 */
    Py_DECREF(cut);
    return out;
}

/* A repr of at most REPR_MAX characters, cut at a word boundary; never
 * fails for a misbehaving __repr__ (a placeholder naming the type
 * instead).  New reference or NULL. */
static PyObject *short_repr(PyObject *v)
{
    PyObject *r = PyObject_Repr(v);
    if (!r) {
        PyErr_Clear();
        return PyUnicode_FromFormat("<%s object>", Py_TYPE(v)->tp_name);
    }
    return ct_cut_words(r, REPR_MAX);
}

/* Sets the diff to "<path>: <what>".  Returns 1 (different) or -1. */
static int differ(cmp *c, PyObject *what)
{
    if (!what)
        return -1;
    c->diff = PyUnicode_FromFormat("%s: %U", c->path, what);
    Py_DECREF(what);
    return c->diff ? 1 : -1;
}

static int differ_values(cmp *c, PyObject *a, PyObject *b)
{
    PyObject *ra = short_repr(a), *rb = short_repr(b);
    PyObject *what = NULL;
    if (ra && rb) {
        if (Py_TYPE(a) != Py_TYPE(b) && PyUnicode_Compare(ra, rb) != 0)
            what = PyUnicode_FromFormat("%U != %U (%s != %s)", ra, rb, Py_TYPE(a)->tp_name,
                                        Py_TYPE(b)->tp_name);
        else if (Py_TYPE(a) != Py_TYPE(b))
            what = PyUnicode_FromFormat("%U != %U of another type (%s != %s)", ra, rb,
                                        Py_TYPE(a)->tp_name, Py_TYPE(b)->tp_name);
        else
            what = PyUnicode_FromFormat("%U != %U", ra, rb);
    }
    Py_XDECREF(ra);
    Py_XDECREF(rb);
    return differ(c, what);
}

static int is_ndarray(PyObject *v)
{
    return strcmp(Py_TYPE(v)->tp_name, "numpy.ndarray") == 0;
}

static int close_enough(const cmp *c, double x, double y)
{
    if (x == y || (isnan(x) && isnan(y)))
        return 1;
    if (isinf(x) || isinf(y) || isnan(x) || isnan(y))
        return 0;
    double d = fabs(x - y);
    double scale = fabs(x) > fabs(y) ? fabs(x) : fabs(y);
    return d <= c->abs || d <= c->rel * scale;
}

/* numpy arrays' dtype and shape: 0 when the same (*dtype then holds a's,
 * a new reference), 1 with the diff when not, -1 with an exception. */
static int cmp_array_layout(cmp *c, PyObject *a, PyObject *b, PyObject **dtype)
{
    PyObject *da = PyObject_GetAttrString(a, "dtype"), *db = PyObject_GetAttrString(b, "dtype");
    PyObject *sa = PyObject_GetAttrString(a, "shape"), *sb = PyObject_GetAttrString(b, "shape");
    int rc = -1;
    if (!da || !db || !sa || !sb)
        goto done;
    int same = PyObject_RichCompareBool(da, db, Py_EQ);
    if (same <= 0) {
        rc = same < 0 ? -1 : differ(c, PyUnicode_FromFormat("dtype %S != dtype %S", da, db));
        goto done;
    }
    same = PyObject_RichCompareBool(sa, sb, Py_EQ);
    if (same <= 0) {
        rc = same < 0 ? -1 : differ(c, PyUnicode_FromFormat("shape %S != shape %S", sa, sb));
        goto done;
    }
    *dtype = Py_NewRef(da);
    rc = 0;
done:
    Py_XDECREF(da);
    Py_XDECREF(db);
    Py_XDECREF(sa);
    Py_XDECREF(sb);
    return rc;
}

/* The element-wise mask of equal elements: numpy.isclose within the
 * tolerance (NaN equal to NaN) for floating and complex dtypes, == for the
 * rest.  New reference or NULL. */
static PyObject *array_equal_mask(cmp *c, PyObject *np, PyObject *a, PyObject *b, PyObject *dtype)
{
    PyObject *kind = PyObject_GetAttrString(dtype, "kind");
    if (!kind)
        return NULL;
    int inexact = PyUnicode_CompareWithASCIIString(kind, "f") == 0 ||
                  PyUnicode_CompareWithASCIIString(kind, "c") == 0;
    Py_DECREF(kind);
    if (!inexact)
        return PyObject_RichCompare(a, b, Py_EQ);
    PyObject *isclose = PyObject_GetAttrString(np, "isclose");
    PyObject *args = PyTuple_Pack(2, a, b);
    PyObject *kw =
        Py_BuildValue("{s:d,s:d,s:O}", "rtol", c->rel, "atol", c->abs, "equal_nan", Py_True);
    PyObject *mask = isclose && args && kw ? PyObject_Call(isclose, args, kw) : NULL;
    Py_XDECREF(isclose);
    Py_XDECREF(args);
    Py_XDECREF(kw);
    return mask;
}

/* Appends "[i, j, ...]" of the index tuple `idx` to the path.  0 or -1. */
static int path_push_index(cmp *c, PyObject *idx)
{
    path_put(c, "[", 1);
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(idx); i++) {
        PyObject *s = PyObject_Str(PyTuple_GET_ITEM(idx, i));
        const char *t = s ? PyUnicode_AsUTF8(s) : NULL;
        if (!t) {
            Py_XDECREF(s);
            return -1;
        }
        if (i)
            path_put(c, ", ", 2);
        path_put(c, t, strlen(t));
        Py_DECREF(s);
    }
    path_put(c, "]", 1);
    return 0;
}

/* The arrays differ where `mask` is false: the diff names the first such
 * element and how many differ.  Returns 1 or -1. */
static int differ_elements(cmp *c, PyObject *np, PyObject *a, PyObject *b, PyObject *mask)
{
    PyObject *bad = NULL, *idx = NULL, *ea = NULL, *eb = NULL;
    int rc = -1;
    PyObject *inv = PyNumber_Invert(mask);
    bad = inv ? PyObject_CallMethod(np, "argwhere", "O", inv) : NULL;
    Py_XDECREF(inv);
    if (!bad)
        goto done;
    PyObject *first = PySequence_GetItem(bad, 0);
    idx = first ? PySequence_Tuple(first) : NULL;
    Py_XDECREF(first);
    if (!idx)
        goto done;
    Py_ssize_t nbad = PyObject_Length(bad);
    ea = PyObject_GetItem(a, idx);
    eb = PyObject_GetItem(b, idx);
    if (!ea || !eb || nbad < 0 || path_push_index(c, idx) < 0)
        goto done;
    PyObject *ra = short_repr(ea), *rb = short_repr(eb);
    PyObject *size = PyObject_GetAttrString(a, "size");
    rc = differ(c, ra && rb && size ? PyUnicode_FromFormat("%U != %U (%zd of %S elements differ)",
                                                           ra, rb, nbad, size)
                                    : NULL);
    Py_XDECREF(ra);
    Py_XDECREF(rb);
    Py_XDECREF(size);
done:
    Py_XDECREF(bad);
    Py_XDECREF(idx);
    Py_XDECREF(ea);
    Py_XDECREF(eb);
    return rc;
}

/* numpy arrays: dtype, shape, then element-wise. */
static int cmp_arrays(cmp *c, PyObject *a, PyObject *b)
{
    PyObject *np = NULL, *dtype = NULL, *mask = NULL, *all = NULL;
    int rc = cmp_array_layout(c, a, b, &dtype);
    if (rc != 0)
        return rc;
    rc = -1;
    np = PyImport_ImportModule("numpy");
    mask = np ? array_equal_mask(c, np, a, b, dtype) : NULL;
    all = mask ? PyObject_CallMethod(mask, "all", NULL) : NULL;
    int ok = all ? PyObject_IsTrue(all) : -1;
    if (ok >= 0)
        rc = ok ? 0 : differ_elements(c, np, a, b, mask);
    Py_XDECREF(np);
    Py_XDECREF(dtype);
    Py_XDECREF(mask);
    Py_XDECREF(all);
    return rc;
}

static int cmp_sequences(cmp *c, PyObject *a, PyObject *b, int depth)
{
    Py_ssize_t na = PySequence_Fast_GET_SIZE(a), nb = PySequence_Fast_GET_SIZE(b);
    Py_ssize_t n = na < nb ? na : nb;
    size_t saved = c->plen;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key = PyLong_FromSsize_t(i);
        if (!key)
            return -1;
        path_push(c, key, 0);
        Py_DECREF(key);
        int rc = cmp_values(c, PySequence_Fast_GET_ITEM(a, i), PySequence_Fast_GET_ITEM(b, i),
                            depth + 1);
        c->plen = saved;
        c->path[saved] = 0;
        if (rc)
            return rc;
    }
    if (na != nb)
        return differ(c, PyUnicode_FromFormat("%zd items != %zd items", na, nb));
    return 0;
}

/* Dicts key by key; `attr` names the keys as attributes (.name). */
static int cmp_dicts(cmp *c, PyObject *a, PyObject *b, int depth, int attr)
{
    PyObject *key, *va;
    Py_ssize_t pos = 0;
    size_t saved = c->plen;
    while (PyDict_Next(a, &pos, &key, &va)) {
        PyObject *vb = PyDict_GetItemWithError(b, key);
        if (!vb) {
            if (PyErr_Occurred())
                return -1;
            path_push(c, key, attr);
            return differ(c, PyUnicode_FromString("recorded, missing now"));
        }
        Py_INCREF(va);
        Py_INCREF(vb);
        path_push(c, key, attr);
        int rc = cmp_values(c, va, vb, depth + 1);
        Py_DECREF(va);
        Py_DECREF(vb);
        c->plen = saved;
        c->path[saved] = 0;
        if (rc)
            return rc;
    }
    pos = 0;
    while (PyDict_Next(b, &pos, &key, &va)) {
        int has = PyDict_Contains(a, key);
        if (has < 0)
            return -1;
        if (!has) {
            path_push(c, key, attr);
            return differ(c, PyUnicode_FromString("new now, not recorded"));
        }
    }
    return 0;
}

static int cmp_sets(cmp *c, PyObject *a, PyObject *b)
{
    PyObject *only_a = PyNumber_Subtract(a, b);
    PyObject *only_b = only_a ? PyNumber_Subtract(b, a) : NULL;
    PyObject *ra = only_b ? short_repr(only_a) : NULL;
    PyObject *rb = ra ? short_repr(only_b) : NULL;
    int rc = -1;
    if (rb) {
        if (PySet_GET_SIZE(only_a) == 0 && PySet_GET_SIZE(only_b) == 0)
            rc = 0;
        else
            rc = differ(c, PyUnicode_FromFormat("only recorded %U, only now %U", ra, rb));
    }
    Py_XDECREF(only_a);
    Py_XDECREF(only_b);
    Py_XDECREF(ra);
    Py_XDECREF(rb);
    return rc;
}

/* 1 when both values have the same encoded wire form, 0 when not. */
static int same_encoding(cmp *c, PyObject *a, PyObject *b)
{
    wbuf ea, eb;
    wbuf_init(&ea, NULL, 0);
    wbuf_init(&eb, NULL, 0);
    ct_capture cap = {c->st, PY_SSIZE_T_MAX, 0};
    ct_thread *t = ct_thread_get();
    t->busy++;
    int ok = ct_capture_value(&cap, &ea, a) == 0 && ct_capture_value(&cap, &eb, b) == 0;
    t->busy--;
    PyErr_Clear();
    int same = ok && ea.len == eb.len && memcmp(ea.data, eb.data, ea.len) == 0 && ea.len > 0 &&
               ea.data[0] != WIRE_UNENCODABLE && ea.data[0] != WIRE_TRUNCATED;
    wbuf_free(&ea);
    wbuf_free(&eb);
    return same;
}

/* 1 when `a` and `b` are both decimal.Decimal NaNs (which == never
 * finds equal, as float NaNs, which compare equal here too). */
static int both_nan_decimals(PyObject *a, PyObject *b)
{
    if (strcmp(Py_TYPE(a)->tp_name, "decimal.Decimal") != 0)
        return 0;
    PyObject *x = PyObject_CallMethod(a, "is_nan", NULL);
    PyObject *y = x == Py_True ? PyObject_CallMethod(b, "is_nan", NULL) : NULL;
    int both = x == Py_True && y == Py_True;
    Py_XDECREF(x);
    Py_XDECREF(y);
    PyErr_Clear();
    return both;
}

/* Aware datetimes (or times) whose tzinfo objects differ: == compares them
 * as instants, and an ambiguous one (fold=1) never equals another zone's;
 * a replayed value's zone is a rebuilt copy of the recorded one, so they
 * are compared by their fields, fold included, and their zones by value.
 * Returns 0 or 1 as cmp_values does, or 2 when this rule does not apply. */
static int cmp_aware_datetimes(cmp *c, PyObject *a, PyObject *b, int depth)
{
    const char *n = Py_TYPE(a)->tp_name;
    if (strcmp(n, "datetime.datetime") != 0 && strcmp(n, "datetime.time") != 0)
        return 2;
    PyObject *za = PyObject_GetAttrString(a, "tzinfo");
    PyObject *zb = za ? PyObject_GetAttrString(b, "tzinfo") : NULL;
    int rc = 2;
    if (za && zb && za != zb && za != Py_None && zb != Py_None) {
        PyObject *kw = Py_BuildValue("{sO}", "tzinfo", Py_None);
        PyObject *ra = kw ? PyObject_GetAttrString(a, "replace") : NULL;
        PyObject *rb = ra ? PyObject_GetAttrString(b, "replace") : NULL;
        PyObject *none = PyTuple_New(0);
        PyObject *na = rb && none ? PyObject_Call(ra, none, kw) : NULL;
        PyObject *nb = na ? PyObject_Call(rb, none, kw) : NULL;
        Py_XDECREF(none);
        Py_XDECREF(ra);
        Py_XDECREF(rb);
        Py_XDECREF(kw);
        PyObject *fa = na ? PyObject_GetAttrString(a, "fold") : NULL;
        PyObject *fb = fa ? PyObject_GetAttrString(b, "fold") : NULL;
        int same = nb && fb && PyObject_RichCompareBool(na, nb, Py_EQ) == 1 &&
                   PyObject_RichCompareBool(fa, fb, Py_EQ) == 1;
        PyErr_Clear();
        if (same) {
            size_t plen = c->plen;
            path_put(c, ".tzinfo", 7);
            rc = cmp_values(c, za, zb, depth + 1);
            c->plen = plen;
            c->path[plen] = 0;
        }
        Py_XDECREF(na);
        Py_XDECREF(nb);
        Py_XDECREF(fa);
        Py_XDECREF(fb);
    }
    Py_XDECREF(za);
    Py_XDECREF(zb);
    PyErr_Clear();
    return rc;
}

static int has_own_eq(PyTypeObject *tp)
{
    return tp->tp_richcompare && tp->tp_richcompare != PyBaseObject_Type.tp_richcompare;
}

static int cmp_values(cmp *c, PyObject *a, PyObject *b, int depth)
{
    if (a == b)
        return 0;
    if (depth > WIRE_MAX_DEPTH)
        return differ(c, PyUnicode_FromString("nested too deeply to compare"));
    PyTypeObject *ta = Py_TYPE(a), *tb = Py_TYPE(b);
    int arr_a = is_ndarray(a), arr_b = is_ndarray(b);
    if (arr_a && arr_b)
        return cmp_arrays(c, a, b);
    if (arr_a || arr_b)
        return differ_values(c, a, b);
    int eq = PyObject_RichCompareBool(a, b, Py_EQ);
    if (eq > 0 && ta == tb)
        return 0;
    int eq_failed = eq < 0;
    if (eq_failed)
        PyErr_Clear();
    if (eq > 0) /* equal across types: 1 == 1.0 == True */
        return 0;
    if ((ta == &PyFloat_Type || tb == &PyFloat_Type) &&
        (ta == &PyFloat_Type || ta == &PyLong_Type) &&
        (tb == &PyFloat_Type || tb == &PyLong_Type)) {
        double x = PyFloat_AsDouble(a), y = PyFloat_AsDouble(b);
        if ((x == -1.0 || y == -1.0) && PyErr_Occurred()) {
            PyErr_Clear();
            return differ_values(c, a, b);
        }
        return close_enough(c, x, y) ? 0 : differ_values(c, a, b);
    }
    if (ta != tb)
        return differ_values(c, a, b);
    if (both_nan_decimals(a, b))
        return 0;
    int rc = cmp_aware_datetimes(c, a, b, depth);
    if (rc != 2)
        return rc;
    if (ta == &PyList_Type || ta == &PyTuple_Type)
        return cmp_sequences(c, a, b, depth);
    if (ta == &PyDict_Type)
        return cmp_dicts(c, a, b, depth, 0);
    if (ta == &PySet_Type || ta == &PyFrozenSet_Type)
        return cmp_sets(c, a, b);
    /* the same type and the same state, as the tape would hold it: equal,
     * whatever an own == says (one that compares parts by identity, such as
     * ModuleSpec's loader, can never hold for a rebuilt copy) */
    if (same_encoding(c, a, b))
        return 0;
    /* look inside objects of one type to say where they differ */
    int has_dict = ta->tp_dictoffset != 0 || (ta->tp_flags & Py_TPFLAGS_MANAGED_DICT);
    PyObject *da = has_dict ? PyObject_GenericGetDict(a, NULL) : NULL;
    PyObject *db = da ? PyObject_GenericGetDict(b, NULL) : NULL;
    PyErr_Clear();
    if (da && db && PyDict_Check(da) && PyDict_Check(db)) {
        int rc = cmp_dicts(c, da, db, depth, 1);
        Py_DECREF(da);
        Py_DECREF(db);
        if (rc)
            return rc;
        /* same attributes: == said no for a reason the attributes do not show */
        if (has_own_eq(ta) && !eq_failed)
            return differ_values(c, a, b);
        return 0;
    }
    Py_XDECREF(da);
    Py_XDECREF(db);
    return differ_values(c, a, b);
}

int ct_check_tolerance(double rel, double abs)
{
    if (rel >= 0 && abs >= 0) /* false for NaN */
        return 0;
    PyObject *r = PyFloat_FromDouble(rel), *a = PyFloat_FromDouble(abs);
    if (r && a)
        PyErr_Format(PyExc_ValueError, "rel and abs must be numbers >= 0, not rel=%R abs=%R", r, a);
    Py_XDECREF(r);
    Py_XDECREF(a);
    return -1;
}

int ct_compare(ct_state *st, PyObject *expected, PyObject *actual, double rel, double abs,
               const char *root, PyObject **diff)
{
    cmp c;
    c.st = st;
    c.rel = rel;
    c.abs = abs;
    c.plen = 0;
    c.path[0] = 0;
    c.diff = NULL;
    path_put(&c, root, strlen(root));
    *diff = NULL;
    int rc = cmp_values(&c, expected, actual, 0);
    if (rc < 0) {
        Py_CLEAR(c.diff);
        return -1;
    }
    *diff = c.diff;
    return rc;
}

PyObject *ct_compare_py(PyObject *module, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"expected", "actual", "rel", "abs", NULL};
    PyObject *a, *b;
    double rel = 0.0, abs_tol = 0.0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|$dd:compare", kwlist, &a, &b, &rel, &abs_tol))
        return NULL;
    if (ct_check_tolerance(rel, abs_tol) < 0)
        return NULL;
    PyObject *diff = NULL;
    int rc = ct_compare(PyModule_GetState(module), a, b, rel, abs_tol, "value", &diff);
    if (rc < 0)
        return NULL;
    return diff ? diff : Py_NewRef(Py_None);
}
