"""Similar products in one SQL round trip, behind a shelf cache that re-checks the shop's rules.

Cold, a shelf is one statement (sent with pgvector's settings as one multi-statement string,
:func:`imgrec_app.services.search.run_knn_statement`): the k-NN of every modality *by the
product's stored vector* (``ORDER BY vector <=> (SELECT vector … WHERE object_id = %s)``: no
vector leaves or re-enters Postgres), the shop's rules inside each k-NN (``EXISTS`` on the
product's primary key), "viewed together" pairs, the distances a candidate lacks from one
modality's k-NN computed next to it, near-duplicate pairs among the candidates and the serving
model's row (so a model switch made by another process is noticed without a query of its own).
Python fuses, dedupes and diversifies the few dozen rows; one more query loads the products
(the rules applied again, primary image URLs annotated).

Cached (``SHELF_CACHE``), a shelf is one query (the API looks it up by product id first, :func:`cached_shelf`, so a cached request is that one query): the cached product ids loaded through the rules,
with the serving model and the product's vector stamp as scalar subqueries.  Any id the rules
now exclude (sold out, unpublished, deleted), a model switch or a change of the product's own
vectors throws the entry away and the shelf is computed again.  See docs/DESIGN.md, "Shelf cache".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from django.core.cache import caches
from django.db import router
from django.db.models import QuerySet
from django.db.models.expressions import RawSQL

from imgrec_app.conf import active_overrides, imgrec_settings
from imgrec_app.hosts import (
    category_field_lookup,
    get_product_model,
    product_category,
    product_content_type,
    product_key,
)
from imgrec_app.models import ProductVector, ServingModel
from imgrec_app.services import models as serving_models
from imgrec_app.services import presentation
from imgrec_app.services.similar_sql import Row, _stamp_sql, build_statement, modalities, run  # noqa: F401

CACHE_VERSION = 1


def shelf_database() -> str:
    """The database alias shelves read from: ``SHELF_DATABASE``, else the router's read alias."""
    return imgrec_settings.SHELF_DATABASE or router.db_for_read(ProductVector)


# --- the shelf cache ---------------------------------------------------------------------------------


def cache_key(product: Any, model_id: str, *, limit: int, same_category: bool, price_band: float | None) -> str:
    """Product + serving model + every setting and argument the shelf depends on."""
    s = imgrec_settings
    inputs = {
        "limit": limit,
        "same_category": same_category,
        "category": _category_value(product) if same_category else None,
        "price_band": price_band,
        "price": str(getattr(product, "price", None)) if price_band else None,
        # An experiment variant's settings (services/experiments.py): each variant its own entry.
        "variant": active_overrides(),
        "settings": [
            s.PRODUCT_MODEL,
            s.raw("RECOMMENDABLE_PRODUCTS"),
            s.PRODUCT_CATEGORY,
            s.SIMILAR_WEIGHTS,
            s.TEXT_MODEL,
            s.CANDIDATE_FACTOR,
            s.NEAR_DUPLICATE_SIMILARITY,
            s.DIVERSITY,
            s.MMR_LAMBDA,
            s.CATEGORY_CAP,
            s.COVIEW_MIN_VISITORS,
            s.HNSW_EF_SEARCH,
            s.HNSW_MAX_SCAN_TUPLES,
            s.SHELF_DATABASE,
        ],
    }
    digest = hashlib.sha1(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return f"imgrec:similar:{CACHE_VERSION}:{product_content_type().pk}:{product_key(product)}:{model_id}:{digest}"


def shelf_cache() -> Any:
    return caches[imgrec_settings.SHELF_CACHE_ALIAS]


def load_products(ids: Sequence[str], restrict: QuerySet, *, check: tuple[int, str] | None = None) -> dict[str, Any]:
    """The products among ``ids`` that the rules allow now, by id, primary image annotated.

    With ``check=(content type id, product key)`` each row also carries the serving model
    (``_imgrec_serving``) and the product's vector stamp (``_imgrec_stamp``): one query tells
    whether a cached shelf is still valid.
    """
    if not ids:
        return {}
    to_python = get_product_model()._meta.pk.to_python
    qs = presentation.with_primary_image(restrict.filter(pk__in=[to_python(i) for i in ids]))
    if check is not None:
        sm = ServingModel._meta.db_table
        model = get_product_model()
        table, pk_col = model._meta.db_table, model._meta.pk.column
        qs = qs.annotate(
            _imgrec_check=RawSQL(
                f"SELECT coalesce((SELECT model_id FROM {sm} WHERE modality = 'image'), '') || ' ' || "
                f'(EXISTS (SELECT 1 FROM "{table}" WHERE "{pk_col}"::text = %s))::text || \' \' || '
                f"{_stamp_sql(ProductVector._meta.db_table)}",
                [check[1], *check],
            )
        )
    return {product_key(p.pk): p for p in qs.order_by()}


# --- the shelf -------------------------------------------------------------------------------------


def _category_value(product: Any) -> str | None:
    """The product's category as the cache key sees it, without fetching a related row."""
    lookup = category_field_lookup()
    if lookup and hasattr(product, lookup):
        value = getattr(product, lookup)
        return None if value is None else str(value)
    return product_category(product)


def similar_products(
    product: Any, *, limit: int, same_category: bool = False, price_band: float | None = None, attach: bool = True
) -> list[Any]:
    """See :func:`imgrec_app.services.recommend.similar_products` (which calls this)."""
    from imgrec_app.services import recommend

    limit = recommend.clamp_limit(limit)
    using = shelf_database()
    rules = recommend._rules(
        same_category_as=product if same_category else None, price_band=price_band, product=product
    )
    restrict = rules.using(using)
    serving = serving_models.cached_serving_model(using=using)
    use_cache = bool(attach and imgrec_settings.SHELF_CACHE and serving is not None)
    ckey = None
    if use_cache:
        ckey = cache_key(product, serving[0], limit=limit, same_category=same_category, price_band=price_band)
        entry = shelf_cache().get(ckey)
        if entry is not None:
            items = _from_cache(entry, restrict, product)
            if items is not None:
                return items
            shelf_cache().delete(ckey)
            serving = serving_models.cached_serving_model(using=using)
            use_cache = serving is not None
            if use_cache:
                ckey = cache_key(product, serving[0], limit=limit, same_category=same_category, price_band=price_band)
    items, stamp = _compute(product, limit=limit, restrict=restrict, rules=rules, using=using, serving=serving)
    if not attach:
        return items
    products = load_products([i.product_id for i in items], restrict)
    items = _attach(items, products)
    if use_cache and stamp is not None and items:
        served = serving_models.cached_serving_model(using=using)
        entry = {
            "items": [(i.product_id, i.score, str(i.reason), i.source, i.because_of) for i in items],
            "model": served[0] if served else None,
            "stamp": stamp,
        }
        shelf_cache().set(ckey, entry, timeout=imgrec_settings.SHELF_CACHE_TIMEOUT)
    return items


def cached_shelf(product_id: str, *, limit: int) -> list[Any] | None:
    """The cached public shelf of the product with this id, or None on a miss (then fetch the
    product and call :func:`similar_products`).  Saves the product's own query on a hit: the
    check query also tells whether the product still exists.  Plain shelves only (no
    same-category or price band: those need the product's fields for the key)."""
    from imgrec_app.services import recommend

    if not imgrec_settings.SHELF_CACHE:
        return None
    try:
        pk = get_product_model()._meta.pk.to_python(product_id)
    except Exception:
        return None
    using = shelf_database()
    serving = serving_models.cached_serving_model(using=using)
    if serving is None or pk is None:
        return None
    key = cache_key(pk, serving[0], limit=recommend.clamp_limit(limit), same_category=False, price_band=None)
    entry = shelf_cache().get(key)
    if entry is None:
        return None
    return _from_cache(entry, recommend._rules().using(using), pk)


def _attach(items: list[Any], products: dict[str, Any]) -> list[Any]:
    out = []
    for item in items:
        item.product = products.get(item.product_id)
        if item.product is not None:
            out.append(item)
    return out


def _from_cache(entry: dict[str, Any], restrict: QuerySet, product: Any) -> list[Any] | None:
    """The cached shelf if every item still passes the rules and nothing it came from changed."""
    from imgrec_app.services.recommend import Recommendation

    ids = [row[0] for row in entry["items"]]
    products = load_products(ids, restrict, check=(product_content_type().pk, product_key(product)))
    if len(products) != len(ids):
        return None  # an item is sold out, unpublished or deleted now: compute the shelf again
    serving, exists, stamp = next(iter(products.values()))._imgrec_check.split(" ", 2)
    if exists != "true":
        return None  # the product itself is gone
    if serving != entry["model"]:
        serving_models.forget_serving_models()
        return None
    if stamp != entry["stamp"]:
        return None  # the product's own vectors changed
    items = [
        Recommendation(pid, score, reason, source, list(because))
        for pid, score, reason, source, because in entry["items"]
    ]
    return _attach(items, products)


def _compute(
    product: Any, *, limit: int, restrict: QuerySet, rules: QuerySet, using: str, serving: tuple[str, int] | None
) -> tuple[list[Any], str | None]:
    """The shelf computed (cold): ``(items, vector stamp or None)``.

    ``restrict`` is the rules on the shelf database; the labelled fallbacks (trending: history
    tables) read the default database with ``rules`` (Django refuses subqueries across aliases).
    """
    from imgrec_app.services import recommend

    key = product_key(product)
    n = limit * int(imgrec_settings.CANDIDATE_FACTOR)
    mods = modalities(serving)
    res = None
    want_vectors = imgrec_settings.DIVERSITY == "mmr"
    ct = product_content_type().pk
    if mods:
        res = run(mods, ct=ct, key=key, n=n, restrict=restrict, using=using, want_vectors=want_vectors)
        if res.serving != serving:  # switched by another process since this one cached it
            serving_models.remember_serving_model(res.serving, using=using)
            mods = modalities(res.serving)
            res = (
                run(mods, ct=ct, key=key, n=n, restrict=restrict, using=using, want_vectors=want_vectors)
                if mods
                else None
            )
    if res is None or not res.has_vector:
        items = recommend._fallback(limit=limit, exclude={key}, restrict=rules, category_of=product)
        return items, res.stamp if res is not None else None
    scored = fuse(res.rows, key)
    scored = dedupe(scored, {r.object_id: r for r in res.rows})
    scored = diversify(scored, {r.object_id: r for r in res.rows}, limit, restrict)
    if len(scored) < limit:
        scored += recommend._fallback(
            limit=limit - len(scored),
            exclude={key, *(r.product_id for r in scored)},
            restrict=rules,
            category_of=product,
        )
    return scored, res.stamp


def fuse(rows: Sequence[Row], key: str) -> list[Any]:
    """Fused score per candidate (``SIMILAR_WEIGHTS``), best first."""
    from imgrec_app.services.recommend import REASONS, Recommendation, _fuse

    max_cov = max((r.visitors or 0 for r in rows), default=0)
    scored = []
    for r in rows:
        parts = {m: 1.0 - d for m, d in r.distances.items()}
        if max_cov and r.visitors:
            parts["coview"] = r.visitors / max_cov
        score, source = _fuse(parts)
        scored.append(Recommendation(r.object_id, score, REASONS[source], f"similar:{source}", [key]))
    scored.sort(key=lambda i: (-i.score, i.product_id))
    return scored


def dedupe(items: list[Any], rows: dict[str, Row]) -> list[Any]:
    """Drop near-duplicate photos: of the product itself, and of a better-ranked item kept."""
    threshold = float(imgrec_settings.NEAR_DUPLICATE_SIMILARITY)
    kept, kept_ids = [], set()
    for item in items:
        row = rows[item.product_id]
        d = row.distances.get("image")
        if d is not None and 1.0 - d >= threshold:
            continue  # the same photo as the product itself
        if any(p in kept_ids for p in row.duplicates):
            continue
        kept.append(item)
        kept_ids.add(item.product_id)
    return kept


def diversify(items: list[Any], rows: dict[str, Row], limit: int, restrict: QuerySet) -> list[Any]:
    """The configured diversity: MMR on image vectors, a cap per category, or none."""
    mode = imgrec_settings.DIVERSITY
    sims = {k: r.similar_to for k, r in rows.items() if r.similar_to is not None}
    if mode == "mmr" and sims:
        lam = float(imgrec_settings.MMR_LAMBDA)
        chosen: list[Any] = []
        pool = list(items)
        while pool and len(chosen) < limit:

            def mmr(r: Any) -> float:
                row = sims.get(r.product_id) or {}
                redundancy = max((float(row[c.product_id]) for c in chosen if c.product_id in row), default=0.0)
                return lam * r.score - (1 - lam) * redundancy

            best = max(pool, key=mmr)
            pool.remove(best)
            chosen.append(best)
        return chosen
    if mode == "category":
        cap = int(imgrec_settings.CATEGORY_CAP)
        products = load_products([i.product_id for i in items], restrict)
        per: dict[Any, int] = {}
        out = []
        for r in items:
            p = products.get(r.product_id)
            cat = _category_value(p) if p is not None else None
            per[cat] = per.get(cat, 0) + 1
            if cat is None or per[cat] <= cap:
                out.append(r)
        return out[:limit]
    return items[:limit]
