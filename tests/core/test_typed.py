"""The typed-config engine (``clip2depth.typed``): conversion, ranges, descriptions and errors in one wording."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from clip2depth.errors import ConfigError
from clip2depth.models.config import ModelConfig
from clip2depth.models.depthclip import DepthCLIPConfig
from clip2depth.training.config import TrainSection
from clip2depth.typed import (
    FieldError,
    Rule,
    TypedConfig,
    convert,
    describe,
    field_type,
    invalid,
    load_yaml,
    parse_text,
    setting,
)


@dataclass
class Inner(TypedConfig):
    size: tuple[int, int] = setting((2, 3), ge=1)
    ratio: float = setting(0.5, ge=0, lt=1)


@dataclass
class Outer(TypedConfig):
    name: str = "x"
    mode: Literal["a", "b"] = "a"
    count: int | None = setting(None, ge=1)
    tags: list[str] = field(default_factory=list)
    flag: bool = False
    kind: str | None = setting(None, choices=("p", "q"))
    extra: dict[str, Any] = field(default_factory=dict)
    over: dict[str, Any] = setting(factory=dict, keys_of=Inner)
    inner: Inner = field(default_factory=Inner)

    def validate(self) -> None:
        if self.flag and self.count is not None and self.count > 10:
            raise invalid("count", self.count, "at most 10 when flag is set")


@pytest.mark.parametrize(("hint", "rule", "text"), [
    (int, Rule(ge=1), "an integer >= 1"),
    (int, Rule(ge=0), "an integer >= 0"),
    (float, Rule(gt=0), "a number > 0"),
    (float, Rule(le=2.5), "a number <= 2.5"),
    (float, Rule(lt=1), "a number < 1"),
    (float, Rule(ge=0, le=1), "a number in [0, 1]"),
    (float, Rule(ge=0, lt=1), "a number in [0, 1)"),
    (float, Rule(gt=0, le=1), "a number in (0, 1]"),
    (float, None, "a number"),
    (bool, None, "true/false"),
    (str, None, "a string"),
    (bool | None, None, "true/false or null"),
    (int | None, Rule(ge=1), "an integer >= 1 or null"),
    (list[int], Rule(ge=1), "a list of integers >= 1"),
    (list[str], None, "a list of strings"),
    (list[int] | None, None, "a list of integers or null"),
    (tuple[int, int], Rule(gt=0), "a list of 2 integers > 0"),
    (tuple[float, ...], None, "a list of numbers"),
    (Literal["a", "b"], None, "one of a, b"),
    (str | None, Rule(choices=("p", "q")), "one of p, q or null"),
    (dict[str, Any], None, "a mapping {key: value}"),
    (Inner, None, "a section: a mapping of its keys (size, ratio)"),
])
def test_describe_words_every_type_once(hint, rule, text):
    assert describe(hint, rule) == text


@pytest.mark.parametrize(("value", "hint", "expected"), [
    (3, float, 3.0),
    (8.0, int, 8),
    ([1, 2], tuple[int, int], (1, 2)),
    ((1, 2), list[int], [1, 2]),
    (None, int | None, None),
    ([0.5, 1], tuple[float, ...], (0.5, 1.0)),
    ("b", Literal["a", "b"], "b"),
    (True, bool, True),
])
def test_convert_makes_only_lossless_conversions(value, hint, expected):
    got = convert(value, hint, "k")
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(("value", "hint", "message"), [
    (2.5, int, "k=2.5 is invalid: expected an integer"),
    (True, int, "k=True is invalid: expected an integer"),
    (True, float, "k=True is invalid: expected a number"),
    ("1", int, "k='1' is invalid: expected an integer"),
    (1, bool, "k=1 is invalid: expected true/false"),
    ("yes", bool | None, "k='yes' is invalid: expected true/false or null"),
    (float("nan"), float, "k=nan is invalid: expected a finite number"),
    (float("inf"), float | None, "k=inf is invalid: expected a finite number"),
    ([1, 2, 3], tuple[int, int], "k=[1, 2, 3] is invalid: expected a list of 2 integers"),
    ("3,6,9", list[int], "k='3,6,9' is invalid: expected a list of integers"),
    ([1, "2"], list[int], "k=[1, '2'] is invalid: expected a list of integers"),
    ("c", Literal["a", "b"], "k='c' is invalid: expected one of a, b"),
    ("  ", str, "k='  ' is invalid: expected a non-empty string"),
    (5, str, "k=5 is invalid: expected a string"),
    ([1], dict[str, Any], "k=[1] is invalid: expected a mapping {key: value}"),
])
def test_convert_refuses_what_does_not_fit_naming_key_value_and_type(value, hint, message):
    with pytest.raises(FieldError) as info:
        convert(value, hint, "k")
    assert str(info.value) == message


@pytest.mark.parametrize(("value", "rule", "ok"), [
    (1, Rule(ge=1), True), (0, Rule(ge=1), False),
    (0.0, Rule(gt=0), False), (1e-9, Rule(gt=0), True),
    (1.0, Rule(ge=0, le=1), True), (1.0, Rule(ge=0, lt=1), False),
    (-0.1, Rule(ge=0, le=1), False),
])
def test_ranges_are_checked_at_their_bounds(value, rule, ok):
    if ok:
        assert convert(value, float, "k", rule) == value
    else:
        with pytest.raises(FieldError, match=re.escape(f"expected a number{rule.bounds()}")):
            convert(value, float, "k", rule)


def test_a_list_range_applies_to_every_item():
    assert convert([1, 5], list[int], "k", Rule(ge=1)) == [1, 5]
    with pytest.raises(FieldError, match=r"k=\[1, 0\] is invalid: expected a list of integers >= 1"):
        convert([1, 0], list[int], "k", Rule(ge=1))


def test_choices_are_checked_and_null_stays_allowed_when_optional():
    assert Outer(kind="p").kind == "p" and Outer(kind=None).kind is None
    with pytest.raises(FieldError, match="kind='r' is invalid: expected one of p, q or null"):
        Outer(kind="r")


def test_from_dict_names_section_keys_and_source():
    with pytest.raises(ConfigError) as info:
        Outer.from_dict({"inner": {"ratio": 1.0}}, source="f.yaml")
    assert str(info.value) == "f.yaml: inner.ratio=1.0 is invalid: expected a number in [0, 1)"
    with pytest.raises(ConfigError) as info:
        Outer.from_dict({"inner": {"sise": [1, 1]}}, source="f.yaml", section="top")
    assert str(info.value) == "f.yaml: unknown key 'top.inner.sise'; known: size, ratio"
    with pytest.raises(ConfigError, match="^unknown key 'nme'; known: name, mode, count"):
        Outer.from_dict({"nme": "y"})
    with pytest.raises(ConfigError, match="^f.yaml: inner must be a mapping of keys .*JSON object.*got int"):
        Outer.from_dict({"inner": 3}, source="f.yaml")
    with pytest.raises(ConfigError, match="^the content must be a mapping of keys"):
        Outer.from_dict([1, 2])


def test_cross_field_checks_use_the_same_wording_and_prefix():
    with pytest.raises(ConfigError) as info:
        Outer.from_dict({"flag": True, "count": 11}, section="s")
    assert str(info.value) == "s.count=11 is invalid: expected at most 10 when flag is set"


def test_a_mapping_of_another_configs_fields_is_checked_field_by_field():
    assert Outer(over={"ratio": 0}).over == {"ratio": 0.0}
    with pytest.raises(FieldError, match=r"over.size=\[0, 1\] is invalid: expected a list of 2 integers >= 1"):
        Outer(over={"size": [0, 1]})
    with pytest.raises(FieldError, match="unknown key 'over.bad'; known: size, ratio"):
        Outer(over={"bad": 1})


def test_a_section_is_built_from_a_mapping_and_null_means_defaults():
    outer = Outer.from_dict({"inner": {"size": [4, 5]}, "tags": ["t"]})
    assert outer.inner == Inner(size=(4, 5)) and outer.tags == ["t"]
    assert Outer.from_dict({"inner": None}).inner == Inner()


def test_to_dict_gives_plain_data_and_replace_checks_again():
    outer = Outer(inner=Inner(size=(4, 5)), tags=["t"])
    assert outer.to_dict()["inner"] == {"size": [4, 5], "ratio": 0.5}
    assert Outer.from_dict(outer.to_dict()) == outer
    assert outer.replace(count=3).count == 3 and outer.count is None
    with pytest.raises(FieldError, match="count=0 is invalid"):
        outer.replace(count=0)
    with pytest.raises(ConfigError, match="unknown key 'cnt'"):
        outer.replace(cnt=3)


def test_field_type_walks_sections_and_open_mappings():
    assert field_type(Outer, "count") == (int | None, Rule(ge=1))
    assert field_type(Outer, "inner.size") == (tuple[int, int], Rule(ge=1))
    assert field_type(Outer, "extra.anything") == (Any, None)
    assert field_type(Outer, "over.ratio") == (float, Rule(ge=0, lt=1))
    for key, message in [
        ("inner", "inner is a section, not a value; set one of its keys: size, ratio"),
        ("inner.nope", "unknown key 'inner.nope'; known: size, ratio"),
        ("over.nope", "unknown key 'over.nope'; known: size, ratio"),
        ("over.size.x", "over.size has no sub-keys"),
        ("count.x", "count has no sub-keys"),
        ("count.size", "count has no sub-keys; did you mean over.size?"),  # the mapping whose keys include it
        ("nope", "unknown key 'nope'; known: name, mode"),
    ]:
        with pytest.raises(FieldError) as info:
            field_type(Outer, key)
        assert str(info.value).startswith(message)
    with pytest.raises(FieldError) as info:
        field_type(Outer, "count.x")
    assert "did you mean" not in str(info.value)  # no field anywhere has that key


@pytest.mark.parametrize(("text", "hint", "expected"), [
    ("1e-4", float, 1e-4),
    ("8", float, 8),
    ("8.0", int, 8.0),  # an integral number; the config makes it an int
    (" yes ", bool, True),
    ("off", bool, False),
    ("0", bool, False),
    ("null", int | None, None),
    ("None", str | None, None),
    ("", list[int] | None, None),
    ("[1, 2]", tuple[int, int], [1, 2]),
    ("[1e-3, 2]", list[float], [1e-3, 2]),
    ("{a: 1}", dict[str, Any], {"a": 1}),
    (" text with spaces ", str, "text with spaces"),
    ("bf16", Literal["fp32", "bf16"], "bf16"),
])
def test_set_text_means_the_fields_type(text, hint, expected):
    assert parse_text(text, hint, "k") == expected


@pytest.mark.parametrize(("text", "hint", "rule", "message"), [
    ("abc", float, Rule(gt=0), "k='abc' is invalid: expected a number > 0"),
    ("true", int, None, "k='true' is invalid: expected an integer"),
    ("maybe", bool, None, "k='maybe' is invalid: expected true/false"),
    ("[1,", list[int], Rule(ge=1), "k='[1,' is invalid: expected a list of integers >= 1, in YAML flow style"),
])
def test_set_text_that_cannot_mean_the_type_is_refused(text, hint, rule, message):
    with pytest.raises(FieldError) as info:
        parse_text(text, hint, "k", rule)
    assert str(info.value).startswith(message)


def test_yaml_reads_numbers_as_yaml_1_2_does():
    assert load_yaml("lr: 1e-4\nsteps: 1e3\nlist: [2e-1, 1]\nname: e5\n", "f") == {
        "lr": 1e-4, "steps": 1000.0, "list": [0.2, 1], "name": "e5"}


def test_yaml_refuses_a_key_given_twice_with_its_lines():
    with pytest.raises(ConfigError) as info:
        load_yaml("a: 1\nb:\n  c: 1\n  d: 2\n  c: 3\n", "f.yaml")
    assert str(info.value) == "f.yaml: key 'b.c' is given twice (lines 3 and 5); keep one"
    with pytest.raises(ConfigError, match=r"key 'items\[1\].x' is given twice \(lines 3 and 3\)"):
        load_yaml("items:\n  - {x: 1}\n  - {x: 1, x: 2}\n", "f.yaml")
    assert load_yaml("a: {c: 1}\nb: {c: 1}\n", "f") == {"a": {"c": 1}, "b": {"c": 1}}  # same key, other mapping


def test_invalid_yaml_names_the_line():
    with pytest.raises(ConfigError, match=r"^f.yaml is not valid YAML \(line 2\)"):
        load_yaml("a: 1\nb: c: d\n", "f.yaml")


def test_model_baseline_and_recipe_configs_speak_one_wording():
    messages = []
    for build in (lambda: ModelConfig(mirror_length=0), lambda: DepthCLIPConfig(temperature=0),
                  lambda: TrainSection(batch_size=0), lambda: ModelConfig(max_depth="ten")):
        with pytest.raises(FieldError) as info:
            build()
        messages.append(str(info.value))
    assert messages == [
        "mirror_length=0 is invalid: expected an integer >= 1",
        "temperature=0 is invalid: expected a number > 0",
        "batch_size=0 is invalid: expected an integer >= 1",
        "max_depth='ten' is invalid: expected a number > 0",
    ]
