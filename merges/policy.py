"""Which tensors a method merges, and what the rest get (spec §1.3).

`mean_delta` (default, the paper's): the method merges the 2-D weights of the Linear layers inside
the transformer blocks; embeddings, lm_head and norms get the unscaled mean task vector.
`base`: the same, but the rest keep W_0. `method`: the method also merges every other tensor it can
(element-wise methods: all; matrix methods: 2-D tensors except embeddings); the rest get mean Δ.
"""

from __future__ import annotations

import re

from merges.registry import Method

REST_POLICIES = ("mean_delta", "method", "base")
_BLOCK_WEIGHT = re.compile(r"(^|\.)layers\.\d+\..+\.weight$")


def is_block_linear(name: str, shape: tuple[int, ...]) -> bool:
    """A 2-D weight inside a transformer block (q/k/v/o, gate/up/down in OLMo/Llama naming)."""
    return len(shape) == 2 and bool(_BLOCK_WEIGHT.search(name))


def tensor_role(name: str, shape: tuple[int, ...], method: Method, rest_policy: str) -> str:
    """'method', 'mean_delta' or 'base' for one tensor."""
    if is_block_linear(name, shape):
        return "method"
    if rest_policy == "base":
        return "base"
    if rest_policy == "method" and not method.needs_stats:
        if not method.matrix_only:
            return "method"
        if len(shape) == 2 and "embed" not in name:
            return "method"
    return "mean_delta"


def describe(method: Method, rest_policy: str) -> str:
    """In words, which tensors `tensor_role` gives to the method under `rest_policy`."""
    blocks = "2-D Linear weights in transformer blocks"
    if rest_policy != "method" or method.needs_stats:
        return blocks
    if not method.matrix_only:
        return "every floating-point tensor"
    return f"{blocks} and every other 2-D tensor except embeddings"
