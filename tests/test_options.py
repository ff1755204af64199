"""Plugin options: one type check for every metric's and defense's settings, from -o or Python."""

from __future__ import annotations

import json
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pytest
import torch

import locrob
from locrob import plugins
from locrob.configurable import describe_type, option_types
from locrob.errors import LocrobError, check
from locrob.metrics.local_robustness import LocalRobustness
from locrob.metrics.noise import GaussianNoise


def _every_option() -> list:
    """(plugin class, option) for every registered metric's and defense's option."""
    registries = plugins.registries()
    return [
        pytest.param(registry.get(name), option, id=f"{name}.{option}")
        for registry in (registries.metrics, registries.defenses)
        for name in registry
        for option in registry.get(name).option_names()
    ]


OPTIONS = _every_option()


def _numeric(hint: object) -> bool:
    """Whether ``hint`` asks for numbers somewhere (and never for a bool)."""
    if hint is bool:
        return False
    args = typing.get_args(hint)
    return hint in (int, float) or (any(map(_numeric, args)) and bool not in args)


def test_the_options_of_the_built_in_plugins_are_all_listed():
    names = {param.values[0].name for param in OPTIONS}
    assert {"local-robustness", "corruptions", "adversarial", "noise", "clever"} <= names
    assert {"pgd", "parseval", "laplacian", "l2nn"} <= names


@pytest.mark.parametrize(("cls", "option"), OPTIONS)
def test_a_value_of_a_wrong_type_names_the_option_its_type_and_an_example(cls, option):
    with pytest.raises(LocrobError) as refused:
        cls.create(**{option: object()})
    message = str(refused.value)
    expected = describe_type(option_types(cls)[option])
    assert f"{cls.kind} '{cls.name}' option '{option}' expects {expected}, like " in message
    example = message.split(", like ", 1)[1].rsplit("; got ", 1)[0]
    try:  # the example has the right type; a value check (a range, a name) may refuse it
        cls.create(**{option: json.loads(example)})
    except LocrobError as err:
        assert "expects" not in str(err)


@pytest.mark.parametrize(
    ("cls", "option"), [p for p in OPTIONS if _numeric(option_types(p.values[0])[p.values[1]])]
)
def test_a_bool_is_not_a_number(cls, option):
    with pytest.raises(LocrobError, match=f"option '{option}' expects"):
        cls.create(**{option: True})


@pytest.mark.parametrize(("cls", "option"), OPTIONS)
def test_defaults_pass_and_survive_a_json_round_trip(cls, option):
    # settings are recorded as JSON (reports, checkpoints) and read back through create
    recorded = json.loads(json.dumps(cls().settings()[option]))
    again = cls.create(**{option: recorded}).settings()[option]
    assert json.loads(json.dumps(again)) == recorded


@pytest.mark.parametrize(
    ("metric", "option", "given", "expected"),
    [
        ("local-robustness", "radii", 0.5, [0.5]),
        ("local-robustness", "at", 0.5, [0.5]),
        ("local-robustness", "clamp", [0, 1], (0, 1)),
        ("local-robustness", "norm", 2, 2),
        ("noise", "snr_db", 10, [10]),
        ("corruptions", "severities", 3, [3]),
        ("corruptions", "corruptions", "fog", ["fog"]),
        (
            "adversarial",
            "attacks",
            {"attack": "FGSM", "eps": 0.03},
            [{"attack": "FGSM", "eps": 0.03}],
        ),
    ],
)
def test_a_scalar_where_a_list_is_expected_is_a_list_of_one(metric, option, given, expected):
    made = plugins.registries().metrics.get(metric).create(**{option: given})
    assert getattr(made, option) == expected


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"clamp": 0.5}, "'clamp' expects a list of 2 numbers or null"),
        ({"radii": ["far"]}, "'radii' expects a list of numbers"),
        ({"max_examples": 2.5}, "'max_examples' expects an integer or null, like 1; got 2.5"),
        ({"split": 1}, "'split' expects a string, like \"train\""),
    ],
)
def test_direct_construction_is_checked_the_same_way(options, message):
    with pytest.raises(LocrobError, match=message):
        LocalRobustness(**options)
    assert GaussianNoise(snr_db=5).snr_db == [5]


@dataclass
class Kinds(locrob.Metric):
    """Every kind of annotation the check supports."""

    name = "kinds"
    mode: Literal["fast", "slow"] = "fast"
    pair: tuple[float, float] = (0.0, 1.0)
    many: Sequence[int] = (1,)
    steps: tuple[int, ...] = (1, 2)
    table: Mapping[str, float] = field(default_factory=dict)
    maybe: int | None = None
    flag: bool = False
    anything: typing.Any = None
    words: list[str] | str = "fog"
    maybe_list: list[typing.Any] | None = None


@pytest.mark.parametrize(
    ("option", "given", "expected"),
    [
        ("mode", "slow", "slow"),
        ("pair", [0, 2.5], (0, 2.5)),
        ("pair", ["-inf", "Infinity"], (-float("inf"), float("inf"))),  # -o reads inf as text
        ("pair", np.array([0.25, 1.0]), (0.25, 1.0)),
        ("many", torch.tensor([3, 4]), [3, 4]),
        ("maybe", np.int64(3), 3),
        ("words", "fog", "fog"),  # fits str as it is: not made a list
        ("words", ["fog", "snow"], ["fog", "snow"]),
        ("maybe_list", None, None),  # fits None as it is: not [None]
        ("many", 3, [3]),
        ("many", (4, 5), [4, 5]),
        ("steps", 7, (7,)),
        ("table", {"a": 1}, {"a": 1}),
        ("maybe", None, None),
        ("maybe", 3, 3),
        ("flag", True, True),
        ("anything", {1, 2}, {1, 2}),
    ],
)
def test_each_kind_of_annotation_accepts_its_values(option, given, expected):
    assert getattr(Kinds.create(**{option: given}), option) == expected


@pytest.mark.parametrize(
    ("option", "given", "message"),
    [
        ("mode", "medium", 'one of "fast", "slow"'),
        ("pair", [1.0], "a list of 2 numbers"),
        ("pair", [0.0, "big"], "a list of 2 numbers"),
        ("pair", [0.0, "+-inf"], "a list of 2 numbers"),
        ("many", ["x"], r"a list of integers \(or an integer\)"),
        ("table", {"a": "b"}, "a dict"),
        ("table", [("a", 1)], "a dict"),
        ("maybe", "3", "an integer or null"),
        ("flag", 1, "true or false"),
    ],
)
def test_each_kind_of_annotation_refuses_other_values(option, given, message):
    with pytest.raises(LocrobError, match=f"metric 'kinds' option '{option}' expects {message}"):
        Kinds.create(**{option: given})


def test_a_subclass_checks_only_values_the_types_come_first():
    @dataclass
    class Scaled(locrob.Defense):
        name = "scaled"
        factor: float = 1.0

        def __post_init__(self) -> None:  # no super() call: the type check runs regardless
            check(self.factor > 0, self.name, f"factor must be > 0, got {self.factor}")

    assert Scaled(factor=2).factor == 2
    with pytest.raises(LocrobError, match="factor must be > 0"):
        Scaled(factor=-1)
    # without the type check first, "2" > 0 would be a TypeError in __post_init__
    with pytest.raises(LocrobError, match="defense 'scaled' option 'factor' expects a number"):
        Scaled(factor="2")


UNTRAINED = pytest.mark.filterwarnings("ignore:model 'small-cnn' is an untrained architecture")


def evaluate_alpha(locrob_cli, out, *options: str) -> tuple[int, str, str]:
    """``locrob evaluate`` of an untrained small-cnn by local-robustness, with ``-o`` options."""
    run = ["evaluate", "--model", "small-cnn", "--metrics", "local-robustness", "--out", str(out)]
    return locrob_cli(*run, *(arg for option in options for arg in ("-o", option)))


@UNTRAINED
def test_cli_reads_a_scalar_as_a_list_of_one(locrob_cli, tmp_path):
    code, _, err = evaluate_alpha(
        locrob_cli,
        tmp_path,
        *("local-robustness.radii=0.5", "local-robustness.at=0.5"),
        *("local-robustness.max_examples=2", "local-robustness.n_draws=2"),
    )
    assert code == 0, err
    result = json.loads((tmp_path / "report.json").read_text())["metrics"]["local-robustness"]
    assert result["settings"]["radii"] == [0.5] and result["settings"]["at"] == [0.5]
    assert "alpha@0.5" in result["summary"]


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("local-robustness.max_examples=many", "option 'max_examples' expects an integer or null"),
        ("local-robustness.radii=true", "option 'radii' expects a list of numbers"),
    ],
)
@UNTRAINED
def test_cli_refuses_a_wrong_type_in_one_line(locrob_cli, tmp_path, option, message):
    code, _, err = evaluate_alpha(locrob_cli, tmp_path, option)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
