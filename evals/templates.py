"""Chat-template policies, applied at generation time and recorded with every sample file.

paper:    the template stored with the model's tokenizer (for merged and zero-shot models in the
          paper's run that is the Math expert's, copied by the merge).
per_task: the matching expert's template per benchmark domain (in Table 1: math → AIME,
          code → HumanEval(+), if → IFEval), from folders given as DOMAIN=DIR.
FILE:     an explicit Jinja template file for every benchmark.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from evals.errors import EvalInputError
from mergeeval.records import MERGE_JSON, SOURCE_JSON, files_digest

_TOKENIZERS: dict[str, object] = {}


def folder_tokenizer(folder: Path):
    """The folder's tokenizer, loaded once per process for identical tokenizer and config files
    (a batch's merged folders carry byte-identical copies)."""
    from transformers import AutoTokenizer

    key = files_digest(folder, (MERGE_JSON, SOURCE_JSON, "README.md"))
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = AutoTokenizer.from_pretrained(folder)
    return _TOKENIZERS[key]


def _folder_template(folder: Path) -> str | None:
    return folder_tokenizer(folder).chat_template


def resolve_template(
    policy: str,
    model: Path,
    domain: str,
    domain_templates: dict[str, Path] | None = None,
    template_from: Path | None = None,
) -> tuple[str, dict]:
    """(template text, record) for one benchmark domain under `policy`."""
    if policy == "paper":
        folder = Path(template_from or model)
        text, source = _folder_template(folder), str(folder.resolve())
        if not text:
            raise EvalInputError(
                f"model folder {folder} has no chat template, which the 'paper' policy uses; "
                "merge with --tokenizer-from an expert, or pass --template per_task or --template FILE"
            )
    elif policy == "per_task":
        folders = domain_templates or {}
        if domain not in folders:
            raise EvalInputError(
                f"the 'per_task' policy needs the {domain} expert's folder: pass --domain-template {domain}=DIR "
                f"(given: {', '.join(folders) or 'none'})"
            )
        text, source = _folder_template(folders[domain]), str(Path(folders[domain]).resolve())
        if not text:
            raise EvalInputError(
                f"{folders[domain]} has no chat template (per_task, domain {domain})"
            )
    else:
        path = Path(policy)
        if not path.is_file():
            raise EvalInputError(
                f"--template must be paper, per_task or a template file; {policy!r} is none of these"
            )
        text, source, policy = path.read_text(), str(path.resolve()), "file"
    return text, {
        "policy": policy,
        "source": source,
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
    }
