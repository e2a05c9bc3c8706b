"""Independent fp64 numpy formulas for every merge method, written from the spec (not the code).

Where possible a reference takes a different numerical route than the implementation:
polar factors by inverse square roots, ACTMat by least squares, RegMean by a general solve.
Each function takes deltas [T, m, n] (float64 numpy), grams (list or None) and the params dict.
"""

from __future__ import annotations

import inspect
import zlib

import numpy as np
import torch


def inv_sqrt_psd(a):
    lam, q = np.linalg.eigh(a)
    return (q / np.sqrt(lam)) @ q.T


def polar_isqrt(x):
    """polar(X) = X (XᵀX)^{-1/2} for full column rank X (TSVM_2's route)."""
    return x @ inv_sqrt_psd(x.T @ x) if x.shape[0] >= x.shape[1] else inv_sqrt_psd(x @ x.T) @ x


def average(d, g, p):
    return d.sum(0) / d.shape[0]


def task_arithmetic(d, g, p):
    w = _per(p, "weight", d.shape[0], 1.0)
    total = sum(wt * x for wt, x in zip(w, d, strict=True))
    if p.get("normalize") and abs(sum(w)) >= 1e-8:
        total = total / sum(w)
    return p.get("scale", 0.4) * total


def _ties_core(trimmed, w=None, normalize=True):
    """Elect γ = sign(Σ τ̂) (zeros: the majority sign), then Σ agreeing τ̂ / Σ their weights."""
    w = w or [1.0] * trimmed.shape[0]
    total = trimmed.sum(0)
    gamma = np.sign(total)
    gamma[gamma == 0] = np.sign(gamma.sum())
    out = np.zeros(trimmed.shape[1:])
    for idx in np.ndindex(*trimmed.shape[1:]):
        agree = [
            t
            for t in range(trimmed.shape[0])
            if trimmed[(t, *idx)] != 0 and np.sign(trimmed[(t, *idx)]) == gamma[idx]
        ]
        num = sum(trimmed[(t, *idx)] for t in agree)
        den = sum(w[t] for t in agree) or 1.0
        out[idx] = num / den if normalize else num
    return out


def ties(d, g, p):
    """Trim as the spec's official topk_values_mask: threshold = (d − int(d·K))-th smallest |τ|."""
    if p.get("variant") == "mergekit":
        return ties_mergekit(d, p)
    dens, w = _per(p, "density", d.shape[0], 0.2), _per(p, "weight", d.shape[0], 1.0)
    trimmed = np.zeros_like(d)
    for t in range(d.shape[0]):
        a = np.sort(np.abs(d[t]).ravel())
        thr = a[max(a.size - int(a.size * dens[t]), 1) - 1]
        trimmed[t] = w[t] * np.where(np.abs(d[t]) >= thr, d[t], 0.0)
    return p.get("scale", 1.0) * _ties_core(trimmed, w, p.get("normalize", True))


def dare(d, g, p, name="t"):
    rate, seed = p.get("drop_rate", 0.5), p.get("seed", 0)
    out = []
    for t in range(d.shape[0]):
        gen = torch.Generator().manual_seed(seed + 1000 * t + zlib.crc32(name.encode()))
        keep = (torch.rand(d.shape[1:], generator=gen, dtype=torch.float32) >= rate).numpy()
        out.append(d[t] * keep / (1 - rate))
    out = np.stack(out)
    merged = out.sum(0) if p.get("combine", "sum") == "sum" else _ties_core(out)
    return p.get("scale", 0.4) * merged


def regmean(d, g, p):
    a = p.get("alpha", 0.9)
    gt = [a * x + (1 - a) * np.diag(np.diag(x)) for x in g]
    num = sum(dt @ x for dt, x in zip(d, gt, strict=True))
    return np.linalg.solve(sum(gt).T, num.T).T


def _top_svd(x, k):
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    return u[:, :k], s[:k], vt[:k].T


def tsv(d, g, p):
    t, m, n = d.shape
    k = min(m, n) // t
    parts = [_top_svd(x, k) for x in d]
    u = np.concatenate([a for a, _, _ in parts], 1)
    s = np.concatenate([b for _, b, _ in parts])
    v = np.concatenate([c for _, _, c in parts], 1)
    return p.get("scale", 1.0) * (polar_isqrt(u) * s) @ polar_isqrt(v).T


def iso_c(d, g, p):
    ta = d.sum(0)
    r = min(ta.shape)
    s_bar = np.linalg.norm(ta, "nuc") / r
    return p.get("scale", 1.0) * s_bar * polar_isqrt(ta)


def iso_cts(d, g, p):
    t, m, n = d.shape
    r = min(m, n)
    f = p.get("common_fraction", 0.8)
    k_ts = round((r - int(r * f)) / t) * t
    k_c, n_t = r - k_ts, k_ts // t
    uc, sc, vc = _top_svd(d.sum(0), k_c)
    blocks = [_top_svd(x - uc @ uc.T @ x, n_t) for x in d]
    u = np.concatenate([b[0] for b in blocks] + [uc], 1)
    v = np.concatenate([b[2] for b in blocks] + [vc], 1)
    s_bar = np.concatenate([b[1] for b in blocks] + [sc]).mean()
    return p.get("scale", 1.0) * s_bar * polar_isqrt(u) @ polar_isqrt(v).T


def actmat(d, g, p):
    """Least squares: min ‖S X − B‖, S = [Δ_1; …], B = [Δ_1Δ_1ᵀ; …], X = Δ*ᵀ."""
    s = np.concatenate(list(d), 0)
    b = np.concatenate([x @ x.T for x in d], 0)
    x, *_ = np.linalg.lstsq(s, b, rcond=None)
    return x.T


def ace(d, g, p):
    eps, k_frac = p.get("eps", 1e-2), p.get("k_frac", 0.3)
    t, m, n = d.shape
    tau = np.array([np.sum(x * x) for x in d])
    ell = np.log(tau + 1e-12)
    gamma = ell.var(ddof=1) / (ell.mean() ** 2 + 1e-12) if t > 1 else 0.0
    flag = gamma > 0.3
    cen = [x - x.mean(axis=0, keepdims=True) for x in d]
    sig, e = [], []
    for x in cen:
        raw = x.T @ x
        c = np.trace(raw) + 1e-12
        sig.append(raw / c if flag else raw)
        e.append(eps / c if flag else eps)
        if p.get("eps_mode", "absolute") == "relative":
            e[-1] = eps * np.trace(sig[-1]) / n
    ident = np.eye(n)
    c_agg = np.mean(sum(sig), axis=0, keepdims=True)
    if flag:
        c_agg = c_agg / (tau.mean() + 1e-12)
    a = sum(s + ee * ident for s, ee in zip(sig, e, strict=True)) + np.ones((n, 1)) @ c_agg
    b = sum(x @ (s + ee * ident) for x, s, ee in zip(cen, sig, e, strict=True))
    core = b @ np.linalg.inv(a)
    if not flag:
        return p.get("scale", 1.0) * core
    sig_bar = sum(s + ee * ident for s, ee in zip(sig, e, strict=True)) / t
    resid = sum(x @ (s - sig_bar) for x, s in zip(d, sig, strict=True))
    u, sv, vt = np.linalg.svd(resid + core, full_matrices=False)
    k = max(1, int(np.floor(k_frac * min(m, n))))
    return p.get("scale", 1.0) * (core + sv[:k].mean() * u[:, :k] @ vt[:k])


# ---- mergekit's family and methods (written from the formulas in each docstring's source) ----


def _per(p, key, t, default):
    v = p.get(key, default)
    return [float(x) for x in v] if isinstance(v, list | tuple) else [float(v)] * t


def _torch_uniform(shape, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=gen, dtype=torch.float32).numpy().astype(np.float64)


def _seed(p, t, name):
    return p.get("seed", 0) + 1000 * t + zlib.crc32(name.encode())


def _combine(sparse, p, consensus, normalize):
    t = sparse.shape[0]
    w = np.array(_per(p, "weight", t, 1.0)).reshape(-1, *[1] * (sparse.ndim - 1))
    x = sparse * w
    if consensus:
        gamma = np.where(x.sum(0) >= 0, 1.0, -1.0)
        keep = np.sign(x) == gamma
        merged = (x * keep).sum(0)
        div = (keep * w).sum(0)
        div[div == 0] = 1
    else:
        merged = x.sum(0)
        div = w.sum()
        div = 1.0 if abs(div) < 1e-8 else div
    if p.get("normalize", normalize):
        merged = merged / div
    return p.get("scale", 1.0) * merged


def _l1(x, masked):
    a, b = np.abs(x).sum(), np.abs(masked).sum()
    return masked if a < 1e-7 or b < 1e-7 else masked * a / b


def linear(d, g, p, w0):
    w = _per(p, "weight", d.shape[0], 1.0)
    total = sum(wt * (w0 + x) for wt, x in zip(w, d, strict=True))
    return (total / sum(w) if p.get("normalize", True) else total) - w0


def ties_mergekit(d, p):
    out = np.zeros_like(d)
    dens = _per(p, "density", d.shape[0], 0.2)
    for t, x in enumerate(d):
        k = max(1, int(dens[t] * x.size))
        idx = np.argsort(-np.abs(x).ravel(), kind="stable")[:k]
        flat = np.zeros(x.size)
        flat[idx] = x.ravel()[idx]
        out[t] = flat.reshape(x.shape)
    return _combine(out, p, True, True)


def _dare_masks(d, p, name, default_density):
    dens = _per(p, "density", d.shape[0], default_density)
    out = np.zeros_like(d)
    for t, x in enumerate(d):
        if dens[t] >= 1:
            out[t] = x
            continue
        keep = _torch_uniform(x.shape, _seed(p, t, name)) >= np.float32(1 - dens[t])
        masked = x * keep
        how = p.get("rescale", "inverse")
        out[t] = masked / dens[t] if how == "inverse" else _l1(x, masked) if how == "l1" else masked
    return out


def dare_linear(d, g, p, name):
    return _combine(_dare_masks(d, p, name, 0.5), p, False, False)


def dare_ties(d, g, p, name):
    return _combine(_dare_masks(d, p, name, 0.5), p, True, False)


def _crumbs(d, p):
    dens = _per(p, "density", d.shape[0], 0.9)
    gam = _per(p, "gamma", d.shape[0], 0.01)
    out = np.zeros_like(d)
    for t, x in enumerate(d):
        rows = x.reshape(-1, x.shape[-1])
        res = np.zeros_like(rows)
        if p.get("variant", "official") == "official":
            n = rows.shape[1]
            top, keep = int(gam[t] * n), int(dens[t] * n)
            for r, row in enumerate(rows):
                order = np.argsort(-np.abs(row), kind="stable")[top : top + keep]
                res[r, order] = row[order]
        else:
            n = x.size
            keep, top = int(dens[t] * n), int(gam[t] * n)
            bot = max(0, n - keep - top)
            order = np.argsort(np.abs(x).ravel(), kind="stable")[bot : bot + keep]
            res = np.zeros(n)
            res[order] = x.ravel()[order]
        out[t] = res.reshape(x.shape)
        if p.get("rescale", "none") == "l1":
            out[t] = _l1(x, out[t])
    return out


def breadcrumbs(d, g, p):
    return _combine(_crumbs(d, p), p, False, False)


def breadcrumbs_ties(d, g, p):
    return _combine(_crumbs(d, p), p, True, False)


def _magprune(d, p, name):
    dens = _per(p, "density", d.shape[0], 0.7)
    eps = _per(p, "epsilon", d.shape[0], 0.07)
    out = np.zeros_like(d)
    for t, x in enumerate(d):
        rows = x.reshape(x.shape[0], -1) if x.ndim >= 2 else x.reshape(1, -1)
        n = rows.shape[1]
        rank = np.empty_like(rows)
        for r, row in enumerate(rows):  # rank 0 = smallest magnitude
            rank[r, np.argsort(np.abs(row), kind="stable")] = np.arange(n)
        prob = (dens[t] - eps[t]) + 2 * eps[t] * rank / (n - 1)
        prob = prob.reshape(x.shape).astype(np.float32).astype(np.float64)
        keep = _torch_uniform(x.shape, _seed(p, t, name)) < prob
        masked = x * keep
        how = p.get("rescale", "inverse")
        out[t] = masked / prob if how == "inverse" else _l1(x, masked) if how == "l1" else masked
    return out


def della(d, g, p, name):
    return _combine(_magprune(d, p, name), p, True, True)


def della_linear(d, g, p, name):
    return _combine(_magprune(d, p, name), p, False, False)


def sce(d, g, p):
    official = p.get("variant", "official") == "official"
    k_frac, t = p.get("select_topk", 1.0), d.shape[0]
    sel = d
    if k_frac < 1:
        var = d.var(0).ravel()
        k = int(np.count_nonzero(var) * k_frac)
        mask = np.zeros(var.size)
        mask[np.argsort(-var, kind="stable")[:k]] = 1
        sel = d * mask.reshape(d.shape[1:])
    x = d if official else sel
    gamma = np.where(x.sum(0) >= 0, 1.0, -1.0)
    e = np.sign(x) == gamma
    w = np.array([np.mean(s**2) for s in sel])
    uniform = w.sum() == 0 if official else abs(w.sum()) < 1e-6
    w = np.full(t, 1 / t) if uniform else w / w.sum()
    ew = w.reshape(-1, *[1] * (d.ndim - 1)) * e
    den = ew.sum(0)
    den = np.where(den == 0, 1.0, den) if official else np.maximum(den, 1e-6)
    return (x * ew).sum(0) / den


def ram(d, g, p):
    eps = p.get("epsilon", 1e-5)
    out = np.zeros(d.shape[1:])
    for idx in np.ndindex(*d.shape[1:]):
        changed = [d[(t, *idx)] for t in range(d.shape[0]) if abs(d[(t, *idx)]) > eps]
        out[idx] = sum(changed) / max(1, len(changed))
    return out


def ramplus_tl(d, g, p):
    eps, r, alpha = p.get("epsilon", 1e-5), p.get("r", 0.1), p.get("alpha", 0.2)
    changed = np.abs(d) > eps
    count = changed.sum(0)
    out = np.zeros(d.shape[1:])
    for t in range(d.shape[0]):
        uniq = (changed[t] & (count == 1)).sum()
        shared = (changed[t] & (count > 1)).sum()
        lam = 1 + r * min(max(shared / max(uniq, eps), 0), alpha)
        out += np.where(changed[t] & (count == 1), lam * d[t], 0)
        out += np.where(changed[t] & (count > 1), d[t] / np.maximum(count, 1), 0)
    return out


def nearswap(d, g, p):
    return np.clip(p.get("t", 1e-4) / np.maximum(np.abs(d[0]), 1e-6), 0, 1) * d[0]


def model_stock(d, g, p):
    t = d.shape[0]
    x = d.reshape(t, -1, d.shape[-1]) if p.get("filter_wise") else d.reshape(t, 1, -1)
    cos = []
    for i in range(t):
        for j in range(i + 1, t):
            num = (x[i] * x[j]).sum(-1)
            den = np.linalg.norm(x[i], axis=-1) * np.linalg.norm(x[j], axis=-1)
            cos.append(np.clip(num / np.maximum(den, 1e-6), -1, 1))
    c = np.mean(cos, axis=0)[:, None]
    ratio = t * c / (1 + (t - 1) * c)
    return (ratio * x.mean(0)).reshape(d.shape[1:])


def _slerp(a, b, t, eps_linear):
    """Shoemake: (sin((1 − t)Ω) a + sin(tΩ) b)/sin Ω with Ω the angle between a and b."""
    cos = np.dot(a.ravel() / np.linalg.norm(a), b.ravel() / np.linalg.norm(b))
    if eps_linear(cos):
        return (1 - t) * a + t * b
    omega = np.arccos(np.clip(cos, -1, 1))
    return (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)


def slerp(d, g, p, w0):
    thr = p.get("dot_threshold", 0.9995)
    return _slerp(w0, w0 + d[0], p.get("t", 0.5), lambda c: abs(c) > thr) - w0


def nuslerp(d, g, p):
    w = _per(p, "weight", 2, 1.0)
    t = w[1] / (w[0] + w[1])
    if p.get("flatten", True):
        return _slerp(d[0], d[1], t, lambda c: 1 - c * c <= 1e-16)
    a, b = (d[0].T, d[1].T) if p.get("row_wise") else (d[0], d[1])
    out = np.stack(
        [_slerp(x, y, t, lambda c: 1 - c * c <= 1e-16) for x, y in zip(a, b, strict=True)]
    )
    return out.T if p.get("row_wise") else out


def _exp_log_sphere(m, u):
    """log_m(u) on the unit sphere: θ/sin θ (u − cos θ m)."""
    c = np.clip(m @ u, -1, 1)
    th = np.arccos(c)
    return np.zeros_like(u) if th < 1e-12 else th / np.sin(th) * (u - c * m)


def multislerp(d, g, p):
    t = d.shape[0]
    w = np.array(_per(p, "weight", t, 1.0))
    if p.get("normalize_weights", True):
        w = w / w.sum()
    x = d.reshape(t, -1)
    norms = np.linalg.norm(x, axis=1)
    u = x / norms[:, None]
    m = (w[:, None] * u).sum(0)
    m /= np.linalg.norm(m)
    v = (w[:, None] * (u - (u @ m)[:, None] * m)).sum(0)
    nv = np.linalg.norm(v)
    out = np.cos(nv) * m + np.sin(nv) * v / nv
    return (out * (norms * w).sum()).reshape(d.shape[1:])


def karcher(d, g, p, w0):
    """The Karcher mean as the zero of Σ_t log_m(u_t), by many Riemannian gradient steps."""
    t = d.shape[0]
    x = (d + w0).reshape(t, -1)
    norms = np.linalg.norm(x, axis=1)
    u = x / norms[:, None]
    m = u.mean(0)
    m /= np.linalg.norm(m)
    for _ in range(200):
        v = np.mean([_exp_log_sphere(m, ut) for ut in u], axis=0)
        nv = np.linalg.norm(v)
        if nv < 1e-15:
            break
        m = np.cos(nv) * m + np.sin(nv) * v / nv
        m /= np.linalg.norm(m)
    return (norms.mean() * m).reshape(d.shape[1:]) - w0


def cart(d, g, p):
    """Average plus λ × the rank-k truncations (numpy fp64 SVD) of each centred delta."""
    mean = d.mean(0)
    k = max(1, int(p.get("rank_fraction", 0.12) * min(mean.shape)))
    out = np.zeros_like(mean)
    for x in d:
        u, s, vt = np.linalg.svd(x - mean, full_matrices=False)
        out += (u[:, :k] * s[:k]) @ vt[:k]
    return mean + p.get("scale", 2.0) * out


def wudi(d, g, p):
    """Adam (written out, bias-corrected) on Σ_t ‖(τ − Δ_t)Δ_tᵀ‖² / ‖Δ_t‖², its gradient by the
    official code's route: 2 Σ_t ((τ − Δ_t) Δ_tᵀ) Δ_t / ‖Δ_t‖²."""
    lr, steps = p.get("lr", 1e-5), p.get("iterations", 300)
    b1, b2, eps = 0.9, 0.999, 1e-8
    tau = d.sum(0)
    m = np.zeros_like(tau)
    v = np.zeros_like(tau)
    sq = [np.sum(x * x) for x in d]
    for k in range(1, steps + 1):
        grad = sum(2 * ((tau - x) @ x.T) @ x / s for x, s in zip(d, sq, strict=True))
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad * grad
        tau = tau - lr * (m / (1 - b1**k)) / (np.sqrt(v / (1 - b2**k)) + eps)
    return p.get("scale", 1.0) * tau


# ---- low-rank (LoRA) methods: KnOTS and Core Space (spec §2.9; the papers' equations) ----


def _rank(s, rtol, atol=0.0):
    return int((s > max(atol, rtol * s[0])).sum()) if s.size else 0


def knots(d, g, p, name="t"):
    """[Δ_1 | … | Δ_T] = U S Vᵀ (numpy fp64), Z_t = S V_tᵀ merged, Δ* = U Z*; iso_c / tsv on the
    V_tᵀ blocks, then × S."""
    t = d.shape[0]
    u, s, vt = np.linalg.svd(np.concatenate(list(d), 1), full_matrices=False)
    k = _rank(s, p.get("rtol", 1e-6), p.get("atol", 0.0))
    u, s, v = u[:, :k], s[:k], np.stack(np.split(vt[:k], t, axis=1))
    merge = p.get("merge", "ties")
    scale = p.get("scale", {"ta": 0.5, "ties": 0.5, "dare_ties": 0.4}.get(merge, 1.0))
    if merge in ("iso_c", "tsv"):
        return (u * s) @ REFERENCES[merge](v, None, {"scale": scale})
    z = s[:, None] * v
    if merge == "dare_ties":
        rate = p.get("drop_rate", 0.8)
        z = np.stack(
            [
                x * (_torch_uniform(x.shape, _seed(p, i, name)) >= rate) / (1 - rate)
                for i, x in enumerate(z)
            ]
        )
    dens = p.get("density", 1.0)
    if merge == "ta":
        trimmed = np.stack([_trim(x, dens) for x in z]) if dens < 1 else z
        return u @ (scale * trimmed.sum(0))
    return u @ ties(z, None, {"density": dens, "scale": scale})


def _trim(x, dens):
    a = np.sort(np.abs(x).ravel())
    return np.where(np.abs(x) >= a[max(a.size - int(a.size * dens), 1) - 1], x, 0.0)


def _core_factors(x, rtol):
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    k = _rank(s, rtol)
    return u[:, :k] * np.sqrt(s[:k]), np.sqrt(s[:k])[:, None] * vt[:k]


def _basis(x, rtol):
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    return u[:, : _rank(s, rtol)]


def _value(text):
    try:
        return int(text) if text.lstrip("-").isdigit() else float(text)
    except ValueError:
        return {"true": True, "false": False}.get(text.lower(), text)


def core_space(d, g, p, name="t", factors=None):
    """Δ_t = (U_t√S_t)(√S_t V_tᵀ) unless `factors`; U_B, V_A: bases of the stacked B's and A's;
    M_t = U_Bᵀ B_t A_t V_A merged by the inner method's reference; Δ* = U_B M* V_Aᵀ."""
    rtol = p.get("rtol", 1e-6)
    fs = factors or [_core_factors(x, rtol) for x in d]
    ub = _basis(np.concatenate([b for b, _ in fs], 1), rtol)
    va = _basis(np.concatenate([a for _, a in fs], 0).T, rtol)
    cores = np.stack([ub.T @ b @ a @ va for b, a in fs])
    inner = {}
    for item in filter(None, p.get("merge_params", "").split(",")):
        key, value = item.split("=")
        inner[key] = [_value(v) for v in value.split(";")] if ";" in value else _value(value)
    fn = REFERENCES[p.get("merge", "tsv")]
    extra = {"name": name} if "name" in inspect.signature(fn).parameters else {}
    merged = fn(cores, None, inner, **extra)
    if p.get("isotropize", False):
        merged = np.linalg.svd(merged, compute_uv=False).mean() * polar_isqrt(merged)
    return ub @ merged @ va.T


def magnitude_prune(d, g, p):
    """Exactly int(K·n) entries of largest |Δ_t| kept (PEFT's magnitude_based_pruning), then
    λ Σ_t w_t δ_t (÷ Σ_t w_t with normalize)."""
    dens = _per(p, "density", d.shape[0], 0.2)
    out = np.zeros_like(d)
    for t, x in enumerate(d):
        if dens[t] >= 1:
            out[t] = x
            continue
        idx = np.argsort(-np.abs(x).ravel(), kind="stable")[: int(dens[t] * x.size)]
        flat = np.zeros(x.size)
        flat[idx] = x.ravel()[idx]
        out[t] = flat.reshape(x.shape)
    return _combine(out, p, False, False)


REFERENCES = {
    "average": average,
    "task_arithmetic": task_arithmetic,
    "ties": ties,
    "dare": dare,
    "regmean": regmean,
    "tsv": tsv,
    "iso_c": iso_c,
    "iso_cts": iso_cts,
    "actmat": actmat,
    "ace": ace,
    "linear": linear,
    "dare_linear": dare_linear,
    "dare_ties": dare_ties,
    "breadcrumbs": breadcrumbs,
    "breadcrumbs_ties": breadcrumbs_ties,
    "della": della,
    "della_linear": della_linear,
    "sce": sce,
    "ram": ram,
    "ramplus_tl": ramplus_tl,
    "nearswap": nearswap,
    "model_stock": model_stock,
    "slerp": slerp,
    "nuslerp": nuslerp,
    "multislerp": multislerp,
    "karcher": karcher,
    "cart": cart,
    "wudi": wudi,
    "knots": knots,
    "core_space": core_space,
    "magnitude_prune": magnitude_prune,
}
