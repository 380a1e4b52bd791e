import mylib


@mylib.register
class Model:
    VALUE = 1
