/*
 * logrecord.c - the LogRecords of the queued log lines (logq.c), made and
 * handed in C.
 *
 * logging's own way, logger.makeRecord(), costs about 1.8 us a line: the
 * LogRecord's __init__ reads the clock, the thread, the process, and the
 * file and module names from the path.  All but the clock and the thread
 * are the same for every line of one target and level, so for each batch
 * the drainer takes, makeRecord makes one record per target, level and
 * queuing thread (the template, its thread and threadName set to those of
 * the queuing thread), and each line's record is a new object of the
 * template's class whose __dict__ is a copy of the template's with the
 * line's own fields set: msg, created, msecs and relativeCreated.
 *
 * logger.handle()'s work is done here as well while the logger's class
 * keeps logging.Logger's handle, filter and callHandlers and the logger has
 * no filter: at the template, isEnabledFor(level) is asked and the handlers
 * the level reaches are listed (those of the logger and of its ancestors up
 * to the first logger that does not propagate, as callHandlers walks them);
 * each line's record then goes to handler.handle() of each.  No handler at
 * all: logger.callHandlers() runs for each line (it knows lastResort).  A
 * logger with filters gets logger.handle() for each line.
 *
 * A record no handler kept (only the drainer holds it after the handlers,
 * its __dict__ too) is kept as the slot's spare and made the next line's
 * record: when its __dict__ is as it was handed (its version tag, which
 * every change to a dict changes, is the same: a handler that set or added
 * any attribute leaves it to be freed), only the line's four items are set
 * again.  Nobody can tell it from a new record: nothing else refers to it
 * (a record some weak reference refers to is left to die).
 *
 * Invariants: templates, the enabled answer and the handler lists are
 * remade in every batch (ct_logrec_begin): a line is handled with the
 * logger's level, handlers, the level names, the process's name and
 * logging's flags as they were when its batch was taken, never older than
 * the lines queued before it; a record factory other than
 * logging.LogRecord, a logger class with its own makeRecord, or a failure
 * to read logging's state leaves the line to the Python hand function
 * (calltape._logq._hand).  Every function here runs with the GIL held, on
 * the drainer only (a line handed on its calling thread, when no drainer
 * runs, goes to the hand function), so the cache has one user.
 */
#include "logq.h"

#include <math.h>
#include <string.h>

#define LOGREC_SLOTS 8

enum {
    N_MSG,
    N_CREATED,
    N_MSECS,
    N_RELATIVE,
    N_THREAD,
    N_THREADNAME,
    N_FILTERS,
    N_HANDLERS,
    N_LEVEL,
    N_HANDLE,
    N_PROPAGATE,
    N_PARENT,
    N_CALLHANDLERS,
    N_ISENABLED,
    N_MAKERECORD,
    N_FILTER,
    N_NAME,
    N_DICT,
    N_LOGGING,
    N_COUNT
};
static const char *const name_text[N_COUNT] = {
    "msg",        "created", "msecs",  "relativeCreated", "thread", "threadName",   "filters",
    "handlers",   "level",   "handle", "propagate",       "parent", "callHandlers", "isEnabledFor",
    "makeRecord", "filter",  "name",   "__dict__",        "logging"};

/* logging.Logger's methods whose keeping allows the fast paths */
enum { M_MAKERECORD, M_HANDLE, M_FILTER, M_CALLHANDLERS, M_COUNT };

typedef struct {
    PyObject *target; /* owned: the (logger, pathname) tuple; NULL: free */
    int level;
    unsigned long thread_ident; /* the queuing thread's, and its name: */
    char thread_name[sizeof ct_tls_thread.log_name];
    uint64_t batch;         /* the batch its template was made in */
    PyObject *tmpl;         /* owned: the template record's __dict__ (NULL: Python hands) */
    PyObject *cls;          /* owned: the template record's class */
    int enabled;            /* logger.isEnabledFor(level) */
    PyObject *handlers;     /* owned tuple: handle() of each handler the level reaches; NULL:
                               logger.handle() */
    Py_ssize_t found;       /* how many handlers callHandlers would see (0: lastResort) */
    PyObject *spare;        /* owned: a record of this batch's template nobody kept, or NULL */
    uint64_t spare_version; /* its dict's version tag when it was handed */
} logrec_slot;

struct ct_logrec_cache {
    PyObject *names[N_COUNT];
    PyObject *methods[M_COUNT]; /* this batch's logging.Logger methods */
    logrec_slot slots[LOGREC_SLOTS];
    unsigned next;   /* the slot a new target takes */
    uint64_t batch;  /* counts ct_logrec_begin() */
    int usable;      /* this batch may make records here */
    int log_threads; /* logging.logThreads */
    double start_ns; /* logging._startTime, in ns */
};

int ct_logrec_init(ct_state *st)
{
    ct_logrec_cache *c = PyMem_Calloc(1, sizeof *c);
    if (!c) {
        PyErr_NoMemory();
        return -1;
    }
    st->logq.recs = c;
    for (int i = 0; i < N_COUNT; i++)
        if (!(c->names[i] = PyUnicode_InternFromString(name_text[i])))
            return -1;
    return 0;
}

static void slot_clear(logrec_slot *s)
{
    Py_CLEAR(s->target);
    Py_CLEAR(s->tmpl);
    Py_CLEAR(s->cls);
    Py_CLEAR(s->handlers);
    Py_CLEAR(s->spare);
}

void ct_logrec_forget(ct_state *st)
{
    ct_logrec_cache *c = st->logq.recs;
    if (!c)
        return;
    for (int i = 0; i < LOGREC_SLOTS; i++)
        slot_clear(&c->slots[i]);
    for (int i = 0; i < M_COUNT; i++)
        Py_CLEAR(c->methods[i]);
    c->usable = 0;
}

void ct_logrec_free(ct_state *st)
{
    ct_logrec_cache *c = st->logq.recs;
    if (!c)
        return;
    ct_logrec_forget(st);
    for (int i = 0; i < N_COUNT; i++)
        Py_CLEAR(c->names[i]);
    PyMem_Free(c);
    st->logq.recs = NULL;
}

int ct_logrec_traverse(ct_state *st, visitproc visit, void *arg)
{
    ct_logrec_cache *c = st->logq.recs;
    if (!c)
        return 0;
    for (int i = 0; i < LOGREC_SLOTS; i++) {
        Py_VISIT(c->slots[i].target);
        Py_VISIT(c->slots[i].tmpl);
        Py_VISIT(c->slots[i].cls);
        Py_VISIT(c->slots[i].handlers);
        Py_VISIT(c->slots[i].spare);
    }
    for (int i = 0; i < M_COUNT; i++)
        Py_VISIT(c->methods[i]);
    return 0;
}

/* Reads what this batch needs from logging's module dict `d`.  Returns 1
 * when records may be made here, 0 when not, -1 with an exception. */
static int read_logging(ct_logrec_cache *c, PyObject *d)
{
    static const char *const method_text[M_COUNT] = {"makeRecord", "handle", "filter",
                                                     "callHandlers"};
    PyObject *record_cls = PyDict_GetItemString(d, "LogRecord");      /* borrowed */
    PyObject *factory = PyDict_GetItemString(d, "_logRecordFactory"); /* borrowed */
    PyObject *logger_cls = PyDict_GetItemString(d, "Logger");         /* borrowed */
    PyObject *start = PyDict_GetItemString(d, "_startTime");          /* borrowed */
    PyObject *threads = PyDict_GetItemString(d, "logThreads");        /* borrowed */
    if (!record_cls || factory != record_cls || !logger_cls || !start || !threads)
        return 0;
    for (int i = 0; i < M_COUNT; i++)
        if (!(c->methods[i] = PyObject_GetAttrString(logger_cls, method_text[i])))
            return -1;
    /* 3.11 and 3.12 keep time.time(), 3.13 time.time_ns() */
    c->start_ns = PyFloat_Check(start) ? PyFloat_AsDouble(start) * 1e9 : PyLong_AsDouble(start);
    if (c->start_ns == -1.0 && PyErr_Occurred())
        return -1;
    int t = PyObject_IsTrue(threads);
    if (t < 0)
        return -1;
    c->log_threads = t;
    return 1;
}

void ct_logrec_begin(ct_state *st)
{
    ct_logrec_cache *c = st->logq.recs;
    if (!c)
        return;
    c->batch++;
    c->usable = 0;
    for (int i = 0; i < M_COUNT; i++)
        Py_CLEAR(c->methods[i]);
    PyObject *saved = ct_fetch_exc();
    PyObject *mod = PyImport_GetModule(c->names[N_LOGGING]); /* new, or NULL: not imported */
    PyObject *d = mod ? PyModule_GetDict(mod) : NULL;        /* borrowed */
    int ok = d ? read_logging(c, d) : 0;
    Py_XDECREF(mod);
    c->usable = ok > 0;
    if (!c->usable)
        for (int i = 0; i < M_COUNT; i++)
            Py_CLEAR(c->methods[i]);
    PyErr_Clear();
    ct_restore_exc(saved);
}

/* 1 when `type`'s attribute `name` is logging.Logger's method `m`, 0 when
 * not, -1 with an exception. */
static int keeps(PyTypeObject *type, PyObject *name, PyObject *m)
{
    PyObject *v = PyObject_GetAttr((PyObject *)type, name);
    if (!v)
        return -1;
    int same = v == m;
    Py_DECREF(v);
    return same;
}

/* Appends to list `out` the bound handle() of each handler of logger `c`
 * that `level` reaches; *found counts them all.  0, or -1 with an
 * exception. */
static int handlers_of(ct_logrec_cache *cc, PyObject *c, PyObject *level, PyObject *out,
                       Py_ssize_t *found)
{
    PyObject *hs = PyObject_GetAttr(c, cc->names[N_HANDLERS]);
    PyObject *seq = hs ? PySequence_Fast(hs, "a logger's handlers are not a sequence") : NULL;
    Py_XDECREF(hs);
    if (!seq)
        return -1;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *h = PySequence_Fast_GET_ITEM(seq, i); /* borrowed */
        (*found)++;
        PyObject *hl = PyObject_GetAttr(h, cc->names[N_LEVEL]), *handle = NULL;
        int reach = hl ? PyObject_RichCompareBool(level, hl, Py_GE) : -1;
        Py_XDECREF(hl);
        if (reach > 0 && (!(handle = PyObject_GetAttr(h, cc->names[N_HANDLE])) ||
                          PyList_Append(out, handle) < 0))
            reach = -1;
        Py_XDECREF(handle);
        if (reach < 0) {
            Py_DECREF(seq);
            return -1;
        }
    }
    Py_DECREF(seq);
    return 0;
}

/* Lists in slot `s` the handlers of its logger that its level reaches,
 * as Logger.callHandlers walks them.  0, or -1 with an exception. */
static int slot_handlers(ct_logrec_cache *cc, logrec_slot *s, PyObject *logger, PyObject *level)
{
    PyObject *out = PyList_New(0), *c = Py_NewRef(logger);
    if (!out)
        goto error;
    s->found = 0;
    while (c != Py_None) {
        PyObject *prop = NULL;
        int on = handlers_of(cc, c, level, out, &s->found) < 0
                     ? -1
                     : ((prop = PyObject_GetAttr(c, cc->names[N_PROPAGATE])) ? PyObject_IsTrue(prop)
                                                                             : -1);
        Py_XDECREF(prop);
        if (on < 0)
            goto error;
        if (!on)
            break;
        Py_SETREF(c, PyObject_GetAttr(c, cc->names[N_PARENT]));
        if (!c)
            goto error;
    }
    Py_DECREF(c);
    s->handlers = PyList_AsTuple(out);
    Py_DECREF(out);
    return s->handlers ? 0 : -1;
error:
    Py_XDECREF(c);
    Py_XDECREF(out);
    return -1;
}

/* What slot `s`'s lines are handed with in this batch: whether the level
 * is enabled, and the handlers unless logger.handle() must run.  0, or -1
 * with an exception. */
static int slot_handling(ct_logrec_cache *c, logrec_slot *s, PyObject *logger, PyObject *level)
{
    PyTypeObject *type = Py_TYPE(logger);
    PyObject *v = PyObject_CallMethodOneArg(logger, c->names[N_ISENABLED], level);
    s->enabled = v ? PyObject_IsTrue(v) : -1;
    Py_XDECREF(v);
    if (s->enabled <= 0)
        return s->enabled;
    int h = keeps(type, c->names[N_HANDLE], c->methods[M_HANDLE]);
    int f = h <= 0 ? h : keeps(type, c->names[N_FILTER], c->methods[M_FILTER]);
    int ch = f <= 0 ? f : keeps(type, c->names[N_CALLHANDLERS], c->methods[M_CALLHANDLERS]);
    if (ch <= 0)
        return ch;
    PyObject *fl = PyObject_GetAttr(logger, c->names[N_FILTERS]);
    Py_ssize_t nf = fl ? PyObject_Length(fl) : -1;
    Py_XDECREF(fl);
    if (nf < 0)
        return -1;
    return nf ? 0 : slot_handlers(c, s, logger, level);
}

/* Sets the thread and threadName of template `d` to slot `s`'s.  0, or
 * -1 with an exception. */
static int set_thread(ct_logrec_cache *c, const logrec_slot *s, PyObject *d)
{
    PyObject *ident = PyLong_FromUnsignedLong(s->thread_ident);
    PyObject *name =
        ident ? PyUnicode_DecodeUTF8(s->thread_name, (Py_ssize_t)strlen(s->thread_name), "replace")
              : NULL;
    int rc = name && PyDict_SetItem(d, c->names[N_THREAD], ident) == 0 &&
                     PyDict_SetItem(d, c->names[N_THREADNAME], name) == 0
                 ? 0
                 : -1;
    Py_XDECREF(ident);
    Py_XDECREF(name);
    return rc;
}

/* Makes slot `s`'s template and handling for this batch: no template when
 * the logger's class has its own makeRecord.  0, or -1 with an exception. */
static int slot_make(ct_logrec_cache *c, logrec_slot *s)
{
    PyObject *logger = PyTuple_GET_ITEM(s->target, 0), *path = PyTuple_GET_ITEM(s->target, 1);
    PyObject *name = NULL, *rec = NULL, *d = NULL, *level = NULL;
    Py_CLEAR(s->tmpl);
    Py_CLEAR(s->cls);
    Py_CLEAR(s->handlers);
    Py_CLEAR(s->spare);
    s->batch = c->batch;
    int make = keeps(Py_TYPE(logger), c->names[N_MAKERECORD], c->methods[M_MAKERECORD]);
    if (make <= 0)
        return make;
    if (!(level = PyLong_FromLong(s->level)) || slot_handling(c, s, logger, level) < 0)
        goto error;
    if (!(name = PyObject_GetAttr(logger, c->names[N_NAME])))
        goto error;
    rec = PyObject_CallMethod(logger, "makeRecord", "OiOisOO", name, s->level, path, 0, "", Py_None,
                              Py_None);
    if (!rec || !(d = PyObject_GetAttr(rec, c->names[N_DICT])))
        goto error;
    if (PyDict_Check(d)) { /* the record's own: shares its keys with every LogRecord */
        if (c->log_threads && set_thread(c, s, d) < 0)
            goto error;
        s->tmpl = Py_NewRef(d);
        s->cls = Py_NewRef((PyObject *)Py_TYPE(rec));
    }
    Py_DECREF(level);
    Py_DECREF(name);
    Py_DECREF(rec);
    Py_DECREF(d);
    return 0;
error:
    Py_CLEAR(s->tmpl);
    Py_XDECREF(level);
    Py_XDECREF(name);
    Py_XDECREF(rec);
    Py_XDECREF(d);
    return -1;
}

/* The slot of line `l`'s target, level and thread, made for this batch;
 * NULL with an exception. */
static logrec_slot *slot_for(ct_logrec_cache *c, const ct_logq_line *l)
{
    logrec_slot *s = NULL;
    for (int i = 0; i < LOGREC_SLOTS && !s; i++)
        if (c->slots[i].target == l->target && c->slots[i].level == l->level &&
            c->slots[i].thread_ident == l->thread_ident &&
            strcmp(c->slots[i].thread_name, l->thread_name) == 0)
            s = &c->slots[i];
    if (!s) {
        s = &c->slots[c->next];
        c->next = (c->next + 1) % LOGREC_SLOTS;
        slot_clear(s);
        s->target = Py_NewRef(l->target);
        s->level = l->level;
        s->thread_ident = l->thread_ident;
        snprintf(s->thread_name, sizeof s->thread_name, "%s", l->thread_name);
        s->batch = 0;
    }
    if (s->batch != c->batch && slot_make(c, s) < 0)
        return NULL;
    return s;
}

static int set_float(PyObject *d, PyObject *key, double v)
{
    PyObject *f = PyFloat_FromDouble(v);
    int rc = f ? PyDict_SetItem(d, key, f) : -1;
    Py_XDECREF(f);
    return rc;
}

/* Sets line `l`'s own items (text `text`) in record dict `d`.  0, or -1
 * with an exception. */
static int set_line(ct_logrec_cache *c, PyObject *d, const ct_logq_line *l, PyObject *text)
{
    double ns = (double)l->created_ns;
    if (PyDict_SetItem(d, c->names[N_MSG], text) < 0 ||
        set_float(d, c->names[N_CREATED], ns / 1e9) < 0 ||
        set_float(d, c->names[N_MSECS], floor((double)(l->created_ns % 1000000000) / 1e6)) < 0 ||
        set_float(d, c->names[N_RELATIVE], (ns - c->start_ns) / 1e6) < 0)
        return -1;
    return 0;
}

/* The version tag of dict `d` (PEP 509): changed, to a value no dict had
 * before, by every change to it.  Deprecated since 3.12, and kept up to
 * date through 3.13; 0 (never reuse) where it is not. */
static uint64_t dict_version(PyObject *d)
{
#if PY_VERSION_HEX < 0x030E0000
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    return ((PyDictObject *)d)->ma_version_tag;
#pragma GCC diagnostic pop
#else
    (void)d;
    return 0;
#endif
}

/* Slot `s`'s spare record made line `l`'s, when nothing changed its
 * __dict__ since its line's items were set (its version tag says so); NULL
 * (no exception) when there is none to use, NULL with an exception when
 * setting the line's items failed.  *version: the dict's version after. */
static PyObject *record_reused(ct_logrec_cache *c, logrec_slot *s, const ct_logq_line *l,
                               PyObject *text, uint64_t *version)
{
    PyObject *rec = s->spare, *d = NULL;
    s->spare = NULL;
    if (!rec)
        return NULL;
    if (Py_REFCNT(rec) != 1 || (PyObject *)Py_TYPE(rec) != s->cls ||
        !(d = PyObject_GenericGetDict(rec, NULL)) || !PyDict_Check(d) || Py_REFCNT(d) != 2 ||
        !s->spare_version || dict_version(d) != s->spare_version) {
        PyErr_Clear();
        Py_XDECREF(d);
        Py_DECREF(rec);
        return NULL;
    }
    int rc = set_line(c, d, l, text);
    *version = dict_version(d);
    Py_DECREF(d);
    if (rc < 0)
        Py_CLEAR(rec);
    return rec;
}

/* A record of line `l` (text `text`) from slot `s`'s template: its spare
 * made anew, or a new one; NULL with an exception.  *version: its dict's
 * version tag once the line's items are set. */
static PyObject *record_new(ct_logrec_cache *c, logrec_slot *s, const ct_logq_line *l,
                            PyObject *text, uint64_t *version)
{
    PyObject *rec = record_reused(c, s, l, text, version);
    if (rec || PyErr_Occurred())
        return rec;
    PyObject *d = PyDict_Copy(s->tmpl);
    if (!d || set_line(c, d, l, text) < 0)
        goto error;
    *version = dict_version(d);
    /* allocated, not made by object.__new__ (the class is the template's:
     * LogRecord): before 3.13 its dict is then the copy, with no empty one
     * made first; 3.13's inline values need the __dict__ setter */
    PyTypeObject *cls = (PyTypeObject *)s->cls;
#if PY_VERSION_HEX >= 0x030D0000
    if (!(rec = cls->tp_alloc(cls, 0)) || PyObject_SetAttr(rec, c->names[N_DICT], d) < 0)
        goto error;
#else
    if (!(rec = cls->tp_alloc(cls, 0)) || PyObject_GenericSetDict(rec, d, NULL) < 0)
        goto error;
#endif
    Py_DECREF(d);
    return rec;
error:
    Py_XDECREF(d);
    Py_XDECREF(rec);
    return NULL;
}

/* 1 when some weak reference refers to `rec` (a handler made one): it is
 * then left to die, so that the reference sees it go. */
static int has_weakrefs(PyObject *rec)
{
    Py_ssize_t at = Py_TYPE(rec)->tp_weaklistoffset; /* below 0: the managed list */
    return at != 0 && *(PyObject **)(void *)((char *)rec + at) != NULL;
}

/* Gives `rec` to slot `s`'s handlers, or to logger.handle() /
 * callHandlers() when the slot says so.  0, or -1 with an exception. */
static int hand_record(ct_logrec_cache *c, const logrec_slot *s, PyObject *logger, PyObject *rec)
{
    if (!s->handlers || !s->found) {
        PyObject *how = c->names[s->handlers ? N_CALLHANDLERS : N_HANDLE]; /* lastResort */
        PyObject *r = PyObject_CallMethodOneArg(logger, how, rec);
        Py_XDECREF(r);
        return r ? 0 : -1;
    }
    PyObject *hs = Py_NewRef(s->handlers); /* the handlers run Python code */
    int rc = 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(hs) && !rc; i++) {
        PyObject *r = PyObject_CallOneArg(PyTuple_GET_ITEM(hs, i), rec);
        rc = r ? 0 : -1;
        Py_XDECREF(r);
    }
    Py_DECREF(hs);
    return rc;
}

int ct_logrec_hand(ct_state *st, const ct_logq_line *l, PyObject *text)
{
    ct_logrec_cache *c = st->logq.recs;
    if (!c || !c->usable || !PyTuple_CheckExact(l->target) || PyTuple_GET_SIZE(l->target) != 2)
        return 0;
    logrec_slot *s = slot_for(c, l);
    if (!s) { /* logging's own makeRecord or isEnabledFor raised: as in Python */
        PyErr_Clear();
        return 0;
    }
    if (!s->tmpl)
        return 0;
    if (!s->enabled)
        return 1;
    uint64_t version = 0;
    PyObject *rec = record_new(c, s, l, text, &version);
    int rc = rec && hand_record(c, s, PyTuple_GET_ITEM(l->target, 0), rec) == 0 ? 1 : -1;
    if (rc == 1 && Py_REFCNT(rec) == 1 && !s->spare && s->batch == c->batch && !has_weakrefs(rec)) {
        s->spare = Py_NewRef(rec); /* no handler kept it */
        s->spare_version = version;
    }
    Py_XDECREF(rec);
    return rc;
}
