/*
 * inplace311.c - CPython 3.11 only: references that run-time probes
 * (patch.c) replace in place, inside the interpreter's own structures:
 *
 *   - the local variables of every frame on every thread's stack, and of
 *     the frame of a suspended generator, coroutine or async generator.
 *     3.11 has no public way to change a running frame's locals other than
 *     its f_locals dict and PyFrame_LocalsToFast, and that dict would stay
 *     on the frame holding every local (an object the function `del`s would
 *     live until the frame ends, and a dict the program holds from locals()
 *     would change), so the slots are written through the frame layout of
 *     internal/pycore_frame.h;
 *   - dict keys and set members: the entry's key is swapped where it is
 *     (internal/pycore_dict.h for a dict, cpython/setobject.h for a set), so
 *     the order, the positions an iteration in progress walks, and every
 *     other entry stay as they are, and no __eq__ runs.  Only a replacement
 *     with the stored hash is put in (a ProbeWrapper has its function's, a
 *     copied tuple its original's; a copied staticmethod, which hashes by
 *     identity, is left out).
 *
 * These layouts do not change within 3.11.  Invariants: only a slot or an
 * entry holding exactly an object `find` replaces is written; a frame's
 * function, globals and value stack are never touched; the caller holds
 * references to the objects replaced (no dealloc happens here).  `find` must
 * neither allocate nor run Python code: the walk over other threads' frames
 * holds no reference to them, which is safe only while this thread keeps the
 * GIL and runs no Python code.
 */
#include "probes.h"

#if PY_VERSION_HEX < 0x030C0000

#define Py_BUILD_CORE 1
#include <internal/pycore_dict.h>
#include <internal/pycore_frame.h>
#undef Py_BUILD_CORE

/* ---- frames ------------------------------------------------------------------- */

/* The local slots of `f` that `find` replaces: swapped unless `dry`; the
 * number of them. */
static Py_ssize_t swap_frame(_PyInterpreterFrame *f, ct_frame_find find, const void *arg, int dry)
{
    Py_ssize_t n = 0;
    PyObject **slots = f->localsplus;
    for (int i = 0; i < f->f_code->co_nlocalsplus; i++) {
        PyObject *old = slots[i], *new = old ? find(arg, old) : NULL;
        if (!new)
            continue;
        n++;
        if (dry)
            continue;
        slots[i] = Py_NewRef(new);
        Py_DECREF(old);
    }
    return n;
}

/* See probes.h. */
Py_ssize_t ct_frames_swap_running(ct_frame_find find, const void *arg, int dry)
{
    Py_ssize_t n = 0;
    PyInterpreterState *interp = PyInterpreterState_Get();
    for (PyThreadState *t = PyInterpreterState_ThreadHead(interp); t; t = PyThreadState_Next(t))
        for (_PyInterpreterFrame *f = t->cframe ? t->cframe->current_frame : NULL; f;
             f = f->previous)
            n += swap_frame(f, find, arg, dry);
    return n;
}

/* See probes.h. */
Py_ssize_t ct_frames_swap_generator(PyObject *gen, ct_frame_find find, const void *arg, int dry)
{
    if (!PyGen_Check(gen) && !PyCoro_CheckExact(gen) && !PyAsyncGen_CheckExact(gen))
        return 0;
    /* the three share the generator's head: its frame state and frame */
    PyGenObject *g = (PyGenObject *)gen;
    if (g->gi_frame_state >= FRAME_COMPLETED)
        return 0;
    return swap_frame((_PyInterpreterFrame *)g->gi_iframe, find, arg, dry);
}

/* ---- dict keys and set members ------------------------------------------------ */

/* One entry to swap: at `index`, `old` (borrowed from the table) and its
 * stored hash. */
typedef struct keyed {
    Py_ssize_t index;
    PyObject *old;
    Py_hash_t hash;
} keyed;

/* The entries of a table, seen the same way for a dict and a set. */
typedef struct table_view {
    PyObject **(*key_at)(PyObject *o, Py_ssize_t i, Py_hash_t *hash);
    Py_ssize_t (*size)(PyObject *o);
} table_view;

static Py_ssize_t dict_size(PyObject *d)
{
    const PyDictObject *mp = (const PyDictObject *)d;
    /* str keys only, or a split table: never a function */
    return DK_IS_UNICODE(mp->ma_keys) || mp->ma_values ? 0 : mp->ma_keys->dk_nentries;
}

static PyObject **dict_key_at(PyObject *d, Py_ssize_t i, Py_hash_t *hash)
{
    PyDictKeyEntry *ep = &DK_ENTRIES(((PyDictObject *)d)->ma_keys)[i];
    *hash = ep->me_hash;
    return ep->me_value ? &ep->me_key : NULL;
}

static Py_ssize_t set_size(PyObject *s)
{
    return ((PySetObject *)s)->mask + 1;
}

static PyObject **set_key_at(PyObject *s, Py_ssize_t i, Py_hash_t *hash)
{
    setentry *e = &((PySetObject *)s)->table[i];
    *hash = e->hash;
    return &e->key;
}

/* Swaps the keys of `o` seen through `view` that `find` replaces by a
 * replacement with the same hash, or with `dry` only counts the keys `find`
 * replaces (nothing allocated, no code run).  The candidates are gathered
 * first and their replacements hashed (which may run Python code and change
 * `o`), then each is swapped where it still is.  Returns the number, or -1
 * with an exception set. */
static Py_ssize_t swap_keys_in(PyObject *o, const table_view *view, ct_frame_find find,
                               const void *arg, int dry)
{
    keyed *v = NULL;
    Py_ssize_t n = 0, cap = 0, swapped = 0;
    Py_hash_t hash;
    for (Py_ssize_t i = 0; i < view->size(o); i++) {
        PyObject **key = view->key_at(o, i, &hash);
        if (!key || !*key || !find(arg, *key))
            continue;
        if (dry) {
            n++;
            continue;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 8;
            keyed *grown = PyMem_Realloc(v, (size_t)cap * sizeof *v);
            if (!grown) {
                PyMem_Free(v);
                PyErr_NoMemory();
                return -1;
            }
            v = grown;
        }
        v[n++] = (keyed){i, *key, hash};
    }
    if (dry)
        return n;
    for (Py_ssize_t k = 0; k < n; k++) { /* the caller holds each old: they stay */
        Py_hash_t h = PyObject_Hash(find(arg, v[k].old));
        if (h == -1 && PyErr_Occurred()) {
            PyMem_Free(v);
            return -1;
        }
        v[k].hash = h == v[k].hash ? h : -1; /* -1: left out (no entry stores it) */
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject **key = v[k].index < view->size(o) ? view->key_at(o, v[k].index, &hash) : NULL;
        if (v[k].hash == -1 || !key || *key != v[k].old || hash != v[k].hash)
            continue;
        *key = Py_NewRef(find(arg, v[k].old));
        Py_DECREF(v[k].old);
        swapped++;
    }
    PyMem_Free(v);
    if (swapped && PyDict_Check(o))
        ((PyDictObject *)o)->ma_keys->dk_version = 0; /* its keys changed */
    return swapped;
}

/* See probes.h. */
Py_ssize_t ct_keys_swap(PyObject *o, ct_frame_find find, const void *arg, int dry)
{
    static const table_view dict_view = {dict_key_at, dict_size};
    static const table_view set_view = {set_key_at, set_size};
    if (PyODict_Check(o)) /* its own list of nodes holds the keys too */
        return 0;
    if (PyDict_Check(o))
        return swap_keys_in(o, &dict_view, find, arg, dry);
    if (PySet_Check(o))
        return swap_keys_in(o, &set_view, find, arg, dry);
    return 0;
}

#endif
