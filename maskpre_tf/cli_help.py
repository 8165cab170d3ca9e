"""What ``--help`` prints: what the program does, an example, then its own flags by group.

absl's ``--help`` lists only the flags the main module defined and starts with the module's
docstring (API documentation, with cross-reference markup). Every program instead describes
itself once as a :class:`ProgramHelp`: a plain-text summary, example commands and its flags in
named groups. :func:`install` (called by :func:`maskpre_tf.errors.run_app` before absl parses
the command line) puts flags printing that text in place of absl's ``--help``/``-?`` and
``--helpshort``, adds ``-h``, and makes the summary the header of ``--helpfull``, which still
lists every flag (absl's own too). ``--help`` exits with status 0.

:func:`render` reads each flag's help, default and choices from absl; a program can supply its
own texts and choices (training: from its settings' metadata). :func:`render_argparse` does the
same for a program whose command line is an ``argparse`` parser.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from absl import flags

# The command-line words that ask for a program's own help (absl's -? and --helpshort too).
HELP_ARGS = frozenset({"-h", "--help", "-?", "--helpshort"})
WIDTH = 100
_ALIAS = re.compile(r"^Alias for --(\w+)\.$")  # the help absl gives a flags.DEFINE_alias
COMMON_GROUP = "common:"


@dataclass(frozen=True)
class FlagDoc:
    """One flag as the help shows it."""

    name: str
    help: str
    default: Any = None  # None: no default (the flag is required or optional)
    choices: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()  # earlier names, still accepted
    boolean: bool = False


@dataclass(frozen=True)
class ProgramHelp:
    """A program's help: what it does, how it is run, its flags in groups.

    Attributes:
      summary: one or two short plain-text lines of what the program does.
      examples: example command lines.
      groups: (heading line, flag names) in the order shown; ``debug`` is added to a last group.
      texts: help texts that replace the flags' own (e.g. without their appended choices).
      choices: the choices of flags that absl does not know as enums.
    """

    summary: str
    examples: tuple[str, ...]
    groups: tuple[tuple[str, tuple[str, ...]], ...]
    texts: Mapping[str, str] = field(default_factory=dict)
    choices: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def header(self) -> str:
        """The summary and the examples, as the first lines of the help."""
        lines = [*textwrap.wrap(self.summary, WIDTH), ""]
        lines += ["example:" if len(self.examples) == 1 else "examples:"]
        lines += [f"  {command}" for command in self.examples]
        return "\n".join(lines) + "\n"

    def flag_names(self) -> list[str]:
        """Every flag named by a group, in order."""
        return [name for _, names in self.groups for name in names]


def asks_for_help(argv: Iterable[str]) -> bool:
    """True when the command line (without the program name) asks for the program's help."""
    return any(arg in HELP_ARGS for arg in argv)


def shown_value(value: Any) -> str:
    """A default or a choice as typed on the command line ('' for an empty text)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "''"
    return str(value) if value != "" else "''"


def format_flag(doc: FlagDoc) -> list[str]:
    """The lines of one flag: its name with default, choices and earlier names, then its help."""
    facts = [] if doc.default is None else [f"default: {shown_value(doc.default)}"]
    if doc.choices:
        facts.append("one of: " + ", ".join(shown_value(c) for c in doc.choices))
    facts += [f"old name: --{alias}" for alias in doc.aliases]
    name = f"--[no]{doc.name}" if doc.boolean else f"--{doc.name}"
    first = f"  {name} ({'; '.join(facts)})" if facts else f"  {name}"
    indent = " " * 6
    wrapped = textwrap.wrap(
        doc.help, WIDTH, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False
    )
    return [first, *wrapped]


def render_docs(program: ProgramHelp, docs: Mapping[str, FlagDoc], notes: str = "") -> str:
    """The whole help text: header, then each group's flags (``docs``: every named flag)."""
    lines = [program.header()]
    for heading, names in program.groups:
        lines.append(heading)
        for name in names:
            lines += format_flag(docs[name])
        lines.append("")
    if notes:
        lines += textwrap.wrap(notes, WIDTH)
    return "\n".join(lines).rstrip() + "\n"


def aliases_of(flag_values: flags.FlagValues) -> dict[str, tuple[str, ...]]:
    """{flag name: the names of its absl aliases (flags.DEFINE_alias)}."""
    found: dict[str, list[str]] = {}
    for key in flag_values:
        flag = flag_values[key]
        match = _ALIAS.match(flag.help or "")
        if flag.name == key and match:
            found.setdefault(match.group(1), []).append(key)
    return {name: tuple(names) for name, names in found.items()}


def absl_docs(program: ProgramHelp, flag_values: flags.FlagValues) -> dict[str, FlagDoc]:
    """A :class:`FlagDoc` of every flag the program's groups name, from its absl flag."""
    aliases = aliases_of(flag_values)
    docs = {}
    for name in program.flag_names():
        flag = flag_values[name]
        enum = getattr(flag.parser, "enum_values", None) or ()
        text = flag.help.removeprefix(f"<{'|'.join(enum)}>: ") if enum else flag.help
        docs[name] = FlagDoc(
            name,
            program.texts.get(name, text),
            flag.default,
            tuple(program.choices.get(name, enum)),
            aliases.get(name, ()),
            flag.boolean,
        )
    return docs


def with_common_flags(program: ProgramHelp, flag_values: flags.FlagValues) -> ProgramHelp:
    """``program`` with a last group holding --debug when the program defines it."""
    if "debug" not in flag_values or "debug" in program.flag_names():
        return program
    groups = (*program.groups, (COMMON_GROUP, ("debug",)))
    return ProgramHelp(program.summary, program.examples, groups, program.texts, program.choices)


ABSL_NOTES = (
    "--flagfile=FILE reads flags from a file (one per line); --helpfull lists every flag, "
    "absl's own included."
)


def render(program: ProgramHelp, flag_values: flags.FlagValues) -> str:
    """The ``--help`` text of an absl program."""
    program = with_common_flags(program, flag_values)
    return render_docs(program, absl_docs(program, flag_values), ABSL_NOTES)


def print_and_exit(text: str) -> None:
    """Write the help to standard output and exit 0 (quietly when the reader has gone)."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. `--help | head`: nothing more to write at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(0)


class ProgramHelpFlag(flags.BooleanFlag):
    """A --help flag that prints the program's own help (``text()``) and exits 0."""

    def __init__(self, name: str, short_name: str | None, text: Callable[[], str]) -> None:
        super().__init__(name, False, "show this program's flags", short_name=short_name)
        self._text = text

    def parse(self, argument: Any) -> None:
        if self._parse(argument):
            print_and_exit(self._text())


def install(program: ProgramHelp, flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Make --help, -h, -? and --helpshort print :func:`render` and --helpfull start with the
    program's summary. Call after every flag is defined, before the command line is parsed."""
    for name in ("help", "?", "helpshort"):  # absl's (the '?' short name included)
        if name in flag_values:
            delattr(flag_values, name)

    def text() -> str:  # rendered when asked for, with every flag defined
        return render(program, flag_values)

    for name, short in (("help", "h"), ("helpshort", "?")):
        flags.DEFINE_flag(ProgramHelpFlag(name, short, text), flag_values)
    main = sys.modules.get("__main__")
    if main is not None:  # absl's --helpfull starts with the main module's docstring
        main.__doc__ = program.header()


def render_argparse(program: ProgramHelp, parser: argparse.ArgumentParser) -> str:
    """The ``--help`` text of a program whose command line is an ``argparse`` parser (made with
    ``add_help=False``: this text replaces argparse's own)."""
    docs = {}
    for action in parser._actions:  # argparse has no public list of its options
        long = [o for o in action.option_strings if o.startswith("--")]
        if long:
            name = long[0][2:]
            default = None if action.required else action.default
            docs[name] = FlagDoc(name, action.help or "", default, tuple(action.choices or ()))
    return render_docs(program, docs)
