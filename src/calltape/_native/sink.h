/*
 * sink.h - where the records of every capture path go (sink.c): the
 * engines (one per tape path), appending a framed record, the value
 * counters record, RecordingWarnings, flush() and stats().
 *
 * Layering: sink.c calls the engine and lifecycle.c (a process's session
 * begun at its first record) only; the capture paths (recorder.c,
 * monitor*.c, pending.c) and emit.c call it, never the other way round.
 */
#ifndef CALLTAPE_SINK_H
#define CALLTAPE_SINK_H

#include "binding.h"

/* Returns the engine for `path` (NULL: the default tape), creating it on
 * first use.  Returns NULL with an exception set on failure. Borrowed. */
ct_engine_slot *ct_engine_for(ct_state *st, PyObject *path);
/* Appends a record to `slot`'s engine and reports store trouble once as a
 * RecordingWarning.  Never raises; any pending exception is preserved. */
void ct_append(ct_state *st, ct_engine_slot *slot, const uint8_t *rec, size_t n);
/* A call made after the module was cleared (interpreter finalization):
 * counted as dropped on `slot`'s engine (may be NULL).  Never raises. */
void ct_count_late_call(ct_state *st, ct_engine_slot *slot);
/* Issues a RecordingWarning for problem `kind` once per process.  Never
 * raises; saves and restores a pending exception. */
void ct_warn_once(ct_state *st, const char *kind, const char *msg);
/* os.path.abspath(path): a new reference, or NULL with an exception. */
PyObject *ct_absolute_path(PyObject *path);
/* Makes the absolute path `abs` (borrowed) the default tape; when it names
 * another tape than before, the old default tape's writer writes out what
 * it holds and stops (unless a Recorder or monitor pinned it).  Releases
 * the GIL while it waits.  Never fails. */
void ct_sink_set_default(ct_state *st, PyObject *abs);
/* configure(tape=namer): the default tape is named by calling `namer`
 * (borrowed) with no argument when a call first needs it; the old default
 * tape is left as ct_sink_set_default leaves it.  Never fails. */
void ct_sink_set_namer(ct_state *st, PyObject *namer);
/* Frees every engine (module free): what they hold is written first, with
 * the GIL released (up to 5 s each). */
void ct_sink_free(ct_state *st);
/* Sends every tape's pending counters and waits up to `timeout` seconds
 * (the GIL released) for the writers to write what they hold.  Returns a
 * new True when all did, else False.  Store trouble becomes a warning. */
PyObject *ct_flush_all(ct_state *st, double timeout);
/* _native.flush(timeout=None) -> bool and _native.stats() -> dict. */
PyObject *ct_flush_py(PyObject *m, PyObject *args, PyObject *kw);
PyObject *ct_stats_py(PyObject *m, PyObject *unused);
/* _native.mpi_rank() -> the MPI rank a session begun now would name, or
 * None (a malformed launcher variable is reported once). */
PyObject *ct_mpi_rank_py(PyObject *m, PyObject *unused);
/* _native._begin_session(tape) -> the id of this process's session on
 * `tape` (None: the default), begun now; 0 when it cannot be written. */
PyObject *ct_begin_session_py(PyObject *m, PyObject *tape);

/* ---- framing ------------------------------------------------------------- */

/* Every record is built in a wbuf whose first CT_FRAME_ROOM bytes are left
 * free; ct_append_framed writes the length prefix into them and appends. */
#define CT_FRAME_ROOM 10

/* Starts a record in `b` (on `storage` of `cap` bytes, or the heap). */
static inline void ct_frame_begin(wbuf *b, uint8_t *storage, size_t cap)
{
    wbuf_init(b, storage, cap);
    if (wbuf_reserve(b, CT_FRAME_ROOM) == 0)
        b->len = CT_FRAME_ROOM;
}

/* Prefixes the record in `b` (begun by ct_frame_begin) with its length and
 * appends it; nothing when `b` ran out of memory.  Never raises. */
static inline void ct_append_framed(ct_state *st, ct_engine_slot *slot, wbuf *b)
{
    if (b->failed)
        return;
    size_t body = b->len - CT_FRAME_ROOM;
    size_t n = 1;
    for (size_t v = body; v >= 0x80; v >>= 7)
        n++;
    uint8_t *start = b->data + CT_FRAME_ROOM - n;
    put_varint_raw(start, body); /* exactly n bytes, ending where the body starts */
    ct_append(st, slot, start, body + n);
}

/* ---- value counters ------------------------------------------------------ */

/* Sends `slot`'s value counters (unencodable, pickled, ...) and those not
 * yet given to a call to `slot`'s writer as a REC_COUNTERS record, and adds
 * them to the totals that stats() reports.  Never raises. */
void ct_emit_counters(ct_state *st, ct_engine_slot *slot);

/* Value counters are sent with a call at most this often (and always by
 * flush() and when the default tape changes), not with every call that
 * changed them: a program whose every call holds an unencodable value would
 * otherwise send a counters record per call. */
#define CT_COUNTERS_EVERY_NS 20000000ull

/* A call goes to `slot`: the counters of its values become the tape's, and
 * the tape's are sent when CT_COUNTERS_EVERY_NS passed since they last were
 * (before `now`).  Never raises. */
static inline void ct_counters_due(ct_state *st, ct_engine_slot *slot, uint64_t now)
{
    if (st->sink.counters_dirty) {
        for (int i = 0; i < CT_NCOUNTERS; i++)
            slot->counters[i] += st->sink.counters[i];
        memset(st->sink.counters, 0, sizeof st->sink.counters);
        st->sink.counters_dirty = 0;
        slot->counters_dirty = 1;
    }
    if (slot->counters_dirty && now - slot->counters_sent_ns >= CT_COUNTERS_EVERY_NS) {
        ct_emit_counters(st, slot);
        slot->counters_sent_ns = now;
    }
}

#endif
