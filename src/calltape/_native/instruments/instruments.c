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

int64_t ct_read_rss(ct_state *st)
{
    if (st->instr.statm_state == 0) {
        st->instr.statm_fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
        st->instr.statm_state = st->instr.statm_fd >= 0 ? 1 : -1;
        st->instr.page_size = sysconf(_SC_PAGESIZE);
    }
    if (st->instr.statm_state < 0)
        return 0;
    char buf[128];
    ssize_t n = pread(st->instr.statm_fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    long pages = 0, resident = 0;
    if (sscanf(buf, "%ld %ld", &pages, &resident) != 2)
        return 0;
    return (int64_t)resident * (int64_t)st->instr.page_size;
}

void ct_rss_forget(ct_state *st)
{
    if (st->instr.statm_state > 0)
        close(st->instr.statm_fd);
    st->instr.statm_fd = -1;
    st->instr.statm_state = 0;
    if (st->instr.stat_state > 0)
        close(st->instr.stat_fd);
    st->instr.stat_fd = -1;
    st->instr.stat_state = 0;
    st->instr.pid = 0;
}

long ct_thread_count(ct_state *st)
{
    if (st->instr.stat_state == 0) {
        st->instr.stat_fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
        st->instr.stat_state = st->instr.stat_fd >= 0 ? 1 : -1;
    }
    if (st->instr.stat_state < 0)
        return 0;
    char buf[1024];
    ssize_t n = pread(st->instr.stat_fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = 0;
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
