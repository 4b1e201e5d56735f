"""Recommended for you, steps 4–6: blend the sources, share the slots, explain each item.

See :mod:`imgrec_app.services.foryou` for the whole shelf.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from django.utils.translation import gettext as _

from imgrec_app.conf import imgrec_settings
from imgrec_app.services.foryou_profile import Profile
from imgrec_app.services.foryou_sources import SOURCES, Candidates, Interest, Scored
from imgrec_app.services.recommend import Recommendation


def blend(scored: list[Scored], weights: dict[str, float]) -> list[Scored]:
    """Each candidate's score for each interest: the weighted sum of its features, best first.

    score_g = w_interest × sim_g + w_coview × coview + w_category × category; the candidate's
    score is its best score_g (ties: product id).  Candidates scoring 0 are dropped.
    """
    for s in scored:
        rest = weights["coview"] * s.features["coview"] + weights["category"] * s.features["category"]
        s.scores = [weights["interest"] * sim + rest for sim in s.sims] or [rest]
        s.interest = int(np.argmax(s.scores))
        s.score = s.scores[s.interest]
    # A candidate that no weighted source supports is not recommended (the fallback fills up).
    scored = [s for s in scored if s.score > 0]
    scored.sort(key=lambda s: (-s.score, s.product_id))
    return scored


# --- 5. diversify ----------------------------------------------------------------------------------------


def _for_interest(g: int) -> Callable[[Scored], tuple[float, str]]:
    """Sort key: best score for interest ``g`` first (the last interest's for shorter score lists)."""

    def key(s: Scored) -> tuple[float, str]:
        return (-s.scores[min(g, len(s.scores) - 1)], s.product_id)

    return key


def diversify(
    ranked: list[Scored], interests: list[Interest], vectors: dict[str, np.ndarray], *, limit: int
) -> list[Scored]:
    """Share the slots by the interests' weights (heaviest first, round robin); collapse near-duplicates.

    Each interest takes its share of slots from its own ranking (score for that interest); a
    product goes to the first interest that takes it.  When an interest runs out, the others fill in.
    """
    threshold = float(imgrec_settings.NEAR_DUPLICATE_SIMILARITY)
    n_groups = max(1, len(interests))
    rankings = [sorted(ranked, key=_for_interest(g)) for g in range(n_groups)]
    shares = [max(1, math.ceil(limit * i.share)) for i in interests] or [limit]
    cursors = [0] * n_groups
    chosen: list[Scored] = []
    taken: set[str] = set()

    def duplicate(s: Scored) -> bool:
        v = vectors.get(s.product_id)
        return v is not None and any(
            c.product_id in vectors and float(np.dot(v, vectors[c.product_id])) >= threshold for c in chosen
        )

    while len(chosen) < limit and any(cursors[g] < len(rankings[g]) for g in range(n_groups)):
        for g in range(n_groups):
            added = 0
            while cursors[g] < len(rankings[g]) and added < shares[g] and len(chosen) < limit:
                s = rankings[g][cursors[g]]
                cursors[g] += 1
                if s.product_id in taken:
                    continue
                taken.add(s.product_id)
                if duplicate(s):
                    continue
                if s.sims:
                    s.interest = min(g, len(s.sims) - 1)
                    s.features["interest"] = s.sims[s.interest]
                    s.score = s.scores[s.interest]
                chosen.append(s)
                added += 1
    return chosen


# --- 6. explain -------------------------------------------------------------------------------------------


def explain(
    chosen: list[Scored],
    candidates: Candidates,
    profile: Profile,
    weights: dict[str, float],
    *,
    current: str | None,
    vectors: dict[str, np.ndarray],
    category_names: dict[str, str],
) -> list[Recommendation]:
    """Shelf items with the reason of the source that contributed most.

    Interest: "Because you viewed <the most similar product of that interest>"; co-view: "Often
    viewed with <history product>"; category: "Popular in <category>".  The product the visitor
    is looking at (``current``) is never named: the next closest history product is, or a
    generic reason when there is none.
    """
    items = []
    for s in chosen:
        contributions = {src: weights[src] * s.features[src] for src in SOURCES}
        source = max(SOURCES, key=lambda src: contributions[src])
        anchor = None
        if source == "interest":
            anchor = _interest_anchor(s, candidates, profile, current=current, vector=vectors.get(s.product_id))
            reason = (
                _("Because you viewed %(name)s") % {"name": profile.names.get(anchor, _("a product"))}
                if anchor
                else _("Based on your browsing")
            )
        elif source == "coview":
            anchor = candidates.coview_anchor.get(s.product_id)
            if anchor is None or anchor == current:
                anchor = None
                reason = _("Often viewed together")
            else:
                reason = _("Often viewed with %(name)s") % {"name": profile.names.get(anchor, _("a product"))}
        else:
            cat = s.category or ""
            name = category_names.get(cat) or profile.category_names.get(cat) or str(s.category)
            reason = _("Popular in %(category)s") % {"category": name}
        items.append(Recommendation(s.product_id, s.score, reason, f"for_you:{source}", [anchor] if anchor else []))
    return items


def _interest_anchor(
    s: Scored, candidates: Candidates, profile: Profile, *, current: str | None, vector: np.ndarray | None
) -> str | None:
    """The history product closest to the item, from its interest first, never ``current``."""
    members: list[str] = []
    if candidates.interests:
        members = [m for m in candidates.interests[s.interest].members if m != current]
    if not members:
        members = [m for m in profile.usable if m != current]
    if not members:
        return None
    primary = profile.primary
    if vector is None or primary is None:
        return members[0]
    return max(members, key=lambda m: float(np.dot(profile.vectors[primary][m], vector)))
