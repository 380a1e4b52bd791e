"""The code that runs inside the zygote (warm-up) and inside each test child.

Reached only through pytest_zygote._zygote, the module C imports. These
modules import nothing else from pytest_zygote (not plugin, _fast, _handover
or hook): a zygote and its children stay free of the plugin's code, which
runs in plain pytest. What is shared between them is in state.py; everything
a child changes dies with the child.

    state      the state warm-up fills and children read, in one place
    files      which files are the project's; a file version's stat key
    recording  what warm-up's imports do: import edges, environment reads,
               environment writes, chdir, sys.path, atexit handlers; progress
    learning   the forked learning run (pytest --collect-only) and its reports
    warmup     warmup(): the zygote's imports, the snapshot, the indexes
    inputs     environment variables and data files imports read
    reload     changed modules, their reverse import closure, purging them
    speedups   work pytest repeats in every session, done once
    child      child_run(): from the fork to pytest.main and the exit code
"""
