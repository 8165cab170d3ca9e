"""How a setting is declared: its help text, its choices or valid range, how its flag parses.

:mod:`maskpre_tf.config` declares every setting with :func:`setting`; the flags
(:mod:`maskpre_tf.config_flags`) and :meth:`~maskpre_tf.config.TrainConfig.validate` read
the metadata, so each choice and each range is written once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from maskpre_tf.errors import UserError

# Each choice of a setting, defined once (the flags' help and validation read them from here).
NETWORKS = ("teacher", "student")  # the EMA teacher and the online (trained) student
AUTO_EPS = ("auto", "auto_linked")  # --eps rules (maskpre_tf.clustering.auto_eps)
BACKBONES = ("resnet50", "mobilenet_v2", "resnet_small")
INPUT_NORMS = ("caffe", "tf", "torch")  # maskpre_tf.models.normalization
MASK_STAGES = ("last", "inner")
MEMORY_UPDATES = ("mean", "instance", "hard")
OUTLIER_MODES = ("drop", "instances")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
STRATEGIES = ("mirrored", "multi_worker", "default")

Check = tuple[Callable[[Any], bool], str]  # (is the value valid?, what is expected)


def setting(
    default: Any,
    help: str,
    flag: bool = True,
    choices: tuple[str, ...] = (),
    check: Check | None = None,
    parse: Callable[[str], Any] | None = None,
    aliases: tuple[str, ...] = (),
    resume: bool = True,
) -> Any:
    """A dataclass field with its help text and, optionally, its choices, a range check, or a
    parser of its flag's text.

    ``flag=False`` fields are resolved at start-up, not set; ``check`` is (predicate, the
    expectation named in the error, e.g. "a fraction in [0, 1)"); ``parse`` turns the flag's
    string into the value (and raises :class:`UserError` for a bad one); ``aliases`` are earlier
    names of the setting, still accepted as flags and in recorded configurations;
    ``resume=False`` marks a setting that defines the model, its checkpoint or its data (a run
    resumed with another value is refused), not only the schedule or the method's weights.
    """
    metadata = {
        "help": help,
        "flag": flag,
        "choices": choices,
        "check": check,
        "parse": parse,
        "aliases": aliases,
        "resume": resume,
    }
    return dataclasses.field(default=default, metadata=metadata)


def at_least(low: float) -> Check:
    """The check of a number >= ``low``."""
    return (lambda v: v >= low, f">= {low}")


RATE: Check = (lambda v: 0.0 <= v < 1.0, "a fraction in [0, 1)")
POSITIVE: Check = (lambda v: v > 0, "a positive number")
MULTIPLE_OF_8: Check = (lambda v: v > 0 and v % 8 == 0, "a positive multiple of 8")


def parse_eps(value: float | str) -> float | str:
    """--eps as a number in (0, 1) or one of :data:`AUTO_EPS`.

    Raises:
      UserError: neither.
    """
    if value in AUTO_EPS:
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not 0.0 < number < 1.0:
        raise UserError(
            f"--eps={value}: expected auto, auto_linked or a Jaccard distance in (0, 1); "
            "typical values are 0.4-0.7 (pairs with no k-reciprocal overlap are at 1)"
        )
    return number


def check_value(f: dataclasses.Field, value: Any) -> None:
    """Raise :class:`UserError` when ``value`` is not among the field's choices or range."""
    choices, check, parse = (f.metadata[k] for k in ("choices", "check", "parse"))
    if parse is not None:
        parse(value)
    elif choices and value not in choices:
        names = [c or "''" for c in choices]
        raise UserError(f"--{f.name}={value}: expected {', '.join(names[:-1])} or {names[-1]}")
    elif check is not None and not check[0](value):
        raise UserError(f"--{f.name}={value}: expected {check[1]}")
