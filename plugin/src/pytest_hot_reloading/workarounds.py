"""``from pytest_hot_reloading.workarounds import register_workaround``
(pytest-hot-reloading's own module name): see ``pytest_hot_reloading.workaround``."""

from pytest_zygote.workaround import register_workaround

__all__ = ["register_workaround"]
