"""Typed configs: dataclasses read from JSON/YAML mappings and ``--set`` text, converted and checked by one engine.

A config is a dataclass deriving from :class:`TypedConfig`. Its fields carry types (``int``, ``float``,
``bool``, ``str``, ``X | None``, ``list[X]``, ``tuple[X, ...]``, ``tuple[X, X]``, ``Literal[...]``,
``dict[str, Any]`` or another config, which makes a section) and declare a range or a set of choices once,
with :func:`setting`. However a config is built (:meth:`TypedConfig.from_dict`, the constructor,
:meth:`TypedConfig.replace`), every field is converted to its type and checked; :func:`describe` words what
a value must look like, and every error reads ``key=value is invalid: expected ...``, with the key of a
section's field written ``section.key``.

Checks that involve several fields live in the config's :meth:`TypedConfig.validate` and raise
:func:`invalid` too.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypeVar

import yaml

from clip2depth.errors import ConfigError

C = TypeVar("C", bound="TypedConfig")


class FieldError(ConfigError):
    """A problem with one key; :meth:`within` names that key from an enclosing section."""

    def __init__(self, key: str, after: str, *, before: str = "") -> None:
        self.key, self.after, self.before = key, after, before
        super().__init__(f"{before}{key}{after}")

    def within(self, section: str) -> FieldError:
        """The same error with the key written ``section.key`` (unchanged for an empty ``section``)."""
        return FieldError(f"{section}.{self.key}" if section else self.key, self.after, before=self.before)


def invalid(key: str, value: Any, expected: str) -> FieldError:
    """``key=value is invalid: expected <expected>``."""
    return FieldError(key, f"={value!r} is invalid: expected {expected}")


def _unknown(key: str, known: list[str]) -> FieldError:
    return FieldError(key, f"'; known: {', '.join(known)}", before="unknown key '")


@dataclasses.dataclass(frozen=True)
class Rule:
    """What values a field allows beyond its type: bounds (for a list, of each item) or a set of choices."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[Any, ...] | None = None

    def allows(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))

    def bounds(self) -> str:
        """`` >= 1``, `` > 0``, `` in [0, 1)``: the bounds as they follow a type's name ("" for none)."""
        low = ("[", ">=", self.ge) if self.ge is not None else ("(", ">", self.gt) if self.gt is not None else None
        high = ("]", "<=", self.le) if self.le is not None else (")", "<", self.lt) if self.lt is not None else None
        if low and high:
            return f" in {low[0]}{low[2]:g}, {high[2]:g}{high[0]}"
        end = low or high
        return f" {end[1]} {end[2]:g}" if end else ""


def setting(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, ge: float | None = None,
            gt: float | None = None, le: float | None = None, lt: float | None = None,
            choices: Iterable[Any] | None = None, keys_of: type | None = None) -> Any:
    """A dataclass field whose values must also satisfy a range (``ge``/``gt``/``le``/``lt``; for a list,
    every item) or be one of ``choices``. ``keys_of``: for a ``dict`` field, its keys are fields of that
    config and each value is converted and checked as that field."""
    rule = Rule(ge, gt, le, lt, None if choices is None else tuple(choices))
    return dataclasses.field(default=default, default_factory=factory, metadata={"rule": rule, "keys_of": keys_of})


_SINGULAR = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}
_PLURAL = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}


def _is_config(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, TypedConfig)


def _items(hint: Any) -> tuple[Any, ...] | None:
    """The item types of a list or tuple type (one per place for a fixed tuple), else None."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        return args
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return args[:1]
        if any(a != args[0] for a in args):
            raise TypeError(f"a tuple field must hold items of one type, not {hint}")
        return args
    return None


def describe(hint: Any, rule: Rule | None = None, *, plural: bool = False) -> str:
    """What a value of type ``hint`` (with ``rule``) looks like, as error messages say it."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return f"{describe(inner[0], rule, plural=plural)} or null"
    choices = args if origin is Literal else rule.choices if rule is not None else None
    if choices is not None:
        return ("values from " if plural else "one of ") + ", ".join(map(str, choices))
    items = _items(hint)
    if items is not None:
        fixed = origin is tuple and typing.get_args(hint)[-1] is not Ellipsis
        return f"a list of {f'{len(items)} ' if fixed else ''}{describe(items[0], rule, plural=True)}"
    if origin is dict or hint is dict:
        return "mappings" if plural else "a mapping {key: value}"
    if _is_config(hint):
        return "sections" if plural else f"a section: a mapping of its keys ({', '.join(_field_names(hint))})"
    if hint is Any:
        return "values" if plural else "any value"
    return (_PLURAL if plural else _SINGULAR)[hint] + (rule.bounds() if rule is not None else "")


class _Mismatch(Exception):
    """Internal: the value does not fit the type (``why`` replaces the type's description when set)."""

    def __init__(self, why: str | None = None) -> None:
        self.why = why


def _to_type(value: Any, hint: Any, key: str, keys_of: type | None) -> Any:
    """``value`` as type ``hint``; raises _Mismatch (or FieldError from a section)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        return _to_type(value, next(a for a in args if a is not type(None)), key, keys_of)
    if origin is Literal:
        if isinstance(value, str) and value in args:
            return value
        raise _Mismatch
    items = _items(hint)
    if items is not None:
        fixed = origin is tuple and args[-1] is not Ellipsis
        if not isinstance(value, list | tuple) or (fixed and len(value) != len(args)):
            raise _Mismatch
        converted = [_to_type(v, items[0], key, None) for v in value]
        return converted if origin is list else tuple(converted)
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise _Mismatch
        return dict(value) if keys_of is None else _partial(keys_of, value, key)
    if _is_config(hint):
        if isinstance(value, hint):
            return value
        return hint() if value is None else hint.from_dict(value, section=key)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Mismatch
        if not math.isfinite(value):
            raise _Mismatch("a finite number")
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise _Mismatch
            return int(value)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise _Mismatch
        if not value.strip():
            raise _Mismatch("a non-empty string")
        return value
    raise TypeError(f"no conversion to {hint!r}")


def convert(value: Any, hint: Any, key: str, rule: Rule | None = None, keys_of: type | None = None) -> Any:
    """``value`` (as read from JSON/YAML, or given in code) converted to ``hint`` and checked against ``rule``.

    Only lossless conversions happen: an int where a float is expected, an integral float where an int is,
    a list where a tuple is, a mapping where a section is. Anything else raises :class:`FieldError` naming
    ``key``, the value and what is expected.
    """
    try:
        converted = _to_type(value, hint, key, keys_of)
    except _Mismatch as exc:
        raise invalid(key, value, exc.why or describe(hint, rule)) from None
    if rule is not None and converted is not None and not isinstance(converted, Mapping | TypedConfig):
        items = converted if isinstance(converted, list | tuple) else [converted]
        if not all(rule.allows(item) for item in items):
            raise invalid(key, value, describe(hint, rule))
    return converted


def _partial(cls: type[TypedConfig], data: Mapping[str, Any], key: str) -> dict[str, Any]:
    """Some fields of config ``cls`` (``model_overrides``), each converted and checked alone."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    out = {}
    for name, value in data.items():
        if name not in fields:
            raise _unknown(name, list(fields)).within(key)
        out[name] = convert(value, _hints(cls)[name], f"{key}.{name}", *_meta(fields[name]))
    return out


def _meta(f: dataclasses.Field) -> tuple[Rule | None, type | None]:
    """A field's rule and ``keys_of`` (see :func:`setting`)."""
    return f.metadata.get("rule"), f.metadata.get("keys_of")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def _plain(value: Any) -> Any:
    if isinstance(value, TypedConfig):
        return value.to_dict()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class TypedConfig:
    """Base of the typed configs (a dataclass deriving from it): building one converts and checks every
    field, then runs :meth:`validate`."""

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, convert(getattr(self, f.name), hints[f.name], f.name, *_meta(f)))
        self.validate()

    def validate(self) -> None:
        """Checks across fields, run once every field is converted; raise :func:`invalid`."""

    @classmethod
    def from_dict(cls: type[C], data: Any, *, source: str = "", section: str = "") -> C:
        """A config from a mapping (a JSON object, a YAML file, a section of one).

        Args:
            source: names the file or preset in errors (``"<source>: ..."``).
            section: the mapping's own key in an enclosing one; its keys are named ``section.key``.

        Raises:
            ConfigError: not a mapping, an unknown key (the known ones are listed) or a value of the wrong
                type, out of range or inconsistent with another.
        """
        try:
            if not isinstance(data, Mapping):
                raise ConfigError(f"{section or 'the content'} must be a mapping of keys (a JSON object or YAML "
                                  f"mapping), got {type(data).__name__}")
            known = _field_names(cls)
            for key in data:
                if key not in known:
                    raise _unknown(str(key), known)
            return cls(**data)
        except FieldError as exc:
            error: ConfigError = exc.within(section)
        except ConfigError as exc:
            error = exc
        if source:
            raise ConfigError(f"{source}: {error}") from None
        raise error from None

    def to_dict(self) -> dict[str, Any]:
        """Plain data (tuples as lists, sections as mappings), as a JSON or YAML file holds it."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def replace(self: C, **changes: Any) -> C:
        """A checked copy with ``changes`` applied (an unknown key is refused, naming the known ones)."""
        return type(self).from_dict({**self.to_dict(), **changes})


def field_type(cls: type[TypedConfig], key: str) -> tuple[Any, Rule | None]:
    """The type and rule of the dotted ``key`` (``train.lr``) in config ``cls``; a key inside an open mapping
    (``data.kwargs.size``) has type Any.

    Raises:
        FieldError: an unknown key, a sub-key of a plain value, or a whole section.
    """
    head, _, rest = key.partition(".")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    if head not in fields:
        raise _unknown(head, list(fields))
    hint, (rule, keys_of) = _hints(cls)[head], _meta(fields[head])
    if _is_config(hint):
        if not rest:
            raise FieldError(head, f" is a section, not a value; set one of its keys: {', '.join(_field_names(hint))}")
        try:
            return field_type(hint, rest)
        except FieldError as exc:
            raise exc.within(head) from None
    if rest and keys_of is not None:
        sub, _, deeper = rest.partition(".")
        known = _field_names(keys_of)
        if sub not in known:
            raise _unknown(sub, known).within(head)
        if deeper:
            raise FieldError(f"{head}.{sub}", " has no sub-keys")
        return _hints(keys_of)[sub], _meta(next(g for g in dataclasses.fields(keys_of) if g.name == sub))[0]
    if rest and (typing.get_origin(hint) is dict or hint is dict):
        return Any, None
    if rest:
        sub = rest.partition(".")[0]
        hosts = [f"{name}.{rest}" for name, f in fields.items()
                 if (of := _meta(f)[1]) is not None and sub in _field_names(of)]  # fmt: skip
        raise FieldError(head, " has no sub-keys" + (f"; did you mean {' or '.join(hosts)}?" if hosts else ""))
    return hint, rule


_TRUE, _FALSE, _NULL = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}, {"null", "none", ""}


def parse_text(text: str, hint: Any, key: str, rule: Rule | None = None) -> Any:
    """What ``--set key=text`` means for a field of type ``hint``: a number, true/false, null, a list or
    mapping in YAML flow style (``[1, 2]``, ``{a: 1}``), or the text itself. It is converted and checked
    when the config is built.

    Raises:
        FieldError: text that cannot mean a value of this type (named with ``key`` and the expected type).
    """
    stripped = text.strip()
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if stripped.lower() in _NULL:
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
        origin = typing.get_origin(hint)
    expected = describe(hint, rule)
    if hint is str or origin is Literal:
        return stripped
    if hint is bool:
        if stripped.lower() in _TRUE | _FALSE:
            return stripped.lower() in _TRUE
        raise invalid(key, text, expected)
    if hint in (int, float):
        for number in (int, float):
            try:
                return number(stripped)
            except ValueError:
                pass
        raise invalid(key, text, expected)
    try:
        return _yaml(stripped) if stripped else None
    except yaml.YAMLError:
        raise invalid(key, text, f"{expected}, in YAML flow style (lists as [1, 2])") from None


class _Loader(yaml.SafeLoader):
    """YAML with numbers read as YAML 1.2 does: ``1e-4`` is a number (YAML 1.1 wants ``1.0e-4``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+|\.[0-9_]+"
               r"(?:[eE][-+]?[0-9]+)?)$"),
    list("-+0123456789."),
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # a SafeLoader: plain data only


def load_yaml(text: str, source: str) -> Any:
    """The content of a YAML file; a key given twice in one mapping is refused (YAML would keep the last).

    Raises:
        ConfigError: not valid YAML (with the line), or a repeated key (with the key and both lines).
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _refuse_repeated_keys(node, source, "")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{source} is not valid YAML{at}; fix or replace the file") from None
    finally:
        loader.dispose()


def _refuse_repeated_keys(node: yaml.Node, source: str, path: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key = f"{path}.{key_node.value}" if path else key_node.value
            line = key_node.start_mark.line + 1
            if key_node.value in seen:
                raise ConfigError(f"{source}: key '{key}' is given twice (lines {seen[key_node.value]} and {line}); "
                                  "keep one")
            seen[key_node.value] = line
            _refuse_repeated_keys(value_node, source, key)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _refuse_repeated_keys(item, source, f"{path}[{i}]")
