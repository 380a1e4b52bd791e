"""A library that keeps a registry of project classes (as ORMs do)."""

registry = {}


def register(cls):
    if cls.__name__ in registry:
        raise RuntimeError("%s registered twice" % cls.__name__)
    registry[cls.__name__] = cls
    return cls
