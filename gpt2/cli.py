"""A command line generated from a config dataclass: one `--field value` per field, its comment as help.

Every script declares its settings as one dataclass with a comment on each field, the way a reader
would write it anyway:

    @dataclass
    class TrainConfig:
        lr: float = 3e-4  # peak learning rate, reached after warmup
        compile: bool | None = None  # torch.compile the model; None: on for CUDA, off for CPU

and calls `cfg = parse_config(TrainConfig)`. The comment after a field (continued on comment lines
below it that start in the same column) becomes its `--help` text, so the source and the help never
drift apart. Types map to argparse as follows: int/float/str as themselves; bool as `--flag` /
`--no-flag`; `X | None` also accepts the word `none`; `Literal[...]` as choices; `list[X]` as zero or
more values. `--a-field` is read as `--a_field`. `--config file.json` reads field values from a JSON
object first; flags given on the command line override it. Validation lives in the dataclass's
`__post_init__`: a ValueError there is reported as a usage error.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import io
import json
import sys
import textwrap
import tokenize
import types
import typing
from typing import Any, Literal, Union


@functools.lru_cache(maxsize=None)
def field_comments(cls: type) -> dict[str, str]:
    """{field name: its comment} read from the class source: the `# ...` on the field's line plus
    the comment-only lines right below it that start in the same column (a continuation); a comment
    line at the field's own indentation is a section heading, not part of the help."""
    comments = {}
    for klass in reversed(cls.__mro__):  # base classes first, so a subclass can re-document a field
        if not dataclasses.is_dataclass(klass) or klass is object:
            continue
        source = textwrap.dedent(inspect.getsource(klass))
        by_line: dict[int, tuple[int, str]] = {}  # line number -> (column, the comment on it)
        code_lines: set[int] = set()  # lines holding anything but a comment
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                by_line[tok.start[0]] = (tok.start[1], tok.string.lstrip("#").strip())
            elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
                code_lines.update(range(tok.start[0], tok.end[0] + 1))
        class_def = ast.parse(source).body[0]
        for node in class_def.body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                line = node.end_lineno
                if line not in by_line:
                    continue
                column, text = by_line[line]
                line += 1
                while line in by_line and line not in code_lines and by_line[line][0] == column:
                    text += " " + by_line[line][1]
                    line += 1
                comments[node.target.id] = text
    return comments


def _none_or(convert):
    def parse(text: str):
        return None if text.lower() == "none" else convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")  # argparse names the type in its error messages
    return parse


def _argument(name: str, hint: Any, default: Any, help: str) -> tuple[list[str], dict]:
    """The argparse `add_argument` call for one field."""
    optional = False
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(inner) != 1 or len(typing.get_args(hint)) != 2:
            raise TypeError(f"field {name}: only `X | None` unions are supported, got {hint}")
        hint, optional = inner[0], True
        origin = typing.get_origin(hint)
    kwargs: dict[str, Any] = dict(dest=name, default=default, help=help)
    if hint is bool:
        kwargs["action"] = argparse.BooleanOptionalAction  # --flag / --no-flag; unset keeps the default
        return [f"--{name}"], kwargs
    if origin is Literal:
        choices = list(typing.get_args(hint))
        kwargs["type"] = type(choices[0])
        kwargs["choices"] = choices + ([None] if optional else [])
    elif origin is list:
        (item,) = typing.get_args(hint)
        kwargs["type"], kwargs["nargs"] = item, "*"
    elif hint in (int, float, str):
        kwargs["type"] = hint
    else:
        raise TypeError(f"field {name}: unsupported type {hint} (use int, float, str, bool, Literal, list or X | None)")
    if optional:
        kwargs["type"] = _none_or(kwargs["type"])
        kwargs["metavar"] = name.upper()
    return [f"--{name}"], kwargs


def build_parser(cls: type, description: str | None = None) -> argparse.ArgumentParser:
    """The argparse parser for dataclass `cls`; every field must carry a comment (its help text)."""
    comments = field_comments(cls)
    hints = typing.get_type_hints(cls)
    parser = argparse.ArgumentParser(
        description=description or inspect.getdoc(cls),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", metavar="FILE.json",
                        help="read field values from this JSON object first; flags given on the command line win")
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name not in comments:
            raise TypeError(f"{cls.__name__}.{f.name} has no comment: every config field needs one (it is its --help)")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        flags, kwargs = _argument(f.name, hints[f.name], default, comments[f.name])
        parser.add_argument(*flags, **kwargs)
    return parser


def _underscored(argv: list[str], options: set[str]) -> list[str]:
    """`--out-dir x` -> `--out_dir x`, `--no-a-flag` -> `--no-a_flag`, where only the underscored spelling is an option."""
    out = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        if name.startswith("--") and name not in options:
            for alt in ("--" + name[2:].replace("-", "_"), "--no-" + name[5:].replace("-", "_")):
                if alt in options:
                    arg = alt + eq + value
        out.append(arg)
    return out


def parse_config(cls: type, argv: list[str] | None = None, description: str | None = None):
    """Parse `argv` (default: sys.argv[1:]) into an instance of dataclass `cls`."""
    parser = build_parser(cls, description)
    argv = _underscored(sys.argv[1:] if argv is None else argv,
                        {s for action in parser._actions for s in action.option_strings})
    known, _ = parser.parse_known_args(argv)  # first pass: only to find --config
    if known.config:
        try:
            with open(known.config) as f:
                values = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            parser.error(f"--config {known.config}: cannot read it as JSON ({e})")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            parser.error(f"--config {known.config}: unknown field(s) {', '.join(unknown)}; "
                         f"the fields of {cls.__name__} are: {', '.join(sorted(names))}")
        parser.set_defaults(**values)
    args = vars(parser.parse_args(argv))
    args.pop("config")
    try:
        return cls(**args)
    except ValueError as e:  # the dataclass's own validation: a usage error, not a traceback
        parser.error(str(e))


def config_to_dict(config) -> dict:
    """A dataclass instance as a JSON-ready dict (what gets printed and stored with runs and checkpoints)."""
    return dataclasses.asdict(config)


def require_positive(config, *names: str) -> None:
    """Every named field of a config must be > 0, or None (for fields that may be left unset): the flag is named."""
    for name in names:
        value = getattr(config, name)
        if value is not None and not value > 0:
            raise ValueError(f"--{name} must be positive, got {value}")


def run_config(cls: type, argv: list[str] | None, run, errors: tuple[type[Exception], ...] = (FileNotFoundError,)):
    """A script's main: its command line parsed into `cls`, the resolved config printed as JSON, then
    `run(cfg)`; an exception of `errors` (a user's mistake, such as a missing file) ends the program with
    its message rather than a traceback. Returns (cfg, what run returned)."""
    cfg = parse_config(cls, argv)
    print(json.dumps(config_to_dict(cfg)))
    try:
        return cfg, run(cfg)
    except errors as e:
        sys.exit(f"error: {e}")
