"""``repscope COMMAND [OPTION ...]`` (or ``python -m repscope``): the command lines under one name.

``repscope maml --preset quick --out runs/quick`` is
``python -m repscope.training.maml --preset quick --out runs/quick``; ``repscope --help``
lists the commands (:data:`repscope.COMMANDS`) and each has ``--help``;
``repscope --version`` prints the installed version.
"""
from __future__ import annotations

import importlib
import sys
from importlib.metadata import PackageNotFoundError, version

from . import COMMANDS

USAGE = "usage: repscope [-h] [--version] COMMAND [OPTION ...]"


def _version() -> str:
    try:
        return version("repscope")
    except PackageNotFoundError:
        return "(not installed: no package metadata)"


def _help() -> str:
    width = max(map(len, COMMANDS)) + 2
    lines = [USAGE, "", "Probes, RSA and CKA for MAML: what do a network's layers represent, "
             "and how", "does that change during meta-learning?", "", "commands:"]
    lines += [f"  {name:<{width}}{command.summary}" for name, command in COMMANDS.items()]
    lines += ["", "options:", f"  {'-h, --help':<{width}}show this help message and exit",
              f"  {'--version':<{width}}show the version and exit", "",
              "Run 'repscope COMMAND --help' for the options of a command."]
    return "\n".join(lines)


def main(argv=None) -> int:
    """Run ``COMMAND``'s ``main`` with the remaining arguments.

    Parameters
    ----------
    argv : list of str, optional
        ``[COMMAND, *options]``; ``sys.argv[1:]`` when omitted.

    Returns
    -------
    int
        The command's exit status (2 for an unknown or missing command).

    Examples
    --------
    >>> main(["nosuch"])
    2
    >>> main(["--version"])  # doctest: +ELLIPSIS
    repscope ...
    0
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        module = importlib.import_module(COMMANDS[argv[0]].module)
        return module.main(argv[1:])
    if argv[:1] == ["--version"]:
        print(f"repscope {_version()}")
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        print(_help())
        return 0 if argv else 2
    print(f"{USAGE}\nrepscope: unknown command {argv[0]!r}; expected one of "
          f"{sorted(COMMANDS)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
