"""``python -m maskpre_tf.weights import|show``: import PyTorch weights, show a file's metadata.

    python -m maskpre_tf.weights import --arch=resnet50 --src=resnet50-0676ba61.pth \\
        --out=weights/resnet50_torchvision.weights.h5
    python -m maskpre_tf.weights show weights/resnet50_torchvision.weights.h5
"""

from __future__ import annotations

import json

from absl import flags

from maskpre_tf.cli_help import ProgramHelp
from maskpre_tf.errors import UserError, run_app

USAGE = (
    "usage: python -m maskpre_tf.weights import --arch=resnet50|mobilenet_v2 --src=FILE "
    "--out=FILE.weights.h5  |  python -m maskpre_tf.weights show FILE.weights.h5"
)


HELP = ProgramHelp(
    "Import a PyTorch state dict as a Keras weights file (for the train program's "
    "--backbone_weights), or show the import record of such a file.",
    (
        "python -m maskpre_tf.weights import --arch=resnet50 --src=resnet50-0676ba61.pth "
        "--out=weights/resnet50.weights.h5",
        "python -m maskpre_tf.weights show weights/resnet50.weights.h5",
    ),
    (("import (show takes only the file):", ("arch", "src", "out")),),
)


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """This program's flags (defined only when it runs)."""
    on = {"flag_values": flag_values}
    flags.DEFINE_enum("arch", None, ["resnet50", "mobilenet_v2"], "architecture of --src", **on)
    flags.DEFINE_string("src", None, "PyTorch state dict: .pth, .pt, .bin or .safetensors", **on)
    flags.DEFINE_string("out", None, "Keras weights file to write (name ends in .weights.h5)", **on)
    flags.DEFINE_bool("debug", False, "show the traceback of user errors", **on)


def main(argv: list[str]) -> None:
    """Dispatch the ``import`` and ``show`` commands."""
    from maskpre_tf.weights.origin import read_metadata

    command = argv[1:]
    values = flags.FLAGS
    if command == ["import"]:
        from maskpre_tf.weights.convert import import_weights

        missing = [f"--{n}" for n in ("arch", "src", "out") if not values[n].value]
        if missing:
            raise UserError(f"import needs {', '.join(missing)}; {USAGE}")
        meta = import_weights(values.arch, values.src, values.out)
        print(
            f"wrote {values.out}: {meta['arch']} from {meta['source_layout']} layout, "
            f"input_norm={meta['input_norm']}, layout={meta['layout']}, "
            f"source sha256 {meta['source_sha256'][:16]}..."
        )
    elif len(command) == 2 and command[0] == "show":
        meta = read_metadata(command[1])
        print(
            json.dumps(meta, indent=1)
            if meta
            else f"{command[1]}: a plain Keras weights file (no import metadata)"
        )
    else:
        raise UserError(USAGE)


if __name__ == "__main__":
    from maskpre_tf.console import prepare_process

    prepare_process()
    define_flags()
    run_app(main, HELP)
