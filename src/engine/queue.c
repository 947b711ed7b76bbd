/*
 * queue.c - the producer side of the engine: chunks of records, the
 * lock-free fast path, back-pressure, flush, shutdown and fork handling.
 *
 * The one producer (whoever holds the GIL) copies a record into the live
 * chunk and publishes it with a release store of `committed`.  When the
 * chunk is full it is sealed onto the full list under `mu` and a free or new
 * chunk becomes live.  The writer consumes published bytes from live and
 * sealed chunks alike, so a record is on the tape within one flush interval
 * even when the chunk never fills.
 */
#include "engine_impl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_CHUNK (1u << 20)
#define DEFAULT_MAX_BUFFER (64u << 20)
#define DEFAULT_FLUSH_NS 100000000ull
#define INITIAL_BACKLOG (8u << 20) /* until the writer's rate is measured */

static void registry_add(engine *e);

/* Whether `e` is shut down.  Written under `mu`; the fast path of
 * engine_append reads it without the lock, hence an atomic, relaxed: it
 * orders nothing (a plain load on x86 and ARM), it only makes the racy read
 * defined. */
static inline int is_closed(const engine *e)
{
    return atomic_load_explicit(&e->closed, memory_order_relaxed);
}

static void registry_remove(engine *e);

uint64_t engine_now_ns(int clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static char *dup_str(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

/* Frees the engine struct and the strings it owns. */
static void free_owned(engine *e)
{
    free(e->path);
    free(e->host);
    free(e->python_version);
    free(e->calltape_version);
    free(e->sys_path0);
    free(e->cwd);
    free(e->argv);
    free(e);
}

engine *engine_new(const engine_options *o, char *err, size_t errlen)
{
    engine *e = calloc(1, sizeof *e);
    if (!e) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    e->opt = *o;
    e->path = dup_str(o->path);
    e->host = dup_str(o->host);
    e->python_version = dup_str(o->python_version);
    e->calltape_version = dup_str(o->calltape_version);
    e->sys_path0 = dup_str(o->sys_path0);
    e->cwd = dup_str(o->cwd);
    if (o->argv_len) {
        e->argv = malloc(o->argv_len);
        if (e->argv)
            memcpy(e->argv, o->argv, o->argv_len);
    }
    if (!e->path || (o->argv_len && !e->argv)) {
        snprintf(err, errlen, "out of memory");
        goto error;
    }
    e->opt.path = e->path;
    e->opt.host = e->host;
    e->opt.python_version = e->python_version;
    e->opt.calltape_version = e->calltape_version;
    e->opt.sys_path0 = e->sys_path0;
    e->opt.cwd = e->cwd;
    e->opt.argv = e->argv;
    if (!e->opt.flush_interval_ns)
        e->opt.flush_interval_ns = DEFAULT_FLUSH_NS;
    if (!e->opt.chunk_bytes)
        e->opt.chunk_bytes = DEFAULT_CHUNK;
    if (!e->opt.max_buffer_bytes)
        e->opt.max_buffer_bytes = DEFAULT_MAX_BUFFER;
    if (e->opt.max_buffer_bytes < 2 * e->opt.chunk_bytes)
        e->opt.max_buffer_bytes = 2 * e->opt.chunk_bytes;
    if (!e->opt.clock_mono_ns) {
        e->opt.clock_mono_ns = (int64_t)engine_now_ns(CLOCK_MONOTONIC);
        e->opt.clock_wall_ns = (int64_t)engine_now_ns(CLOCK_REALTIME);
    }
    e->w.parent_session = o->parent_session;
    pthread_mutex_init(&e->mu, NULL);
    pthread_mutex_init(&e->io_mu, NULL);
    sem_init(&e->wake_writer, 0, 0);
    pthread_cond_init(&e->wake_waiters, NULL);
    registry_add(e);
    return e;
error:
    free_owned(e);
    return NULL;
}

int64_t engine_wall_ns(const engine *e, uint64_t mono_ns)
{
    return engine_wall_of(e, mono_ns);
}

const char *engine_path(const engine *e)
{
    return e->path;
}

static chunk *chunk_new(size_t cap)
{
    chunk *c = malloc(sizeof *c + cap);
    if (!c)
        return NULL;
    c->next = NULL;
    atomic_init(&c->committed, 0);
    c->consumed = 0;
    c->cap = cap;
    return c;
}

static int record_is_call(const uint8_t *rec, size_t n)
{
    wreader r;
    wreader_init(&r, rec, n);
    wreader_varint(&r);
    return !r.bad && r.p < r.end && *r.p == REC_CALL;
}

/* How many bytes may wait for the writer before the producer waits
 * (on_full "wait"; "drop" drops only past max_buffer_bytes): what the
 * writer writes in half a flush interval
 * at the rate it was measured to write (chunks taken by a round count
 * until the round ends), at least two chunks, at most max_buffer_bytes.
 * What a SIGKILL loses is this backlog, the round being written and the
 * calls not yet in a sealed chunk: with half an interval waiting, about
 * one flush interval in all, whatever the producers' speed (a whole
 * interval waiting lost up to two: bench soak).  Under mu. */
static size_t backlog_bound(const engine *e)
{
    size_t bound = e->opt.max_buffer_bytes;
    double rate = e->drain_bytes_per_ns;
    double want = rate > 0 ? rate * (double)e->opt.flush_interval_ns / 2 : (double)INITIAL_BACKLOG;
    size_t floor = 2 * e->opt.chunk_bytes;
    if (want < (double)floor)
        want = (double)floor;
    if (want < (double)bound)
        bound = (size_t)want;
    return bound;
}

/* 1 when a chunk of `cap` bytes may join the backlog under `bound`: it
 * fits, or nothing but the live chunk waits for the writer (a record
 * larger than the bound itself is let in alone: it could never fit, and
 * its producer would wait forever).  Under mu. */
static int backlog_admits(const engine *e, size_t cap, size_t bound)
{
    size_t live = e->live ? e->live->cap : 0;
    return e->queued_bytes + cap <= bound || e->queued_bytes <= live;
}

/* writer_start(), unless engine_pause() holds writers off until fork()
 * ends: returns 0 (started), 1 (not now) or -1 (failed, counted).  Under mu,
 * no writer running.  Every place that starts a writer goes through here. */
static int start_writer(engine *e)
{
    return e->fork_paused ? 1 : writer_start(e);
}

/* 1 when a call of `n` bytes does not fit and must wait for the writer to
 * free buffer space (on_full "wait", the writer running and healthy).
 * Under mu. */
static int must_wait(const engine *e, size_t n)
{
    const chunk *c = e->live;
    if (is_closed(e) || !e->running || !c || e->opt.on_full_drop || e->store_failing)
        return 0;
    if (c->cap - atomic_load_explicit(&c->committed, memory_order_relaxed) >= n)
        return 0;
    size_t cap = n > e->opt.chunk_bytes ? n : e->opt.chunk_bytes;
    return !backlog_admits(e, cap, backlog_bound(e));
}

/* Slow path of engine_append: seal the live chunk, find room, start the
 * writer.  Called by the producer; never waits (ENGINE_FULL instead).  Not
 * inlined: the fast path then saves no registers. */
static __attribute__((noinline)) int append_slow(engine *e, const uint8_t *rec, size_t n)
{
    int is_call = record_is_call(rec, n);
    pthread_mutex_lock(&e->mu);
    for (;;) {
        if (is_closed(e))
            goto drop;
        if (!e->running && start_writer(e) < 0)
            goto drop;
        chunk *c = e->live;
        if (c && c->cap - atomic_load_explicit(&c->committed, memory_order_relaxed) >= n)
            break; /* room appeared (cannot happen for the producer, kept for safety) */
        size_t cap = n > e->opt.chunk_bytes ? n : e->opt.chunk_bytes;
        /* definitions are never refused: a call announced once must find
         * its function whenever the tape can be written again */
        size_t bound =
            e->opt.on_full_drop || e->fork_paused ? e->opt.max_buffer_bytes : backlog_bound(e);
        if (!is_call || !e->live || backlog_admits(e, cap, bound)) {
            chunk *fresh = NULL;
            if (e->free_list && e->free_list->cap >= cap) {
                fresh = e->free_list;
                e->free_list = fresh->next;
                fresh->next = NULL;
                atomic_store_explicit(&fresh->committed, 0, memory_order_relaxed);
                fresh->consumed = 0;
            } else {
                fresh = chunk_new(cap);
                if (!fresh)
                    goto drop;
            }
            if (c) {
                if (e->full_tail)
                    e->full_tail->next = c;
                else
                    e->full_head = c;
                e->full_tail = c;
                sem_post(&e->wake_writer);
            }
            e->queued_bytes += fresh->cap;
            e->live = fresh;
            break;
        }
        if (e->opt.on_full_drop || e->store_failing || e->fork_paused)
            goto drop; /* nobody would wake a wait before fork() ends */
        sem_post(&e->wake_writer);
        pthread_mutex_unlock(&e->mu);
        return ENGINE_FULL; /* the caller waits in engine_wait_room, unlocked */
    }
    chunk *c = e->live;
    size_t at = atomic_load_explicit(&c->committed, memory_order_relaxed);
    memcpy(c->data + at, rec, n);
    atomic_store_explicit(&c->committed, at + n, memory_order_release);
    e->appended_records++;
    e->appended_bytes += n;
    pthread_mutex_unlock(&e->mu);
    return ENGINE_APPENDED;
drop:
    if (is_call)
        e->producer_dropped++;
    pthread_mutex_unlock(&e->mu);
    return ENGINE_DROPPED;
}

int engine_append(engine *e, const uint8_t *rec, size_t n)
{
    chunk *c = e->live;
    if (c && !is_closed(e)) {
        size_t at = atomic_load_explicit(&c->committed, memory_order_relaxed);
        if (c->cap - at >= n) {
            memcpy(c->data + at, rec, n);
            atomic_store_explicit(&c->committed, at + n, memory_order_release);
            e->appended_records++;
            e->appended_bytes += n;
            return ENGINE_APPENDED;
        }
    }
    return append_slow(e, rec, n);
}

void engine_wait_room(engine *e, size_t n)
{
    pthread_mutex_lock(&e->mu);
    e->room_waiters++;
    while (must_wait(e, n)) {
        sem_post(&e->wake_writer);
        pthread_cond_wait(&e->wake_waiters, &e->mu);
    }
    if (--e->room_waiters == 0 && is_closed(e))
        pthread_cond_broadcast(&e->wake_waiters); /* engine_free may wait for this */
    pthread_mutex_unlock(&e->mu);
}

/* 1 when published bytes wait for a writer that is not running.  Under
 * mu, the writer stopped (`consumed` is then nobody's). */
static int has_pending(const engine *e)
{
    const chunk *c = e->live;
    return e->full_head ||
           (c && atomic_load_explicit(&c->committed, memory_order_acquire) > c->consumed);
}

void engine_count_dropped(engine *e, uint64_t n)
{
    pthread_mutex_lock(&e->mu);
    e->producer_dropped += n;
    pthread_mutex_unlock(&e->mu);
}

/* Calls lost so far; a flush fails when this grew since the previous one. */
static uint64_t losses(const engine *e)
{
    return e->producer_dropped + e->writer_dropped + e->write_errors;
}

/* With mu held and the writer running: asks for a round that writes
 * everything appended so far and waits for it.  Returns 0, or 1 on timeout. */
static int wait_for_round(engine *e, uint64_t timeout_ns)
{
    uint64_t mine = ++e->flush_req;
    sem_post(&e->wake_writer);
    struct timespec until;
    uint64_t deadline = engine_now_ns(CLOCK_REALTIME) + timeout_ns;
    until.tv_sec = (time_t)(deadline / 1000000000ull);
    until.tv_nsec = (long)(deadline % 1000000000ull);
    while (e->flush_done < mine && e->running)
        if (pthread_cond_timedwait(&e->wake_waiters, &e->mu, &until) == ETIMEDOUT)
            return 1;
    return 0;
}

int64_t engine_begin(engine *e, uint64_t timeout_ns)
{
    pthread_mutex_lock(&e->mu);
    if (e->running || (!is_closed(e) && start_writer(e) == 0))
        wait_for_round(e, timeout_ns);
    int64_t id = e->w.session_id;
    pthread_mutex_unlock(&e->mu);
    return id;
}

int engine_flush(engine *e, uint64_t timeout_ns)
{
    int rc = 0;
    pthread_mutex_lock(&e->mu);
    if (!e->running && !is_closed(e) && has_pending(e))
        (void)start_writer(e); /* calls appended while a park stopped the writer;
                                  a failure is counted in write_errors */
    if (!e->running) {
        rc = e->store_failing || losses(e) != e->losses_at_flush ? -1 : 0;
        e->losses_at_flush = losses(e);
        pthread_mutex_unlock(&e->mu);
        return rc;
    }
    rc = wait_for_round(e, timeout_ns);
    if (rc == 0 && (e->store_failing || losses(e) != e->losses_at_flush))
        rc = -1;
    e->losses_at_flush = losses(e);
    pthread_mutex_unlock(&e->mu);
    return rc;
}

void engine_get_stats(engine *e, engine_stats *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&e->mu);
    out->appended_records = e->appended_records;
    out->appended_bytes = e->appended_bytes;
    out->written_calls = e->written_calls;
    out->written_segments = e->written_segments;
    out->written_bytes = e->written_bytes;
    out->written_functions = e->written_functions;
    out->writer_cpu_ns = e->writer_cpu_ns;
    out->dropped_calls = e->producer_dropped + e->writer_dropped;
    out->write_errors = e->write_errors;
    out->session_id = e->w.session_id;
    memcpy(out->last_error, e->last_error, sizeof out->last_error);
    pthread_mutex_unlock(&e->mu);
}

uint64_t engine_take_errors(engine *e, char *msg, size_t msglen)
{
    pthread_mutex_lock(&e->mu);
    uint64_t n = e->unreported_errors;
    e->unreported_errors = 0;
    if (n && msglen)
        snprintf(msg, msglen, "%s", e->last_error);
    pthread_mutex_unlock(&e->mu);
    return n;
}

/* Stops the writer thread after its final round and waits for it, then
 * (with `checkpoint`) copies the write-ahead log into the tape file, and
 * closes it.  With `for_good`, later appends are dropped; else the next
 * append starts a writer again.  Several threads may stop it at once: one
 * joins, the others wait for it. */
static void stop_writer(engine *e, int for_good, int checkpoint)
{
    pthread_mutex_lock(&e->mu);
    while (e->joining)
        pthread_cond_wait(&e->wake_waiters, &e->mu);
    int running = e->running;
    e->stop = 1;
    e->joining = running;
    if (for_good) {
        atomic_store_explicit(&e->closed, 1, memory_order_relaxed); /* under mu */
        pthread_cond_broadcast(&e->wake_waiters);
    }
    sem_post(&e->wake_writer);
    pthread_mutex_unlock(&e->mu);
    if (running)
        pthread_join(e->thread, NULL);
    pthread_mutex_lock(&e->mu);
    e->running = 0;
    e->joining = 0;
    if (!for_good)
        e->stop = 0;
    pthread_cond_broadcast(&e->wake_waiters); /* producers waiting for the stop */
    pthread_mutex_unlock(&e->mu);
    pthread_mutex_lock(&e->io_mu);
    if (checkpoint && e->w.store)
        (void)store_checkpoint(e->w.store); /* a failure loses nothing: the commits
                                            stay in the -wal file */
    writer_close_store(e);
    pthread_mutex_unlock(&e->io_mu);
}

void engine_shutdown(engine *e, uint64_t timeout_ns)
{
    engine_flush(e, timeout_ns);
    stop_writer(e, 1, 1);
}

static void free_chunks(chunk *c);

/* After stop_writer(e, 0, ...), with mu held and no append running: frees
 * the free list, and the live chunk when everything published in it was
 * consumed (the next append then takes the slow path, which starts a
 * writer).  Returns 1 when published bytes still wait for a writer. */
static int free_idle_chunks(engine *e)
{
    int pending = has_pending(e);
    if (!pending && e->live) {
        e->queued_bytes -= e->live->cap;
        free(e->live);
        e->live = NULL;
    }
    free_chunks(e->free_list);
    e->free_list = NULL;
    return pending;
}

void engine_park(engine *e, uint64_t timeout_ns)
{
    engine_flush(e, timeout_ns);
    stop_writer(e, 0, 1);
}

void engine_trim(engine *e)
{
    pthread_mutex_lock(&e->mu);
    /* a producer may have started a writer again since the park */
    if (!e->running && !is_closed(e) && free_idle_chunks(e))
        (void)start_writer(e); /* calls appended while the writer stopped */
    pthread_mutex_unlock(&e->mu);
}

/* pthread_join() returns when the thread cleared its id, a moment before
 * the kernel forgets it: until then the process still counts it among its
 * threads (/proc/self/stat, which CPython reads to warn about forking a
 * multi-threaded process).  Waits for that, at most about 50 ms. */
static void wait_thread_gone(long tid)
{
#ifdef __linux__
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%ld", tid);
    struct timespec pause = {0, 50000};
    for (int i = 0; i < 1000 && access(path, F_OK) == 0; i++)
        nanosleep(&pause, NULL);
#else
    (void)tid;
#endif
}

void engine_pause(engine *e, uint64_t timeout_ns)
{
    pthread_mutex_lock(&e->mu);
    int running = e->running;
    if (running)
        wait_for_round(e, timeout_ns);
    pthread_mutex_unlock(&e->mu);
    if (running) {
        stop_writer(e, 0, 0); /* no checkpoint: a fork must not wait for other processes */
        pthread_mutex_lock(&e->mu);
        (void)free_idle_chunks(e); /* what is left waits for the next writer */
        pthread_mutex_unlock(&e->mu);
        wait_thread_gone(e->thread_tid);
    }
    /* Python code may run before fork() (other fork hooks, a thread taking
     * the GIL at a switch): an append must not start a writer, which could
     * hold a lock of an allocator that is not fork-safe at the fork. */
    pthread_mutex_lock(&e->mu);
    e->fork_paused = 1;
    pthread_mutex_unlock(&e->mu);
}

static void free_chunks(chunk *c)
{
    while (c) {
        chunk *next = c->next;
        free(c);
        c = next;
    }
}

void engine_free(engine *e)
{
    if (!e)
        return;
    engine_shutdown(e, 5000000000ull);
    pthread_mutex_lock(&e->mu);
    while (e->room_waiters) /* woken by the close: they leave without appending */
        pthread_cond_wait(&e->wake_waiters, &e->mu);
    pthread_mutex_unlock(&e->mu);
    registry_remove(e);
    writer_free_state(e);
    free_chunks(e->full_head);
    free_chunks(e->free_list);
    free(e->live);
    pthread_mutex_destroy(&e->mu);
    pthread_mutex_destroy(&e->io_mu);
    sem_destroy(&e->wake_writer);
    pthread_cond_destroy(&e->wake_waiters);
    free_owned(e);
}

/* ---- fork ----------------------------------------------------------------
 *
 * fork() is handled with pthread_atfork: the prepare handler runs inside
 * fork() itself, after every Python-level fork hook, so no Python code can
 * run (and wait for the GIL) while the engine locks are held.  The list of
 * live engines is process-wide by nature; it is the engine's one mutable
 * global, guarded by registry_mu.
 */

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
/* changed under registry_mu; read without it by engine_final_round() */
static _Atomic(engine *) registry_head;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* engine_final_round(): process-wide by nature, like the registry */
static atomic_int final_asked, final_elected;
/* set by the exit hook: C exit handlers run, libpq's TLS library may be
 * cleaned up already (its handler was registered after ours) */
static atomic_int exiting;
static _Atomic(engine_final_fn) final_then;
static _Atomic uint64_t final_timeout_ns;

static void fork_prepare(void)
{
    pthread_mutex_lock(&registry_mu);
    for (engine *e = atomic_load(&registry_head); e; e = e->next_live) {
        /* Wait for the writer to be between transactions, then close its
         * connection: the child must inherit no SQLite state at all.  The
         * parent reopens the tape at its next commit. */
        pthread_mutex_lock(&e->io_mu);
        writer_close_store(e);
        pthread_mutex_lock(&e->mu);
    }
}

static void fork_parent(void)
{
    for (engine *e = atomic_load(&registry_head); e; e = e->next_live) {
        e->fork_paused = 0; /* the next append starts a writer */
        pthread_mutex_unlock(&e->mu);
        pthread_mutex_unlock(&e->io_mu);
    }
    pthread_mutex_unlock(&registry_mu);
}

static void reset_in_child(engine *e)
{
    /* Only the forking thread exists here; it owns both mutexes. */
    pthread_mutex_unlock(&e->mu);
    pthread_mutex_unlock(&e->io_mu);
    sem_init(&e->wake_writer, 0, 0);
    pthread_cond_init(&e->wake_waiters, NULL);
    /* What the parent had not written is the parent's to write. */
    free_chunks(e->full_head);
    e->full_head = e->full_tail = NULL;
    if (e->live) {
        e->live->next = e->free_list;
        e->free_list = e->live;
        e->live = NULL;
    }
    e->queued_bytes = 0;
    e->room_waiters = 0; /* threads of the parent */
    e->running = e->stop = e->fork_paused = 0;
    atomic_store(&e->alive, 0);
    e->final_done = 0;
    e->flush_req = e->flush_done = 0;
    e->store_failing = 0;
    e->appended_records = e->appended_bytes = e->producer_dropped = 0;
    e->written_calls = e->written_segments = e->written_bytes = e->writer_dropped = 0;
    e->written_functions = 0;
    e->writer_cpu_ns = e->writer_cpu_earlier = 0;
    e->write_errors = e->unreported_errors = 0;
    e->losses_at_flush = 0;
    e->last_error[0] = 0;
    writer_fork_reset(e);
}

static void fork_child(void)
{
    for (engine *e = atomic_load(&registry_head); e; e = e->next_live)
        if (!is_closed(e))
            reset_in_child(e);
        else {
            e->room_waiters = 0; /* threads of the parent */
            pthread_mutex_unlock(&e->mu);
            pthread_mutex_unlock(&e->io_mu);
        }
    /* what the parent was asked before fork() is the parent's */
    atomic_store(&final_asked, 0);
    atomic_store(&final_elected, 0);
    atomic_store(&exiting, 0);
    pthread_mutex_unlock(&registry_mu);
}

static void shutdown_at_exit(void)
{
    atomic_store(&exiting, 1);
    engine_shutdown_all(5000000000ull);
}

int engine_exiting(void)
{
    return atomic_load(&exiting);
}

static void install_atfork(void)
{
    pthread_atfork(fork_prepare, fork_parent, fork_child);
    /* engines nobody freed (an interpreter that leaks its modules) still
     * write their last calls when the process exits */
    atexit(shutdown_at_exit);
}

static void registry_add(engine *e)
{
    pthread_once(&atfork_once, install_atfork);
    pthread_mutex_lock(&registry_mu);
    e->next_live = atomic_load(&registry_head);
    atomic_store(&registry_head, e); /* e complete before a handler can see it */
    pthread_mutex_unlock(&registry_mu);
}

static void registry_remove(engine *e)
{
    pthread_mutex_lock(&registry_mu);
    if (atomic_load(&registry_head) == e)
        atomic_store(&registry_head, e->next_live);
    else
        for (engine *p = atomic_load(&registry_head); p; p = p->next_live)
            if (p->next_live == e) {
                p->next_live = e->next_live;
                break;
            }
    pthread_mutex_unlock(&registry_mu);
}

void engine_shutdown_all(uint64_t timeout_ns)
{
    pthread_mutex_lock(&registry_mu);
    for (engine *e = registry_head; e; e = e->next_live)
        engine_shutdown(e, timeout_ns);
    pthread_mutex_unlock(&registry_mu);
}

void engine_set_seq_floor(engine *e, uint64_t seq_floor)
{
    e->w.seq_floor = seq_floor;
}

/* ---- the final round -----------------------------------------------------
 *
 * A signal handler cannot lock `mu` (the thread it interrupted may hold it)
 * nor wait for the writer.  It sets final_asked and posts the semaphore of
 * every live writer.  Each writer answers with a round that writes all it
 * finds published; the first to answer is elected, flushes the other
 * engines and calls `then`.  A writer ending its last round clears `alive`
 * and then reads final_asked, while the handler sets final_asked and then
 * reads `alive` (both sequentially consistent): either the handler sees the
 * writer alive and the writer sees the request, or the writer had already
 * written everything the handler could want.
 */

int engine_final_round(engine_final_fn then, uint64_t timeout_ns)
{
    atomic_store(&final_then, then);
    atomic_store(&final_timeout_ns, timeout_ns);
    atomic_store(&final_asked, 1);
    int any = 0;
    for (engine *e = atomic_load(&registry_head); e; e = e->next_live)
        if (atomic_load(&e->alive)) {
            sem_post(&e->wake_writer);
            any = 1;
        }
    return any;
}

int engine_final_asked(void)
{
    return atomic_load(&final_asked);
}

void engine_after_final_round(engine *e)
{
    if (atomic_exchange(&final_elected, 1))
        return; /* another writer answers; this one goes on as before */
    uint64_t timeout_ns = atomic_load(&final_timeout_ns);
    /* Walked without registry_mu, as the handler walks it: the thread that
     * holds it may be waiting for this writer (engine_shutdown_all, run by
     * exit() while the signal's final round runs, joins it). */
    for (engine *o = atomic_load(&registry_head); o; o = o->next_live)
        if (o != e)
            engine_flush(o, timeout_ns);
    engine_final_fn then = atomic_load(&final_then);
    if (then)
        then();
}
