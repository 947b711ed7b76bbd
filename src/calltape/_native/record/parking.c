/*
 * parking.c - where calltape.monitor keeps the calls of suspended
 * generators and coroutines between a yield and the next resume.
 *
 * A table in C, open addressing with linear probing, keyed by the hash of
 * the generator object (the default object hash, a rotation of its
 * address: unique among live objects).  A generator's slot is made at its first yield and lives
 * until the generator finishes (ct_park_forget) or is freed (its weak reference's callback,
 * ct_park_gone), so that a generator yielding a million times makes one slot, one weak reference
 * and one byte buffer, reused by each yield, instead of objects per yield.
 *
 * Invariants: a slot is EMPTY, DEAD (a tombstone, so that probing passes
 * it) or LIVE; a LIVE slot owns `wr` (a weak reference to its generator
 * whose hash was taken while the generator lived, so that the callback can
 * find the slot once the referent is gone) and `bytes` (malloc'd, `cap`
 * bytes, of which `len` are the parked entry while `parked` is 1).
 * Deleting never moves slots, so a slot pointer stays valid until the next
 * insertion; nothing in here calls Python code, except creating a weak
 * reference, which is done before a slot is taken.  All calls hold the GIL.
 */
#include "recorder.h"

enum { PARK_EMPTY = 0, PARK_LIVE = 1, PARK_DEAD = 2 };

/* The key of `gen`: what the default object hash gives (ct_park_put
 * checks that the generator's own hash agrees, so that the weak
 * reference's hash, all that is left once it is gone, finds the slot). */
static inline Py_hash_t park_key(const PyObject *gen)
{
    size_t y = (size_t)gen;
    y = (y >> 4) | (y << (8 * sizeof y - 4));
    Py_hash_t h = (Py_hash_t)y;
    return h == -1 ? -2 : h;
}

static size_t park_mix(Py_hash_t h)
{
    uint64_t x = (uint64_t)h;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return (size_t)x;
}

/* The LIVE slot of hash `h`, or NULL. */
static ct_park_slot *park_lookup(const ct_parking *p, Py_hash_t h)
{
    if (!p->cap)
        return NULL;
    size_t mask = p->cap - 1;
    for (size_t i = park_mix(h) & mask;; i = (i + 1) & mask) {
        ct_park_slot *s = &p->v[i];
        if (s->state == PARK_EMPTY)
            return NULL;
        if (s->state == PARK_LIVE && s->hash == h)
            return s;
    }
}

/* Grows (or cleans of tombstones) the table so that one more slot fits
 * with the load below 1/2.  0, or -1 when out of memory (no exception). */
static int park_reserve(ct_parking *p)
{
    if ((p->used + 1) * 2 <= p->cap)
        return 0;
    size_t cap = p->cap ? p->cap : 16;
    while ((p->live + 1) * 4 > cap)
        cap *= 2;
    ct_park_slot *v = calloc(cap, sizeof *v);
    if (!v)
        return -1;
    for (size_t k = 0; k < p->cap; k++) {
        if (p->v[k].state != PARK_LIVE)
            continue;
        size_t i = park_mix(p->v[k].hash) & (cap - 1);
        while (v[i].state != PARK_EMPTY)
            i = (i + 1) & (cap - 1);
        v[i] = p->v[k];
    }
    free(p->v);
    p->v = v;
    p->cap = cap;
    p->used = p->live;
    return 0;
}

/* Empties slot `s` and gives its weak reference to the caller. */
static PyObject *park_remove(ct_parking *p, ct_park_slot *s)
{
    PyObject *wr = s->wr;
    if (s->parked)
        p->nparked--;
    free(s->bytes);
    memset(s, 0, sizeof *s);
    s->state = PARK_DEAD;
    p->live--;
    return wr;
}

/* Parks `n1` + `n2` bytes (`b1` then `b2`) under generator `gen`, with
 * `callback` (borrowed) called when the generator is freed while parked.
 * Returns 0, or -1 with an exception set (the entry is not parked). */
int ct_park_put(ct_parking *p, PyObject *gen, PyObject *callback, const void *b1, size_t n1,
                const void *b2, size_t n2)
{
    Py_hash_t h = park_key(gen);
    ct_park_slot *s = park_lookup(p, h);
    if (!s) {
        PyObject *wr = PyWeakref_NewRef(gen, callback); /* may run a collection */
        if (!wr)
            return -1;
        Py_hash_t wh = PyObject_Hash(wr);
        if (wh != h || park_reserve(p) < 0) {
            Py_DECREF(wr);
            if (wh == h)
                PyErr_NoMemory();
            else if (wh != -1)
                PyErr_SetString(PyExc_TypeError, "a generator with a hash of its own");
            return -1;
        }
        size_t mask = p->cap - 1, i = park_mix(h) & mask;
        while (p->v[i].state == PARK_LIVE)
            i = (i + 1) & mask;
        s = &p->v[i];
        if (s->state == PARK_EMPTY)
            p->used++;
        memset(s, 0, sizeof *s);
        s->state = PARK_LIVE;
        s->hash = h;
        s->wr = wr;
        p->live++;
    }
    size_t n = n1 + n2;
    if (n > s->cap || !s->bytes) {
        uint8_t *b = realloc(s->bytes, n ? n : 1);
        if (!b) {
            PyErr_NoMemory();
            return -1;
        }
        s->bytes = b;
        s->cap = n ? n : 1;
    }
    if (n1)
        memcpy(s->bytes, b1, n1);
    if (n2)
        memcpy(s->bytes + n1, b2, n2);
    s->len = n;
    if (!s->parked)
        p->nparked++;
    s->parked = 1;
    return 0;
}

/* The entry parked under `gen` (borrowed: valid until the next call on
 * `p`), which is no longer parked, and its length in *len; NULL when
 * nothing is parked under it.  Never raises. */
const uint8_t *ct_park_take(ct_parking *p, PyObject *gen, size_t *len)
{
    if (!p->nparked)
        return NULL;
    ct_park_slot *s = park_lookup(p, park_key(gen));
    if (!s || !s->parked)
        return NULL;
    s->parked = 0;
    p->nparked--;
    *len = s->len;
    return s->bytes;
}

/* 1 when an entry is parked under `gen`, else 0.  Never raises. */
int ct_park_has(const ct_parking *p, PyObject *gen)
{
    if (!p->nparked)
        return 0;
    const ct_park_slot *s = park_lookup(p, park_key(gen));
    return s && s->parked;
}

/* Generator `gen` finished: its slot, if any, is freed.  Never raises. */
void ct_park_forget(ct_parking *p, PyObject *gen)
{
    if (!p->live)
        return;
    ct_park_slot *s = park_lookup(p, park_key(gen));
    if (s)
        Py_DECREF(park_remove(p, s));
}

/* The generator of weak reference `wr` is gone: its slot is freed.  When
 * it was parked, returns its entry (malloc'd, the caller frees it) and the
 * length in *len; else NULL.  Never raises. */
uint8_t *ct_park_gone(ct_parking *p, PyObject *wr, size_t *len)
{
    Py_hash_t h = PyObject_Hash(wr); /* kept by the weak reference */
    ct_park_slot *s = h == -1 ? NULL : park_lookup(p, h);
    PyErr_Clear();
    if (!s || s->wr != wr)
        return NULL;
    uint8_t *bytes = NULL;
    if (s->parked) {
        bytes = s->bytes;
        *len = s->len;
        s->bytes = NULL;
    }
    Py_DECREF(park_remove(p, s));
    return bytes;
}

/* Calls `fn(ctx, entry, len)` for each parked entry, then empties the
 * table.  The weak references are released after the walk. */
void ct_park_drain(ct_parking *p, void (*fn)(void *, const uint8_t *, size_t), void *ctx)
{
    ct_park_slot *v = p->v;
    size_t cap = p->cap;
    memset(p, 0, sizeof *p);
    for (size_t i = 0; i < cap; i++) {
        if (v[i].state != PARK_LIVE)
            continue;
        if (v[i].parked && fn)
            fn(ctx, v[i].bytes, v[i].len);
        free(v[i].bytes);
        Py_DECREF(v[i].wr);
    }
    free(v);
}

/* Visits the weak references the table owns (GC support). */
int ct_park_traverse(const ct_parking *p, visitproc visit, void *arg)
{
    for (size_t i = 0; i < p->cap; i++)
        if (p->v[i].state == PARK_LIVE)
            Py_VISIT(p->v[i].wr);
    return 0;
}
