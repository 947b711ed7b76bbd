/*
 * retain.c - reading retention rules: sizes ("2GB", "500MiB"), ages ("7d",
 * "12h") and a whole policy ("older_than=7d,max_size=2GB,keep_sessions=10"),
 * the one parser behind `calltape prune --max-size`, configure(retain=...),
 * CALLTAPE_RETAIN and `calltape run --retain`.
 *
 * Invariants: a number is decimal, with an optional fraction; sizes take
 * B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of
 * 1024), in any case, a bare number being bytes; ages take s, m, h, d, w;
 * a value out of range (negative, over INT64_MAX) is refused, and in a
 * policy a rule that would delete the recording session too (an age or
 * size of 0, keep_sessions=0); every error is one sentence naming the
 * text.
 */
#include "engine.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Reads a non-negative decimal at the start of `text` into *v and sets
 * *end after it (and after blanks).  Returns 0, or -1 when there is none. */
static int read_number(const char *text, double *v, const char **end)
{
    const char *p = text;
    while (*p == ' ')
        p++;
    const char *digits = p;
    while ((*p >= '0' && *p <= '9') || *p == '.')
        p++;
    if (p == digits || (p - digits == 1 && *digits == '.'))
        return -1;
    char buf[64];
    size_t n = (size_t)(p - digits), dots = 0;
    for (size_t i = 0; i < n; i++)
        dots += digits[i] == '.';
    if (n >= sizeof buf || dots > 1)
        return -1;
    memcpy(buf, digits, n);
    buf[n] = 0;
    *v = strtod(buf, NULL);
    while (*p == ' ')
        p++;
    *end = p;
    return 0;
}

/* `v` times `unit` into *out when it fits an int64_t.  0 or -1. */
static int scaled(double v, double unit, int64_t *out)
{
    double x = v * unit;
    if (!isfinite(x) || x < 0 || x >= 9.2e18)
        return -1;
    *out = (int64_t)x;
    return 0;
}

int retain_parse_size(const char *text, int64_t *bytes)
{
    static const struct {
        const char *name;
        double unit;
    } units[] = {{"", 1},
                 {"b", 1},
                 {"kb", 1e3},
                 {"mb", 1e6},
                 {"gb", 1e9},
                 {"tb", 1e12},
                 {"kib", 1024.0},
                 {"mib", 1048576.0},
                 {"gib", 1073741824.0},
                 {"tib", 1099511627776.0},
                 {"k", 1e3},
                 {"m", 1e6},
                 {"g", 1e9}};
    double v = 0;
    const char *unit = NULL;
    if (!text || read_number(text, &v, &unit) < 0)
        return -1;
    size_t n = strlen(unit);
    while (n && unit[n - 1] == ' ')
        n--;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strlen(units[i].name) == n && strncasecmp(unit, units[i].name, n) == 0)
            return scaled(v, units[i].unit, bytes);
    return -1;
}

int retain_parse_age(const char *text, int64_t *ns)
{
    double v = 0;
    const char *unit = NULL;
    if (!text || read_number(text, &v, &unit) < 0 || !unit[0] || (unit[1] && unit[1] != ' '))
        return -1;
    const char *at = strchr("smhdw", unit[0]); /* unit[0] is not NUL here */
    static const double seconds[] = {1, 60, 3600, 86400, 604800};
    if (!at)
        return -1;
    return scaled(v, seconds[at - "smhdw"] * 1e9, ns);
}

/* Reads the value of rule `key` (its text `v`) into `p`.  0 or -1 with
 * `err`. */
static int read_rule(const char *key, size_t klen, const char *v, retain_policy *p, char *err,
                     size_t errlen)
{
    if (klen == 10 && strncmp(key, "older_than", klen) == 0) {
        if (retain_parse_age(v, &p->older_than_ns) == 0 && p->older_than_ns > 0)
            return 0;
        snprintf(err, errlen, "cannot read the age %s of older_than: use 30m, 12h, 7d or 2w", v);
    } else if (klen == 8 && strncmp(key, "max_size", klen) == 0) {
        if (retain_parse_size(v, &p->max_bytes) == 0 && p->max_bytes > 0)
            return 0;
        snprintf(err, errlen, "cannot read the size %s of max_size: use 500MB, 2GB or 1.5GiB", v);
    } else if (klen == 13 && strncmp(key, "keep_sessions", klen) == 0) {
        char *end = NULL;
        long long n = strtoll(v, &end, 10);
        if (end != v && *end == 0 && n >= 1) {
            p->keep_sessions = n;
            return 0;
        }
        snprintf(err, errlen,
                 "cannot read keep_sessions=%s: give how many of the newest"
                 " sessions stay (1 or more: the recording one is among them)",
                 v);
    } else {
        snprintf(err, errlen,
                 "unknown retention rule %.*s (use older_than, max_size or"
                 " keep_sessions)",
                 (int)klen, key);
    }
    return -1;
}

int retain_parse(const char *text, retain_policy *p, char *err, size_t errlen)
{
    p->older_than_ns = p->keep_sessions = p->max_bytes = -1;
    char buf[256];
    if (!text || strlen(text) >= sizeof buf) {
        snprintf(err, errlen, "the retention rules are too long (at most %zu bytes)",
                 sizeof buf - 1);
        return -1;
    }
    snprintf(buf, sizeof buf, "%s", text);
    int rules = 0;
    for (char *save = NULL, *item = strtok_r(buf, ",", &save); item;
         item = strtok_r(NULL, ",", &save)) {
        while (*item == ' ')
            item++;
        if (!*item)
            continue;
        char *eq = strchr(item, '=');
        if (!eq) {
            snprintf(err, errlen,
                     "cannot read the retention rule %s: use older_than=7d,"
                     "max_size=2GB,keep_sessions=10 (any of them)",
                     item);
            return -1;
        }
        size_t klen = (size_t)(eq - item);
        while (klen && item[klen - 1] == ' ')
            klen--;
        if (read_rule(item, klen, eq + 1, p, err, errlen) < 0)
            return -1;
        rules++;
    }
    if (!rules) {
        snprintf(err, errlen,
                 "no retention rule in %s: use older_than=7d,max_size=2GB,"
                 "keep_sessions=10 (any of them)",
                 text[0] ? text : "\"\"");
        return -1;
    }
    return 0;
}
