/*
 * capture.c - Python values to tape values (the wire format of engine.h):
 * the built-in data types, containers, identity between values, and the
 * rules of a top-level value (its size limit, the blob store).
 *
 * Exact built-in types take C fast paths; every other value is left to
 * objects.c, which decides per type.  Nothing here raises into the caller:
 * a value that cannot be encoded becomes UNENCODABLE, one over the size
 * limit TRUNCATED, and both are counted.  Encoding stops as soon as the
 * limit is passed, and nesting is bounded, so a value costs at most its
 * budget whatever the size of the object graph behind it.
 *
 * Invariants: a failed encoding rewinds the buffer (and the memo) to where
 * the value started, so the output is always a sequence of whole values and
 * the memo describes exactly what was written; containers are read from
 * their own storage (PyList_GET_ITEM, PyDict_Next, set's C iterator), never
 * through a method a subclass may override; an exception raised by user
 * code (a codec, an opted-in pickle, sanitize) is cleared here after being
 * turned into a marker, except that a KeyboardInterrupt is raised again at
 * the program's next bytecode.
 */
#include "capture.h"

#include <signal.h>

/* ---- identity: the memo of a group of values ------------------------------ */

void ct_memo_release(ct_memo *m)
{
    for (size_t i = 0; i < m->n; i++)
        Py_DECREF(m->v[i].obj);
    if (m->v != m->inline_v)
        PyMem_Free(m->v);
    PyMem_Free(m->table);
    CT_MEMO_START(m);
}

static size_t memo_hash(const ct_memo *m, const PyObject *v)
{
    uintptr_t h = (uintptr_t)v >> 4;
    return (size_t)((h ^ (h >> 15)) * 0x9E3779B97F4A7C15ull) & (m->tcap - 1);
}

static void memo_index(ct_memo *m, size_t i)
{
    size_t j = memo_hash(m, m->v[i].obj);
    while (m->table[j])
        j = (j + 1) & (m->tcap - 1);
    m->table[j] = (uint32_t)(i + 1);
}

/* Rebuilds the hash index of the entries (tcap slots). */
static int memo_reindex(ct_memo *m, size_t tcap)
{
    uint32_t *t = PyMem_Calloc(tcap, sizeof *t);
    if (!t)
        return -1;
    PyMem_Free(m->table);
    m->table = t;
    m->tcap = tcap;
    for (size_t i = 0; i < m->n; i++)
        memo_index(m, i);
    return 0;
}

/* Forgets the indices from `next` on (a value that was rewound). */
static void memo_rollback(ct_memo *m, size_t next)
{
    if (next >= m->next)
        return;
    m->next = next;
    size_t keep = m->n;
    while (keep > 0 && m->v[keep - 1].index >= next)
        Py_DECREF(m->v[--keep].obj);
    if (keep == m->n)
        return;
    m->n = keep;
    if (m->table && memo_reindex(m, m->tcap) < 0) {
        PyMem_Free(m->table); /* no memory: fall back to scanning */
        m->table = NULL;
        m->tcap = 0;
    }
}

/* The entry of `v`, or NULL. */
static ct_memo_entry *memo_entry(ct_memo *m, const PyObject *v)
{
    if (!m->table) {
        for (size_t i = 0; i < m->n; i++)
            if (m->v[i].obj == v)
                return &m->v[i];
        return NULL;
    }
    for (size_t j = memo_hash(m, v); m->table[j]; j = (j + 1) & (m->tcap - 1))
        if (m->v[m->table[j] - 1].obj == v)
            return &m->v[m->table[j] - 1];
    return NULL;
}

int ct_memo_find(ct_capture *c, PyObject *v, size_t *index)
{
    ct_memo *m = c->memo;
    ct_memo_entry *e = m && m->n ? memo_entry(m, v) : NULL;
    if (e)
        *index = e->index;
    return e != NULL;
}

int ct_memo_shared(PyObject *v, int depth)
{
    /* below the top a value carries the temporary reference of the caller
     * and one of its container: two references mean it is seen only here */
    return depth == 0 || Py_REFCNT(v) > 2;
}

int ct_memo_add(ct_capture *c, PyObject *v, int open, size_t *index)
{
    ct_memo *m = c->memo;
    if (!m)
        return 0;
    *index = m->next++;
    if (!v)
        return 0; /* counted only: nothing can refer to it */
    if (m->n == m->cap) {
        size_t cap = 2 * m->cap;
        ct_memo_entry *grown = PyMem_Malloc(cap * sizeof(ct_memo_entry));
        if (!grown)
            return -1;
        memcpy(grown, m->v, m->n * sizeof(ct_memo_entry));
        if (m->v != m->inline_v)
            PyMem_Free(m->v);
        m->v = grown;
        m->cap = cap;
    }
    m->v[m->n].obj = Py_NewRef(v);
    m->v[m->n].index = *index;
    m->v[m->n].open = (uint8_t)open;
    m->n++;
    if (m->n > CT_MEMO_INLINE && m->n * 2 > m->tcap)
        return memo_reindex(m, m->tcap ? 2 * m->tcap : 64);
    if (m->table)
        memo_index(m, m->n - 1);
    return 0;
}

void ct_memo_close(ct_capture *c, size_t index)
{
    ct_memo *m = c->memo;
    for (size_t i = m ? m->n : 0; i > 0; i--) /* it is among the last added */
        if (m->v[i - 1].index == index) {
            m->v[i - 1].open = 0;
            return;
        }
}

int ct_put_ref(ct_capture *c, wbuf *b, size_t index)
{
    ct_memo *m = c->memo;
    for (size_t i = m->n; i > 0; i--) {
        const ct_memo_entry *e = &m->v[i - 1];
        if (e->index != index)
            continue;
        if (e->open) {
            ct_put_unencodable(c->st, b, Py_TYPE(e->obj)->tp_name,
                               "a cycle back into a value whose contents are built first");
            return 0;
        }
        break;
    }
    wbuf_byte(b, WIRE_REF);
    wbuf_varint(b, m->next - index);
    return 0;
}

/* ---- markers ------------------------------------------------------------ */

/* Turns the pending exception (cleared) into an UNENCODABLE marker for `v`.
 * A KeyboardInterrupt is the program's: it is raised again at its next
 * bytecode. */
static void unencodable_from_error(ct_state *st, wbuf *b, PyObject *v)
{
    char why[CT_PREVIEW_LIMIT + 1] = "";
    PyObject *exc = ct_fetch_exc();
    PyObject *text = exc ? PyObject_Str(exc) : NULL; /* checks signals: before re-arming */
    const char *msg = text ? PyUnicode_AsUTF8(text) : NULL;
    PyErr_Clear();
    snprintf(why, sizeof why, "%s: %s", exc ? Py_TYPE(exc)->tp_name : "error",
             msg ? msg : "cannot encode");
    int interrupted = exc && PyErr_GivenExceptionMatches(exc, PyExc_KeyboardInterrupt);
    Py_XDECREF(text);
    Py_XDECREF(exc);
    ct_put_unencodable(st, b, Py_TYPE(v)->tp_name, why);
    if (interrupted)
        PyErr_SetInterruptEx(SIGINT);
}

/* ---- built-in values ------------------------------------------------------ */

static int capture_at(ct_capture *c, wbuf *b, PyObject *v, int depth);

int ct_capture_nested(ct_capture *c, wbuf *b, PyObject *v, int depth)
{
    return capture_at(c, b, v, depth);
}

/* Room left under the limit of the top-level value being written. */
static Py_ssize_t room(const ct_capture *c, const wbuf *b)
{
    size_t used = b->len - c->top_start;
    return used >= (size_t)c->limit ? 0 : c->limit - (Py_ssize_t)used;
}

int ct_capture_builtin(ct_capture *c, wbuf *b, PyObject *v, uint8_t kind)
{
    if (kind == WIRE_KIND_INT) {
        int overflow = 0;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (!overflow) {
            wire_int(b, x);
            return b->failed ? -1 : 0;
        }
        size_t nbytes = (_PyLong_NumBits(v) + 8) / 8;
        if ((Py_ssize_t)nbytes > room(c, b))
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
    } else if (kind == WIRE_KIND_FLOAT) {
        wire_float(b, PyFloat_AS_DOUBLE(v));
    } else if (kind == WIRE_KIND_BYTES) {
        if (PyBytes_GET_SIZE(v) > room(c, b))
            return -4;
        wire_tagged_bytes(b, WIRE_BYTES, PyBytes_AS_STRING(v), (size_t)PyBytes_GET_SIZE(v));
    } else {
        if (PyUnicode_GET_LENGTH(v) > room(c, b))
            return -4;
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(v, &n);
        if (s) {
            if (n > room(c, b))
                return -4;
            wire_tagged_bytes(b, WIRE_STR, s, (size_t)n);
        } else {
            PyErr_Clear(); /* lone surrogates */
            PyObject *raw = PyUnicode_AsEncodedString(v, "utf-8", "surrogatepass");
            if (!raw)
                return -3;
            int over = PyBytes_GET_SIZE(raw) > room(c, b);
            if (!over)
                wire_tagged_bytes(b, WIRE_STR, PyBytes_AS_STRING(raw),
                                  (size_t)PyBytes_GET_SIZE(raw));
            Py_DECREF(raw);
            if (over)
                return -4;
        }
    }
    return b->failed ? -1 : 0;
}

/* The items of a set or frozenset, through set's own C iterator (never an
 * __iter__ a subclass defines). */
static int capture_set_items(ct_capture *c, wbuf *b, PyObject *v, Py_ssize_t n, int depth)
{
    PyObject *it = PySet_Type.tp_iter(v), *key;
    if (!it)
        return -3;
    Py_ssize_t seen = 0;
    int rc = 0;
    while (rc == 0 && seen < n && (key = PyIter_Next(it))) {
        rc = capture_at(c, b, key, depth + 1);
        Py_DECREF(key);
        seen++;
    }
    Py_DECREF(it);
    if (rc == 0 && PyErr_Occurred())
        rc = -3;
    return rc < 0 ? rc : seen == n ? 0 : -2;
}

int ct_capture_items(ct_capture *c, wbuf *b, PyObject *v, uint8_t tag, int depth)
{
    Py_ssize_t n = tag == WIRE_LIST    ? PyList_GET_SIZE(v)
                   : tag == WIRE_TUPLE ? PyTuple_GET_SIZE(v)
                   : tag == WIRE_DICT  ? PyDict_GET_SIZE(v)
                                       : PySet_GET_SIZE(v);
    if (n > room(c, b))
        return -4; /* every item takes a byte at least */
    wbuf_byte(b, tag);
    wbuf_varint(b, (uint64_t)n);
    if (tag == WIRE_LIST || tag == WIRE_TUPLE) {
        for (Py_ssize_t i = 0; i < n; i++) {
            if (tag == WIRE_LIST && i >= PyList_GET_SIZE(v))
                return -2; /* shrank while encoding */
            PyObject *item = tag == WIRE_LIST ? PyList_GET_ITEM(v, i) : PyTuple_GET_ITEM(v, i);
            if (ct_capture_small(b, item)) { /* runs no code: no reference needed */
                if (b->len - c->top_start > (size_t)c->limit)
                    return -4;
                continue;
            }
            Py_INCREF(item);
            int rc = capture_at(c, b, item, depth + 1);
            Py_DECREF(item);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    if (tag != WIRE_DICT)
        return capture_set_items(c, b, v, n, depth);
    Py_ssize_t pos = 0, seen = 0;
    PyObject *k, *val;
    while (seen < n && PyDict_Next(v, &pos, &k, &val)) {
        Py_INCREF(k);
        Py_INCREF(val);
        int rc = capture_at(c, b, k, depth + 1);
        if (rc == 0 && c->redact && ct_should_redact(c->st, k, c->redact))
            ct_put_redacted(c->st, b);
        else if (rc == 0)
            rc = capture_at(c, b, val, depth + 1);
        Py_DECREF(k);
        Py_DECREF(val);
        if (rc < 0)
            return rc;
        seen++;
    }
    return seen == n ? 0 : -2;
}

void ct_put_too_deep(ct_capture *c, wbuf *b, PyObject *v, int depth)
{
    /* the cut is only ever set above the depth budget */
    int cut = c->opaque_cut > 0 && depth >= c->opaque_cut;
    ct_put_unencodable(c->st, b, Py_TYPE(v)->tp_name,
                       cut ? "cut beside opaque state" : "nested too deeply");
}

/* An exact list, tuple, dict, set or frozenset. */
static int capture_container(ct_capture *c, wbuf *b, PyObject *v, uint8_t tag, int depth)
{
    if (ct_capture_too_deep(c, b, v, depth))
        return 0;
    size_t index;
    if (wire_memoized(tag)) {
        int shared = ct_memo_shared(v, depth);
        if (shared && ct_memo_find(c, v, &index))
            return ct_put_ref(c, b, index);
        if (ct_memo_add(c, shared ? v : NULL, 0, &index) < 0)
            return -1;
    }
    return ct_capture_items(c, b, v, tag, depth); /* depth bounds the C stack */
}

/* Returns 0, or one of the codes of capture.h. */
static int capture_at(ct_capture *c, wbuf *b, PyObject *v, int depth)
{
    if (b->failed)
        return -1;
    if (b->len - c->top_start > (size_t)c->limit)
        return -4;
    if (ct_capture_small(b, v))
        return 0;
    if (v == Py_None || v == Py_True || v == Py_False) {
        wbuf_byte(b, v == Py_None ? WIRE_NONE : v == Py_True ? WIRE_TRUE : WIRE_FALSE);
        return b->failed ? -1 : 0;
    }
    PyTypeObject *tp = Py_TYPE(v);
    if (tp == &PyLong_Type)
        return ct_capture_builtin(c, b, v, WIRE_KIND_INT);
    if (tp == &PyFloat_Type)
        return ct_capture_builtin(c, b, v, WIRE_KIND_FLOAT);
    if (tp == &PyUnicode_Type)
        return ct_capture_builtin(c, b, v, WIRE_KIND_STR);
    if (tp == &PyBytes_Type)
        return ct_capture_builtin(c, b, v, WIRE_KIND_BYTES);
    if (tp == &PyList_Type)
        return capture_container(c, b, v, WIRE_LIST, depth);
    if (tp == &PyTuple_Type)
        return capture_container(c, b, v, WIRE_TUPLE, depth);
    if (tp == &PyDict_Type)
        return capture_container(c, b, v, WIRE_DICT, depth);
    if (tp == &PySet_Type)
        return capture_container(c, b, v, WIRE_SET, depth);
    if (tp == &PyFrozenSet_Type)
        return capture_container(c, b, v, WIRE_FROZENSET, depth);
    size_t start = b->len, memo_n = c->memo ? c->memo->next : 0;
    int rc = ct_capture_object(c, b, v, depth);
    if (rc == -3) { /* this value only: a marker in its place */
        b->len = start;
        if (c->memo)
            memo_rollback(c->memo, memo_n);
        unencodable_from_error(c->st, b, v);
        rc = 0;
    }
    return rc;
}

/* ---- top-level values ------------------------------------------------------ */

int ct_capture_value(ct_capture *c, wbuf *b, PyObject *v)
{
    return ct_capture_small(b, v) ? 0 : ct_capture_other(c, b, v);
}

/* The size of `v` for a TRUNCATED marker written after encoding stopped at
 * `size` bytes: at least the length of a str or bytes. */
static size_t truncated_size(PyObject *v, size_t size)
{
    Py_ssize_t n = -1;
    if (PyUnicode_Check(v))
        n = PyUnicode_GET_LENGTH(v);
    else if (PyBytes_Check(v))
        n = PyBytes_GET_SIZE(v);
    else if (PyByteArray_Check(v))
        n = PyByteArray_GET_SIZE(v);
    return n > (Py_ssize_t)size ? (size_t)n : size;
}

/* A TRUNCATED marker for `v`: its type and `size`, the bytes its encoding
 * took when it stopped (0: not measured). */
static void put_truncated(ct_state *st, wbuf *b, PyObject *v, size_t size)
{
    const char *tname = Py_TYPE(v)->tp_name;
    wbuf_byte(b, WIRE_TRUNCATED);
    wbuf_varint(b, strlen(tname));
    wbuf_put(b, tname, strlen(tname));
    wbuf_varint(b, size);
    st->sink.counters[CT_TRUNCATED]++;
    st->sink.counters_dirty = 1;
}

int ct_capture_other(ct_capture *c, wbuf *b, PyObject *v)
{
    ct_memo local, *memo = c->memo;
    if (!memo) {
        CT_MEMO_START(&local);
        c->memo = &local;
    }
    size_t start = b->len, memo_n = c->memo->next;
    c->top_start = start;
    const ct_typecache *tc = &c->st->objects.types;
    const ct_typeinfo *table = tc->v;
    ct_typeinfo *entry = ct_over_budget_entry(c, v);
    if (ct_over_budget_skip(entry)) {
        put_truncated(c->st, b, v, 0); /* not measured: its class's last values were over */
        goto done;
    }
    int rc = capture_at(c, b, v, 0);
    if (!entry || tc->v != table) /* the capture made the entry, or grew the cache */
        entry = ct_over_budget_entry(c, v);
    if (rc == 0 || rc == -4)
        ct_over_budget_note(entry, rc == -4 || b->len - start > (size_t)c->limit);
    if (rc == -2 || rc == -3) {
        b->len = start;
        memo_rollback(c->memo, memo_n);
        if (rc == -2)
            ct_put_unencodable(c->st, b, Py_TYPE(v)->tp_name,
                               "container changed size while being recorded");
        else
            unencodable_from_error(c->st, b, v);
    } else if (rc == -4 || (rc == 0 && b->len - start > (size_t)c->limit)) {
        size_t size = truncated_size(v, b->len - start);
        PyErr_Clear();
        b->len = start;
        memo_rollback(c->memo, memo_n);
        put_truncated(c->st, b, v, size);
    } else if (rc == 0 && c->top && b->len - start >= CT_BLOB_MIN) {
        /* Large value: let the writer store it once by content. */
        size_t n = b->len - start;
        uint8_t head[11];
        wbuf hb;
        wbuf_init(&hb, head, sizeof head);
        wbuf_byte(&hb, WIRE_BLOB_INLINE);
        wbuf_varint(&hb, n);
        if (wbuf_reserve(b, hb.len) == 0) {
            memmove(b->data + start + hb.len, b->data + start, n);
            memcpy(b->data + start, head, hb.len);
            b->len += hb.len;
            c->blobbed = 1; /* the record says so: REC_HAS_BLOBS */
        }
    }
done:
    if (!memo) {
        ct_memo_free(&local);
        c->memo = NULL;
    }
    return b->failed ? -1 : 0;
}

int ct_capture_sanitized(ct_capture *c, wbuf *b, PyObject *sanitize, PyObject *name, PyObject *v)
{
    PyObject *ret = name ? NULL : PyUnicode_FromString("return");
    PyObject *clean =
        name || ret ? PyObject_CallFunctionObjArgs(sanitize, name ? name : ret, v, NULL) : NULL;
    Py_XDECREF(ret);
    if (clean) {
        int rc = ct_capture_value(c, b, clean);
        Py_DECREF(clean);
        return rc;
    }
    /* not the exception's message: a sanitizer may put the value in it */
    char why[128];
    PyObject *exc = ct_fetch_exc();
    snprintf(why, sizeof why, "sanitize raised %.100s", exc ? Py_TYPE(exc)->tp_name : "an error");
    int interrupted = exc && PyErr_GivenExceptionMatches(exc, PyExc_KeyboardInterrupt);
    Py_XDECREF(exc);
    ct_put_unencodable(c->st, b, Py_TYPE(v)->tp_name, why);
    if (interrupted)
        PyErr_SetInterruptEx(SIGINT);
    return b->failed ? -1 : 0;
}

void ct_put_text(wbuf *b, PyObject *s)
{
    Py_ssize_t n = 0;
    const char *p = (s && PyUnicode_Check(s)) ? PyUnicode_AsUTF8AndSize(s, &n) : NULL;
    if (!p) {
        PyErr_Clear();
        p = "";
        n = 0;
    }
    wbuf_varint(b, (uint64_t)n);
    wbuf_put(b, p, (size_t)n);
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
    ct_put_text(b, full);
    ct_put_text(b, msg);
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
        ct_put_text(b, code ? code->co_filename : NULL);
        wire_int(b, lineno ? PyLong_AsLongLong(lineno) : 0);
        PyErr_Clear();
        wbuf_byte(b, WIRE_STR);
        ct_put_text(b, code ? code->co_qualname : NULL);
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
