"""The query vector of a search by photo, from any web process — with torch or without.

``IMGREC["SEARCH_EMBED"]`` says where the photo is embedded:

- ``"auto"`` (default): in this process when torch is importable, otherwise on a worker;
- ``"local"``: always in this process (needs the ``[worker]`` extra here);
- ``"worker"``: always on a worker: the photo, already resized and centre-cropped here with
  Pillow (the exact pixels the model would see, ~150 KB), goes to a short-lived task on
  ``SEARCH_QUEUE``; the worker publishes the vector to a reply queue of this request on the
  broker and the web process waits at most ``SEARCH_WORKER_TIMEOUT`` seconds for it;
- ``"off"``: search by photo is refused.

Whatever cannot answer raises :class:`SearchUnavailable` (a ``LookupError``: the API answers 503
with its message).  No result backend is needed: the reply travels over the broker.
"""

from __future__ import annotations

import base64
import importlib.util
import logging
import time
import uuid
from typing import Any

import numpy as np
from django.utils.translation import gettext as _

from imgrec_app.conf import imgrec_settings
from imgrec_app.ml.registry import get_backbone
from imgrec_app.services.models import ModelRef, configured_model

logger = logging.getLogger(__name__)

TASK_NAME = "imgrec.embed_query"
MODES = ("auto", "local", "worker", "off")
_POLL_SECONDS = 0.05


class SearchUnavailable(LookupError):
    """Search by photo cannot be answered now (turned off, no worker, broker down...)."""


def torch_available() -> bool:
    """Whether this process could import torch (checked without importing it)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # a blocked import, or a module without a spec
        return False


def search_mode() -> str:
    """Where a query photo is embedded in this process: ``"local"``, ``"worker"`` or ``"off"``."""
    mode = imgrec_settings.SEARCH_EMBED
    if mode == "auto":
        return "local" if torch_available() else "worker"
    return mode


def search_queue() -> str:
    return imgrec_settings.SEARCH_QUEUE or imgrec_settings.QUEUES["embed"]


def query_vector(img: Any, ref: ModelRef) -> np.ndarray:
    """The unit vector of an RGB PIL image for the model ``ref``.

    Raises:
        SearchUnavailable: search by photo is off, or no worker answered in time.
    """
    mode = search_mode()
    if mode == "off":
        raise SearchUnavailable(_("Search by photo is turned off on this shop."))
    if mode == "local":
        from imgrec_app.services.indexing import load_encoder

        return load_encoder(ref).encode([img])[0]
    return embed_on_worker(img, ref)


def recipe_spec(ref: ModelRef) -> Any:
    """The backbone spec with the configured preprocessing/pooling recipe (no torch needed)."""
    return get_backbone(ref.name).with_options(dict(imgrec_settings.BACKBONE_OPTIONS or {}))


def model_input(img: Any, ref: ModelRef) -> np.ndarray:
    """The ``crop_size``² uint8 RGB pixels the model sees (Pillow and numpy only), framed by the
    same recipe as the worker's catalogue photos (:func:`imgrec_app.ml.framing.model_input`)."""
    from imgrec_app.ml.framing import model_input as framed

    return framed(img, recipe_spec(ref))


def embed_on_worker(img: Any, ref: ModelRef, *, timeout: float | None = None) -> np.ndarray:
    """Send the photo's model input to a worker and wait for its vector.

    Raises:
        SearchUnavailable: the broker is unreachable, no worker answered within the timeout, or
            the worker could not embed the photo.
    """
    from celery import current_app

    wait = float(timeout if timeout is not None else imgrec_settings.SEARCH_WORKER_TIMEOUT)
    pixels = model_input(img, ref)
    reply_to = f"imgrec.reply.{uuid.uuid4().hex}"
    deadline = time.time() + wait
    payload = {
        "reply_to": reply_to,
        "model_id": ref.model_id,
        "shape": list(pixels.shape),
        "pixels": base64.b64encode(pixels.tobytes()).decode("ascii"),
        "deadline": deadline,
    }
    try:
        with current_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            channel = conn.default_channel
            channel.queue_declare(queue=reply_to, durable=False, auto_delete=True)
            try:
                current_app.send_task(
                    TASK_NAME,
                    args=[payload],
                    queue=search_queue(),
                    expires=wait,
                    ignore_result=True,
                    retry=True,
                    retry_policy={"max_retries": 1, "interval_start": 0.2},
                )
                reply = _wait_for_reply(channel, reply_to, deadline)
            finally:
                _delete_queue(channel, reply_to)
    except SearchUnavailable:
        raise
    except Exception as exc:
        logger.warning("imgrec search by photo: the broker cannot be reached (%s)", exc)
        raise SearchUnavailable(
            _("Search by photo is unavailable right now: the task queue cannot be reached.")
        ) from exc
    if reply is None:
        raise SearchUnavailable(
            _("Search by photo is unavailable right now: no worker answered within %(seconds)s s.")
            % {"seconds": f"{wait:g}"}
        )
    if reply.get("error"):
        raise SearchUnavailable(_("Search by photo failed on the worker: %(error)s") % {"error": reply["error"]})
    vector = np.asarray(reply.get("vector", ()), dtype=np.float32)
    if reply.get("model_id") != ref.model_id or vector.shape != (ref.dim,):
        raise SearchUnavailable(_("The worker embedded the photo with another model; try again later."))
    return vector


def _wait_for_reply(channel: Any, queue: str, deadline: float) -> dict[str, Any] | None:
    while True:
        message = channel.basic_get(queue=queue, no_ack=True)
        if message is not None:
            body = message.decode()
            return body if isinstance(body, dict) else {"error": "unreadable reply"}
        if time.time() >= deadline:
            return None
        time.sleep(_POLL_SECONDS)


def _delete_queue(channel: Any, queue: str) -> None:
    try:
        channel.queue_delete(queue=queue)
    except Exception:  # the connection broke meanwhile: an auto-delete queue goes with it
        logger.debug("imgrec could not delete reply queue %s", queue, exc_info=True)


# --- the worker's side ---------------------------------------------------------------------------


def answer_query(payload: dict[str, Any]) -> str:
    """Embed a query photo sent by :func:`embed_on_worker` and publish the vector to its reply
    queue.  Returns what happened (``"answered"``, ``"expired"``, ``"failed"``)."""
    from celery import current_app

    deadline = float(payload.get("deadline", 0))
    if time.time() >= deadline:
        return "expired"  # the web process stopped waiting: nobody would read the answer
    ref = configured_model()
    reply: dict[str, Any]
    try:
        if payload.get("model_id") != ref.model_id:
            raise ValueError(f"this worker embeds with {ref.model_id}, the request was for {payload.get('model_id')}")
        shape = tuple(int(n) for n in payload["shape"])
        pixels = np.frombuffer(base64.b64decode(payload["pixels"]), dtype=np.uint8).reshape(shape)
        from imgrec_app.services.indexing import load_encoder

        result = load_encoder(ref).encode_arrays(pixels[None])
        if result.errors:
            raise RuntimeError(f"the model could not embed it ({result.errors[0]})")
        reply = {"model_id": ref.model_id, "vector": result.vectors[0].astype(float).tolist()}
    except Exception as exc:  # the web process shows it; it must not wait for its timeout
        logger.warning("imgrec could not embed a search photo: %s", exc)
        reply = {"error": str(exc)}
    if time.time() >= deadline:
        return "expired"
    with current_app.producer_or_acquire() as producer:
        producer.publish(
            reply,
            exchange="",
            routing_key=payload["reply_to"],
            serializer="json",
            retry=True,
            retry_policy={"max_retries": 1, "interval_start": 0.2},
        )
    return "failed" if "error" in reply else "answered"
