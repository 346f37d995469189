"""One table of group options (optim/options.py): SymOpt, a spec's OverrideSpec and the presets'
override keys agree with it, its `reads` column matches what each rule's step reads, and NorMuon
is asked for one way (rule "normuon"), old checkpoints with the removed flag included."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from symopt_core import ConfigError, SymOpt
from symopt_core.optim import RULES, get_rule
from symopt_core.optim.options import GROUP_OPTIONS, Choices, Flag, GroupOption, Pair, Range, readers_of
from symopt_core.presets import OVERRIDE_KEYS, build_optimizer
from symopt_core.spec import OverrideSpec

OVERRIDABLE = [name for name, option in GROUP_OPTIONS.items() if option.override]
OWN_SPEC_KEYS = {"rule", "lr", "lr_mult", "lr_scale", "eo_parity"}  # lr keys, the rule, a preset key


def matrix() -> torch.nn.Parameter:
    return torch.nn.Parameter(
        torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    )


def symopt_accepts(name: str, value: Any) -> bool:
    try:
        SymOpt([matrix()], **{name: value})
    except ConfigError:
        return False
    return True


def spec_accepts(name: str, value: Any) -> bool:
    try:
        OverrideSpec.model_validate({name: value})
    except ValidationError:
        return False
    return True


def probes(option: GroupOption) -> list[tuple[Any, bool]]:
    """Values at and beyond the edges of what the table allows, each with whether it does."""
    values = option.values
    if isinstance(values, Range):
        found = [(values.low, not values.open_low), (values.low - 1, False)]
        if values.high != float("inf"):
            found += [(values.high, not values.open_high), (values.high + 1, False)]
        if values.integer:
            found += [(values.low + 1, True), (values.low + 1.5, False)]
        return found
    if isinstance(values, Choices):
        return [(choice, True) for choice in values.values] + [("nonsense", False)]
    if isinstance(values, Flag):
        return [(True, True), (False, True), (2, False)]
    if isinstance(values, Pair):
        inside = values.each.low
        return [((inside, inside), True), ((inside, values.each.high), not values.each.open_high),
                ((inside - 1, inside), False), ((inside,), False)]  # fmt: skip
    return []  # checked where it is read (layout: test_layout.py)


def other_value(option: GroupOption) -> Any:
    """A valid value that is not the default."""
    values = option.values
    if isinstance(values, Choices):
        return next(v for v in values.values if v != option.default)
    if isinstance(values, Flag):
        return not option.default
    if isinstance(values, Pair):
        return (0.5, 0.5)
    assert isinstance(values, Range)
    if values.high != float("inf"):
        middle = (values.low + values.high) / 2
        return int(middle) if values.integer else middle
    return option.default + 1 if values.integer else option.default * 2 + 0.1


def test_symopt_takes_its_defaults_and_keywords_from_the_table():
    defaults = {name: option.default for name, option in GROUP_OPTIONS.items()}
    assert SymOpt([matrix()]).defaults == {"rule": "polar", **defaults}
    chosen = SymOpt([matrix()], lr=0.1, rule="row_norm", momentum=0.5).defaults
    assert chosen == {**defaults, "rule": "row_norm", "lr": 0.1, "momentum": 0.5}
    with pytest.raises(
        ConfigError, match="Invalid option\\(s\\): momentun; valid options: rule, lr, momentum"
    ):
        SymOpt([matrix()], momentun=0.9)


@pytest.mark.parametrize("name", [name for name, option in GROUP_OPTIONS.items() if probes(option)])
def test_symopt_and_the_spec_take_the_values_the_table_allows(name):
    option = GROUP_OPTIONS[name]
    for value, allowed in probes(option):
        assert symopt_accepts(name, value) == allowed, (name, value)
        if option.override:
            assert spec_accepts(name, value) == allowed, (name, value)


def test_the_spec_and_the_presets_take_the_tables_override_keys():
    assert set(OverrideSpec.model_fields) == OWN_SPEC_KEYS | set(OVERRIDABLE)
    assert tuple(OVERRIDABLE) == OVERRIDE_KEYS
    for name in OVERRIDABLE:
        assert OverrideSpec.model_fields[name].description == GROUP_OPTIONS[name].doc


@pytest.mark.parametrize("rule", list(RULES))
def test_a_rule_reads_no_option_the_table_says_it_does_not(rule):
    """Changing an option outside the rule's `reads` leaves its two steps bit for bit the same."""
    readers = readers_of(get_rule(rule))
    unread = [o for o in GROUP_OPTIONS.values() if not o.reads & readers and o.values is not None]
    assert unread  # every rule skips some option (adamw: momentum; polar: betas)

    def two_steps(**options: Any) -> torch.Tensor:
        p = matrix()
        optimizer = SymOpt([p], rule=rule, weight_decay=0.1, **options)
        for seed in (1, 2):
            p.grad = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
            optimizer.step()
        return p.detach()

    base = two_steps()
    for option in unread:
        assert torch.equal(two_steps(**{option.name: other_value(option)}), base), option.name


def test_normuon_is_a_rule_and_the_flag_names_it():
    with pytest.raises(
        ConfigError, match='normuon: True \\(removed; NorMuon is the rule "normuon": give rule="normuon"'
    ):
        SymOpt([matrix()], normuon=True)
    with pytest.raises(ConfigError, match="Invalid option normuon: False"):
        SymOpt([{"params": [matrix()], "normuon": False}])
    with pytest.raises(ValidationError, match='normuon was removed: NorMuon is the rule "normuon"'):
        OverrideSpec.model_validate({"normuon": True})
    # Stored specs dumped every field: an unset flag still loads, and dumps without it.
    assert OverrideSpec.model_validate({"normuon": None, "momentum": 0.9}).model_dump(exclude_none=True) == {
        "momentum": 0.9
    }
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with pytest.raises(ConfigError, match="Invalid override key for 'all': normuon"):
        build_optimizer(model, "muon", overrides={"all": {"normuon": True}})


def run(optimizer: SymOpt, p: torch.nn.Parameter, seeds: tuple[int, ...]) -> None:
    for seed in seeds:
        p.grad = torch.randn(p.shape, dtype=p.dtype, generator=torch.Generator().manual_seed(seed))
        optimizer.step()


def test_a_checkpoint_with_the_normuon_flag_resumes_as_rule_normuon():
    """polar with normuon=True was rule "normuon" step for step: such a checkpoint resumes as it."""
    p = matrix()
    trained = SymOpt([p], rule="normuon", lr=0.05)
    run(trained, p, (1, 2))
    saved = copy.deepcopy(trained.state_dict())
    old = copy.deepcopy(saved)
    old["param_groups"][0].update(rule="polar", normuon=True)  # as the flag's checkpoints were written
    q = torch.nn.Parameter(p.detach().clone())
    resumed = SymOpt([q], rule="polar", lr=0.05)
    resumed.load_state_dict(old)
    assert resumed.param_groups[0]["rule"] == "normuon"
    assert "normuon" not in resumed.param_groups[0]
    run(trained, p, (3,))
    run(resumed, q, (3,))
    assert torch.equal(p, q)
    # An unset flag is dropped; on a rule no other rule equals, the error says what to do.
    off = copy.deepcopy(saved)
    off["param_groups"][0].update(normuon=False)
    resumed.load_state_dict(off)
    assert resumed.param_groups[0]["rule"] == "normuon"
    assert "normuon" not in resumed.param_groups[0]
    row_norm = copy.deepcopy(saved)
    row_norm["param_groups"][0].update(rule="row_norm", normuon=True)
    with pytest.raises(ConfigError, match="rule 'row_norm' with normuon=True, which no longer exists"):
        SymOpt([torch.nn.Parameter(q.detach().clone())], rule="row_norm").load_state_dict(row_norm)
