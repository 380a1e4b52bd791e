/*
 * Embedding CPython: interpreter set-up, the warm-up call and the per-run
 * call into plugin/src/pytest_zygote/_zygote.py (which hands them on to the
 * modules of _zy/). The only file that includes Python.h. Never used by the
 * supervisor, which must not initialise Python.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <limits.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <string.h>

#include "zygote/pyembed.h"

static PyObject *zmod;          /* pytest_zygote._zygote */
static PyThreadState *unlocked; /* set while the GIL is released */
static void (*progress_fn)(const char *text);
static void (*learning_fn)(void);
static int (*adopt_fn)(const char *reads, const void *blobs, size_t nblobs);

void
pyembed_on_progress(void (*fn)(const char *text))
{
	progress_fn = fn;
}

void
pyembed_on_learning_fork(void (*fn)(void))
{
	learning_fn = fn;
}

void
pyembed_on_adopt(int (*fn)(const char *reads, const void *blobs, size_t nblobs))
{
	adopt_fn = fn;
}

/* _pytest_zygote_c.ahead_adopt(reads, blobs): in a child collecting ahead,
 * once collected (ahead.c). True: it is the request's run now. */
static PyObject *
c_ahead_adopt(PyObject *self, PyObject *args)
{
	(void)self;
	const char *reads;
	const char *blobs;
	Py_ssize_t nblobs;
	if (!PyArg_ParseTuple(args, "sy#", &reads, &blobs, &nblobs))
		return NULL;
	return PyBool_FromLong(adopt_fn && adopt_fn(reads, blobs, (size_t)nblobs));
}

/* _pytest_zygote_c.progress(text): warm-up progress for `start`. */
static PyObject *
c_progress(PyObject *self, PyObject *arg)
{
	(void)self;
	const char *text = PyUnicode_AsUTF8(arg);
	if (!text)
		return NULL;
	if (progress_fn)
		progress_fn(text);
	Py_RETURN_NONE;
}

/*
 * _pytest_zygote_c.learning_child(): called first in the learning run, a
 * child the zygote forked from Python at warm-up. It reports nothing to the
 * supervisor (the control socket is the zygote's alone) and dies with the
 * zygote.
 */
static PyObject *
c_learning_child(PyObject *self, PyObject *unused)
{
	(void)self;
	(void)unused;
	progress_fn = NULL;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (learning_fn)
		learning_fn();
	Py_RETURN_NONE;
}

static PyMethodDef c_methods[] = {
	{ "progress", c_progress, METH_O, "Report warm-up progress to the supervisor." },
	{ "learning_child", c_learning_child, METH_NOARGS, "Set up the learning run's process." },
	{ "ahead_adopt", c_ahead_adopt, METH_VARARGS, "Wait, collected ahead, for the request." },
	{ NULL, NULL, 0, NULL },
};

static struct PyModuleDef c_module = {
	PyModuleDef_HEAD_INIT,
	"_pytest_zygote_c",
	"pytest-zygote's C side.",
	-1,
	c_methods,
	NULL,
	NULL,
	NULL,
	NULL,
};

static PyObject *
c_module_init(void)
{
	return PyModule_Create(&c_module);
}

/* Format the pending Python exception into err and clear it. */
static void
py_error(char *err, size_t errsize, const char *what)
{
	PyObject *type, *value, *tb;
	PyErr_Fetch(&type, &value, &tb);
	PyErr_NormalizeException(&type, &value, &tb);
	const char *msg = NULL;
	PyObject *s = value ? PyObject_Str(value) : NULL;
	if (s)
		msg = PyUnicode_AsUTF8(s);
	const char *tname = type ? ((PyTypeObject *)type)->tp_name : "error";
	snprintf(err, errsize, "%s: %s: %s", what, tname, msg ? msg : "(no message)");
	if (value) {
		/* The whole traceback goes to the log (our stderr). */
		PyErr_Restore(type, value, tb);
		PyErr_Print();
		type = value = tb = NULL;
	}
	Py_XDECREF(s);
	Py_XDECREF(type);
	Py_XDECREF(value);
	Py_XDECREF(tb);
	PyErr_Clear();
}

int
pyembed_init(const char *python, const char *pydir, char *err, size_t errsize)
{
	PyStatus st;
	PyConfig config;

	if (PyImport_AppendInittab("_pytest_zygote_c", c_module_init) < 0) {
		snprintf(err, errsize, "cannot register the _pytest_zygote_c module");
		return -1;
	}
	PyConfig_InitPythonConfig(&config);
	/* The zygote owns its signals; the child installs SIGINT's handler itself. */
	config.install_signal_handlers = 0;
	config.parse_argv = 0;
	/* program_name and executable point at the project's interpreter, so
	 * getpath finds a virtualenv's pyvenv.cfg next to it. */
	st = PyConfig_SetBytesString(&config, &config.program_name, python);
	if (PyStatus_Exception(st))
		goto fail;
	st = PyConfig_SetBytesString(&config, &config.executable, python);
	if (PyStatus_Exception(st))
		goto fail;
	char *argv[] = { (char *)python, NULL };
	st = PyConfig_SetBytesArgv(&config, 1, argv);
	if (PyStatus_Exception(st))
		goto fail;
	st = Py_InitializeFromConfig(&config);
	if (PyStatus_Exception(st))
		goto fail;
	PyConfig_Clear(&config);

	/* Import our module from pydir without leaving pydir on sys.path, where
	 * the project's tests would see it. */
	PyObject *path = PySys_GetObject("path"); /* borrowed */
	PyObject *dir = pydir ? PyUnicode_DecodeFSDefault(pydir) : NULL;
	if (pydir && (!path || !dir || PyList_Insert(path, 0, dir) < 0)) {
		Py_XDECREF(dir);
		py_error(err, errsize, "cannot set sys.path");
		return -1;
	}
	zmod = PyImport_ImportModule("pytest_zygote._zygote");
	if (dir) {
		Py_ssize_t n = PyList_Size(path);
		for (Py_ssize_t i = 0; i < n; i++) {
			if (PyList_GetItem(path, i) == dir) {
				PySequence_DelItem(path, i);
				break;
			}
		}
		Py_DECREF(dir);
	}
	if (!zmod) {
		if (pydir) {
			py_error(err, errsize, "cannot import pytest_zygote._zygote");
		} else {
			char what[PATH_MAX + 200];
			snprintf(what, sizeof(what),
				 "the pytest_zygote package is neither installed next to this "
				 "binary nor importable by '%s' (set PYTEST_ZYGOTE_PYDIR to the "
				 "directory that holds pytest_zygote/)",
				 python);
			py_error(err, errsize, what);
		}
		return -1;
	}
	return 0;
fail:
	snprintf(err, errsize, "cannot initialise Python from '%s': %s%s%s", python,
		 st.func ? st.func : "", st.func ? ": " : "", st.err_msg ? st.err_msg : "");
	PyConfig_Clear(&config);
	return -1;
}

static long
dict_long(PyObject *d, const char *key)
{
	PyObject *v = PyDict_GetItemString(d, key); /* borrowed */
	return v && PyLong_Check(v) ? PyLong_AsLong(v) : 0;
}

int
pyembed_warmup(const char *root, int learn_fd, int learn_pid, struct pyembed_warm *ret, char *err,
	       size_t errsize)
{
	PyObject *res = PyObject_CallMethod(zmod, "warmup", "sii", root, learn_fd, learn_pid);
	if (!res) {
		py_error(err, errsize, "warm-up failed");
		return -1;
	}
	memset(ret, 0, sizeof(*ret));
	ret->modules = dict_long(res, "modules");
	ret->project_files = dict_long(res, "project_files");
	ret->threads = (int)dict_long(res, "threads");
	PyObject *v = PyDict_GetItemString(res, "seconds");
	ret->seconds = v ? PyFloat_AsDouble(v) : 0;
	v = PyDict_GetItemString(res, "status");
	const char *s = v ? PyUnicode_AsUTF8(v) : NULL;
	snprintf(ret->status, sizeof(ret->status), "%s", s ? s : "ok");
	PyErr_Clear();
	v = PyDict_GetItemString(res, "files");
	s = v ? PyUnicode_AsUTF8(v) : NULL;
	ret->files = strdup(s ? s : "");
	PyErr_Clear();
	Py_DECREF(res);
	return 0;
}

void
pyembed_settle(void)
{
	PyObject *res = PyObject_CallMethod(zmod, "settle", NULL);
	if (!res) {
		PyErr_Print();
		PyErr_Clear();
	}
	Py_XDECREF(res);
}

void
pyembed_learn(const char *root, int w)
{
	PyObject *res = PyObject_CallMethod(zmod, "learn", "si", root, w);
	if (!res)
		PyErr_Print();
	Py_XDECREF(res);
}

void
pyembed_fork_prepare(void)
{
	PyOS_BeforeFork();
}

void
pyembed_fork_parent(void)
{
	PyOS_AfterFork_Parent();
}

void
pyembed_fork_child(void)
{
	/* Re-initialises the GIL and runs os.register_at_fork hooks: random is
	 * reseeded here, threading learns it is the main thread. */
	PyOS_AfterFork_Child();
}

void
pyembed_unlock(void)
{
	if (!unlocked)
		unlocked = PyEval_SaveThread();
}

void
pyembed_lock(void)
{
	if (unlocked) {
		PyEval_RestoreThread(unlocked);
		unlocked = NULL;
	}
}

void
pyembed_spare_speculate(void)
{
	PyObject *res = PyObject_CallMethod(zmod, "spare_speculate", NULL);
	if (!res)
		PyErr_Clear();
	Py_XDECREF(res);
}

/* A list of str decoded like CPython decodes argv and environ. */
static PyObject *
strv_to_list(char *const *v, size_t n)
{
	PyObject *l = PyList_New((Py_ssize_t)n);
	for (size_t i = 0; l && i < n; i++) {
		PyObject *s = PyUnicode_DecodeFSDefault(v[i]);
		if (!s) {
			Py_CLEAR(l);
			break;
		}
		PyList_SET_ITEM(l, (Py_ssize_t)i, s);
	}
	return l;
}

static PyObject *
env_to_dict(char *const *v, size_t n)
{
	PyObject *d = PyDict_New();
	for (size_t i = 0; d && i < n; i++) {
		const char *eq = strchr(v[i], '=');
		if (!eq)
			continue;
		PyObject *k = PyUnicode_DecodeFSDefaultAndSize(v[i], eq - v[i]);
		PyObject *val = PyUnicode_DecodeFSDefault(eq + 1);
		if (!k || !val || PyDict_SetItem(d, k, val) < 0)
			Py_CLEAR(d);
		Py_XDECREF(k);
		Py_XDECREF(val);
	}
	return d;
}

int
pyembed_child_run(const struct proto_request *req, int ahead)
{
	int code = 1;
	PyObject *argv = strv_to_list(req->argv, req->argc);
	PyObject *env = env_to_dict(req->env, req->envc);
	PyObject *cwd = PyUnicode_DecodeFSDefault(req->cwd);
	if (argv && env && cwd) {
		PyObject *res = PyObject_CallMethod(zmod, "child_run", "OOOO", argv, cwd, env,
						    ahead ? Py_True : Py_False);
		if (res) {
			code = (int)PyLong_AsLong(res);
			Py_DECREF(res);
		}
	}
	if (PyErr_Occurred()) {
		PyErr_Print();
		code = 1;
	}
	Py_XDECREF(argv);
	Py_XDECREF(env);
	Py_XDECREF(cwd);
	return code & 0xff;
}

long
pyembed_collect_ms(void)
{
	long ms = 0;
	PyObject *res = PyObject_CallMethod(zmod, "collect_ms", NULL);
	if (res) {
		ms = PyLong_AsLong(res);
		Py_DECREF(res);
	}
	if (PyErr_Occurred()) {
		PyErr_Clear();
		ms = 0;
	}
	return ms < 0 ? 0 : ms;
}
