"""absl flags of the training configuration: one flag per field of :mod:`maskpre_tf.config`.

Only entry points call :func:`define_flags` (nothing registers flags on import); they turn the
parsed values into a validated :class:`~maskpre_tf.config.TrainConfig` once, with
:func:`config_from_flags`, and hand each part its section.
"""

from __future__ import annotations

import dataclasses

from absl import flags

from maskpre_tf.config import SECTIONS, TrainConfig


def flag_fields() -> list[tuple[str, dataclasses.Field]]:
    """(section, field) of every setting that is a flag, in declaration order."""
    return [
        (name, f)
        for name, cls in SECTIONS.items()
        for f in dataclasses.fields(cls)
        if f.metadata["flag"]
    ]


def flag_help(f: dataclasses.Field) -> str:
    """A field's help text with its choices, as ``--help`` shows it."""
    choices = [c or "''" for c in f.metadata["choices"]]
    return f"{f.metadata['help']} (one of: {', '.join(choices)})" if choices else f.metadata["help"]


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Define one absl flag per flag field of every section, with its default and help."""
    for _, f in flag_fields():
        args = (f.name, f.default, flag_help(f))
        if f.metadata["parse"] is not None:  # text parsed by the field itself (e.g. --eps)
            flags.DEFINE_string(f.name, str(f.default), flag_help(f), flag_values=flag_values)
        elif isinstance(f.default, bool):
            flags.DEFINE_bool(*args, flag_values=flag_values)
        elif isinstance(f.default, int):
            flags.DEFINE_integer(*args, flag_values=flag_values)
        elif isinstance(f.default, float):
            flags.DEFINE_float(*args, flag_values=flag_values)
        else:
            flags.DEFINE_string(*args, flag_values=flag_values)
        for alias in f.metadata["aliases"]:  # an earlier name, for older flagfiles
            flags.DEFINE_alias(alias, f.name, flag_values=flag_values)


def config_from_flags(flag_values: flags.FlagValues, resolve_weights: bool = True) -> TrainConfig:
    """Build and validate a :class:`TrainConfig` from parsed flags.

    The weights' origin is resolved here too (input normalisation and layout, see
    :func:`maskpre_tf.weights.resolve_origin`), so a bad weights file fails at start-up;
    ``resolve_weights=False`` skips that (reading a flagfile on a machine without the weights).
    """
    from maskpre_tf.weights.origin import resolve_origin

    values = {}
    for _, f in flag_fields():
        value = flag_values[f.name].value
        values[f.name] = f.metadata["parse"](value) if f.metadata["parse"] else value
    config = TrainConfig().replace(**values)
    config.validate()
    if not resolve_weights:
        return config
    origin = resolve_origin(
        config.model.backbone, config.model.backbone_weights, config.model.input_norm
    )
    return config.replace(input_norm=origin.input_norm, layout=origin.layout)


def config_from_argv(argv: list[str], resolve_weights: bool = True) -> TrainConfig:
    """The :class:`TrainConfig` of flag strings, e.g. ``["--flagfile=configs/market_cpu.flags"]``.

    Parsed on a private ``FlagValues`` (the global flags are untouched), as
    :func:`config_from_flags` would for the same command line.
    """
    values = flags.FlagValues()
    define_flags(values)
    values(["maskpre_tf", *argv])
    return config_from_flags(values, resolve_weights=resolve_weights)
