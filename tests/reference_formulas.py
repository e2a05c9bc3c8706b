"""Independent fp64 numpy formulas for every merge method, written from the spec (not the code).

Where possible a reference takes a different numerical route than the implementation:
polar factors by inverse square roots, ACTMat by least squares, RegMean by a general solve.
Each function takes deltas [T, m, n] (float64 numpy), grams (list or None) and the params dict.
"""

from __future__ import annotations

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
    return p.get("scale", 0.4) * d.sum(0)


def _ties_core(trimmed):
    total = trimmed.sum(0)
    gamma = np.sign(total)
    gamma[gamma == 0] = np.sign(gamma.sum())
    out = np.zeros(trimmed.shape[1:])
    for idx in np.ndindex(*trimmed.shape[1:]):
        vals = [trimmed[(t, *idx)] for t in range(trimmed.shape[0])]
        agree = [v for v in vals if v != 0 and np.sign(v) == gamma[idx]]
        out[idx] = sum(agree) / max(1, len(agree))
    return out


def ties(d, g, p):
    """Trim as the spec's official topk_values_mask: threshold = (d − int(d·K))-th smallest |τ|."""
    k = p.get("density", 0.2)
    trimmed = np.zeros_like(d)
    for t in range(d.shape[0]):
        a = np.sort(np.abs(d[t]).ravel())
        thr = a[max(a.size - int(a.size * k), 1) - 1]
        trimmed[t] = np.where(np.abs(d[t]) >= thr, d[t], 0.0)
    return p.get("scale", 1.0) * _ties_core(trimmed)


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
}
