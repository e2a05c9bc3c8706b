from typing import Literal

import torch
from pydantic import Field, model_validator

from merges import gta
from merges.factor_merge import On, factors_only, merge_factors, on_field
from merges.registry import (
    FactoredTask,
    Params,
    PerExpert,
    TensorTask,
    expert_values,
    per_expert,
    register,
    register_factored,
)

Majority = Literal["total", "frequency"]


def majority_field():
    return Field(
        "total",
        description="variant peft's sign election (PEFT's majority_sign_method): total: "
        "γ = sign Σ_t τ_t; frequency: γ = sign Σ_t sign τ_t (unweighted; ≥ 0 is +)",
    )


def check_peft_options(p) -> None:
    """`on: factors` follows PEFT's rules (variant peft), and `frequency` is PEFT's election."""
    if p.on == "factors" and p.variant != "peft":
        raise ValueError(
            "on: factors is PEFT's factor merge and follows its rules: set variant: peft"
        )
    if p.majority == "frequency" and p.variant != "peft":
        raise ValueError("majority: frequency is PEFT's sign election: set variant: peft")


class TiesParams(Params):
    density: PerExpert(gt=0, le=1) = per_expert(0.2, "fraction K of |τ_t| kept by the trim")
    scale: float = Field(1.0, description="λ applied to the disjoint mean")
    weight: PerExpert() = per_expert(1.0, "w_t multiplying the trimmed τ_t (mergekit's weight)")
    normalize: bool = Field(
        True,
        description="disjoint mean: ÷ the agreeing experts' summed weights (variant peft: their "
        "number); False: their sum",
    )
    variant: Literal["official", "mergekit", "peft"] = Field(
        "official",
        description="official: the authors' code (keep every |τ| ≥ the k-th value, zero signs take "
        "the tensor's majority); mergekit: exactly k kept by argsort, zero signs count as +; peft: "
        "PEFT's merge_utils.ties (exactly k kept, γ from the unweighted τ_t, ÷ the number agreeing)",
    )
    majority: Majority = majority_field()
    on: On = on_field()

    @model_validator(mode="after")
    def _peft_options(self):
        check_peft_options(self)
        return self


def kth_smallest_abs(x: torch.Tensor, k: int) -> torch.Tensor:
    """kthvalue(|x|, k) (1-based), exactly, in O(1) extra memory: non-negative floats order like
    their bit patterns, so a histogram of the high 16 bits finds the k-th value's high half and a
    histogram of the low 16 bits of the entries sharing it finds the low half (radix select)."""
    flat, step, bins = x.reshape(-1), 1 << 22, 1 << 16

    def histogram(high: int | None) -> torch.Tensor:
        hist = torch.zeros(bins, dtype=torch.int64, device=x.device)
        for s in range(0, flat.numel(), step):
            bits = flat[s : s + step].abs().view(torch.int32)
            part = bits >> 16 if high is None else bits[(bits >> 16) == high] & (bins - 1)
            hist += torch.bincount(part, minlength=bins)
        return hist.cumsum(0)

    cum = histogram(None)
    high = int(torch.searchsorted(cum, k))
    rank = k - (int(cum[high - 1]) if high else 0)
    low = int(torch.searchsorted(histogram(high), rank))
    return torch.tensor([(high << 16) | low], dtype=torch.int32).view(torch.float32)[0].to(x.device)


def trim_top_(x: torch.Tensor, density: float) -> torch.Tensor:
    """In place, the official `topk_values_mask`: kth = kthvalue(|x|, d − int(d·density)), keep
    |x| ≥ kth. As in the official code this keeps int(d·density) + 1 entries (plus ties)."""
    d = x.numel()
    kth = kth_smallest_abs(x, max(d - int(d * density), 1))
    flat, step = x.view(-1), 1 << 22
    for s in range(0, d, step):
        part = flat[s : s + step]
        part.masked_fill_(part.abs() < kth, 0)
    return x


def trim_exact_(x: torch.Tensor, density: float) -> torch.Tensor:
    """In place, PEFT's `magnitude_based_pruning`: keep exactly k = int(n·density) entries of
    largest |x| (none when k = 0; all when density ≥ 1). float32 (task vectors): the k-th largest
    by `kth_smallest_abs` in O(1) extra memory, entries tied with it kept in flat order (where
    torch.topk's choice is unspecified); other dtypes (LoRA factors): torch.topk."""
    n = x.numel()
    k = int(n * density)
    if density >= 1 or n == 0:
        return x
    if k == 0:
        return x.zero_()
    flat = x.view(-1)
    if x.dtype != torch.float32:
        keep = torch.zeros(n, dtype=torch.bool, device=x.device)
        keep[torch.topk(flat.abs(), k).indices] = True
        return x.masked_fill_(~keep.view(x.shape), 0)
    kth, step = kth_smallest_abs(x, n - k + 1), 1 << 22
    quota = k - sum(int((flat[s : s + step].abs() > kth).sum()) for s in range(0, n, step))
    for s in range(0, n, step):
        part = flat[s : s + step]
        mag = part.abs()
        keep = mag > kth
        if quota > 0:
            tied = mag == kth
            keep |= tied & (tied.cumsum(0) <= quota)
            quota -= int(tied.sum())
        part.masked_fill_(~keep, 0)
    return x


def peft_disjoint(
    t: torch.Tensor, weights: list[float], majority: str = "total", normalize: bool = True
) -> torch.Tensor:
    """PEFT's `calculate_majority_sign_mask` + `disjoint_merge` over trimmed τ_t [T, ...] (not yet
    weighted): γ = +1 where Σ_t τ_t (total) or Σ_t sign τ_t (frequency) is ≥ 0, else −1; then
    Σ_t [sign τ_t = γ] w_t τ_t ÷ max(1, number agreeing) (unnormalised: the sum). Zeros never
    agree. One expert at a time: a few temporaries of one expert's size."""
    elect = torch.zeros_like(t[0])
    for x in t:
        elect.add_(x if majority == "total" else x.sign())
    positive = elect >= 0
    del elect
    merged = torch.zeros_like(t[0])
    count = torch.zeros_like(t[0]) if normalize else None
    for x, w in zip(t, weights, strict=True):
        keep = gta.agrees(x, positive)
        merged.add_(torch.where(keep, x, 0.0), alpha=w)
        if count is not None:
            count.add_(keep)
    return merged.div_(count.clamp_min_(1)) if count is not None else merged


def elect_and_disjoint_mean(
    t: torch.Tensor, weights: list[float] | None = None, normalize: bool = True
) -> torch.Tensor:
    """TIES steps 2-3: γ = sign(Σ_t τ_t) (zeros → majority sign), mean of the agreeing nonzeros
    (weighted: Σ k_t τ_t / Σ k_t w_t, 0 → 1, for τ_t already multiplied by w_t; unnormalised: the sum).

    After γ, every row is independent, so the mean is formed in row blocks, in γ's memory.
    """
    gamma = t.sum(0).sign_()
    gamma.masked_fill_(gamma == 0, torch.sign(gamma.sum()))
    if gamma.numel() == 0:
        return gamma
    g2 = gamma.reshape(gamma.shape[0] if gamma.dim() else 1, -1)
    t2 = t.reshape(t.shape[0], *g2.shape)
    step = max(1, (1 << 20) // g2.shape[1])
    for r0 in range(0, g2.shape[0], step):  # each block's mean overwrites its γ rows
        tb, gb = t2[:, r0 : r0 + step], g2[r0 : r0 + step]
        keep = ((gb > 0) & (tb > 0)) | ((gb < 0) & (tb < 0))
        kept = torch.where(keep, tb, 0.0).sum(0)
        if not normalize:
            gb.copy_(kept)
        elif weights is None:
            gb.copy_(kept / keep.sum(0).clamp_min(1))
        else:
            w = torch.tensor(weights, dtype=tb.dtype, device=tb.device).view(-1, 1, 1)
            divisor = (keep * w).sum(0)
            gb.copy_(kept / torch.where(divisor == 0, 1.0, divisor))
    return gamma


@register("ties", TiesParams, matrix_only=False)
def ties(task: TensorTask, p: TiesParams):
    """TIES: trim each τ_t to its top-K |entries| (per tensor), elect signs, disjoint mean, ×λ
    (Yadav et al. 2023, arXiv 2306.01708; official code prdy/ties-merging); per-expert K and w_t
    as in mergekit's `ties`, whose tie and zero-sign rules `variant: mergekit` selects.

    variant: peft is PEFT's merge_utils.ties (its `ties_svd` before the SVD); with on: factors it
    acts on the stacked LoRA factors B_t and A_t separately (PEFT's `ties`), Δ* = λ B*·A*.
    """
    if p.on == "factors":
        return factors_only(task, "ties")
    n = task.deltas.shape[0]
    density, weights = expert_values(p.density, n), expert_values(p.weight, n)
    if p.variant == "peft":
        for d, k in zip(task.deltas, density, strict=True):
            trim_exact_(d, k)
        gta.record_nonzero(task, task.deltas)
        return peft_disjoint(task.deltas, weights, p.majority, p.normalize).mul_(p.scale)
    if p.variant == "mergekit":
        trimmed = gta.sparsify_each(task, p, lambda t, d, k: gta.top_k_exact(d, k))
        return gta.combine(task, trimmed, p, consensus=True)
    for d, k, w in zip(task.deltas, density, weights, strict=True):  # in place: the engine is done
        trim_top_(d, k).mul_(w)
    gta.record_nonzero(task, task.deltas)
    plain = all(w == 1 for w in weights)
    merged = elect_and_disjoint_mean(task.deltas, None if plain else weights, p.normalize)
    return merged.mul_(p.scale)


@register_factored("ties")
def ties_factored(task: FactoredTask, p: TiesParams):
    """on: factors only (on: delta takes the dense path): PEFT's `ties` on the LoRA factors, each
    stack trimmed per expert (exactly int(K·size) of each factor kept), elected and merged."""
    if p.on != "factors":
        return None
    density = expert_values(p.density, len(task.factors))

    def combine(stack, coeffs, _side):
        for x, k in zip(stack, density, strict=True):
            trim_exact_(x, k)
        return peft_disjoint(stack, coeffs, p.majority, p.normalize)

    weights = expert_values(p.weight, len(task.factors))
    return merge_factors(task, "ties", weights, combine, record=True).mul_(p.scale)
