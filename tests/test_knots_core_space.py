"""KnOTS and Core Space against their authors' code, transcribed below as plain torch functions,
on random low-rank (LoRA) experts; their reductions to Task Arithmetic; factored ≡ dense in fp64.

Transcribed (one LoRA module, so the official whole-model concatenation is this tensor alone):
- gstoica27/KnOTS @ baa35e85768b8841820d35edc3e41b25304248c5: task_merger.py
  (SVDMerger.apply_svd, .merge, TaskMerger.apply_dare), masking_ops.py (topk_values_mask,
  resolve_zero_signs, resolve_sign, ties_masking, tv_masking, chunked_disjoint_mean, chunked_sum,
  masked_merge).
- marawangamal/actmat @ 42292c7dd08eaefe0c18809dbbaf57eed635b764: src/merging.py (_merge_knots,
  merge_isoc, merge_tsv, _compute_procrustes).
- apanariello4/core-space-merging @ 85176fab749578b0b54a027ea89495846e79757d: task_merger.py
  (MatrixPerLayerMerger.get_core_matrices, _merge_tensors, _process_ties, get_tsv_delta_w,
  get_dare_delta_w, merge's `core` branch, isotropize_matrix), merging_functions.py
  (ties_merging, topk_values_mask, resolve_zero_signs, resolve_sign, disjoint_merge).
DARE's masks come from one global RNG there; the transcriptions take the masks as an argument and
are given the project's (seed + 1000·t + crc32(name)), so the rest of DARE-TIES is compared.
"""

import zlib

import pytest
import torch

from merges.errors import MergeInputError
from merges.methods.dare import dare_mask
from merges.registry import FactoredTask, TensorTask, methods
from tests import reference_formulas as ref

NAME = "model.layers.0.self_attn.q_proj.weight"


@pytest.fixture(autouse=True)
def _one_thread():
    """Matrices of a few dozen rows: one intra-op thread (a pool only adds its start-up and, on a
    busy machine, waits)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---- gstoica27/KnOTS @ baa35e8 ----


def knots_topk_values_mask(M, K=0.7):  # masking_ops.py
    if K > 1:
        K /= 100
    if K >= 1:
        return M, torch.ones_like(M), torch.ones_like(M).mean(dim=-1)
    original_shape = M.shape
    if M.dim() == 1:
        M = M.unsqueeze(0)
    n, d = M.shape
    k = int(d * K)
    k = d - k  # Keep top k elements instead of bottom k elements
    if M.flatten().shape[-1] == 1:
        kth_values = M.abs()
    else:
        kth_values, _ = M.abs().kthvalue(k, dim=1, keepdim=True)
    mask = M.abs() >= kth_values
    if original_shape == M.squeeze().shape:
        final_mask = mask.squeeze()
        M = M.squeeze()
    else:
        final_mask = mask
    return M * final_mask, final_mask, final_mask.float().mean(dim=-1)


def resolve_zero_signs(sign_to_mult, method="majority"):  # masking_ops.py
    majority_sign = torch.sign(sign_to_mult.sum())
    if method == "majority":
        sign_to_mult[sign_to_mult == 0] = majority_sign
    elif method == "minority":
        sign_to_mult[sign_to_mult == 0] = -1 * majority_sign
    return sign_to_mult


def knots_resolve_sign(Tensor, mode="sum_of_values"):  # masking_ops.py
    if mode == "sum_of_signs":
        sign_to_mult = torch.sign(torch.sum(torch.sign(Tensor), dim=0))
    elif mode == "sum_of_values":
        sign_to_mult = torch.sign(Tensor.sum(dim=0))
        sign_to_mult = resolve_zero_signs(sign_to_mult, "majority")
    return sign_to_mult


def ties_masking(vectors, topK=100, sign_resolve_mode="sum_of_values", **kwargs):
    stacked_vectors = torch.vstack(vectors).clone()
    pruned_vectors, prune_mask, _ = knots_topk_values_mask(stacked_vectors, K=topK)
    vector_signs = knots_resolve_sign(pruned_vectors, mode=sign_resolve_mode)
    sign_mask = torch.where(vector_signs.unsqueeze(0) > 0, pruned_vectors > 0, pruned_vectors < 0)
    return sign_mask * prune_mask


def tv_masking(vectors, topK=100, **kwargs):
    stacked_vectors = torch.vstack(vectors).clone()
    pruned_vectors, prune_mask, _ = knots_topk_values_mask(stacked_vectors, K=topK)
    return prune_mask


def chunked_disjoint_mean(vectors, chunk_size=10000):
    num_chunks = vectors.size(0) // chunk_size + (1 if vectors.size(0) % chunk_size != 0 else 0)
    total_sum = torch.zeros_like(vectors[0])
    non_zero_counts = torch.zeros_like(vectors[0])
    for i in range(num_chunks):
        chunk = vectors[i * chunk_size : min((i + 1) * chunk_size, vectors.size(0))]
        total_sum += torch.sum(chunk, dim=0)
        non_zero_counts += (chunk != 0).sum(dim=0)
    disjoint_aggs = total_sum / torch.clamp(non_zero_counts.float(), min=1)
    disjoint_aggs[non_zero_counts == 0] = 0
    return disjoint_aggs


def chunked_sum(tensor, chunk_size=10000):
    num_chunks = tensor.size(0) // chunk_size + (1 if tensor.size(0) % chunk_size != 0 else 0)
    total_sum = torch.zeros_like(tensor[0])
    for i in range(num_chunks):
        total_sum += torch.sum(
            tensor[i * chunk_size : min((i + 1) * chunk_size, tensor.size(0))], 0
        )
    return total_sum


def masked_merge(vectors, merge_func, weights=None):  # "mean" and "sum"
    if weights is not None:
        for vector in vectors:
            vector *= weights[0]
    if merge_func == "mean":
        return chunked_disjoint_mean(vectors, chunk_size=10000)
    if merge_func == "sum":
        return chunked_sum(vectors)
    raise ValueError(merge_func)


def knots_apply_svd(ft_params):
    """SVDMerger.apply_svd for one module (concat_across_output=True): U and the Z_t = diag(s) V_t."""
    val = torch.concat(ft_params, dim=1)
    U, s, V = torch.linalg.svd(val.to(torch.float64), full_matrices=False)
    U = U[:, s > 1e-5].type(torch.float32)
    V = V[s > 1e-5].type(torch.float32)
    s = s[s > 1e-5].type(torch.float32)
    s[s <= 1e-5] = 0
    cat_hidden_dim = V.shape[1] // len(ft_params)
    task_Ss, task_sVs = [], []
    for V_t in torch.split(V, cat_hidden_dim, dim=1):
        task_sVs.append(torch.diag(s) @ V_t)
        task_Ss.append(s / s)
    return U, task_Ss, task_sVs


def knots_official(deltas, merge_method, merging_type, topK, scaling, dare_p=None, masks=None):
    """SVDMerger.transform + .merge on one module (float32 task vectors, as the LoRAHandler's B @ A)."""
    U, task_Ss, task_sVs = knots_apply_svd(list(deltas))
    if dare_p is not None:  # TaskMerger.apply_dare, its randbin masks given
        task_sVs = [v * m * (1 / (1 - dare_p)) for v, m in zip(task_sVs, masks, strict=True)]
    reps = [v.reshape(-1) for v in task_sVs]
    mask_fn = {"ties": ties_masking, "tv": tv_masking}[merge_method]
    masks_ = mask_fn(reps, topK=topK, sign_resolve_mode="sum_of_values")
    masked = torch.vstack(reps).clone() * masks_
    rescaled = torch.stack(  # apply_Ss_on_Vs
        [
            torch.diag(ss) @ v.reshape(task_sVs[0].shape)
            for ss, v in zip(task_Ss, masked, strict=True)
        ]
    ).reshape(len(reps), -1)
    merged = masked_merge(rescaled, merging_type, torch.tensor([scaling] * len(reps)))
    return (U @ merged.reshape(task_sVs[0].shape)).to(torch.float32)  # reconstruct_merged_sd


# ---- marawangamal/actmat @ 42292c7: src/merging.py ----


def _compute_procrustes(x):
    u, _, vt = torch.linalg.svd(x, full_matrices=False)
    return u @ vt


def actmat_merge_tsv(taus, **kwargs):
    N_tasks = len(taus)
    u, s, vt = torch.linalg.svd(taus, full_matrices=False)
    R = min(u.shape[1], vt.shape[2])
    Rp = R // N_tasks
    u, s, vt = u[:, :, :Rp], s[:, :Rp], vt[:, :Rp, :]
    B, Di, _ = u.shape
    _, _, Do = vt.shape
    u_hat = u.permute(1, 0, 2).reshape(Di, B * Rp)
    s_hat = s.reshape(-1)
    vt_hat = vt.reshape(B * Rp, Do)
    u_ortho = _compute_procrustes(u_hat)
    vt_ortho = _compute_procrustes(vt_hat.T).T
    return torch.einsum("ij,j,jk->ik", u_ortho, s_hat, vt_ortho)


def actmat_merge_isoc(taus, mode="mean", **kwargs):
    m = taus.sum(dim=0)
    u, s, vt = torch.linalg.svd(m, full_matrices=False)
    s_iso = s.mean() * torch.ones_like(s)
    return torch.einsum("ik,k,kj->ij", u, s_iso, vt)


def actmat_merge_knots(taus, merge_fn, **kwargs):
    N, Do, Di = taus.shape
    d = taus.permute(1, 0, 2).reshape(Do, N * Di)
    u, s, vt = torch.linalg.svd(d, full_matrices=False)
    tau_tilde = merge_fn(vt.reshape(-1, N, Di).permute(1, 0, 2), **kwargs)
    return torch.einsum("or,r,ri->oi", u, s, tau_tilde)


# ---- apanariello4/core-space-merging @ 85176fa ----


def core_topk_values_mask(M, K=0.7, return_mask=False):  # merging_functions.py
    if K > 1:
        K /= 100
    if K >= 1 and return_mask:
        return M, torch.ones_like(M).mean(dim=-1), torch.ones_like(M)
    original_shape = M.shape
    if M.dim() == 1:
        M = M.unsqueeze(0)
    n, d = M.shape
    k = d - int(d * K)
    if M.flatten().shape[-1] == 1:
        kth_values = M.abs()
    else:
        kth_values, _ = M.abs().kthvalue(k, dim=1, keepdim=True)
    mask = M.abs() >= kth_values
    if original_shape == M.squeeze().shape:
        final_mask = mask.squeeze()
        M = M.squeeze()
    else:
        final_mask = mask
    return M * final_mask, final_mask.float().mean(dim=-1), final_mask


def core_disjoint_merge(Tensor, merge_func, reference_sign_to_mult, weights=None):  # "mean" only
    rows_to_keep = torch.where(reference_sign_to_mult.unsqueeze(0) > 0, Tensor > 0, Tensor < 0)
    selected_entries = Tensor * rows_to_keep
    non_zero_counts = (selected_entries != 0).sum(dim=0).float()
    return torch.sum(selected_entries, dim=0) / torch.clamp(non_zero_counts, min=1), rows_to_keep


def core_ties_merging(vectors, topK=10, merging_type="mean", weights=None, **kwargs):
    stacked_vectors = torch.vstack(vectors) if isinstance(vectors, list) else vectors
    pruned_vectors, _, mask = core_topk_values_mask(stacked_vectors, K=topK, return_mask=True)
    vector_signs = resolve_zero_signs(torch.sign(pruned_vectors.sum(dim=0)), "majority")
    merged_tv, rows_to_keep = core_disjoint_merge(
        pruned_vectors, merging_type, vector_signs, weights
    )
    return merged_tv, rows_to_keep, mask


def core_process_ties(tensor_list, topK=10):
    original_shape = tensor_list[0].shape
    tensor_list = list(map(torch.flatten, tensor_list))
    merged_tv, rows_to_keep, mask = core_ties_merging(tensor_list, topK=topK)
    return merged_tv.reshape(original_shape)


def core_get_tsv_delta_w(ftms_task_dirs):
    sv_reduction = 1 / len(ftms_task_dirs)
    for i, vec in enumerate(ftms_task_dirs):
        u, s, v = torch.linalg.svd(vec.to(torch.float64), full_matrices=False)
        if i == 0:
            sum_u, sum_s, sum_v = torch.zeros_like(u), torch.zeros_like(s), torch.zeros_like(v)
        reduced_index_s = int(s.shape[0] * sv_reduction)
        sum_u[:, i * reduced_index_s : (i + 1) * reduced_index_s] = u[:, :reduced_index_s]
        sum_s[i * reduced_index_s : (i + 1) * reduced_index_s] = s[:reduced_index_s]
        sum_v[i * reduced_index_s : (i + 1) * reduced_index_s, :] = v[:reduced_index_s, :]
    u_u, s_u, v_u = torch.linalg.svd(sum_u, full_matrices=False)
    u_v, s_v, v_v = torch.linalg.svd(sum_v, full_matrices=False)
    return torch.linalg.multi_dot((u_u, v_u, torch.diag(sum_s), u_v, v_v)).type_as(
        ftms_task_dirs[0]
    )


def core_get_dare_delta_w(M_list, masks, dare_coeff=0.3, merge=True):
    for i in range(len(M_list)):
        M_list[i] = M_list[i] * masks[i]  # self.randbin(...), given
        M_list[i] = M_list[i] / (1 - dare_coeff)
    return torch.stack(M_list).sum(dim=0) if merge else torch.stack(M_list)


def core_get_core_matrices(A_list, B_list):
    A_stack = torch.cat(A_list, dim=0)
    B_stack = torch.cat(B_list, dim=1)
    Vh_A_ref = torch.linalg.svd(A_stack.to(torch.float64), full_matrices=False)[2]
    U_B_ref = torch.linalg.svd(B_stack.to(torch.float64), full_matrices=False)[0]
    M_list = []
    for A, B in zip(A_list, B_list, strict=True):
        U_A, S_A, Vh_A = torch.linalg.svd(A.to(torch.float64), full_matrices=False)
        U_B, S_B, Vh_B = torch.linalg.svd(B.to(torch.float64), full_matrices=False)
        Q_A = Vh_A @ Vh_A_ref.T
        R_B = U_B_ref.T @ U_B
        M = torch.diag(S_B) @ (Vh_B @ U_A) @ torch.diag(S_A)
        M_list.append(R_B @ M @ Q_A)
    return M_list, U_B_ref, Vh_A_ref


def isotropize_matrix(matrix):
    U, S, V = torch.linalg.svd(matrix.to(torch.float64), full_matrices=False)
    S_iso = S.mean() * torch.ones_like(S)
    return U @ torch.diag(S_iso) @ V


def core_official(factors, merge_method, scaling, topK=10, dare_p=0.3, masks=None, iso=False):
    """MatrixPerLayerMerger.merge, merge_space core, for one module: Δ = λ·U_B M* Vh_A."""
    A_list = [a for _, a in factors]
    B_list = [b for b, _ in factors]
    M_list, U_B_ref, Vh_A_ref = core_get_core_matrices(A_list, B_list)
    if merge_method in ("sum", "tv"):
        M_merged = torch.stack(M_list).sum(dim=0)
    elif merge_method == "ties":
        M_merged = core_process_ties(M_list, topK)
    elif merge_method == "dare-ties":
        tensors_dare = core_get_dare_delta_w(list(M_list), masks, dare_p, merge=False)
        M_merged = core_process_ties(tensors_dare, topK)
    elif merge_method == "tsv":
        M_merged = core_get_tsv_delta_w(M_list)
    if iso:
        M_merged = isotropize_matrix(M_merged)
    return scaling * (U_B_ref @ M_merged @ Vh_A_ref)  # _apply_delta: += scaling_coeffs * delta_w


# ---- helpers ----


def lora(seed, t=3, m=16, n=12, ranks=(2, 2, 2)):
    """fp64 factors (B_t [m, r_t], A_t [r_t, n]) with O(1) products."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for r in ranks[:t]:
        b = torch.randn(m, r, generator=g, dtype=torch.float64)
        out.append((b, torch.randn(r, n, generator=g, dtype=torch.float64) / 2))
    return out


def deltas(factors, dtype=torch.float64):
    return torch.stack([b @ a for b, a in factors]).to(dtype)


def dense(name, d, params=None):
    m = methods()[name]
    task = TensorTask(NAME, d.clone(), factor_dtype=torch.float64)
    out = m.fn(task, m.parse_params(params or {}))
    assert out.dtype == d.dtype and out.shape == d.shape[1:]
    return out.double()


def factored(name, factors, params=None):
    m = methods()[name]
    shape = (factors[0][0].shape[0], factors[0][1].shape[1])
    task = FactoredTask(NAME, [(b.clone(), a.clone()) for b, a in factors], shape)
    out = m.factored(task, m.parse_params(params or {}))
    assert out.shape == shape
    return out.double()


def rel(a, b):
    return float((a - b).norm() / b.norm())


def masks_for(shape, p, t):
    return [dare_mask(shape, p, 1000 * i + zlib.crc32(NAME.encode())).float() for i in range(t)]


# ---- (a) against the authors' code ----


@pytest.mark.parametrize(
    "official, params",
    [
        (("tv", "sum", 100, 0.5), {"merge": "ta", "scale": 0.5}),
        (("tv", "sum", 30, 0.7), {"merge": "ta", "scale": 0.7, "density": 0.3}),
        (("ties", "mean", 100, 0.5), {}),  # the Llama-3-8B config
        (("ties", "mean", 20, 0.6), {"density": 0.2, "scale": 0.6}),  # the ViT-B/32 config
    ],
)
def test_knots_matches_the_official_svd_merger(official, params):
    f = lora(1)
    d32 = deltas(f, torch.float32)
    want = knots_official(d32.double(), *official).double()
    assert rel(dense("knots", d32, params), want) <= 1e-5
    assert rel(factored("knots", f, params), want) <= 1e-5


def test_knots_dare_ties_matches_the_official_with_the_same_masks():
    f = lora(2, ranks=(1, 2, 3))
    d32 = deltas(f, torch.float32)
    k = 6  # rank of [Δ_1 | Δ_2 | Δ_3]
    params = {"merge": "dare_ties", "drop_rate": 0.3, "density": 0.5, "scale": 0.4}
    want = knots_official(d32.double(), "ties", "mean", 50, 0.4, 0.3, masks_for((k, 12), 0.3, 3))
    assert rel(dense("knots", d32, params), want.double()) <= 1e-5
    assert rel(factored("knots", f, params), want.double()) <= 1e-5


@pytest.mark.parametrize("merge, fn", [("iso_c", actmat_merge_isoc), ("tsv", actmat_merge_tsv)])
def test_knots_iso_c_and_tsv_match_the_actmat_variants(merge, fn):
    """knots_isoc / knots_tsv (the V_tᵀ blocks without S, then U S ·); [Δ_1|…|Δ_T] of full row
    rank, since those keep the components of zero singular value as well."""
    f = lora(3, m=8, n=10, ranks=(3, 3, 3))
    d = deltas(f)
    want = actmat_merge_knots(d, fn)
    assert rel(dense("knots", d, {"merge": merge}), want) <= 1e-5
    assert rel(factored("knots", f, {"merge": merge}), want) <= 1e-5


@pytest.mark.parametrize(
    "official, merge, merge_params",
    [
        (("tv", 0.7), "task_arithmetic", "scale=0.7"),
        (("ties", 0.9, 20), "ties", "density=0.2,scale=0.9"),
        (("ties", 1.0, 100), "ties", "density=1"),
        (("tsv", 0.2), "tsv", "scale=0.2"),  # configs/vitB_r16_core_tsv.py
    ],
)
def test_core_space_matches_the_official_merger(official, merge, merge_params):
    f = lora(4, ranks=(2, 3, 2))
    want = core_official(f, *official)
    got = factored("core_space", f, {"merge": merge, "merge_params": merge_params})
    assert rel(got, want) <= 1e-5


def test_core_space_dare_ties_and_isotropize_match_the_official():
    f = lora(5)
    masks = masks_for((6, 6), 0.4, 3)
    want = core_official(f, "dare-ties", 0.8, 100, 0.4, masks)
    params = {"merge": "dare", "merge_params": "drop_rate=0.4,combine=ties,scale=0.8"}
    assert rel(factored("core_space", f, params), want) <= 1e-5
    want = core_official(f, "tv", 1.5, iso=True)  # the official ta with isotropize=1
    got = factored(
        "core_space",
        f,
        {"merge": "task_arithmetic", "merge_params": "scale=1.5", "isotropize": True},
    )
    assert rel(got, want) <= 1e-5
    assert (
        rel(factored("core_space", f, {"merge": "iso_c", "merge_params": "scale=1.5"}), want)
        <= 1e-5
    )


def test_core_matrices_are_the_projections_of_the_products():
    """The official loop (SVDs of each A_t, B_t aligned to the references) is U_Bᵀ B_t A_t V_A
    (its own `optimized version` comment), and U_B M_t V_Aᵀ gives B_t A_t back."""
    f = lora(6, ranks=(1, 2, 3))
    cores, ub, vha = core_get_core_matrices([a for _, a in f], [b for b, _ in f])
    for (b, a), core in zip(f, cores, strict=True):
        assert rel(ub.T @ b @ a @ vha.T, core) <= 1e-12
        assert rel(ub @ core @ vha, b @ a) <= 1e-12


# ---- (b) reductions and factored ≡ dense ----


@pytest.mark.parametrize("low_rank", [True, False])
def test_knots_ta_is_task_arithmetic(low_rank):
    f = lora(7)
    d = deltas(f) if low_rank else torch.randn(3, 10, 7, dtype=torch.float64)
    want = dense("task_arithmetic", d, {"scale": 0.3})
    assert rel(dense("knots", d, {"merge": "ta", "scale": 0.3}), want) <= 1e-6
    if low_rank:
        assert rel(factored("knots", f, {"merge": "ta", "scale": 0.3}), want) <= 1e-6


@pytest.mark.parametrize(
    "merge, merge_params, direct",
    [
        ("task_arithmetic", "", {}),
        (
            "task_arithmetic",
            "scale=0.7,weight=0.5;1;2,normalize=true",
            {"scale": 0.7, "weight": [0.5, 1.0, 2.0], "normalize": True},
        ),
        ("average", "", {}),
    ],
)
@pytest.mark.parametrize("low_rank", [True, False])
def test_core_space_with_a_linear_method_is_that_method(merge, merge_params, direct, low_rank):
    f = lora(8, ranks=(1, 2, 3))
    d = deltas(f) if low_rank else torch.randn(3, 9, 7, dtype=torch.float64)
    want = dense(merge, d, direct)
    params = {"merge": merge, "merge_params": merge_params}
    assert rel(dense("core_space", d, params), want) <= 1e-6
    if low_rank:
        assert rel(factored("core_space", f, params), want) <= 1e-6


def test_core_space_tsv_is_tsv_on_lora_experts():
    """Rotation-equivariant, and its k = ⌊T·r / T⌋ = r keeps what TSV's k = ⌊min(m, n)/T⌋ keeps."""
    f = lora(9)
    want = dense("tsv", deltas(f))
    assert rel(dense("core_space", deltas(f)), want) <= 1e-6
    assert rel(factored("core_space", f), want) <= 1e-6


# For LoRA experts with Σ_t r_t = rank [Δ_1|…|Δ_T] = k, Σ_t V_tᵀV_t = I_k splits into orthogonal
# projections: every nonzero singular value of a block V_tᵀ is 1, so TSV's top ⌊k/T⌋ of a block is
# an arbitrary choice where ⌊k/T⌋ < r_t. Equal ranks make ⌊k/T⌋ = r_t.
KNOTS_CASES = [
    {"merge": "ta", "density": 0.4},
    {"merge": "ties", "density": 0.3, "scale": 1.1},
    {"merge": "dare_ties", "drop_rate": 0.5, "density": 0.6, "seed": 3},
    {"merge": "iso_c", "scale": 2.0},
    {"merge": "tsv"},
]


@pytest.mark.parametrize("params", KNOTS_CASES)
def test_knots_factored_equals_dense_in_fp64(params):
    f = lora(10, ranks=(2, 2, 2) if params["merge"] == "tsv" else (1, 3, 2))
    assert rel(factored("knots", f, params), dense("knots", deltas(f), params)) <= 1e-6


CORE_CASES = [
    ("ties", "density=0.3"),
    ("dare", "drop_rate=0.4,combine=ties,seed=2"),
    ("iso_c", ""),
    ("tsv", "scale=0.5"),
    ("knots", "merge=ties"),
]


@pytest.mark.parametrize("merge, merge_params", CORE_CASES)
def test_core_space_factored_equals_dense_in_fp64(merge, merge_params):
    """basis=svd on any factors; basis=factors on the factoring the dense path makes (the
    element-wise merges depend on the cores' coordinates, which the given factors fix)."""
    f = lora(11, ranks=(1, 3, 2))
    params = {"merge": merge, "merge_params": merge_params}
    want = dense("core_space", deltas(f), params)
    assert rel(factored("core_space", f, params | {"basis": "svd"}), want) <= 1e-6
    svd_split = []
    for b, a in f:
        u, s, vh = torch.linalg.svd(b @ a, full_matrices=False)
        r = b.shape[1]
        svd_split.append((u[:, :r] * s[:r].sqrt(), s[:r].sqrt()[:, None] * vh[:r]))
    assert rel(factored("core_space", svd_split, params), want) <= 1e-6


@pytest.mark.parametrize("params", KNOTS_CASES)
def test_knots_matches_the_numpy_reference(params):
    f = lora(15, ranks=(2, 2, 2) if params["merge"] == "tsv" else (2, 1, 2))
    d = deltas(f)
    want = torch.as_tensor(ref.knots(d.numpy(), None, params, name=NAME))
    assert rel(dense("knots", d, params), want) <= 1e-5


@pytest.mark.parametrize("merge, merge_params", CORE_CASES)
def test_core_space_matches_the_numpy_reference(merge, merge_params):
    """The dense path (its own factoring) and the factors as given (basis=factors)."""
    f = lora(16, ranks=(2, 1, 2))
    params = {"merge": merge, "merge_params": merge_params}
    want = torch.as_tensor(ref.core_space(deltas(f).numpy(), None, params, name=NAME))
    assert rel(dense("core_space", deltas(f), params), want) <= 1e-5
    given = [(b.numpy(), a.numpy()) for b, a in f]
    want = torch.as_tensor(ref.core_space(None, None, params, name=NAME, factors=given))
    assert rel(factored("core_space", f, params), want) <= 1e-5


def test_core_space_element_wise_merges_depend_on_the_factors():
    """B_t A_t = (B_t G)(G⁻¹ A_t): the official bases, and so TIES in core space, change."""
    f = lora(12)
    g = torch.tensor([[2.0, 1.0], [0.0, 0.5]], dtype=torch.float64)
    f2 = [(b @ g, torch.linalg.solve(g, a)) for b, a in f]
    params = {"merge": "ties", "merge_params": "density=0.3"}
    assert rel(factored("core_space", f2, params), factored("core_space", f, params)) > 1e-3
    svd = params | {"basis": "svd"}
    assert rel(factored("core_space", f2, svd), factored("core_space", f, svd)) <= 1e-9


# ---- parameters and degenerate inputs ----


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("knots", {"merge": "ties", "drop_rate": 0.3}, "drop_rate: .*dare_ties, not 'ties'"),
        ("knots", {"merge": "tsv", "density": 0.3}, "density: .*not 'tsv'"),
        ("core_space", {"merge": "regmean"}, "reads input statistics"),
        ("core_space", {"merge": "linear"}, "reads W_0"),
        ("core_space", {"merge": "core_space"}, "its own cores"),
        ("core_space", {"merge": "ties", "merge_params": "lambda=1"}, "no parameter 'lambda'"),
        ("core_space", {"merge": "ties", "merge_params": "density"}, "not KEY=VALUE"),
        ("core_space", {"merge": "ties", "merge_params": "density=2"}, "less than or equal to 1"),
    ],
)
def test_bad_parameters_name_the_problem(name, params, message):
    with pytest.raises(MergeInputError, match=message):
        methods()[name].parse_params(params)


def test_defaults_follow_the_official_configs():
    p = methods()["knots"].parse_params({})
    assert (p.merge, p.density, p.scale, p.atol) == ("ties", 1.0, None, 0.0)
    from merges.methods.knots import DEFAULT_SCALE

    assert DEFAULT_SCALE == {"ta": 0.5, "ties": 0.5, "dare_ties": 0.4, "iso_c": 1.0, "tsv": 1.0}
    q = methods()["core_space"].parse_params({})
    assert (q.merge, q.merge_params, q.isotropize, q.basis) == ("tsv", "", False, "factors")


def test_zero_and_duplicate_experts():
    f = lora(13)
    zero = [(torch.zeros(16, 2, dtype=torch.float64), torch.zeros(2, 12, dtype=torch.float64))] * 3
    for name in ("knots", "core_space"):
        assert factored(name, zero).abs().max() == 0
        assert dense(name, deltas(zero)).abs().max() == 0
    # three copies of one expert: rank-deficient stacks, cut to the expert's rank 2
    same = [f[0]] * 3
    info: dict = {}
    task = FactoredTask(NAME, same, (16, 12), info=info)
    m = methods()["core_space"]
    out = m.factored(task, m.parse_params({"merge": "iso_c", "merge_params": "scale=1"}))
    assert info["core_shape"] == [2, 2]
    d = same[0][0] @ same[0][1]
    s = torch.linalg.svdvals(d)[:2]
    u, _, vh = torch.linalg.svd(d, full_matrices=False)
    assert rel(out, 3 * s.mean() * u[:, :2] @ vh[:2]) <= 1e-6  # Iso-C of 3Δ within Δ's span
    want = dense("task_arithmetic", deltas(same), {"scale": 0.5})
    assert rel(factored("knots", same, {"merge": "ta"}), want) <= 1e-6


def test_knots_absolute_cut_drops_small_components():
    """atol (the official 1e-5) drops a task scaled by 1e-7 (its columns orthogonal to the others'),
    which rtol = 1e-12 keeps."""
    f = lora(14)
    q, _ = torch.linalg.qr(torch.cat([f[0][0], f[1][0]], 1))
    f[2] = ((f[2][0] - q @ (q.T @ f[2][0])) * 1e-7, f[2][1])
    d = deltas(f)
    m = methods()["knots"]
    for atol, rank in [(0.0, 6), (1e-5, 4)]:
        task = TensorTask(NAME, d.clone(), factor_dtype=torch.float64)
        params = m.parse_params({"merge": "ta", "scale": 1.0, "rtol": 1e-12, "atol": atol})
        out = m.fn(task, params)
        assert task.info["knots_rank"] == rank
        assert rel(out, d.sum(0) if atol == 0 else d[0] + d[1]) <= 1e-6
