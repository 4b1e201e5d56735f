"""Partial fine-tuning of an EfficientNet-Lite on the shop's catalogue, on CPU, from cached activations.

"The last backbone blocks too" (issue 11 §1) without a GPU: the frozen part of the network runs
once per image, up to the input of block ``tap``; those activations (7×7 for the last stage of
Lite0, a few KB per image) are cached, and only the last block(s), the head convolution and a
projection head are trained on them: a few epochs are seconds to minutes on two cores.

The losses are those of :mod:`imgrec_app.ml.head`: a normalised-softmax classifier with an
additive margin (CosFace) over the shop's categories, and an image↔text InfoNCE (products
without a category teach through their text).  BatchNorm statistics stay frozen (the batches
are small).  Augmentation: a horizontal flip of the cached activation map (an approximation of
the flipped image; the late layers are close to flip-equivariant).

No Django here.  The trained part is :class:`TunedTail` (a torch module; ``to_bytes`` /
``from_bytes`` store it next to the base model id).
"""

from __future__ import annotations

import copy
import io
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from imgrec_app.ml.head import TrainingDataError, check_data

TAIL_FORMAT = 1


@dataclass(frozen=True)
class FinetuneConfig:
    """What is trained and how (defaults: the best measured, docs/EVALUATION.md).

    Attributes:
        tap: first trained block (its input is what is cached); the blocks after it, the head
            convolution and the projection are trained.
        dim: output size (the tuned model's vector size).
        hidden: hidden layer of the projection MLP (0: one linear layer).
        epochs: passes over the training products.
        lr: AdamW learning rate of the projection (and class proxies, text projection).
        backbone_lr: learning rate of the trained backbone blocks and head convolution.
        weight_decay: AdamW weight decay.
        dropout: dropout before the projection.
        scale: logit scale of the normalised softmax.
        margin: additive cosine margin of the true class (CosFace).
        text_weight: weight of the image↔text InfoNCE (0: off).
        temperature: temperature of the InfoNCE.
        batch_size: products per step.
        flip: augment with horizontally flipped activation maps.
        pooling: ``gem`` or ``avg`` over the final feature map.
        seed: every random choice.
        threads: torch CPU threads while training (None: leave torch's setting).
    """

    tap: int = 15
    dim: int = 256
    hidden: int = 512
    epochs: int = 12
    lr: float = 2e-3
    backbone_lr: float = 3e-4
    weight_decay: float = 1e-3
    dropout: float = 0.3
    scale: float = 16.0
    margin: float = 0.2
    text_weight: float = 1.0
    temperature: float = 0.1
    batch_size: int = 32
    flip: bool = True
    pooling: str = "gem"
    seed: int = 0
    threads: int | None = 1

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> FinetuneConfig:
        unknown = set(values or {}) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"Unknown fine-tuning option(s): {', '.join(sorted(unknown))}")
        return cls(**(values or {}))


def _tail_module(net: Any, config: FinetuneConfig, *, hidden: int, dim: int) -> Any:
    """Blocks ``tap..``, head conv + BN + swish, pooling and projection of ``net`` (deep copies)."""
    from torch import nn
    from torch.nn import functional as F

    gem_p = 3.0

    class Tail(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList(copy.deepcopy(b) for b in list(net._blocks)[config.tap :])
            self.conv_head = copy.deepcopy(net._conv_head)
            self.bn1 = copy.deepcopy(net._bn1)
            self.swish = copy.deepcopy(net._swish)
            features = self.conv_head.out_channels
            if hidden:
                self.proj = nn.Sequential(
                    nn.Dropout(config.dropout),
                    nn.Linear(features, hidden),
                    nn.GELU(approximate="tanh"),
                    nn.Linear(hidden, dim),
                )
            else:
                self.proj = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(features, dim))

        def pooled(self, x: Any) -> Any:
            for block in self.blocks:
                x = block(x)
            fmap = self.swish(self.bn1(self.conv_head(x)))
            if config.pooling == "gem":
                return fmap.clamp_min(1e-6).pow(gem_p).mean(dim=(2, 3)).pow(1.0 / gem_p)
            return fmap.mean(dim=(2, 3))

        def forward(self, x: Any) -> Any:
            return F.normalize(self.proj(F.normalize(self.pooled(x), dim=1)), dim=1)

    return Tail()


@dataclass
class TunedTail:
    """A trained tail: cached block-``tap`` activations in, unit vectors out."""

    module: Any
    config: FinetuneConfig
    proxies: np.ndarray  # [classes, dim] unit class proxies (a cosine classifier)
    classes: list[int]  # label index of each proxy row
    meta: dict[str, Any]

    def apply(self, activations: np.ndarray, *, batch: int = 64) -> np.ndarray:
        """Unit vectors ``[N, dim]`` for cached activations ``[N, C, H, W]``."""
        import torch

        self.module.eval()
        out = []
        with torch.inference_mode():
            for start in range(0, len(activations), batch):
                x = torch.from_numpy(np.ascontiguousarray(activations[start : start + batch], dtype=np.float32))
                out.append(self.module(x).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.config.dim), dtype=np.float32)

    def predict(self, vectors: np.ndarray) -> np.ndarray:
        """Category index of each (tuned, unit) vector by its nearest class proxy."""
        return np.asarray(self.classes)[np.argmax(vectors @ self.proxies.T, axis=1)]

    def to_bytes(self) -> bytes:
        import torch

        buf = io.BytesIO()
        torch.save(
            {
                "format": TAIL_FORMAT,
                "config": asdict(self.config),
                "state": self.module.state_dict(),
                "proxies": self.proxies,
                "classes": self.classes,
                "meta": self.meta,
            },
            buf,
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, net: Any) -> TunedTail:
        """Rebuild a tail on the pretrained ``net`` it was trained from (its architecture)."""
        import torch

        blob = torch.load(io.BytesIO(bytes(data)), weights_only=False)
        if blob.get("format") != TAIL_FORMAT:
            raise ValueError(f"Unknown tail format {blob.get('format')}")
        config = FinetuneConfig.from_dict(blob["config"])
        module = _tail_module(net, config, hidden=config.hidden, dim=config.dim)
        module.load_state_dict(blob["state"])
        module.eval()
        return cls(module, config, np.asarray(blob["proxies"]), list(blob["classes"]), dict(blob["meta"]))


def train_tail(
    net: Any,
    activations: np.ndarray,
    labels: np.ndarray,
    text: np.ndarray | None = None,
    config: FinetuneConfig | None = None,
    *,
    progress: Callable[[int, int, float], None] | None = None,
) -> TunedTail:
    """Fine-tune the tail of a pretrained EfficientNet-Lite ``net`` on cached activations.

    Args:
        net: the pretrained ``EfficientNet`` (``_blocks``, ``_conv_head``, ``_bn1``); not modified.
        activations: inputs of block ``config.tap``, ``[N, C, H, W]`` (float16 or float32).
        labels: category index per product, -1 without one.
        text: text vectors ``[N, T]`` (zero rows: none), or None.
        progress: called ``(epoch, epochs, mean loss)`` after each epoch.

    Raises:
        TrainingDataError: too few categories / products (as :func:`head.check_data`).
    """
    import torch
    from torch.nn import functional as F

    from imgrec_app.ml.head import TrainingData

    config = config or FinetuneConfig()
    usable = check_data(TrainingData(np.zeros((len(labels), 1), dtype=np.float32), np.asarray(labels)))
    if len(activations) != len(labels):
        raise TrainingDataError("Activations and labels differ in length.")
    if config.threads:
        torch.set_num_threads(int(config.threads))
    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    classes = sorted(usable)
    remap = {c: i for i, c in enumerate(classes)}
    y = torch.tensor([remap.get(int(c), -1) for c in labels], dtype=torch.long)
    X = torch.from_numpy(np.ascontiguousarray(activations))
    n = len(X)

    module = _tail_module(net, config, hidden=config.hidden, dim=config.dim)
    proxies = torch.nn.Parameter(F.normalize(torch.randn(len(classes), config.dim, generator=gen), dim=1))
    has_text = text is not None and config.text_weight > 0
    if has_text:
        T = torch.from_numpy(np.ascontiguousarray(text, dtype=np.float32))
        T = F.normalize(T, dim=1)
        text_mask = T.abs().sum(dim=1) > 0
        text_proj = torch.nn.Linear(T.shape[1], config.dim, bias=False)
    backbone = [p for name, p in module.named_parameters() if not name.startswith("proj.")]
    head = list(module.proj.parameters()) + [proxies] + (list(text_proj.parameters()) if has_text else [])
    opt = torch.optim.AdamW(
        [{"params": backbone, "lr": config.backbone_lr}, {"params": head, "lr": config.lr}],
        weight_decay=config.weight_decay,
    )
    steps = max(1, math.ceil(n / config.batch_size) * config.epochs)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[config.backbone_lr, config.lr], total_steps=steps, pct_start=0.15
    )

    def info_nce(a: Any, b: Any) -> Any:
        logits = a @ b.T / config.temperature
        target = torch.arange(a.shape[0])
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2

    def set_mode() -> None:
        module.train()
        for m in module.modules():  # frozen BN statistics: small batches
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()

    for epoch in range(config.epochs):
        set_mode()
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, config.batch_size):
            idx = order[start : start + config.batch_size]
            xb = X[idx].float()
            if config.flip:
                flip = torch.rand(len(idx), generator=gen) < 0.5
                xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            z = module(xb)
            loss = torch.zeros(())
            yb = y[idx]
            lab = yb >= 0
            if lab.any():
                cos = z[lab] @ F.normalize(proxies, dim=1).T
                cos = cos - config.margin * F.one_hot(yb[lab], len(classes)).float()
                loss = loss + F.cross_entropy(config.scale * cos, yb[lab])
            if has_text:
                tm = text_mask[idx]
                if int(tm.sum()) > 1:
                    loss = loss + config.text_weight * info_nce(z[tm], F.normalize(text_proj(T[idx][tm]), dim=1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if progress:
            progress(epoch + 1, config.epochs, total / n)
    module.eval()
    return TunedTail(
        module=module,
        config=config,
        proxies=F.normalize(proxies.detach(), dim=1).numpy(),
        classes=classes,
        meta={"products": n, "classes": len(classes), "text": bool(has_text)},
    )


def frozen_activations(encoder: Any, arrays: np.ndarray, tap: int, *, batch: int = 32) -> np.ndarray:
    """The input of block ``tap`` for uint8 ``[N, H, W, 3]`` model inputs (``encoder.preprocess``'s).

    ``encoder`` is an EfficientNet-Lite :class:`~imgrec_app.ml.encoder.Encoder` (its normalisation
    and frozen network); returns float16 ``[N, C, h, w]``, the cache :func:`train_tail` reads.
    """
    import torch

    net = encoder.model.net
    out = []
    with torch.inference_mode():
        for start in range(0, len(arrays), batch):
            x = torch.from_numpy(np.ascontiguousarray(arrays[start : start + batch])).permute(0, 3, 1, 2).float()
            x = ((x - encoder._mean) / encoder._std).contiguous(memory_format=torch.channels_last)
            x = net._swish(net._bn0(net._conv_stem(x)))
            for block in list(net._blocks)[:tap]:
                x = block(x)
            out.append(x.float().numpy().astype(np.float16))
    return np.concatenate(out)
