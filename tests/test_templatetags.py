"""Template tags and the demo's product page: shelves render, fail soft, bounded queries."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.db import connection
from django.template import Context, Template
from django.test.utils import CaptureQueriesContext

import imgrec_app
from tests.test_recommend import _request, catalogue  # noqa: F401

pytestmark = pytest.mark.django_db


def _render(src: str, **ctx) -> str:
    return Template("{% load imgrec_tags %}" + src).render(Context(ctx))


def test_similar_tag_puts_items_in_context(catalogue):  # noqa: F811
    products, _ = catalogue
    out = _render("{% imgrec_similar_products product limit=4 as items %}{% for i in items %}[{{ i.product.name }}|{{ i.reason }}]{% endfor %}", product=products[0], request=_request())
    assert out.count("[") == 4 and "Looks similar" in out


@pytest.mark.parametrize(
    ("old", "new", "args"),
    [("similar_products", "imgrec_similar_products", "product limit=3"), ("recommended_for_you", "imgrec_recommended_for_you", "limit=3")],
)
def test_unprefixed_tag_names_still_work_but_are_deprecated(catalogue, old, new, args):  # noqa: F811
    products, _ = catalogue
    src = "{% TAG " + args + " as items %}{% for i in items %}[{{ i.product.pk }}]{% endfor %}"
    with pytest.warns(DeprecationWarning, match=f"{{% {old} %}} is deprecated; use {{% {new} %}}"):
        legacy = _render(src.replace("TAG", old), product=products[0], request=_request())
    current = _render(src.replace("TAG", new), product=products[0], request=_request())
    assert legacy == current and legacy.count("[") == 3


def test_shelves_link_the_default_stylesheet_once_per_page(catalogue, settings):  # noqa: F811
    products, _ = catalogue
    page = "{% imgrec_similar_shelf product limit=3 %}{% imgrec_similar_shelf product limit=2 %}"
    html = _render(page, product=products[0], request=_request())
    assert html.count('<link rel="stylesheet" href="/static/imgrec_app/shelf.css">') == 1
    assert html.index("<link") < html.index("<section")
    # {% imgrec_stylesheet %} in <head> links it there instead, and the shelves do not repeat it
    html = _render("<head>{% imgrec_stylesheet %}</head>" + page, product=products[0], request=_request())
    assert html.count("imgrec_app/shelf.css") == 1 and html.startswith('<head><link rel="stylesheet"')
    settings.IMGREC = {**settings.IMGREC, "SHELF_STYLESHEET": None}
    html = _render("{% imgrec_stylesheet %}" + page, product=products[0], request=_request())
    assert "<link" not in html and html.count('class="imgrec-shelf__item"') == 5


def test_shelf_images_are_not_forced_to_a_size():
    from django.template.loader import render_to_string

    entries = [{"item": None, "product": f"P{i}", "url": f"/p/{i}/", "image_url": f"/m/{i}.png"} for i in range(3)]
    html = render_to_string("imgrec_app/shelf.html", {"kind": "similar", "title": "T", "entries": entries})
    assert html.count('<img src="/m/') == 3
    assert "width=" not in html and "height=" not in html  # the stylesheet sizes them, keeping proportions


_INLINE = [
    (re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I), "inline <script>"),
    (re.compile(r"<style\b", re.I), "<style> element"),
    (re.compile(r"\sstyle=", re.I), "style= attribute"),
    (re.compile(r"\son[a-z]+=", re.I), "event-handler attribute"),
    (re.compile(r"javascript:", re.I), "javascript: URL"),
]
TEMPLATES = Path(imgrec_app.__file__).resolve().parent / "templates"  # the installed app (the wheel, in CI)
# The evaluation report is a self-contained HTML file written to disk (never served by the shop):
# its styles and plots are inline so that it opens anywhere.
STANDALONE = {"imgrec_app/evaluation_report.html"}


def test_templates_have_nothing_inline_that_a_strict_csp_refuses():
    served = [p for p in TEMPLATES.rglob("*.html") if p.relative_to(TEMPLATES).as_posix() not in STANDALONE]
    assert len(served) >= 5
    found = [
        f"{p.relative_to(TEMPLATES)}: {what}: {m.group(0)!r}"
        for p in served
        for pattern, what in _INLINE
        for m in pattern.finditer(p.read_text())
    ]
    assert not found, found


def test_the_static_files_the_templates_name_exist():
    from django.contrib.staticfiles import finders

    names = set()
    for p in TEMPLATES.rglob("*.html"):
        names.update(re.findall(r"{% static '([^']+)' %}", p.read_text()))
    assert {"imgrec_app/lazy-shelf.js", "imgrec_app/admin-status.js", "imgrec_app/admin.css"} <= names
    for name in names | {"imgrec_app/shelf.css"}:
        assert finders.find(name), name


def test_demo_sends_a_strict_content_security_policy(client):
    csp = client.get("/")["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "style-src 'self';" in csp and "unsafe-inline" not in csp


def test_shelf_costs_a_bounded_number_of_queries(catalogue):  # noqa: F811
    products, _ = catalogue
    _render("{% imgrec_similar_shelf product limit=3 %}", product=products[1], request=_request())  # reads the serving model once
    counts = []
    for limit in (4, 16):
        with CaptureQueriesContext(connection) as q:
            html = _render("{% imgrec_similar_shelf product limit=limit %}", product=products[0], limit=limit, request=_request())
        assert html.count('class="imgrec-shelf__item"') == limit
        counts.append(len(q))
    # cold: one k-NN statement (rules, near-duplicates, the products' columns and images inside)
    # + the shelf's impression (one INSERT per rendered shelf, services/tracking.py)
    assert counts == [2, 2]
    assert q.captured_queries[-1]["sql"].startswith('INSERT INTO "imgrec_app_shelfimpression"')
    with CaptureQueriesContext(connection) as q:
        html = _render("{% imgrec_similar_shelf product limit=16 %}", product=products[0], request=_request())
    assert html.count('class="imgrec-shelf__item"') == 16
    assert len(q) == 2  # cached: the cached ids loaded through the rules, images annotated; the impression


def test_for_you_shelf_queries_do_not_grow_with_history(catalogue):  # noqa: F811
    from imgrec_app.services import history
    from imgrec_app.services.models import cached_serving_model

    products, _ = catalogue
    cached_serving_model()  # read once per process, by its first shelf
    counts = []
    for n in (12, 45):
        req = _request()
        for p in products[:n]:
            history.record(req, p)
        with CaptureQueriesContext(connection) as q:
            _render("{% imgrec_for_you_shelf limit=8 %}", request=req)
        counts.append(len(q))
    assert counts[0] == counts[1]  # bounded by MAX_INTERESTS, not by the history's length
    # for-you (services/foryou.py): history, one vector fetch for the history (the serving model,
    # cached per process, checked inside it) and one for the candidates, their products, one k-NN
    # statement for every interest (foryou_sources._interest_neighbours: a UNION ALL; it was one
    # per interest = 3), co-views, popularity with its total for every visitor category (one
    # grouped statement, foryou_sources._popular_in; it was 2 per category = 6) = 8; the shelf's
    # images: 1; the visitor's shelf controls (pause, not interested): 1; the shelf's impression
    # (services/tracking.py): 1 (docs/BENCHMARKS.md, section 3).
    assert counts[0] <= 11, counts


def test_tags_fail_soft_when_vector_queries_fail(catalogue, monkeypatch, caplog):  # noqa: F811
    from imgrec_app.services import search

    products, _ = catalogue

    def broken(*a, **k):
        raise RuntimeError("pgvector is down")

    monkeypatch.setattr(search, "nearest", broken)
    monkeypatch.setattr(search, "run_knn_statement", broken)
    out = _render("{% imgrec_similar_shelf product %}|{% imgrec_for_you_shelf %}", product=products[0], request=_request())
    assert "|" in out
    assert "imgrec similar shelf failed" in caplog.text


def test_product_page_shows_shelves_and_records_the_view(client, catalogue):  # noqa: F811
    from imgrec_app.models import Interaction

    products, _ = catalogue
    r = client.get(products[0].get_absolute_url())
    assert r.status_code == 200
    html = r.content.decode()
    assert "Similar products" in html and "imgrec-shelf--similar" in html
    assert Interaction.objects.filter(object_id=str(products[0].pk)).count() == 1


def test_product_page_renders_when_database_vector_queries_fail(client, catalogue, monkeypatch):  # noqa: F811
    from imgrec_app.querysets import ProductVectorQuerySet

    products, _ = catalogue

    def broken(self, *a, **k):
        raise RuntimeError("vector query failed")

    monkeypatch.setattr(ProductVectorQuerySet, "nearest", broken)
    monkeypatch.setattr("imgrec_app.services.search.run_knn_statement", lambda *a, **k: broken(None))
    r = client.get(products[0].get_absolute_url())
    assert r.status_code == 200


def test_lazy_fragments(client, catalogue):  # noqa: F811
    products, _ = catalogue
    out = _render("{% imgrec_lazy_shelf 'similar' product %}", product=products[0], request=_request())
    assert f"/imgrec/fragments/similar/{products[0].pk}/" in out
    frag = client.get(f"/imgrec/fragments/similar/{products[0].pk}/?limit=3")
    assert frag.status_code == 200 and frag.content.decode().count('class="imgrec-shelf__item"') == 3
    mine = client.get("/imgrec/fragments/for-you/")
    assert "private" in mine["Cache-Control"] and "Cookie" in mine["Vary"]
