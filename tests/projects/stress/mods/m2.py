from mods.m1 import UP

VALUE = 1002
