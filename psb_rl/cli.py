"""Turn a ``@dataclass`` of arguments into a command line (CleanRL style, no extra dependency).

>>> @dataclass
... class Args:
...     env_id: str = "PSB/RandomObjects-v0"
...     '''the environment id'''
...     num_envs: int = 1
...     '''number of parallel environments'''
...     resize: int | None = None
...     '''resize frames to this square size'''
...     progress: bool = True
...     '''show a progress bar'''
>>> args = parse_dataclass(Args, ["--env-id", "ALE/Pong-v5", "--no-progress"])

Rules:

- every field becomes ``--kebab-case`` (``env_id`` → ``--env-id``); ``aliases`` in the field's
  metadata adds more flags (e.g. ``field(default=..., metadata={"aliases": ["--env"]})``);
- ``bool`` fields become ``--flag`` / ``--no-flag``;
- ``X | None`` / ``Optional[X]`` accept a value of type ``X`` (or the word ``none``);
- ``Literal["a", "b"]`` gives ``choices``; ``list[X]`` / ``tuple[X, ...]`` take several values;
- fields without a default are required;
- ``min`` / ``max`` (inclusive) and ``gt`` / ``lt`` (exclusive) in the metadata bound a number (each value of a
  list), e.g. ``steps: int = bounded(1000, min=1)``: ``--steps 0`` is refused by the parser, one
  ``error:`` line and exit code 2, before any work; :func:`check_bounds` checks an instance made in Python;
- a ``validate()`` method of the dataclass, if any, refuses combinations of values the same way;
- the help text is ``metadata["help"]`` when given, else the string literal written just below the
  field (its "docstring"), else the field comment on the same line.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")

_NONE_WORDS = {"none", "null"}


def field_docs(cls: type) -> dict[str, str]:
    """Return ``{field_name: help}`` from the string literal under each field (or its line comment).

    :param cls: a dataclass.
    :return: help text per field name; fields without documentation are absent.
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        lines = source.splitlines()
        tree = ast.parse(source)
        body = next((n for n in tree.body if isinstance(n, ast.ClassDef)), None)
        if body is None:
            continue
        stmts = body.body
        for i, node in enumerate(stmts):
            if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
                continue
            name = node.target.id
            nxt = stmts[i + 1] if i + 1 < len(stmts) else None
            if (isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[name] = inspect.cleandoc(nxt.value.value)
                continue
            line = lines[node.end_lineno - 1] if node.end_lineno else ""
            if "#" in line:
                docs[name] = line.split("#", 1)[1].strip()
    return docs


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _optional_converter(inner: Any) -> Any:
    def convert(text: str) -> Any:
        if text.lower() in _NONE_WORDS:
            return None
        return inner(text)

    convert.__name__ = getattr(inner, "__name__", "value")
    return convert


BOUNDS = ("min", "max", "gt", "lt")
"""The metadata keys that bound a numeric field: ``min`` / ``max`` inclusive, ``gt`` / ``lt`` exclusive."""


def bounded(default: Any = dataclasses.MISSING, *, min: float | None = None, max: float | None = None,
            gt: float | None = None, lt: float | None = None, **metadata: Any) -> Any:
    """A dataclass field whose numeric value (or each value of a list or tuple) must lie within bounds,
    e.g. ``steps: int = bounded(1000, min=1)``.

    :param default: the default value (None is always allowed for ``X | None`` fields).
    :param min: smallest allowed value.
    :param max: largest allowed value.
    :param gt: values must be greater.
    :param lt: values must be smaller.
    :param metadata: more field metadata (``help``, ``aliases``).
    :return: a :func:`dataclasses.field`.
    """
    bounds = {key: value for key, value in {"min": min, "max": max, "gt": gt, "lt": lt}.items() if value is not None}
    if isinstance(default, list | dict | set):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={**metadata, **bounds})
    return dataclasses.field(default=default, metadata={**metadata, **bounds})


def bound_problem(value: Any, metadata: Any) -> str | None:
    """What is wrong with ``value`` under the bounds of a field's ``metadata``, or None when it is within them."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if value != value or value in (float("inf"), float("-inf")):  # NaN and inf lie within no bounds
        return f"must be a finite number, got {value}"
    checks = (("min", lambda b: value >= b, ">="), ("max", lambda b: value <= b, "<="),
              ("gt", lambda b: value > b, ">"), ("lt", lambda b: value < b, "<"))
    for key, ok, sign in checks:
        if key in metadata and not ok(metadata[key]):
            return f"must be {sign} {metadata[key]}, got {value}"
    return None


def check_bounds(instance: Any) -> None:
    """Check every bounded field of a dataclass instance (see :func:`bounded`), e.g. arguments built in Python.

    :raises ValueError: ``--flag must be >= 1, got 0`` for the first field out of bounds.
    """
    for f in dataclasses.fields(instance):
        if not any(key in f.metadata for key in BOUNDS):
            continue
        value = getattr(instance, f.name)
        for item in value if isinstance(value, list | tuple) else (value,):
            problem = bound_problem(item, f.metadata)
            if problem:
                raise ValueError(f"--{f.name.replace('_', '-')} {problem}")


def _bounded_converter(convert: Any, metadata: Any) -> Any:
    """``convert``, then a check against the field's bounds (an ``ArgumentTypeError``: one ``error:`` line)."""
    if not any(key in metadata for key in BOUNDS):
        return convert

    def checked(text: str) -> Any:
        value = convert(text)
        problem = bound_problem(value, metadata)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    checked.__name__ = getattr(convert, "__name__", "value")
    return checked


def _str_to_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "y", "on"):
        return True
    if low in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {text!r}")


class _OneLineErrorParser(argparse.ArgumentParser):
    """An argument parser whose mistakes are one ``error: ...`` line on stderr (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser(cls: type, description: str | None = None) -> argparse.ArgumentParser:
    """Build an :class:`argparse.ArgumentParser` for a dataclass (see the module docstring for rules).

    :param cls: a dataclass type whose fields are the arguments.
    :param description: parser description (default: the dataclass docstring).
    :return: the parser; ``vars(parser.parse_args())`` maps field names to values.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    doc = description if description is not None else inspect.getdoc(cls)
    parser = _OneLineErrorParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        flags = ["--" + f.name.replace("_", "-"), *f.metadata.get("aliases", ())]
        kwargs: dict[str, Any] = {"dest": f.name, "help": f.metadata.get("help", docs.get(f.name, " "))}
        if f.default is not dataclasses.MISSING:
            kwargs["default"] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            kwargs["default"] = f.default_factory()
        else:
            kwargs["required"] = True
        if "default" in kwargs and "(default" not in kwargs["help"]:  # a help text that states it wins
            kwargs["help"] = f"{kwargs['help'].strip()} (default: {kwargs['default']!r})".lstrip()
        kwargs["help"] = kwargs["help"].replace("%", "%%")  # argparse %-formats help strings
        tp, optional = _unwrap_optional(hints[f.name])
        origin = typing.get_origin(tp)
        if tp is bool:
            if optional:
                kwargs["type"] = _optional_converter(_str_to_bool)
                kwargs["metavar"] = "BOOL"
            else:
                kwargs["action"] = argparse.BooleanOptionalAction
        elif origin is typing.Literal:
            choices = typing.get_args(tp)
            kwargs["choices"] = list(choices)
            kwargs["type"] = type(choices[0])
        elif origin in (list, tuple, Sequence) or tp in (list, tuple):
            args = typing.get_args(tp)
            inner = args[0] if args else str
            kwargs["nargs"] = "*" if origin is not tuple or (len(args) == 2 and args[1] is Ellipsis) else len(args)
            kwargs["type"] = inner
        else:
            kwargs["type"] = _optional_converter(tp) if optional else tp
        if "type" in kwargs:
            kwargs["type"] = _bounded_converter(kwargs["type"], f.metadata)
        parser.add_argument(*flags, **kwargs)
    return parser


def parse_dataclass(cls: type[T], argv: Sequence[str] | None = None, description: str | None = None) -> T:
    """Parse command-line arguments into an instance of the dataclass ``cls``.

    :param cls: a dataclass type whose fields are the arguments.
    :param argv: arguments to parse (default: ``sys.argv[1:]``).
    :param description: parser description (default: the dataclass docstring).
    :return: ``cls(**parsed)``; tuples fields are converted back to tuples.
    """
    parser = build_parser(cls, description)
    values = vars(parser.parse_args(None if argv is None else list(argv)))
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        tp, _ = _unwrap_optional(hints[name])
        if (typing.get_origin(tp) is tuple or tp is tuple) and isinstance(value, list):
            values[name] = tuple(value)
    instance = cls(**values)
    try:
        check_bounds(instance)  # defaults too
        validate = getattr(instance, "validate", None)
        if callable(validate):  # combinations of values no run can use
            validate()
    except ValueError as error:
        parser.error(error_line(error))
    return instance


def parse_env_kwargs(text: str | None, flag: str = "--env-kwargs") -> dict[str, Any]:
    """Keyword arguments of ``gym.make`` given on the command line as a JSON object.

    :param text: JSON text such as ``'{"spacing": 2}'``; ``None`` or empty means no arguments.
    :param flag: the option's name, for the error message.
    :return: the arguments as a dict.
    :raises ValueError: if the text is not valid JSON or not a JSON object.
    """
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{flag} must be a JSON object such as '{{\"spacing\": 2}}', got {text!r} ({err})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{flag} must be a JSON object such as '{{\"spacing\": 2}}', got {text!r}")
    return value


USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, NotADirectoryError,
                                                IsADirectoryError, PermissionError)
"""Errors that mean the user asked for something that cannot be done (bad option, file or directory).
The project's own error types derive from ``ValueError``: :class:`psb_rl.checkpoint.CheckpointError`,
:class:`psb_rl.shards.RolloutError`, :class:`psb_rl.utils.RunDirError`."""


def is_user_error(error: BaseException) -> bool:
    """Whether ``error`` is a user mistake: one of :data:`USER_ERRORS`, an unknown gymnasium id, or an
    environment whose optional dependency is not installed."""
    if isinstance(error, USER_ERRORS):
        return True
    gym_error = sys.modules.get("gymnasium.error")  # only if gymnasium is in use
    return gym_error is not None and isinstance(error, (gym_error.UnregisteredEnv, gym_error.DependencyNotInstalled))


def error_line(error: BaseException) -> str:
    """One line describing ``error`` (its message with line breaks folded), for ``error: ...``."""
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, OSError) and error.filename and str(error.filename) not in text:
        text = f"{text}: {error.filename}"
    return text


def run_main(main: Callable[[list[str] | None], Any], argv: list[str] | None = None) -> int:
    """Run a script's ``main(argv)`` and turn user mistakes into one ``error: ...`` line on stderr.

    :param main: the script's entry point; it returns an exit code, or anything else for success.
    :param argv: arguments (default ``sys.argv[1:]``).
    :return: the exit code: ``main``'s, 0 when it returned a non-integer, 2 for a user mistake
        (:func:`is_user_error`), 130 when interrupted.
    """
    try:
        result = main(argv)
    except Exception as error:
        if not is_user_error(error):
            raise
        print(f"error: {error_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return result if isinstance(result, int) and not isinstance(result, bool) else 0
