"""The one SQL statement of a cold similar-products shelf (see :mod:`imgrec_app.services.similar`).

Built as text around the host's compiled rules: per modality a k-NN by the product's stored vector
(``ORDER BY vector <=> (SELECT vector … WHERE object_id = %s)``) with the rules' ``EXISTS`` inside,
"viewed together" pairs, the distances a candidate lacks, near-duplicate pairs (and MMR
similarities) among the candidates, the serving model's row and the product's vector stamp.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connections
from django.db.models import QuerySet

from imgrec_app.conf import imgrec_settings
from imgrec_app.hosts import get_product_model, visible_products
from imgrec_app.models import CoView, ProductVector, ServingModel
from imgrec_app.querysets import index_vector_type
from imgrec_app.services import learned, search, shelf_rows
from imgrec_app.services.text import text_model


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
    # The product's columns and primary image as the statement returned them (``with_products``;
    # :class:`imgrec_app.services.shelf_rows.LazyProducts` builds the product), else None.
    product_values: tuple[Any, ...] | None = None


@dataclass
class Result:
    serving: tuple[str, int] | None
    stamp: str
    has_vector: bool
    rows: list[Row]
    # Whether a visitor may see the product (VISIBLE_PRODUCTS), when the statement was asked.
    visible: bool | None = None


def modalities(serving: tuple[str, int] | None) -> list[Modality]:
    weights = imgrec_settings.SIMILAR_WEIGHTS
    out = []
    if serving is not None and weights.get("image", 1.0):
        out.append(Modality("image", serving[0], serving[1]))
    tmodel = text_model()
    if tmodel is not None and weights.get("text", 0.0):
        out.append(Modality("text", tmodel[0], tmodel[1]))
    if serving is not None and weights.get("learned", 0.0):
        # A tuned head's learned image + text vectors (services/learned.py), while it serves.
        joint = learned.serving_modality(serving[0])
        if joint is not None:
            out.append(Modality("learned", joint[0], joint[1]))
    return out


# The product table's alias in the statement's last join (the rules' EXISTS use their own aliases).
PRODUCT_ALIAS = "imgrec_prod"


def shelf_rules(qs: QuerySet, using: str) -> shelf_rows.Rule:
    """The rules' ``EXISTS``, compiled once per distinct rules query (:func:`shelf_rows.rule`)."""
    return shelf_rows.rule(qs, using)


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
    check_visible: bool = False,
    with_products: bool = False,
) -> tuple[str, list[Any]]:
    """The one statement of a cold similar shelf (see the module docstring).

    With ``check_visible`` its first row also says whether a visitor may see the product
    (``VISIBLE_PRODUCTS``), so the API needs no query for the product itself.  With
    ``with_products`` each candidate row ends with the product's concrete columns and primary
    image (:func:`imgrec_app.services.shelf_rows.product_columns`): no query for the products.
    """
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
    rules = shelf_rules(restrict, using)
    rules_sql, rules_params = rules.on(f"{pv}.object_id")
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
        cv_sql, cv_params = rules.on(f"{cv}.other_id")
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
    product_params: list[Any] = []
    if with_products:
        pc = shelf_rows.product_columns(PRODUCT_ALIAS, using)
        cols.append(pc.sql)
        product_params += pc.params
        table = connections[using].ops.quote_name(get_product_model()._meta.db_table)
        pk_col = connections[using].ops.quote_name(shelf_rows.pk_column())
        joins.append(
            f'LEFT JOIN {table} "{PRODUCT_ALIAS}" ON "{PRODUCT_ALIAS}".{pk_col} = '
            f"{pc.cast_pk.replace(shelf_rows.OUTER, 'c.object_id')}"
        )
    sm = ServingModel._meta.db_table
    if check_visible:
        # The product's key as a column of the header's FROM, for the visibility rule to refer to.
        visible_sql, visible_params = shelf_rules(visible_products(), using).on("imgrec_k.key")
        visible_from, from_params = " FROM (SELECT %s::text AS key) imgrec_k", [key]
    else:
        visible_sql, visible_params, visible_from, from_params = "NULL::bool", [], "", []
    header = (
        f"SELECT (SELECT model_id FROM {sm} WHERE modality = 'image') AS serving_model, "
        f"(SELECT dimensions FROM {sm} WHERE modality = 'image') AS serving_dim, "
        f"{_stamp_sql(pv)} AS stamp, ({has}) AS has_vector, {visible_sql} AS visible{visible_from}"
    )
    header_params = [ct, key, *visible_params, *from_params]
    sql = (
        f"WITH {', '.join(ctes)} "
        f"SELECT h.serving_model, h.serving_dim, h.stamp, h.has_vector, h.visible, s.* FROM ({header}) h "
        f"LEFT JOIN (SELECT {', '.join(cols)} FROM cand c {' '.join(joins)}) s ON true"
    )
    return sql, params + header_params + fill_params + product_params


def run(
    mods: Sequence[Modality],
    *,
    ct: int,
    key: str,
    n: int,
    restrict: QuerySet,
    using: str,
    want_vectors: bool,
    check_visible: bool = False,
    with_products: bool = False,
) -> Result:
    """Run the cold statement and parse its rows (with ``with_products``: each row's product)."""
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
        check_visible=check_visible,
        with_products=with_products,
    )
    rows = search.run_knn_statement(sql, params, limit=n, using=using, as_written=True)
    first = rows[0]
    serving = (first[0], int(first[1])) if first[0] is not None else None
    out = []
    for r in rows:
        if r[5] is None:
            continue
        dists = {m.name: float(d) for m, d in zip(mods, r[6 : 6 + len(mods)]) if d is not None}
        visitors, dups, ids, sims = r[6 + len(mods) : 10 + len(mods)]
        similar_to = dict(zip(ids, sims)) if ids is not None else None
        values = tuple(r[10 + len(mods) :]) if with_products else None
        out.append(Row(r[5], dists, visitors, list(dups or []), similar_to, values))
    return Result(serving, first[2], bool(first[3]), out, first[4])
