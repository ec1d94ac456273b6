"""`@frozen`: ccm's immutable values — dataclasses that mypy (`--strict`, in `make test`) holds to be frozen, built
without the frozen dataclass's guard at run time.

    @frozen                    a value with slots: equal and hashed by its fields, as `dataclass(frozen=True)`
    @frozen(eq=False)          compared and hashed by identity
    @frozen(slots=False)       with a `__dict__`, as the few frozen dataclasses that had no slots

A frozen dataclass sets each field in `__init__` through `object.__setattr__`: ~1,250 instructions a field against
~40 for a plain slot (callgrind, CPython 3.11). A request's record (26 fields) cost 52,000 instructions to build where
a plain one costs 19,000, and each request builds a dozen such values (its attempts, usage, usage row…): a tenth of
what a tiny request cost ccm. Assigning to a field of a `@frozen` class is an error mypy reports (`Property "x" …
is read-only`); at run time nothing stops it, and nothing in ccm does it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, dataclass_transform, overload

T = TypeVar("T")


@overload
def frozen(cls: type[T], /) -> type[T]: ...


@overload
def frozen(*, slots: bool = True, eq: bool = True) -> Callable[[type[T]], type[T]]: ...


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def frozen(cls: type[T] | None = None, /, *, slots: bool = True, eq: bool = True) -> Any:
    def make(value_class: type[T]) -> type[T]:
        # hashed by its fields like a frozen dataclass (a plain one with `eq` has no hash at all)
        return dataclass(slots=slots, eq=eq, unsafe_hash=eq)(value_class)

    return make if cls is None else make(cls)
