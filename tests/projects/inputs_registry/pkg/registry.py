REG = {}


def register(cls):
    REG.setdefault(cls.__name__, cls)  # the first registration wins
    return cls
