"""Signal handlers: keep imgrec's index in step with saved and deleted images.

Connected from ``ImgrecConfig.ready()``.  Handlers skip fixture loads (``raw=True``) and never
touch the broker inside the request's transaction: queueing happens in ``on_commit``.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db.models.signals import post_delete, post_save

from imgrec_app.hosts import image_sources

logger = logging.getLogger(__name__)

_DISPATCH_PREFIX = "imgrec_app.image_source."


def image_saved(sender: Any, instance: Any, raw: bool = False, **kwargs: Any) -> None:
    if raw:
        return
    from imgrec_app.services.indexing import track_instance

    track_instance(instance)


def image_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    from imgrec_app.hosts import sources_for_model
    from imgrec_app.services.indexing import untrack_image

    for source in sources_for_model(sender):
        untrack_image(source, instance.pk)


def product_saved(sender: Any, instance: Any, raw: bool = False, **kwargs: Any) -> None:
    if raw:
        return
    from imgrec_app.services.text import product_saved as queue_text

    queue_text(instance)


def product_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    from imgrec_app.services.indexing import forget_product

    forget_product(instance)


def user_logged_in_handler(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    """Give the visitor's anonymous history to the user who just logged in (once)."""
    if request is None:
        return
    from imgrec_app.services import controls, experiments, tracking
    from imgrec_app.services.history import merge_on_login

    try:
        # First: the history merge drops the visitor id.
        controls.merge_on_login(request, user)
        experiments.merge_on_login(request, user)
        tracking.merge_on_login(request, user)
        merge_on_login(request, user)
    except Exception:
        logger.exception("imgrec could not merge the anonymous history at login")


def register_signal_handlers() -> None:
    """Connect the handlers to every configured image source model (idempotent)."""
    from django.contrib.auth.signals import user_logged_in

    user_logged_in.connect(user_logged_in_handler, dispatch_uid=_DISPATCH_PREFIX + "login")
    try:
        sources = image_sources()
        models = {source.model for source in sources}
    except Exception:
        # A wrong IMAGE_SOURCES entry is reported by the system checks, not by ready().
        logger.exception("imgrec could not resolve its image sources")
        from imgrec_app.models import ProductImage

        models = {ProductImage}
    for model in models:
        uid = _DISPATCH_PREFIX + model._meta.label_lower
        post_save.connect(image_saved, sender=model, dispatch_uid=uid + ".save")
        post_delete.connect(image_deleted, sender=model, dispatch_uid=uid + ".delete")
    try:
        from imgrec_app.hosts import get_product_model

        product_model = get_product_model()
    except Exception:
        return  # reported by check imgrec_app.E002
    uid = _DISPATCH_PREFIX + "product." + product_model._meta.label_lower
    post_save.connect(product_saved, sender=product_model, dispatch_uid=uid + ".save")
    post_delete.connect(product_deleted, sender=product_model, dispatch_uid=uid + ".delete")
