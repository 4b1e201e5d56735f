"""The image encoder: a backbone loaded once per process, batched inference, unit vectors out.

Interface (sentence-transformers minus the 15 arguments): ``dim``, ``model_id``,
``encode(images, *, batch_size) -> np.ndarray`` of L2-normalised float32 rows.  CUDA when
available (AMP, channels_last, uint8 transfer from pinned memory and normalisation on the
device), CPU otherwise.  ``precision="bf16"`` (part of the model id) runs the forward pass under
bfloat16 autocast, refused where the device has no native bf16 (:class:`PrecisionUnsupported`).
With the ``torchvision`` decoder, :meth:`Encoder.encode_payloads` decodes JPEG batches on the
device (:mod:`imgrec_app.ml.tensor_decode`).
On CUDA out-of-memory a batch is halved down to single images; a single image that still fails
is reported as failed instead of killing the worker.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from imgrec_app.ml.backbones import weights_version_for
from imgrec_app.ml.framing import model_input
from imgrec_app.ml.hardware import native_bf16_cpu
from imgrec_app.ml.registry import RECIPE_OPTIONS, BackboneSpec, PrecisionUnsupported, get_backbone
from imgrec_app.ml.tensor_decode import Payload, device_batch

logger = logging.getLogger(__name__)


@dataclass
class EncodeResult:
    """Vectors for the rows that worked; ``errors`` maps a row index to a reason code."""

    vectors: np.ndarray
    labels: list[list[dict[str, Any]]]
    errors: dict[int, str]


class Encoder:
    """A loaded backbone ready to embed batches of RGB images."""

    def __init__(
        self,
        spec: BackboneSpec,
        *,
        options: dict[str, Any] | None = None,
        device: str = "auto",
        amp: str | None = "fp16",
        threads: int | None = None,
        top_labels: int = 5,
        allow_emulated_bf16: bool = False,
    ) -> None:
        """Build the backbone on ``device``.

        Raises:
            PrecisionUnsupported: ``precision`` bf16 without native support on the device (unless
                ``allow_emulated_bf16``, for tests: same numbers, emulated and slow).
        """
        import torch

        self.options = dict(options or {})
        # preprocess/pooling from the options (ValueError on unknown ones) are part of the model id.
        spec = spec.with_options(self.options)
        self.spec = spec
        self.dim = spec.dim
        self.model_id = spec.model_id(weights_version_for(spec, self.options))
        if threads:
            torch.set_num_threads(int(threads))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.top_labels = top_labels
        factory_options = {k: v for k, v in self.options.items() if k != "weights_version" and k not in RECIPE_OPTIONS}
        if spec.pooling_base != "avg":
            factory_options["pooling"] = spec.pooling_base
        if spec.multi:
            factory_options["multi"] = True
        model = spec.factory(**factory_options)
        model.eval()
        self.amp_dtype = None
        if self.device.type == "cuda":
            model = model.to(self.device, memory_format=torch.channels_last)
            if amp:
                self.amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[amp]
        else:
            model = model.to(memory_format=torch.channels_last)
        if spec.precision == "bf16":
            self._check_bf16(torch, allow_emulated_bf16)
            self.amp_dtype = torch.bfloat16  # on CUDA too: the model id says bf16, CUDA_AMP yields
        self.model = model
        self._mean = torch.tensor(spec.mean, device=self.device).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(spec.std, device=self.device).view(1, 3, 1, 1) * 255.0
        self.categories = spec.categories() if spec.categories else None
        # One forward pass at a time per process: the model is shared by the worker's threads.
        self._lock = threading.Lock()

    def _check_bf16(self, torch: Any, allow_emulated: bool) -> None:
        if self.device.type == "cuda":
            native = bool(torch.cuda.is_bf16_supported())
            where = f"the GPU {torch.cuda.get_device_name(self.device)}"
        elif self.device.type == "cpu":
            native = native_bf16_cpu()
            where = "this CPU (no avx512_bf16 or amx_bf16 flag in /proc/cpuinfo)"
        else:
            native, where = False, f"device {self.device}"
        if not native and not allow_emulated:
            raise PrecisionUnsupported(
                f"IMGREC['PRECISION'] = 'bf16' but {where} has no native bfloat16: it would run "
                "emulated, slower than fp32. Run this worker with PRECISION 'fp32' (another model id) "
                "or on a CPU with AVX512-BF16/AMX or a GPU with bf16; images stay pending meanwhile."
            )

    @property
    def decoder(self) -> str:
        """Who decodes JPEGs: "pillow" (decode threads, :meth:`preprocess`) or "torchvision"
        (:meth:`encode_payloads`, on the device)."""
        return self.spec.decoder

    @property
    def decode_size(self) -> int:
        """The shorter side a JPEG may be reduced to while decoding (``load_rgb``'s ``min_size``)."""
        return self.spec.resize_size

    def preprocess(self, img: Any) -> np.ndarray:
        """An RGB PIL image → uint8 HWC array of ``crop_size``² pixels, by the spec's recipe.

        Every image the model sees comes through here: catalogue photos in the worker and search
        photos in the web process alike, so both are framed the same way.
        """
        return model_input(img, self.spec)

    def encode(self, images: Sequence[Any], *, batch_size: int = 32) -> np.ndarray:
        """Embed RGB PIL images; returns an ``[N, dim]`` float32 array of unit vectors.

        Raises:
            RuntimeError: when an image cannot be embedded even alone.
        """
        arrays = np.stack([self.preprocess(img) for img in images]) if images else None
        if arrays is None:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        for start in range(0, len(arrays), batch_size):
            result = self.encode_arrays(arrays[start : start + batch_size])
            if result.errors:
                raise RuntimeError(f"Could not embed images: {result.errors}")
            out.append(result.vectors)
        return np.concatenate(out)

    def encode_arrays(self, arrays: np.ndarray) -> EncodeResult:
        """Embed a uint8 ``[N, H, W, 3]`` batch; rows that fail are listed in ``errors``."""
        with self._lock:
            return self._encode_split(arrays, 0)

    def encode_payloads(self, payloads: Sequence[Payload]) -> EncodeResult:
        """Embed a sub-batch of :class:`~imgrec_app.ml.tensor_decode.Payload` (the ``torchvision``
        decoder): JPEGs decoded in one call on the device, every picture resized there; rows that
        cannot be decoded or embedded are listed in ``errors`` with an ImageError code."""
        with self._lock:
            pixels, errors = device_batch(
                payloads, resize_size=self.spec.resize_size, crop_size=self.spec.crop_size, device=self.device
            )
            ok = [row for row in range(len(payloads)) if row not in errors]
            vectors = np.full((len(payloads), self.dim), np.nan, dtype=np.float32)
            labels: list[list[dict[str, Any]]] = [[] for _ in payloads]
            if ok:
                result = self._encode_split(pixels, 0)
                for j, row in enumerate(ok):
                    vectors[row], labels[row] = result.vectors[j], result.labels[j]
                    if j in result.errors:
                        errors[row] = result.errors[j]
            return EncodeResult(vectors, labels, errors)

    def _encode_split(self, arrays: np.ndarray, offset: int) -> EncodeResult:
        import torch

        try:
            vectors, labels = self._forward(arrays)
            return EncodeResult(vectors, labels, {})
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if len(arrays) == 1:
                logger.warning("CUDA out of memory on a single image (row %s)", offset)
                return EncodeResult(np.full((1, self.dim), np.nan, dtype=np.float32), [[]], {offset: "out_of_memory"})
            half = len(arrays) // 2
            logger.warning("CUDA out of memory on a batch of %s; halving", len(arrays))
            a = self._encode_split(arrays[:half], offset)
            b = self._encode_split(arrays[half:], offset + half)
            return EncodeResult(np.concatenate([a.vectors, b.vectors]), a.labels + b.labels, {**a.errors, **b.errors})

    def _forward(self, arrays: np.ndarray) -> tuple[np.ndarray, list[list[dict[str, Any]]]]:
        import torch

        with torch.inference_mode():
            if isinstance(arrays, torch.Tensor):  # already on the device (encode_payloads)
                x = arrays
            elif self.device.type == "cuda":
                # From pinned memory the copy is one DMA transfer that does not hold the host thread.
                x = torch.from_numpy(arrays).pin_memory().to(self.device, non_blocking=True)
            else:
                x = torch.from_numpy(arrays)
            x = x.permute(0, 3, 1, 2).float()
            x = ((x - self._mean) / self._std).contiguous(memory_format=torch.channels_last)
            features, logits = self._run(x)
            if self.spec.flip:
                # Flip averaging: the mirror image's features count as much (labels from the original).
                features = (
                    features.float() + self._run(x.flip(3).contiguous(memory_format=torch.channels_last))[0].float()
                ) / 2
            features = features.float()
            norms = features.norm(dim=1, keepdim=True)
            vectors = features / norms.clamp_min(1e-12)
            # Zero rows stay zero (and are rejected by the caller), NaN stays NaN.
            vectors = torch.where(norms > 0, vectors, torch.zeros_like(vectors))
            labels: list[list[dict[str, Any]]] = [[] for _ in range(len(arrays))]
            if logits is not None and self.categories and self.top_labels:
                probs = logits.float().softmax(dim=1)
                scores, idx = probs.topk(min(self.top_labels, probs.shape[1]), dim=1)
                for row, (s_row, i_row) in enumerate(zip(scores.tolist(), idx.tolist())):
                    labels[row] = [
                        {"label": self.categories[i], "score": round(float(s), 4)} for s, i in zip(s_row, i_row)
                    ]
            return vectors.cpu().numpy().astype(np.float32), labels

    def _run(self, x: Any) -> Any:
        import torch

        if self.amp_dtype is not None:
            with torch.autocast(self.device.type, dtype=self.amp_dtype):
                return self.model(x)
        return self.model(x)


_ENCODERS: dict[tuple, Encoder] = {}
_ENCODERS_LOCK = threading.Lock()


def get_encoder(
    name: str,
    *,
    options: dict[str, Any] | None = None,
    device: str = "auto",
    amp: str | None = "fp16",
    threads: int | None = None,
    top_labels: int = 5,
) -> Encoder:
    """The process-wide encoder for a backbone and options, loaded on first use."""
    key = (name, tuple(sorted((options or {}).items())), device, amp, threads, top_labels)
    with _ENCODERS_LOCK:
        encoder = _ENCODERS.get(key)
        if encoder is None:
            spec = get_backbone(name)
            logger.info("Loading imgrec backbone %s on %s", name, device)
            encoder = Encoder(spec, options=options, device=device, amp=amp, threads=threads, top_labels=top_labels)
            _ENCODERS[key] = encoder
        return encoder


def clear_encoders() -> None:
    """Forget loaded encoders (tests, or after changing weights files)."""
    with _ENCODERS_LOCK:
        _ENCODERS.clear()
