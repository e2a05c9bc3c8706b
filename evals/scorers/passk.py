"""pass@k with the unbiased estimator 1 − C(n−c, k)/C(n, k) (Chen et al. 2021), via EvalPlus."""

from __future__ import annotations

import numpy as np


def pass_at_k(n: list[int], c: list[int], k: int) -> float:
    """Mean over items of the unbiased pass@k; every item needs n ≥ k samples."""
    from evalplus.eval import estimate_pass_at_k

    return float(np.mean(estimate_pass_at_k(np.array(n), np.array(c), k)))


def passk_metrics(n: list[int], c: list[int], ks: list[int]) -> dict[str, float]:
    return {f"pass@{k}": pass_at_k(n, c, k) for k in ks if min(n) >= k}


def powers_of_two(n: int) -> list[int]:
    """1, 2, 4, ... up to n, and n itself."""
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    return ks if ks[-1] == n else [*ks, n]
