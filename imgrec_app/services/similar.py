"""Similar products in one SQL round trip, behind a shelf cache that re-checks the shop's rules.

Cold, a shelf is one statement (sent with pgvector's settings as one multi-statement string,
:func:`imgrec_app.services.search.run_knn_statement`): the k-NN of every modality *by the
product's stored vector* (``ORDER BY vector <=> (SELECT vector … WHERE object_id = %s)``: no
vector leaves or re-enters Postgres), the shop's rules inside each k-NN (``EXISTS`` on the
product's primary key), "viewed together" pairs, the distances a candidate lacks from one
modality's k-NN computed next to it, near-duplicate pairs among the candidates and the serving
model's row (so a model switch made by another process is noticed without a query of its own)
and each candidate's product columns and primary image (:mod:`imgrec_app.services.shelf_rows`:
the products of the items shown are built from them, no query of their own).  Python fuses,
dedupes and diversifies the few dozen rows.

Cached (``SHELF_CACHE``), a shelf is one query: the cached product ids loaded through the rules,
with the serving model and the product's vector stamp as scalar subqueries (and, asked by id as
the API does, :func:`shelf_by_id`, whether a visitor may see the product: no query of its own for
the product, cold or cached).  Any id the rules
now exclude (sold out, unpublished, deleted), a model switch or a change of the product's own
vectors throws the entry away and the shelf is computed again.  See docs/DESIGN.md, "Shelf cache".
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from typing import Any

from django.core.cache import caches
from django.db import connections, router
from django.db.models import Exists, QuerySet
from django.db.models.expressions import RawSQL

from imgrec_app.conf import active_overrides, imgrec_settings
from imgrec_app.hosts import (
    category_field_lookup,
    get_product_model,
    product_category,
    product_content_type,
    product_key,
    visible_products,
)
from imgrec_app.models import ProductVector, ServingModel
from imgrec_app.services import models as serving_models
from imgrec_app.services import presentation, shelf_rows
from imgrec_app.services.similar_sql import Row, _stamp_sql, build_statement, modalities, run  # noqa: F401

logger = logging.getLogger(__name__)

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


def _cache_call(method: str, *args: Any, **kwargs: Any) -> Any:
    """One call on the shelf cache; a cache that is down (Redis stopped) is a miss, never a 500:
    the shelf is computed from the database, which is what the cache only speeds up."""
    try:
        return getattr(shelf_cache(), method)(*args, **kwargs)
    except Exception:  # the backend's own errors (redis.ConnectionError, memcached, ...)
        logger.warning("imgrec shelf cache %s failed; serving without the cache", method, exc_info=True)
        return None


def load_products(
    ids: Sequence[str], restrict: QuerySet, *, check: tuple[int, str] | None = None, visible: bool = False
) -> dict[str, Any]:
    """The products among ``ids`` that the rules allow now, by id, primary image annotated.

    With ``check=(content type id, product key)`` each row also carries (``_imgrec_check``) the
    serving model, whether the product still exists (with ``visible``: whether a visitor may
    see it, ``VISIBLE_PRODUCTS``) and the product's vector stamp: one query tells whether a
    cached shelf is still valid.
    """
    if not ids:
        return {}
    if shelf_rows.rows_ok(restrict):
        return _load_rows(ids, restrict, check=check, visible=visible)
    model = get_product_model()
    to_python = model._meta.pk.to_python
    qs = presentation.with_primary_image(restrict.filter(pk__in=[to_python(i) for i in ids]))
    if check is not None:
        sm = ServingModel._meta.db_table
        table, pk_col = model._meta.db_table, model._meta.pk.column
        qs = qs.annotate(
            _imgrec_check=RawSQL(
                f"SELECT coalesce((SELECT model_id FROM {sm} WHERE modality = 'image'), '') || ' ' || "
                f'(EXISTS (SELECT 1 FROM "{table}" WHERE "{pk_col}"::text = %s))::text || \' \' || '
                f"{_stamp_sql(ProductVector._meta.db_table)}",
                [check[1], *check],
            )
        )
        if visible:
            visible_qs = visible_products().using(restrict.db).order_by().filter(pk=to_python(check[1]))
            qs = qs.annotate(_imgrec_visible=Exists(visible_qs))
    return {product_key(p.pk): p for p in qs.order_by()}


def _load_rows(
    ids: Sequence[str], restrict: QuerySet, *, check: tuple[int, str] | None, visible: bool
) -> dict[str, Any]:
    """:func:`load_products` as one raw statement: the rules and the visibility rule compiled once
    per process (:mod:`imgrec_app.services.shelf_rows`), the products built from the rows."""
    model = get_product_model()
    using = restrict.db
    conn = connections[using]
    qn = conn.ops.quote_name
    to_python = model._meta.pk.to_python
    alias = "imgrec_prod"
    pc = shelf_rows.product_columns(alias, using)
    pk_col = f"{qn(alias)}.{qn(shelf_rows.pk_column())}"
    rules_sql, rules_params = shelf_rows.rule(restrict, using).on(pk_col)
    cols, col_params, tail, tail_params = [pc.sql], [*pc.params], "", []
    if check is not None:
        sm, table = ServingModel._meta.db_table, qn(model._meta.db_table)
        key_cast = pc.cast_pk.replace(shelf_rows.OUTER, "imgrec_k.key")  # the pk index answers it
        cols.append(
            f"coalesce((SELECT model_id FROM {sm} WHERE modality = 'image'), '') || ' ' || "
            f"(EXISTS (SELECT 1 FROM {table} WHERE {qn(shelf_rows.pk_column())} = {key_cast}))::text "
            f"|| ' ' || {_stamp_sql(ProductVector._meta.db_table)}"
        )
        col_params += list(check)
        if visible:
            visible_sql, visible_params = shelf_rows.rule(visible_products(), using).on("imgrec_k.key")
            cols.append(visible_sql)
            col_params += visible_params
        tail, tail_params = " CROSS JOIN (SELECT %s::text AS key) imgrec_k", [check[1]]
    sql = (
        f"SELECT {', '.join(cols)} FROM {qn(model._meta.db_table)} {qn(alias)}{tail} "
        f"WHERE {pk_col} IN ({', '.join(['%s'] * len(ids))}) AND {rules_sql}"
    )
    with conn.cursor() as cursor:
        cursor.execute(sql, [*col_params, *tail_params, *(to_python(i) for i in ids), *rules_params])
        rows = cursor.fetchall()
    out = {}
    builder = shelf_rows.LazyProducts(using)
    for row in rows:
        product = builder.build(row[: pc.width])
        if check is not None:
            product._imgrec_check = row[pc.width]
            if visible:
                product._imgrec_visible = row[pc.width + 1]
        out[product_key(product.pk)] = product
    return out


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
    shelf = _Shelf(product, limit=limit, same_category=same_category, price_band=price_band, attach=attach)
    items = shelf.cached()
    return items if items is not None else shelf.compute()  # type: ignore[return-value]


def shelf_by_id(product_id: Any, *, limit: int) -> list[Any] | None:
    """The public similar shelf of the product with this id, or None when a visitor may not see
    such a product (missing, malformed id or hidden by ``VISIBLE_PRODUCTS``: the API's 404).

    No query for the product itself: cached, the check query also answers the visibility; cold,
    the shelf statement does (the product is fetched only when a labelled fallback needs its
    category).  Plain shelves only (no same-category or price band).
    """
    try:
        pk = get_product_model()._meta.pk.to_python(product_id)
    except Exception:
        return None
    if pk is None:
        return None
    shelf = _Shelf(pk, limit=limit, by_id=True)
    items = shelf.cached()
    return items if items is not None else shelf.compute()


def cached_shelf(product_id: str, *, limit: int) -> list[Any] | None:
    """The cached public shelf of the visible product with this id, or None (a miss, or not visible)."""
    try:
        pk = get_product_model()._meta.pk.to_python(product_id)
    except Exception:
        return None
    return None if pk is None else _Shelf(pk, limit=limit, by_id=True).cached()


class _Shelf:
    """One similar shelf: its rules, serving model and cache key; from the cache or computed."""

    def __init__(
        self,
        product: Any,
        *,
        limit: int,
        same_category: bool = False,
        price_band: float | None = None,
        attach: bool = True,
        by_id: bool = False,
    ) -> None:
        from imgrec_app.services import recommend

        # ``by_id``: ``product`` is a primary key, and the visitor's right to see it is checked.
        self.product, self.by_id, self.attach = product, by_id, attach
        self.limit = recommend.clamp_limit(limit)
        self.same_category, self.price_band = same_category, price_band
        self.using = shelf_database()
        self.rules = recommend._rules(
            same_category_as=product if same_category else None, price_band=price_band, product=product
        )
        self.restrict = self.rules.using(self.using)
        self.serving = serving_models.cached_serving_model(using=self.using)
        # Products by id, built from the cold statement's rows when attached (or loaded).
        self.loaded = shelf_rows.LazyProducts(self.using)

    def key(self, model_id: str) -> str:
        return cache_key(
            self.product, model_id, limit=self.limit, same_category=self.same_category, price_band=self.price_band
        )

    def cached(self) -> list[Any] | None:
        """The shelf from the cache if its entry is still valid (a stale entry is deleted)."""
        if not (self.attach and imgrec_settings.SHELF_CACHE and self.serving is not None):
            return None
        key = self.key(self.serving[0])
        entry = _cache_call("get", key)
        if entry is None:
            return None
        items = _from_cache(entry, self.restrict, self.product, visible=self.by_id)
        if items is None:
            _cache_call("delete", key)
            self.serving = serving_models.cached_serving_model(using=self.using)  # forgotten on a switch
        return items

    def compute(self) -> list[Any] | None:
        """The shelf computed (cold) and cached; None when ``by_id`` and not visible."""
        items, stamp = _compute(self)
        if items is None or not self.attach:
            return items
        # The statement's rows carry the candidates' products (shelf_rows.rows_ok); a labelled
        # fallback's items (or a host whose rules need the ORM) are loaded through the rules.
        missing = [i.product_id for i in items if i.product_id not in self.loaded]
        if missing:
            self.loaded.update(load_products(missing, self.restrict))
        items = _attach(items, self.loaded)
        served = serving_models.cached_serving_model(using=self.using)
        if imgrec_settings.SHELF_CACHE and stamp is not None and items and served is not None:
            entry = {
                "items": [(i.product_id, i.score, str(i.reason), i.source, i.because_of) for i in items],
                "model": served[0],
                "stamp": stamp,
            }
            _cache_call("set", self.key(served[0]), entry, timeout=imgrec_settings.SHELF_CACHE_TIMEOUT)
        return items

    def instance(self) -> Any:
        """The product itself (fetched, visibility checked, only for a ``by_id`` fallback)."""
        if not self.by_id:
            return self.product
        from imgrec_app.hosts import get_visible_product

        try:
            return get_visible_product(self.product)
        except LookupError:
            return None


def _attach(items: list[Any], products: Any) -> list[Any]:
    out = []
    for item in items:
        item.product = products.get(item.product_id)
        if item.product is not None:
            out.append(item)
    return out


def _from_cache(entry: dict[str, Any], restrict: QuerySet, product: Any, *, visible: bool = False) -> list[Any] | None:
    """The cached shelf if every item still passes the rules and nothing it came from changed
    (with ``visible``: and a visitor may still see the product)."""
    from imgrec_app.services.recommend import Recommendation

    ids = [row[0] for row in entry["items"]]
    products = load_products(ids, restrict, check=(product_content_type().pk, product_key(product)), visible=visible)
    if len(products) != len(ids):
        return None  # an item is sold out, unpublished or deleted now: compute the shelf again
    first = next(iter(products.values()))
    serving, exists, stamp = first._imgrec_check.split(" ", 2)
    if exists != "true" or (visible and not first._imgrec_visible):
        return None  # the product itself is gone (or hidden now)
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


def _compute(shelf: _Shelf) -> tuple[list[Any] | None, str | None]:
    """The shelf computed (cold): ``(items, vector stamp or None)``; items None when the shelf
    is asked by id and a visitor may not see the product.

    ``shelf.restrict`` is the rules on the shelf database; the labelled fallbacks (trending:
    history tables) read the default database with ``shelf.rules`` (Django refuses subqueries
    across aliases).
    """
    from imgrec_app.services import recommend

    key = product_key(shelf.product)
    n = shelf.limit * int(imgrec_settings.CANDIDATE_FACTOR)
    serving, using, restrict = shelf.serving, shelf.using, shelf.restrict
    mods = modalities(serving)
    res = None
    ct = product_content_type().pk
    options = {
        "ct": ct,
        "key": key,
        "n": n,
        "restrict": restrict,
        "using": using,
        "want_vectors": imgrec_settings.DIVERSITY == "mmr",
        "check_visible": shelf.by_id,
        "with_products": (shelf.attach or imgrec_settings.DIVERSITY == "category") and shelf_rows.rows_ok(restrict),
    }
    if mods:
        res = run(mods, **options)
        if res.serving != serving:  # switched by another process since this one cached it
            serving_models.remember_serving_model(res.serving, using=using)
            # Re-read rather than take the row: inside reading_model() the override still wins.
            current = serving_models.cached_serving_model(using=using)
            if current != serving:
                mods = modalities(current)
                res = run(mods, **options) if mods else None
    if res is not None and res.visible is False:
        return None, None
    if res is None or not res.has_vector:
        product = shelf.instance()
        if product is None:
            return None, None
        items = recommend._fallback(limit=shelf.limit, exclude={key}, restrict=shelf.rules, category_of=product)
        return items, res.stamp if res is not None else None
    for r in res.rows:
        if r.product_values is not None:
            shelf.loaded.add_row(r.object_id, r.product_values)
    scored = fuse(res.rows, key)
    scored = dedupe(scored, {r.object_id: r for r in res.rows})
    scored = diversify(scored, {r.object_id: r for r in res.rows}, shelf.limit, restrict, shelf.loaded)
    if len(scored) < shelf.limit:
        product = shelf.instance()
        if product is None:
            return None, None
        scored += recommend._fallback(
            limit=shelf.limit - len(scored),
            exclude={key, *(r.product_id for r in scored)},
            restrict=shelf.rules,
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


def diversify(items: list[Any], rows: dict[str, Row], limit: int, restrict: QuerySet, loaded: Any = None) -> list[Any]:
    """The configured diversity: MMR on image vectors, a cap per category, or none (``loaded``:
    the candidates' products when the shelf statement returned them)."""
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
        products = loaded or load_products([i.product_id for i in items], restrict)
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
