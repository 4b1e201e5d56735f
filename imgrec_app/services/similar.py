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

Cached (``SHELF_CACHE``), a shelf is one query: the cached product ids loaded through the rules,
with the serving model and the product's vector stamp as scalar subqueries.  Any id the rules
now exclude (sold out, unpublished, deleted), a model switch or a change of the product's own
vectors throws the entry away and the shelf is computed again.  See docs/DESIGN.md, "Shelf cache".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.core.cache import caches
from django.db import router
from django.db.models import Exists, OuterRef, QuerySet
from django.db.models.expressions import RawSQL
from django.db.models.functions import Cast

from imgrec_app.conf import imgrec_settings
from imgrec_app.hosts import category_field_lookup, get_product_model, product_category, product_content_type, product_key
from imgrec_app.models import CoView, ProductVector, ServingModel
from imgrec_app.querysets import index_vector_type
from imgrec_app.services import models as serving_models
from imgrec_app.services import presentation, search
from imgrec_app.services.text import text_model

CACHE_VERSION = 1


def shelf_database() -> str:
    """The database alias shelves read from: ``SHELF_DATABASE``, else the router's read alias."""
    return imgrec_settings.SHELF_DATABASE or router.db_for_read(ProductVector)


@dataclass(frozen=True)
class Modality:
    name: str
    model_id: str
    dim: int

    @property
    def cast(self) -> str:
        return f"{index_vector_type(self.dim)}({int(self.dim)})"


@dataclass
class Row:
    """One candidate as the statement returns it."""

    object_id: str
    distances: dict[str, float]
    visitors: int | None
    duplicates: list[str]
    # Image similarity to the other candidates (only for MMR diversity).
    similar_to: dict[str, float] | None


@dataclass
class Result:
    serving: tuple[str, int] | None
    stamp: str
    has_vector: bool
    rows: list[Row]


def modalities(serving: tuple[str, int] | None) -> list[Modality]:
    weights = imgrec_settings.SIMILAR_WEIGHTS
    out = []
    if serving is not None and weights.get("image", 1.0):
        out.append(Modality("image", serving[0], serving[1]))
    tmodel = text_model()
    if tmodel is not None and weights.get("text", 0.0):
        out.append(Modality("text", tmodel[0], tmodel[1]))
    return out


def _where(qs: QuerySet, using: str) -> tuple[str, list[Any]]:
    """The compiled WHERE clause of ``qs`` (columns qualified by the unaliased table name)."""
    compiler = qs.query.get_compiler(using=using)
    sql, params = compiler.compile(qs.query.where)
    return sql, list(params)


def _pk_field() -> Any:
    pk = get_product_model()._meta.pk
    return pk.target_field if pk.is_relation else pk


def _rules_on(model: type, column: str, restrict: QuerySet, using: str) -> tuple[str, list[Any]]:
    """``EXISTS (rules AND pk = <column>::pk type)`` as SQL on ``model``'s table."""
    allowed = Exists(restrict.order_by().filter(pk=Cast(OuterRef(column), output_field=_pk_field())))
    return _where(model.objects.filter(allowed), using)


def _stamp_sql(pv: str) -> str:
    """What a shelf was computed from, of the product's own vectors: their count and last write."""
    return (
        f"(SELECT count(*)::text || '/' || coalesce(max(updated_at)::text, '') FROM {pv} "
        "WHERE content_type_id = %s AND object_id = %s)"
    )


def build_statement(
    mods: Sequence[Modality],
    *,
    ct: int,
    key: str,
    n: int,
    restrict: QuerySet,
    using: str,
    coview_min: int | None,
    threshold: float,
    want_vectors: bool,
) -> tuple[str, list[Any]]:
    """The one statement of a cold similar shelf (see the module docstring)."""
    pv = ProductVector._meta.db_table
    params: list[Any] = []
    qcols = []
    for m in mods:
        qcols.append(
            f"(SELECT vector::{m.cast} FROM {pv} WHERE content_type_id = %s AND object_id = %s "
            f"AND model_id = %s) AS {m.name}"
        )
        params += [ct, key, m.model_id]
    ctes = [f"qv AS MATERIALIZED (SELECT {', '.join(qcols)})"]
    rules_sql, rules_params = _rules_on(ProductVector, "object_id", restrict, using)
    for m in mods:
        # Unaliased table: the rules' EXISTS refers to "<pv table>"."object_id".
        ctes.append(
            f"knn_{m.name} AS (SELECT {pv}.object_id, {pv}.vector::{m.cast} <=> (SELECT {m.name} FROM qv) "
            f"AS distance FROM {pv} WHERE {pv}.model_id = %s AND {pv}.content_type_id = %s "
            f"AND {pv}.object_id <> %s AND (SELECT {m.name} FROM qv) IS NOT NULL AND {rules_sql} "
            "ORDER BY distance LIMIT %s)"
        )
        params += [m.model_id, ct, key, *rules_params, n]
    sources = [f"SELECT object_id FROM knn_{m.name}" for m in mods]
    if coview_min is not None:
        cv = CoView._meta.db_table
        cv_sql, cv_params = _rules_on(CoView, "other_id", restrict, using)
        ctes.append(
            f"cov AS (SELECT {cv}.other_id AS object_id, {cv}.visitors FROM {cv} "
            f"WHERE {cv}.content_type_id = %s AND {cv}.object_id = %s AND {cv}.visitors >= %s "
            f"AND ({' OR '.join(f'(SELECT {m.name} FROM qv) IS NOT NULL' for m in mods)}) AND {cv_sql} "
            f"ORDER BY {cv}.visitors DESC LIMIT 50)"
        )
        params += [ct, key, coview_min, *cv_params]
        sources.append("SELECT object_id FROM cov")
    ctes.append(f"cand AS ({' UNION '.join(sources)})")
    image = next((m for m in mods if m.name == "image"), None)
    if image is not None:
        ctes.append(
            f"cvec AS MATERIALIZED (SELECT c.object_id, p.vector::{image.cast} AS v FROM cand c "
            f"JOIN {pv} p ON p.content_type_id = %s AND p.object_id = c.object_id AND p.model_id = %s)"
        )
        params += [ct, image.model_id]
        ctes.append(
            # Inner product: product vectors are unit length, and <#> costs a third of <=>.
            "pairs AS (SELECT a.object_id AS a, b.object_id AS b FROM cvec a JOIN cvec b "
            "ON a.object_id < b.object_id AND (a.v <#> b.v) <= %s), "
            "dups AS (SELECT x, array_agg(y) AS partners FROM "
            "(SELECT a AS x, b AS y FROM pairs UNION ALL SELECT b, a FROM pairs) d GROUP BY x)"
        )
        params.append(-threshold)
        if want_vectors:
            ctes.append(
                "mmr AS (SELECT a.object_id AS x, array_agg(b.object_id ORDER BY b.object_id) AS ids, "
                "array_agg(-(a.v <#> b.v) ORDER BY b.object_id) AS sims "
                "FROM cvec a JOIN cvec b ON a.object_id <> b.object_id GROUP BY a.object_id)"
            )
    cols, joins = ["c.object_id"], []
    for m in mods:
        if m.name == "image":
            fill = "(cv.v <=> (SELECT image FROM qv))"
        else:
            fill = (
                f"(SELECT p.vector::{m.cast} <=> (SELECT {m.name} FROM qv) FROM {pv} p "
                "WHERE p.content_type_id = %s AND p.object_id = c.object_id AND p.model_id = %s)"
            )
        cols.append(f"coalesce(k_{m.name}.distance, {fill}) AS d_{m.name}")
        joins.append(f"LEFT JOIN knn_{m.name} k_{m.name} ON k_{m.name}.object_id = c.object_id")
    # Parameters in text order: the select list's fills come before the joins.
    fill_params: list[Any] = []
    for m in mods:
        if m.name != "image":
            fill_params += [ct, m.model_id]
    cols.append("cov.visitors" if coview_min is not None else "NULL::int")
    if coview_min is not None:
        joins.append("LEFT JOIN cov ON cov.object_id = c.object_id")
    if image is not None:
        cols.append("dups.partners")
        joins.append("LEFT JOIN cvec cv ON cv.object_id = c.object_id LEFT JOIN dups ON dups.x = c.object_id")
        if want_vectors:
            cols += ["mmr.ids", "mmr.sims"]
            joins.append("LEFT JOIN mmr ON mmr.x = c.object_id")
        else:
            cols += ["NULL::text[]", "NULL::float8[]"]
    else:
        cols += ["NULL::text[]", "NULL::text[]", "NULL::float8[]"]
    has = " OR ".join(f"(SELECT {m.name} FROM qv) IS NOT NULL" for m in mods)
    sm = ServingModel._meta.db_table
    header = (
        f"SELECT (SELECT model_id FROM {sm} WHERE modality = 'image') AS serving_model, "
        f"(SELECT dimensions FROM {sm} WHERE modality = 'image') AS serving_dim, "
        f"{_stamp_sql(pv)} AS stamp, ({has}) AS has_vector"
    )
    header_params = [ct, key]
    sql = (
        f"WITH {', '.join(ctes)} "
        f"SELECT h.serving_model, h.serving_dim, h.stamp, h.has_vector, s.* FROM ({header}) h "
        f"LEFT JOIN (SELECT {', '.join(cols)} FROM cand c {' '.join(joins)}) s ON true"
    )
    return sql, params + header_params + fill_params


def run(
    mods: Sequence[Modality], *, ct: int, key: str, n: int, restrict: QuerySet, using: str, want_vectors: bool
) -> Result:
    """Run the cold statement and parse its rows."""
    coview_min = int(imgrec_settings.COVIEW_MIN_VISITORS) if imgrec_settings.SIMILAR_WEIGHTS.get("coview", 0) else None
    sql, params = build_statement(
        mods,
        ct=ct,
        key=key,
        n=n,
        restrict=restrict,
        using=using,
        coview_min=coview_min,
        threshold=float(imgrec_settings.NEAR_DUPLICATE_SIMILARITY),
        want_vectors=want_vectors,
    )
    rows = search.run_knn_statement(sql, params, limit=n, using=using)
    first = rows[0]
    serving = (first[0], int(first[1])) if first[0] is not None else None
    out = []
    for r in rows:
        if r[4] is None:
            continue
        dists = {m.name: float(d) for m, d in zip(mods, r[5 : 5 + len(mods)]) if d is not None}
        visitors, dups, ids, sims = r[5 + len(mods) :]
        similar_to = dict(zip(ids, sims)) if ids is not None else None
        out.append(Row(r[4], dists, visitors, list(dups or []), similar_to))
    return Result(serving, first[2], bool(first[3]), out)


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
        qs = qs.annotate(
            _imgrec_check=RawSQL(
                f"SELECT coalesce((SELECT model_id FROM {sm} WHERE modality = 'image'), '') || ' ' || "
                f"{_stamp_sql(ProductVector._meta.db_table)}",
                list(check),
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
    rules = recommend._rules(same_category_as=product if same_category else None, price_band=price_band, product=product)
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
    serving, _, stamp = next(iter(products.values()))._imgrec_check.partition(" ")
    if serving != entry["model"]:
        serving_models.forget_serving_models()
        return None
    if stamp != entry["stamp"]:
        return None  # the product's own vectors changed
    items = [Recommendation(pid, score, reason, source, list(because)) for pid, score, reason, source, because in entry["items"]]
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
            res = run(mods, ct=ct, key=key, n=n, restrict=restrict, using=using, want_vectors=want_vectors) if mods else None
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
