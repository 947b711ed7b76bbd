/*
 * store.c - which kind of store a tape path names, and opening it: the
 * rest of the store contract (store.h) dispatches through the handle.
 *
 * Invariants: the kinds are tried in the order of `backends`, the last
 * one (SQLite files) claiming every path, so a path always has a kind;
 * no SQL here.
 */
#include "store.h"

static const store_backend *const backends[] = {&store_sqlite_backend};
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
