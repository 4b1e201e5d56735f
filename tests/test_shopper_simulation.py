"""Simulated shoppers feed the demo's A/B test through real requests: the product pages render real
shelves (impressions), the signed links are followed (clicks), carts and purchases go through
imgrec's events API (attributed conversions), for both variants of the demo's experiment."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.contrib.contenttypes.models import ContentType
from django.core.management import CommandError, call_command

from imgrec_app.contrib import shopper_simulation as sim
from imgrec_app.models import Interaction, ProductVector, ServingModel, ShelfClick, ShelfConversion, ShelfImpression
from imgrec_app.services import experiment_stats
from imgrec_app.services.vectors import ensure_hnsw_index
from shop_demo import settings as demo_settings

pytestmark = pytest.mark.django_db

MODEL_ID = "test-simulation:v1"
DIM = 16
DEMO_EXPERIMENT = "similar-text-weight"
EAGER = sim.Behaviour(
    click_preferred=0.9, click_other=0.1, decay=0.95, cart_preferred=0.8, cart_other=0.3, purchase=0.6
)


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture
def shop(make_product, settings):
    """24 products of 3 categories with clustered image vectors, served; the demo's experiment."""
    settings.IMGREC = {**settings.IMGREC, "EXPERIMENTS": demo_settings.IMGREC["EXPERIMENTS"]}
    rng = np.random.default_rng(3)
    centers = _unit(rng.normal(size=(3, DIM)))
    products = [make_product(f"{c} {i}", category=c) for i in range(8) for c in ("shoes", "fruit", "toys")]
    ct = ContentType.objects.get_for_model(products[0])
    ProductVector.objects.bulk_create(
        ProductVector(
            content_type=ct,
            object_id=str(p.pk),
            model_id=MODEL_ID,
            vector=_unit(centers[i % 3] + 0.4 * rng.normal(size=DIM)).tolist(),
        )
        for i, p in enumerate(products)
    )
    ServingModel.objects.update_or_create(modality="image", defaults={"model_id": MODEL_ID, "dimensions": DIM})
    ensure_hnsw_index(MODEL_ID, DIM)
    return products


def test_simulated_shoppers_feed_both_variants_through_the_real_services(shop):
    result = sim.simulate(visitors=10, pages=5, days=3, seed=1, behaviour=EAGER)
    assert result.visitors == 10 and result.pages > 10
    similar = ShelfImpression.objects.filter(shelf="similar", experiment=DEMO_EXPERIMENT)
    assert set(similar.values_list("variant", flat=True)) == {"control", "image-only"}
    # Every shelf rendered is one impression (recorded by the template tags), every followed link
    # one click (recorded by the product view), every cart/purchase after a click a conversion.
    assert ShelfImpression.objects.count() == result.shelves_seen
    assert ShelfClick.objects.count() == result.clicks > 0
    for variant in ("control", "image-only"):
        assert ShelfClick.objects.filter(impression__in=similar.filter(variant=variant)).exists(), variant
    carts = ShelfConversion.objects.filter(kind="cart").count()
    purchases = ShelfConversion.objects.filter(kind="purchase").count()
    assert 0 < carts == result.carts and 0 < purchases == result.purchases
    assert Interaction.objects.filter(kind="purchase").count() == result.purchases
    # Each click is on the product its impression showed at that position.
    for click in ShelfClick.objects.select_related("impression"):
        assert click.impression.item_ids[click.position - 1] == click.object_id
    # Spread over the last days, each visitor's rows alike (clicks after their impression).
    assert len({d for d in similar.values_list("created_at__date", flat=True)}) > 1
    for click in ShelfClick.objects.select_related("impression")[:20]:
        assert click.created_at >= click.impression.created_at
    report = experiment_stats.experiment_report(experiment_stats.Filters(shelf="similar", experiment=DEMO_EXPERIMENT))
    totals = {r.variant: r for r in report.rows if r.source == experiment_stats.ALL_SOURCES}
    assert set(totals) == {"control", "image-only"}
    assert totals["control"].is_control and "ctr" in totals["image-only"].vs_control


def test_the_shelf_parser_reads_the_rendered_links(shop, client):
    html = client.get(shop[0].get_absolute_url()).content.decode()
    shelves, links = sim.shelf_links(html)
    assert shelves >= 1 and links
    assert all("imgrec=" in link.href for link in links)  # signed links
    similar = [link for link in links if link.shelf == "similar"]
    assert [link.position for link in similar] == list(range(1, len(similar) + 1))


def test_command_runs_and_refuses_an_unindexed_shop(shop):
    out = io.StringIO()
    call_command("imgrec_simulate_shoppers", "--visitors", "3", "--pages", "3", "--days", "0", stdout=out, verbosity=0)
    assert "3 simulated shoppers" in out.getvalue()
    ServingModel.objects.all().delete()
    with pytest.raises(CommandError, match="Nothing is indexed"):
        call_command("imgrec_simulate_shoppers", "--visitors", "2", verbosity=0)
    with pytest.raises(CommandError):
        call_command("imgrec_simulate_shoppers", "--visitors", "0", verbosity=0)
