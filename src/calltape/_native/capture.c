/*
 * capture.c - Python objects to tape values (the wire format of engine.h).
 *
 * Exact built-in types take C fast paths; other types go through the codec
 * registry (nearest registered base class wins, cached per type), the
 * built-in numpy codec (.npy bytes straight from the buffer protocol,
 * without importing numpy), then pickle protocol 5.  Nothing here raises
 * into the caller: a value that cannot be encoded becomes UNENCODABLE, one
 * over the size limit TRUNCATED, and both are counted.
 *
 * Invariants: a failed encoding rewinds the buffer to where the value
 * started, so the output is always a sequence of whole values; any
 * exception raised by user code (a codec, __reduce__, sanitize) is cleared
 * here after being turned into a marker.
 */
#include "binding.h"

#include <fnmatch.h>

static const char *const default_secret_names[] = {
    "password",      "passwd", "secret",     "token",       "api_key", "apikey",
    "authorization", "cookie", "credential", "private_key", NULL};

/* 1 when the lower-case `s` (n bytes) is one of the built-in names. */
static int redact_default_name(const char *s, size_t n)
{
    for (int i = 0; default_secret_names[i]; i++)
        if (strlen(default_secret_names[i]) == n && memcmp(s, default_secret_names[i], n) == 0)
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

int ct_should_redact(ct_state *st, PyObject *name, const ct_redact *rd)
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
        if (rd->use_default && st->redact_default && redact_default_name(s, (size_t)n))
            return 1;
        int sets = (rd->exact && PySet_GET_SIZE(rd->exact)) ||
                   (rd->patterns && PyTuple_GET_SIZE(rd->patterns)) ||
                   (rd->use_default && (st->redact_exact || st->redact_patterns));
        if (!sets)
            return 0;
        lower = PyUnicode_FromStringAndSize(small, n);
    } else {
        /* str.lower itself, not a method a str subclass may override */
        lower = PyObject_CallMethod((PyObject *)&PyUnicode_Type, "lower", "O", name);
        s = lower ? PyUnicode_AsUTF8(lower) : NULL;
        if (!s)
            goto done;
        if (rd->use_default && st->redact_default && redact_default_name(s, strlen(s)))
            hit = 1;
    }
    if (!lower)
        goto done;
    if (!hit && rd->use_default)
        hit = redact_listed(lower, PyUnicode_AsUTF8(lower), st->redact_exact, st->redact_patterns);
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

static void put_text(wbuf *b, const char *s, size_t n)
{
    wbuf_varint(b, n);
    wbuf_put(b, s, n);
}

static void put_unencodable(ct_state *st, wbuf *b, PyObject *v, const char *why)
{
    const char *tname = Py_TYPE(v)->tp_name;
    char reason[CT_PREVIEW_LIMIT + 1];
    snprintf(reason, sizeof reason, "%s", why);
    wbuf_byte(b, WIRE_UNENCODABLE);
    put_text(b, tname, strlen(tname));
    put_text(b, reason, strlen(reason));
    st->counters[CT_UNENCODABLE]++;
    st->counters_dirty = 1;
}

/* Builds the reason of an UNENCODABLE marker from the pending exception
 * (cleared) and a bounded repr of the value. */
static void unencodable_from_error(ct_state *st, wbuf *b, PyObject *v)
{
    char why[CT_PREVIEW_LIMIT + 1] = "";
    PyObject *exc = ct_fetch_exc();
    PyObject *text = exc ? PyObject_Str(exc) : NULL;
    const char *msg = text ? PyUnicode_AsUTF8(text) : NULL;
    PyErr_Clear();
    PyObject *r = PyObject_Repr(v);
    const char *rs = r ? PyUnicode_AsUTF8(r) : NULL;
    PyErr_Clear();
    snprintf(why, sizeof why, "%s%s%.120s", msg ? msg : "cannot encode", rs ? "; repr: " : "",
             rs ? rs : "");
    Py_XDECREF(r);
    Py_XDECREF(text);
    Py_XDECREF(exc);
    put_unencodable(st, b, v, why);
}

static const char *npy_descr(const char *fmt, Py_ssize_t itemsize, char out[8])
{
    char order = '<';
    if (*fmt == '<' || *fmt == '=' || *fmt == '@')
        fmt++;
    else if (*fmt == '>' || *fmt == '!') {
        order = '>';
        fmt++;
    }
    char kind;
    if (strcmp(fmt, "?") == 0)
        kind = 'b';
    else if (strchr("bhilq", *fmt) && fmt[1] == 0)
        kind = 'i';
    else if (strchr("BHILQ", *fmt) && fmt[1] == 0)
        kind = 'u';
    else if (strchr("efd", *fmt) && fmt[1] == 0)
        kind = 'f';
    else if (fmt[0] == 'Z' && strchr("fd", fmt[1]) && fmt[2] == 0)
        kind = 'c';
    else
        return NULL;
    if (itemsize == 1)
        order = '|';
    snprintf(out, 8, "%c%c%d", order, kind, (int)itemsize);
    return out;
}

/* The built-in numpy codec: 0 done, 1 not applicable (use pickle). */
static int capture_ndarray(wbuf *b, PyObject *v)
{
    Py_buffer view;
    if (PyObject_GetBuffer(v, &view, PyBUF_RECORDS_RO) < 0) {
        PyErr_Clear();
        return 1;
    }
    int fortran = 0;
    char descr[8];
    if (!PyBuffer_IsContiguous(&view, 'C')) {
        if (!PyBuffer_IsContiguous(&view, 'F'))
            goto not_mine;
        fortran = 1;
    }
    if (!view.format || !npy_descr(view.format, view.itemsize, descr))
        goto not_mine;
    char header[512];
    int n = snprintf(header, sizeof header, "{'descr': '%s', 'fortran_order': %s, 'shape': (",
                     descr, fortran ? "True" : "False");
    for (int i = 0; i < view.ndim && n < 400; i++)
        n += snprintf(header + n, sizeof header - (size_t)n, "%zd,%s", view.shape[i],
                      i + 1 < view.ndim ? " " : "");
    if (view.ndim > 1)
        n--; /* numpy writes (2, 3) but (5,) */
    n += snprintf(header + n, sizeof header - (size_t)n, "), }");
    if (n > 480)
        goto not_mine;
    int total = 10 + n + 1;
    int pad = (64 - total % 64) % 64;
    uint16_t hlen = (uint16_t)(n + pad + 1);
    static const char codec_name[] = "numpy.ndarray";
    size_t payload = 10 + (size_t)hlen + (size_t)view.len;
    wbuf_byte(b, WIRE_CODEC);
    put_text(b, codec_name, sizeof codec_name - 1);
    wbuf_varint(b, payload);
    wbuf_put(b, "\x93NUMPY\x01\x00", 8);
    uint8_t le[2] = {(uint8_t)(hlen & 0xff), (uint8_t)(hlen >> 8)};
    wbuf_put(b, le, 2);
    wbuf_put(b, header, (size_t)n);
    for (int i = 0; i < pad; i++)
        wbuf_byte(b, ' ');
    wbuf_byte(b, '\n');
    wbuf_put(b, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return 0;
not_mine:
    PyBuffer_Release(&view);
    return 1;
}

static int is_ndarray_type(PyTypeObject *tp)
{
    PyObject *mro = tp->tp_mro;
    if (!mro)
        return 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(mro); i++)
        if (strcmp(((PyTypeObject *)PyTuple_GET_ITEM(mro, i))->tp_name, "numpy.ndarray") == 0)
            return 1;
    return 0;
}

/* Finds the codec for `tp`: (name, encode) borrowed from the cache, Py_None
 * for "no codec", NULL on error. */
static PyObject *codec_for(ct_state *st, PyTypeObject *tp)
{
    PyObject *hit = PyDict_GetItemWithError(st->codec_cache, (PyObject *)tp);
    if (hit || PyErr_Occurred())
        return hit;
    PyObject *found = Py_None;
    PyObject *mro = tp->tp_mro;
    for (Py_ssize_t i = 0; mro && i < PyTuple_GET_SIZE(mro); i++) {
        PyObject *entry = PyDict_GetItemWithError(st->codecs, PyTuple_GET_ITEM(mro, i));
        if (entry) {
            found = entry;
            break;
        }
        if (PyErr_Occurred())
            return NULL;
    }
    if (PyDict_SetItem(st->codec_cache, (PyObject *)tp, found) < 0)
        return NULL;
    return found;
}

static int capture_fallback(ct_capture *c, wbuf *b, PyObject *v, size_t start)
{
    ct_state *st = c->st;
    PyObject *entry = codec_for(st, Py_TYPE(v));
    if (!entry)
        goto error;
    if (entry != Py_None) {
        PyObject *name = PyTuple_GET_ITEM(entry, 0);
        PyObject *data = PyObject_CallOneArg(PyTuple_GET_ITEM(entry, 1), v);
        if (!data)
            goto error;
        Py_buffer view;
        if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
            Py_DECREF(data);
            goto error;
        }
        Py_ssize_t nlen;
        const char *ns = PyUnicode_AsUTF8AndSize(name, &nlen);
        wbuf_byte(b, WIRE_CODEC);
        put_text(b, ns, (size_t)nlen);
        put_text(b, view.buf, (size_t)view.len);
        PyBuffer_Release(&view);
        Py_DECREF(data);
        return 0;
    }
    if (is_ndarray_type(Py_TYPE(v)) && capture_ndarray(b, v) == 0)
        return 0;
    PyObject *args[2] = {v, st->protocol5};
    PyObject *data = PyObject_Vectorcall(st->pickle_dumps, args, 2, NULL);
    if (!data)
        goto error;
    wire_tagged_bytes(b, WIRE_PICKLE, PyBytes_AS_STRING(data), (size_t)PyBytes_GET_SIZE(data));
    Py_DECREF(data);
    st->counters[CT_PICKLED]++;
    st->counters_dirty = 1;
    return 0;
error:
    b->len = start;
    unencodable_from_error(st, b, v);
    return 0;
}

static int capture_at(ct_capture *c, wbuf *b, PyObject *v, int depth, size_t top_start);

static int capture_items(ct_capture *c, wbuf *b, PyObject *v, uint8_t tag, int depth,
                         size_t top_start)
{
    Py_ssize_t n = PySet_Check(v) || PyFrozenSet_Check(v) ? PySet_GET_SIZE(v) : PyObject_Size(v);
    wbuf_byte(b, tag);
    wbuf_varint(b, (uint64_t)n);
    if (tag == WIRE_LIST || tag == WIRE_TUPLE) {
        for (Py_ssize_t i = 0; i < n; i++) {
            if (tag == WIRE_LIST && i >= PyList_GET_SIZE(v))
                return -2; /* shrank while encoding */
            PyObject *item = tag == WIRE_LIST ? PyList_GET_ITEM(v, i) : PyTuple_GET_ITEM(v, i);
            Py_INCREF(item);
            int rc = capture_at(c, b, item, depth + 1, top_start);
            Py_DECREF(item);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    if (tag == WIRE_DICT) {
        Py_ssize_t pos = 0, seen = 0;
        PyObject *k, *val;
        while (seen < n && PyDict_Next(v, &pos, &k, &val)) {
            Py_INCREF(k);
            Py_INCREF(val);
            int rc = capture_at(c, b, k, depth + 1, top_start);
            if (rc == 0 && c->redact && ct_should_redact(c->st, k, c->redact))
                ct_put_redacted(c->st, b);
            else if (rc == 0)
                rc = capture_at(c, b, val, depth + 1, top_start);
            Py_DECREF(k);
            Py_DECREF(val);
            if (rc < 0)
                return rc;
            seen++;
        }
        return seen == n ? 0 : -2;
    }
    PyObject *it = PyObject_GetIter(v);
    if (!it)
        return -3;
    Py_ssize_t seen = 0;
    PyObject *item;
    while (seen < n && (item = PyIter_Next(it))) {
        int rc = capture_at(c, b, item, depth + 1, top_start);
        Py_DECREF(item);
        if (rc < 0) {
            Py_DECREF(it);
            return rc;
        }
        seen++;
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return -3;
    return seen == n ? 0 : -2;
}

/* Returns 0, -1 (out of memory), -2 (container changed size), -3 (error
 * set), -4 (over the size limit). */
static int capture_at(ct_capture *c, wbuf *b, PyObject *v, int depth, size_t top_start)
{
    PyTypeObject *tp = Py_TYPE(v);
    if (b->failed)
        return -1;
    if (b->len - top_start > (size_t)c->limit)
        return -4;
    if (v == Py_None) {
        wbuf_byte(b, WIRE_NONE);
    } else if (v == Py_True) {
        wbuf_byte(b, WIRE_TRUE);
    } else if (v == Py_False) {
        wbuf_byte(b, WIRE_FALSE);
    } else if (tp == &PyLong_Type) {
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (!overflow) {
            wire_int(b, x);
        } else {
            size_t nbytes = (_PyLong_NumBits(v) + 8) / 8;
            if ((Py_ssize_t)nbytes > c->limit)
                return -4;
            if (wbuf_reserve(b, nbytes + 12) < 0)
                return -1;
            wbuf_byte(b, WIRE_BIGINT);
            wbuf_varint(b, nbytes);
#if PY_VERSION_HEX >= 0x030D0000
            if (PyLong_AsNativeBytes(v, b->data + b->len, (Py_ssize_t)nbytes,
                                     Py_ASNATIVEBYTES_LITTLE_ENDIAN) < 0)
                return -3;
#else
            if (_PyLong_AsByteArray((PyLongObject *)v, b->data + b->len, nbytes, 1, 1) < 0)
                return -3;
#endif
            b->len += nbytes;
        }
    } else if (tp == &PyFloat_Type) {
        wire_float(b, PyFloat_AS_DOUBLE(v));
    } else if (tp == &PyUnicode_Type) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(v, &n);
        if (s) {
            if (n > c->limit)
                return -4;
            wire_tagged_bytes(b, WIRE_STR, s, (size_t)n);
        } else {
            PyErr_Clear(); /* lone surrogates */
            PyObject *raw = PyUnicode_AsEncodedString(v, "utf-8", "surrogatepass");
            if (!raw)
                return -3;
            if (PyBytes_GET_SIZE(raw) > c->limit) {
                Py_DECREF(raw);
                return -4;
            }
            wire_tagged_bytes(b, WIRE_STR, PyBytes_AS_STRING(raw), (size_t)PyBytes_GET_SIZE(raw));
            Py_DECREF(raw);
        }
    } else if (tp == &PyBytes_Type) {
        if (PyBytes_GET_SIZE(v) > c->limit)
            return -4;
        wire_tagged_bytes(b, WIRE_BYTES, PyBytes_AS_STRING(v), (size_t)PyBytes_GET_SIZE(v));
    } else if ((tp == &PyList_Type || tp == &PyTuple_Type || tp == &PyDict_Type ||
                tp == &PySet_Type || tp == &PyFrozenSet_Type) &&
               depth < WIRE_MAX_DEPTH - 2) {
        uint8_t tag = tp == &PyList_Type    ? WIRE_LIST
                      : tp == &PyTuple_Type ? WIRE_TUPLE
                      : tp == &PyDict_Type  ? WIRE_DICT
                      : tp == &PySet_Type   ? WIRE_SET
                                            : WIRE_FROZENSET;
        if (Py_EnterRecursiveCall(" while recording a value") < 0)
            return -3;
        int rc = capture_items(c, b, v, tag, depth, top_start);
        Py_LeaveRecursiveCall();
        return rc;
    } else {
        size_t start = b->len;
        capture_fallback(c, b, v, start);
    }
    return b->failed ? -1 : 0;
}

int ct_capture_value(ct_capture *c, wbuf *b, PyObject *v)
{
    return ct_capture_small(b, v) ? 0 : ct_capture_other(c, b, v);
}

int ct_capture_other(ct_capture *c, wbuf *b, PyObject *v)
{
    size_t start = b->len;
    int rc = capture_at(c, b, v, 0, start);
    if (rc == -1)
        return -1;
    if (rc == -2 || rc == -3) {
        b->len = start;
        if (rc == -2)
            put_unencodable(c->st, b, v, "container changed size while being recorded");
        else
            unencodable_from_error(c->st, b, v);
    } else if (rc == -4 || b->len - start > (size_t)c->limit) {
        size_t size = b->len - start;
        if (rc == -4) {
            Py_ssize_t n = -1;
            if (PyUnicode_Check(v))
                n = PyUnicode_GET_LENGTH(v);
            else if (PyBytes_Check(v))
                n = PyBytes_GET_SIZE(v);
            size = n > (Py_ssize_t)size ? (size_t)n : size;
        }
        PyErr_Clear();
        b->len = start;
        const char *tname = Py_TYPE(v)->tp_name;
        wbuf_byte(b, WIRE_TRUNCATED);
        put_text(b, tname, strlen(tname));
        wbuf_varint(b, size);
        c->st->counters[CT_TRUNCATED]++;
        c->st->counters_dirty = 1;
    } else if (c->top && b->len - start >= CT_BLOB_MIN) {
        /* Large value: let the writer store it once by content. */
        size_t n = b->len - start;
        uint8_t head[11];
        wbuf hb;
        wbuf_init(&hb, head, sizeof head);
        wbuf_byte(&hb, WIRE_BLOB_INLINE);
        wbuf_varint(&hb, n);
        if (wbuf_reserve(b, hb.len) < 0)
            return -1;
        memmove(b->data + start + hb.len, b->data + start, n);
        memcpy(b->data + start, head, hb.len);
        b->len += hb.len;
    }
    return b->failed ? -1 : 0;
}

static void put_pystr(wbuf *b, PyObject *s)
{
    Py_ssize_t n = 0;
    const char *p = s ? PyUnicode_AsUTF8AndSize(s, &n) : NULL;
    if (!p) {
        PyErr_Clear();
        p = "";
        n = 0;
    }
    put_text(b, p, (size_t)n);
}

void ct_capture_exception(ct_state *st, wbuf *b, PyObject *exc)
{
    (void)st;
    PyObject *saved = ct_fetch_exc();
    PyTypeObject *tp = Py_TYPE(exc);
    PyObject *mod = PyObject_GetAttrString((PyObject *)tp, "__module__");
    PyObject *qual = PyObject_GetAttrString((PyObject *)tp, "__qualname__");
    PyErr_Clear();
    PyObject *full = NULL;
    if (mod && qual && PyUnicode_Check(mod) && PyUnicode_Check(qual))
        full = PyUnicode_FromFormat("%U.%U", mod, qual);
    else
        full = PyUnicode_FromString(tp->tp_name);
    PyObject *msg = PyObject_Str(exc);
    PyErr_Clear();
    if (msg && PyUnicode_GET_LENGTH(msg) > 2000) {
        PyObject *cut = PyUnicode_Substring(msg, 0, 2000);
        Py_SETREF(msg, cut);
    }
    wbuf_byte(b, WIRE_EXCEPTION);
    put_pystr(b, full);
    put_pystr(b, msg);
    /* frames, outermost first, at most 64 */
    PyObject *tb = PyException_GetTraceback(exc);
    PyObject *frames[64];
    int nf = 0;
    for (PyObject *t = tb; t && t != Py_None && nf < 64;) {
        frames[nf++] = t;
        PyObject *next = PyObject_GetAttrString(t, "tb_next");
        if (!next) {
            PyErr_Clear();
            break;
        }
        Py_DECREF(next); /* still owned by t */
        t = next;
    }
    wbuf_byte(b, WIRE_LIST);
    wbuf_varint(b, (uint64_t)nf);
    for (int i = 0; i < nf; i++) {
        PyObject *frame = PyObject_GetAttrString(frames[i], "tb_frame");
        PyObject *lineno = PyObject_GetAttrString(frames[i], "tb_lineno");
        PyCodeObject *code = frame ? PyFrame_GetCode((PyFrameObject *)frame) : NULL;
        PyErr_Clear();
        wbuf_byte(b, WIRE_TUPLE);
        wbuf_varint(b, 3);
        wbuf_byte(b, WIRE_STR);
        put_pystr(b, code ? code->co_filename : NULL);
        wire_int(b, lineno ? PyLong_AsLongLong(lineno) : 0);
        PyErr_Clear();
        wbuf_byte(b, WIRE_STR);
        put_pystr(b, code ? code->co_qualname : NULL);
        Py_XDECREF((PyObject *)code);
        Py_XDECREF(frame);
        Py_XDECREF(lineno);
    }
    Py_XDECREF(tb);
    Py_XDECREF(msg);
    Py_XDECREF(full);
    Py_XDECREF(mod);
    Py_XDECREF(qual);
    PyErr_Clear();
    ct_restore_exc(saved);
}
