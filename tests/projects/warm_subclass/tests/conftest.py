# As database test plugins do (SQLAlchemy's, for one): a test class marked
# __backend__ is collected once per backend, as generated subclasses that
# are set on the test module so that they can be found by name.
import inspect

import pytest

from app.backends import BACKENDS


def pytest_pycollect_makeitem(collector, name, obj):
    if inspect.isclass(obj) and name.startswith("Test") and getattr(obj, "__backend__", False):
        classes = []
        for backend in BACKENDS:
            sub_name = "%s_%s" % (name, backend)
            sub = type(sub_name, (obj,), {"backend": backend})
            setattr(collector.module, sub_name, sub)
            classes.append(pytest.Class.from_parent(collector, name=sub_name))
        return classes
    return None
