/*
 * energy.c - RAPL energy counters read from Linux powercap, for calls
 * recorded with energy=True.
 *
 * The package domain is <root>/intel-rapl:0/energy_uj; its DRAM subzone is
 * the intel-rapl:0:N directory whose `name` file says "dram".  <root> is
 * $CALLTAPE_POWERCAP_ROOT, else /sys/class/powercap.  The counter files are
 * opened once, at the first call that asks for energy, and read with
 * pread(2); a counter that passed its max_energy_range_uj wraps to zero,
 * which the difference accounts for.
 *
 * Invariants: when the package counter cannot be opened, energy is marked
 * unavailable for the life of the process, one RecordingWarning names the
 * path and why, and calls are recorded without energy; nothing here raises
 * into a recorded call; the descriptors are closed when the module is
 * freed.
 */
#include "instruments.h"
#include "sink.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define CT_POWERCAP_DEFAULT "/sys/class/powercap"

/* Writes "dir/leaf" into out[PATH_MAX]; returns 0, or -1 when too long. */
static int join(char *out, const char *dir, const char *leaf)
{
    int n = snprintf(out, PATH_MAX, "%s/%s", dir, leaf);
    if (n < 0 || n >= PATH_MAX) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return 0;
}

/* Reads a small decimal file; returns 0 with *out, or -1 (errno set). */
static int read_number(int fd, uint64_t *out)
{
    char buf[32];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0) {
        if (n == 0)
            errno = ENODATA;
        return -1;
    }
    buf[n] = 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(buf, &end, 10);
    if (end == buf || errno) {
        errno = errno ? errno : EINVAL;
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

/* The counter of one zone directory: its energy_uj (kept open) and range. */
static int open_zone(const char *dir, ct_energy_counter *c, char *failed, size_t failedlen)
{
    char path[PATH_MAX];
    int fd = join(path, dir, "energy_uj") < 0 ? -1 : open(path, O_RDONLY | O_CLOEXEC);
    uint64_t first;
    if (fd < 0 || read_number(fd, &first) < 0) {
        snprintf(failed, failedlen, "%s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    c->fd = fd;
    c->range = 0;
    int rfd = join(path, dir, "max_energy_range_uj") < 0 ? -1 : open(path, O_RDONLY | O_CLOEXEC);
    if (rfd >= 0) {
        if (read_number(rfd, &c->range) < 0)
            c->range = 0;
        close(rfd);
    }
    return 0;
}

/* 1 when the file `dir`/name holds `want` (before its newline). */
static int zone_named(const char *dir, const char *want)
{
    char path[PATH_MAX], buf[64];
    int fd = join(path, dir, "name") < 0 ? -1 : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    buf[strcspn(buf, "\n")] = 0;
    return strcmp(buf, want) == 0;
}

/* Finds and opens the DRAM subzone of `pkg_dir`, if any. */
static void open_dram(const char *pkg_dir, ct_energy_counter *dram)
{
    char failed[PATH_MAX + 64];
    DIR *d = opendir(pkg_dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "intel-rapl:0:", 13) != 0)
            continue;
        char sub[PATH_MAX];
        if (join(sub, pkg_dir, e->d_name) == 0 && zone_named(sub, "dram") &&
            open_zone(sub, dram, failed, sizeof failed) == 0)
            break;
    }
    closedir(d);
}

int ct_energy_open(ct_state *st)
{
    ct_energy *en = &st->instr.energy;
    if (en->state)
        return en->state;
    const char *root = getenv("CALLTAPE_POWERCAP_ROOT");
    if (!root || !*root)
        root = CT_POWERCAP_DEFAULT;
    char pkg_dir[PATH_MAX], failed[PATH_MAX + 64];
    en->pkg.fd = en->dram.fd = -1;
    if (join(pkg_dir, root, "intel-rapl:0") < 0) {
        snprintf(failed, sizeof failed, "%.200s/intel-rapl:0: %s", root, strerror(errno));
    } else if (open_zone(pkg_dir, &en->pkg, failed, sizeof failed) == 0) {
        open_dram(pkg_dir, &en->dram);
        en->state = 1;
        return 1;
    }
    en->state = -1;
    char msg[PATH_MAX + 300];
    snprintf(msg, sizeof msg,
             "calltape cannot read energy counters (%s; set CALLTAPE_POWERCAP_ROOT to"
             " another powercap directory): calls are recorded without energy",
             failed);
    ct_warn_once(st, "energy", msg);
    return -1;
}

void ct_energy_close(ct_state *st)
{
    ct_energy *en = &st->instr.energy;
    if (en->state == 1) {
        close(en->pkg.fd);
        if (en->dram.fd >= 0)
            close(en->dram.fd);
    }
    en->pkg.fd = en->dram.fd = -1;
    en->state = 0;
}

int ct_energy_read(const ct_energy *en, uint64_t *pkg, uint64_t *dram)
{
    if (read_number(en->pkg.fd, pkg) < 0)
        return -1;
    *dram = 0;
    if (en->dram.fd >= 0 && read_number(en->dram.fd, dram) < 0)
        return -1;
    return 0;
}

uint64_t ct_energy_delta(const ct_energy_counter *c, uint64_t start, uint64_t end)
{
    if (end >= start)
        return end - start;
    /* the counter wrapped at max_energy_range_uj (unknown range: count from 0) */
    return c->range > start ? end + (c->range - start) : end;
}
