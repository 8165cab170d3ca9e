"""``python -m maskpre_tf.data.synth``: see :mod:`maskpre_tf.data.synth.cli`."""

import sys

from maskpre_tf.data.synth.cli import main
from maskpre_tf.errors import run_main

run_main(main, sys.argv, debug=False)
