"""A registry of dataclasses keyed by kind, filled by decorators at import time."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, TypeVar

T = TypeVar("T")


class Registry:
    def __init__(self) -> None:
        self._kinds: dict[str, type] = {}

    def add(self, kind: str, cls: type) -> None:
        if kind in self._kinds:
            raise KeyError(f"kind {kind!r} already registered")
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__name__} is not a dataclass")
        self._kinds[kind] = cls

    def get(self, kind: str) -> type:
        return self._kinds[kind]

    def kinds(self) -> list[str]:
        return sorted(self._kinds)

    def build(self, kind: str, **fields: Any) -> Any:
        return self._kinds[kind](**fields)

    def __len__(self) -> int:
        return len(self._kinds)


# The process-wide registry: module state that a test run may mutate.
REGISTRY = Registry()


def register(kind: str) -> Callable[[type[T]], type[T]]:
    def deco(cls: type[T]) -> type[T]:
        REGISTRY.add(kind, cls)
        return cls

    return deco
