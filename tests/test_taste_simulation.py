"""The second simulated shoppers (``--shopper-model taste``): a colour read from the photos' own
pixels and a latent style, both followed by the shoppers, and the evaluation running on them."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from PIL import Image

from imgrec_app.services import evaluation
from imgrec_app.services import evaluation_taste as taste
from tests.conftest import CATALOGUE_DIR
from tests.test_evaluation import _hand_catalogue, catalogue  # noqa: F401


def _photo(name: str) -> Image.Image:
    return Image.open(next((CATALOGUE_DIR / "images").glob(f"*/{name}")))


def test_colour_family_reads_the_photo_not_the_model():
    # the demo's own photos
    assert taste.colour_family(_photo("banana.png")) == "yellow"
    assert taste.colour_family(_photo("bing-cherry.png")) == "red"
    assert taste.colour_family(_photo("black-plum.png")) == "magenta"
    # transparent canvas around a small blue object: the canvas does not count
    img = Image.new("RGBA", (200, 200), (0, 0, 0, 0))
    img.paste((20, 40, 230, 255), (80, 80, 120, 120))
    assert taste.colour_family(img) == "blue"
    # white, grey and black are one "neutral" family
    assert taste.colour_family(Image.new("RGB", (64, 64), (250, 250, 250))) == "neutral"
    assert taste.colour_family(Image.new("RGB", (64, 64), (90, 90, 90))) == "neutral"


def test_taste_shoppers_follow_their_colour_and_style_and_the_oracle_is_their_generator():
    cat = _hand_catalogue({"a": 24, "b": 24, "c": 24})
    palette = ["red", "green", "blue"]
    colours = {item: palette[n % 3] for n, item in enumerate(sorted(cat.recommendable))}
    world, sessions = taste.simulate_taste_shoppers(cat, count=300, events=10, rng=random.Random(4), colours=colours)
    again = taste.simulate_taste_shoppers(cat, count=300, events=10, rng=random.Random(4), colours=colours)[1]
    assert sessions == again  # reproducible
    assert world is not None and set(world.style.values()) == set(range(taste.STYLES))
    same_colour = same_style = in_preferred = total = 0
    for shopper, browsed in sessions:
        assert len(browsed) == 10 and len(set(browsed)) == 10 and shopper.colour in palette
        same_colour += sum(colours[i] == shopper.colour for i in browsed)
        same_style += sum(world.style[i] == shopper.style for i in browsed)
        in_preferred += sum(cat.category[i] in shopper.preferred for i in browsed)
        total += len(browsed)
    # a third of the products share each colour and each style; with the taste, over half the views
    assert same_colour / total > 0.5 and same_style / total > 0.5, (same_colour / total, same_style / total)
    assert 0.8 < in_preferred / total < 0.97  # the category behaviour of the default shoppers is kept
    shopper, browsed = sessions[0]
    p = taste.taste_next_view_probabilities(world, shopper, set(browsed[:5]))
    assert sum(p.values()) == pytest.approx(1.0)
    assert not set(p) & set(browsed[:5])
    # the default shoppers carry no colour: on the same catalogue they view each colour a third
    plain = evaluation.simulate_shoppers(cat, count=300, events=10, rng=random.Random(4))
    views = Counter(colours[i] for _, b in plain for i in b)
    assert max(views.values()) / sum(views.values()) < 0.4


@pytest.mark.django_db
def test_evaluation_runs_on_taste_shoppers_with_background_traffic(catalogue):  # noqa: F811
    from imgrec_app.models import Interaction

    cat = evaluation.load_catalogue()
    colours = taste.product_colours(cat)
    assert set(colours) == set(cat.recommendable)  # every product's photo read
    assert set(colours.values()) <= {*taste.HUE_FAMILIES, taste.NEUTRAL}
    before = Interaction.objects.count()
    options = evaluation.EvaluationOptions(
        k=5, simulated_shoppers=10, events_per_shopper=5, shopper_model="taste", background_shoppers=6
    )
    result = evaluation.evaluate_for_you(cat, options, random.Random(0), evaluation._identity)
    assert result["simulated"] and result["shopper_model"] == "taste" and result["background_shoppers"] == 6
    assert result["shoppers"] == 10 and set(result["methods"]) >= {"for_you", "category_popular"}
    assert Interaction.objects.count() == before  # rolled back
    # the evaluated shoppers are the same whatever the background
    ten = evaluation.simulated_sessions(cat, options, random.Random(0))
    alone = evaluation.simulated_sessions(
        cat,
        evaluation.EvaluationOptions(simulated_shoppers=10, events_per_shopper=5, shopper_model="taste"),
        random.Random(0),
    )
    assert len(ten) == 16 and ten[:10] == alone
    with pytest.raises(ValueError, match="Unknown shopper model"):
        evaluation.simulated_sessions(cat, evaluation.EvaluationOptions(shopper_model="nope"), random.Random(0))


@pytest.mark.django_db
def test_command_takes_the_shopper_model_and_refuses_an_unknown_one(catalogue, tmp_path):  # noqa: F811
    import io
    import json

    from django.core.management import call_command
    from django.core.management.base import CommandError

    out = io.StringIO()
    args = ["--output", "", "--k", "5", "--simulated-shoppers", "8", "--events-per-shopper", "4", "--no-tuning"]
    call_command(
        "imgrec_evaluate",
        *args,
        "--shopper-model",
        "taste",
        "--background-shoppers",
        "3",
        "--json",
        stdout=out,
        stderr=io.StringIO(),
    )
    for_you = json.loads(out.getvalue())["for_you"]
    assert for_you["shopper_model"] == "taste" and for_you["background_shoppers"] == 3 and for_you["shoppers"] == 8
    with pytest.raises(CommandError, match="shopper-model"):
        call_command("imgrec_evaluate", *args, "--shopper-model", "colour", stdout=io.StringIO(), stderr=io.StringIO())
