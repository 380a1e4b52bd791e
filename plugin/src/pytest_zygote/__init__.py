"""pytest-zygote: a fork server for pytest.

The C binary ``pytest-zygote`` keeps a warm interpreter with pytest, its
plugins and the project imported, and forks one child per run. This package
holds the Python code that runs inside that interpreter (``_zygote``, with
its modules in ``_zy``).

PYTEST_DONT_REWRITE: pytest marks an installed plugin distribution's packages
for assertion rewriting; the zygote imported this one before pytest could.
"""

__version__ = "0.1.0"
