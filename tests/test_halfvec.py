"""``VECTOR_STORAGE = "halfvec"`` on the real pgvector: its own index, used by every k-NN query."""

from __future__ import annotations

import numpy as np
import pytest
from django.db import connection, transaction

from imgrec_app.services import recommend, search, similar
from imgrec_app.services.vectors import ensure_hnsw_index
from tests.test_recommend import DIM, MODEL_ID, catalogue  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db


def _plan(sql: str, params: list) -> str:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_sort = off")
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + sql, params)
        return "\n".join(r[0] for r in cursor.fetchall())


def test_halfvec_storage_builds_its_own_index_and_serves_from_it(catalogue, settings):  # noqa: F811
    from imgrec_app.services import vectors as vector_indexes

    products, vectors = catalogue
    vector_indexes._ensured.clear()  # indexes "ensured" by earlier tests were rolled back with them
    float_index = ensure_hnsw_index(MODEL_ID, DIM)
    settings.IMGREC = {**settings.IMGREC, "VECTOR_STORAGE": "halfvec", "SHELF_CACHE": False}
    half_index = ensure_hnsw_index(MODEL_ID, DIM)
    assert half_index != float_index and half_index.endswith("_h")
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE indexname IN (%s, %s)", [float_index, half_index])
        defs = dict(cursor.fetchall())
    assert "halfvec(32)" in defs[half_index] and "halfvec_cosine_ops" in defs[half_index]
    assert "vector_cosine_ops" in defs[float_index] and "halfvec" not in defs[float_index]

    # The shelf statement and the ORM k-NN both walk the halfvec index.
    mods = similar.modalities((MODEL_ID, DIM))
    sql, params = similar.build_statement(
        mods, ct=similar.product_content_type().pk, key=str(products[0].pk), n=10,
        restrict=recommend._rules(), using="default", coview_min=None, threshold=0.985, want_vectors=False,
    )
    assert half_index in _plan(sql, params)

    sims = vectors @ vectors[0]
    sims[0] = -np.inf
    exact = [str(products[j].pk) for j in np.argsort(-sims)[:10]]
    shelf = [i.product_id for i in recommend.similar_products(products[0], limit=10)]
    assert len(set(shelf) & set(exact)) >= 9  # float16 may swap a near tie, no more
    rows = search.nearest(vectors[0], model_id=MODEL_ID, dim=DIM, limit=11)
    assert len({r[0] for r in rows[1:]} & set(exact)) >= 9
