/*
 * record.c - the record instrument of calltape.probes: each call it fires
 * on (at return or error) becomes a call record on the default tape, built
 * by the one record builder (record/emit.h) and captured as
 * CAPTURE_PROBE: the arguments by parameter name as they were at the call,
 * the result or the exception, the start and the duration, the parent being
 * the nearest recorded call on the thread.
 *
 * Invariants: never raises into the target (errors go to the instrument's
 * status through ct_probe_fail); the function is described once per
 * instrument and announced once per engine (serial).
 */
#include "probes.h"
#include "record/capture.h"
#include "record/emit.h"
#include "sink.h"

static const ct_redact probe_redact = {NULL, NULL, 1};

/* Describes code `co` for `in` (the REC_FUNCTION body, its fn id, the
 * parameter names).  Returns 0, or -1 with an exception. */
static int describe(ct_state *st, ProbeInstrument *in, PyCodeObject *co, PyObject *module)
{
    Py_ssize_t n = ct_param_count(co);
    PyObject *varnames = PyCode_GetVarnames(co);
    if (!varnames)
        return -1;
    Py_XSETREF(in->rec_names, PyTuple_GetSlice(varnames, 0, n));
    Py_DECREF(varnames);
    if (!in->rec_names)
        return -1;
    ct_fn_desc d = {.module = module,
                    .qualname = co->co_qualname,
                    .file = co->co_filename,
                    .line = co->co_firstlineno,
                    .names = in->rec_names,
                    .code = co};
    PyObject *body = ct_describe_function(st, &d);
    if (!body)
        return -1;
    Py_XSETREF(in->rec_body, body);
    in->rec_fn_id = ++st->rec.next_fn;
    in->rec_serial = 0;
    return 0;
}

/* Encodes the arguments (ns by parameter name) onto `b`; returns the
 * REC_HAS_BLOBS flag when a value went to the blob store. */
static int encode_args(ct_state *st, ProbeInstrument *in, PyObject *ns, wbuf *b)
{
    ct_memo memo;
    CT_MEMO_START(&memo);
    ct_capture cap = {st,  st->rec.max_value_bytes, 1, ct_redact_active(st, &probe_redact), &memo,
                      NULL};
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(in->rec_names); i++) {
        PyObject *name = PyTuple_GET_ITEM(in->rec_names, i);
        PyObject *v = ns ? PyDict_GetItemWithError(ns, name) : NULL;
        if (!v) {
            PyErr_Clear();
            wbuf_byte(b, WIRE_NONE);
        } else if (ct_should_redact(st, name, &probe_redact)) {
            ct_put_redacted(st, b);
        } else if (!ct_capture_small(b, v)) {
            ct_capture_other(&cap, b, v);
        }
    }
    ct_memo_free(&memo);
    PyErr_Clear();
    return cap.blobbed ? REC_HAS_BLOBS : 0;
}

int ct_probe_record(ct_state *st, ProbeInstrument *in, const ct_probe_call *call)
{
    if (!in->rec_body) {
        PyObject *mod = PyDict_GetItemString(call->globals_of_target, "__name__");
        if (describe(st, in, call->code, mod) < 0)
            return -1;
    }
    ct_engine_slot *slot = ct_engine_for(st, NULL);
    if (!slot)
        return -1;
    ct_thread *t = ct_thread_get();
    if (in->rec_serial != slot->serial &&
        ct_emit_function(st, slot, in->rec_fn_id, in->rec_body) == 0)
        in->rec_serial = slot->serial;
    if (!ct_thread_known(slot, t))
        ct_thread_announce(st, slot, t);
    ct_callinfo ci = {0};
    ci.seq = ++st->rec.seq;
    ci.parent = t->parent;
    ci.depth = t->depth;
    ci.thread = t->index;
    ci.start = call->start_ns;
    wbuf args;
    uint8_t store[256];
    wbuf_init(&args, store, sizeof store);
    t->busy++;
    ci.flags = (uint16_t)(REC_HAS_ARGS | encode_args(st, in, call->ns, &args));
    ct_site site = {.fn_id = in->rec_fn_id,
                    .redact = ct_redact_active(st, &probe_redact),
                    .max_value_bytes = st->rec.max_value_bytes,
                    .result = 1,
                    .capture = CAPTURE_PROBE};
    PyObject *exc = call->exc && PyExceptionInstance_Check(call->exc) ? call->exc : NULL;
    ct_emit_site_call(st, &site, slot, &ci, args.data, args.len, call->end_ns,
                      exc ? OUTCOME_RAISED : OUTCOME_RETURNED, exc ? NULL : call->result, exc, NULL,
                      NULL, NULL);
    t->busy--;
    wbuf_free(&args);
    return 0;
}
