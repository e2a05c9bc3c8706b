"""Sweeps expanded into points: ids, parameters, the seeded subset, and one clear error for a value
outside a parameter's range, at plan time."""

import itertools

import pytest

from merges.registry import get_method
from pipeline.sweeps import SweepError, expand

EXPERTS = {"math": {}, "code": {}, "if": {}}


def config(merges: dict, sweeps: dict) -> dict:
    return {"models": {"experts": EXPERTS}, "merges": merges, "sweeps": sweeps}


def test_a_grid_is_every_combination_in_order_with_readable_ids():
    merges = {"task_arithmetic": {"method": "task_arithmetic", "params": {"scale": 0.4}},
              "ties": {"method": "ties", "params": {"scale": 1.0}}}  # fmt: skip
    grid = {"density": [0.1, 0.2, 0.4], "variant": ["official", "mergekit"]}
    sweeps = {"task_arithmetic": {"grid": {"scale": [0.2, 0.4, 0.6, 0.8, 1.0]}},
              "ties": {"grid": grid}}  # fmt: skip
    points = expand(config(merges, sweeps))
    ta = points["task_arithmetic"]
    assert [p.id for p in ta] == [f"task_arithmetic.scale={v}" for v in (0.2, 0.4, 0.6, 0.8, 1.0)]
    assert [p.params for p in ta] == [{"scale": v} for v in (0.2, 0.4, 0.6, 0.8, 1.0)]
    ties = points["ties"]
    assert [p.values for p in ties] == [
        (("density", d), ("variant", v)) for d, v in itertools.product(*grid.values())
    ]
    assert ties[1].id == "ties.density=0.1,variant=mergekit"
    assert ties[1].params == {"scale": 1.0, "density": 0.1, "variant": "mergekit"}
    parsed = get_method("ties").parse_params(ties[1].params, list(EXPERTS))
    assert parsed.density == [0.1, 0.1, 0.1] and parsed.variant == "mergekit"
    assert merges["ties"]["params"] == {"scale": 1.0}  # the merge's own entry is left alone


def test_a_seeded_subset_is_a_stable_part_of_the_grid():
    merges = {"ties": {"method": "ties"}}
    grid = {"density": [0.1, 0.2, 0.3, 0.4], "scale": [0.5, 0.75, 1.0]}

    def ids(seed, n=5):
        return [p.id for p in expand(config(merges, {"ties": {"grid": grid, "sample": {"n": n, "seed": seed}}}))["ties"]]  # fmt: skip

    every = [p.id for p in expand(config(merges, {"ties": {"grid": grid}}))["ties"]]
    assert len(every) == 12 and len(ids(0)) == 5 and len(set(ids(0))) == 5
    assert ids(0) == ids(0) and ids(0) != ids(1)
    assert ids(0) == [i for i in every if i in ids(0)]  # in grid order
    assert ids(0, n=50) == every


def test_one_experts_value_of_a_per_expert_parameter():
    merges = {"linear": {"method": "linear", "params": {"weight": {"math": 1.0, "code": 1.0, "if": 2.0}}},
              "ties": {"method": "ties", "params": {"density": 0.3}}}  # fmt: skip
    sweeps = {
        "linear": {"grid": {"weight.if": [1.0, 3.0]}},
        "ties": {"grid": {"density.code": [0.5]}},
    }
    points = expand(config(merges, sweeps))
    assert [p.id for p in points["linear"]] == ["linear.weight.if=1.0", "linear.weight.if=3.0"]
    assert points["linear"][1].params == {"weight": {"math": 1.0, "code": 1.0, "if": 3.0}}
    (tp,) = points["ties"]
    assert tp.params == {"density": {"math": 0.3, "code": 0.5, "if": 0.3}}
    assert get_method("ties").parse_params(tp.params, list(EXPERTS)).density == [0.3, 0.5, 0.3]


@pytest.mark.parametrize(
    "merges,sweep,message",
    [
        ({"ties": {"method": "ties"}}, {"ties": {"grid": {"density": [0.2, 1.5]}}},
         "config error at sweeps.ties.grid.density: 1.5 is outside the range of 'density' of "
         "method 'ties': 0 < density ≤ 1"),
        ({"r": {"method": "regmean"}}, {"r": {"grid": {"alpha": [-0.1]}}},
         "sweeps.r.grid.alpha: -0.1 is outside the range of 'alpha' of method 'regmean': "
         "0 ≤ alpha ≤ 1"),
        ({"t": {"method": "ties"}}, {"t": {"grid": {"variant": ["mine"]}}},
         "one of 'official', 'mergekit'"),
        ({"t": {"method": "ties"}}, {"x": {"grid": {"density": [0.2]}}},
         "sweeps.x: no merge 'x' in merges; sweep one of: t"),
        ({"t": {"method": "ties"}}, {"t": {"grid": {"lambda": [0.2]}}},
         "sweeps.t.grid.lambda: method 'ties' has no parameter 'lambda'"),
        ({"t": {"method": "ties"}}, {"t": {"grid": {"scale.math": [0.2]}}},
         "'scale' is one value for all experts"),
        ({"t": {"method": "ties"}}, {"t": {"grid": {"density.chat": [0.2]}}},
         "merge 't' has no expert 'chat'"),
    ],
)  # fmt: skip
def test_a_bad_sweep_is_one_error_naming_the_merge_parameter_and_range(merges, sweep, message):
    with pytest.raises(SweepError) as e:
        expand(config(merges, sweep))
    assert message in str(e.value)
