"""Tiny OLMo-3 checkpoints for offline tests and the demo: a base and three experts.

The experts share the base's initialisation and differ by sparse, partly low-rank task vectors.
Each carries its own chat template, as the real RL-Zero experts do: the Math expert a plain
wrapper that asks for an `Answer:` line, Code and IF a ChatML template. The base has none.
Head dim is 64 because vLLM's CPU attention rejects smaller heads.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from mergeeval.outputs import atomic_dir
from merges.errors import MergeInputError

EXPERTS = ("math", "code", "if")
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]

MATH_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}"
    "Solve the following math problem step by step. The last line of your response should be of the "
    "form Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
    "{{ message['content'] }}\n\nRemember to put your answer on its own line after \"Answer:\".\n"
    "{% else %}{{ message['content'] }}{% endif %}{% endfor %}"
)
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "{% if not (loop.last and message['role'] == 'assistant') %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TEMPLATES = {"math": MATH_TEMPLATE, "code": CHATML_TEMPLATE, "if": CHATML_TEMPLATE}


def tiny_tokenizer():
    """Byte-level BPE with no merges (256 byte tokens) plus OLMo-style special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL)
    return hf_tokenizer(tok)


def hf_tokenizer(tok):
    """A `tokenizers` object as a transformers tokenizer with OLMo-style EOS and padding."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|endoftext|>",
        pad_token="<|pad|>",
        bos_token=None,
        unk_token=None,
    )


def tiny_config(vocab_size: int = 384, layers: int = 4):
    from transformers import Olmo3Config

    return Olmo3Config(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        sliding_window=64,
        layer_types=[
            "sliding_attention",
            "sliding_attention",
            "sliding_attention",
            "full_attention",
        ][:layers],
        pad_token_id=259,
        eos_token_id=256,
        bos_token_id=None,
        tie_word_embeddings=False,
    )


def _task_vector(w: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Sparse dense noise plus (for matrices) a rank-2 component, ~5% of the weight scale."""
    scale = 0.05 * float(w.float().std()) if w.numel() > 1 and float(w.float().std()) > 0 else 0.01
    noise = torch.randn(w.shape, generator=g) * (torch.rand(w.shape, generator=g) < 0.5)
    delta = scale * noise
    if w.ndim == 2:
        u = torch.randn(w.shape[0], 2, generator=g)
        v = torch.randn(2, w.shape[1], generator=g)
        delta += scale * (u @ v) / 2
    return delta


def make_tiny_family(output: Path, seed: int = 0, force: bool = False) -> list[Path]:
    """Write output/{base,math,code,if} as bf16 safetensors HF folders; return their paths."""
    from transformers import GenerationConfig, Olmo3ForCausalLM

    output = Path(output)
    paths = [output / n for n in ("base", *EXPERTS)]
    if all((p / "config.json").exists() for p in paths) and not force:
        return paths
    if output.exists():
        stray = sorted(set(os.listdir(output)) - {"base", *EXPERTS})
        if not output.is_dir() or stray or not force:
            raise MergeInputError(
                f"{output} exists and is not a complete tiny family written by make-tiny "
                f"({'it holds ' + stray[0] if stray else 'pass --force to replace it'}); "
                "choose another --output"
            )
    with atomic_dir(output) as tmp:
        torch.manual_seed(seed)
        tokenizer = tiny_tokenizer()
        config = tiny_config()
        model = Olmo3ForCausalLM(config).to(torch.bfloat16)
        base_state = {k: v.clone() for k, v in model.state_dict().items()}
        gen = GenerationConfig(eos_token_id=256, pad_token_id=259, do_sample=False)
        for i, name in enumerate(("base", *EXPERTS)):
            folder = tmp / name
            if name != "base":
                g = torch.Generator().manual_seed(seed * 100 + i)
                state = {
                    k: (v.float() + _task_vector(v, g)).to(torch.bfloat16)
                    for k, v in base_state.items()
                }
                model.load_state_dict(state)
            model.save_pretrained(folder, safe_serialization=True)
            gen.save_pretrained(folder)
            tokenizer.chat_template = TEMPLATES.get(name)
            tokenizer.save_pretrained(folder)
            if name == "base":
                for f in folder.glob("chat_template*"):
                    f.unlink()
    return paths
