BASE = [1, 2, 3]
EXTRA = [10, 20, 30]
