"""imgrec_evaluate on a small real catalogue: real images, real vectors, the real shelves."""

from __future__ import annotations

import base64
import io
import json
import random
import re
import shutil
import uuid
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from imgrec_app.models import CategoryClassifier, CategoryPrediction, Interaction
from imgrec_app.services import evaluation
from tests.conftest import CATALOGUE_DIR

pytestmark = pytest.mark.django_db

KINDS = ["fruit", "musical-instruments", "vehicles", "computer-hardware"]


@pytest.fixture
def catalogue(tmp_path):
    """4 categories × 6 real catalogue images, seeded and indexed (images and texts) in-process."""
    from shop_demo.catalog.models import Product

    for kind in KINDS:
        (tmp_path / "images" / kind).mkdir(parents=True)
        for f in sorted((CATALOGUE_DIR / "images" / kind).glob("*.png"))[:6]:
            shutil.copy(f, tmp_path / "images" / kind / f.name)
    quiet = {"stdout": io.StringIO(), "verbosity": 0}
    call_command("seed_demo", images=tmp_path / "images", **quiet)
    # Every product on shelves: the rules of the demo would drop the random out-of-stock ones.
    Product.objects.update(stock=10, published=True)
    call_command("imgrec_reindex", "--missing", "--sync", **quiet)
    call_command("imgrec_reindex", "--text", "--sync", **quiet)
    return list(Product.objects.select_related("category"))


def _run(tmp_path, *args):
    out = io.StringIO()
    report = tmp_path / "report.html"
    call_command("imgrec_evaluate", "--output", str(report), "--k", "5", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue(), report


def test_command_reports_real_shelves_against_baselines(catalogue, tmp_path):
    # Short sessions: in 24 products, 10 views would exhaust a shopper's categories.
    text, report = _run(
        tmp_path, "--simulated-shoppers", "40", "--events-per-shopper", "4", "--folds", "3", "--grid", "--json"
    )
    result = json.loads(text)

    # Simulated browsing and the classifier's trial run left nothing behind.
    assert Interaction.objects.count() == 0
    assert CategoryClassifier.objects.count() == 0 and CategoryPrediction.objects.count() == 0

    # (a) The real shelf keeps to the product's category far more often than chance.
    sim = result["similar"]
    assert sim["queries"] == len(catalogue) == 24
    methods = sim["methods"]
    random_precision = methods["random"]["precision"]
    assert methods["configured"]["precision"] > random_precision + 0.3
    assert methods["image_only"]["precision"] > random_precision + 0.2
    assert methods["category_popular"]["precision"] == 1.0  # 5 other products per category ≥ k
    assert len(methods["configured"]["curve"]) == 5
    assert set(methods["configured"]["per_category"]) == {
        "Fresh Fruit",
        "Musical Instruments",
        "Model Vehicles",
        "Computer Hardware",
    }
    grid = result["grid"]
    assert len(grid["rows"]) == 8 and grid["coview_pairs"] == 0
    assert all(r["note"] for r in grid["rows"] if r["coview"])  # no co-view data: said so
    assert grid["rows"][0]["precision"] == methods["image_only"]["precision"]

    # (b) The classifier learns the categories; the probes and the majority line are there.
    clf = result["classifier"]["methods"]
    assert clf["shop_classifier"]["accuracy"] > clf["majority"]["accuracy"] + 0.3
    assert clf["image_probe"]["accuracy"] > clf["majority"]["accuracy"] + 0.3
    assert "image_text_probe" in clf

    # (c) Simulated shoppers, labelled as such; the shelf built from their history follows them.
    fy = result["for_you"]
    assert fy["simulated"] is True and fy["shoppers"] == 40
    assert set(fy["methods"]) == {"for_you", "random", "popular", "category_popular"}
    ours, rand = fy["methods"]["for_you"], fy["methods"]["random"]
    assert ours["category_match"] > rand["category_match"] + 0.15
    assert ours["hit_rate"] > rand["hit_rate"]

    # The HTML report: plots embedded as PNG, the tables, the simulated label, category names.
    assert result["report"] == str(report.resolve())
    html = report.read_text()
    plots = re.findall(r'<img alt="[^"]+" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(plots) == 6  # similar ×3, grid, classifier, for-you
    assert all(base64.b64decode(p).startswith(b"\x89PNG") for p in plots)
    assert html.count("<table>") >= 7
    assert "SIMULATED shoppers" in html
    assert "Fresh Fruit" in html and "Model Vehicles" in html  # categories by name, not by id

    # Without --json the command prints the summary table (a small, quick run).
    text, report = _run(
        tmp_path, "--simulated-shoppers", "10", "--events-per-shopper", "4", "--folds", "2", "--sample", "8"
    )
    for heading in (
        "Similar products: precision@5",
        "Category classifier: 2-fold accuracy",
        "Recommended for you (SIMULATED shoppers)",
    ):
        assert heading in text
    assert "measured on SIMULATED shoppers" in text
    assert f"Report written to {report.resolve()}" in text
    assert Interaction.objects.count() == 0


def test_real_history_is_used_when_there_is_enough_and_left_intact(catalogue):
    """60 real visitors (every third logged in) with 4 views each: evaluated on their own held-out
    last view, and nothing is deleted."""
    from django.contrib.auth.models import User

    rng = random.Random(3)
    ct_products = {p.category.slug: [] for p in catalogue}
    for p in catalogue:
        ct_products[p.category.slug].append(p)
    from django.contrib.contenttypes.models import ContentType

    ct = ContentType.objects.get_for_model(catalogue[0])
    start = timezone.now() - timedelta(days=1)
    rows = []
    for v in range(60):
        owner = {"user": User.objects.create_user(f"shopper{v}")} if v % 3 == 0 else {"visitor_id": uuid.uuid4()}
        kind = KINDS[v % len(KINDS)]
        for j, p in enumerate(rng.sample(ct_products[kind], 4)):
            rows.append(
                Interaction(
                    content_type=ct, object_id=str(p.pk), created_at=start + timedelta(minutes=v * 10 + j), **owner
                )
            )
    Interaction.objects.bulk_create(rows)
    before = sorted(Interaction.objects.values_list("pk", flat=True))

    cat = evaluation.load_catalogue()
    result = evaluation.evaluate_for_you(
        cat, evaluation.EvaluationOptions(k=5, sample=None), random.Random(0), evaluation._identity
    )
    assert result["simulated"] is False
    assert result["real_visitors"] == 60 and result["shoppers"] == 60
    assert result["held_out_per_shopper"] == 1.0
    fy = result["methods"]["for_you"]
    assert fy["category_match"] > result["methods"]["random"]["category_match"]
    assert sorted(Interaction.objects.values_list("pk", flat=True)) == before


def test_nothing_indexed_is_a_clear_error(tmp_path):
    with pytest.raises(CommandError, match="imgrec_reindex"):
        call_command("imgrec_evaluate", "--output", str(tmp_path / "r.html"), stdout=io.StringIO())


def test_k_is_bounded(tmp_path):
    with pytest.raises(CommandError, match="--k"):
        call_command("imgrec_evaluate", "--k", "500", stdout=io.StringIO())


# --- the metrics and the simulation, on hand-made data ---------------------------------------------


def test_precision_curve_and_ndcg():
    assert evaluation.precision_curve([True, False, True], 4) == [1.0, 0.5, 2 / 3, 0.5]
    assert evaluation.ndcg(["a", "b", "c"], {"a"}, 3) == 1.0
    assert evaluation.ndcg(["x", "a"], {"a"}, 3) == pytest.approx(1 / 1.5849625, rel=1e-6)
    assert evaluation.ndcg(["x", "y"], {"a"}, 2) == 0.0
    assert evaluation.ndcg(["a", "b"], {"a", "b", "c"}, 2) == 1.0


def _hand_catalogue(sizes: dict[str, int]) -> evaluation.Catalogue:
    category = {f"{c}{i}": c for c, n in sizes.items() for i in range(n)}
    return evaluation.Catalogue(
        category=category,
        category_names={c: c.title() for c in sizes},
        recommendable=list(category),
        indexed=list(category),
        text_indexed=set(),
        image_model=("m", 4),
    )


def test_simulated_shoppers_follow_their_categories_and_are_reproducible():
    cat = _hand_catalogue({"a": 20, "b": 20, "c": 20, "d": 20})
    sessions = evaluation.simulate_shoppers(cat, count=200, events=10, rng=random.Random(1))
    assert sessions == evaluation.simulate_shoppers(cat, count=200, events=10, rng=random.Random(1))
    assert len(sessions) == 200
    in_preferred = total = 0
    for preferred, browsed in sessions:
        assert 1 <= len(preferred) <= 2 and len(browsed) == 10 and len(set(browsed)) == 10
        in_preferred += sum(cat.category[i] in preferred for i in browsed)
        total += len(browsed)
    assert 0.8 < in_preferred / total < 0.97  # 85 % preferred plus the explorers that land there


def test_category_popular_baseline_shares_slots_by_weight():
    cat = _hand_catalogue({"a": 10, "b": 10, "c": 10})
    base = evaluation.Baselines(cat, random.Random(0))  # no history: newest-first order
    shelf = base.category_popular({"a": 3.0, "b": 1.0}, {"a9"}, 8)
    cats = [cat.category[i] for i in shelf]
    assert len(shelf) == 8 and "a9" not in shelf
    assert cats.count("a") == 6 and cats.count("b") == 2
    assert len(set(base.random({"a1"}, 8))) == 8 and "a1" not in base.random({"a1"}, 8)
    assert base.popular(set(), 3) == cat.recommendable[:3]
