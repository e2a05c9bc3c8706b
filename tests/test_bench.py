"""The benchmark's instruments: what `devtools.measure` reports and what the RL-like deltas look like."""

import sys

import pytest
import torch

from devtools.measure import run_measured
from devtools.model_bench import MERGEKIT
from devtools.model_bench_inputs import rl_delta


def test_measure_reports_anonymous_memory_and_bytes_written(tmp_path):
    out = tmp_path / "blob"
    code = (
        "import sys, numpy as np, time\n"
        "a = np.ones(50_000_000)  # 400 MB, touched\n"
        "open(sys.argv[1], 'wb').write(b'x' * 30_000_000)\n"
        "time.sleep(0.2)\n"
    )
    m = run_measured([sys.executable, "-c", code, str(out)])
    assert m.returncode == 0, m.output_tail
    assert 0.4e9 < m.peak_anon_bytes < 1.0e9
    assert 30_000_000 <= m.written_bytes < 31_000_000
    assert m.wall_s > 0.2


def test_measure_sees_a_killed_child():
    m = run_measured(
        [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]
    )
    assert m.returncode == -9


def test_rl_deltas_move_a_tenth_of_entries_by_a_few_ulps():
    g = torch.Generator().manual_seed(0)
    w0 = (torch.randn(3000, 1000, generator=g) * 0.02).to(torch.bfloat16)
    w0.view(-1)[:50] = 0  # exact zeros must never step into NaN patterns
    big = (torch.randn((1 << 24) + 5, generator=g) * 0.02).to(torch.bfloat16)  # the blocked path
    big[:50] = 0
    for n in (w0, big):
        wt = rl_delta(n, g)
        steps = (wt.view(torch.int16).int() - n.view(torch.int16).int()).abs()
        assert torch.isfinite(wt.float()).all()
        assert steps.max() <= 3 and 0.08 < (steps > 0).float().mean() < 0.12
        assert (wt.view(-1)[:50] == 0).all()


@pytest.mark.parametrize("method", sorted(MERGEKIT))
def test_every_mergekit_row_config_reads_as_the_same_method(method, tiny_family, tmp_path):
    """The bench's shared YAML is accepted by --mergekit-config as that method, on the experts
    that mergekit will merge."""
    from devtools.model_bench import _mergekit_config
    from merges.mergekit_config import read_mergekit_config

    base, experts = tiny_family
    _mergekit_config(method, [base, *experts], tmp_path / "c.yaml")
    spec = read_mergekit_config(tmp_path / "c.yaml", tmp_path / "out")
    assert spec.method == method and len(spec.experts) == MERGEKIT[method][2]
