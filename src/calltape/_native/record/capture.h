/*
 * capture.h - what capture.c (built-in values, containers, identity) and
 * objects.c (every other type) share.  Return codes of the ct_capture_*
 * functions below: 0, -1 (out of memory), -2 (a container changed size
 * while it was written), -3 (an exception is set), -4 (over the size limit).
 */
#ifndef CALLTAPE_CAPTURE_H
#define CALLTAPE_CAPTURE_H

#include "binding.h"

/* How many levels below an object holding opaque state (an attribute
 * whose type is refused: a generator, a lock, a file) its other attributes
 * are walked: such an object cannot be rebuilt, so the rest is kept only to
 * be read (objects.c). */
#define CT_OPAQUE_DEPTH 2

/* Writes the UNENCODABLE marker of `v`, nested at `depth` past the nesting
 * written (ct_capture_too_deep). */
void ct_put_too_deep(ct_capture *c, wbuf *b, PyObject *v, int depth);

/* 1, after writing an UNENCODABLE marker for `v` in its place, when `v`
 * nested at `depth` is a container or an object past the nesting written
 * (the capture's depth budget, or the cut below an object holding opaque
 * state); 0 when it is to be written. */
static inline int ct_capture_too_deep(ct_capture *c, wbuf *b, PyObject *v, int depth)
{
    if ((c->opaque_cut == 0 || depth < c->opaque_cut) && depth < ct_capture_depth(c))
        return 0;
    ct_put_too_deep(c, b, v, depth);
    return 1;
}

/* Writes one value nested at `depth` inside the value being captured. */
int ct_capture_nested(ct_capture *c, wbuf *b, PyObject *v, int depth);
/* Writes the items of the list, tuple, dict, set or frozenset `v` (or of
 * an instance of a subclass: read from the base's storage, never through
 * an overridden method) as a value tagged `tag`. */
int ct_capture_items(ct_capture *c, wbuf *b, PyObject *v, uint8_t tag, int depth);
/* Writes the str, bytes, int or float (or subclass instance) `v` as the
 * built-in value of OBJECT kind `kind`. */
int ct_capture_builtin(ct_capture *c, wbuf *b, PyObject *v, uint8_t kind);
/* Writes `v`, not a built-in data value, as its type's decision says
 * (objects.c). */
int ct_capture_object(ct_capture *c, wbuf *b, PyObject *v, int depth);

/* Values over the budget cost the budget before they are dropped for a
 * TRUNCATED marker.  When the top-level values of one class were over it
 * CT_OVER_STREAK times in a row, the next ones are not encoded (a marker of
 * size 0: not measured), 1, 2, 4, ... up to CT_OVER_SKIP_MAX of them, each
 * try that fits the budget starting again.  The entry of v's class that
 * keeps count (borrowed), or NULL when its class is not recorded by its
 * structure (yet).  Never raises. */
ct_typeinfo *ct_over_budget_entry(ct_capture *c, PyObject *v);

/* 1 when the value whose class has entry `e` (or NULL) is not to be
 * encoded now, counting it.  Never raises. */
int ct_over_budget_skip(ct_typeinfo *e);

/* What encoding a top-level value of entry `e`'s class (or NULL) gave:
 * `over` 1 when it was over the budget.  Never raises. */
void ct_over_budget_note(ct_typeinfo *e, int over);

#define CT_OVER_STREAK 4
#define CT_OVER_SKIP_MAX 1024
/* Writes the class, function, builtin function or module `v` as a GLOBAL
 * (or UNENCODABLE when it has no importable name). */
int ct_capture_global(ct_capture *c, wbuf *b, PyObject *v);
/* Writes an UNENCODABLE marker and counts it. */
void ct_put_unencodable(ct_state *st, wbuf *b, const char *type, const char *why);

/* 0 when `v`, nested at `depth` (where its writer holds a temporary
 * reference), has no other owner than its container: it cannot occur again
 * in the group, so it needs no memo entry, only an index. */
int ct_memo_shared(PyObject *v, int depth);
/* 1 (with *index) when `v` was already written in this group. */
int ct_memo_find(ct_capture *c, PyObject *v, size_t *index);
/* Gives `v` (NULL: an unshared value, counted only) the next memo index
 * (*index); `open`: its contents are being written and it cannot be
 * referred to until ct_memo_close.  0, or -1. */
int ct_memo_add(ct_capture *c, PyObject *v, int open, size_t *index);
void ct_memo_close(ct_capture *c, size_t index);
/* Writes a REF to memo `index` (an UNENCODABLE marker when it is still
 * open: a cycle through an immutable value).  Returns 0. */
int ct_put_ref(ct_capture *c, wbuf *b, size_t index);

/* How instances of `tp` are captured (typeinfo.c): its entry in the type
 * cache (borrowed), decided the first time it is asked for, or NULL with
 * an exception set. */
ct_typeinfo *ct_typeinfo_for(ct_capture *c, PyTypeObject *tp);
/* Frees every decision (module clear, or when codecs or pickle types
 * change). */
void ct_typecache_clear(ct_typecache *tc);
/* Visits the references the decisions hold (module traverse). */
int ct_typecache_traverse(ct_typecache *tc, visitproc visit, void *arg);

#endif
