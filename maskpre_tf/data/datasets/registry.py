"""The dataset registry: reader name -> reader function.

Each reader module registers its reader with :func:`register`, so adding a layout is one new
module (imported by the package) with one decorated function::

    @register("market1501")
    def read_market1501(root: str, verbose: bool = True) -> ReidDataset: ...
"""

from __future__ import annotations

from collections.abc import Callable

from maskpre_tf.data.datasets.records import ReidDataset

#: A reader: ``reader(root, **options) -> ReidDataset``.
Reader = Callable[..., ReidDataset]

#: Every registered reader by name.
READERS: dict[str, Reader] = {}


def register(name: str) -> Callable[[Reader], Reader]:
    """Decorator that registers the decorated reader under ``name`` and returns it unchanged."""

    def add(reader: Reader) -> Reader:
        READERS[name] = reader
        return reader

    return add
