/*
 * patch.c - run-time probes on CPython 3.11, which has no sys.monitoring:
 * the patching of every reference to the functions running a probed code
 * object that the collector can find (the objects gc.get_referrers would
 * list) or that a thread's frame holds, by a ProbeWrapper (wrapper.c), which
 * fires the probe's instruments and has its function's hash and ==:
 *
 *   - in place: values and keys of dicts (module globals, `from m import f
 *     as g` included, class __dict__s through setattr on the class, instance
 *     attributes (an instance keeping them without a dict gets one),
 *     registry dicts, a partial's keywords, the __wrapped__ of
 *     functools.wraps; keys where they are, but an OrderedDict's); items
 *     of lists and list subclasses (a hash one keeps of
 *     its items, as functools' _HashedSeq does, stays true); members of sets;
 *     closure cells (the `func` a decorator's wrapper calls); the func or
 *     args of functools.partial objects (through partial's own __reduce__ and
 *     __setstate__, so the partial, its args tuple, keywords and __dict__ stay
 *     the same objects); a function's __defaults__ tuple (replaced, below);
 *     local variables of the frames on every thread's stack and of suspended
 *     generators and coroutines (inplace311.c, which swaps dict keys and
 *     set members too);
 *   - by a copy holding the wrapper, put wherever the original is held
 *     (recursively, PATCH_DEPTH deep): classmethod, staticmethod and
 *     property objects; tuples, frozensets and their subclasses (named
 *     tuples; they may be dict keys, hashed, or shared: never changed in
 *     place); bound methods (one changed in place would change for every
 *     holder of it at once);
 *   - @calltape.record: the Recorder calls the wrapper (Recorder.probe).
 *
 * Not replaced: references held only by C objects the collector cannot see
 * into, and a copy's holders beyond PATCH_DEPTH.  The heap is walked once
 * per depth: the objects replaced at one depth are a batch (sorted by
 * address), and every tracked object is traversed once with a binary search
 * per reference, so 4,000 tuples holding the function cost one walk.
 *
 * Invariants: h->patches lists (kind, where, key, old, new, owner) for
 * each replacement, in order; unpatching walks it backwards and puts `old`
 * back only where `new` still is (a list item that moved is found where it
 * is now), then puts the originals back in every running frame, including
 * frames that took a wrapper after the patch; the patcher's own lists (the
 * referrers being walked, h->patches) are never patched; a wrapper of a
 * stopped hook calls its function and nothing else.
 */
#include "probes.h"

#if PY_VERSION_HEX < 0x030C0000

#include "record/recorder.h"

/* ---- finding and replacing references ---------------------------------------- */

/* What a note in h->patches says was replaced.  The first six keep the
 * object replaced and its replacement in the note; the last three keep the
 * pairs of their batch (a tuple old, new, old, new ...) in its key. */
enum {
    PATCH_DICT,
    PATCH_CELL,
    PATCH_RECORDER,
    PATCH_LIST,
    PATCH_PARTIAL,
    PATCH_DEFAULTS,
    PATCH_KEYS,      /* dict keys or set members, swapped where they are */
    PATCH_GENERATOR, /* locals of a generator's frame; where: a weak reference */
    PATCH_FRAMES,    /* locals of frames on the threads' stacks */
};

/* The references are replaced this many copies deep at most (a property
 * holding a staticmethod, a tuple in a tuple ...). */
#define PATCH_DEPTH 4

/* One object to replace, `old`, and what replaces it, `new`. */
typedef struct patch_pair {
    PyObject *old, *new;
} patch_pair;

/* The objects replaced at one depth, whose referrers are found in one walk
 * of the heap (so many tuples holding the function cost one walk, not one
 * each): sorted by `old` for batch_find; `keep` (a list) holds them. */
typedef struct batch {
    patch_pair *v;
    Py_ssize_t n, cap;
    PyObject *keep;
} batch;

typedef struct patcher {
    ct_state *st;
    ProbeHook *h;
    PyObject *referrers; /* gc.get_referrers */
    PyObject *objects;   /* gc.get_objects */
    PyObject *patches;   /* h->patches */
    PyObject *partial;   /* functools.partial */
    /* the patcher's own containers holding what is being replaced, never
     * patched: the functions' list, each depth's batch->keep, the referrers
     * walked now */
    PyObject *mine[PATCH_DEPTH + 4];
    int nmine;
} patcher;

static int batch_add(batch *b, PyObject *old, PyObject *new)
{
    if (!b->keep && !(b->keep = PyList_New(0)))
        return -1;
    if (PyList_Append(b->keep, old) < 0 || PyList_Append(b->keep, new) < 0)
        return -1;
    if (b->n == b->cap) {
        Py_ssize_t cap = b->cap ? 2 * b->cap : 8;
        patch_pair *v = PyMem_Realloc(b->v, (size_t)cap * sizeof *v);
        if (!v) {
            PyErr_NoMemory();
            return -1;
        }
        b->v = v;
        b->cap = cap;
    }
    b->v[b->n++] = (patch_pair){old, new};
    return 0;
}

static void batch_clear(batch *b)
{
    PyMem_Free(b->v);
    b->v = NULL;
    b->n = b->cap = 0;
    Py_CLEAR(b->keep);
}

static int pair_cmp(const void *x, const void *y)
{
    uintptr_t a = (uintptr_t)((const patch_pair *)x)->old;
    uintptr_t b = (uintptr_t)((const patch_pair *)y)->old;
    return a < b ? -1 : a > b;
}

/* What replaces `o` in `b` (borrowed), or NULL when `o` is not replaced. */
static PyObject *batch_find(const batch *b, PyObject *o)
{
    if (b->n <= 1)
        return b->n && b->v[0].old == o ? b->v[0].new : NULL;
    patch_pair key = {o, NULL};
    const patch_pair *hit = bsearch(&key, b->v, (size_t)b->n, sizeof *b->v, pair_cmp);
    return hit ? hit->new : NULL;
}

/* batch_find for inplace311.c. */
static PyObject *find_in_batch(const void *b, PyObject *o)
{
    return batch_find((const batch *)b, o);
}

/* For unpatching, where `b` maps each replacement to what it replaced: the
 * original behind `o` (a copy may have replaced a copy, one depth further),
 * or NULL when `o` replaced nothing. */
static PyObject *find_origin(const void *b, PyObject *o)
{
    const batch *back = (const batch *)b;
    PyObject *old = batch_find(back, o), *older;
    /* a chain is as long as the functions copied into one holder: at most
     * every pair of the batch */
    for (Py_ssize_t i = 0; old && i < back->n && (older = batch_find(back, old)); i++)
        old = older;
    return old;
}

static int note(patcher *p, int kind, PyObject *where, PyObject *key, PyObject *old, PyObject *new,
                PyObject *owner)
{
    PyObject *t = Py_BuildValue("(iOOOOO)", kind, where, key ? key : Py_None, old, new,
                                owner ? owner : Py_None);
    if (!t)
        return -1;
    /* out of the collector's lists, so that no later walk (this hook's or
     * another's) finds the note as a holder of what it keeps */
    PyObject_GC_UnTrack(t);
    int r = PyList_Append(p->patches, t);
    Py_DECREF(t);
    return r;
}

static int is_mine(const patcher *p, PyObject *o)
{
    if (o == p->patches)
        return 1;
    for (int i = 0; i < p->nmine; i++)
        if (p->mine[i] == o)
            return 1;
    return 0;
}

/* The class whose __dict__ `d` is (a new reference), or NULL (and no
 * exception) when it is no class's: only dicts holding __module__ are
 * looked for (a class's always does, a module's or an instance's seldom). */
static PyObject *dict_owner(patcher *p, PyObject *d)
{
    PyObject *k = PyUnicode_FromString("__module__");
    int has = k ? PyDict_Contains(d, k) : -1;
    Py_XDECREF(k);
    if (has <= 0)
        return NULL;
    PyObject *refs = PyObject_CallOneArg(p->referrers, d), *owner = NULL;
    for (Py_ssize_t i = 0; refs && i < PyList_GET_SIZE(refs) && !owner; i++) {
        PyObject *r = PyList_GET_ITEM(refs, i);
        if (PyType_Check(r) && ((PyTypeObject *)r)->tp_dict == d)
            owner = Py_NewRef(r);
    }
    Py_XDECREF(refs);
    return owner;
}

/* Notes a replacement of kind `kind` (PATCH_KEYS, PATCH_GENERATOR,
 * PATCH_FRAMES) in `where`, keeping the pairs of `b`. */
static int note_pairs(patcher *p, int kind, PyObject *where, const batch *b)
{
    PyObject *pairs = PyList_AsTuple(b->keep);
    if (!pairs)
        return -1;
    PyObject_GC_UnTrack(pairs); /* as the note: no walk finds it */
    int r = note(p, kind, where, pairs, Py_None, Py_None, NULL);
    Py_DECREF(pairs);
    return r;
}

/* inplace311.c's swaps, one shape for all: `o` (ignored for the threads'
 * frames), counting when `dry`. */
typedef Py_ssize_t (*inplace_swap)(PyObject *o, ct_frame_find find, const void *arg, int dry);

static Py_ssize_t swap_running(PyObject *unused, ct_frame_find find, const void *arg, int dry)
{
    (void)unused;
    return ct_frames_swap_running(find, arg, dry);
}

/* Replaces what `b` replaces inside `o` where it is, through `swap`:
 * counted first (nothing changes), noted as `kind` (where: `o`, a weak
 * reference to a generator, which the note must not keep, or None for the
 * threads' frames), then swapped, so that nothing is swapped unnoted. */
static int swap_noted(patcher *p, inplace_swap swap, PyObject *o, int kind, const batch *b)
{
    if (!swap(o, find_in_batch, b, 1))
        return 0;
    PyObject *where = kind == PATCH_GENERATOR ? PyWeakref_NewRef(o, NULL)
                      : kind == PATCH_FRAMES  ? Py_NewRef(Py_None)
                                              : Py_NewRef(o);
    int r = where ? note_pairs(p, kind, where, b) : -1;
    Py_XDECREF(where);
    return r < 0 || swap(o, find_in_batch, b, 0) < 0 ? -1 : 0;
}

static int replace_in_dict(patcher *p, PyObject *d, const batch *b)
{
    PyObject *keys = NULL, *k, *v, *owner = NULL;
    Py_ssize_t pos = 0;
    if (swap_noted(p, ct_keys_swap, d, PATCH_KEYS, b) < 0 || !(keys = PyList_New(0)))
        return -1;
    while (PyDict_Next(d, &pos, &k, &v))
        if (batch_find(b, v) && PyList_Append(keys, k) < 0)
            goto error;
    if (PyList_GET_SIZE(keys) && !(owner = dict_owner(p, d)) && PyErr_Occurred())
        goto error;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(keys); i++) {
        k = PyList_GET_ITEM(keys, i);
        PyObject *old = PyDict_GetItemWithError(d, k), *new = old ? batch_find(b, old) : NULL;
        if (!new &&PyErr_Occurred())
            goto error;
        if (!new) /* changed meanwhile (a finalizer) */
            continue;
        if (note(p, PATCH_DICT, d, k, old, new, owner) < 0)
            goto error;
        /* a class's through setattr: its method cache and slots follow */
        if ((owner ? PyObject_SetAttr(owner, k, new) : PyDict_SetItem(d, k, new)) < 0)
            goto error;
    }
    Py_XDECREF(owner);
    Py_DECREF(keys);
    return 0;
error:
    Py_XDECREF(owner);
    Py_DECREF(keys);
    return -1;
}

/* The items of list `l` that are replaced: the new ones in their place
 * (the list is the same object; each index is noted). */
static int replace_in_list(patcher *p, PyObject *l, const batch *b)
{
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(l); i++) {
        PyObject *old = PyList_GET_ITEM(l, i), *new = batch_find(b, old);
        if (!new)
            continue;
        PyObject *key = PyLong_FromSsize_t(i);
        int r = key ? note(p, PATCH_LIST, l, key, old, new, NULL) : -1;
        Py_XDECREF(key);
        if (r < 0)
            return -1;
        /* a finalizer run by the allocations above may have changed it */
        if (i < PyList_GET_SIZE(l) && PyList_GET_ITEM(l, i) == old &&
            PyList_SetItem(l, i, Py_NewRef(new)) < 0)
            return -1;
    }
    return 0;
}

/* The state (func, args, keywords, __dict__ or None) of partial `part`,
 * from functools.partial's own __reduce__ (a new reference), or NULL with
 * an exception set. */
static PyObject *partial_state(PyObject *type, PyObject *part)
{
    PyObject *red = PyObject_CallMethod(type, "__reduce__", "O", part), *state = NULL;
    if (!red)
        return NULL;
    if (PyTuple_Check(red) && PyTuple_GET_SIZE(red) == 3 &&
        PyTuple_Check(PyTuple_GET_ITEM(red, 2)) && PyTuple_GET_SIZE(PyTuple_GET_ITEM(red, 2)) == 4)
        state = Py_NewRef(PyTuple_GET_ITEM(red, 2));
    else
        PyErr_Format(PyExc_TypeError, "unexpected state of %R", part);
    Py_DECREF(red);
    return state;
}

/* Sets item `which` (0: func, 1: args) of partial `part`'s state to
 * `value` in place, through functools.partial's own __setstate__: the
 * partial, its args tuple, its keywords dict and its __dict__ stay the same
 * objects.  Returns 0, or -1 with an exception set. */
static int partial_set(PyObject *type, PyObject *part, int which, PyObject *value)
{
    PyObject *state = partial_state(type, part), *copy = NULL, *r = NULL;
    if (!state || !(copy = PyTuple_New(4)))
        goto done;
    for (Py_ssize_t i = 0; i < 4; i++)
        PyTuple_SET_ITEM(copy, i, Py_NewRef(i == which ? value : PyTuple_GET_ITEM(state, i)));
    r = PyObject_CallMethod(type, "__setstate__", "OO", part, copy);
done:
    Py_XDECREF(state);
    Py_XDECREF(copy);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* A functools.partial `part` whose func (or args tuple) is replaced: the
 * new one in its place, the partial changed in place (every holder of it
 * follows). */
static int replace_in_partial(patcher *p, PyObject *part, const batch *b)
{
    PyObject *state = partial_state(p->partial, part);
    if (!state)
        return -1;
    int r = 0;
    for (int which = 0; which < 2 && r == 0; which++) {
        PyObject *old = PyTuple_GET_ITEM(state, which), *new = batch_find(b, old);
        if (!new || (which == 1 && !PyTuple_Check(new)))
            continue;
        PyObject *key = PyLong_FromLong(which);
        r = key && note(p, PATCH_PARTIAL, part, key, old, new, p->partial) == 0
                ? partial_set(p->partial, part, which, new)
                : -1;
        Py_XDECREF(key);
    }
    Py_DECREF(state);
    return r;
}

/* A classmethod or staticmethod `cm` of a replaced function: a copy of
 * what replaces it, for the next depth. */
static int replace_method(PyObject *cm, const batch *b, batch *next)
{
    PyObject *f = PyObject_GetAttrString(cm, "__func__");
    if (!f)
        return -1;
    PyObject *new = batch_find(b, f);
    int r = 0;
    if (new) {
        PyObject *copy = PyObject_CallOneArg((PyObject *)Py_TYPE(cm), new);
        r = copy ? batch_add(next, cm, copy) : -1;
        Py_XDECREF(copy);
    }
    Py_DECREF(f);
    return r;
}

/* A property `prop` whose fget, fset or fdel is replaced: a copy with the
 * new ones, for the next depth. */
static int replace_property(PyObject *prop, const batch *b, batch *next)
{
    static const char *const attr[] = {"fget", "fset", "fdel"};
    static const char *const method[] = {"getter", "setter", "deleter"};
    PyObject *copy = Py_NewRef(prop);
    for (int i = 0; i < 3 && copy; i++) {
        PyObject *f = PyObject_GetAttrString(prop, attr[i]), *new = f ? batch_find(b, f) : NULL;
        if (new)
            Py_SETREF(copy, PyObject_CallMethod(copy, method[i], "O", new));
        else if (!f)
            Py_CLEAR(copy);
        Py_XDECREF(f);
    }
    int r = copy ? 0 : -1;
    if (copy && copy != prop)
        r = batch_add(next, prop, copy);
    Py_XDECREF(copy);
    return r;
}

/* A copy of `o`, an instance of `base` (tuple or frozenset) or of a
 * subclass of it, holding `items` (a list): made as copy and pickle make
 * one, by base.__new__(type(o), items) without the subclass's own __new__
 * or __init__ (a named tuple's differ), with o's __dict__ copied when it
 * has one.  A new reference, or NULL with an exception set. */
static PyObject *copy_with_items(PyTypeObject *base, PyObject *o, PyObject *items)
{
    PyTypeObject *tp = Py_TYPE(o);
    if (tp == base)
        return base == &PyTuple_Type ? PyList_AsTuple(items) : PyFrozenSet_New(items);
    PyObject *args = PyTuple_Pack(1, items), *copy = NULL, *d = NULL, *cd = NULL;
    if (!args || !(copy = base->tp_new(tp, args, NULL)))
        goto done;
    if (tp->tp_dictoffset &&
        (!(d = PyObject_GenericGetDict(o, NULL)) || !(cd = PyObject_GenericGetDict(copy, NULL)) ||
         PyDict_Update(cd, d) < 0))
        Py_CLEAR(copy);
done:
    Py_XDECREF(args);
    Py_XDECREF(d);
    Py_XDECREF(cd);
    return copy;
}

/* 1 when instances of `tp`, a subclass of `base`, keep values in slots of
 * their own (__slots__) besides a __dict__ and weak references.  A tuple
 * subclass cannot; a frozenset subclass can. */
static int has_own_slots(PyTypeObject *tp, PyTypeObject *base)
{
    Py_ssize_t extra = tp->tp_basicsize - base->tp_basicsize;
    if (tp->tp_dictoffset > 0)
        extra -= (Py_ssize_t)sizeof(PyObject *);
    if (tp->tp_weaklistoffset && tp->tp_weaklistoffset != base->tp_weaklistoffset)
        extra -= (Py_ssize_t)sizeof(PyObject *);
    return extra > 0;
}

/* A tuple or frozenset `o` (or a named tuple, or another subclass) holding
 * replaced objects: it cannot change (it may be a dict key, hashed,
 * shared), so a copy holding the new ones goes into `next`, where it
 * replaces `o` wherever `o` is held (dict values and keys, lists, sets,
 * cells, defaults, a partial's args, locals, tuples). */
static int replace_immutable(PyObject *o, const batch *b, batch *next)
{
    PyTypeObject *base = PyTuple_Check(o) ? &PyTuple_Type : &PyFrozenSet_Type;
    PyObject *items = NULL, *item, *copy = NULL;
    Py_ssize_t found = 0, pos = 0;
    Py_hash_t hash;
    int r = -1;
    if (base == &PyFrozenSet_Type && has_own_slots(Py_TYPE(o), base))
        return 0; /* its __slots__ values: a copy from its items would lose them */
    if (base == &PyTuple_Type) {
        if (!(items = PyList_New(PyTuple_GET_SIZE(o))))
            return -1;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(o); i++)
            PyList_SET_ITEM(items, i, Py_NewRef(PyTuple_GET_ITEM(o, i)));
    } else {
        if (!(items = PyList_New(0)))
            return -1;
        while (_PySet_NextEntry(o, &pos, &item, &hash))
            if (PyList_Append(items, item) < 0)
                goto done;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
        PyObject *new = batch_find(b, PyList_GET_ITEM(items, i));
        if (!new)
            continue;
        PyObject *old = PyList_GET_ITEM(items, i);
        PyList_SET_ITEM(items, i, Py_NewRef(new));
        Py_DECREF(old);
        found++;
    }
    r = 0;
    if (found)
        r = (copy = copy_with_items(base, o, items)) ? batch_add(next, o, copy) : -1;
done:
    Py_DECREF(items);
    Py_XDECREF(copy);
    return r;
}

/* A bound method `m` of a replaced function (its hash and == follow its
 * function, so it is not changed in place: it may be in a set): a method
 * binding the new one to the same object, for the next depth. */
static int replace_bound(PyObject *m, const batch *b, batch *next)
{
    PyObject *new = batch_find(b, PyMethod_GET_FUNCTION(m));
    if (!new)
        return 0;
    PyObject *copy = PyMethod_New(new, PyMethod_GET_SELF(m));
    int r = copy ? batch_add(next, m, copy) : -1;
    Py_XDECREF(copy);
    return r;
}

/* Replaces what `b` replaces in referrer `ref` when it can be changed in
 * place; a copy of `ref` goes into `next` when it cannot (below depth
 * PATCH_DEPTH). */
static int replace_in(patcher *p, PyObject *ref, const batch *b, batch *next, int depth)
{
    PyObject *new;
    if (is_mine(p, ref))
        return 0;
    if (PyDict_Check(ref))
        return replace_in_dict(p, ref, b);
    if (PyList_Check(ref)) /* a subclass too: a hash it keeps of its items stays true */
        return replace_in_list(p, ref, b);
    if (PySet_Check(ref)) /* the stand-in has its function's hash and == */
        return swap_noted(p, ct_keys_swap, ref, PATCH_KEYS, b);
    if (PyGen_Check(ref) || PyCoro_CheckExact(ref) || PyAsyncGen_CheckExact(ref))
        return swap_noted(p, ct_frames_swap_generator, ref, PATCH_GENERATOR, b);
    if (PyCell_Check(ref)) {
        PyObject *old = PyCell_GET(ref);
        if (!old || !(new = batch_find(b, old)))
            return 0;
        return note(p, PATCH_CELL, ref, NULL, old, new, NULL) < 0 ? -1 : PyCell_Set(ref, new);
    }
    if (PyObject_TypeCheck(ref, (PyTypeObject *)p->partial))
        return replace_in_partial(p, ref, b);
    if (PyFunction_Check(ref)) { /* its __defaults__ being a tuple replaced */
        PyObject *old = PyFunction_GET_DEFAULTS(ref);
        if (!old || !(new = batch_find(b, old)) || !PyTuple_Check(new))
            return 0;
        return note(p, PATCH_DEFAULTS, ref, NULL, old, new, NULL) < 0
                   ? -1
                   : PyFunction_SetDefaults(ref, new);
    }
    if (Py_TYPE(ref)->tp_flags & Py_TPFLAGS_MANAGED_DICT) {
        /* an instance keeping its attributes without a dict: made now */
        PyObject *d = PyObject_GenericGetDict(ref, NULL);
        int r = d ? replace_in_dict(p, d, b) : -1;
        Py_XDECREF(d);
        return r;
    }
    if (PyObject_TypeCheck(ref, p->st->type.Recorder)) {
        Recorder *rec = (Recorder *)ref;
        if (rec->probe || !(new = batch_find(b, rec->func)))
            return 0;
        rec->probe = Py_NewRef(new);
        return note(p, PATCH_RECORDER, ref, NULL, rec->func, new, NULL);
    }
    if (depth >= PATCH_DEPTH)
        return 0;
    if (Py_IS_TYPE(ref, &PyClassMethod_Type) || Py_IS_TYPE(ref, &PyStaticMethod_Type))
        return replace_method(ref, b, next);
    if (PyObject_TypeCheck(ref, &PyProperty_Type))
        return replace_property(ref, b, next);
    if (PyTuple_Check(ref) || PyFrozenSet_Check(ref))
        return replace_immutable(ref, b, next);
    if (PyMethod_Check(ref))
        return replace_bound(ref, b, next);
    return 0;
}

/* tp_traverse's visit: 1 (stop) at a reference to an object of the batch. */
static int visit_find(PyObject *o, void *arg)
{
    return o && batch_find((const batch *)arg, o) ? 1 : 0;
}

/* The objects the collector tracks that refer to an object of `b` (a new
 * list), as gc.get_referrers(*olds) finds them, but with one binary search
 * per reference instead of a scan of the batch: one walk of the heap, in
 * time that grows with its size, not with its size times the batch's. */
static PyObject *batch_referrers(patcher *p, const batch *b)
{
    PyObject *all = PyObject_CallNoArgs(p->objects), *refs = NULL;
    if (!all || !PyList_Check(all) || !(refs = PyList_New(0))) {
        if (all && !PyList_Check(all))
            PyErr_SetString(PyExc_TypeError, "gc.get_objects() returned no list");
        Py_XDECREF(all);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(all); i++) {
        PyObject *o = PyList_GET_ITEM(all, i);
        traverseproc visit = Py_TYPE(o)->tp_traverse;
        if (visit && visit(o, visit_find, (void *)b) && PyList_Append(refs, o) < 0) {
            Py_CLEAR(refs);
            break;
        }
    }
    Py_DECREF(all);
    return refs;
}

/* Replaces every object of `b` in every referrer of it that can be
 * changed, then the copies made of those that cannot, one depth further
 * (one walk of the heap per depth).  `b` is sorted here. */
static int replace_everywhere(patcher *p, batch *b, int depth)
{
    batch next = {0};
    PyObject *refs = NULL;
    int r = -1, base = p->nmine;
    qsort(b->v, (size_t)b->n, sizeof *b->v, pair_cmp);
    p->mine[p->nmine++] = b->keep;
    if (!(refs = batch_referrers(p, b)))
        goto done;
    p->mine[p->nmine++] = refs;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(refs); i++)
        if (replace_in(p, PyList_GET_ITEM(refs, i), b, &next, depth) < 0)
            goto done;
    /* the threads' running frames, which the collector does not list */
    if (swap_noted(p, swap_running, NULL, PATCH_FRAMES, b) < 0)
        goto done;
    p->nmine = base + 1; /* b->keep stays: it holds what was replaced */
    Py_CLEAR(refs);
    r = next.n ? replace_everywhere(p, &next, depth + 1) : 0;
done:
    p->nmine = base;
    Py_XDECREF(refs);
    batch_clear(&next);
    return r;
}

/* The patcher's gc.get_referrers, gc.get_objects and functools.partial.  Returns 0, or -1
 * with an exception set. */
static int patcher_open(patcher *p)
{
    PyObject *gc = PyImport_ImportModule("gc"), *ft = NULL;
    if (!gc)
        return -1;
    p->referrers = PyObject_GetAttrString(gc, "get_referrers");
    p->objects = p->referrers ? PyObject_GetAttrString(gc, "get_objects") : NULL;
    Py_DECREF(gc);
    if (!p->objects || !(ft = PyImport_ImportModule("functools")))
        return -1;
    p->partial = PyObject_GetAttrString(ft, "partial");
    Py_DECREF(ft);
    if (p->partial && !PyType_Check(p->partial)) {
        PyErr_SetString(PyExc_TypeError, "functools.partial is not a type");
        return -1;
    }
    return p->partial ? 0 : -1;
}

/* See probes.h. */
int ct_probe_patch(ProbeHook *h)
{
    ct_state *st = (ct_state *)PyModule_GetState(h->module);
    patcher p = {.st = st, .h = h};
    PyObject *funcs = NULL;
    if (patcher_open(&p) < 0)
        goto error;
    if (!h->patches && !(h->patches = PyList_New(0)))
        goto error;
    p.patches = h->patches;
    funcs = PyObject_CallOneArg(p.referrers, (PyObject *)h->code);
    if (!funcs)
        goto error;
    p.mine[p.nmine++] = funcs;
    Py_ssize_t nfuncs = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(funcs); i++) {
        PyObject *f = PyList_GET_ITEM(funcs, i);
        if (!PyFunction_Check(f) || PyFunction_GET_CODE(f) != (PyObject *)h->code)
            continue;
        nfuncs++;
        batch b = {0};
        PyObject *w = ct_probe_wrapper_new(st, h, f);
        int r = w && batch_add(&b, f, w) == 0 ? replace_everywhere(&p, &b, 0) : -1;
        Py_XDECREF(w);
        batch_clear(&b);
        if (r < 0)
            goto error;
    }
    if (PyList_GET_SIZE(h->patches) == 0) {
        PyErr_Format(PyExc_RuntimeError, "cannot probe %U on Python 3.11: %s", h->code->co_qualname,
                     nfuncs ? "no reference to its function could be patched (only C objects"
                              " hold it, or tuples, frozensets or methods more than four"
                              " levels deep)"
                            : "no function runs its code now (a local function made at each"
                              " call of the one around it needs Python 3.12+)");
        goto error;
    }
    Py_DECREF(funcs);
    Py_DECREF(p.referrers);
    Py_DECREF(p.objects);
    Py_DECREF(p.partial);
    return 0;
error:
    Py_XDECREF(funcs);
    Py_XDECREF(p.referrers);
    Py_XDECREF(p.objects);
    Py_XDECREF(p.partial);
    return -1;
}

/* Puts list item `old` back where `new` is: at index `key` still, else
 * at the first `new` the list holds now (it moved), else nowhere. */
static int unpatch_list(PyObject *l, PyObject *key, PyObject *old, PyObject *new)
{
    Py_ssize_t i = PyLong_AsSsize_t(key), n = PyList_GET_SIZE(l);
    if (i < 0 && PyErr_Occurred())
        return -1;
    if (i >= n || PyList_GET_ITEM(l, i) != new)
        for (i = 0; i < n && PyList_GET_ITEM(l, i) != new; i++)
            ;
    return i < n ? PyList_SetItem(l, i, Py_NewRef(old)) : 0;
}

/* Puts a partial's func (key 0) or args (key 1) back where `new` still is. */
static int unpatch_partial(PyObject *type, PyObject *part, PyObject *key, PyObject *old,
                           PyObject *new)
{
    int which = (int)PyLong_AsLong(key);
    PyObject *state = partial_state(type, part);
    if (!state)
        return -1;
    int same = PyTuple_GET_ITEM(state, which) == new;
    Py_DECREF(state);
    return same ? partial_set(type, part, which, old) : 0;
}

/* Puts one patch back; `back` maps each replacement noted to what it
 * replaced.  Returns 0, or -1 with an exception set. */
static int unpatch_one(PyObject *t, const batch *back)
{
    int kind = (int)PyLong_AsLong(PyTuple_GET_ITEM(t, 0));
    PyObject *where = PyTuple_GET_ITEM(t, 1), *key = PyTuple_GET_ITEM(t, 2);
    PyObject *old = PyTuple_GET_ITEM(t, 3), *new = PyTuple_GET_ITEM(t, 4);
    PyObject *owner = PyTuple_GET_ITEM(t, 5);
    switch (kind) {
    case PATCH_DICT: {
        PyObject *cur = PyDict_GetItemWithError(where, key);
        if (cur != new)
            return PyErr_Occurred() ? -1 : 0;
        return owner != Py_None ? PyObject_SetAttr(owner, key, old)
                                : PyDict_SetItem(where, key, old);
    }
    case PATCH_CELL:
        return PyCell_GET(where) == new ? PyCell_Set(where, old) : 0;
    case PATCH_LIST:
        return unpatch_list(where, key, old, new);
    case PATCH_PARTIAL:
        return unpatch_partial(owner, where, key, old, new);
    case PATCH_DEFAULTS:
        return PyFunction_GET_DEFAULTS(where) == new ? PyFunction_SetDefaults(where, old) : 0;
    case PATCH_KEYS:
        return ct_keys_swap(where, find_origin, back, 0) < 0 ? -1 : 0;
    case PATCH_GENERATOR: { /* a generator gone has nothing to put back */
        PyObject *gen = PyWeakref_GetObject(where);
        if (gen && gen != Py_None)
            ct_frames_swap_generator(gen, find_origin, back, 0);
        return gen ? 0 : -1;
    }
    case PATCH_FRAMES: /* all at once, at the end */
        return 0;
    default: {
        Recorder *rec = (Recorder *)where;
        if (rec->probe == new)
            Py_CLEAR(rec->probe);
        return 0;
    }
    }
}

/* `back`: each replacement noted in `patches` mapped to what it replaced
 * (not sorted yet).  Returns 0, or -1 with an exception set. */
static int reverse_of(PyObject *patches, batch *back)
{
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(patches); i++) {
        PyObject *t = PyList_GET_ITEM(patches, i), *pairs = PyTuple_GET_ITEM(t, 2);
        if (PyTuple_GET_ITEM(t, 3) != Py_None) {
            if (batch_add(back, PyTuple_GET_ITEM(t, 4), PyTuple_GET_ITEM(t, 3)) < 0)
                return -1;
            continue;
        }
        if (!PyTuple_Check(pairs))
            continue;
        for (Py_ssize_t j = 0; j + 1 < PyTuple_GET_SIZE(pairs); j += 2)
            if (batch_add(back, PyTuple_GET_ITEM(pairs, j + 1), PyTuple_GET_ITEM(pairs, j)) < 0)
                return -1;
    }
    return 0;
}

/* See probes.h. */
int ct_probe_unpatch(ProbeHook *h)
{
    PyObject *patches = h->patches, *first = NULL;
    batch back = {0};
    h->patches = NULL;
    if (!patches)
        return 0;
    if (reverse_of(patches, &back) < 0)
        first = ct_fetch_exc(); /* what it holds is still put back */
    if (back.n)
        qsort(back.v, (size_t)back.n, sizeof *back.v, pair_cmp);
    for (Py_ssize_t i = PyList_GET_SIZE(patches) - 1; i >= 0; i--)
        if (unpatch_one(PyList_GET_ITEM(patches, i), &back) < 0) {
            if (!first)
                first = ct_fetch_exc();
            else
                PyErr_Clear();
        }
    /* every running frame holding a replacement, whether it was noted or
     * took it meanwhile (from a global, say) */
    if (back.n)
        ct_frames_swap_running(find_origin, &back, 0);
    batch_clear(&back);
    Py_DECREF(patches);
    ct_restore_exc(first);
    return first ? -1 : 0;
}

#endif
