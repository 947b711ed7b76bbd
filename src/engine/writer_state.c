/*
 * writer_state.c - the writer's state across tapes and processes: what it
 * forgets when the tape it wrote is lost (deleted or replaced under it),
 * when a fork() child starts with a copy of it, and when it is freed.
 *
 * Invariants: everything here runs on the writer thread with io_mu held,
 * or with no writer running (a fork child before its writer starts, a
 * writer stopped); after a reset no id, function or thread resolved in
 * another tape (or by the parent) is used again, and the parent's spool
 * stays the parent's.
 */
#include "engine_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Forgets what the writer resolved in the tape it wrote (function and call
 * ids, threads, counters reported): for a new session on another file. */
static void forget_tape(writer_state *w)
{
    for (size_t i = 0; i < w->nfns; i++)
        w->fns[i].tape_id = 0;
    for (size_t i = 0; i < w->nthreads; i++)
        w->threads[i].stored = 0;
    if (w->id_blocks)
        memset(w->id_blocks, 0, w->nblocks * sizeof(int64_t));
    w->dropped_reported = 0;
    w->last_open_try_ns = 0;
}

/* The tape file was deleted (or replaced) while recording: what was
 * committed onto it is gone.  Counts those calls as dropped, reports it,
 * and forgets what the writer resolved in it, so that the session is
 * created again on the file the path names now.  io_mu held. */
void writer_tape_lost(engine *e)
{
    writer_state *w = &e->w;
    pthread_mutex_lock(&e->mu);
    uint64_t lost = e->written_calls - w->written_before_open;
    e->written_calls -= lost;
    e->writer_dropped += lost;
    w->session_id = 0;
    pthread_mutex_unlock(&e->mu);
    char msg[200];
    snprintf(msg, sizeof msg,
             "the tape was deleted or replaced while recording (%llu calls written onto it"
             " are lost); recording goes on onto a new tape there",
             (unsigned long long)lost);
    writer_error(e, msg);
    forget_tape(w);
}

void writer_fork_reset(engine *e)
{
    writer_state *w = &e->w;
    w->store = NULL;   /* closed by engine_fork_prepare */
    if (w->session_id) /* else the parent's own parent stays the child's */
        w->parent_session = w->session_id;
    w->session_id = 0;
    w->written_before_open = 0;
    for (size_t i = 0; i < w->nfns; i++) {
        w->fns[i].tape_id = 0;
        w->fns[i].written = w->fns[i].in_txn = 0;
        if (w->fns[i].bytes)
            seg_builder_reset(&w->fns[i].seg);
    }
    for (size_t i = 0; i < w->nthreads; i++)
        w->threads[i].stored = 0;
    if (w->id_blocks)
        memset(w->id_blocks, 0, w->nblocks * sizeof(int64_t));
    memset(w->counters, 0, sizeof w->counters);
    w->dropped_reported = 0;
    w->last_open_try_ns = 0;
    spool_forget_kept(w, 1);
    /* the parent's spool stays the parent's: the child makes its own */
    w->spooling = w->spool_full = w->spool_pending = 0;
    w->spool_path[0] = 0;
}

void writer_free_state(engine *e)
{
    writer_state *w = &e->w;
    writer_close_store(e);
    for (size_t i = 0; i < w->nfns; i++) {
        if (w->fns[i].bytes)
            seg_builder_free(&w->fns[i].seg);
        free(w->fns[i].bytes);
    }
    free(w->fns);
    for (size_t i = 0; i < w->nthreads; i++)
        free(w->threads[i].bytes);
    free(w->threads);
    free(w->id_blocks);
    spool_release_held(w);
    for (size_t i = 0; i < w->nspare; i++)
        seg_builder_free(&w->spare[i]);
    free(w->spare);
    free(w->held);
    spool_forget_kept(w, 1);
    free(w->kept);
    wbuf_free(&w->scratch);
    wbuf_free(&w->segment);
    lz_table_free(&w->lz);
    selftime_free(&w->kids);
    memset(w, 0, sizeof *w);
}
