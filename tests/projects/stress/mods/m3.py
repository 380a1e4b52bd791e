from . import m2 as _m2

UP = _m2.UP
VALUE = 1003
