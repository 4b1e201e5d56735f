"""A projection head trained on frozen backbone vectors: the shop's own catalogue, learned.

Transfer learning in its cheapest useful form: the pretrained backbone stays frozen (its vectors
are already stored per image), and a small head maps them to a space where the shop's products
of one kind lie together.  Training (torch, CPU: seconds for a few thousand products) combines

* **categories**, as classification-as-metric-learning: a normalised-softmax (cosine) classifier
  with an additive margin (CosFace) whose class proxies are thrown away after training;
* **text agreement**: a symmetric InfoNCE between the head's output and a learned projection of
  the product's text vector (products without a category teach the head too);
* **pairs** ("viewed together"): InfoNCE between the two products' outputs.

A second, **learned** head (:func:`train_learned_head`) takes the product's base image vector and
its text vector side by side (:func:`learned_input`) and is trained on the categories alone: the
similar shelf fuses its cosine with the image and text ones (measured: docs/EVALUATION.md).

Serving needs no torch: :class:`ProjectionHead` is a few numpy arrays (``apply`` is two matrix
products), stored as bytes (:meth:`ProjectionHead.to_bytes`).  No Django here.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

HEAD_FORMAT = 1


class TrainingDataError(ValueError):
    """The data cannot teach a head (too few categories, products per category, ...)."""


@dataclass(frozen=True)
class HeadConfig:
    """How a head is shaped and trained (every field has a measured default, docs/EVALUATION.md).

    Attributes:
        dim: output size of the head (the tuned model's vector size).
        pca: the centred inputs are first projected on their top ``pca`` principal components
            (computed on the training products; folded into the first layer for serving), which
            makes training ~5× cheaper; 0 keeps every input dimension.
        whiten: scale each principal component to unit variance (PCA whitening).
        hidden: hidden layer of a 2-layer MLP; 0 makes the head one linear projection.
        epochs: passes over the training products.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        dropout: input and hidden dropout while training.
        scale: logit scale of the normalised softmax (cosine × scale).
        margin: additive cosine margin of the true class (CosFace); 0 = plain normalised softmax.
        text_weight: weight of the image↔text agreement loss (0: off).
        pair_weight: weight of the "viewed together" loss (0: off).
        temperature: temperature of both InfoNCE losses.
        batch_size: products per step.
        seed: every random choice of the training.
        threads: torch and BLAS CPU threads used for training (None: leave their setting). One
            by default: the matrices are small, and spinning BLAS threads on a busy machine cost
            far more than they gain (measured: 10× slower on the shared 2-core box).
        learned: also train the learned image + text head (:func:`train_learned_head`) where the
            products have text vectors.
    """

    dim: int = 256
    pca: int = 256
    whiten: bool = True
    hidden: int = 512
    epochs: int = 20
    lr: float = 2e-3
    weight_decay: float = 1e-3
    dropout: float = 0.5
    scale: float = 16.0
    margin: float = 0.2
    text_weight: float = 1.0
    pair_weight: float = 0.5
    temperature: float = 0.1
    batch_size: int = 64
    seed: int = 0
    threads: int | None = 1
    learned: bool = True

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> HeadConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(values or {}) - known
        if unknown:
            raise ValueError(f"Unknown head option(s): {', '.join(sorted(unknown))}")
        return cls(**(values or {}))


@dataclass
class ProjectionHead:
    """A trained head: ``normalise(W2 · act(W1 · (x̂ - mean) + b1) + b2)`` in numpy.

    ``x̂`` is the base vector scaled to unit length.  ``w2`` is None for a linear head.
    """

    mean: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray | None = None
    b2: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def input_dim(self) -> int:
        return int(self.w1.shape[1])

    @property
    def dim(self) -> int:
        return int((self.w2 if self.w2 is not None else self.w1).shape[0])

    def apply(self, vectors: np.ndarray, *, batch: int = 4096) -> np.ndarray:
        """Map base vectors ``[N, input_dim]`` to unit-length head vectors ``[N, dim]``."""
        X = np.asarray(vectors, dtype=np.float32)
        if X.ndim == 1:
            return self.apply(X[None, :], batch=batch)[0]
        if X.shape[1] != self.input_dim:
            raise ValueError(f"The head takes {self.input_dim}-d vectors, got {X.shape[1]}-d.")
        out = np.empty((X.shape[0], self.dim), dtype=np.float32)
        for start in range(0, X.shape[0], batch):
            x = _unit(X[start : start + batch]) - self.mean
            h = x @ self.w1.T + self.b1
            if self.w2 is not None:
                h = _gelu(h) @ self.w2.T + self.b2
            out[start : start + batch] = _unit(h)
        return out

    def to_bytes(self) -> bytes:
        arrays = {"format": np.array([HEAD_FORMAT]), "mean": self.mean, "w1": self.w1, "b1": self.b1}
        if self.w2 is not None and self.b2 is not None:
            arrays.update(w2=self.w2, b2=self.b2)
        buf = io.BytesIO()
        np.savez_compressed(buf, allow_pickle=False, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> ProjectionHead:
        with np.load(io.BytesIO(bytes(data)), allow_pickle=False) as z:
            if int(z["format"][0]) != HEAD_FORMAT:
                raise ValueError(f"Unknown head format {int(z['format'][0])}")
            has_w2 = "w2" in z.files
            return cls(
                mean=z["mean"].astype(np.float32),
                w1=z["w1"].astype(np.float32),
                b1=z["b1"].astype(np.float32),
                w2=z["w2"].astype(np.float32) if has_w2 else None,
                b2=z["b2"].astype(np.float32) if has_w2 else None,
            )


def _unit(X: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(X, axis=-1, keepdims=True)
    return X / np.maximum(norms, 1e-12)


def _gelu(x: np.ndarray) -> np.ndarray:
    # torch.nn.GELU(approximate="tanh"), so numpy serving matches torch training.
    return 0.5 * x * (1.0 + np.tanh(np.float32(math.sqrt(2.0 / math.pi)) * (x + np.float32(0.044715) * x**3)))


@dataclass
class TrainingData:
    """What a head learns from, one row per product.

    Attributes:
        vectors: base product vectors ``[N, D]``.
        labels: category index per product, -1 where the product has none.
        text: text vectors ``[N, T]`` (rows of zeros where a product has none), or None.
        pairs: ``[M, 2]`` row indices of products viewed together, or None.
    """

    vectors: np.ndarray
    labels: np.ndarray
    text: np.ndarray | None = None
    pairs: np.ndarray | None = None


def check_data(data: TrainingData, *, min_categories: int = 2, min_per_category: int = 3) -> dict[int, int]:
    """Refuse data a head cannot learn from; returns products per category index.

    Raises:
        TrainingDataError: no vectors, fewer than ``min_categories`` categories that have at
            least ``min_per_category`` products each.
    """
    if data.vectors.ndim != 2 or data.vectors.shape[0] == 0:
        raise TrainingDataError("No product vectors to learn from: index the product images first.")
    labels = np.asarray(data.labels)
    counts = {int(c): int(n) for c, n in zip(*np.unique(labels[labels >= 0], return_counts=True))}
    usable = {c: n for c, n in counts.items() if n >= min_per_category}
    if len(usable) < min_categories:
        if not counts:
            reason = "no indexed product has a category"
        elif len(counts) == 1:
            reason = "every categorised product is in one category"
        else:
            reason = (
                f"only {len(usable)} categor{'y has' if len(usable) == 1 else 'ies have'} {min_per_category}+ products"
            )
        raise TrainingDataError(
            f"Cannot learn the catalogue: {reason}. A tuning run needs at least {min_categories} "
            f"categories with {min_per_category} or more indexed products each."
        )
    return usable


def train_head(
    data: TrainingData,
    config: HeadConfig | None = None,
    *,
    progress: Callable[[int, int, float], None] | None = None,
) -> ProjectionHead:
    """Train a projection head on frozen base vectors.

    Categories with too few products (see :func:`check_data`) teach through text and pairs only.

    Args:
        data: base vectors with labels, optional text vectors and pairs.
        config: shape and training options.
        progress: called ``(epoch, epochs, loss)`` after each epoch.

    Raises:
        TrainingDataError: via :func:`check_data`.
    """
    import torch
    from torch import nn
    from torch.nn import functional as F

    config = config or HeadConfig()
    usable = check_data(data)
    if config.threads:
        torch.set_num_threads(int(config.threads))
        try:
            from threadpoolctl import threadpool_limits

            threadpool_limits(int(config.threads))  # numpy's BLAS (the SVD below)
        except ImportError:  # pragma: no cover - comes with scikit-learn
            pass
    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)

    X = _unit(np.asarray(data.vectors, dtype=np.float32))
    mean = X.mean(axis=0).astype(np.float32)
    Xc = X - mean
    projection = None
    if config.pca and config.pca < min(Xc.shape):
        # Principal components of the training products (economy SVD: n × D, n small).
        _, sing, vt = np.linalg.svd(Xc, full_matrices=False)
        projection = vt[: config.pca]
        if config.whiten:
            std = sing[: config.pca] / math.sqrt(max(1, Xc.shape[0] - 1))
            projection = projection / np.maximum(std, 1e-3 * std[0])[:, None]
        projection = projection.astype(np.float32)
        Xc = Xc @ projection.T
    Xt = torch.from_numpy(np.ascontiguousarray(Xc, dtype=np.float32))
    # Re-index usable categories to 0..C-1; others become -1 (unlabelled).
    remap = {c: i for i, c in enumerate(sorted(usable))}
    y = torch.tensor([remap.get(int(c), -1) for c in data.labels], dtype=torch.long)
    n, d = Xt.shape
    classes = len(remap)

    has_text = data.text is not None and config.text_weight > 0
    if has_text:
        T = torch.from_numpy(_unit(np.asarray(data.text, dtype=np.float32)))
        text_mask = T.abs().sum(dim=1) > 0
        has_text = bool(text_mask.any())
    pairs = None
    if data.pairs is not None and len(data.pairs) and config.pair_weight > 0:
        pairs = torch.as_tensor(np.asarray(data.pairs), dtype=torch.long)

    if config.hidden:
        body: nn.Sequential = nn.Sequential(
            nn.Dropout(config.dropout),
            nn.Linear(d, config.hidden),
            nn.GELU(approximate="tanh"),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, config.dim),
        )
    else:
        body = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(d, config.dim))
    proxies = nn.Parameter(F.normalize(torch.randn(classes, config.dim, generator=gen), dim=1))
    params = list(body.parameters()) + [proxies]
    text_proj = None
    if has_text:
        text_proj = nn.Linear(T.shape[1], config.dim, bias=False)
        params += list(text_proj.parameters())
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps = max(1, math.ceil(n / config.batch_size) * config.epochs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=steps, pct_start=0.1)

    def info_nce(a: Any, b: Any) -> Any:
        logits = a @ b.T / config.temperature
        target = torch.arange(a.shape[0])
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2

    body.train()
    for epoch in range(config.epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, config.batch_size):
            idx = order[start : start + config.batch_size]
            z = F.normalize(body(Xt[idx]), dim=1)
            loss = torch.zeros(())
            yb = y[idx]
            lab = yb >= 0
            if lab.any():
                cos = z[lab] @ F.normalize(proxies, dim=1).T
                cos = cos - config.margin * F.one_hot(yb[lab], classes).float()
                loss = loss + F.cross_entropy(config.scale * cos, yb[lab])
            if text_proj is not None:
                tm = text_mask[idx]
                if int(tm.sum()) > 1:
                    tz = F.normalize(text_proj(T[idx][tm]), dim=1)
                    loss = loss + config.text_weight * info_nce(z[tm], tz)
            if pairs is not None:
                pb = pairs[torch.randint(len(pairs), (min(len(pairs), config.batch_size),), generator=gen)]
                za = F.normalize(body(Xt[pb[:, 0]]), dim=1)
                zb = F.normalize(body(Xt[pb[:, 1]]), dim=1)
                loss = loss + config.pair_weight * info_nce(za, zb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if progress:
            progress(epoch + 1, config.epochs, total / n)

    body.eval()
    linears = [m for m in body if isinstance(m, nn.Linear)]
    weights = [
        (m.weight.detach().numpy().astype(np.float32), m.bias.detach().numpy().astype(np.float32)) for m in linears
    ]
    w1 = weights[0][0] if projection is None else weights[0][0] @ projection  # fold the PCA in
    head = ProjectionHead(mean=mean, w1=np.ascontiguousarray(w1, dtype=np.float32), b1=weights[0][1].copy())
    if len(weights) == 2:
        head.w2, head.b2 = weights[1][0].copy(), weights[1][1].copy()
    head.meta = {
        "config": asdict(config),
        "classes": classes,
        "products": n,
        "text": has_text,
        "pairs": 0 if pairs is None else len(pairs),
    }
    return head


def learned_input(vectors: np.ndarray, text: np.ndarray) -> np.ndarray:
    """The learned head's input: ``[unit(image vector), unit(text vector)]`` per row."""
    return np.hstack([_unit(np.asarray(vectors, dtype=np.float32)), _unit(np.asarray(text, dtype=np.float32))])


def train_learned_head(data: TrainingData, config: HeadConfig | None = None) -> ProjectionHead:
    """Train the learned head: ``config``'s shape on image + text inputs, categories only.

    Only products with a text vector take part (the others never get a learned vector); pairs
    and the text agreement loss are not used (the text is an input here).

    Raises:
        TrainingDataError: no text vectors, or too few categorised products with text.
    """
    config = config or HeadConfig()
    if data.text is None:
        raise TrainingDataError("No text vectors: the learned head needs the products' texts.")
    rows = np.flatnonzero(np.abs(np.asarray(data.text)).sum(axis=1) > 0)
    if len(rows) == 0:
        raise TrainingDataError("No text vectors: the learned head needs the products' texts.")
    joint = TrainingData(learned_input(data.vectors[rows], data.text[rows]), np.asarray(data.labels)[rows])
    head = train_head(joint, replace(config, text_weight=0.0, pair_weight=0.0))
    head.meta["learned"] = True
    return head
