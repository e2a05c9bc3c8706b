"""Entry of `python -m evals bench-score`; the scoring benchmark lives in `devtools.score_bench`."""

from devtools.score_bench import bench_score

__all__ = ["bench_score"]
