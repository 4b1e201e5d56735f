"""The shop's rules and products as SQL text compiled once per process, and products built from rows.

A cold similar shelf used to compile the host's rules queryset (twice: the rules and the
visibility rule) and a third ORM query for the shelf's products on every request; at the demo's
size that Django work cost more than the statement's own SQL (bench/similar_peer.py).  Here:

* :func:`rule` compiles ``EXISTS (<rules> AND pk = <outer column>::<pk type>)`` once per distinct
  rules *query* and keeps the text (a small LRU).  The key is the query's WHERE tree, joins,
  annotations and the rest of what shapes its SQL, compared by value (Django's expressions and
  lookups compare by their arguments: a rule with ``stock__gt=0`` is the same key every request; a
  value that changes, ``created_at__gte=now()``, is a new key).  Anything that does not compare
  by value (a subquery, ``extra()``) makes the key unique to that queryset: compiled again, never
  a wrong hit.
* :func:`product_columns` is the product model's concrete columns for a ``SELECT`` and
  :class:`LazyProducts` turns such a row back into an instance when it is asked for (``Model.from_db`` with the
  field's and the backend's converters, as the ORM does), with the primary image column
  :func:`imgrec_app.services.presentation.with_primary_image` would annotate.

Only for a plain rules queryset on a model with its own table (no multi-table inheritance, no
``select_related``, ``only()``/``defer()``, annotations or prefetches that the host's
``__str__`` / ``get_absolute_url`` may rely on): :func:`rows_ok` says when; otherwise callers use
the ORM (:func:`imgrec_app.services.similar.load_products`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connections, models
from django.db.models import Exists, QuerySet
from django.db.models.expressions import RawSQL
from django.db.models.functions import Cast

from imgrec_app.hosts import get_product_model, product_content_type
from imgrec_app.models import IndexedImage

# Stands for the outer column in a compiled rule; replaced by the column the rule is placed on.
OUTER = "imgrec_outer_column__"
_MAX_RULES = 256


def _pk_field() -> Any:
    pk = get_product_model()._meta.pk
    return pk.target_field if isinstance(pk, models.ForeignKey) else pk


@dataclass(frozen=True)
class Rule:
    """``EXISTS (rules AND pk = <column>::pk type)`` as text, placed on any column by :meth:`on`."""

    sql: str
    params: tuple[Any, ...]

    def on(self, column: str) -> tuple[str, list[Any]]:
        return self.sql.replace(OUTER, column), list(self.params)


_rules: OrderedDict[Any, Rule] = OrderedDict()


def _fingerprint(qs: QuerySet, using: str) -> Any:
    """What shapes the SQL of ``qs``'s ``EXISTS``, comparable by value (or unique: never shared)."""
    q = qs.query
    key = (
        q.model,
        using,
        connections[using].vendor,
        q.where,
        tuple(q.alias_map.items()),
        tuple(q.annotations.items()),
        q.extra_tables,
        tuple(q.extra.items()),
        q.distinct,
        q.distinct_fields,
        q.low_mark,
        q.high_mark,
        q.combinator,
        q.combined_queries,
    )
    hash(key)  # raises on anything unhashable: no caching for that query
    return key


def _compile_rule(qs: QuerySet, using: str) -> Rule:
    model = get_product_model()
    outer = Cast(RawSQL(OUTER, ()), output_field=_pk_field())
    holder = model._default_manager.filter(Exists(qs.order_by().filter(pk=outer)))
    compiler = holder.query.get_compiler(using=using)
    sql, params = compiler.compile(holder.query.where)
    if sql.count(OUTER) != 1:  # pragma: no cover - a rule that repeats the pk filter
        raise ValueError("the shop's rules compiled to unexpected SQL")
    return Rule(sql, tuple(params))


def rule(qs: QuerySet, using: str) -> Rule:
    """The compiled ``EXISTS`` of ``qs`` (compiled once per distinct query, see the module doc)."""
    try:
        key = _fingerprint(qs, using)
    except TypeError:
        return _compile_rule(qs, using)
    hit = _rules.get(key)
    if hit is not None:
        _rules.move_to_end(key)
        return hit
    hit = _rules[key] = _compile_rule(qs, using)
    if len(_rules) > _MAX_RULES:
        _rules.popitem(last=False)
    return hit


def forget_rules() -> None:
    _rules.clear()


def pk_column() -> str:
    """The product table's primary-key column."""
    return str(get_product_model()._meta.pk.column)


def rows_ok(qs: QuerySet) -> bool:
    """Whether products of ``qs`` may be built from plain rows (see the module docstring)."""
    q = qs.query
    return (
        not qs.model._meta.parents
        and not q.select_related
        and not q.annotations
        and not q.extra
        and q.deferred_loading == (frozenset(), True)
        and not getattr(qs, "_prefetch_related_lookups", ())
    )


@dataclass(frozen=True)
class Columns:
    """The product table's concrete columns for a ``SELECT`` (qualified by ``alias``)."""

    alias: str
    fields: tuple[Any, ...]
    sql: str  # "alias"."col", ... , the primary image
    cast_pk: str  # "(<OUTER>)::<pk type>"

    @property
    def params(self) -> tuple[Any, ...]:
        # Looked up each time (Django caches it): content type ids are per database, and tests
        # recreate them.
        return (product_content_type().pk,)

    @property
    def width(self) -> int:
        return len(self.fields) + 1


_columns: dict[tuple[Any, str, str], Columns] = {}


def product_columns(alias: str, using: str) -> Columns:
    """The concrete columns of the product model as ``alias``, then its primary image."""
    model = get_product_model()
    key = (model, alias, using)
    hit = _columns.get(key)
    if hit is not None:
        return hit
    conn = connections[using]
    qn = conn.ops.quote_name
    fields = tuple(model._meta.concrete_fields)
    cols = [f"{qn(alias)}.{qn(str(f.column))}" for f in fields]
    ii = IndexedImage._meta.db_table
    pk_col = f"{qn(alias)}.{qn(pk_column())}"
    cols.append(
        f"(SELECT source || E'\\n' || file_name FROM {ii} WHERE content_type_id = %s "
        f"AND object_id = ({pk_col})::text ORDER BY is_primary DESC, id LIMIT 1)"
    )
    holder = model._default_manager.annotate(_imgrec_cast=Cast(RawSQL(OUTER, ()), output_field=_pk_field()))
    cast_sql, cast_params = holder.query.get_compiler(using=using).compile(holder.query.annotations["_imgrec_cast"])
    if cast_params or cast_sql.count(OUTER) != 1:  # pragma: no cover - an unusual backend cast
        raise ValueError("the product key cast compiled to unexpected SQL")
    hit = _columns[key] = Columns(alias, fields, ", ".join(cols), cast_sql)
    return hit


_converters: dict[tuple[Any, str], tuple[list[str], list[tuple[list[Any], Any]]]] = {}


def _field_converters(using: str) -> tuple[list[str], list[tuple[list[Any], Any]]]:
    """The concrete fields' attnames, and per field (converters, column expression) as the ORM's
    compiler applies them."""
    model = get_product_model()
    hit = _converters.get((model, using))
    if hit is None:
        conn = connections[using]
        names, convs = [], []
        for f in model._meta.concrete_fields:
            col = f.get_col(model._meta.db_table)
            names.append(f.attname)
            convs.append((conn.ops.get_db_converters(col) + col.get_db_converters(conn), col))
        hit = _converters[(model, using)] = (names, convs)
    return hit


class LazyProducts:
    """Products by id, built from their rows only when asked for (a shelf statement returns a few
    dozen candidates; a shelf shows a limit of them).  ``get``/``in``/``update`` like a dict."""

    def __init__(self, using: str) -> None:
        self.using = using
        self.model = get_product_model()
        self.names, self.convs = _field_converters(using)
        self.conn = connections[using]
        self.rows: dict[str, Sequence[Any]] = {}
        self.built: dict[str, Any] = {}

    def build(self, values: Sequence[Any]) -> Any:
        """A product from :func:`product_columns` values (its image as ``_imgrec_image``)."""
        converted = []
        for (convs, col), value in zip(self.convs, values):
            for conv in convs:
                value = conv(value, col, self.conn)
            converted.append(value)
        product: Any = self.model.from_db(self.using, self.names, converted)
        product._imgrec_image = values[len(converted)]
        return product

    def add_row(self, key: str, values: Sequence[Any]) -> None:
        self.rows[key] = values

    def update(self, products: dict[str, Any]) -> None:
        self.built.update(products)

    def __contains__(self, key: object) -> bool:
        return key in self.built or key in self.rows

    def __bool__(self) -> bool:
        return bool(self.built or self.rows)

    def get(self, key: str, default: Any = None) -> Any:
        hit = self.built.get(key)
        if hit is None and key in self.rows:
            hit = self.built[key] = self.build(self.rows.pop(key))
        return default if hit is None else hit
