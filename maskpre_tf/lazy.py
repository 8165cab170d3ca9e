"""Package attributes imported on first use (PEP 562), for packages that are also programs.

``python -m maskpre_tf.search`` imports ``maskpre_tf/search/__init__.py`` before its
``__main__.py`` runs. If ``__init__`` imported the libraries it re-exports, TensorFlow would load
before the program could silence its start-up lines
(:func:`maskpre_tf.console.quiet_tensorflow_startup`). With :func:`lazy_attributes` the
re-exported names stay importable from the package (``from maskpre_tf.search import
run_search``) but each module loads only when one of its names is first used.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping


def lazy_attributes(
    package: str, module_of: Mapping[str, str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of a package with lazily imported names.

    Use in the package's ``__init__.py``:
    ``__getattr__, __dir__ = lazy_attributes(__name__, {"run_search": "run", ...})``.

    Args:
      package: the package's ``__name__``.
      module_of: public name → the submodule (relative to ``package``) that defines it.
    """

    def __getattr__(name: str) -> object:
        """Import ``name`` from its submodule and keep it as a package attribute."""
        if name not in module_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module_of[name]}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        """The package's attributes, the names not yet imported included."""
        return sorted(set(vars(sys.modules[package])) | set(module_of))

    return __getattr__, __dir__
