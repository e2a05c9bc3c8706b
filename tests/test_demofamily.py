"""The demo family: disjoint splits, references that the real scorers accept, committed data that
the generator reproduces, shipped weights that match their record, and deterministic training."""

import hashlib
import json
from pathlib import Path

from demofamily import build, corpus, tasks_code, tasks_if, tasks_math
from demofamily.recipe import Recipe
from evals.registry import FIXTURES, get_suite
from evals.samples import read_jsonl, write_samples
from evals.score import score_file

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "demofamily" / "models"
R = Recipe()


def test_splits_are_disjoint_and_seeded():
    for mod in (tasks_math, tasks_code, tasks_if):
        train, dev, held = mod.split(R.seed, 2 * R.n_eval, 2 * R.n_dev)
        assert len(set(held)) == 2 * R.n_eval and len(set(dev)) == 2 * R.n_dev
        assert not set(train) & set(held) and not set(train) & set(dev) and not set(dev) & set(held)
        assert mod.split(R.seed, 2 * R.n_eval, 2 * R.n_dev) == (train, dev, held)
        assert mod.split(R.seed + 1, 2 * R.n_eval)[2] != held


def corpus_examples(domain, train):
    return corpus.expert_examples(domain, train, R.seed)


def _texts(suite: str, benchmark: str) -> set[str]:
    s = get_suite(suite)
    rows = read_jsonl(s.fixture_file(s.benchmark(benchmark)))
    return {r.get("problem") or r.get("prompt") for r in rows}


def test_dev_items_are_disjoint_from_evaluation_and_training():
    """The committed validation suite (demo_dev) shares no item with the test suite (demo), and no
    dev item is a training example of its domain (training and calibration see train only)."""
    assert get_suite("demo").validation == "demo_dev"
    parts = build.splits(R)
    trained = {
        d: {f.get("problem") or f.get("prompt") for f, _ in corpus_examples(d, parts[d].train)}
        for d in ("math", "code")
    }
    for benchmark, domain in (("aime24", "math"), ("aime25", "math"), ("humaneval", "code")):
        dev, test = _texts("demo_dev", benchmark), _texts("demo", benchmark)
        assert len(dev) >= 30 and not dev & test and not dev & trained[domain], benchmark
    # IF: an item is (topic, instruction set); its prompt's kwargs are drawn, so compare the items
    dev_items = {(t, tuple(s)) for t, s in parts["if"].dev}
    assert not dev_items & set(parts["if"].train) and not dev_items & set(parts["if"].eval)
    dev_rows = read_jsonl(FIXTURES / "demo_dev" / "ifeval_input_data.jsonl")
    assert [tuple(r["instruction_id_list"]) for r in dev_rows] == [s for _, s in parts["if"].dev]


def test_committed_data_is_what_the_generator_writes(tmp_path):
    build.write_data(R, build.splits(R), tmp_path / "fx", tmp_path / "cal")
    for f in (tmp_path / "fx").rglob("*.jsonl"):
        assert f.read_bytes() == (FIXTURES / f.relative_to(tmp_path / "fx")).read_bytes(), f.name
    for f in (tmp_path / "cal").iterdir():
        assert f.read_bytes() == (ROOT / "config/demo_calibration" / f.name).read_bytes(), f.name
    suite = get_suite("demo")
    for name in suite.benchmarks:
        assert len(read_jsonl(suite.fixture_file(suite.benchmark(name)))) >= 50


def _score_references(tmp_path, benchmark, rows):
    samples = tmp_path / f"{benchmark}.jsonl"
    write_samples(samples, rows)
    data = get_suite("demo").fixture_file(get_suite("demo").benchmark(benchmark))
    return score_file(benchmark, samples, tmp_path / f"{benchmark}.json", data=data)["metrics"]


def test_reference_answers_pass_the_real_scorers(tmp_path):
    held = tasks_math.split(R.seed, 2 * R.n_eval, 2 * R.n_dev).eval
    rows = [
        {"id": i, "completions": [tasks_math.worked(*p)]} for i, p in enumerate(held[: R.n_eval])
    ]
    assert _score_references(tmp_path, "aime24", rows)["pass@1"] == 1.0
    wrong = [{"id": r["id"], "completions": ["Answer: 1000"]} for r in rows]
    assert _score_references(tmp_path, "aime24", wrong)["pass@1"] == 0.0

    he = read_jsonl(FIXTURES / "demo" / "humanevalplus.jsonl")
    rows = [{"id": t["task_id"], "completions": [t["canonical_solution"]]} for t in he]
    assert _score_references(tmp_path, "humanevalplus", rows)["pass@1"] == 1.0
    rows = [{"id": t["task_id"], "completions": ["    return None\n"]} for t in he]
    assert _score_references(tmp_path, "humaneval", rows)["pass@1"] == 0.0

    import random

    rng = random.Random(R.seed)
    held = tasks_if.split(R.seed, R.n_eval, R.n_dev).eval
    data = read_jsonl(FIXTURES / "demo" / "ifeval_input_data.jsonl")
    rows = []
    for row, item in zip(data, held, strict=True):
        topic, insts, kwargs = tasks_if.with_kwargs(item, rng)
        assert row["kwargs"] == kwargs and row["instruction_id_list"] == list(insts)
        rows.append({"id": row["key"], "completions": [tasks_if.response(topic, insts, kwargs)]})
    metrics = _score_references(tmp_path, "ifeval", rows)
    # the headline (loose) accepts every reference; strict loses one to langdetect on short capitals
    assert metrics["prompt_level_loose_acc"] == 1.0 and metrics["prompt_level_strict_acc"] >= 0.95
    plain = [{"id": r["id"], "completions": [tasks_if.TOPICS["the sea"][0]]} for r in rows]
    assert _score_references(tmp_path, "ifeval", plain)["prompt_level_loose_acc"] < 0.2


def test_shipped_models_match_their_record():
    total = 0
    for name in ("base", "math", "code", "if"):
        folder = MODELS / name
        src = json.loads((folder / "source.json").read_text())
        assert src["name"] == name and src["recipe"] == Recipe(**src["recipe"]).model_dump()
        for f, digest in src["sha256"].items():
            assert hashlib.sha256((folder / f).read_bytes()).hexdigest() == digest
        total += sum(f.stat().st_size for f in folder.iterdir())
        has_template = (folder / "chat_template.jinja").exists()
        assert has_template == (name != "base")
    assert total <= 20e6


def test_training_is_deterministic(tmp_path):
    tiny = Recipe(base_steps=3, expert_steps=2, batch=4, mix_docs=300, vocab_size=400, layers=2)
    digests = []
    for run in ("a", "b"):
        build.build(tmp_path / run, tiny, log=lambda m: None, data_root=tmp_path / f"data-{run}")
        digests.append(
            {
                f.relative_to(tmp_path / run): f.read_bytes()
                for f in (tmp_path / run).rglob("*.safetensors")
            }
        )
    assert digests[0] == digests[1] and len(digests[0]) == 4
    base = (tmp_path / "a/base/model.safetensors").read_bytes()
    assert all(v != base for k, v in digests[0].items() if k.parts[0] != "base")
