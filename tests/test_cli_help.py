"""Every program's ``--help``: what it does, an example, its own flags by group, plain text.

The programs print their help without loading TensorFlow, so each subprocess takes well under a
second; ``--helpfull`` (absl's full listing, after the usual TensorFlow start) is the slow test.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from absl import app, flags

from maskpre_tf import cli_help

ROOT = Path(__file__).resolve().parents[1]

# program (python -m ...) -> the module holding its define_flags and HELP (None: argparse).
PROGRAMS = {
    "maskpre_tf.train": "maskpre_tf.train",
    "maskpre_tf.evaluate": "maskpre_tf.evaluate",
    "maskpre_tf.export": "maskpre_tf.export.__main__",
    "maskpre_tf.search": "maskpre_tf.search.__main__",
    "maskpre_tf.clustering.probe": "maskpre_tf.clustering.probe",
    "maskpre_tf.weights": "maskpre_tf.weights.__main__",
    "maskpre_tf.data.synth": None,
}
if (ROOT / "maskpre_tf" / "embed.py").exists():
    PROGRAMS["maskpre_tf.embed"] = "maskpre_tf.embed"
# Programs that read a training run, all through --run_dir.
READS_A_RUN = {
    "maskpre_tf.evaluate",
    "maskpre_tf.export",
    "maskpre_tf.search",
    "maskpre_tf.clustering.probe",
    "maskpre_tf.embed",
}
# Earlier flag names, still accepted: program -> {old name: (new name, value given)}.
OLD_NAMES = {
    "maskpre_tf.train": {"output_dir": ("run_dir", "runs/x")},
    "maskpre_tf.evaluate": {"checkpoint": ("run_dir", "runs/x")},
    "maskpre_tf.export": {"checkpoint": ("run_dir", "runs/x")},
    "maskpre_tf.search": {"model": ("run_dir", "runs/x"), "output_dir": ("results_dir", "out")},
    "maskpre_tf.clustering.probe": {"run": ("run_dir", "runs/x")},
}
MARKUP = re.compile(r":(class|func|mod|meth|data|attr|obj):|`")


def help_text(program: str, *args: str) -> str:
    """The standard output of ``python -m program --help`` (or ``args``), which must exit 0."""
    proc = subprocess.run(
        [sys.executable, "-m", program, *(args or ("--help",))],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def program_help(program: str) -> cli_help.ProgramHelp:
    """The program's :class:`ProgramHelp`, as its ``__main__`` block passes it."""
    if PROGRAMS[program] is None:
        from maskpre_tf.data.synth import cli

        return cli.HELP
    module = importlib.import_module(PROGRAMS[program])
    return module.program_help() if hasattr(module, "program_help") else module.HELP


def defined_flags(program: str) -> flags.FlagValues:
    """A fresh FlagValues holding the program's flags (the global flags are untouched)."""
    values = flags.FlagValues()
    importlib.import_module(PROGRAMS[program]).define_flags(values)
    return values


def listed_flags(text: str) -> list[str]:
    """The flag names the help lists, in order."""
    return re.findall(r"^  --(?:\[no\])?(\w+)", text, flags=re.MULTILINE)


@pytest.mark.parametrize("program", PROGRAMS)
def test_help_is_plain_and_lists_the_programs_own_flags(program):
    text = help_text(program)
    lines = text.splitlines()
    assert lines[0] and not lines[0].startswith("-")  # what the program does, first
    assert 1 <= lines.index("") <= 2  # in one or two lines
    assert f"python -m {program}" in text  # an example command
    assert not MARKUP.search(text), MARKUP.search(text)
    listed = listed_flags(text)
    assert listed and sorted(set(listed)) == sorted(listed)  # each flag once
    assert set(program_help(program).flag_names()) <= set(listed)
    for other in ("verbosity", "logtostderr", "test_tmpdir", "helpfull", "only_check_args"):
        assert other not in listed  # absl's flags only under --helpfull
    if program in READS_A_RUN:
        assert "run_dir" in listed


def test_train_help_groups_its_settings_by_section():
    from maskpre_tf.config import SECTIONS

    text = help_text("maskpre_tf.train")
    assert len(listed_flags(text)) >= 40
    headings = re.findall(r"^(\w+): ", text, flags=re.MULTILINE)
    assert headings[: len(SECTIONS)] == list(SECTIONS)  # data, source, ..., run in order
    precision = text.split("--precision ")[1].splitlines()[0]
    assert "default: float32" in precision and "mixed_bfloat16, mixed_float16" in precision
    assert "--run_dir (default: runs/market; old name: --output_dir)" in text
    assert "(one of: " not in text.split("--backbone ")[1].splitlines()[1]  # choices once


def test_helpshort_and_h_print_the_same_help():
    text = help_text("maskpre_tf.evaluate")
    assert help_text("maskpre_tf.evaluate", "-h") == text
    assert help_text("maskpre_tf.evaluate", "--helpshort") == text


@pytest.mark.parametrize("program", [p for p, module in PROGRAMS.items() if module])
def test_the_help_groups_every_flag_the_program_defines(program):
    values = defined_flags(program)
    aliases = {a for names in cli_help.aliases_of(values).values() for a in names}
    own = {name for name in values if len(name) > 1 and name not in aliases} - {"debug"}
    assert sorted(program_help(program).flag_names()) == sorted(own)


@pytest.mark.parametrize("program", OLD_NAMES)
def test_every_old_flag_name_still_parses(program):
    for old, (new, value) in OLD_NAMES[program].items():
        values = defined_flags(program)
        values(["prog", f"--{old}={value}"])
        assert values[new].value == value, (program, old)
        values = defined_flags(program)
        values(["prog", f"--{old}", value])  # the spaced form too
        assert values[new].value == value, (program, old)


def test_install_replaces_abseils_help_flags(capsys, monkeypatch):
    monkeypatch.setattr(sys.modules["__main__"], "__doc__", None)
    values = defined_flags("maskpre_tf.evaluate")
    flags.DEFINE_flag(app.HelpFlag(), values)
    flags.DEFINE_flag(app.HelpshortFlag(), values)
    from maskpre_tf.evaluate import HELP

    cli_help.install(HELP, values)
    for argv in (["--help"], ["-?"], ["-h"], ["--data_dir=x", "--helpshort"]):
        with pytest.raises(SystemExit) as done:
            values(["prog", *argv])
        assert done.value.code == 0
        assert capsys.readouterr().out.startswith(HELP.header())
    assert sys.modules["__main__"].__doc__ == HELP.header()  # --helpfull's first lines


def test_flag_docs_show_defaults_choices_and_old_names():
    doc = cli_help.FlagDoc("input_norm", "normalisation", "", ("", "caffe"), ("norm",))
    assert cli_help.format_flag(doc)[0] == (
        "  --input_norm (default: ''; one of: '', caffe; old name: --norm)"
    )
    assert cli_help.format_flag(cli_help.FlagDoc("x", "h", None))[0] == "  --x"
    flag = cli_help.format_flag(cli_help.FlagDoc("flip", "h", False, boolean=True))
    assert flag[0] == "  --[no]flip (default: false)"
    assert cli_help.shown_value(["1", "8"]) == "1,8"
    assert cli_help.asks_for_help(["--x=1", "-h"]) and not cli_help.asks_for_help(["--helpfull"])


@pytest.mark.slow
def test_helpfull_keeps_abseils_full_listing_under_a_plain_header():
    proc = subprocess.run(
        [sys.executable, "-m", "maskpre_tf.evaluate", "--helpfull"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    from maskpre_tf.evaluate import HELP

    assert proc.stdout.startswith(HELP.header())
    assert "--run_dir" in proc.stdout and "--verbosity" in proc.stdout
    assert not MARKUP.search(proc.stdout.split("absl.app:")[0])
