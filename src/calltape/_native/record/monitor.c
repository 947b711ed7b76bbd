/*
 * monitor.c - calltape.monitor / `calltape run`: record the calls of whole
 * programs without decorators, onto the same tape and in the same call
 * records as @calltape.record.
 *
 * This file: the Monitor type (its options, start, stop).  Hooks: on
 * CPython 3.12+ sys.monitoring with the profiler tool id
 * (monitor_sysmon.c); on 3.11 a C profile function on every thread
 * (monitor_profile.c); both run the events of monitor_events.h.  Which
 * code is recorded: monitor_code.c.  What they share: monitor_impl.h.
 *
 * The decision for a code object (record it or not, its function id, its
 * parameter layout) is made once and kept in the code object's extra slot
 * (a ct_codeinfo), tagged with the monitor generation it was made for.
 *
 * Each thread keeps a shadow stack of the calls it is running (its own
 * thread-local array, freed by a pthread key destructor when the thread
 * ends); encoded arguments wait in a per-thread LIFO byte arena.  Events are
 * not trusted to arrive balanced: a return is matched against the stack by
 * code object (and, for a generator or coroutine, by the generator running
 * it: one being closed while it is freed may run its frame once more after
 * its entry was recorded as closed, and must not be taken for another
 * generator of the same code below it), unmatched returns (calls that began
 * before monitoring) are ignored, and entries above a match are dropped.  A generator or coroutine
 * that suspends leaves the stack: its entry is parked (parking.c) under its
 * generator, whose weak reference's callback records it as closed if it is
 * freed without resuming, until it resumes, so one record covers its whole
 * life, as with the decorator.
 *
 * Invariants: callbacks never raise and never leave an exception set; while
 * calltape runs its own or user code for capture (ct_thread.busy), events
 * are ignored; the decorator and the monitor share ct_thread, so parent ids
 * link calls recorded either way.
 */
#include "monitor_impl.h"

#include "options.h"

/* ---- Monitor: start / stop ---------------------------------------------- */

static PyObject *Monitor_start(PyObject *self, PyObject *unused)
{
    (void)unused;
    Monitor *m = (Monitor *)self;
    ct_state *st = m->st;
    mon_active *a = &st->rec.monitor;
    if (a->mon) {
        PyErr_SetString(PyExc_RuntimeError,
                        a->mon == m ? "this calltape.monitor is already running"
                                    : "another calltape.monitor is already running in this"
                                      " process; stop it first");
        return NULL;
    }
    ct_engine_slot *slot = ct_engine_for(st, m->tape);
    if (!slot)
        return NULL;
    if (m->tape)
        slot->pinned = 1;
    if (!a->key_made) {
        if (pthread_key_create(&a->key, ct_mon_stack_free) != 0)
            return PyErr_Format(PyExc_RuntimeError, "cannot create a thread key");
        a->key_made = 1;
    }
    if (a->extra_index < 0) {
        a->extra_index = request_code_extra(ct_mon_codeinfo_free);
        if (a->extra_index < 0)
            return PyErr_Format(PyExc_RuntimeError, "no code extra slot is left for calltape");
    }
    if (!a->park_gone &&
        !(a->park_gone = PyCFunction_NewEx(&ct_mon_parked_gone_def, st->module, NULL)))
        return NULL;
    a->st = st;
    a->slot = slot;
    a->generation = ++st->rec.monitor_generation;
    a->mon = (Monitor *)Py_NewRef(self);
    if (ct_mon_hooks_install(st->module, a) < 0) {
        Py_CLEAR(a->mon);
        return NULL;
    }
    m->running = 1;
    return Py_NewRef(self);
}

/* Records the generators still parked as closed (they never finished). */
static void close_parked(mon_active *a)
{
    ct_park_drain(&a->parked, ct_mon_emit_abandoned, a);
}

static PyObject *Monitor_stop(PyObject *self, PyObject *unused)
{
    (void)unused;
    Monitor *m = (Monitor *)self;
    mon_active *a = &m->st->rec.monitor;
    if (a->mon != m)
        return Py_NewRef(Py_None);
    ct_mon_hooks_remove(m->st->module, a);
    close_parked(a);
    mon_stack *s = ct_mon_tls_stack;
    if (s) { /* calls still running on this thread are not recorded */
        ct_thread *t = ct_thread_get();
        mon_unwind_to(s, 0, t);
    }
    m->running = 0;
    Py_CLEAR(a->mon);
    a->generation = ++m->st->rec.monitor_generation;
    return Py_NewRef(Py_None);
}

static PyObject *Monitor_exit(PyObject *self, PyObject *args)
{
    (void)args;
    return Monitor_stop(self, NULL);
}

/* ---- Monitor: type ------------------------------------------------------ */

/* A tuple of str from an iterable of str (or one str). */
static PyObject *str_tuple(PyObject *v, const char *what)
{
    if (v == Py_None)
        return PyTuple_New(0);
    if (PyUnicode_Check(v))
        return PyTuple_Pack(1, v);
    PyObject *t = PySequence_Tuple(v);
    if (!t)
        return NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(t); i++)
        if (!PyUnicode_Check(PyTuple_GET_ITEM(t, i))) {
            PyErr_Format(PyExc_TypeError, "%s must be strings, not %.100s", what,
                         Py_TYPE(PyTuple_GET_ITEM(t, i))->tp_name);
            Py_DECREF(t);
            return NULL;
        }
    return t;
}

/* Takes the recording options (checked; o's references move to `m`). */
static void monitor_options(Monitor *m, ct_options *o)
{
    m->tape = o->tape;
    o->tape = NULL; /* m's now */
    m->opt_args = (uint8_t)o->args;
    m->opt_result = (uint8_t)o->result;
    m->opt_cpu = (uint8_t)o->cpu;
    m->opt_memory = (uint8_t)o->memory;
    m->opt_energy = (uint8_t)(o->energy > 0);
    m->opt_locals = (uint8_t)o->locals;
    m->opt_globals = (uint8_t)o->globals;
    if (o->energy > 0)
        ct_energy_open(m->st); /* an unavailable counter is reported now, once */
    m->max_depth = o->max_depth;
    m->max_value_bytes = o->max_value_bytes < 0 ? m->st->rec.max_value_bytes : o->max_value_bytes;
    m->sample = (uint32_t)(o->sample > UINT32_MAX ? UINT32_MAX : o->sample);
    ct_options_release(o);
}

static PyObject *Monitor_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"include", "exclude", "paths", "never", "max_value_depth", NULL};
    PyObject *include = Py_None, *exclude = Py_None, *paths = Py_None, *never = Py_None;
    PyObject *v[CT_NOPTS], *rest;
    Py_ssize_t value_depth = 0;
    ct_options o;
    unsigned accepted = CT_OPT_ALL & ~(CT_OPT_BIT(CT_OPT_YIELDS) | CT_OPT_BIT(CT_OPT_REDACT) |
                                       CT_OPT_BIT(CT_OPT_SANITIZE));
    if (ct_options_take(kw, accepted, v, &rest) < 0)
        return NULL;
    int ok = PyArg_ParseTupleAndKeywords(args, rest, "|OO$OOn:monitor", kwlist, &include, &exclude,
                                         &paths, &never, &value_depth);
    Py_XDECREF(rest);
    if (!ok)
        return NULL;
    if (value_depth < 0)
        return PyErr_Format(PyExc_ValueError, "max_value_depth must be >= 0 (0: no limit), not %zd",
                            value_depth);
    ct_state *st = PyType_GetModuleState(type);
    if (!st || ct_options_read(v, &o) < 0)
        return NULL;
    Monitor *m = (Monitor *)type->tp_alloc(type, 0);
    if (!m) {
        ct_options_release(&o);
        return NULL;
    }
    m->st = st;
    m->module_ref = Py_NewRef(st->module);
    monitor_options(m, &o);
    m->max_value_depth = (int)(value_depth > 1000 ? 1000 : value_depth);
    m->modules = str_tuple(include, "include");
    m->exclude = m->modules ? str_tuple(exclude, "exclude") : NULL;
    m->paths = m->exclude ? str_tuple(paths, "paths") : NULL;
    m->never = m->paths ? str_tuple(never, "never") : NULL;
    if (!m->never) {
        Py_DECREF(m);
        return NULL;
    }
    return (PyObject *)m;
}

static int Monitor_traverse(Monitor *m, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(m));
    Py_VISIT(m->module_ref);
    return 0;
}

static int Monitor_clear(Monitor *m)
{
    Py_CLEAR(m->modules);
    Py_CLEAR(m->exclude);
    Py_CLEAR(m->paths);
    Py_CLEAR(m->never);
    Py_CLEAR(m->tape);
    Py_CLEAR(m->module_ref);
    return 0;
}

static void Monitor_dealloc(Monitor *m)
{
    PyTypeObject *tp = Py_TYPE(m);
    PyObject_GC_UnTrack(m);
    Monitor_clear(m);
    tp->tp_free((PyObject *)m);
    Py_DECREF(tp);
}

static PyObject *Monitor_get_running(Monitor *m, void *c)
{
    (void)c;
    return PyBool_FromLong(m->running);
}

static PyObject *Monitor_get_calls(Monitor *m, void *c)
{
    (void)c;
    return PyLong_FromUnsignedLongLong(m->calls_seen);
}

static PyObject *Monitor_get_functions(Monitor *m, void *c)
{
    (void)c;
    return PyLong_FromUnsignedLongLong(m->functions_seen);
}

static PyObject *Monitor_repr(Monitor *m)
{
    return PyUnicode_FromFormat("<calltape.monitor include=%R exclude=%R %s>", m->modules,
                                m->exclude, m->running ? "running" : "stopped");
}

static PyGetSetDef Monitor_getset[] = {
    {"running", (getter)Monitor_get_running, NULL, "True between start() and stop()", NULL},
    {"calls", (getter)Monitor_get_calls, NULL, "recorded calls started so far", NULL},
    {"functions", (getter)Monitor_get_functions, NULL, "functions with recorded calls", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef Monitor_methods[] = {
    {"start", Monitor_start, METH_NOARGS, "start() -> self: begin recording"},
    {"stop", Monitor_stop, METH_NOARGS, "stop(): stop recording (idempotent)"},
    {"__enter__", Monitor_start, METH_NOARGS, NULL},
    {"__exit__", Monitor_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot Monitor_slots[] = {
    {Py_tp_new, Monitor_new},           {Py_tp_dealloc, Monitor_dealloc},
    {Py_tp_traverse, Monitor_traverse}, {Py_tp_clear, Monitor_clear},
    {Py_tp_getset, Monitor_getset},     {Py_tp_methods, Monitor_methods},
    {Py_tp_repr, Monitor_repr},         {0, NULL},
};

PyType_Spec Monitor_spec = {
    .name = "calltape.Monitor",
    .basicsize = sizeof(Monitor),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = Monitor_slots,
};

void ct_monitor_stop_running(ct_state *st)
{
    PyObject *mon = (PyObject *)st->rec.monitor.mon;
    if (!mon)
        return;
    PyObject *saved = ct_fetch_exc();
    Py_INCREF(mon);
    PyObject *r = Monitor_stop(mon, NULL);
    Py_XDECREF(r);
    Py_DECREF(mon);
    PyErr_Clear();
    ct_restore_exc(saved);
}

void ct_monitor_clear(ct_state *st)
{
    mon_active *a = &st->rec.monitor;
    Py_CLEAR(a->mon);
    ct_park_drain(&a->parked, NULL, NULL);
    Py_CLEAR(a->park_gone);
    Py_CLEAR(a->disable);
}

int ct_monitor_traverse(const ct_state *st, visitproc visit, void *arg)
{
    const mon_active *a = &st->rec.monitor;
    Py_VISIT((PyObject *)a->mon);
    Py_VISIT(a->park_gone);
    return ct_park_traverse(&a->parked, visit, arg);
}
