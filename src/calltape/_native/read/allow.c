/*
 * allow.c - which globals a tape value may name, and the restricted
 * unpickler that asks.
 *
 * A tape may come from somebody else, so rebuilding a value never imports or
 * calls anything the reader did not allow.  A global is named by a module and
 * a (possibly dotted) name; it is allowed when
 *   - `module.name` is on the built-in list of plain data types below, or is
 *     an entry of the reader's allow list (the full dotted path), or
 *   - `module` is an allow-list entry or inside one (a package), and walking
 *     the dotted name from the module goes through classes only (never
 *     through another module, as ("pathlib", "os.system") would) and ends at
 *     an object defined there: its __module__ is allowed too (so a module's
 *     `from os import system` is not a way out);
 *   - the exceptions of builtins are allowed by name.
 * A refused global raises RefusedGlobal naming it and the allow entry that
 * would admit it, before anything is imported; an allowed one that cannot be
 * found here raises the import's or getattr's own error.  trust=True lifts
 * all of it.
 *
 * Invariants: each unpickler carries its own rules (a pointer to the
 * ct_rebuild of the load it serves, stored in the instance past the base
 * type's fields and cleared when the load ends), so two threads rebuilding
 * with different allow lists never see each other's; no module state is used
 * as an argument.
 */
#include "binding.h"

/* Plain data types of the standard library (and numpy's scalar and array
 * reconstructors), by full name.  Each one builds a value from data and
 * runs no code given by the tape. */
static const char *const allow_safe_names[] = {
    "builtins.int",
    "builtins.float",
    "builtins.complex",
    "builtins.str",
    "builtins.bytes",
    "builtins.bytearray",
    "builtins.list",
    "builtins.tuple",
    "builtins.dict",
    "builtins.set",
    "builtins.frozenset",
    "builtins.bool",
    "builtins.slice",
    "builtins.range",
    "builtins.object",
    "builtins.NoneType",
    "builtins.Ellipsis",
    "builtins.NotImplemented",
    "copyreg._reconstructor",
    "copyreg.__newobj__",
    "copyreg.__newobj_ex__",
    "_codecs.encode",
    "datetime.date",
    "datetime.time",
    "datetime.datetime",
    "datetime.timedelta",
    "datetime.timezone",
    "datetime.tzinfo",
    "decimal.Decimal",
    "fractions.Fraction",
    "collections.OrderedDict",
    "collections.defaultdict",
    "collections.deque",
    "collections.Counter",
    "collections.ChainMap",
    "functools.partial",
    "types.SimpleNamespace",
    "uuid.UUID",
    "uuid.SafeUUID",
    "pathlib.PurePath",
    "pathlib.PurePosixPath",
    "pathlib.PureWindowsPath",
    "pathlib.Path",
    "pathlib.PosixPath",
    "pathlib.WindowsPath",
    "pathlib._local.PurePath", /* where 3.13 defines them */
    "pathlib._local.PurePosixPath",
    "pathlib._local.PureWindowsPath",
    "pathlib._local.Path",
    "pathlib._local.PosixPath",
    "pathlib._local.WindowsPath",
    "zoneinfo.ZoneInfo",
    "zoneinfo.ZoneInfo._unpickle",
    "ipaddress.IPv4Address",
    "ipaddress.IPv6Address",
    "ipaddress.IPv4Network",
    "ipaddress.IPv6Network",
    "ipaddress.IPv4Interface",
    "ipaddress.IPv6Interface",
    "array.array",
    "array._array_reconstructor",
    "re._compile",
    "re.RegexFlag",
    /* builtin functions that compute from their arguments, for values
     * such as key=len (never getattr, eval, exec, open, __import__, ...) */
    "builtins.abs",
    "builtins.all",
    "builtins.any",
    "builtins.ascii",
    "builtins.bin",
    "builtins.callable",
    "builtins.chr",
    "builtins.divmod",
    "builtins.format",
    "builtins.hash",
    "builtins.hex",
    "builtins.id",
    "builtins.isinstance",
    "builtins.issubclass",
    "builtins.iter",
    "builtins.len",
    "builtins.max",
    "builtins.min",
    "builtins.next",
    "builtins.oct",
    "builtins.ord",
    "builtins.pow",
    "builtins.repr",
    "builtins.round",
    "builtins.sorted",
    "builtins.sum",
    "builtins.map",
    "builtins.filter",
    "builtins.zip",
    "builtins.enumerate",
    "builtins.reversed",
    "builtins.type",
    "numpy.dtype",
    "numpy.ndarray",
    "numpy.core.multiarray.scalar",
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray.scalar",
    "numpy._core.multiarray._reconstruct",
    NULL,
};

enum allow_kind {
    ALLOW_NO,     /* refused */
    ALLOW_EXACT,  /* the full dotted path was allowed by name */
    ALLOW_MODULE, /* the module was allowed: walk the name through classes */
};

/* 1 when `mod` equals the allow entry `a` or lies inside it (a package). */
static int allow_inside(const char *mod, const char *a)
{
    return a[0] && ct_module_within(mod, strlen(mod), a, strlen(a));
}

/* 1 when `name` names an exception class of builtins (no dots). */
static int allow_builtin_exception(const char *name)
{
    if (strchr(name, '.'))
        return 0;
    PyObject *b = PyImport_ImportModule("builtins");
    PyObject *obj = b ? PyObject_GetAttrString(b, name) : NULL;
    int ok = obj && PyType_Check(obj) &&
             PyType_IsSubtype((PyTypeObject *)obj, (PyTypeObject *)PyExc_BaseException);
    Py_XDECREF(obj);
    Py_XDECREF(b);
    PyErr_Clear();
    return ok;
}

static enum allow_kind allow_kind_of(const ct_rebuild *r, const char *mod, const char *name,
                                     const char *full)
{
    for (int i = 0; allow_safe_names[i]; i++)
        if (strcmp(full, allow_safe_names[i]) == 0)
            return ALLOW_EXACT;
    if (strcmp(mod, "builtins") == 0 && allow_builtin_exception(name))
        return ALLOW_EXACT;
    Py_ssize_t n = r->allow ? PyTuple_GET_SIZE(r->allow) : 0;
    enum allow_kind kind = ALLOW_NO;
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *a = PyUnicode_AsUTF8(PyTuple_GET_ITEM(r->allow, i));
        if (!a) {
            PyErr_Clear();
            continue;
        }
        if (strcmp(full, a) == 0)
            return ALLOW_EXACT;
        if (allow_inside(mod, a))
            kind = ALLOW_MODULE;
    }
    return kind;
}

/* 1 when the module `mod` is covered by a module entry of the allow list. */
static int allow_module_covered(const ct_rebuild *r, const char *mod)
{
    Py_ssize_t n = r->allow ? PyTuple_GET_SIZE(r->allow) : 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *a = PyUnicode_AsUTF8(PyTuple_GET_ITEM(r->allow, i));
        if (a && allow_inside(mod, a))
            return 1;
        PyErr_Clear();
    }
    return 0;
}

static PyObject *allow_refuse(const ct_rebuild *r, const char *full, const char *why)
{
    PyObject *cls = ct_marker_type(r->st, "RefusedGlobal");
    PyErr_Format(cls ? cls : PyExc_RuntimeError,
                 "refused to load the global %s from the tape%s: pass allow=['%s'] (or"
                 " trust=True for a tape you made yourself) to rebuild it",
                 full, why, full);
    return NULL;
}

/* getattr(obj, part) for each part of the dotted `name` (new reference).
 * With `classes_only`, every object passed through must be a class. */
static PyObject *allow_walk(const ct_rebuild *r, PyObject *obj, const char *name, const char *full,
                            int classes_only)
{
    char part[256];
    Py_INCREF(obj);
    for (const char *p = name;;) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (n == 0 || n >= sizeof part) {
            Py_DECREF(obj);
            return allow_refuse(r, full, " (a malformed name)");
        }
        memcpy(part, p, n);
        part[n] = 0;
        PyObject *next = PyObject_GetAttrString(obj, part);
        Py_DECREF(obj);
        if (!next && dot && classes_only) {
            PyErr_Clear(); /* not found is not a class either */
            return allow_refuse(r, full, " (a dotted name that does not go through classes)");
        }
        if (!next)
            return NULL; /* allowed, but not found here: the AttributeError */
        obj = next;
        if (!dot)
            return obj;
        if (classes_only && !PyType_Check(obj)) {
            Py_DECREF(obj);
            return allow_refuse(r, full, " (a dotted name that does not go through classes)");
        }
        p = dot + 1;
    }
}

/* The object `module`.`name` may be rebuilt from (new reference), or NULL
 * with RefusedGlobal (refused, or its module cannot be imported). */
/* The module `module` itself (a GLOBAL with an empty name), when it or a
 * package holding it is on the allow list. */
static PyObject *allow_module_itself(const ct_rebuild *r, const char *module)
{
    if (!r->trust && !allow_module_covered(r, module))
        return allow_refuse(r, module, " (a module)");
    return PyImport_ImportModule(module);
}

int ct_allow_is_safe(PyObject *obj)
{
    PyObject *mod = PyObject_GetAttrString(obj, "__module__");
    PyObject *qual = mod ? PyObject_GetAttrString(obj, "__qualname__") : NULL;
    const char *m = mod && PyUnicode_Check(mod) ? PyUnicode_AsUTF8(mod) : NULL;
    const char *q = qual && PyUnicode_Check(qual) ? PyUnicode_AsUTF8(qual) : NULL;
    int ok = 0;
    if (m && q) {
        char full[512];
        snprintf(full, sizeof full, "%s.%s", m, q);
        for (int i = 0; allow_safe_names[i] && !ok; i++)
            ok = strcmp(full, allow_safe_names[i]) == 0;
    }
    PyErr_Clear();
    Py_XDECREF(mod);
    Py_XDECREF(qual);
    return ok;
}

PyObject *ct_allow_resolve(const ct_rebuild *r, const char *module, const char *name)
{
    char full[512];
    if (!*name)
        return allow_module_itself(r, module);
    int n = snprintf(full, sizeof full, "%s.%s", module, name);
    if (n < 0 || (size_t)n >= sizeof full)
        return allow_refuse(r, "(a name too long)", "");
    enum allow_kind kind = r->trust ? ALLOW_EXACT : allow_kind_of(r, module, name, full);
    if (kind == ALLOW_NO)
        return allow_refuse(r, full, "");
    PyObject *m = PyImport_ImportModule(module);
    if (!m)
        return NULL;
    PyObject *obj = allow_walk(r, m, name, full, kind == ALLOW_MODULE);
    Py_DECREF(m);
    if (!obj && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        /* today's code has no such name: a fact of this machine, as a
         * module that is not installed, said in one sentence */
        PyObject *exc = ct_fetch_exc();
        PyObject *why = exc ? PyObject_Str(exc) : NULL;
        PyErr_Clear();
        PyErr_Format(PyExc_ImportError, "the tape names %s, which today's %s does not have (%S)",
                     full, module, why ? why : Py_None);
        Py_XDECREF(why);
        Py_XDECREF(exc);
        return NULL;
    }
    if (!obj || kind == ALLOW_EXACT)
        return obj;
    PyObject *home = PyObject_GetAttrString(obj, "__module__");
    const char *h = home && PyUnicode_Check(home) ? PyUnicode_AsUTF8(home) : NULL;
    PyErr_Clear();
    if (!h || !allow_module_covered(r, h)) {
        char why[300];
        snprintf(why, sizeof why, " (it is defined in %s, which is not allowed)",
                 h ? h : "no module");
        Py_XDECREF(home);
        Py_DECREF(obj);
        return allow_refuse(r, full, why);
    }
    Py_DECREF(home);
    return obj;
}

/* ---- the restricted unpickler ------------------------------------------- */

/* Where an unpickler keeps the ct_rebuild it serves: past the base type's
 * fields, at the offset recorded in the type's module state. */
static const ct_rebuild **allow_slot(PyObject *self, const ct_state *st)
{
    return (const ct_rebuild **)((char *)self + st->imported.unpickler_rules_offset);
}

static PyObject *Restricted_find_class(PyObject *self, PyObject *args)
{
    const char *mod, *name;
    if (!PyArg_ParseTuple(args, "ss:find_class", &mod, &name))
        return NULL;
    ct_state *st = PyType_GetModuleState(Py_TYPE(self));
    if (!st)
        return NULL;
    const ct_rebuild *r = *allow_slot(self, st);
    if (!r) {
        PyErr_SetString(PyExc_RuntimeError, "this unpickler is not loading a calltape value");
        return NULL;
    }
    return ct_allow_resolve(r, mod, name);
}

static PyMethodDef Restricted_methods[] = {
    {"find_class", Restricted_find_class, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot Restricted_slots[] = {
    {Py_tp_methods, Restricted_methods},
    {0, NULL},
};

PyObject *ct_restricted_unpickler_type(PyObject *module, PyObject *base, Py_ssize_t *offset)
{
    if (!PyType_Check(base)) {
        PyErr_SetString(PyExc_TypeError, "pickle.Unpickler is not a type");
        return NULL;
    }
    Py_ssize_t align = (Py_ssize_t) _Alignof(void *);
    Py_ssize_t at = (((PyTypeObject *)base)->tp_basicsize + align - 1) / align * align;
    PyType_Spec spec = {
        .name = "calltape.RestrictedUnpickler",
        .basicsize = (int)(at + (Py_ssize_t)sizeof(void *)),
        .flags = Py_TPFLAGS_DEFAULT,
        .slots = Restricted_slots,
    };
    *offset = at;
    return PyType_FromModuleAndSpec(module, &spec, base);
}

PyObject *ct_unpickle(const ct_rebuild *r, const uint8_t *p, size_t n)
{
    ct_state *st = r->st;
    PyObject *data = NULL, *f = NULL, *u = NULL, *v = NULL;
    if (!(data = PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)n)))
        goto error;
    if (r->trust) {
        v = PyObject_CallOneArg(st->imported.pickle_loads, data);
        goto error; /* done either way */
    }
    if (!st->imported.bytes_io) {
        PyObject *io = PyImport_ImportModule("io");
        st->imported.bytes_io = io ? PyObject_GetAttrString(io, "BytesIO") : NULL;
        Py_XDECREF(io);
        if (!st->imported.bytes_io)
            goto error;
    }
    if (!(f = PyObject_CallOneArg(st->imported.bytes_io, data)))
        goto error;
    if (!(u = PyObject_CallOneArg((PyObject *)st->type.RestrictedUnpickler, f)))
        goto error;
    *allow_slot(u, st) = r;
    v = PyObject_CallMethod(u, "load", NULL);
    *allow_slot(u, st) = NULL;
error:
    Py_XDECREF(u);
    Py_XDECREF(f);
    Py_XDECREF(data);
    return v;
}
