"""Name -> class tables for the extension points that are classes (temporal modules, pointers).

    POINTERS = ClassRegistry("pointer", Pointer)
    register_pointer = POINTERS.register          # @register_pointer("model") on a class

A `ClassRegistry` is a plain dict (tests swap entries with `monkeypatch.setitem`) that also checks
what is registered and refuses an unknown name in one line that lists the known ones.
"""

from __future__ import annotations

from typing import Callable, TypeVar

from videomolmo.errors import ConfigError

T = TypeVar("T", bound=type)


class ClassRegistry(dict):
    def __init__(self, what: str, base: type):
        super().__init__()
        self.what = what
        self.base = base

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator: make a subclass of `base` selectable by `name` (also set as `cls.name`)."""

        def deco(cls: T) -> T:
            if not (isinstance(cls, type) and issubclass(cls, self.base)):
                raise TypeError(f"{self.what} {name!r} must subclass {self.base.__name__}")
            cls.name = name
            self[name] = cls
            return cls

        return deco

    def names(self) -> list[str]:
        return sorted(self)

    def lookup(self, name: str) -> type:
        try:
            return self[name]
        except KeyError:
            raise ConfigError(f"unknown {self.what} {name!r}; registered: {', '.join(self.names())}") from None
