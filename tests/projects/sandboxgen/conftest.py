import gate  # noqa: F401 (holds a warm-up while the test wants it held)
