"""``imgrec_fault``: a tiny real backbone (a fixed random projection of a 4×4 thumbnail) whose
misbehaviour is chosen by the picture itself, so a test can put one bad image in a batch.

Solid-colour marker pictures (PNG, so the colour survives exactly):

- ``MARKERS["nan"]`` / ``["inf"]`` / ``["zero"]``: that row's features are NaN / +Inf / zeros;
- ``MARKERS["kill"]``: the process embedding it SIGKILLs itself (a poison image);
- anything else embeds normally.

Options (``IMGREC["BACKBONE_OPTIONS"]``, they do not change the model id): ``delay`` seconds slept
in every forward pass (to kill a worker or restart a service mid-batch), ``out_dim`` to emit
vectors of another size than the spec declares.  Registering it needs no Django.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from typing import Any

from imgrec_app.ml.registry import BackboneSpec, register_backbone

NAME = "imgrec_fault"
DIM = 32
MARKERS: dict[str, tuple[int, int, int]] = {
    "nan": (255, 0, 0),
    "inf": (0, 255, 0),
    "zero": (0, 0, 255),
    "kill": (255, 0, 255),
}


def solid_png(colour: tuple[int, int, int], size: tuple[int, int] = (48, 48)) -> bytes:
    """A picture of one colour, encoded as PNG (lossless: the colour survives exactly)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def marker_png(kind: str) -> bytes:
    """A marker picture: see ``MARKERS``."""
    return solid_png(MARKERS[kind])


def _factory(*, delay: float = 0.0, out_dim: int | None = None, **_: Any) -> Any:
    import torch
    from torch import nn

    dim = out_dim or DIM
    generator = torch.Generator().manual_seed(7)
    projection = torch.randn(3 * 4 * 4, dim, generator=generator)
    marker_colours = {k: torch.tensor(v, dtype=torch.float32) / 255 for k, v in MARKERS.items()}

    class FaultNet(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
            if delay:
                time.sleep(delay)
            thumb = nn.functional.adaptive_avg_pool2d(x.float(), 4).flatten(1)
            features = thumb @ projection.to(x.device)
            means = x.float().mean(dim=(2, 3))
            for row in range(x.shape[0]):
                kind = next(
                    (k for k, c in marker_colours.items() if torch.allclose(means[row].cpu(), c, atol=0.02)),
                    None,
                )
                if kind == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                elif kind == "nan":
                    features[row] = float("nan")
                elif kind == "inf":
                    features[row] = float("inf")
                elif kind == "zero":
                    features[row] = 0.0
            return features, None

    return FaultNet()


SPEC = register_backbone(
    BackboneSpec(
        name=NAME,
        dim=DIM,
        factory=_factory,
        resize_size=32,
        crop_size=32,
        # Inputs reach the network as plain [0, 1] RGB, so marker colours are exact.
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        weights_version="fault1",
        description="Tests only: a projection network that misbehaves on marker pictures.",
    )
)


def resized_spec(dim: int) -> BackboneSpec:
    """The same backbone (same model id) declaring another vector size: a changed backbone that
    kept its model id, as the E021 check describes."""
    return dataclasses.replace(SPEC, dim=dim, factory=lambda **o: _factory(**{**o, "out_dim": dim}))
