"""Recommended for you: every source counts, product pages never repeat the similar shelf, reasons
never name the product on screen, bounded queries, and a real demo catalogue shelf that follows
five views of one category."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.template import Context, Template
from django.test.utils import CaptureQueriesContext

from imgrec_app.models import ProductVector
from imgrec_app.services import foryou, history, recommend
from tests.test_recommend import DIM, MODEL_ID, _request, _unit, catalogue  # noqa: F401

ONLY = {
    "interest": {"interest": 1.0, "coview": 0.0, "category": 0.0, "recency": 0.0},
    "coview": {"interest": 0.0, "coview": 1.0, "category": 0.0, "recency": 0.0},
    "category": {"interest": 0.0, "coview": 0.0, "category": 1.0, "recency": 0.0},
}


def _cat(items: list[Any]) -> list[str]:
    return [i.product.category.slug for i in items]


# --- the blend, on hand-made features (no database) -------------------------------------------------


def test_blend_follows_every_source_weight():
    """Three candidates, each strong in one source: the weights decide which comes first."""

    def pool() -> list[foryou.Scored]:
        return [
            foryou.Scored("by-interest", [0.9], {"interest": 0.9, "coview": 0.0, "category": 0.0}),
            foryou.Scored("by-coview", [0.2], {"interest": 0.2, "coview": 1.0, "category": 0.0}),
            foryou.Scored("by-category", [0.1], {"interest": 0.1, "coview": 0.0, "category": 0.5}),
        ]

    for source, weights in ONLY.items():
        assert foryou.blend(pool(), weights)[0].product_id == f"by-{source}", source
    # and the weighted sum, not just the strongest feature
    mixed = foryou.blend(pool(), {"interest": 1.0, "coview": 0.5, "category": 2.0, "recency": 0.0})
    assert [s.product_id for s in mixed] == ["by-category", "by-interest", "by-coview"]
    assert [s.score for s in mixed] == pytest.approx([0.1 + 2 * 0.5, 0.9, 0.2 + 0.5])


def test_blend_drops_candidates_no_weighted_source_supports():
    scored = [foryou.Scored("only-coview", [0.0], {"interest": 0.0, "coview": 1.0, "category": 0.0})]
    assert foryou.blend(scored, ONLY["category"]) == []


def test_diversify_shares_slots_by_interest_weight():
    a = foryou.Interest(["a"], 0.75, {})
    b = foryou.Interest(["b"], 0.25, {})
    scored = [foryou.Scored(f"a{i}", [0.9 - i / 100, 0.1], {"interest": 0, "coview": 0, "category": 0}) for i in range(8)]
    scored += [foryou.Scored(f"b{i}", [0.1, 0.5 - i / 100], {"interest": 0, "coview": 0, "category": 0}) for i in range(8)]
    chosen = foryou.diversify(foryou.blend(scored, ONLY["interest"]), [a, b], {}, limit=8)
    picked = [s.product_id[0] for s in chosen]
    assert picked.count("a") == 6 and picked.count("b") == 2  # ceil(8 × .75), then the rest
    assert all(s.interest == (0 if s.product_id[0] == "a" else 1) for s in chosen)


def _candidates(popularity, categories, mass):
    return foryou.Candidates([], {"category": set(popularity)}, {}, {}, popularity, categories, mass)


def test_category_source_ranks_by_next_view_probability_not_by_rank_in_category():
    """Two categories of the same share: a bestseller-led one and an even one.  The even one's
    second product is likelier than the bestseller category's second (popularity ÷ what is left
    of the category), and a category whose unseen products are all unpopular ranks low."""
    cats = {"a1": "a", "a2": "a", "b1": "b", "b2": "b"}
    popularity = {"a1": 80.0, "a2": 10.0, "b1": 30.0, "b2": 30.0}
    p = foryou.category_probabilities(_candidates(popularity, [("a", 0.5), ("b", 0.5)], {"a": 100.0, "b": 60.0}), cats)
    assert sorted(p, key=lambda i: -p[i]) == ["a1", "b1", "b2", "a2"]
    assert p["a1"] == pytest.approx(100 / 105)  # the top candidate, × its category's evidence
    assert p["b1"] / p["a1"] == pytest.approx((0.5 * 30 / 60) / (0.5 * 80 / 100) * (60 / 65) / (100 / 105))
    # the visitor's share of a category scales it; a category the visitor did not view gives 0
    q = foryou.category_probabilities(_candidates(popularity, [("a", 0.9), ("b", 0.1)], {"a": 100.0, "b": 60.0}), cats)
    assert q["a2"] > q["b1"]  # 0.9 × 10/100 against 0.1 × 30/60
    r = foryou.category_probabilities(_candidates(popularity, [("a", 1.0)], {"a": 100.0}), cats)
    assert set(r) == {"a1", "a2"}


def test_category_source_weighs_thin_popularity_down():
    """A handful of views does not make a bestseller: with 2 views behind a category its products
    weigh 2/7 of what the same shares with hundreds of views give."""
    cats = {"x": "a", "y": "a"}
    few = foryou.category_probabilities(_candidates({"x": 1.5, "y": 0.5}, [("a", 1.0)], {"a": 2.0}), cats)
    many = foryou.category_probabilities(_candidates({"x": 150.0, "y": 50.0}, [("a", 1.0)], {"a": 200.0}), cats)
    assert few["x"] == pytest.approx(2 / 7) and many["x"] == pytest.approx(200 / 205)
    assert few["y"] / few["x"] == pytest.approx(many["y"] / many["x"])


# --- every source contributes, on the real pgvector ----------------------------------------------------


pytestmark = pytest.mark.django_db


def _far_product(make_product, category: str, name: str) -> Any:
    """A product of ``category`` whose vector points away from every cluster of the catalogue."""
    p = make_product(name, category=category)
    v = _unit(-np.ones(DIM, dtype=np.float32))
    ProductVector.objects.create(
        content_type=ContentType.objects.get_for_model(p), object_id=str(p.pk), model_id=MODEL_ID, vector=v.tolist()
    )
    return p


def test_interest_source_alone_follows_the_history(catalogue):  # noqa: F811
    products, _ = catalogue
    req = _request()
    for p in [p for p in products if p.category.slug == "toys"][:4]:
        history.record(req, p)
    items = foryou.recommended_for_you(req, limit=6, weights=ONLY["interest"])
    assert _cat(items) == ["toys"] * 6
    assert {i.source for i in items} == {"for_you:interest"}
    # the same visitor with the interest source off: nothing else knows about them
    off = foryou.recommended_for_you(req, limit=6, weights=ONLY["category"])
    assert not any(i.source == "for_you:interest" for i in off)


def test_category_source_brings_popular_products_of_the_visitors_category(catalogue, make_product):  # noqa: F811
    products, _ = catalogue
    star = _far_product(make_product, "toys", "Bestselling toy")
    for _ in range(4):  # other visitors made it popular
        history.record(_request(), star)
    req = _request()
    for p in [p for p in products if p.category.slug == "toys"][:4]:
        history.record(req, p)
    with_category = foryou.recommended_for_you(req, limit=6)
    assert with_category[0].product_id == str(star.pk)
    assert with_category[0].source == "for_you:category" and with_category[0].reason == "Popular in Toys"
    without = foryou.recommended_for_you(req, limit=6, weights={"category": 0.0})
    assert str(star.pk) not in {i.product_id for i in without}


def test_popularity_of_every_category_in_one_statement_matches_the_per_category_queries(catalogue):  # noqa: F811
    """The category source's one grouped statement gives what ``trending_scores`` (top products)
    and ``trending_mass`` (the category's total) gave per category: the same products, order,
    scores and totals, with what the visitor has seen left out and ties broken by id."""
    import random
    from datetime import timedelta

    from django.utils import timezone

    from imgrec_app.hosts import recommendable_products
    from imgrec_app.models import Interaction
    from imgrec_app.services.foryou_sources import _popular_in

    products, _ = catalogue
    rng = random.Random(3)
    for _ in range(40):  # forty visitors, long-tailed, some views days old (the decay counts)
        req = _request()
        for p in rng.choices(products, weights=[1 / (1 + i) for i in range(len(products))], k=6):
            history.record(req, p)
    for n, event in enumerate(Interaction.objects.order_by("pk")):
        Interaction.objects.filter(pk=event.pk).update(created_at=timezone.now() - timedelta(hours=7 * (n % 9)))
    fruit = [p for p in products if p.category.slug == "fruit"]
    tie = fruit[-2:]  # two products with exactly equal popularity: one view each, at the same time
    Interaction.objects.filter(object_id__in=[str(p.pk) for p in tie]).delete()
    for p in tie:
        history.record(_request(), p)
    Interaction.objects.filter(object_id__in=[str(p.pk) for p in tie]).update(created_at=timezone.now())
    restrict = recommendable_products()
    cats = sorted({str(p.category_id) for p in products})
    exclude = {str(p.pk) for p in products[:7]}
    in_fruit = restrict.filter(category_id=tie[0].category_id)
    everything = recommend.trending_scores(restrict_to=in_fruit, limit=99, exclude=exclude)
    at_tie = min(n for n, (obj, _) in enumerate(everything) if obj in {str(p.pk) for p in tie}) + 1
    for limit in (3, at_tie, 20):  # at_tie: the cut falls between the two tied products
        got, mass = _popular_in([(c, 1 / 3) for c in cats], restrict=restrict, exclude=exclude, limit=limit)
        expected: dict[str, float] = {}
        for c in cats:
            in_cat = restrict.filter(category_id=c)
            expected.update(recommend.trending_scores(restrict_to=in_cat, limit=limit, exclude=exclude))
            # rel 1e-6: the decay is read at each statement's own time (Now() is STATEMENT_TIMESTAMP)
            assert mass[c] == pytest.approx(recommend.trending_mass(restrict_to=in_cat, exclude=exclude), rel=1e-6)
        assert got.keys() == expected.keys() and not got.keys() & exclude, limit
        assert got == pytest.approx(expected, rel=1e-6)
    assert len(set(got) & {str(p.pk) for p in tie}) == 2
    # one statement for the three categories (it was two per category)
    with CaptureQueriesContext(connection) as q:
        _popular_in([(c, 1 / 3) for c in cats], restrict=restrict, exclude=exclude, limit=5)
    assert len(q) == 1


def test_small_shop_one_view_does_not_make_a_bestseller(catalogue, make_product):  # noqa: F811
    """A new shop: one other visitor viewed one toy, once.  That view must not put a toy that looks
    like nothing the visitor viewed at the head of their shelf (it did, at full weight, before the
    category source weighed its evidence); many views of it do."""
    products, _ = catalogue
    star = _far_product(make_product, "toys", "Once-viewed toy")
    history.record(_request(), star)
    req = _request()
    for p in [p for p in products if p.category.slug == "toys"][:4]:
        history.record(req, p)
    shelf = foryou.recommended_for_you(req, limit=6)
    assert shelf[0].product_id != str(star.pk) and shelf[0].source == "for_you:interest", shelf[0]
    pool = foryou.gather(req, limit=6, weights=foryou.foryou_weights())
    thin = next(s for s in pool.scored if s.product_id == str(star.pk)).features["category"]
    assert thin == pytest.approx(1 / (1 + foryou.POPULARITY_EVIDENCE_VIEWS), rel=0.01)  # still a candidate
    for _ in range(30):  # thirty more visitors view it: now it is one
        history.record(_request(), star)
    assert foryou.recommended_for_you(req, limit=6)[0].product_id == str(star.pk)


def test_coview_source_brings_products_viewed_with_the_history(catalogue, make_product, settings):  # noqa: F811
    products, _ = catalogue
    shoe = products[0]
    partner = _far_product(make_product, "fruit", "Shoe polish")
    for _ in range(3):
        other = _request()
        history.record(other, shoe)
        history.record(other, partner)
    recommend.refresh_coviews()
    req = _request()
    history.record(req, shoe)
    items = foryou.recommended_for_you(req, limit=6, weights={"coview": 2.0})
    assert items[0].product_id == str(partner.pk)
    assert items[0].source == "for_you:coview" and items[0].reason == f"Often viewed with {shoe.name}"
    without = foryou.recommended_for_you(req, limit=6, weights={"coview": 0.0, "category": 0.0})
    assert str(partner.pk) not in {i.product_id for i in without}


def test_recency_weight_puts_the_latest_interest_first(catalogue):  # noqa: F811
    from datetime import timedelta

    from django.utils import timezone

    from imgrec_app.models import Interaction

    products, _ = catalogue
    req = _request()
    toys = [p for p in products if p.category.slug == "toys"][:3]
    shoes = [p for p in products if p.category.slug == "shoes"][:2]
    for p in toys + shoes:  # shoes viewed last
        history.record(req, p)
    now = timezone.now()
    for age, p in enumerate(reversed(toys + shoes)):
        Interaction.objects.filter(object_id=str(p.pk)).update(created_at=now - timedelta(seconds=age + 1))
    flat = foryou.recommended_for_you(req, limit=4, weights={**ONLY["interest"], "recency": 0.0})
    recent = foryou.recommended_for_you(req, limit=4, weights={**ONLY["interest"], "recency": 2.0})
    assert _cat(flat)[0] == "toys"  # three toys outweigh two shoes
    assert _cat(recent)[0] == "shoes"  # ×(1 + 2 × 0.5^position): the last two views weigh more


# --- one product page ------------------------------------------------------------------------------------


PAGE = (
    "{% load imgrec_tags %}"
    "{% similar_products product limit=8 as similar %}"
    "{% recommended_for_you limit=8 as for_you %}"
    "{% for i in similar %}s:{{ i.product_id }};{% endfor %}|"
    "{% for i in for_you %}f:{{ i.product_id }}={{ i.reason }};{% endfor %}"
)


def _page(product: Any, req: Any, src: str = PAGE) -> tuple[list[str], list[tuple[str, str]], int]:
    with CaptureQueriesContext(connection) as q:
        out = Template(src).render(Context({"product": product, "request": req}))
    sim_part, fy_part = out.split("|")
    similar = [s[2:] for s in sim_part.split(";") if s]
    fy = [tuple(s[2:].split("=", 1)) for s in fy_part.split(";") if s]
    knn = sum("<=>" in x["sql"] for x in q.captured_queries)
    return similar, fy, knn


def test_product_page_for_you_never_repeats_the_similar_shelf_nor_names_the_product(catalogue):  # noqa: F811
    products, _ = catalogue
    req = _request()
    current = products[0]
    history.record(req, current)  # the page records the view first: one view only
    similar, fy, _ = _page(current, req)
    assert len(similar) == 8 and len(fy) == 8
    assert not set(similar) & {pid for pid, _ in fy}
    assert str(current.pk) not in {pid for pid, _ in fy}
    assert all(current.name not in reason for _, reason in fy), fy


def test_reasons_name_another_viewed_product_never_the_current_one(catalogue):  # noqa: F811
    products, _ = catalogue
    req = _request()
    shoes = [p for p in products if p.category.slug == "shoes"]
    for p in shoes[:3]:
        history.record(req, p)
    current = shoes[2]  # viewed last: the product on screen
    _, fy, _ = _page(current, req)
    because = [r for _, r in fy if r.startswith("Because you viewed ")]
    assert because, fy
    assert all(r.split("viewed ", 1)[1] in {shoes[0].name, shoes[1].name} for r in because), fy


def test_product_page_reuses_the_similar_shelf_instead_of_a_second_knn(catalogue, settings):  # noqa: F811
    products, _ = catalogue
    # Count k-NN statements as computed, not as served from the shelf cache.
    settings.IMGREC = {**settings.IMGREC, "SHELF_CACHE": False}
    req = _request()
    history.record(req, products[0])
    _, _, knn_page = _page(products[0], req)
    alone_src = "{% load imgrec_tags %}{% similar_products product limit=8 as similar %}{% for i in similar %}s:{{ i.product_id }};{% endfor %}|"
    _, _, knn_similar = _page(products[0], _request(), alone_src)
    # for-you adds its own k-NN (one interest here, one modality) and nothing for the similar shelf
    assert knn_page == knn_similar + 1


def test_for_you_rendered_first_builds_the_similar_shelf_once_for_the_page(catalogue, settings):  # noqa: F811
    products, _ = catalogue
    settings.IMGREC = {**settings.IMGREC, "SHELF_CACHE": False}  # k-NN statements as computed
    req = _request()
    history.record(req, products[0])
    first = (
        "{% load imgrec_tags %}"
        "{% recommended_for_you limit=8 as for_you %}"
        "{% similar_products product limit=8 as similar %}"
        "{% for i in similar %}s:{{ i.product_id }};{% endfor %}|"
        "{% for i in for_you %}f:{{ i.product_id }}={{ i.reason }};{% endfor %}"
    )
    similar, fy, knn_page = _page(products[0], req, first)
    assert len(similar) == 8 and not set(similar) & {pid for pid, _ in fy}
    _, _, knn_in_order = _page(products[0], _request(session=req.session))  # same visitor, new request
    assert knn_page == knn_in_order  # the similar tag reused the shelf for-you built


def test_api_with_product_leaves_its_similar_shelf_out(client, catalogue):  # noqa: F811
    products, _ = catalogue
    current = products[0]
    assert client.post("/api/imgrec/events/", {"product_id": current.pk}, content_type="application/json").status_code == 201
    similar = {r["product_id"] for r in client.get(f"/api/imgrec/products/{current.pk}/similar/?limit=8").json()["results"]}
    got = client.get(f"/api/imgrec/recommendations/?limit=8&product={current.pk}").json()["results"]
    assert len(got) == 8
    assert not similar & {r["product_id"] for r in got}
    assert str(current.pk) not in {r["product_id"] for r in got}
    assert all(current.name not in r["reason"] for r in got)


# --- queries -----------------------------------------------------------------------------------------------


def test_for_you_queries_one_vector_fetch_and_one_knn_per_interest(catalogue, settings):  # noqa: F811
    from imgrec_app.services.models import cached_serving_model

    products, _ = catalogue
    assert cached_serving_model() == (MODEL_ID, DIM)  # read once per process (this one's first shelf)
    counts = []
    for n in (12, 45):
        req = _request()
        for p in products[:n]:
            history.record(req, p)
        with CaptureQueriesContext(connection) as q:
            items = foryou.recommended_for_you(req, limit=8)
        assert len(items) == 8
        sqls = [x["sql"] for x in q.captured_queries]
        counts.append(len(sqls))
        interests = min(int(settings.IMGREC.get("MAX_INTERESTS", 3)), n // 2)
        knn = [s for s in sqls if "<=>" in s]
        assert len(knn) == 1 and knn[0].count("<=>") >= interests  # every interest, one statement
        assert sum("vector_send" in s for s in sqls) == 2  # the history's vectors, the candidates'
        assert not any(s.startswith('SELECT "imgrec_app_servingmodel"') for s in sqls)  # cached per process
    assert counts[0] == counts[1]
    # history, the history's vectors (the serving model checked inside, it is cached per process)
    # and products, one k-NN statement for every interest (a UNION ALL; it was one each), co-views,
    # popularity with its total for every category (one grouped statement, it was 3 × 2), the
    # candidates' products and vectors
    assert counts[0] <= 8, counts


def test_interests_knn_in_one_statement_matches_one_nearest_per_interest(catalogue):  # noqa: F811
    """The one ``UNION ALL`` statement finds what ``search.nearest`` per interest and modality
    found, with the shop's rules and the exclusions inside, on a history of three interests."""
    from imgrec_app.hosts import recommendable_products
    from imgrec_app.services import search
    from imgrec_app.services.foryou_sources import _interest_neighbours, find_interests
    from shop_demo.catalog.models import Product

    products, _ = catalogue
    Product.objects.filter(pk__in=[p.pk for p in products[20:26]]).update(stock=0)  # out of the rules
    req = _request()
    for p in products[:12]:
        history.record(req, p)
    profile = foryou.load_profile(req, recency=0.0)
    interests = find_interests(profile)
    assert len(interests) == 3
    restrict = recommendable_products()
    exclude = sorted({str(p.pk) for p in products[:12]})
    for n in (4, 11, 40):
        expected: set[str] = set()
        for interest in interests:
            for modality, vector in interest.centroids.items():
                mid, dim = next((m, d) for mo, m, d in profile.models if mo == modality)
                rows = search.nearest(vector, model_id=mid, dim=dim, limit=n, restrict_to=restrict, exclude_ids=exclude)
                expected.update(obj for obj, _ in rows)
        with CaptureQueriesContext(connection) as q:
            got = _interest_neighbours(interests, profile, n=n, restrict=restrict, exclude=exclude)
        assert len(q) == 1
        assert got == expected and len(got) >= n, n
        assert not got & set(exclude) and not got & {str(p.pk) for p in products[20:26]}


def test_for_you_notices_a_model_switch_made_by_another_process(catalogue):  # noqa: F811
    """The serving model is cached per process; a switch written by another process (the row
    changed, this process's cache not told) is noticed by the history's vector statement."""
    from imgrec_app.models import ServingModel
    from imgrec_app.services import models as serving_models

    products, _ = catalogue
    ct = ContentType.objects.get_for_model(products[0])
    other = "test-model:v2:p1"
    rng = np.random.default_rng(5)
    ProductVector.objects.bulk_create(
        [
            ProductVector(content_type=ct, object_id=str(p.pk), model_id=other, vector=_unit(rng.normal(size=DIM)).tolist())
            for p in products
        ]
    )
    req = _request()
    for p in products[:6]:
        history.record(req, p)
    assert foryou.load_profile(req, recency=0.0).models[0][1] == MODEL_ID  # cached from here on
    ServingModel.objects.filter(modality="image").update(model_id=other)  # "another process"
    assert serving_models._serving_cache[("default", "image")][0] == MODEL_ID
    profile = foryou.load_profile(req, recency=0.0)
    assert profile.models[0][1] == other
    assert serving_models._serving_cache[("default", "image")][0] == other
    for p in products[:6]:
        stored = ProductVector.objects.get(content_type=ct, object_id=str(p.pk), model_id=other)
        assert np.allclose(profile.vectors["image"][str(p.pk)], np.asarray(stored.vector))
    with CaptureQueriesContext(connection) as q:
        foryou.load_profile(req, recency=0.0)
    assert not any('"imgrec_app_servingmodel"."id"' in x["sql"] for x in q.captured_queries)  # cached again


# --- the real demo catalogue, real worker -------------------------------------------------------------------


@pytest.mark.worker
def test_five_views_in_one_category_fill_the_shelf_with_it(celery_worker: Any, tmp_path: Path) -> None:
    """Real demo images and texts, embedded by the real worker: after 5 views of one category at
    least 80 % of the shelf is in that category (on the product page of the last one, too)."""
    from django.core.management import call_command

    from imgrec_app.models import IndexedImage
    from imgrec_app.services import text
    from shop_demo.catalog.models import Product
    from tests.conftest import CATALOGUE_DIR, wait_for

    seeded = {"fruit": 24, "musical-instruments": 6, "vehicles": 6, "computer-hardware": 6, "clothing-accessories": 6}
    for category, count in seeded.items():
        (tmp_path / category).mkdir()
        for image in sorted((CATALOGUE_DIR / "images" / category).glob("*.png"))[:count]:
            shutil.copy(image, tmp_path / category / image.name)
    call_command("seed_demo", images=tmp_path, stdout=io.StringIO(), verbosity=0)
    wait_for(lambda: not IndexedImage.objects.filter(status__in=["pending", "processing"]).exists(), timeout=600)
    wait_for(lambda: not text.missing_text_ids(), timeout=600)
    fruit = list(Product.objects.filter(category__slug="fruit").order_by("pk")[:5])
    req = _request()
    for p in fruit:
        history.record(req, p)
    shelf = foryou.recommended_for_you(req, limit=10)
    assert len(shelf) == 10
    share = _cat(shelf).count("fruit") / len(shelf)
    print(f"five fruit views: {share:.0%} of the shelf is fruit")
    assert share >= 0.8, [(i.product.name, i.product.category.slug, i.source) for i in shelf]
    page = foryou.for_product_page(req, fruit[-1], limit=10)
    assert _cat(page).count("fruit") / len(page) >= 0.8, [(i.product.name, i.product.category.slug) for i in page]


# --- the evaluation: no held-out view leaks into a source --------------------------------------------------


def test_evaluation_rebuilds_viewed_together_pairs_without_the_held_out_views(catalogue, make_product):  # noqa: F811
    """60 real visitors view two shoes, then (held out) one of two far-away toys.  The shop's pairs,
    built from the full history, link the shoes to those toys; the evaluation must not use them."""
    import random
    from datetime import timedelta

    from django.utils import timezone

    from imgrec_app.models import CoView, Interaction
    from imgrec_app.services import evaluation

    products, _ = catalogue
    shoes = [p for p in products if p.category.slug == "shoes"][:2]
    targets = [_far_product(make_product, "toys", f"Far toy {i}") for i in range(2)]
    for i in range(6):  # newer products: what the "New in the shop" fallback shows instead
        make_product(f"Newer {i}", category="fruit")
    ct = ContentType.objects.get_for_model(products[0])
    start = timezone.now() - timedelta(days=1)
    rows = []
    for v in range(60):
        owner = {"visitor_id": __import__("uuid").uuid4()}
        for j, p in enumerate([*shoes, targets[v % 2]]):
            rows.append(Interaction(content_type=ct, object_id=str(p.pk), created_at=start + timedelta(minutes=j), **owner))
    Interaction.objects.bulk_create(rows)
    recommend.refresh_coviews()
    stale = CoView.objects.filter(object_id=str(shoes[0].pk), other_id__in=[str(t.pk) for t in targets]).count()
    assert stale == 2  # the shop's pairs do contain (seen, held-out)
    before = sorted(CoView.objects.values_list("object_id", "other_id", "visitors"))

    cat = evaluation.load_catalogue()
    with override_foryou({"interest": 0.0, "coview": 1.0, "category": 0.0, "recency": 0.0}):
        result = evaluation.evaluate_for_you(
            cat, evaluation.EvaluationOptions(k=5, sample=None), random.Random(0), evaluation._identity
        )
    assert result["simulated"] is False and result["shoppers"] == 60
    assert result["methods"]["for_you"]["hit_rate"] == 0.0  # the held-out toys are out of reach
    assert sorted(CoView.objects.values_list("object_id", "other_id", "visitors")) == before  # rolled back


def override_foryou(weights):
    from django.conf import settings as dj
    from django.test.utils import override_settings

    return override_settings(IMGREC={**dj.IMGREC, "FORYOU_WEIGHTS": weights})


def test_foryou_grid_measures_every_setting(catalogue):  # noqa: F811
    import random

    from imgrec_app.services import evaluation

    cat = evaluation.load_catalogue()
    result = evaluation.evaluate_for_you(
        cat,
        evaluation.EvaluationOptions(k=5, simulated_shoppers=12, events_per_shopper=5, foryou_grid=True),
        random.Random(0),
        evaluation._identity,
    )
    grid = result["grid"]
    assert len(grid["rows"]) == 70  # 3 × 3 × 4 source settings minus all-off, × 2 recency values
    assert not any(r["interest"] == r["coview"] == r["category"] == 0 for r in grid["rows"])
    assert grid["best"] in grid["rows"]
    # chosen on one half of the shoppers, to be read on the other
    assert grid["best"]["hit_rate_choose"] == max(r["hit_rate_choose"] for r in grid["rows"])
    for row in grid["rows"]:
        assert row["hit_rate"] == pytest.approx((row["hit_rate_choose"] + row["hit_rate_check"]) / 2)
    assert 0 <= grid["baseline_hit_rate_check"] <= 1 and 0 <= grid["baseline_hit_rate_choose"] <= 1
    # the pooled ranking reproduces the service for the configured weights
    configured = result["weights"]
    row = next(r for r in grid["rows"] if all(r[k] == configured[k] for k in evaluation.FORYOU_GRID))
    assert row["hit_rate"] == pytest.approx(result["methods"]["for_you"]["hit_rate"])
