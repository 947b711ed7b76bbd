/*
 * instruments.c - what is measured around a call besides the wall clock:
 * the thread CPU clock, the resident set size (/proc/self/statm, opened
 * once per process and read with pread), and the energy counters read at
 * the start and end of a call (the counters themselves: energy.c).
 *
 * Invariants: nothing here raises into a recorded call; a value that
 * cannot be read is 0 (rss) or leaves its flag clear (energy).
 */
#include "instruments.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Reads the start of the procfs file `path`, kept open in *fd (*state: 0
 * not opened yet, 1 open, -1 cannot be read), into `buf` (`cap` bytes,
 * NUL-ended).  Returns the bytes read, 0 when none could be. */
static size_t read_kept(const char *path, int *fd, int *state, char *buf, size_t cap)
{
    if (*state == 0) {
        *fd = open(path, O_RDONLY | O_CLOEXEC);
        *state = *fd >= 0 ? 1 : -1;
    }
    ssize_t n = *state > 0 ? pread(*fd, buf, cap - 1, 0) : -1;
    if (n <= 0)
        return 0;
    buf[n] = 0;
    return (size_t)n;
}

/* Closes a file read_kept() keeps; the next read opens it again. */
static void forget_kept(int *fd, int *state)
{
    if (*state > 0)
        close(*fd);
    *fd = -1;
    *state = 0;
}

int64_t ct_read_rss(ct_state *st)
{
    if (st->instr.statm_state == 0)
        st->instr.page_size = sysconf(_SC_PAGESIZE);
    char buf[128];
    long pages = 0, resident = 0;
    if (!read_kept("/proc/self/statm", &st->instr.statm_fd, &st->instr.statm_state, buf,
                   sizeof buf) ||
        sscanf(buf, "%ld %ld", &pages, &resident) != 2)
        return 0;
    return (int64_t)resident * (int64_t)st->instr.page_size;
}

void ct_rss_forget(ct_state *st)
{
    forget_kept(&st->instr.statm_fd, &st->instr.statm_state);
    forget_kept(&st->instr.stat_fd, &st->instr.stat_state);
    st->instr.pid = 0;
}

long ct_thread_count(ct_state *st)
{
    char buf[1024];
    if (!read_kept("/proc/self/stat", &st->instr.stat_fd, &st->instr.stat_state, buf, sizeof buf))
        return 0;
    char *p = strrchr(buf, ')'); /* the command may hold spaces and parentheses */
    for (int field = 2; p && field < 20; field++)
        p = strchr(p + 1, ' ');
    return p ? strtol(p + 1, NULL, 10) : 0;
}

uint64_t ct_thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

__attribute__((noinline)) void ct_energy_start(ct_state *st, ct_callinfo *ci)
{
    if ((st->instr.energy.state == 1 || ct_energy_open(st) == 1) &&
        ct_energy_read(&st->instr.energy, &ci->energy_pkg, &ci->energy_dram) == 0)
        ci->flags |= REC_HAS_ENERGY;
}

__attribute__((noinline)) void ct_energy_end(ct_state *st, const ct_callinfo *ci, wbuf *b,
                                             uint8_t *flags_at)
{
    uint64_t pkg_end, dram_end;
    if (ct_energy_read(&st->instr.energy, &pkg_end, &dram_end) < 0) {
        *flags_at &= (uint8_t)~REC_HAS_ENERGY;
        return;
    }
    wbuf_varint(b, ct_energy_delta(&st->instr.energy.pkg, ci->energy_pkg, pkg_end));
    wbuf_varint(b, st->instr.energy.dram.fd >= 0
                       ? ct_energy_delta(&st->instr.energy.dram, ci->energy_dram, dram_end) + 1
                       : ENERGY_DRAM_NONE);
}
