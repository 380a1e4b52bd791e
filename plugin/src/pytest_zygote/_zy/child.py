"""A test child, between the fork and pytest: the client's stdio,
environment, sys.path and interpreter settings, what warm-up's imports did
replayed, BLAS threads and exit handlers given back, the reload step, then
pytest.main (child_run, called from C). Everything it changes dies with the
child. Also the warm-up halves of BLAS limiting that the child undoes.
"""

import gc
import io
import os
import sys
import time

from . import state, workers
from .files import pytest_main_file
from .inputs import inputs_changed
from .learning import CollectBudget
from .reload import dirty_modules, purge
from .speedups import refuse_stale_bytecode


def child_run(argv, cwd, env, ahead=False):
    """Run pytest in a freshly forked child. Returns the exit code.

    C has already set up fds 0/1/2, the session, signals and the cwd.
    ahead: a child collecting ahead (ahead.py), whose stdio is its own until
    its request comes.
    """
    import resource
    import signal

    state.ru0 = resource.getrusage(resource.RUSAGE_SELF)  # for the benchmarks
    profile = env.get("PYTEST_ZYGOTE_PROFILE")
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    # Python's own SIGINT handler, so Ctrl-C becomes KeyboardInterrupt. C reset
    # the dispositions; these two are what CPython sets at start-up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _new_stdio(bool(env.get("PYTHONUNBUFFERED")))
    runner_path = env.pop("PYTEST_ZYGOTE_SYS_PATH", None)
    state.worker_cmd = env.pop("PYTEST_ZYGOTE_WORKER_CMD", None)
    worker = env.pop("PYTEST_ZYGOTE_WORKER", None)
    result_file = env.pop("PYTEST_ZYGOTE_RESULT_FILE", None)  # pytest-zygote watch
    # run --affected (affected.py): when this run began, before the reload step
    affected = env.pop("PYTEST_ZYGOTE_AFFECTED", None) and time.time_ns()
    # The files that may differ from the snapshot, from the server (absent:
    # check every one). Never seen by the run, as pytest-zygote's own.
    check = env.pop("PYTEST_ZYGOTE_CHECK", None)
    env.pop("PYTEST_ZYGOTE_EPOCH", None)  # the server's change count (ahead.c)
    zygote_env = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    # A pytest this run starts in a subprocess (in the same project) runs in
    # its own process: handed over, it could wait for a run slot this run holds.
    os.environ["PYTEST_ZYGOTE_CHILD"] = str(os.getpid())
    _apply_path(cwd, env)
    _add_runner_path(runner_path)
    _replay_side_effects()
    _apply_interpreter_env(zygote_env, env)
    try:
        _restore_blas_threads(env)
    except Exception:  # noqa: BLE001 - BLAS then stays single-threaded
        pass
    _reset_libraries(cwd)
    sys.argv = [pytest_main_file()] + list(argv)
    _reset_exit_handlers()
    try:
        dirty = dirty_modules(check)
        inputs = inputs_changed(env)
        stale = sorted(state.early.intersection(dirty).union(state.early.intersection(inputs)))
        if stale:
            # pytest holds objects of these: importing them again here
            # would leave it running the old ones.
            sys.stderr.write(
                "pytest-zygote: %s changed, and pytest or a plugin imported it before "
                "the project: this zygote cannot run the new code; run again (the "
                "server warms a fresh one when it sees the change)\n" % state.snapshot[stale[0]][0])
            return _finish(75)
        if _measures_coverage(argv, env):
            # pytest-cov starts measuring before conftests and test modules
            # are imported; module-level lines of modules imported at
            # warm-up would count as never run. Import the project afresh.
            dirty = list(state.snapshot)
        if dirty or inputs:
            state.reloaded = len(purge(dirty, inputs))
            state.workaround_pending = []
            wa = sys.modules.get("pytest_zygote.workaround")
            if wa is not None:
                wa._run(state.workaround_pending)
        refuse_stale_bytecode()
        from .ahead import CollectTime

        child_plugins = [CollectTime()]
        if ahead:
            from .ahead import plugin as ahead_plugin

            child_plugins.append(ahead_plugin())
        if os.environ.pop("PYTEST_ZYGOTE_PRACTICE", None):
            child_plugins.append(CollectBudget())
        if result_file:
            child_plugins.append(_Result(result_file))
        if affected and not worker:
            from .affected import plugin as affected_plugin

            child_plugins.append(affected_plugin(affected))
        # Modules still imported will not warn again by themselves.
        replay = [w for w in state.warm_warnings if w[2] in sys.modules]
        if replay or state.rewrite_marks:
            child_plugins.append(_ReplayWarmUp(replay))
        import importlib

        importlib.invalidate_caches()
        np_random = sys.modules.get("numpy.random")
        if np_random is not None:
            np_random.seed()
        gc.enable()
        import pytest  # noqa: F401

        if worker:
            code = workers.python_main(argv, child_plugins)
        else:
            warm_workers = workers.plugin_for(argv)
            if warm_workers is not None:
                child_plugins.append(warm_workers)
            code = _pytest_main(child_plugins)
        if state.workaround_pending:
            sys.modules["pytest_zygote.workaround"]._finish(state.workaround_pending)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, (int, type(None))):
            print(e.code, file=sys.stderr)
    except KeyboardInterrupt:
        _print_exc()
        code = 128 + signal.SIGINT
    except BaseException:
        _print_exc()
        code = 1
    code = _finish(code)
    if profile:
        profiler.disable()
        try:
            profiler.dump_stats(profile)
        except OSError as e:
            sys.stderr.write("pytest-zygote: cannot write the profile to %s: %s\n" % (profile, e))
    if os.environ.get("PYTEST_ZYGOTE_TIMING", "").strip().lower() in ("1", "true", "yes", "on"):
        r, r0 = resource.getrusage(resource.RUSAGE_SELF), state.ru0
        sys.stderr.write("pytest-zygote: child %.1f ms CPU, %d page faults, %d modules reloaded, "
                         "%d files checked%s\n"
                         % ((r.ru_utime + r.ru_stime - r0.ru_utime - r0.ru_stime) * 1000,
                            r.ru_minflt - r0.ru_minflt, state.reloaded, state.checked,
                            ", collected ahead" if state.ahead_adopted else ""))
        sys.stderr.flush()
    return code


def _new_stdio(unbuffered=False):
    """Recreate sys.std* on fds 0/1/2 (now the client's), as CPython's
    create_stdio does (PYTHONUNBUFFERED: stdout and stderr write through)."""
    old_out = sys.__stdout__ or sys.stdout
    enc = getattr(old_out, "encoding", None) or "utf-8"
    errors = getattr(old_out, "errors", None) or "strict"
    old_in = sys.__stdin__ or sys.stdin
    in_errors = getattr(old_in, "errors", None) or errors

    def make(fd, mode, name, errs, line):
        try:
            os.fstat(fd)
        except OSError:
            # Closed by the client (`1>&-`): None, as CPython's create_stdio
            # leaves a standard stream whose fd is not valid.
            return None
        raw = io.FileIO(fd, mode, closefd=False)
        raw.name = name
        if mode == "rb":
            buf = io.BufferedReader(raw)
        elif unbuffered:
            return io.TextIOWrapper(raw, encoding=enc, errors=errs, line_buffering=line,
                                    write_through=True)
        else:
            buf = io.BufferedWriter(raw)
        return io.TextIOWrapper(buf, encoding=enc, errors=errs, line_buffering=line)

    sys.stdin = sys.__stdin__ = make(0, "rb", "<stdin>", in_errors, False)
    sys.stdout = sys.__stdout__ = make(1, "wb", "<stdout>", errors, _isatty(1))
    sys.stderr = sys.__stderr__ = make(2, "wb", "<stderr>", "backslashreplace", True)


def _isatty(fd):
    try:
        return os.isatty(fd)
    except OSError:
        return False


def _apply_path(cwd, env):
    """sys.path as `python -m pytest` would have it in cwd with the client's PYTHONPATH."""
    base = [p for p in state.base_path if os.path.abspath(p) not in state.zygote_pythonpath]
    pp = env.get("PYTHONPATH", "")
    extra = [os.path.abspath(os.path.join(cwd, p)) for p in pp.split(os.pathsep) if p]
    sys.path[:] = [cwd] + extra + [p for p in base if p not in extra]


def _add_runner_path(text):
    """The plugin's hand-over sends the sys.path of the process it replaced
    (PYTEST_ZYGOTE_SYS_PATH, JSON): directories a runner script added before
    calling pytest.main() go in after the first entry, in their order, so
    that the tests import what they would have imported there."""
    if not text:
        return
    import json

    try:
        entries = json.loads(text)
    except ValueError:
        return
    have = set(sys.path)
    extra = [p for p in entries if isinstance(p, str) and p and p not in have]
    sys.path[1:1] = list(dict.fromkeys(extra))


def _replay_side_effects():
    """In a child, after the client's environment, cwd and path are set."""
    for op, key, value in state.env_ops:
        try:
            if op == "set":
                os.environ[key] = value
            elif op == "setdefault":
                os.environ.setdefault(key, value)
            else:
                os.environ.pop(key, None)
        except Exception:  # noqa: BLE001 - a value os.environ refuses
            pass
    if state.path_front:
        sys.path[:0] = [p for p in state.path_front if p not in sys.path]
    sys.path.extend(p for p in state.path_back if p not in sys.path)
    for d in state.chdirs:
        try:
            os.chdir(d)
        except OSError:
            pass


def _apply_interpreter_env(old, new):
    """The few interpreter-start variables that can still follow the client,
    and the time zone, which libc read from the zygote's TZ."""
    sys.dont_write_bytecode = bool(new.get("PYTHONDONTWRITEBYTECODE"))
    if bool(new.get("PYTHONFAULTHANDLER")) != bool(old.get("PYTHONFAULTHANDLER")):
        import faulthandler

        if new.get("PYTHONFAULTHANDLER"):
            faulthandler.enable()
        else:
            faulthandler.disable()
    if os.environ.get("TZ") != old.get("TZ"):
        time.tzset()
    if new.get("PYTHONWARNINGS") != old.get("PYTHONWARNINGS"):
        import warnings

        opts = [o for o in new.get("PYTHONWARNINGS", "").split(",") if o]
        sys.warnoptions[:] = opts
        warnings._processoptions(opts)


def _restore_blas_threads(env):
    """In a child: the thread count OpenBLAS would have chosen in a cold run
    with this environment (its variables, else one per CPU it may use)."""
    lib = state.blas_lib[0] if state.blas_lib else None
    if lib is None:
        return
    want = None
    # What OpenBLAS reads at load (blas_get_cpu_number): its own variables,
    # then OMP_NUM_THREADS; unset or 0, the CPUs it may run on.
    for k in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"):
        v = env.get(k)
        if v:
            try:
                want = int(v.split(",")[0])
            except ValueError:
                pass
            if want:
                break
    if not want:
        try:
            want = len(os.sched_getaffinity(0))
        except OSError:
            want = os.cpu_count() or 1
    if want > 1:
        lib.openblas_set_num_threads(want)


def _reset_libraries(cwd):
    """Libraries that compute a default from the process at import time.
    hypothesis puts its example database under the cwd it was imported in
    (the root, in the zygote) and caches HYPOTHESIS_STORAGE_DIRECTORY once
    read: point both back at this run's cwd and environment. pytest-xdist
    freezes sys.path when its plugin is imported and gives that to its
    workers: give it this run's (with the client's PYTHONPATH)."""
    xp = sys.modules.get("xdist.plugin")
    frozen = getattr(xp, "_sys_path", None)
    if isinstance(frozen, list):
        frozen[:] = sys.path  # in place: xdist.workermanage imported the list
    hc = sys.modules.get("hypothesis.configuration")
    if hc is not None:
        if hasattr(hc, "__hypothesis_home_directory_default"):
            setattr(hc, "__hypothesis_home_directory_default",
                    os.path.join(cwd, ".hypothesis"))
        if hasattr(hc, "__hypothesis_home_directory"):
            setattr(hc, "__hypothesis_home_directory", None)


def _reset_exit_handlers():
    """A child's exit handlers as a fresh interpreter that imported the same
    modules would have them: those the standard library registered at import
    (they flush and clean up what belongs to this process), not the zygote's
    others (a project module's handler may remove what the zygote made for
    every run). weakref.finalize registers its handler once per process:
    the zygote's objects stay out of it, this run's are finalized at exit."""
    import atexit
    import weakref

    atexit._clear()
    for func, args, kwargs in state.exit_handlers:
        mod = (getattr(func, "__module__", None) or "").partition(".")[0]
        if mod in sys.stdlib_module_names and \
                getattr(func, "__func__", None) is not weakref.finalize._exitfunc.__func__:
            atexit.register(func, *args, **kwargs)
    for info in list(weakref.finalize._registry.values()):
        info.atexit = False
    weakref.finalize._registered_with_atexit = False


class _ReplayWarmUp:
    """A plugin for children: what importing modules at warm-up did that a
    cold run would have seen happen in the run.

    Warnings: those raised while a module this child did not import again
    was imported (by a test module or conftest in the learning run) come
    back under the run's own filters, where a cold run raises them: in the
    config phase, or when the collector of the test module that imported it
    starts (a conftest's, with the first collector). Rewrite marks: names a
    module imported at warm-up gave to register_assert_rewrite are marked on
    this run's rewriting hook, as they would have been when it imported."""

    def __init__(self, replay):
        self._config = [w for w in replay if w[0] == "config"]
        self._collect = {}
        for w in replay:
            if w[0] != "config":
                self._collect.setdefault(w[1], []).append(w)
        self._conftests_done = False

    def pytest_load_initial_conftests(self, early_config):
        if state.rewrite_marks:
            from _pytest.assertion import assertstate_key

            assertstate = early_config.stash.get(assertstate_key, None)
            if assertstate is not None and assertstate.hook is not None:
                assertstate.hook.mark_rewrite(*state.rewrite_marks)
        _warn_again(self._config)

    def pytest_collectstart(self, collector):
        path = str(getattr(collector, "path", ""))
        due = self._collect.pop(path, [])
        if not self._conftests_done:
            self._conftests_done = True
            for key in [k for k in self._collect if os.path.basename(k or "") == "conftest.py"]:
                due += self._collect.pop(key)
        _warn_again(due)


def _warn_again(replay):
    import warnings

    for _when, _path, _module, message, category, filename, lineno in replay:
        warnings.warn_explicit(message, category, filename, lineno)


def _measures_coverage(argv, env):
    import shlex

    try:
        args = list(argv) + shlex.split(env.get("PYTEST_ADDOPTS", "")) + list(state.warm_addopts)
    except ValueError:
        args = list(argv)
    return any(a.startswith("--cov") for a in args) and "--no-cov" not in args


class _Result:
    """The counts `pytest-zygote watch` prints in its status line, written
    to the file it names when the session finishes."""

    def __init__(self, path):
        self.path = path

    def pytest_sessionfinish(self, session):
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        passed = len(getattr(tr, "stats", {}).get("passed", ()))
        try:
            with open(self.path, "w") as f:
                f.write("failed=%d\npassed=%d\n" % (session.testsfailed, passed))
        except OSError:
            pass  # the status line then shows the exit code


def _pytest_main(plugins):
    """pytest.console_main, with extra plugins."""
    import pytest

    try:
        code = pytest.main(plugins=plugins)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # As console_main: Python flushes standard streams on exit; redirect
        # what is left to devnull to avoid another BrokenPipeError.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _print_exc():
    """The traceback on stderr, as the interpreter prints an uncaught one,
    unless stderr is unusable (a test closed it): as the interpreter does, a
    failure to report is not an error of its own. The outer frames that are
    this module's are left out: under plain pytest they are the interpreter's
    and pytest's entry point, not code of ours to look into."""
    import traceback

    try:
        _, e, tb = sys.exc_info()
        while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
            tb = tb.tb_next
        traceback.print_exception(type(e), e, tb)
    except Exception:
        pass


def _finish(code):
    """What the interpreter would do at exit: join threads, run atexit, flush."""
    import atexit
    import threading

    try:
        threading._shutdown()
    except BaseException:
        pass
    try:
        atexit._run_exitfuncs()
    except BaseException:
        pass
    for f in (sys.stdout, sys.stderr):
        if f is None:
            continue  # closed by the client (`1>&-`): nothing to flush, as at exit
        try:
            f.flush()
        except BaseException:
            # As Py_RunMain: a standard stream that cannot be flushed at
            # exit (a test closed fd 1, say) makes the exit code 120.
            code = 120
    return int(code) & 0xFF


# Thread-count variables of the BLAS and OpenMP runtimes: each starts its
# thread pool when its library is loaded (import numpy), and a zygote must
# not hold threads when it forks.
_BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                     "BLIS_NUM_THREADS")


def limit_blas_threads():
    """Load BLAS single-threaded in the zygote unless the user chose a
    number; children give it back the number a cold run would use
    (_restore_blas_threads). Returns the variables set here."""
    limited = [k for k in _BLAS_THREAD_VARS if k not in os.environ]
    for k in limited:
        os.environ[k] = "1"
    state.blas_limited[:] = limited
    return limited


def find_openblas():
    """At the end of warm-up, when BLAS was limited and numpy is imported:
    find OpenBLAS once, so children need not read /proc/self/maps."""
    if state.blas_limited and any(m in sys.modules for m in (
            "numpy.core._multiarray_umath", "numpy._core._multiarray_umath")):
        state.blas_lib[:] = [_openblas()]


def _openblas():
    """The OpenBLAS library this process loaded, or None."""
    try:
        with open("/proc/self/maps") as f:
            paths = {ln.split(None, 5)[5].strip() for ln in f if "openblas" in ln
                     and len(ln.split(None, 5)) == 6}
    except OSError:
        return None
    import ctypes

    for p in sorted(paths):
        try:
            lib = ctypes.CDLL(p, mode=os.RTLD_NOLOAD)
        except OSError:
            continue
        if hasattr(lib, "openblas_set_num_threads"):
            return lib
    return None
