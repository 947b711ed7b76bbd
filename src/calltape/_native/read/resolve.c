/*
 * resolve.c - finding today's function for a recorded module and qualname,
 * the way the recorded program found it (used by replay and by the tests
 * that make-tests writes).
 *
 * The rules:
 *   - modules are imported with the recorded program's folders first on
 *     sys.path: its sys.path[0] and working folder (session rows), then the
 *     current folder.  ct_import_path_push puts in front those that are
 *     missing and returns them; ct_import_path_pop takes out exactly those.
 *   - a function recorded in a script run as __main__ is looked up in that
 *     script's file, never in whatever this process's __main__ is (the
 *     `calltape` command's own, say): the running __main__ when it is that
 *     file; else the module the file is importable as from a sys.path folder
 *     (prog.py in a folder on sys.path is `prog`, pkg/cli.py is `pkg.cli`),
 *     checked to be that very file before it is imported; else the file
 *     loaded as the module "__mp_main__", as multiprocessing's spawn loads a
 *     parent's script.  Either way its `if __name__ == "__main__":` block
 *     does not run.  The module found is returned with the entry, for
 *     replay to stand it in for __main__ while it rebuilds and calls (so
 *     that values of the script's classes rebuild).
 *   - the qualname is walked taking raw class attributes (methods as
 *     functions; a private __name is found under its mangled name), and
 *     @calltape.record, classmethod, staticmethod, property (its getter)
 *     and functools.cached_property are unwrapped, so the original
 *     function is called;
 *   - what was found must be the recorded code: a Python function of the
 *     recorded name defined in the recorded file.  When it is not, the
 *     wrappers that keep the original (`__wrapped__`, as functools.wraps and
 *     contextlib.contextmanager leave it; `func`, as functools.partial and
 *     curry-like classes hold it) are followed to the function that is; if
 *     none is, the call is skipped with both places named.
 *
 * Invariants: whatever the recorded program's code does while it is
 * imported (raises, exits) comes back as a reason (str); NULL with an
 * exception only for our own errors and KeyboardInterrupt.  sys.path and
 * sys.modules["__main__"] are never left changed by resolving itself.
 */
#include "record/recorder.h"

#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- helpers ------------------------------------------------------------- */

/* stat() of a str path with the GIL released: 0, or -1 (no exception). */
static int stat_path(PyObject *path, struct stat *sb)
{
    PyObject *b = PyUnicode_Check(path) ? PyUnicode_EncodeFSDefault(path) : NULL;
    if (!b) {
        PyErr_Clear();
        return -1;
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS
        rc = stat(PyBytes_AS_STRING(b), sb);
    Py_END_ALLOW_THREADS
    Py_DECREF(b);
    return rc;
}

/* 1 when the paths name the same existing file, else 0 (no exception). */
static int same_file(PyObject *a, PyObject *b)
{
    struct stat sa, sb;
    if (!a || !b || stat_path(a, &sa) < 0 || stat_path(b, &sb) < 0)
        return 0;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* 1 when `module` (a module object or NULL) was loaded from `file`. */
static int module_is_file(PyObject *module, PyObject *file)
{
    if (!module)
        return 0;
    PyObject *f = PyObject_GetAttrString(module, "__file__");
    if (!f)
        PyErr_Clear();
    int same = f && same_file(f, file);
    Py_XDECREF(f);
    return same;
}

/* ---- sys.path ------------------------------------------------------------ */

/* Module `name` (str): from sys.modules when it is there and imported
 * whole, else by the import system (new reference, or NULL with the
 * import's exception).  Replay resolves a module at every call, and
 * PyImport_Import goes through __import__ and its lock each time. */
static PyObject *import_module(ct_state *st, PyObject *name)
{
    PyObject *m = PyImport_GetModule(name);
    if (m == Py_None) /* sys.modules[name] = None: the import system says why not */
        Py_CLEAR(m);
    if (m) {
        PyObject *spec = PyObject_GetAttr(m, st->names.spec);
        PyObject *busy =
            spec && spec != Py_None ? PyObject_GetAttr(spec, st->names.initializing) : NULL;
        int initializing = busy ? PyObject_IsTrue(busy) : 0;
        Py_XDECREF(busy);
        Py_XDECREF(spec);
        PyErr_Clear(); /* no spec, or no _initializing: imported whole */
        if (initializing == 0)
            return m;
        Py_DECREF(m); /* still importing (a cycle, another thread): the import waits */
    } else if (PyErr_Occurred()) {
        return NULL;
    }
    return PyImport_Import(name);
}

/* sys.path (borrowed): read from the module state's sys.__dict__ with an
 * interned key when `st` is given (replay pushes and pops its folders at
 * every call), else by PySys_GetObject.  NULL with RuntimeError when it is
 * not a list. */
static PyObject *sys_path(ct_state *st)
{
    PyObject *path = st && st->imported.sys_dict && st->names.path
                         ? PyDict_GetItemWithError(st->imported.sys_dict, st->names.path)
                         : PySys_GetObject("path");
    if (!path && PyErr_Occurred())
        return NULL;
    if (!path || !PyList_Check(path)) {
        PyErr_SetString(PyExc_RuntimeError, "sys.path is not a list");
        return NULL;
    }
    return path;
}

PyObject *ct_import_path_push_py(PyObject *module, PyObject *folders)
{
    PyObject *path = sys_path(PyModule_GetState(module)), *seq = NULL, *added = NULL;
    if (!path)
        return NULL;
    seq = PySequence_Fast(folders, "folders must be a sequence of str");
    added = seq ? PyList_New(0) : NULL;
    if (!added)
        goto error;
    /* the first folder ends up first */
    for (Py_ssize_t i = PySequence_Fast_GET_SIZE(seq) - 1; i >= 0; i--) {
        PyObject *f = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyUnicode_Check(f) || PyUnicode_GET_LENGTH(f) == 0) {
            PyErr_Format(PyExc_TypeError, "a folder must be a non-empty str, not %R", f);
            goto error;
        }
        int has = PySequence_Contains(path, f);
        if (has < 0)
            goto error;
        if (!has && (PyList_Insert(path, 0, f) < 0 || PyList_Append(added, f) < 0))
            goto error;
    }
    Py_DECREF(seq);
    return added;
error:
    if (added) /* put sys.path back as it was */
        Py_XDECREF(ct_import_path_pop_py(module, added));
    Py_XDECREF(seq);
    Py_XDECREF(added);
    return NULL;
}

PyObject *ct_import_path_pop_py(PyObject *module, PyObject *added)
{
    PyObject *exc = ct_fetch_exc(); /* also called with an error pending */
    PyObject *path = sys_path(PyModule_GetState(module));
    if (path && PyList_Check(added)) {
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(added); i++) {
            PyObject *f = PyList_GET_ITEM(added, i);
            for (Py_ssize_t j = 0; j < PyList_GET_SIZE(path); j++) {
                if (PyList_GET_ITEM(path, j) == f) { /* the very object pushed */
                    PySequence_DelItem(path, j);
                    break;
                }
            }
        }
    }
    PyErr_Clear();
    ct_restore_exc(exc);
    if (exc)
        return NULL;
    Py_RETURN_NONE;
}

/* Appends `folder` (a str, or anything else to skip) to `out` unless it is
 * empty or there already.  0 or -1. */
static int add_folder(PyObject *out, PyObject *folder)
{
    if (!folder || !PyUnicode_Check(folder) || PyUnicode_GET_LENGTH(folder) == 0)
        return 0;
    int has = PySequence_Contains(out, folder);
    return has < 0 ? -1 : has ? 0 : PyList_Append(out, folder);
}

PyObject *ct_recorded_folders_py(PyObject *module, PyObject *args, PyObject *kw)
{
    ct_state *st = PyModule_GetState(module);
    static char *kwlist[] = {"sessions", "current", NULL};
    PyObject *sessions;
    int current = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|$p:recorded_folders", kwlist, &sessions,
                                     &current))
        return NULL;
    if (!st || !st->names.cwd)
        return st ? PyErr_Format(PyExc_RuntimeError, "calltape._native was cleared") : NULL;
    PyObject *attrs[2] = {st->names.sys_path0, st->names.cwd};
    PyObject *out = PyList_New(0), *it = out ? PyObject_GetIter(sessions) : NULL, *s;
    if (!it) {
        Py_XDECREF(out);
        return NULL;
    }
    while ((s = PyIter_Next(it))) {
        for (int i = 0; i < 2; i++) {
            PyObject *v = PyObject_GetAttr(s, attrs[i]);
            int rc = v ? add_folder(out, v) : -1;
            Py_XDECREF(v);
            if (rc < 0) {
                Py_DECREF(s);
                goto error;
            }
        }
        Py_DECREF(s);
    }
    if (PyErr_Occurred())
        goto error;
    if (!current) {
        Py_DECREF(it);
        return out;
    }
    char cwd[PATH_MAX]; /* what os.path.abspath(".") gives, without its Python */
    PyObject *here = getcwd(cwd, sizeof cwd) ? PyUnicode_DecodeFSDefault(cwd) : NULL;
    if (!here) /* the current folder was removed (or is too long): there is none to add */
        PyErr_Clear();
    int rc = add_folder(out, here);
    Py_XDECREF(here);
    if (rc < 0)
        goto error;
    Py_DECREF(it);
    return out;
error:
    Py_DECREF(it);
    Py_DECREF(out);
    return NULL;
}

/* ---- the module of a script run as __main__ ------------------------------ */

/* The dotted name `file` (absolute, ending in ".py") has below folder `dir`
 * (pkg/cli.py -> "pkg.cli"), or NULL without an exception when it is not
 * below it or a part is not an identifier. */
static PyObject *name_below(PyObject *dir, PyObject *file)
{
    Py_ssize_t nd = PyUnicode_GET_LENGTH(dir), nf = PyUnicode_GET_LENGTH(file);
    while (nd > 1 && PyUnicode_READ_CHAR(dir, nd - 1) == '/')
        nd--;
    if (nd == 0 || nf <= nd + 4 || PyUnicode_READ_CHAR(file, nd) != '/' ||
        PyUnicode_Tailmatch(file, dir, 0, nd, -1) != 1)
        return NULL;
    PyObject *rel = PyUnicode_Substring(file, nd + 1, nf - 3); /* without ".py" */
    PyObject *slash = PyUnicode_FromString("/"), *dot = PyUnicode_FromString(".");
    PyObject *parts = rel && slash ? PyUnicode_Split(rel, slash, -1) : NULL, *out = NULL;
    if (!parts || !dot)
        goto done;
    Py_ssize_t n = PyList_GET_SIZE(parts);
    if (n > 1 && PyUnicode_CompareWithASCIIString(PyList_GET_ITEM(parts, n - 1), "__init__") == 0)
        n--; /* a package's __init__.py */
    for (Py_ssize_t i = 0; i < n; i++)
        if (!PyUnicode_IsIdentifier(PyList_GET_ITEM(parts, i)))
            goto done;
    PyObject *used = PyList_GetSlice(parts, 0, n);
    out = used ? PyUnicode_Join(dot, used) : NULL;
    Py_XDECREF(used);
done:
    Py_XDECREF(rel);
    Py_XDECREF(slash);
    Py_XDECREF(dot);
    Py_XDECREF(parts);
    if (!out)
        PyErr_Clear();
    return out;
}

/* The module `name` when it is (or, found on sys.path, would be) loaded
 * from `file`: new reference, Py_None when it is another file or cannot be
 * found, a str reason when importing it fails, NULL with an exception. */
static PyObject *import_if_file(PyObject *name, PyObject *file)
{
    PyObject *mod = PyImport_GetModule(name);
    if (mod || PyErr_Occurred()) {
        int same = mod && module_is_file(mod, file);
        if (same)
            return mod;
        Py_XDECREF(mod);
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    PyObject *util = PyImport_ImportModule("importlib.util");
    PyObject *spec = util ? PyObject_CallMethod(util, "find_spec", "O", name) : NULL;
    PyObject *origin = spec && spec != Py_None ? PyObject_GetAttrString(spec, "origin") : NULL;
    Py_XDECREF(util);
    Py_XDECREF(spec);
    int same = origin && same_file(origin, file);
    Py_XDECREF(origin);
    if (!same) {
        if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
            return NULL;
        PyErr_Clear(); /* not findable there (a parent package failed, say) */
        Py_RETURN_NONE;
    }
    mod = PyImport_Import(name);
    if (mod)
        return mod;
    PyObject *why = ct_describe_pending();
    PyObject *out =
        why ? PyUnicode_FromFormat("cannot import %U (the script %U): %U", name, file, why) : NULL;
    Py_XDECREF(why);
    return out;
}

/* `file` loaded as the module "__mp_main__" (registered in sys.modules, as
 * multiprocessing does), or the one already loaded from it.  New reference,
 * a str reason, or NULL with an exception. */
static PyObject *load_as_mp_main(PyObject *file)
{
    PyObject *name = PyUnicode_FromString("__mp_main__");
    if (!name)
        return NULL;
    PyObject *old = PyImport_GetModule(name), *out = NULL;
    PyObject *util = NULL, *spec = NULL, *mod = NULL, *loader = NULL, *r = NULL;
    if (old || PyErr_Occurred()) {
        out = old && module_is_file(old, file)
                  ? Py_NewRef(old)
                  : PyUnicode_FromFormat("cannot load the script %U: this process already has"
                                         " another __mp_main__ module",
                                         file);
        goto done;
    }
    PyObject *modules = PyImport_GetModuleDict(); /* borrowed */
    util = PyImport_ImportModule("importlib.util");
    spec = util ? PyObject_CallMethod(util, "spec_from_file_location", "OO", name, file) : NULL;
    mod = spec && spec != Py_None ? PyObject_CallMethod(util, "module_from_spec", "O", spec) : NULL;
    loader = mod ? PyObject_GetAttrString(spec, "loader") : NULL;
    if (!loader || PyDict_SetItem(modules, name, mod) < 0)
        goto failed;
    r = PyObject_CallMethod(loader, "exec_module", "O", mod);
    if (!r) {
        PyObject *exc = ct_fetch_exc();
        if (PyDict_DelItem(modules, name) < 0)
            PyErr_Clear();
        ct_restore_exc(exc);
        goto failed;
    }
    out = Py_NewRef(mod);
    goto done;
failed:
    if (PyErr_Occurred()) {
        PyObject *why = ct_describe_pending();
        out = why ? PyUnicode_FromFormat("cannot load the script %U as a module: %U", file, why)
                  : NULL;
        Py_XDECREF(why);
    } else {
        out = PyUnicode_FromFormat("cannot load the script %U as a module", file);
    }
done:
    Py_DECREF(name);
    Py_XDECREF(old);
    Py_XDECREF(util);
    Py_XDECREF(spec);
    Py_XDECREF(mod);
    Py_XDECREF(loader);
    Py_XDECREF(r);
    return out;
}

/* The module holding what the script `file` defined when it ran as
 * __main__: new reference, a str reason, or NULL with an exception. */
static PyObject *script_module(PyObject *file)
{
    if (!file || file == Py_None || !PyUnicode_Check(file))
        return PyUnicode_FromString("it was recorded in a script run as __main__, and the"
                                    " script's file is not known");
    PyObject *main = PyImport_ImportModule("__main__");
    if (main && module_is_file(main, file))
        return main;
    Py_XDECREF(main);
    PyErr_Clear();
    PyObject *py = PyUnicode_FromString(".py");
    if (!py)
        return NULL;
    int is_py = PyUnicode_Tailmatch(file, py, 0, PY_SSIZE_T_MAX, 1) == 1;
    Py_DECREF(py);
    struct stat sb;
    if (!is_py || stat_path(file, &sb) < 0 || !S_ISREG(sb.st_mode))
        return PyUnicode_FromFormat("it was recorded in the script %U run as __main__, which is"
                                    " not here to load",
                                    file);
    PyObject *path = sys_path(NULL);
    PyObject *entries = path ? PyList_GetSlice(path, 0, PyList_GET_SIZE(path)) : NULL;
    if (!entries)
        return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(entries); i++) {
        PyObject *dir = PyList_GET_ITEM(entries, i);
        PyObject *name = PyUnicode_Check(dir) ? name_below(dir, file) : NULL;
        if (!name)
            continue;
        PyObject *found = import_if_file(name, file);
        Py_DECREF(name);
        if (found != Py_None) {
            Py_DECREF(entries);
            return found; /* a module, a reason or NULL */
        }
        Py_DECREF(found);
    }
    Py_DECREF(entries);
    return load_as_mp_main(file);
}

/* ---- module + qualname --------------------------------------------------- */

/* The raw attribute `name` of class `cls` (first in the MRO), or NULL
 * without an exception when absent. */
static PyObject *class_attr(PyObject *cls, PyObject *name)
{
    PyObject *mro = ((PyTypeObject *)cls)->tp_mro;
    if (!mro)
        return NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(mro); i++) {
        PyObject *d = ((PyTypeObject *)PyTuple_GET_ITEM(mro, i))->tp_dict;
        PyObject *v = d ? PyDict_GetItemWithError(d, name) : NULL;
        if (v)
            return Py_NewRef(v);
        if (PyErr_Occurred())
            return NULL;
    }
    return NULL;
}

/* A private `__name` of class `cls` under its mangled name `_Cls__name`,
 * or NULL without an exception when it is not one or is absent. */
static PyObject *mangled_attr(PyObject *cls, PyObject *part)
{
    const char *p = PyUnicode_AsUTF8(part);
    const char *c = ((PyTypeObject *)cls)->tp_name;
    const char *dot = strrchr(c, '.');
    c = dot ? dot + 1 : c;
    while (*c == '_')
        c++;
    size_t n = p ? strlen(p) : 0;
    if (!p || !*c || n < 3 || strncmp(p, "__", 2) != 0 || strcmp(p + n - 2, "__") == 0) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *name = PyUnicode_FromFormat("_%s%s", c, p);
    PyObject *v = name ? class_attr(cls, name) : NULL;
    Py_XDECREF(name);
    return v;
}

/* The module named `module` (for __main__: the recorded script's, see
 * script_module), new reference; or a str reason; or NULL. */
static PyObject *find_module(ct_state *st, PyObject *module, PyObject *qualname, PyObject *file)
{
    if (PyUnicode_CompareWithASCIIString(module, "__main__") == 0) {
        PyObject *m = script_module(file);
        if (!m || !PyUnicode_Check(m))
            return m;
        PyObject *out = PyUnicode_FromFormat("__main__.%U cannot be found: %U", qualname, m);
        Py_DECREF(m);
        return out;
    }
    PyObject *m = import_module(st, module);
    if (m)
        return m;
    PyObject *why = ct_describe_pending();
    PyObject *out = why ? PyUnicode_FromFormat("cannot import module %U: %U", module, why) : NULL;
    Py_XDECREF(why);
    return out;
}

/* Walks `qualname` from `obj` (a reference the walk consumes).  The object
 * found (new reference), a str reason, or NULL with an exception. */
static PyObject *walk(ct_state *st, PyObject *obj, PyObject *module, PyObject *qualname)
{
    PyObject *dot = PyUnicode_FromStringAndSize(".", 1);
    PyObject *parts = dot ? PyUnicode_Split(qualname, dot, -1) : NULL;
    PyObject *where = PyObject_GetAttr(obj, st->names.name);
    Py_XDECREF(dot);
    if (!where || !PyUnicode_Check(where)) {
        PyErr_Clear();
        Py_XSETREF(where, Py_NewRef(module));
    }
    if (!parts)
        goto error;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(parts); i++) {
        PyObject *part = PyList_GET_ITEM(parts, i);
        PyObject *next = NULL;
        if (PyType_Check(obj)) {
            next = class_attr(obj, part);
            if (!next && !PyErr_Occurred())
                next = mangled_attr(obj, part);
        } else {
            next = PyObject_GetAttr(obj, part);
            if (!next && !PyErr_ExceptionMatches(PyExc_AttributeError))
                goto error; /* a module whose __getattr__ fails otherwise */
        }
        if (!next) {
            if (PyErr_Occurred())
                PyErr_Clear();
            PyObject *out = PyUnicode_FromFormat("%U.%U was not found: %U has no attribute %R:"
                                                 " it moved or was renamed",
                                                 module, qualname, where, part);
            Py_DECREF(parts);
            Py_DECREF(obj);
            Py_DECREF(where);
            return out;
        }
        Py_SETREF(obj, next);
        Py_SETREF(where, PyUnicode_FromFormat("%U.%U", where, part));
        if (!where)
            goto error;
    }
    Py_DECREF(parts);
    Py_DECREF(where);
    return obj;
error:
    Py_XDECREF(parts);
    Py_XDECREF(where);
    Py_DECREF(obj);
    return NULL;
}

/* 1 when some class in the MRO of `v`'s type is `module`.`name`. */
static int type_named(PyObject *v, const char *module, const char *name)
{
    PyObject *mro = Py_TYPE(v)->tp_mro;
    for (Py_ssize_t i = 0; mro && i < PyTuple_GET_SIZE(mro); i++) {
        PyTypeObject *t = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
        PyObject *m = t->tp_dict ? PyDict_GetItemString(t->tp_dict, "__module__") : NULL;
        if (strcmp(t->tp_name, name) == 0 && m && PyUnicode_Check(m) &&
            PyUnicode_CompareWithASCIIString(m, module) == 0)
            return 1;
    }
    return 0;
}

/* The function under @calltape.record, classmethod, staticmethod,
 * property and cached_property wrappers of `fn` (consumed).  New reference
 * or NULL. */
static PyObject *unwrap(ct_state *st, PyObject *fn)
{
    for (int guard = 0; guard < 16; guard++) {
        PyObject *inner = NULL;
        if (PyObject_TypeCheck(fn, st->type.Recorder))
            inner = Py_NewRef(((Recorder *)fn)->wrapped);
        else if (PyObject_TypeCheck(fn, &PyClassMethod_Type) ||
                 PyObject_TypeCheck(fn, &PyStaticMethod_Type))
            inner = PyObject_GetAttrString(fn, "__func__");
        else if (PyObject_TypeCheck(fn, &PyProperty_Type))
            inner = PyObject_GetAttrString(fn, "fget");
        else if (type_named(fn, "functools", "cached_property"))
            inner = PyObject_GetAttrString(fn, "func");
        else
            break;
        Py_SETREF(fn, inner);
        if (!fn)
            return NULL;
    }
    return fn;
}

/* 1 when `fn` is a Python function named like the last part of
 * `qualname` and defined in `file` (the same file, or one of the same name
 * when the recorded path no longer exists). */
static int is_recorded_code(PyObject *fn, PyObject *qualname, PyObject *file)
{
    if (!PyFunction_Check(fn))
        return 0;
    PyCodeObject *co = (PyCodeObject *)PyFunction_GET_CODE(fn);
    Py_ssize_t n = PyUnicode_GET_LENGTH(qualname);
    Py_ssize_t dot = PyUnicode_FindChar(qualname, '.', 0, n, -1);
    PyObject *last = dot >= 0 ? PyUnicode_Substring(qualname, dot + 1, n) : Py_NewRef(qualname);
    int named = last && PyUnicode_Compare(last, co->co_name) == 0;
    Py_XDECREF(last);
    PyErr_Clear();
    if (!named)
        return 0;
    if (!file || !PyUnicode_Check(file) || PyUnicode_GET_LENGTH(file) == 0 ||
        PyUnicode_Compare(file, co->co_filename) == 0 || same_file(file, co->co_filename))
        return 1;
    PyErr_Clear();
    struct stat sb;
    if (stat_path(file, &sb) == 0)
        return 0; /* the recorded file exists and is another one */
    PyObject *a = PyObject_CallMethod(file, "rpartition", "s", "/");
    PyObject *b = PyObject_CallMethod(co->co_filename, "rpartition", "s", "/");
    int same = a && b && PyUnicode_Compare(PyTuple_GET_ITEM(a, 2), PyTuple_GET_ITEM(b, 2)) == 0;
    Py_XDECREF(a);
    Py_XDECREF(b);
    PyErr_Clear();
    return same;
}

/* The recorded code among `fn` (consumed) and the functions its wrappers
 * keep (__wrapped__, func): a new reference, a str reason when none is the
 * recorded code, or NULL with an exception. */
static PyObject *recorded_code(ct_state *st, PyObject *fn, PyObject *module, PyObject *qualname,
                               PyObject *file)
{
    PyObject *cur = fn;
    for (int guard = 0; guard < 8 && cur; guard++) {
        if (is_recorded_code(cur, qualname, file)) {
            if (cur != fn)
                Py_DECREF(fn);
            return cur;
        }
        PyObject *inner = NULL;
        if (ct_optional_attr(cur, "__wrapped__", &inner) < 0 ||
            (!inner && ct_optional_attr(cur, "func", &inner) < 0))
            break;
        if (inner)
            inner = unwrap(st, inner);
        if (cur != fn)
            Py_DECREF(cur);
        cur = inner;
    }
    if (cur != fn)
        Py_XDECREF(cur);
    if (PyErr_Occurred()) {
        Py_DECREF(fn);
        return ct_describe_pending();
    }
    PyObject *where =
        PyFunction_Check(fn)
            ? PyUnicode_FromFormat("%U in %U", ((PyFunctionObject *)fn)->func_qualname,
                                   ((PyCodeObject *)PyFunction_GET_CODE(fn))->co_filename)
            : PyUnicode_FromFormat("a %s", Py_TYPE(fn)->tp_name);
    Py_DECREF(fn);
    PyObject *out =
        where ? PyUnicode_FromFormat("%U.%U resolves to %U, not the recorded code"
                                     " (%U in %U)",
                                     module, qualname, where, qualname, file ? file : Py_None)
              : NULL;
    Py_XDECREF(where);
    return out;
}

PyObject *ct_resolve(ct_state *st, PyObject *record_tape, PyObject *module, PyObject *qualname,
                     PyObject *file)
{
    PyObject *mod = NULL, *fn = NULL, *names = NULL, *callable = NULL, *out = NULL;
    if (!st->names.spec) {
        PyErr_SetString(PyExc_RuntimeError, "calltape._native was cleared");
        return NULL;
    }
    Py_ssize_t lt = PyUnicode_FindChar(qualname, '<', 0, PyUnicode_GET_LENGTH(qualname), 1);
    if (lt == -2)
        return NULL;
    if (lt >= 0)
        return PyUnicode_FromFormat("%U.%U is defined inside another function (its qualname"
                                    " has <locals>) or is a lambda, so it cannot be imported",
                                    module, qualname);
    mod = find_module(st, module, qualname, file);
    if (!mod || PyUnicode_Check(mod))
        return mod;
    int is_main = PyUnicode_CompareWithASCIIString(module, "__main__") == 0;
    fn = walk(st, Py_NewRef(mod), module, qualname);
    if (!fn || PyUnicode_Check(fn)) {
        out = fn;
        fn = NULL;
        goto done;
    }
    fn = unwrap(st, fn);
    if (!fn)
        goto done;
    if (!PyCallable_Check(fn)) {
        out = PyUnicode_FromFormat("%U.%U is no longer callable (it is a %s)", module, qualname,
                                   Py_TYPE(fn)->tp_name);
        goto done;
    }
    if (file && PyUnicode_Check(file) && PyUnicode_GET_LENGTH(file) > 0) {
        fn = recorded_code(st, fn, module, qualname, file);
        if (!fn || PyUnicode_Check(fn)) {
            out = fn;
            fn = NULL;
            goto done;
        }
    }
    int kind = KIND_PLAIN;
    if (PyFunction_Check(fn)) {
        PyCodeObject *co = (PyCodeObject *)PyFunction_GetCode(fn);
        kind = co->co_flags & CO_GENERATOR         ? KIND_GENERATOR
               : co->co_flags & CO_COROUTINE       ? KIND_COROUTINE
               : co->co_flags & CO_ASYNC_GENERATOR ? KIND_ASYNC_GENERATOR
                                                   : KIND_PLAIN;
        names = PyCode_GetVarnames(co);
        if (!names)
            goto done;
    }
    if (record_tape) {
        PyObject *kw = Py_BuildValue("{s:O}", "tape", record_tape);
        PyObject *a = kw ? PyTuple_Pack(1, fn) : NULL;
        callable = a ? PyObject_Call((PyObject *)st->type.Recorder, a, kw) : NULL;
        Py_XDECREF(kw);
        Py_XDECREF(a);
        if (!callable)
            goto done;
    } else {
        callable = Py_NewRef(fn);
    }
    out = Py_BuildValue("(OiOOO)", callable, kind, PyFunction_Check(fn) ? fn : Py_None,
                        names ? names : Py_None, is_main ? mod : Py_None);
done:
    Py_XDECREF(mod);
    Py_XDECREF(fn);
    Py_XDECREF(names);
    Py_XDECREF(callable);
    return out;
}

PyObject *ct_resolve_py(PyObject *module, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"module", "qualname", "file", NULL};
    PyObject *mod, *qualname, *file = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "UU|O:resolve", kwlist, &mod, &qualname, &file))
        return NULL;
    PyObject *entry = ct_resolve(PyModule_GetState(module), NULL, mod, qualname, file);
    if (!entry)
        return NULL;
    if (PyUnicode_Check(entry)) { /* a reason */
        PyErr_SetObject(PyExc_LookupError, entry);
        Py_DECREF(entry);
        return NULL;
    }
    PyObject *fn = Py_NewRef(PyTuple_GET_ITEM(entry, CT_R_CALLABLE));
    Py_DECREF(entry);
    return fn;
}
