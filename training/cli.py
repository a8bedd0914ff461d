"""One way to build a command line from a settings dataclass.

Every command of the package (``python -m repscope.training.maml``, ``.record``,
``.supervised`` and ``python analyses/layer_similarity.py``) describes its settings as a
dataclass and builds its parser with :func:`build_parser`:

* each field becomes ``--field-name``, its help the field's ``metadata["help"]``
  (:func:`setting` writes such a field), placed in a named argument group;
* values are parsed from the field's type: ``bool`` as ``--name/--no-name``, numbers and
  strings as themselves, tuples and sequences as comma-separated lists, and ``none`` for
  a field that may be ``None``;
* a field with a fixed list of values declares it as ``choices``, so an unknown value is
  refused by the parser with the allowed values;
* the default shown in the help is the value the command resolves (for example a
  preset's), written as it is typed: ``(default: 0,1,5,10)``; help texts never repeat it;
* ``--show-config`` asks the command to print its resolved configuration as JSON and exit
  (:func:`print_config`).

A value the parser has not seen is ``None`` in the parsed namespace, so a command can tell
the options given (:func:`given`) from the defaults it resolves itself.

Examples
--------
>>> from dataclasses import dataclass
>>> @dataclass
... class Settings:
...     steps: int = setting(100, "Training steps.")
...     device: str = setting("cpu", "Device.")
...     progress: bool = setting(True, "Show a progress bar.")
>>> parser = build_parser("demo", "A demo.", Settings,
...                       {"runtime": ["steps", "device", "progress"]},
...                       choices={"device": ("cpu", "cuda")})
>>> args = parser.parse_args(["--steps", "5", "--no-progress"])
>>> given(args, Settings)
{'steps': 5, 'progress': False}
>>> Settings(**given(args, Settings))
Settings(steps=5, device='cpu', progress=False)
"""
from __future__ import annotations

import argparse
import collections.abc
import dataclasses
import json
import sys
import types
import typing
from pathlib import Path

from .errors import TrainingError

__all__ = ["setting", "arg", "build_parser", "peek", "given", "checked", "show_value",
           "print_config", "wrote"]

_SEQUENCES = (tuple, list, collections.abc.Sequence)


def setting(default=dataclasses.MISSING, help: str = "", *,
            default_factory=dataclasses.MISSING) -> dataclasses.Field:
    """A dataclass field that carries the help text of its command-line option.

    Examples
    --------
    >>> setting(5, "Inner steps.").metadata["help"]
    'Inner steps.'
    """
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={"help": help})


def arg(*flags, **kwargs) -> tuple:
    """An argument that is not a setting (``--out``, ``--resume``), for a group of
    :func:`build_parser`; the arguments of :meth:`argparse.ArgumentParser.add_argument`.

    Examples
    --------
    >>> arg("--out", required=True, help="Run folder to write.")
    (('--out',), {'required': True, 'help': 'Run folder to write.'})
    """
    return flags, kwargs


def show_value(value) -> str:
    """A value as it is typed on the command line (how every default is shown).

    Examples
    --------
    >>> show_value((0, 1, 5)), show_value(None), show_value(True), show_value(1e-3)
    ('0,1,5', 'none', 'yes', '0.001')
    >>> show_value({"2": ("rsa", "cka_rbf")})
    '2=rsa,cka_rbf'
    """
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return " ".join(f"{k}={show_value(v)}" for k, v in value.items())
    if isinstance(value, (tuple, list)):
        return ",".join(show_value(v) for v in value) if value else "''"
    return str(value)


def checked(check, metavar: str | None = None):
    """An argparse ``type`` that refuses a value ``check(value)`` raises
    :class:`~repscope.training.errors.TrainingError` for, with its message (for values
    that a list of choices cannot describe, such as ``--reduce conv4=spatial_mean``).

    Examples
    --------
    >>> def positive(text):
    ...     if float(text) <= 0:
    ...         raise TrainingError(f"expected a number > 0, got {text!r}")
    >>> p = argparse.ArgumentParser(prog="demo", exit_on_error=False)
    >>> _ = p.add_argument("--lr", type=checked(positive))
    >>> p.parse_args(["--lr", "-1"])
    Traceback (most recent call last):
    ...
    argparse.ArgumentError: argument --lr: expected a number > 0, got '-1'
    """
    def convert(text: str) -> str:
        try:
            check(text)
        except TrainingError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text
    convert.__name__ = metavar or "value"
    return convert


def _split(hint):
    """``(kind, element type, optional)`` of a field's type hint."""
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(rest) < len(typing.get_args(hint))
        hint = rest[0] if len(rest) == 1 else str
    origin = typing.get_origin(hint) or hint
    if hint is bool:
        return "bool", bool, optional
    if isinstance(origin, type) and issubclass(origin, dict):
        return "dict", str, optional
    if origin in _SEQUENCES:
        element = (typing.get_args(hint) or (str,))[0]
        return "list", element if element is not Ellipsis else str, optional
    return "scalar", hint if isinstance(hint, type) else str, optional


_WORDS = {int: "integers", float: "numbers", str: "names", Path: "paths"}


def _scalar_type(kind, optional: bool, choices):
    def parse(text: str):
        if optional and text.lower() == "none" and (choices is None or "none" not in choices):
            return None
        return kind(text)
    parse.__name__ = getattr(kind, "__name__", "value")  # argparse names it in its errors
    return parse


def _list_type(element, choices):
    def parse(text: str) -> tuple:
        try:
            values = tuple(element(s.strip()) for s in text.split(",") if s.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {_WORDS.get(element, 'values')} such as "
                f"{'0,1,5' if element is int else 'a,b'}, got {text!r}") from None
        bad = [v for v in values if choices is not None and v not in choices]
        if bad:
            raise argparse.ArgumentTypeError(
                f"invalid choice: {show_value(bad)!r} (choose from {', '.join(map(str, choices))})")
        return values
    return parse


def _add_setting(group, field: dataclasses.Field, hint, default, choices, extra: dict) -> None:
    kind, element, optional = _split(hint)
    help_text = field.metadata.get("help") or extra.get("help")
    if not help_text:
        raise ValueError(f"setting {field.name!r} has no help text: give it "
                         "field(metadata={'help': ...}) (see setting())")
    kwargs = {"dest": field.name, "default": None}
    if kind == "bool":
        kwargs["action"] = argparse.BooleanOptionalAction
    elif kind == "list":
        kwargs["type"] = _list_type(element, choices)
        kwargs["metavar"] = ("{%s,...}" % ",".join(map(str, choices)) if choices
                             else "N,N" if element is int else "A,B")
    else:
        kwargs["type"] = _scalar_type(element, optional, choices)
        if choices is not None:
            kwargs["choices"] = list(choices)
        else:
            kwargs["metavar"] = "N" if element is int else "X" if element is float else "VALUE"
    kwargs.update({k: v for k, v in extra.items() if k != "help"})
    is_empty = default is None or (isinstance(default, (tuple, list, dict)) and not default)
    shown = "" if is_empty else f" (default: {show_value(default)})"
    kwargs["help"] = (help_text + shown).replace("%", "%%")  # argparse %-formats help
    group.add_argument("--" + field.name.replace("_", "-"), **kwargs)


def _fields(settings) -> dict:
    found = {}
    for cls in settings if isinstance(settings, (tuple, list)) else (settings,):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            found[f.name] = (f, hints[f.name])
    return found


def _field_default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def build_parser(prog: str, description: str, settings, groups: dict, *, defaults=None,
                 choices: dict | None = None, arguments: dict | None = None,
                 hidden=(), usage: str | None = None,
                 epilog: str | None = None) -> argparse.ArgumentParser:
    """The command line of ``settings``: one option per field, in argument groups.

    Parameters
    ----------
    prog, description, usage, epilog : str
        As :class:`argparse.ArgumentParser` takes them (``usage``: default, every option).
    settings : type or tuple of type
        A dataclass, or several; each field becomes ``--field-name`` (a value the parser
        has not seen is ``None``).
    groups : dict
        ``{title: [item, ...]}`` in display order; an item is a field name or an
        :func:`arg` (an argument that is not a setting; one marked ``required`` is required
        unless ``--show-config`` is given). Every field must be in one group or in
        ``hidden``.
    defaults : dict or object, optional
        A dict or dataclass instance: the values the command resolves when an option is
        not given (a preset's), shown as ``(default: VALUE)``; default: the fields' own.
    choices : dict, optional
        ``{field: allowed values}``; for a list field, the values of each element.
    arguments : dict, optional
        ``{field: add_argument keywords}`` that replace the ones read from the type (a
        ``type`` that parses a special spelling, ``action="append"``); with ``help`` for
        a field whose dataclass does not carry one.
    hidden : iterable of str
        Fields without a command-line option.

    Returns
    -------
    argparse.ArgumentParser
        With ``--show-config`` (``args.show_config``) beside ``--help``.

    Examples
    --------
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class S:
    ...     lr: float = setting(0.1, "Learning rate.")
    >>> p = build_parser("demo", "Demo.", S, {"outer loop": ["lr"]}, defaults={"lr": 0.5})
    >>> "Learning rate. (default: 0.5)" in p.format_help()
    True
    >>> p.parse_args([]).lr is None
    True
    """
    fields = _fields(settings)
    choices, arguments = dict(choices or {}), dict(arguments or {})
    if dataclasses.is_dataclass(defaults):
        defaults = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(defaults)}
    defaults = dict(defaults or {})
    listed = [item for items in groups.values() for item in items if isinstance(item, str)]
    missing = sorted(set(fields) - set(listed) - set(hidden))
    unknown = sorted((set(listed) | set(choices) | set(arguments)) - set(fields))
    if missing or unknown or len(listed) != len(set(listed)):
        raise ValueError(f"groups must list every setting once: missing {missing}, unknown "
                         f"{unknown}, listed twice {sorted({n for n in listed if listed.count(n) > 1})}")
    parser = _Parser(prog=prog, description=description, usage=usage, epilog=epilog)
    parser.add_argument("--show-config", action="store_true",
                        help="Print the resolved configuration as JSON and exit.")
    for title, items in groups.items():
        group = parser.add_argument_group(title)
        for item in items:
            if isinstance(item, str):
                f, hint = fields[item]
                default = defaults[item] if item in defaults else _field_default(f)
                _add_setting(group, f, hint, default, choices.get(item), arguments.get(item, {}))
            else:
                flags, kwargs = item
                kwargs = dict(kwargs)
                required = kwargs.pop("required", False)
                action = group.add_argument(*flags, **kwargs)
                if required:
                    parser.required_unless_show_config.append(action)
    return parser


class _Parser(argparse.ArgumentParser):
    """Arguments marked ``required`` are required unless ``--show-config`` is given."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.required_unless_show_config = []

    def parse_known_args(self, args=None, namespace=None):
        parsed, rest = super().parse_known_args(args, namespace)
        missing = [a.option_strings[0] for a in self.required_unless_show_config
                   if getattr(parsed, a.dest, None) is None]
        if missing and not getattr(parsed, "show_config", False):
            self.error(f"the following arguments are required: {', '.join(missing)}")
        return parsed, rest


def peek(argv, flag: str, default=None):
    """The value of one option before the full parser is built (to resolve the defaults
    the help shows, such as a preset's); ``default`` when absent or malformed.

    Examples
    --------
    >>> peek(["--out", "r", "--preset", "medium"], "--preset", "quick")
    'medium'
    >>> peek(["--help"], "--preset", "quick")
    'quick'
    """
    p = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    p.add_argument(flag, default=default)
    try:
        known, _ = p.parse_known_args(sys.argv[1:] if argv is None else list(argv))
    except argparse.ArgumentError:
        return default
    return getattr(known, flag.lstrip("-").replace("-", "_"))


def given(args: argparse.Namespace, settings) -> dict:
    """``{field: value}`` of the settings given on the command line.

    Examples
    --------
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class S:
    ...     a: int = setting(1, "A.")
    ...     b: int = setting(2, "B.")
    >>> given(argparse.Namespace(a=None, b=3), S)
    {'b': 3}
    """
    return {name: getattr(args, name) for name in _fields(settings)
            if getattr(args, name, None) is not None}


def _jsonable(value):
    if dataclasses.is_dataclass(value):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def print_config(config, file=None) -> int:
    """Print a resolved configuration (a dataclass or dict of them) as JSON; returns 0,
    the exit status of ``--show-config``.

    Examples
    --------
    >>> print_config({"steps": 5, "out": Path("runs/x")})
    {
      "steps": 5,
      "out": "runs/x"
    }
    0
    """
    print(json.dumps(_jsonable(config), indent=2), file=file or sys.stdout)
    return 0


def wrote(what: str, path) -> str:
    """The last line of a command: what it wrote, at its absolute path.

    Examples
    --------
    >>> wrote("run folder", "/tmp/runs/quick")
    'run folder written to /tmp/runs/quick'
    """
    return f"{what} written to {Path(path).resolve()}"
