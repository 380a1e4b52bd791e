"""pytest_hot_reloading, as provided by pytest-zygote.

A compatibility package for projects that used pytest-hot-reloading: their
``-p pytest_hot_reloading.plugin`` (in addopts or an IDE run profile) loads
pytest-zygote's plugin, and ``register_workaround`` imported from
``pytest_hot_reloading.workaround`` or ``pytest_hot_reloading.workarounds``
registers pytest-zygote workarounds. It is installed only where the original
package is absent (meson option ``hot_reloading_compat``).

PYTEST_DONT_REWRITE: pytest marks an installed plugin distribution's packages
for assertion rewriting; the zygote imported this one before pytest could.
"""

PROVIDED_BY = "pytest-zygote"
