"""The seeded train / evaluation partition every domain uses."""

from __future__ import annotations

import random


def seeded_split(items: list, seed: int, n_eval: int) -> tuple[list, list]:
    """(train, eval): the items shuffled with `seed`; the first `n_eval` are held out."""
    items = list(items)
    random.Random(seed).shuffle(items)
    return items[n_eval:], items[:n_eval]
