"""``-p pytest_hot_reloading.plugin``: loads pytest-zygote's plugin.

The hooks are not copied here: pytest registers ``pytest_zygote.plugin``
through ``pytest_plugins`` under its own name, exactly once, whether it is
also named with ``-p`` or loaded from its ``pytest11`` entry point.
"""

pytest_plugins = ["pytest_zygote.plugin"]
