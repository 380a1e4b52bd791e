"""Small statistics helpers on top of pandas and scipy (the point is the import weight)."""
