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
# optionally "+flip" (the mean of the features of the image and its mirror image).
POOLINGS = ("avg", "gem")
POOLING_EXTRAS = ("flip",)
# BACKBONE_OPTIONS keys that choose preprocessing/pooling; they are not passed to the factory.
RECIPE_OPTIONS = ("preprocess", "pooling")


class WeightsNotFound(FileNotFoundError):
    """The weights a backbone needs are not on this machine; the message names the file."""


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

    def model_id(self, weights_version: str | None = None) -> str:
        """Identity of the vectors this backbone makes: name, weights and preprocessing/pooling."""
        return f"{self.name}:{weights_version or self.weights_version}:{self.recipe_tag}"

    @property
    def recipe_tag(self) -> str:
        """The model id's last part: "p1" for the original recipe (centre crop, average pooling)."""
        tag = PREPROCESS_RECIPES[self.preprocess]
        return tag if self.pooling == "avg" else f"{tag}-{self.pooling.replace('+', '-')}"

    @property
    def pooling_base(self) -> str:
        return self.pooling.split("+", 1)[0]

    @property
    def flip(self) -> bool:
        return "flip" in self.pooling.split("+")[1:]

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
        if preprocess == self.preprocess and pooling == self.pooling:
            return self
        return replace(self, preprocess=preprocess, pooling=pooling)


def normalise_pooling(value: Any, *, allowed: tuple[str, ...] = POOLINGS, backbone: str = "") -> str:
    """Canonical pooling string ("gem+flip"), or ValueError naming what is accepted."""
    parts = [p.strip().lower() for p in value.split("+")] if isinstance(value, str) else []
    bases = [p for p in parts if p in POOLINGS]
    extras = sorted({p for p in parts if p not in POOLINGS})
    if len(bases) != 1 or any(p not in POOLING_EXTRAS for p in extras):
        raise ValueError(
            f"Unknown pooling {value!r}; use one of {', '.join(POOLINGS)}, optionally with '+flip' (e.g. 'gem+flip')."
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
