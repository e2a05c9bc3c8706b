"""One module per method; importing a module registers it (one line per method)."""

from merges.methods import (  # noqa: F401
    ace,
    actmat,
    average,
    dare,
    iso_c,
    iso_cts,
    regmean,
    task_arithmetic,
    ties,
    tsv,
)
