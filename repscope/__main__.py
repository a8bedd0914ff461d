"""``python -m repscope COMMAND [OPTIONS]``: the command lines under one name.

``python -m repscope maml --preset quick --out runs/quick`` is
``python -m repscope.training.maml --preset quick --out runs/quick``; the commands are
listed in :data:`repscope.COMMANDS` and each has ``--help``.
"""
from __future__ import annotations

import importlib
import sys

from repscope import COMMANDS


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
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = "usage: python -m repscope {%s} [OPTIONS]" % ",".join(COMMANDS)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage + "\n\n" + "\n".join(f"  {name:<17} python -m {mod}"
                                        for name, mod in COMMANDS.items()))
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"{usage}\nrepscope: unknown command {argv[0]!r}; expected one of "
              f"{sorted(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[argv[0]])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
