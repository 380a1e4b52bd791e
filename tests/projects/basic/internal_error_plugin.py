# Loaded with -p internal_error_plugin: makes pytest exit with INTERNAL_ERROR (3).


def pytest_collection_modifyitems(session, config, items):
    raise RuntimeError("internal error on purpose")
