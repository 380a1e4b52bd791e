import pytest

from demo.registry import REGISTRY


@pytest.fixture
def order():
    return {"TEA-0001": 2, "CUP-0100": 1}


@pytest.fixture
def registry_size():
    return len(REGISTRY)
