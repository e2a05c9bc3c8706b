"""Scorers by name; each maps (items by id, sample rows) to (metrics, per-item details)."""

from __future__ import annotations


def get_scorer(name: str):
    if name == "aime":
        from evals.scorers.aime import score
    elif name in ("evalplus_base", "evalplus_plus"):
        from evals.scorers.evalplus import score_base as score

        if name == "evalplus_plus":
            from evals.scorers.evalplus import score_plus as score
    elif name == "ifeval":
        from evals.scorers.ifeval import score
    else:
        raise KeyError(name)
    return score
