"""Every piece of state the zygote and its children keep between calls, in one place.

Warm-up fills it, children read it (and the few per-run values at the end are
a child's own). Other modules refer to it as state.NAME, never with
`from .state import NAME`: several names are rebound (state.root = ...), and
an imported copy would keep the old object. Data only: no functions, no
imports.
"""

# --- Warm-up: the project and what its imports did ---------------------------

root = None  # the project root (realpath); None until warm-up, and in plain pytest
snapshot = {}  # project module name -> (path, mtime_ns, size, ino, ctime_ns) before warm-up
base_path = []  # sys.path of the interpreter before warm-up touched it
zygote_pythonpath = []  # entries the zygote's own PYTHONPATH added
warm_addopts = []  # the project's ini addopts, as the learning run read them
# (when, test module or conftest, module, message, category, filename, lineno):
# warnings raised in the learning run by imports the zygote made too
warm_warnings = []
rewrite_marks = []  # names modules marked for assertion rewriting at warm-up
# path -> (stat key, code): what pytest's rewriter made of each test module
# and conftest in the learning run
rewritten_code = {}
env_ops = []  # os.environ writes of warm-up imports: (op, key, value)
chdirs = []  # directories warm-up imports changed into
path_front = []  # sys.path entries warm-up imports put before the start's
path_back = []  # and after it
exit_handlers = []  # atexit handlers imports registered: (func, args, kwargs)
blas_limited = []  # thread-count variables warm-up set to 1
blas_lib = []  # [the loaded OpenBLAS (ctypes), or None], found at warm-up
# warm-up phase, for `start`'s progress line ([None] in the learning run: the zygote reports)
progress_phase = ["starting"]
# len(sys.modules) at which progress is sent again: by count, not time, so
# that warm-up allocates the same from one generation to the next
progress_due = [0]

# --- Reload: what a child needs to decide what to import again ---------------

edges = {}  # project module -> modules it imported at warm-up
rdeps = {}  # module -> project modules that import it (or hold what it defined)
# module -> the project modules below it whose nearest ancestor in the
# snapshot it is (a purged package takes its submodules along)
subs = {}
by_path = {}  # a project file's path -> the modules imported from it
# Project modules pytest or a plugin imported at its own import (pytest on
# a project that is one of its dependencies): they hold the objects, and a
# child cannot import them again.
early = set()

# --- Inputs of imports other than code (docs/design.md): a module imported ---
# here is stale for a run whose inputs differ from what its import read.

env_reads = {}  # module -> {variable: value, or None when unset}, as first read
env_project = {}  # the same for project modules (a child imports them again)
data_reads = {}  # project file read at import -> [stat key, {modules}]
data_project = {}  # the same, for those a child follows: -> (stat key, project modules)

# --- pytest speed-ups (speedups.py) ------------------------------------------

# The caching varnames and fixture dir() of speedups.cache_run_independent_work.
cached = []
# pytest's own get_config(), once speedups wrapped it (the spare builds with it).
build_config = None
# What a spare built ahead of its request (speedups.spare_speculate): (config, the
# environment variables the build read), taken by the run's get_config().
speculated = None

# --- A child's own ------------------------------------------------------------

ru0 = None  # resource usage when this child's run began
reloaded = 0  # modules this child purged for re-import
checked = 0  # project files this child compared with the snapshot
# In a child that re-imports modules: generators of workarounds to finish
# after the session (pytest_zygote.workaround); None elsewhere.
workaround_pending = None
worker_cmd = None  # a run's: the "python" of its xdist workers (workers.py), or None

# How long this run's collection took, in ms (ahead.CollectTime), for the
# zygote's choice to collect the next run ahead; and whether this child
# collected ahead and was given its request.
collect_ms = 0
ahead_adopted = False
