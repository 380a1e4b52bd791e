import mods.m4

UP = mods.m4.VALUE
VALUE = 1005
