/*
 * bgwrite.c - a background file writer: one thread writes a buffer to a
 * file descriptor while its producer (an export) fills the next, so that
 * the formatting and the disk's time overlap instead of adding up.
 *
 * Invariants: at most one buffer is in flight (`job`, owned by the writer
 * while `busy`); a submit swaps the producer's wbuf with the written one,
 * so bytes are never copied and memory is two buffers; the first failed
 * write is kept in `err` and stops all later writes; every write is whole
 * (short writes and EINTR are continued).  No Python here.
 */
#include "engine.h"

#include <errno.h>
#include <unistd.h>

/* Writes all `n` bytes at `p` to `fd`.  0, or errno. */
static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return errno;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static void *writer_main(void *arg)
{
    bgwrite *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->busy && !w->stop)
            pthread_cond_wait(&w->cv, &w->mu);
        if (!w->busy)
            break; /* stopped with nothing in flight */
        pthread_mutex_unlock(&w->mu);
        int err = w->err ? 0 : write_all(w->fd, w->job.data, w->job.len);
        pthread_mutex_lock(&w->mu);
        if (err && !w->err)
            w->err = err;
        w->job.len = 0;
        w->busy = 0;
        pthread_cond_broadcast(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

void bgw_init(bgwrite *w, int fd)
{
    memset(w, 0, sizeof *w);
    w->fd = fd;
    wbuf_init(&w->job, NULL, 0);
    w->locks = pthread_mutex_init(&w->mu, NULL) == 0;
    if (w->locks && pthread_cond_init(&w->cv, NULL) != 0) {
        pthread_mutex_destroy(&w->mu);
        w->locks = 0;
    }
}

int bgw_submit(bgwrite *w, wbuf *b)
{
    if (!w->started && !w->err && w->locks && !w->no_thread)
        w->no_thread = !(w->started = pthread_create(&w->thread, NULL, writer_main, w) == 0);
    if (!w->started) { /* no thread: written here */
        if (!w->err)
            w->err = write_all(w->fd, b->data, b->len);
        b->len = 0;
        return w->err;
    }
    pthread_mutex_lock(&w->mu);
    while (w->busy)
        pthread_cond_wait(&w->cv, &w->mu);
    int err = w->err;
    if (!err) {
        wbuf written = w->job; /* empty: its bytes are on the file */
        w->job = *b;
        *b = written;
        w->busy = w->job.len > 0;
        pthread_cond_broadcast(&w->cv);
    } else {
        b->len = 0;
    }
    pthread_mutex_unlock(&w->mu);
    return err;
}

int bgw_finish(bgwrite *w)
{
    if (w->started) {
        pthread_mutex_lock(&w->mu);
        w->stop = 1;
        pthread_cond_broadcast(&w->cv);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->thread, NULL); /* it ends once the job in flight is written */
        w->started = 0;
    }
    int err = w->err;
    wbuf_free(&w->job);
    if (w->locks) {
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        w->locks = 0;
    }
    return err;
}
