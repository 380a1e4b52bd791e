BACKENDS = ["sqlite", "memory"]


def connect(name):
    return {"backend": name, "rows": []}
