from app.value import VALUE


def get():
    return VALUE
