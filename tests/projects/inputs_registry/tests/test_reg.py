import pkg.plugins
from pkg.registry import REG


def test_value():
    assert REG["Foo"].value == 1


def test_registered_class_is_the_module_s():
    assert REG["Foo"] is pkg.plugins.Foo
