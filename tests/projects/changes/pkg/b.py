from pkg.a import VALUE


def get():
    return VALUE
