"""Like fakelib, with the module name pytest-hot-reloading used."""
