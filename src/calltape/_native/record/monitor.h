/*
 * monitor.h - calltape.monitor as the rest of the binding sees it
 * (monitor.c): stopped at exit, cleared and traversed with the module.
 */
#ifndef CALLTAPE_MONITOR_H
#define CALLTAPE_MONITOR_H

#include "binding.h"

/* Stops the running calltape.monitor, if any.  Never raises. */
void ct_monitor_stop_running(ct_state *st);
/* Releases what the monitor state holds (module clear). */
void ct_monitor_clear(ct_state *st);
/* Visits what the running monitor's state owns (GC support). */
int ct_monitor_traverse(const ct_state *st, visitproc visit, void *arg);

#endif
