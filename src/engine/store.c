/*
 * store.c - which kind of store a tape path names, and opening it: the
 * rest of the store contract (store.h) dispatches through the handle.
 *
 * Invariants: the kinds are tried in the order of `backends` (PostgreSQL
 * URLs, then SQLite files), the last one claiming every path, so a path
 * always has a kind; store_redact hides a URL's password in messages; no
 * SQL here.
 */
#include "store.h"

#include <stdio.h>
#include <string.h>

static const store_backend *const backends[] = {&store_pg_backend, &store_sqlite_backend};
#define NBACKENDS (sizeof backends / sizeof backends[0])

const store_backend *store_backend_for(const char *path)
{
    size_t n = NBACKENDS;
    for (size_t i = 0; i + 1 < n; i++)
        if (backends[i]->claims(path))
            return backends[i];
    return backends[n - 1];
}

store *store_open_write(const char *path, char *err, size_t errlen)
{
    return store_backend_for(path)->open_write(path, err, errlen);
}

store *store_open_read(const char *path, char *err, size_t errlen)
{
    return store_backend_for(path)->open_read(path, err, errlen);
}

int store_check_write(const char *path, char *err, size_t errlen)
{
    return store_backend_for(path)->check_write(path, err, errlen);
}

/* Copies [p, p + len) into out at *k, within n (keeping the NUL). */
static void put(char *out, size_t n, size_t *k, const char *p, size_t len)
{
    for (size_t i = 0; i < len && *k + 1 < n; i++)
        out[(*k)++] = p[i];
    out[*k] = 0;
}

void store_redact(const char *path, char *out, size_t n)
{
    if (!n)
        return;
    size_t k = 0;
    out[0] = 0;
    const char *scheme = strstr(path, "://");
    if (!scheme) {
        put(out, n, &k, path, strlen(path));
        return;
    }
    const char *user = scheme + 3;
    const char *end = user + strcspn(user, "/?#");
    const char *at = NULL;
    for (const char *c = user; c < end; c++)
        if (*c == '@')
            at = c; /* the last @ ends the user part */
    const char *colon = at ? memchr(user, ':', (size_t)(at - user)) : NULL;
    const char *p = path;
    if (colon) {
        put(out, n, &k, p, (size_t)(colon + 1 - p));
        put(out, n, &k, "***", 3);
        p = at;
    }
    /* the query's password=...: up to the next & */
    for (;;) {
        const char *q = strstr(p, "password=");
        if (!q || (q > path && q[-1] != '?' && q[-1] != '&')) {
            if (!q) {
                put(out, n, &k, p, strlen(p));
                return;
            }
            put(out, n, &k, p, (size_t)(q + 9 - p));
            p = q + 9;
            continue;
        }
        put(out, n, &k, p, (size_t)(q + 9 - p));
        put(out, n, &k, "***", 3);
        p = q + 9 + strcspn(q + 9, "&#");
    }
}

char *store_ids_text(const int64_t *ids, size_t n, char open, char close)
{
    wbuf b;
    wbuf_init(&b, NULL, 0); /* on the heap from its first byte: the caller frees it */
    wbuf_byte(&b, (uint8_t)open);
    for (size_t i = 0; i < n; i++) {
        if (i)
            wbuf_byte(&b, ',');
        wbuf_decimal(&b, ids[i]);
    }
    wbuf_byte(&b, (uint8_t)close);
    wbuf_byte(&b, 0);
    if (b.failed) {
        if (b.on_heap)
            wbuf_release_heap(&b);
        return NULL;
    }
    return (char *)b.data;
}
