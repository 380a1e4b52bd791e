from marshmallow import class_registry

from pkg import schemas


def test_registered_class_is_the_module_s():
    assert class_registry.get_class("UserSchema") is schemas.UserSchema


def test_declared_fields():
    assert sorted(class_registry.get_class("UserSchema")._declared_fields) == ["name"]
