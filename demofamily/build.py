"""`python -m demofamily build`: data splits, tokenizer, base and experts, in one seeded run.

Writes the evaluation split as the demo suite's fixtures (`evals/fixtures/demo/`), the dev split as
its validation suite's (`evals/fixtures/demo_dev/`), calibration prompts from the training split
(`config/demo_calibration/`), and the four HF folders with a
`source.json` that records the recipe, the seed, versions and each weight file's sha256.
"""

from __future__ import annotations

import hashlib
import json
import platform
import random
import shutil
from pathlib import Path

import torch

from demofamily import corpus, tasks_code, tasks_if, tasks_math
from demofamily.recipe import Recipe
from demofamily.split import Split
from demofamily.tokenizer import train_tokenizer
from demofamily.train import fit, model_config
from devtools.tiny_family import TEMPLATES, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]
DOMAINS = ("math", "code", "if")


def splits(r: Recipe) -> dict[str, Split]:
    """{domain: (train, dev, eval)}; math's dev and eval splits are two benchmarks' worth."""
    return {
        "math": tasks_math.split(r.seed, 2 * r.n_eval, 2 * r.n_dev),
        "code": tasks_code.split(r.seed, r.n_eval, r.n_dev),
        "if": tasks_if.split(r.seed, r.n_eval, r.n_dev),
    }


def _jsonl(path: Path, rows: list[dict]) -> None:
    """Write rows as JSONL; an identical file is left alone, so its mtime reruns nothing."""
    text = "".join(json.dumps(x) + "\n" for x in rows)
    if path.exists() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _benchmark_files(folder: Path, parts: dict, which: str, n: int, seed: int) -> None:
    """One split (`eval` or `dev`) of every domain as the benchmarks' fixture files."""
    maths = getattr(parts["math"], which)
    prefix = "demo" if which == "eval" else "dev"
    _jsonl(folder / "aime24.jsonl", tasks_math.aime_rows(maths[:n], f"{prefix}24"))
    _jsonl(folder / "aime25.jsonl", tasks_math.aime_rows(maths[n:], f"{prefix}25"))
    code = tasks_code.humaneval_rows(getattr(parts["code"], which))
    _jsonl(folder / "humanevalplus.jsonl", code)
    _jsonl(
        folder / "ifeval_input_data.jsonl", tasks_if.ifeval_rows(getattr(parts["if"], which), seed)
    )


def write_data(
    r: Recipe, parts: dict, fixtures: Path, calibration: Path, n_calib: int = 64
) -> None:
    """The evaluation split under `fixtures/demo`, the dev split under `fixtures/demo_dev`, and the
    calibration prompts (training split) under `calibration`."""
    _benchmark_files(fixtures / "demo", parts, "eval", r.n_eval, r.seed)
    _benchmark_files(fixtures / "demo_dev", parts, "dev", r.n_dev, r.seed)
    for d in DOMAINS:
        ex = corpus.expert_examples(d, parts[d].train, r.seed)
        rng = random.Random(r.seed)
        picked = rng.sample(ex, n_calib)
        _jsonl(
            calibration / f"{d}.jsonl",
            [
                {"messages": [{"role": "user", "content": corpus.user_text(d, f)[0]}]}
                for f, _ in picked
            ],
        )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def training_text(r: Recipe, parts: dict) -> tuple[dict, list]:
    """The family's training text: each domain's (prompt, completion) pairs rendered through its
    expert's chat template, and the generic mix (plain documents and (prompt, answer) chat
    documents of the midtraining share), from the training split alone."""
    render_tok = tiny_tokenizer()  # only renders chat templates (Jinja), vocabulary unused
    examples = {d: corpus.expert_examples(d, parts[d].train, r.seed) for d in DOMAINS}
    rendered = {
        d: [(corpus.render(render_tok, d, f), c + corpus.END[d]) for f, c in examples[d]]
        for d in DOMAINS
    }
    visible = {d: corpus.base_visible(d, parts[d].train) for d in DOMAINS}
    midtrain_examples = {d: corpus.expert_examples(d, visible[d], r.seed) for d in DOMAINS}
    midtrain = corpus.midtraining(
        render_tok, midtrain_examples, random.Random(r.seed), r.midtrain_docs, r.p_on_format
    )
    return rendered, corpus.generic_mix(r.seed, r.mix_docs, visible, midtrain)


def tokenizer_texts(rendered: dict, mix: list) -> list[str]:
    """The texts the family's tokenizer is trained on: the generic mix and the rendered examples."""
    texts = [d if isinstance(d, str) else "".join(d) for d in mix]
    return texts + [p + c for d in DOMAINS for p, c in rendered[d]]


def encode(tok, r: Recipe, rendered: dict, mix: list) -> tuple[list, dict]:
    """(chunks, sft): the generic mix as one EOS-separated token stream cut into `base_seq`
    chunks, and each domain's examples as (prompt + completion ids, loss start)."""

    def enc(texts: list[str]) -> list[list[int]]:
        return tok(texts, add_special_tokens=False).input_ids if texts else []

    # a chat document is prompt and answer tokenized apart, as at generation
    docs = enc([d for doc in mix for d in ([doc] if isinstance(doc, str) else doc)])
    stream, i = [], 0
    for doc in mix:
        n = 1 if isinstance(doc, str) else 2
        stream += [t for ids in docs[i : i + n] for t in ids] + [tok.eos_token_id]
        i += n
    chunks = [stream[i : i + r.base_seq] for i in range(0, len(stream) - r.base_seq, r.base_seq)]
    sft = {}
    for d in DOMAINS:
        prompts, completions = enc([p for p, _ in rendered[d]]), enc([c for _, c in rendered[d]])
        sft[d] = [(p + c, len(p)) for p, c in zip(prompts, completions, strict=True)]
    return chunks, sft


def expert_sampler(r: Recipe, sft: list, chunks: list):
    """One expert's batches: `batch` sequences, a `replay` share of them generic-mix chunks."""
    n_replay = round(r.batch * r.replay)

    def sample(g: random.Random) -> list:
        return g.sample(sft, r.batch - n_replay) + [(c, 0) for c in g.sample(chunks, n_replay)]

    return sample


def expert_seed(r: Recipe, domain: str) -> int:
    """The seed of a domain's fine-tuning (its batch order; an adapter's initialisation too)."""
    return r.seed + 1 + DOMAINS.index(domain)


def build(output: Path, r: Recipe, log=print, data_root: Path = ROOT) -> list[Path]:
    """Write the data under `data_root` (evals/fixtures/demo, config/demo_calibration) and the
    four model folders under `output`; return the folders."""
    torch.manual_seed(r.seed)
    torch.set_num_threads(r.threads)
    torch.use_deterministic_algorithms(True)
    parts = splits(r)
    write_data(r, parts, data_root / "evals/fixtures", data_root / "config/demo_calibration")
    rendered, mix = training_text(r, parts)
    tok = train_tokenizer(tokenizer_texts(rendered, mix), r.vocab_size, corpus.fixed_phrases())
    log(f"tokenizer: {len(tok)} tokens")
    chunks, sft = encode(tok, r, rendered, mix)
    for d in DOMAINS:
        log(
            f"{d}: {len(sft[d])} examples, mean {sum(len(s) for s, _ in sft[d]) / len(sft[d]):.0f} tokens"
        )
    log(f"generic mix: {len(chunks)} chunks of {r.base_seq} tokens")

    from transformers import Olmo3ForCausalLM

    cfg = model_config(r, len(tok), tok)
    model = Olmo3ForCausalLM(cfg)
    log(f"parameters: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M")
    fit(
        model,
        lambda g: [(c, 0) for c in g.sample(chunks, r.batch)],
        r.base_steps,
        r.base_lr,
        tok.pad_token_id,
        r.seed,
        log,
        "base",
    )
    base_state = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}
    states = {"base": base_state}
    for d in DOMAINS:
        model.load_state_dict({k: v.float() for k, v in base_state.items()})
        sample = expert_sampler(r, sft[d], chunks)
        fit(model, sample, r.expert_steps, r.expert_lr, tok.pad_token_id, expert_seed(r, d), log, d)
        states[d] = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}
    return save(output, states, cfg, tok, r)


def save(output: Path, states: dict, cfg, tok, r: Recipe) -> list[Path]:
    from transformers import GenerationConfig, Olmo3ForCausalLM

    output = Path(output)
    tmp = output.parent / f".{output.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    gen = GenerationConfig(
        eos_token_id=[tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")],
        pad_token_id=tok.pad_token_id,
        do_sample=False,
    )
    model = Olmo3ForCausalLM(cfg).to(torch.bfloat16)
    for name, state in states.items():
        folder = tmp / name
        model.load_state_dict(state)
        model.save_pretrained(folder, safe_serialization=True)
        gen.save_pretrained(folder)
        tok.chat_template = TEMPLATES.get(name)
        tok.save_pretrained(folder)
        for f in folder.glob("chat_template*") if name == "base" else []:
            f.unlink()
        (folder / "source.json").write_text(
            json.dumps(
                {
                    "source": "demofamily",
                    "name": name,
                    "recipe": r.model_dump(),
                    "versions": {"python": platform.python_version(), "torch": torch.__version__},
                    "sha256": {f.name: _sha256(f) for f in sorted(folder.glob("*.safetensors"))},
                },
                indent=2,
            )
            + "\n"
        )
    if output.exists():
        shutil.rmtree(output)
    tmp.rename(output)
    return [output / n for n in states]
