# Only some e2e tests pass this file explicitly: it fails at collection.
import pz_module_that_does_not_exist  # noqa: F401


def test_never_collected():
    pass
