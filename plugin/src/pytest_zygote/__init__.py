"""pytest-zygote: a fork server for pytest.

The C binary ``pytest-zygote`` keeps a warm interpreter with pytest, its
plugins and the project imported, and forks one child per run. This package
holds the Python code that runs inside that interpreter (``_zygote``).
"""

__version__ = "0.1.0"
