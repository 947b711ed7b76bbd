/*
 * selftime.c - self time on the writer thread: a call's duration minus the
 * durations of its recorded direct children, without a cost on the
 * calling thread.  The writer sees a process's calls in the order they
 * ended, so a child is seen before its parent: each call's duration is
 * added under its parent's seq here, and taken back out when the parent
 * itself is seen.
 *
 * Invariants: a table of open addressing with linear probing (seq 0, never
 * a call's, marks a free slot), at most half full, removals by backward
 * shift (no tombstones); it holds the parents whose children were seen
 * and that were not seen themselves yet, so its size follows the depth of
 * the calls open right now, not the calls recorded.  A child seen after
 * its parent (it outlived it) leaves an entry nobody takes: past
 * SELFTIME_MAX_ENTRIES entries the table starts over, so a parent still
 * open then reports its whole duration as self time (never less than
 * true).  Running out of memory does the same.  Writer thread only.
 *
 * In front of the table, a stack: on one thread the parents waiting for
 * their own end are the calls open right now, one inside the other, so
 * the next one seen is the newest (the stack's top).  An entry is pushed
 * only above entries of smaller seqs (the stack stays ascending), so a
 * call whose seq is above the top is not on the stack at all; one below
 * it (another thread's, or a child that outlived its parent) is found by
 * binary search.  Whatever the order of events, a parent's entries are
 * on the stack, in the table or both, and taking it sums both: the stack
 * only makes the common order cheap.
 */
#include "engine_impl.h"

#include <stdlib.h>

#define SELFTIME_MIN_CAP 64
#define SELFTIME_MAX_ENTRIES ((size_t)1 << 20)

/* The home slot of `seq` in a table of `cap` slots (a power of two). */
static size_t home_of(uint64_t seq, size_t cap)
{
    return (size_t)((seq * 0x9E3779B97F4A7C15ull) >> 32) & (cap - 1);
}

/* Empties the table, keeping its memory. */
static void clear(selftime *t)
{
    if (t->keys)
        memset(t->keys, 0, t->cap * sizeof *t->keys);
    t->n = 0;
}

/* The slot of `seq` in `keys` of `cap` slots (a power of two): its own,
 * or the first free one after it. */
static size_t probe(const uint64_t *keys, size_t cap, uint64_t seq)
{
    size_t i = home_of(seq, cap);
    while (keys[i] && keys[i] != seq)
        i = (i + 1) & (cap - 1);
    return i;
}

/* Doubles the table (or makes the first one).  Returns 0 or -1. */
static int grow_table(selftime *t)
{
    size_t cap = t->cap ? t->cap * 2 : SELFTIME_MIN_CAP;
    uint64_t *keys = calloc(cap, sizeof *keys);
    int64_t *ns = calloc(cap, sizeof *ns);
    if (!keys || !ns) {
        free(keys);
        free(ns);
        return -1;
    }
    uint64_t *old_keys = t->keys;
    int64_t *old_ns = t->ns;
    for (size_t i = 0; i < t->cap; i++) {
        if (!old_keys[i])
            continue;
        size_t j = probe(keys, cap, old_keys[i]);
        keys[j] = old_keys[i];
        ns[j] = old_ns[i];
    }
    free(old_keys);
    free(old_ns);
    t->keys = keys;
    t->ns = ns;
    t->cap = cap;
    return 0;
}

/* Takes `seq` out of the table (0 when it is not there). */
static int64_t table_take(selftime *t, uint64_t seq)
{
    size_t i = probe(t->keys, t->cap, seq);
    if (!t->keys[i])
        return 0;
    int64_t ns = t->ns[i];
    /* backward shift: move up every later entry of the run that may sit
     * in the freed slot */
    size_t hole = i;
    for (size_t j = (i + 1) & (t->cap - 1); t->keys[j]; j = (j + 1) & (t->cap - 1)) {
        size_t home = home_of(t->keys[j], t->cap);
        /* j may move to the hole when its home is not in (hole, j] */
        int stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
        if (!stays) {
            t->keys[hole] = t->keys[j];
            t->ns[hole] = t->ns[j];
            hole = j;
        }
    }
    t->keys[hole] = 0;
    t->n--;
    return ns;
}

/* Adds `ns` under `parent` in the table. */
static void table_add(selftime *t, uint64_t parent, int64_t ns)
{
    if (t->n >= SELFTIME_MAX_ENTRIES)
        clear(t);
    if ((t->n + 1) * 2 > t->cap && grow_table(t) < 0) {
        clear(t);
        if (!t->cap)
            return;
    }
    size_t i = probe(t->keys, t->cap, parent);
    if (!t->keys[i]) {
        t->keys[i] = parent;
        t->ns[i] = 0;
        t->n++;
    }
    t->ns[i] += ns;
}

/* Takes `seq` off the stack below its top (0 when it is not there). */
static int64_t stack_take(selftime *t, uint64_t seq)
{
    size_t lo = 0, hi = t->depth;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (t->stack_seq[mid] < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == t->depth || t->stack_seq[lo] != seq)
        return 0;
    int64_t ns = t->stack_ns[lo];
    size_t above = t->depth - lo - 1;
    memmove(&t->stack_seq[lo], &t->stack_seq[lo + 1], above * sizeof t->stack_seq[0]);
    memmove(&t->stack_ns[lo], &t->stack_ns[lo + 1], above * sizeof t->stack_ns[0]);
    t->depth--;
    return ns;
}

int64_t selftime_take_any(selftime *t, uint64_t seq)
{
    int64_t ns = 0;
    size_t d = t->depth;
    if (d && t->stack_seq[d - 1] == seq) {
        t->depth = d - 1;
        ns = t->stack_ns[d - 1];
    } else if (d && seq < t->stack_seq[d - 1]) {
        ns = stack_take(t, seq);
    }
    return t->n ? ns + table_take(t, seq) : ns;
}

void selftime_add_any(selftime *t, uint64_t parent, int64_t ns)
{
    size_t d = t->depth;
    if (d && t->stack_seq[d - 1] == parent) {
        t->stack_ns[d - 1] += ns;
        return;
    }
    if (d && parent < t->stack_seq[d - 1]) {
        table_add(t, parent, ns);
        return;
    }
    if (d == SELFTIME_STACK) { /* full: its older half moves into the table */
        size_t half = SELFTIME_STACK / 2;
        for (size_t i = 0; i < half; i++)
            table_add(t, t->stack_seq[i], t->stack_ns[i]);
        memmove(&t->stack_seq[0], &t->stack_seq[half], (d - half) * sizeof t->stack_seq[0]);
        memmove(&t->stack_ns[0], &t->stack_ns[half], (d - half) * sizeof t->stack_ns[0]);
        d -= half;
    }
    t->stack_seq[d] = parent;
    t->stack_ns[d] = ns;
    t->depth = d + 1;
}

void selftime_free(selftime *t)
{
    free(t->keys);
    free(t->ns);
    t->keys = NULL;
    t->ns = NULL;
    t->cap = t->n = t->depth = 0;
}
