"""``from pytest_hot_reloading.workaround import register_workaround``.

The same function as ``pytest_zygote.workaround.register_workaround``: a
workaround registered here runs in a test child that re-imports modules.
"""

from pytest_zygote.workaround import register_workaround

__all__ = ["register_workaround"]
