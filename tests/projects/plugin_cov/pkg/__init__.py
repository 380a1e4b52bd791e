"""A package whose module-level statements count for coverage."""
from .shapes import area, perimeter

__all__ = ["area", "perimeter"]
