"""A registry of image backbones (after torchvision's ``register_model``/``get_model``).

A backbone is described by a :class:`BackboneSpec`; its factory builds a ``torch.nn.Module``
whose forward returns ``(features [N, dim], logits [N, classes] | None)``.  Factories never
download anything: weights come from a package, a local file or the torch hub cache directory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

PREPROCESS_VERSION = "p1"


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

    def model_id(self, weights_version: str | None = None) -> str:
        """Identity of the vectors this backbone makes: name, weights and preprocessing."""
        return f"{self.name}:{weights_version or self.weights_version}:{PREPROCESS_VERSION}"


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
