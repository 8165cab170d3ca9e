"""Updating state that every replica holds a copy of, on each copy, from identical inputs.

After each step the memories and the EMA teacher change in cross-replica context. Assigning a
new value to a mirrored variable there would compute it once and copy it to every device; here
each device's copy applies ``fn`` to its own operands instead (mirrored operands are read from
the same device), so no state is broadcast and the copies stay identical because their inputs
are. On one device (or with no strategy) ``fn`` simply runs.
"""

from __future__ import annotations

from collections.abc import Callable

import keras


def _tf_variable(value):
    """The tf.Variable inside a Keras variable; anything else unchanged."""
    return value.value if isinstance(value, keras.Variable) else value


def update_each_copy(variable, fn: Callable, *args) -> None:
    """``fn(copy, *args)`` on every replica's copy of ``variable`` (a tf or Keras variable).

    Mirrored variables among ``args`` are passed as the same device's copy.
    """
    variable = _tf_variable(variable)
    args = tuple(_tf_variable(a) for a in args)
    strategy = getattr(variable, "distribute_strategy", None)
    if strategy is None:
        fn(variable, *args)
    else:
        strategy.extended.update(variable, fn, args=args)
