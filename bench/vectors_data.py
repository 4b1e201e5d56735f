"""Product vectors with the statistics of real image embeddings (shared by the benchmarks).

1. *Real*: the demo catalogue's images embedded by the configured backbone through the production
   decode (``load_rgb``) and ``Encoder.encode``; cached in ``$IMGREC_VAR_DIR/bench-vectors/``.
2. *Synthetic, N of them*: each is a real vector ``x_i`` mixed with one of its 8 nearest real
   neighbours ``x_j`` (``(1-a)·x_i + a·x_j``, ``a ~ U(0, 0.5)``), plus Gaussian noise drawn in the
   real vectors' PCA space (per-component standard deviation × ``noise``) and a small isotropic
   part for the directions the sample does not span (the tail's variance × ``noise``), then
   L2-normalised.  So the synthetic set keeps the real mean direction, the real PCA spectrum and
   the real cluster structure (products that look alike), instead of uniform random directions
   on the sphere, which have no near neighbours at all and make ANN look either trivial or
   hopeless.  :func:`stats` compares both sets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench._common import catalogue_images, var_dir


def real_embeddings(count: int | None = None) -> tuple[np.ndarray, str]:
    """``[count, dim]`` unit vectors of catalogue images, and the model id that made them."""
    from imgrec_app.conf import imgrec_settings
    from imgrec_app.ml.preprocess import load_rgb
    from imgrec_app.services.indexing import load_encoder
    from imgrec_app.services.models import configured_model

    ref = configured_model()
    paths = catalogue_images(count)
    cache = var_dir() / "bench-vectors" / f"catalogue-{ref.model_id.replace(':', '_')}-{len(paths)}.npy"
    if cache.exists():
        return np.load(cache), ref.model_id
    print(f"embedding {len(paths)} catalogue images (cached in {cache})...", flush=True)
    encoder = load_encoder(ref)
    images = [
        load_rgb(
            Path(p).read_bytes(),
            allowed_formats=imgrec_settings.ALLOWED_FORMATS,
            max_pixels=imgrec_settings.MAX_IMAGE_PIXELS,
            min_size=encoder.spec.resize_size,
        )
        for p in paths
    ]
    vectors = encoder.encode(images, batch_size=32).astype(np.float32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, vectors)
    return vectors, ref.model_id


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def synthesize(real: np.ndarray, n: int, *, noise: float = 0.35, seed: int = 0, chunk: int = 20_000) -> np.ndarray:
    """``n`` unit vectors with the real set's statistics (see the module docstring)."""
    rng = np.random.default_rng(seed)
    k, dim = real.shape
    mean = real.mean(axis=0)
    _, s, vt = np.linalg.svd(real - mean, full_matrices=False)
    comp_std = s / np.sqrt(max(1, k - 1))
    # Variance the sample cannot show (dim > k): spread the smallest components' level evenly.
    tail_std = float(comp_std[-max(1, k // 10) :].mean())
    sims = real @ real.T
    np.fill_diagonal(sims, -np.inf)
    neighbours = np.argsort(-sims, axis=1)[:, :8]
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        i = rng.integers(0, k, m)
        j = neighbours[i, rng.integers(0, neighbours.shape[1], m)]
        a = rng.uniform(0.0, 0.5, m)[:, None].astype(np.float32)
        base = (1 - a) * real[i] + a * real[j]
        pca_noise = (rng.standard_normal((m, len(comp_std))).astype(np.float32) * comp_std * noise) @ vt
        iso = rng.standard_normal((m, dim)).astype(np.float32) * (tail_std * noise)
        out[start : start + m] = _normalise(base + pca_noise + iso)
    return out


def stats(x: np.ndarray, *, sample: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean cosine to the centroid, nearest-neighbour cosine (median, within a sample) and the
    share of variance in the top 10 principal components."""
    rng = np.random.default_rng(seed)
    if len(x) > sample:
        x = x[rng.choice(len(x), sample, replace=False)]
    centroid = x.mean(axis=0)
    centroid /= np.linalg.norm(centroid)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    s = np.linalg.svd(x - x.mean(axis=0), compute_uv=False) ** 2
    return {
        "n": len(x),
        "mean_cos_to_centroid": round(float((x @ centroid).mean()), 4),
        "median_nn_cos": round(float(np.median(sims.max(axis=1))), 4),
        "mean_pair_cos": round(float(sims[np.isfinite(sims)].mean()), 4),
        "top10_pc_variance": round(float(s[:10].sum() / s.sum()), 4),
    }


def exact_top_k(
    data: np.ndarray,
    queries: np.ndarray,
    k: int,
    *,
    exclude: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    chunk: int = 200_000,
) -> np.ndarray:
    """Brute-force top-``k`` row indices by cosine (unit vectors: inner product), nearest first.

    Args:
        exclude: per query, one row index to leave out (the query product itself).
        mask: rows allowed (a filtered shelf); others never returned.
    """
    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), k), dtype=np.int64)
    for start in range(0, len(data), chunk):
        block = queries @ data[start : start + chunk].T
        if mask is not None:
            block[:, ~mask[start : start + chunk]] = -np.inf
        if exclude is not None:
            rows = np.flatnonzero((exclude >= start) & (exclude < start + len(block[0])))
            block[rows, exclude[rows] - start] = -np.inf
        kk = min(k, block.shape[1])
        idx = (
            np.argpartition(-block, kk - 1, axis=1)[:, :kk]
            if block.shape[1] > kk
            else np.tile(np.arange(block.shape[1]), (len(block), 1))
        )
        s = np.take_along_axis(block, idx, axis=1)
        all_s = np.concatenate([best_s, s], axis=1)
        all_i = np.concatenate([best_i, idx + start], axis=1)
        top = np.argsort(-all_s, axis=1)[:, :k]
        best_s = np.take_along_axis(all_s, top, axis=1)
        best_i = np.take_along_axis(all_i, top, axis=1)
    return best_i
