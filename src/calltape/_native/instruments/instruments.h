/*
 * instruments.h - what is measured around a call, shared by every capture
 * path: the clocks, the resident set size (instruments.c) and the RAPL
 * energy counters (energy.c, read around a call by instruments.c).
 *
 * Layering: instruments call the engine's wbuf and sink.c's ct_warn_once
 * only.
 */
#ifndef CALLTAPE_INSTRUMENTS_H
#define CALLTAPE_INSTRUMENTS_H

#include "binding.h"

#include <unistd.h>

/* Everything measured around one call, before its outcome is known. */
typedef struct ct_callinfo {
    uint64_t seq, parent, depth, thread, start;
    uint16_t flags;
    uint64_t cpu_start, cpu_end; /* thread CPU clock, read inside [start, end] */
    int64_t rss_before;
    uint64_t energy_pkg, energy_dram; /* counters at the start */
} ct_callinfo;

/* CPU time of the calling thread in ns. */
uint64_t ct_thread_cpu_ns(void);

/* Starts the measured interval of a call: the wall clock, then the thread
 * CPU clock, so that the CPU interval lies inside the wall interval.  What
 * calltape does before (reading RSS, encoding the arguments) is outside
 * both. */
static inline void ct_call_begin(ct_callinfo *ci)
{
    ci->start = ct_now_ns();
    if (ci->flags & REC_HAS_CPU)
        ci->cpu_start = ct_thread_cpu_ns();
}

/* Ends it in the nested order: the thread CPU clock, then the wall clock.
 * Returns the wall end. */
static inline uint64_t ct_call_end(ct_callinfo *ci)
{
    if (ci->flags & REC_HAS_CPU)
        ci->cpu_end = ct_thread_cpu_ns();
    return ct_now_ns();
}

/* The resident set size of this process in bytes (0 when unknown), read
 * with pread from /proc/self/statm opened once per process (st->instr.statm_fd;
 * ct_rss_forget closes it in a forked child).  Never raises. */
int64_t ct_read_rss(ct_state *st);
/* Closes the statm and stat files of the parent and forgets its pid (in a
 * forked child). */
void ct_rss_forget(ct_state *st);
/* This process's id, asked of the kernel once per process (ct_rss_forget
 * makes a forked child ask again). */
static inline long ct_pid(ct_state *st)
{
    if (!st->instr.pid)
        st->instr.pid = (long)getpid();
    return st->instr.pid;
}
/* The number of threads of this process (field 20 of /proc/self/stat, read
 * with one pread of the file opened once per process), 0 when unknown. */
long ct_thread_count(ct_state *st);

/* Reads the energy counters at the start of a call and flags REC_HAS_ENERGY
 * in ci->flags when they could be read (ct_energy_end reads the end).
 * Never raises. */
void ct_energy_start(ct_state *st, ct_callinfo *ci);
/* Reads the counters at the end of a call and writes the package uJ and the
 * DRAM uJ + 1 (or ENERGY_DRAM_NONE) onto `b`; when they cannot be read,
 * writes nothing and clears REC_HAS_ENERGY in the record's flags byte at
 * `flags_at`.  Out of line: the hot path only tests the flag. */
void ct_energy_end(ct_state *st, const ct_callinfo *ci, wbuf *b, uint8_t *flags_at);

/* energy.c */
/* Opens the RAPL counters on first use.  Returns 1 when they can be read,
 * -1 when not (a RecordingWarning names the path, once).  Never raises. */
int ct_energy_open(ct_state *st);
/* Closes the counters (module teardown). */
void ct_energy_close(ct_state *st);
/* Reads the package and DRAM counters (dram 0 without a DRAM zone).
 * Returns 0, or -1 when a counter cannot be read. */
int ct_energy_read(const ct_energy *en, uint64_t *pkg, uint64_t *dram);
/* Microjoules from `start` to `end` of counter `c`, across a wrap. */
uint64_t ct_energy_delta(const ct_energy_counter *c, uint64_t start, uint64_t end);

#endif
