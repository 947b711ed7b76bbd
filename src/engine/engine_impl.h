/*
 * engine_impl.h - the engine's private state, shared by queue.c (producer
 * side) and writer.c (writer thread).  Not part of the API.
 *
 * Ownership and locking:
 *   - `live` is written only by the producer, under `mu` (or with no append
 *     running: engine_trim, a fork child); the producer's fast path reads it
 *     without the lock (it is the only writer of it).  `closed` is written
 *     under `mu` and read by the fast path without it: an atomic.
 *   - bytes below a chunk's `committed` never change; the producer publishes
 *     with a release store, the writer reads with an acquire load.
 *   - `consumed` and everything under `w` belong to the writer thread, or to
 *     whoever holds `io_mu` while the writer is stopped.
 *   - sealed chunks are recycled only by the writer, after they were fully
 *     consumed; idle chunks are freed only while no writer runs
 *     (engine_trim) and handed to the free list only by a fork child.
 *   - the writer sleeps on the semaphore `wake_writer`, so that a signal
 *     handler can wake it (sem_post is async-signal-safe); `alive` is what
 *     such a handler reads to know whether a writer will see its request.
 */
#ifndef CALLTAPE_ENGINE_IMPL_H
#define CALLTAPE_ENGINE_IMPL_H

#include "engine.h"
#include "store.h"

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>

typedef struct chunk {
    struct chunk *next;
    _Atomic size_t committed;
    size_t consumed;
    size_t cap;
    uint8_t data[];
} chunk;

typedef struct fn_def {
    uint8_t *bytes; /* the REC_FUNCTION body, owned */
    size_t len;
    int64_t tape_id; /* 0: not yet resolved in the tape */
    seg_builder seg;
    uint8_t written; /* some call of it is committed (stats: written_functions) */
    uint8_t in_txn;  /* its first calls are in the open transaction */
} fn_def;

typedef struct thread_def {
    uint8_t *bytes; /* the REC_THREAD body, owned */
    size_t len;
    int stored;
} thread_def;

/* Self time (selftime.c): the durations of the recorded children seen so
 * far, by their parent's seq: on a stack of the parents seen last, and
 * in a table for the rest. */
#define SELFTIME_STACK 128
typedef struct selftime {
    uint64_t *keys; /* the table: seq, 0: free */
    int64_t *ns;
    size_t cap, n;
    size_t depth;                       /* entries on the stack */
    uint64_t stack_seq[SELFTIME_STACK]; /* strictly ascending from the bottom */
    int64_t stack_ns[SELFTIME_STACK];
} selftime;

/* selftime_take and selftime_add for every case (selftime.c); the inline
 * ones below take the common cases first. */
int64_t selftime_take_any(selftime *t, uint64_t seq);
void selftime_add_any(selftime *t, uint64_t parent, int64_t ns);
void selftime_free(selftime *t);

/* Takes the children's durations added under `seq` out of `t` (0 when
 * none).  Cannot fail.  Inline for the common orders, the table empty: the
 * call on top of the stack ending, or one above it (a leaf). */
static inline int64_t selftime_take(selftime *t, uint64_t seq)
{
    size_t d = t->depth;
    if (!t->n) {
        if (d && t->stack_seq[d - 1] == seq) {
            t->depth = d - 1;
            return t->stack_ns[d - 1];
        }
        if (!d || seq > t->stack_seq[d - 1])
            return 0;
    }
    return selftime_take_any(t, seq);
}

/* Adds a child's `ns` under its `parent` seq.  Best effort: when memory
 * runs out the table starts over.  Cannot fail.  Inline for the common
 * orders: the parent on top of the stack, or above it with room left. */
static inline void selftime_add(selftime *t, uint64_t parent, int64_t ns)
{
    size_t d = t->depth;
    if (d && t->stack_seq[d - 1] == parent) {
        t->stack_ns[d - 1] += ns;
        return;
    }
    if (d < SELFTIME_STACK && (!d || parent > t->stack_seq[d - 1])) {
        t->stack_seq[d] = parent;
        t->stack_ns[d] = ns;
        t->depth = d + 1;
        return;
    }
    selftime_add_any(t, parent, ns);
}

/* A segment written in the open transaction of a server tape, its builder
 * kept until that transaction commits, so that a round the server fails
 * in the middle of is written again onto the spool (spool.c). */
typedef struct held_seg {
    size_t fn; /* its function's index in writer_state.fns */
    seg_builder seg;
} held_seg;

/* A value put into a server tape's blob store, copied, kept until no
 * builder holds a call that names it (for the spool likewise). */
typedef struct kept_blob {
    uint8_t hash[WIRE_HASH_BYTES];
    uint8_t *data;
    size_t len;
} kept_blob;

/* A span record of the open transaction: `len` bytes at `p`, in a chunk
 * that outlives the round. */
typedef struct kept_span {
    const uint8_t *p;
    size_t len;
} kept_span;

/* One round's transaction (writer.c; spool.c moves it onto the spool). */
typedef struct writer_txn {
    uint64_t calls, segments, bytes, dropped;
    uint64_t functions;  /* functions whose first calls it holds (fn_def.in_txn) */
    int64_t first_start; /* the earliest start of its calls, INT64_MAX: none */
    int64_t end_ns;      /* the end its session row update wrote, 0: none yet */
    size_t taken;        /* bytes of records taken from the chunks */
    size_t *blocks;      /* id blocks reserved in this transaction */
    size_t nblocks, capblocks;
    kept_span *spans; /* its spans, on a server tape */
    size_t nspans, capspans;
} writer_txn;

/* Writer-private state. */
typedef struct writer_state {
    store *store; /* the tape, open while the writer has it */
    int64_t session_id;
    int64_t parent_session;
    uint64_t seq_floor;
    fn_def *fns;
    size_t nfns;
    thread_def *threads;
    size_t nthreads;
    int64_t *id_blocks; /* tape id of the first seq of each block, 0: none */
    size_t nblocks;
    int64_t counters[5];
    uint64_t dropped_reported;    /* drops already added to the session row */
    uint64_t written_before_open; /* e->written_calls when the session was created */
    uint64_t file_dev, file_ino;  /* the file the session is on */
    wbuf scratch;
    wbuf segment;
    lz_table lz;   /* the compressor's table, kept between segments */
    selftime kids; /* children's durations of calls not seen yet */
    uint64_t last_open_try_ns;
    uint64_t last_commit_ns;
    uint64_t last_retain_ns; /* monotonic, of the last retention round; 0: none yet */
    int64_t last_end_ns;     /* the end the last round wrote on a session row: each
                                round writes a later one (spool.c's 'uncertain') */
    /* what a round on a server keeps to be written again (writer.c) */
    held_seg *held; /* segments of the open transaction */
    size_t nheld, capheld;
    seg_builder *spare; /* reset builders, for held ones' functions */
    size_t nspare, capspare;
    kept_blob *kept; /* values put since the builders were last empty */
    size_t nkept, capkept;
    /* the spool (spool.c): a local SQLite tape while a server is away */
    int server;              /* the tape is a server's (its path, at writer_start) */
    int drain_due;           /* the server answered: look for spools left behind */
    int spooling;            /* w->store is the spool */
    int spool_full;          /* over SPOOL_MAX_BYTES: rounds drop until the server is back */
    int spool_pending;       /* a spool file waits to be sent to the server */
    uint64_t spool_retry_ns; /* monotonic, the last try to reach the server again */
    char spool_path[4200];   /* its file ("" until the first outage) */
} writer_state;

struct engine {
    engine_options opt; /* strings point into owned copies below */
    char *path, *host, *python_version, *calltape_version, *sys_path0, *cwd;
    uint8_t *argv;

    pthread_mutex_t mu;
    sem_t wake_writer; /* posted by every waker, a signal handler included */
    pthread_cond_t wake_waiters;
    pthread_mutex_t io_mu;

    chunk *live;
    chunk *full_head, *full_tail;
    chunk *free_list;
    size_t queued_bytes; /* capacity of live + sealed chunks */

    pthread_t thread;
    long thread_tid;           /* the writer's kernel thread id, set by the writer itself */
    int running;               /* the writer thread exists */
    int fork_paused;           /* engine_pause until fork() ends: no writer starts */
    atomic_int alive;          /* 1 from writer_start until the writer's last round */
    int final_done;            /* the writer answered engine_final_round() */
    int stop;                  /* asks the writer to finish */
    atomic_int closed;         /* shut down: appends are dropped (written under mu) */
    int joining;               /* a thread is joining the writer (stop_writer) */
    int room_waiters;          /* producers in engine_wait_room */
    double drain_bytes_per_ns; /* the writer's measured rate, 0: not yet */
    uint64_t flush_req, flush_done;
    int store_failing;

    /* counters: producer-side fields are written under the GIL by the one
     * producer; the others under mu. */
    uint64_t appended_records, appended_bytes, producer_dropped;
    uint64_t written_calls, written_segments, written_bytes, writer_dropped;
    uint64_t written_functions;
    uint64_t writer_cpu_ns;      /* CPU the writer threads used, as of their last round */
    uint64_t writer_cpu_earlier; /* of the writer threads that have ended */
    uint64_t write_errors, unreported_errors;
    uint64_t losses_at_flush; /* drops + errors when the last flush returned */
    char last_error[1024];

    writer_state w;
    engine *next_live; /* the fork registry (queue.c) */
};

/* writer.c */
int writer_start(engine *e);        /* with mu held; 0 or -1 */
void writer_fork_reset(engine *e);  /* in the child, single-threaded */
void writer_free_state(engine *e);  /* writer stopped */
void writer_close_store(engine *e); /* io_mu held, writer idle */

/* writer_state.c: the tape file was deleted (or replaced) while recording:
 * what was committed onto it is gone.  Counts those calls as dropped,
 * reports it, and forgets what the writer resolved in it, so that the
 * session is created again on the file the path names now.  io_mu held.
 * Cannot fail. */
void writer_tape_lost(engine *e);

/* writer.c, for spool.c; io_mu held (the writer thread).  Opens the tape
 * (or the spool while spooling) and creates this process's session on it
 * when it has none: 0, or -1 with the error reported. */
int writer_ensure_store(engine *e);
/* Reports `msg` as a write error (counted) / as a notice (no loss). */
void writer_error(engine *e, const char *msg);
void writer_notice(engine *e, const char *msg);
/* Writes function `f`'s builder as a segment into the open transaction:
 * 0, or -1 (the builder keeps its calls). */
int writer_write_segment(engine *e, writer_txn *t, fn_def *f);
/* Writes again into the open transaction of the store the writer has now
 * what the failed transaction `t` held: its spans and held segments; with
 * `t` NULL, what the calls in builders need on a new store: the kept
 * values and the session's thread rows.  Returns 0, or -1 with the
 * store's error. */
int writer_replay(engine *e, writer_txn *t);
/* Ends the round: the session row (counters, drops, end) and the commit.
 * Returns 0 (t's counts published), -1 when it failed before the commit,
 * -2 when the commit itself failed (on a server: maybe committed). */
int writer_commit_round(engine *e, writer_txn *t);

/* The writer's call ids: ID_BLOCK consecutive ids per block of seqs. */
#define WRITER_ID_BLOCK 65536

/* spool.c, on the writer thread with io_mu held (its header comment says
 * when the writer spools and what it keeps for it). */
/* Keeps a copy of the value `data` (`n` bytes) put under hash `h` on a
 * server.  Returns 0, or -1 when memory ran out. */
int spool_keep_blob(writer_state *w, const uint8_t *h, const uint8_t *data, size_t n);
/* Frees the kept values, when no builder holds a call or `always`. */
void spool_forget_kept(writer_state *w, int always);
/* Moves function `fn`'s builder, just written into a server transaction,
 * to the held segments and gives the function an empty one.  Returns 0, or
 * -1 when memory ran out (the builder stays). */
int spool_hold(writer_state *w, size_t fn);
/* After the transaction ended: the held builders reset, kept for reuse. */
void spool_release_held(writer_state *w);
/* Switches the writer onto the spool (a new spool session; the round's
 * transaction not begun).  Returns 0, or -1 when it cannot (a file tape,
 * a full spool, an unwritable folder). */
int spool_start(engine *e);
/* The server failed in the middle of round `t` (its transaction rolled
 * back; `uncertain`: in its commit): onto the spool, with everything `t`
 * held written again there, a spool transaction open.  Returns 0, or -1
 * (reported; the round is then dropped, counted). */
int spool_take_over(engine *e, writer_txn *t, int uncertain);
/* While spooling (or with a spool to send), every second, or now when
 * `now_too`: back onto the server when it answers, the spool sent there. */
void spool_back(engine *e, int now_too);
/* After a round committed onto the spool: over its bound it takes no
 * more (reported). */
void spool_check_size(engine *e);
/* Sends the spools that ended processes left in this process's spool
 * folder for the same tape (one sender each).  Cannot fail (a spool that
 * cannot be sent stays, reported). */
void spool_drain(engine *e);

/* queue.c: the time of `clock` in ns.  Cannot fail. */
uint64_t engine_now_ns(int clock);

/* engine_wall_ns inline, for the writer (which converts every call's start):
 * a CLOCK_MONOTONIC time of this process as wall-clock ns since the epoch. */
static inline int64_t engine_wall_of(const engine *e, uint64_t mono_ns)
{
    return e->opt.clock_wall_ns + ((int64_t)mono_ns - e->opt.clock_mono_ns);
}

/* queue.c, for the writer thread: whether engine_final_round() was asked
 * (read before a round: that round is then final), and what the writer does
 * after a final round (mu not held; returns only when nothing was asked). */
int engine_final_asked(void);
/* 1 once the process's C exit handlers run (engine_shutdown_all at exit):
 * no server is connected to any more (libpq's TLS library may be gone
 * already), the last rounds of a server tape go to the spool. */
int engine_exiting(void);
void engine_after_final_round(engine *e);

#endif
