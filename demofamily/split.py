"""The seeded train / dev / evaluation partition every domain uses."""

from __future__ import annotations

import random
from typing import NamedTuple


class Split(NamedTuple):
    """Three disjoint parts: `train` (training and calibration), `dev` (the validation suite, where
    sweeps select parameters) and `eval` (the test suite)."""

    train: list
    dev: list
    eval: list


def seeded_split(items: list, seed: int, n_eval: int, n_dev: int = 0) -> Split:
    """The items shuffled with `seed`: the first `n_eval` are the evaluation split, the next `n_dev`
    the dev split, the rest the training split."""
    items = list(items)
    random.Random(seed).shuffle(items)
    return Split(items[n_eval + n_dev :], items[n_eval : n_eval + n_dev], items[:n_eval])
