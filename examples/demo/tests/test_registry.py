import dataclasses

import pytest

from demo.registry import REGISTRY, register


def test_builtin_kinds():
    assert REGISTRY.kinds() == ["money", "product", "response"]


def test_register_adds_a_kind(registry_size):
    # Mutates module state on purpose: every run must start from the
    # registry as imported, not as a previous run left it.
    @register("coupon")
    @dataclasses.dataclass
    class Coupon:
        code: str

    assert len(REGISTRY) == registry_size + 1
    assert REGISTRY.build("coupon", code="X").code == "X"


def test_rejects_non_dataclass():
    with pytest.raises(TypeError):
        REGISTRY.add("plain", object)
