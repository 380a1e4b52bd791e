from mods.m0 import VALUE as UP

VALUE = 1001
