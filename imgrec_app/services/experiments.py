"""A/B tests of shelf settings: ``IMGREC["EXPERIMENTS"]``, sticky assignment, variant settings applied.

An experiment names the shelves it applies to, a control and variants, each with a share of the
traffic (percent; the shares may sum to less than 100: the rest sees the defaults and is not
counted) and the ``IMGREC`` settings it overrides for that visitor's shelves::

    IMGREC["EXPERIMENTS"] = {
        "similar-text-weight": {
            "shelves": ["similar"],
            "control": "control",
            "variants": {
                "control": {"traffic": 50, "settings": {}},
                "text-heavy": {"traffic": 50, "settings": {"SIMILAR_WEIGHTS": {"image": 1, "text": 2}}},
            },
            "active": True,
        },
    }

Assignment is deterministic: a visitor's bucket is a hash of the experiment name and a stable key
(the anonymous visitor id kept in the session, or ``user:<pk>``), walked over the variants in the
order written.  Anonymous visitors need no stored row; at login their variant is stored for the
user (:class:`~imgrec_app.models.ExperimentAssignment`), so it stays the same after login and in
later sessions.  A user who already had a stored variant keeps it.  Bots and visitors who paused
personalisation are in no experiment (defaults, not counted).

The variant's settings apply through :func:`imgrec_app.conf.override` (a context variable: safe
under threads and async), so every shelf service reads them as if they were the ``IMGREC`` values.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, transaction
from django.http import HttpRequest

from imgrec_app.conf import imgrec_settings, override
from imgrec_app.models import ExperimentAssignment
from imgrec_app.services import controls, history

SHELVES = ("similar", "foryou", "bought_together", "recently_viewed", "search", "popular")
# Settings a variant may change: those the shelves read on each request.  Others (models, queues,
# the product rules) are process-wide or change what is stored, so check E050 refuses them.
VARIANT_SETTINGS = frozenset(
    {
        "SIMILAR_WEIGHTS",
        "COVIEW_MIN_VISITORS",
        "CANDIDATE_FACTOR",
        "NEAR_DUPLICATE_SIMILARITY",
        "DIVERSITY",
        "MMR_LAMBDA",
        "CATEGORY_CAP",
        "HNSW_EF_SEARCH",
        "HISTORY_LENGTH",
        "HISTORY_HALF_LIFE_DAYS",
        "MAX_INTERESTS",
        "FORYOU_WEIGHTS",
        "EXCLUDE_SEEN",
        "TRENDING_DAYS",
        "BOUGHT_TOGETHER_MIN_SUPPORT",
        "NOT_INTERESTED_SIMILARITY",
    }
)
_REQUEST_CACHE = "_imgrec_experiments"


@dataclass(frozen=True)
class Assigned:
    """The variant one visitor sees in one experiment."""

    experiment: str
    variant: str
    settings: dict[str, Any] = field(default_factory=dict)
    is_control: bool = False


def active() -> dict[str, dict[str, Any]]:
    """The configured experiments that are active (``"active"`` missing counts as True), by name."""
    config = imgrec_settings.EXPERIMENTS or {}
    if not isinstance(config, dict):
        return {}
    return {name: exp for name, exp in config.items() if isinstance(exp, dict) and exp.get("active", True)}


def bucket(experiment: str, key: str) -> float:
    """Where ``key`` falls in ``[0, 100)`` for ``experiment``: the same inputs, the same bucket."""
    digest = hashlib.sha256(f"{experiment}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10_000 / 100.0


def variant_for_key(experiment: str, key: str) -> str | None:
    """The variant ``key`` is assigned in ``experiment`` (None: outside its traffic or unknown)."""
    exp = (imgrec_settings.EXPERIMENTS or {}).get(experiment)
    if not isinstance(exp, dict):
        return None
    point, edge = bucket(experiment, key), 0.0
    for name, spec in (exp.get("variants") or {}).items():
        edge += float(spec.get("traffic", 0))
        if point < edge:
            return name
    return None


def _counted(request: HttpRequest | None) -> bool:
    return request is not None and not history.is_bot(request) and not controls.is_paused(request)


def _stored(request: HttpRequest, user: Any) -> dict[str, str]:
    cache = getattr(request, _REQUEST_CACHE, None)
    if cache is None:
        cache = dict(ExperimentAssignment.objects.filter(user=user).values_list("experiment", "variant"))
        setattr(request, _REQUEST_CACHE, cache)
    return cache


def _store(user: Any, experiment: str, variant: str) -> str:
    """Store a user's variant once; a concurrent first request may have stored it: theirs wins."""
    try:
        with transaction.atomic():
            row, _ = ExperimentAssignment.objects.get_or_create(
                user=user, experiment=experiment, defaults={"variant": variant}
            )
        return row.variant
    except IntegrityError:
        return ExperimentAssignment.objects.get(user=user, experiment=experiment).variant


def assign(request: HttpRequest | None, experiment: str) -> str | None:
    """The variant of ``experiment`` this visitor sees, or None (not in it: defaults, not counted).

    Anonymous visitors: a hash of their visitor id (created in the session on first use).  Users:
    their stored variant, else a hash of ``user:<pk>`` stored on first use (one row per user and
    experiment, ever).  Bots, paused visitors and inactive/unknown experiments: None.

    Args:
        request: the visitor's request.
        experiment: the experiment's name in ``IMGREC["EXPERIMENTS"]``.
    """
    if experiment not in active() or not _counted(request):
        return None
    assert request is not None
    user = history._user(request)
    if user is None:
        vid = history.visitor_id(request, create=True)
        return variant_for_key(experiment, str(vid)) if vid is not None else None
    stored = _stored(request, user)
    if experiment not in stored:
        stored[experiment] = _store(user, experiment, variant_for_key(experiment, f"user:{user.pk}") or "")
    return stored[experiment] or None


def for_shelf(request: HttpRequest | None, shelf: str) -> Assigned | None:
    """The visitor's variant of the (first active) experiment on ``shelf``, or None."""
    for name, exp in active().items():
        if shelf in (exp.get("shelves") or []):
            variant = assign(request, name)
            if variant is None:
                return None
            spec = exp["variants"].get(variant) or {}
            return Assigned(name, variant, dict(spec.get("settings") or {}), variant == exp.get("control"))
    return None


@contextlib.contextmanager
def applied(request: HttpRequest | None, shelf: str) -> Iterator[Assigned | None]:
    """Run a shelf with this visitor's variant settings (yields the assignment, None outside any)."""
    assigned = for_shelf(request, shelf)
    with override(assigned.settings if assigned else None):
        yield assigned


def assignments(request: HttpRequest | None) -> list[dict[str, Any]]:
    """This visitor's own assignments in the active experiments (for the API)."""
    out = []
    for name, exp in active().items():
        variant = assign(request, name)
        out.append(
            {
                "experiment": name,
                "variant": variant,
                "shelves": list(exp.get("shelves") or []),
                "is_control": variant is not None and variant == exp.get("control"),
            }
        )
    return out


def merge_on_login(request: HttpRequest, user: Any) -> int:
    """Store the anonymous visitor's variants for ``user`` (who keeps any variant stored before).

    Called at login before the history merge drops the visitor id; returns how many were stored.
    """
    vid = history.visitor_id(request)
    if vid is None:
        return 0
    before = set(ExperimentAssignment.objects.filter(user=user).values_list("experiment", flat=True))
    stored = 0
    for name in active():
        if name not in before:
            _store(user, name, variant_for_key(name, str(vid)) or "")
            stored += 1
    if hasattr(request, _REQUEST_CACHE):
        delattr(request, _REQUEST_CACHE)
    return stored
