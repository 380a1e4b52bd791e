"""Warm-up instruments the interpreter (import recording, pytest's import_path)
and then restores it: a run sees the same builtins and pytest functions as a
cold run, also when the warm-up collection failed and when third-party
plugins' module state was put back after warm-up."""


def test_children_see_no_warm_up_instrumentation(pz):
    root = pz.project("pristine")
    pz.start(root)
    r = pz.run_zygote(["-q", "-p", "no:cacheprovider"], cwd=root)
    assert r.rc == 0, r


def test_also_after_a_failed_warm_up_collection(pz):
    root = pz.project("pristine")
    (root / "tests" / "test_broken.py").write_text("import no_such_module_here\n")
    pz.start(root)
    r = pz.run_zygote(["-q", "-p", "no:cacheprovider", "tests/test_pristine.py"], cwd=root)
    assert r.rc == 0, r
