"""Typed options: a command's settings are one dataclass, and its CLI flags and pipeline config keys
are derived from the fields (docs/design.md section 12).

A field declares itself with `option(...)`: its default, its help text and, where the flag differs
from the field, how it is spelled on the command line. The type annotation decides both how a flag's
text is converted and which values a config mapping may hold:

    @dataclasses.dataclass
    class EvaluateOptions:
        split: str = option("test", help="split to evaluate")
        batch_size: int = option(16, help="clips per batch", minimum=1)

    add_arguments(parser, EvaluateOptions)                      # --split, --batch-size
    from_args(EvaluateOptions, parser.parse_args(argv))         # -> EvaluateOptions
    from_mapping(EvaluateOptions, {"batch_size": "ten"}, "evaluate")
    # OptionError: evaluate.batch_size: expected an integer, got 'ten'

Supported annotations: bool, int, float, str, `X | None`, `tuple[X, ...]`, `dict`, a nested options
dataclass (given as a mapping in a config), and unions of these (`int | str`). Imports only the
standard library.

Boolean flags: a field defaulting to False is a switch (`--x`); one defaulting to True or None gets
`--x/--no-x` (None: not given, e.g. "the preset's value"); a field defaulting to True whose flag is
spelled `--no-x` is a switch that turns it off (its type may be a union holding bool, such as
`AugmentConfig | bool`). `group=`: the title of the argument group the flag is listed under.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing

from vtcaps_tf.errors import UsageError

_META = "vtcaps_option"


class OptionError(UsageError):
    """A config mapping or flag value that the options' types or rules refuse (exit status 2)."""


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    """How one field appears on the command line and in a config."""

    help: str
    flag: str | None = None  # default: --field-name
    choices: tuple | None = None
    minimum: float | None = None  # inclusive lower bound of a number
    metavar: str | None = None
    cli: bool = True  # a command-line flag (False: config key only)
    config: bool = True  # a config key (False: command-line flag only)
    parse: typing.Callable[[str], object] | None = None  # flag text -> value, when not by type
    group: str | None = None  # title of the argument group listing the flag


def option(default=dataclasses.MISSING, *, help: str, default_factory=dataclasses.MISSING,
           flag: str | None = None, choices=None, minimum: float | None = None,
           metavar: str | None = None, cli: bool = True, config: bool = True, parse=None,
           group: str | None = None):
    """A dataclass field that is an option (see the module docstring)."""
    spec = OptionSpec(help=help, flag=flag, choices=tuple(choices) if choices is not None else None,
                      minimum=minimum, metavar=metavar, cli=cli, config=config, parse=parse,
                      group=group)
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={_META: spec})


def spec_of(field: dataclasses.Field) -> OptionSpec | None:
    return field.metadata.get(_META)


def _fields(cls) -> list[tuple[dataclasses.Field, OptionSpec, object]]:
    hints = typing.get_type_hints(cls)
    return [(f, spec_of(f), hints[f.name]) for f in dataclasses.fields(cls) if spec_of(f) is not None]


def _default(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def config_keys(cls) -> tuple[str, ...]:
    """The keys a config section of these options may hold, in field order."""
    return tuple(f.name for f, spec, _ in _fields(cls) if spec.config)


def flag_names(cls) -> dict[str, str]:
    """Field name -> its command-line flag, for the fields that have one."""
    return {f.name: spec.flag or "--" + f.name.replace("_", "-") for f, spec, _ in _fields(cls) if spec.cli}


# ---- types ----------------------------------------------------------------------------------------

def _args(tp) -> tuple:
    return typing.get_args(tp)


def _is_union(tp) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def describe(tp) -> str:
    """A type as a config's reader would say it: 'an integer', 'a list of integers', ..."""
    if _is_union(tp):
        parts = [a for a in _args(tp) if a is not type(None)]
        text = " or ".join(describe(a) for a in parts)
        return text + (" or null" if type(None) in _args(tp) else "")
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if tp is dict or typing.get_origin(tp) is dict:
        return "a mapping"
    if typing.get_origin(tp) is tuple:
        return f"a list of {describe(_args(tp)[0]).split(' ', 1)[-1]}s"
    if dataclasses.is_dataclass(tp):
        return f"a mapping of {tp.__name__} fields"
    return getattr(tp, "__name__", str(tp))


def _convert(value, tp, where: str):
    """`value` as type `tp`, or OptionError naming `where`. Numbers are not read from strings and
    booleans are not numbers: a config says what it means."""
    if _is_union(tp):
        if value is None and type(None) in _args(tp):
            return None
        for member in (a for a in _args(tp) if a is not type(None)):
            try:
                return _convert(value, member, where)
            except OptionError:
                if dataclasses.is_dataclass(member) and isinstance(value, dict):
                    raise  # a mapping meant for the nested options: its own error names the key
                continue
        raise OptionError(f"{where}: expected {describe(tp)}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is dict or typing.get_origin(tp) is dict:
        if isinstance(value, dict):
            return dict(value)
    elif typing.get_origin(tp) is tuple:
        if isinstance(value, (list, tuple)):
            item = _args(tp)[0]
            return tuple(_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, dict):
            return from_mapping(tp, value, where)
    else:
        raise TypeError(f"{where}: options of type {tp!r} are not supported")
    raise OptionError(f"{where}: expected {describe(tp)}, got {value!r}")


def _check_rules(value, spec: OptionSpec, where: str):
    if value is None:
        return
    if spec.choices is not None and value not in spec.choices:
        raise OptionError(f"{where}: {value!r} is not one of {', '.join(map(str, spec.choices))}")
    if spec.minimum is not None and isinstance(value, (int, float)) and value < spec.minimum:
        raise OptionError(f"{where}: must be at least {spec.minimum:g}, got {value!r}")


def check(options, section: str) -> None:
    """Check every option field of a built instance against its type and rules (for instances
    made in Python, whose dataclass does not check types)."""
    for field, spec, tp in _fields(type(options)):
        where = f"{section}.{field.name}"
        value = getattr(options, field.name)
        converted = _convert(value, tp, where)
        _check_rules(converted, spec, where)


# ---- config mappings ------------------------------------------------------------------------------

def from_mapping(cls, mapping, section: str, **fixed):
    """An instance of `cls` from a config section: unknown keys, wrong types and missing
    required keys (fields without a default) are refused with the key named; missing keys keep
    their defaults. `fixed`: values set by the caller, not the config (paths the pipeline decides,
    for example)."""
    if not isinstance(mapping, dict):
        raise OptionError(f"{section}: expected a mapping of options, got {mapping!r}")
    known = config_keys(cls)
    unknown = sorted(set(mapping) - set(known))
    if unknown:
        raise OptionError(f"{section}: unknown key{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(map(repr, unknown))}; known: {', '.join(known)}")
    missing = [f.name for f, _, _ in _fields(cls)
               if _default(f) is dataclasses.MISSING and f.name not in mapping and f.name not in fixed]
    if missing:
        raise OptionError(f"{', '.join(f'{section}.{name}' for name in missing)}: required, not set")
    values = {}
    for field, spec, tp in _fields(cls):
        if field.name not in mapping:
            continue
        where = f"{section}.{field.name}"
        value = _convert(mapping[field.name], tp, where)
        _check_rules(value, spec, where)
        values[field.name] = value
    return _build(cls, values, fixed, section)


def to_mapping(options) -> dict:
    """The config keys of an instance with their values (JSON-ready: tuples become lists)."""
    out = {}
    for field, spec, _ in _fields(type(options)):
        if spec.config:
            value = getattr(options, field.name)
            out[field.name] = to_mapping(value) if dataclasses.is_dataclass(value) else value
    return jsonable(out)


def jsonable(value):
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


# ---- command-line flags ---------------------------------------------------------------------------

def _flag_type(tp, spec: OptionSpec, flag: str):
    """argparse `type=` for a field's annotation (None for booleans, which are switches)."""
    if spec.parse is not None:
        return spec.parse
    if _is_union(tp):
        members = [a for a in _args(tp) if a is not type(None)]
        if len(members) == 1:
            return _flag_type(members[0], spec, flag)
        return _union_parser(members, flag)
    if tp in (int, float, str):
        return tp
    if typing.get_origin(tp) is tuple:
        item = _args(tp)[0]

        def parse_list(text: str):
            try:
                return tuple(item(v) for v in text.split(",") if v.strip())
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"expected comma-separated {describe(item).split(' ', 1)[-1]}s, got {text!r}") from None

        return parse_list
    raise TypeError(f"{flag}: a flag of type {tp!r} needs `parse=` in its option()")


def _union_parser(members, flag):
    def parse(text: str):
        for member in members:
            if member is str:
                continue
            try:
                return member(text)
            except ValueError:
                pass
        if str in members:
            return text
        raise argparse.ArgumentTypeError(f"expected {' or '.join(describe(m) for m in members)}, got {text!r}")

    return parse


def _default_text(value) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def _is_switch(tp, spec: OptionSpec) -> bool:
    """A boolean field whose flag takes no value."""
    if spec.parse is not None:
        return False
    if tp is bool:
        return True
    return _is_union(tp) and bool in _args(tp)


def add_arguments(parser, cls, *, exclude=(), required=(), title: str | None = None) -> None:
    """One flag per option field of `cls` (those with `cli=True`), `dest` the field name, the
    default the field's. `required`: fields that must be given (paths without a default).
    `title`: put the flags in an argument group of that name (a field's own `group` wins).
    Required flags come first, then the ungrouped ones, then the groups, each in field order."""
    groups = {}

    def target(name):
        if not name:
            return parser
        if name not in groups:
            groups[name] = parser.add_argument_group(name)
        return groups[name]

    def is_required(field):
        return field.name in required or _default(field) is dataclasses.MISSING

    fields = sorted(_fields(cls), key=lambda f: (not is_required(f[0]), f[1].group is not None))
    for field, spec, tp in fields:
        if not spec.cli or field.name in exclude:
            continue
        flag = spec.flag or "--" + field.name.replace("_", "-")
        default = _default(field)
        kwargs = {"dest": field.name, "help": spec.help}
        if is_required(field):
            kwargs["required"] = True
        else:
            kwargs["default"] = default
        if _is_switch(tp, spec):
            if default is True and flag.startswith("--no-"):
                kwargs["action"] = "store_false"
            elif default is True or default is None:
                kwargs["action"] = argparse.BooleanOptionalAction
            elif default is False:
                kwargs["action"] = "store_true"
            else:
                raise TypeError(f"{flag}: a switch defaults to False, True or None, not {default!r}")
        else:
            kwargs["type"] = _flag_type(tp, spec, flag)
            if spec.choices is not None:
                kwargs["choices"] = spec.choices
            if spec.metavar:
                kwargs["metavar"] = spec.metavar
            if default not in (dataclasses.MISSING, None, "") and "%(default)" not in spec.help \
                    and "default" not in spec.help:
                kwargs["help"] = f"{spec.help} (default {_default_text(default)})"
        target(spec.group or title).add_argument(flag, **kwargs)


def from_args(cls, args: argparse.Namespace, section: str | None = None, **fixed):
    """An instance of `cls` from parsed flags (the fields that have flags; others keep their
    defaults). Values are checked against the fields' rules, named by their flags."""
    values = {}
    flags = flag_names(cls)
    for field, spec, tp in _fields(cls):
        if not spec.cli or not hasattr(args, field.name) or field.name in fixed:
            continue
        value = getattr(args, field.name)
        _check_rules(value, spec, flags[field.name])
        values[field.name] = value
    return _build(cls, values, fixed, section)


def _build(cls, values: dict, fixed: dict, section: str | None):
    """`cls(**values, **fixed)`, a refusal by its own checks (`__post_init__`) as OptionError."""
    try:
        return cls(**values, **fixed)
    except (TypeError, ValueError) as err:
        if isinstance(err, OptionError):
            raise
        raise OptionError(f"{section + ': ' if section else ''}{err}") from None
