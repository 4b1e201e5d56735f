"""Simulated shoppers with a taste beyond category and popularity (``--shopper-model taste``).

The default simulated shoppers (:func:`~imgrec_app.services.evaluation_foryou.simulate_shoppers`)
choose a category, then a product by shop-wide popularity: nothing else about a product carries
signal, so "most popular in the viewed categories" is their generating model and no shelf can
beat it by much (docs/EVALUATION.md).  Real shoppers also share tastes across products: a colour,
a style.  These shoppers add two, both taken from the catalogue's *own* ground truth and never
from imgrec's vectors (which would measure imgrec against itself):

* **colour**: the dominant colour family of the product's own photo, read from its pixels with a
  plain hue histogram (:func:`colour_family`): the same fact a shopper sees, measured without the
  model under test.  A shelf can pick it up from the photo (or a colour word in the text), or
  from what other shoppers with the same taste viewed.
* **style**: a latent label per product drawn from the seeded RNG (``STYLES`` of them), shown by
  nothing but behaviour: only what other shoppers of the same style viewed together reveals it.

A shopper keeps the category behaviour of the default model (one or two preferred categories,
85 % of views there, popularity 1/rank inside a category, one ranking per category shared by every
shopper) and draws one preferred colour (from the colours of their main category's products) and
one style; a product matching the colour weighs ``TASTE_BOOST`` times more, matching the style
too another ``TASTE_BOOST`` times.  :func:`taste_next_view_probabilities` is the generator's own
P(next view), so the bench's oracle ceiling is exact for these shoppers too.
"""

from __future__ import annotations

import colorsys
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from imgrec_app.services.evaluation_common import PREFERRED_SHARE, Catalogue

# A product of the shopper's colour (style) is this many times likelier to be viewed than one of
# another colour (style) with the same popularity.
TASTE_BOOST = 3.0
STYLES = 3
# The hue families of colour_family(), 60° each, and "neutral" (white, grey, black).
HUE_FAMILIES = ("red", "yellow", "green", "cyan", "blue", "magenta")
NEUTRAL = "neutral"
# A photo is "neutral" when fewer than this share of its opaque pixels are coloured.
MIN_COLOURED_SHARE = 0.15


def colour_family(image: Any) -> str:
    """The dominant colour family of a product photo (a PIL image), by a hue histogram.

    The photo is reduced to 48 × 48; transparent pixels are dropped; a pixel is *coloured* when its
    saturation is ≥ 0.25 and its value ≥ 0.2.  Fewer than ``MIN_COLOURED_SHARE`` coloured pixels:
    ``"neutral"``; otherwise the most frequent 60° hue family, red centred on 0°.
    """
    small = image.convert("RGBA").resize((48, 48))
    opaque = coloured = 0
    votes: Counter[str] = Counter()
    for r, g, b, a in np.asarray(small).reshape(-1, 4).tolist():
        if a < 128:
            continue
        opaque += 1
        h, s, v = colorsys.rgb_to_hsv(r / 255, g / 255, b / 255)
        if s >= 0.25 and v >= 0.2:
            coloured += 1
            votes[HUE_FAMILIES[int(((h * 360 + 30) % 360) // 60)]] += 1
    if not opaque or coloured < MIN_COLOURED_SHARE * opaque:
        return NEUTRAL
    return votes.most_common(1)[0][0]


def product_colours(catalogue: Catalogue) -> dict[str, str]:
    """Each recommendable product's colour family, from its primary (else first) indexed photo.

    Products whose photo cannot be read get none (their colour never matches a taste).
    """
    from PIL import Image

    from imgrec_app.hosts import get_image_source, product_content_type
    from imgrec_app.models import IndexedImage

    wanted = set(catalogue.recommendable)
    rows = (
        IndexedImage.objects.filter(content_type=product_content_type(), object_id__in=wanted)
        .order_by("object_id", "-is_primary", "pk")
        .values_list("object_id", "source", "file_name")
    )
    first: dict[str, tuple[str, str]] = {}
    for obj, source, name in rows:
        first.setdefault(obj, (source, name))
    out: dict[str, str] = {}
    for obj, (source_key, name) in first.items():
        image_source = get_image_source(source_key)
        storage = image_source.model._meta.get_field(image_source.field).storage  # type: ignore[union-attr]
        try:
            with storage.open(name, "rb") as fh, Image.open(fh) as img:
                out[obj] = colour_family(img)
        except (OSError, ValueError):
            continue
    return out


@dataclass
class TasteShopper:
    """One simulated shopper's true tastes (what an oracle would know)."""

    preferred: list[str]
    shares: list[float]
    colour: str | None
    style: int


@dataclass
class TasteWorld:
    """The catalogue as these shoppers see it: categories, popularity, colours and styles."""

    by_cat: dict[str, list[str]]
    cats: list[str]
    prior: dict[str, float]
    colour: dict[str, str]
    style: dict[str, int]

    def weight(self, shopper: TasteShopper, item: str) -> float:
        w = self.prior[item]
        if shopper.colour is not None and self.colour.get(item) == shopper.colour:
            w *= TASTE_BOOST
        if self.style[item] == shopper.style:
            w *= TASTE_BOOST
        return w


def taste_world(catalogue: Catalogue, colours: dict[str, str], rng: random.Random) -> TasteWorld | None:
    """Popularity rankings (as the default model draws them) and one latent style per product."""
    by_cat: dict[str, list[str]] = defaultdict(list)
    for item in catalogue.recommendable:
        cat = catalogue.category.get(item)
        if cat is not None:
            by_cat[cat].append(item)
    cats = sorted((c for c, items in by_cat.items() if len(items) >= 3), key=str)
    if not cats:
        return None
    prior: dict[str, float] = {}
    for c in cats:
        ranking = list(by_cat[c])
        rng.shuffle(ranking)
        prior.update({item: 1.0 / (rank + 1) for rank, item in enumerate(ranking)})
    style = {item: rng.randrange(STYLES) for c in cats for item in by_cat[c]}
    return TasteWorld(dict(by_cat), cats, prior, dict(colours), style)


def simulate_taste_shoppers(
    catalogue: Catalogue,
    *,
    count: int,
    events: int,
    rng: random.Random,
    colours: dict[str, str] | None = None,
) -> tuple[TasteWorld | None, list[tuple[TasteShopper, list[str]]]]:
    """Browsing sessions of shoppers with a category preference, a colour and a style.

    Returns:
        The world (for an oracle) and ``(the shopper's tastes, browsed product ids in order)`` per
        shopper.
    """
    colours = product_colours(catalogue) if colours is None else colours
    world = taste_world(catalogue, colours, rng)
    if world is None:
        return None, []
    sessions = []
    for _ in range(count):
        preferred = rng.sample(world.cats, min(len(world.cats), rng.choice([1, 2])))
        main = rng.uniform(0.5, 0.8)
        shares = [1.0] if len(preferred) == 1 else [main, 1.0 - main]
        palette = sorted(Counter(world.colour[i] for i in world.by_cat[preferred[0]] if i in world.colour).items())
        colour = rng.choices([c for c, _ in palette], [n for _, n in palette])[0] if palette else None
        shopper = TasteShopper(list(preferred), shares, colour, rng.randrange(STYLES))
        browsed: list[str] = []
        while len(browsed) < events:
            cat = rng.choices(preferred, shares)[0] if rng.random() < PREFERRED_SHARE else rng.choice(world.cats)
            options = [i for i in world.by_cat[cat] if i not in browsed]
            if options:
                browsed.append(rng.choices(options, [world.weight(shopper, i) for i in options])[0])
            elif all(all(i in browsed for i in world.by_cat[c]) for c in world.cats):
                break
        sessions.append((shopper, browsed))
    return world, sessions


def taste_next_view_probabilities(world: TasteWorld, shopper: TasteShopper, seen: set[str]) -> dict[str, float]:
    """The generator's P(next view = i) for every unseen product (what an oracle ranks by)."""
    share = dict(zip(shopper.preferred, shopper.shares))
    p: dict[str, float] = {}
    for c in world.cats:
        unseen = [i for i in world.by_cat[c] if i not in seen]
        total = sum(world.weight(shopper, i) for i in unseen) or 1.0
        p_cat = PREFERRED_SHARE * share.get(c, 0.0) + (1 - PREFERRED_SHARE) / len(world.cats)
        for i in unseen:
            p[i] = p_cat * world.weight(shopper, i) / total
    return p
