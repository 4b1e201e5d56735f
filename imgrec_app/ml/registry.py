"""A registry of image backbones (after torchvision's ``register_model``/``get_model``).

A backbone is described by a :class:`BackboneSpec`; its factory builds a ``torch.nn.Module``
whose forward returns ``(features [N, dim], logits [N, classes] | None)``.  Factories never
download anything: weights come from a package, a local file or the torch hub cache directory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

PREPROCESS_VERSION = "p1"

# Preprocessing recipes and the tag each one puts in the model id.  "crop" (resize the shorter side
# to ``resize_size``, centre-crop ``crop_size``) is the original recipe: its tag stays "p1" so the
# vectors of existing configurations keep their id.  "pad" letterboxes the whole image into a
# ``crop_size`` square; "product" first crops to the product's bounding box on a plain background
# (``imgrec_app.ml.framing``).  Changing what a recipe does means giving it a new tag.
PREPROCESS_RECIPES: dict[str, str] = {"crop": PREPROCESS_VERSION, "pad": "pad1", "product": "prod1"}
# Pooling of the last feature map: "avg" (global average), "gem" (generalised mean, p = 3), each
# optionally "+flip" (the mean of the features of the image and its mirror image) and "+multi"
# (multi-layer features: the pooled vector, unit length, followed by the average-pooled inputs of
# two late blocks, each unit length times ``MULTI_LAYER_WEIGHT``; ``BackboneSpec.multi_dims``
# more dimensions, for backbones that declare them).
POOLINGS = ("avg", "gem")
POOLING_EXTRAS = ("flip", "multi")
# Weight of each intermediate block's part in "+multi" vectors (chosen on the demo catalogue among
# 0, 0.3, 0.5, 1: docs/EVALUATION.md).  Changing it means a new pooling tag.
MULTI_LAYER_WEIGHT = 0.5
# Numeric precision of the forward pass ("bf16": autocast to bfloat16, its own model id tag) and who
# decodes JPEGs ("torchvision": batched ``torchvision.io.decode_jpeg`` on the model's device and a
# torch resize there, its own tag; other formats are decoded by Pillow and resized the same way).
# Both change the vectors slightly, so both are part of the model id.  Set through the IMGREC
# settings ``PRECISION`` and ``DECODER`` (``services.models.configured_model``).
PRECISIONS: dict[str, str] = {"fp32": "", "bf16": "bf16"}
DECODERS: dict[str, str] = {"pillow": "", "torchvision": "tv"}
# BACKBONE_OPTIONS keys that choose the recipe; they are not passed to the factory.
RECIPE_OPTIONS = ("preprocess", "pooling", "precision", "decoder")


class WeightsNotFound(FileNotFoundError):
    """The weights a backbone needs are not on this machine; the message names the file."""


class PrecisionUnsupported(RuntimeError):
    """The configured precision has no native support on this worker's device (e.g. bf16 on a
    CPU without AVX512-BF16/AMX); the message names the fix.  Nothing is claimed or written."""


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone is: its size, preprocessing, weights identity and how to build it."""

    name: str
    dim: int
    factory: Callable[..., Any]
    resize_size: int = 256
    crop_size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    weights_version: str = "imagenet1k"
    # Callable returning the classifier head's class names (ImageNet-1k), or None.
    categories: Callable[[], list[str]] | None = None
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    # Default preprocessing recipe (a PREPROCESS_RECIPES key) and pooling ("avg", "gem+flip", ...).
    preprocess: str = "crop"
    pooling: str = "avg"
    # Base poolings the factory can build (it receives ``pooling=<base>`` when not "avg").
    poolings: tuple[str, ...] = ("avg",)
    # A PRECISIONS key and a DECODERS key (see above).
    precision: str = "fp32"
    decoder: str = "pillow"
    # Extra dimensions of "+multi" pooling (0: the backbone has no multi-layer features).
    multi_dims: int = 0

    def model_id(self, weights_version: str | None = None) -> str:
        """Identity of the vectors this backbone makes: name, weights and preprocessing/pooling."""
        return f"{self.name}:{weights_version or self.weights_version}:{self.recipe_tag}"

    @property
    def recipe_tag(self) -> str:
        """The model id's last part: "p1" for the original recipe (centre crop, average pooling,
        Pillow decoding, fp32); "p1-tv-bf16" for the same with torchvision decoding in bf16."""
        parts = [PREPROCESS_RECIPES[self.preprocess]]
        if self.pooling != "avg":
            parts.append(self.pooling.replace("+", "-"))
        parts += [t for t in (DECODERS[self.decoder], PRECISIONS[self.precision]) if t]
        return "-".join(parts)

    @property
    def pooling_base(self) -> str:
        return self.pooling.split("+", 1)[0]

    @property
    def flip(self) -> bool:
        return "flip" in self.pooling.split("+")[1:]

    @property
    def multi(self) -> bool:
        return "multi" in self.pooling.split("+")[1:]

    def with_options(self, options: dict[str, Any] | None) -> BackboneSpec:
        """This spec with ``preprocess``/``pooling`` taken from BACKBONE_OPTIONS where given.

        Raises:
            ValueError: an unknown recipe or pooling, or a pooling this backbone cannot build.
        """
        options = options or {}
        preprocess = options.get("preprocess", self.preprocess)
        if preprocess not in PREPROCESS_RECIPES:
            raise ValueError(
                f"Unknown preprocess {preprocess!r} for backbone {self.name}; "
                f"choose one of: {', '.join(PREPROCESS_RECIPES)}."
            )
        pooling = normalise_pooling(options.get("pooling", self.pooling), allowed=self.poolings, backbone=self.name)
        precision = options.get("precision", self.precision)
        if precision not in PRECISIONS:
            raise ValueError(f"Unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}.")
        decoder = options.get("decoder", self.decoder)
        if decoder not in DECODERS:
            raise ValueError(f"Unknown decoder {decoder!r}; choose one of: {', '.join(DECODERS)}.")
        if decoder != "pillow" and preprocess != "crop":
            raise ValueError(
                f"The {decoder} decoder implements the 'crop' recipe only, not {preprocess!r}; "
                "set BACKBONE_OPTIONS['preprocess'] = 'crop' to use it, or DECODER 'pillow'."
            )
        multi = "multi" in pooling.split("+")[1:]
        if multi and not self.multi_dims:
            raise ValueError(f"Backbone {self.name} has no multi-layer features; drop '+multi' from pooling.")
        base_dim = self.dim - (self.multi_dims if self.multi else 0)
        dim = base_dim + (self.multi_dims if multi else 0)
        changed = dict(preprocess=preprocess, pooling=pooling, precision=precision, decoder=decoder, dim=dim)
        if all(getattr(self, k) == v for k, v in changed.items()):
            return self
        return replace(self, **changed)


def normalise_pooling(value: Any, *, allowed: tuple[str, ...] = POOLINGS, backbone: str = "") -> str:
    """Canonical pooling string ("gem+flip"), or ValueError naming what is accepted."""
    parts = [p.strip().lower() for p in value.split("+")] if isinstance(value, str) else []
    bases = [p for p in parts if p in POOLINGS]
    extras = sorted({p for p in parts if p not in POOLINGS})
    if len(bases) != 1 or any(p not in POOLING_EXTRAS for p in extras):
        raise ValueError(
            f"Unknown pooling {value!r}; use one of {', '.join(POOLINGS)}, optionally with '+flip' and/or "
            "'+multi' (e.g. 'gem+flip', 'gem+multi')."
        )
    if bases[0] not in allowed:
        raise ValueError(f"Backbone {backbone} supports pooling {', '.join(allowed)}, not {bases[0]!r}.")
    return "+".join([bases[0], *extras])


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add (or replace) a backbone; hosts may register their own."""
    _REGISTRY[spec.name] = spec
    return spec


def get_backbone(name: str) -> BackboneSpec:
    """Return the spec registered under ``name``.

    Raises:
        KeyError: naming the registered backbones.
    """
    from imgrec_app.ml import backbones  # noqa: F401  (registers the built-ins)

    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"Unknown imgrec backbone {name!r}; registered: {', '.join(sorted(_REGISTRY))}") from None


def list_backbones() -> list[str]:
    from imgrec_app.ml import backbones  # noqa: F401

    return sorted(_REGISTRY)
