"""OLMo-3 tensor names and shapes, at OLMo-3-7B's widths unless told otherwise."""

from __future__ import annotations

VOCAB, HIDDEN, INTER = 100278, 4096, 11008
NORMS = (
    "self_attn.q_norm",
    "self_attn.k_norm",
    "post_attention_layernorm",
    "post_feedforward_layernorm",
)


def layout(
    layers: int, hidden: int = HIDDEN, inter: int = INTER, vocab: int = VOCAB
) -> list[tuple[str, tuple[int, ...]]]:
    """OLMo-3 tensor names and shapes for `layers` blocks."""
    h, i_, v = hidden, inter, vocab
    names = [
        ("model.embed_tokens.weight", (v, h)),
        ("lm_head.weight", (v, h)),
        ("model.norm.weight", (h,)),
    ]
    for i in range(layers):
        p = f"model.layers.{i}."
        names += [(p + f"self_attn.{x}_proj.weight", (h, h)) for x in "qkvo"]
        names += [(p + "mlp.gate_proj.weight", (i_, h)), (p + "mlp.up_proj.weight", (i_, h))]
        names += [(p + "mlp.down_proj.weight", (h, i_))]
        names += [(p + n + ".weight", (h,)) for n in NORMS]
    return names
