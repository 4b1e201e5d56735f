"""Offline evaluation of the shelves on the shop's own catalogue, against simple baselines.

Three questions a merchant can ask before trusting the shelves, each answered with the real
services (the shop's rules, settings and vectors), so what is measured is what customers see:

* **Similar products**: how often a neighbour on the "similar products" shelf shares the
  product's category (precision@k), for the configured ``SIMILAR_WEIGHTS`` and for image-only
  cosine, next to a random shelf, the trending shelf and a same-category trending shelf.
* **Categories**: how well the shop's category classifier (k-fold) does, next to linear probes on
  the image vectors alone and on image + text vectors, and the majority class.
* **Recommended for you**: hit rate and NDCG@k on held-out browsing: the visitors' real history
  when there is enough of it, otherwise *simulated* shoppers with category preferences whose
  events are written through the real history service inside a transaction that is rolled back.

:func:`evaluate` returns plain data (JSON-able); :func:`render_report` turns it into a
self-contained HTML page with matplotlib plots (an optional dependency: ``django-imgrec[eval]``).
"""

from __future__ import annotations

import random
import time
from typing import Any

from imgrec_app.hosts import (
    get_product_model,
    product_key,
)
from imgrec_app.services.evaluation_common import (
    GRID_COVIEW,
    GRID_TEXT,
    HELD_OUT_SHARE,
    IMAGE_ONLY,
    METHOD_LABELS,
    MIN_REAL_EVENTS,
    MIN_REAL_VISITORS,
    PREFERRED_SHARE,
    SHOPPER_MODELS,
    Baselines,
    Catalogue,
    EvaluationError,
    EvaluationOptions,
    Progress,
    _identity,
    load_catalogue,
    ndcg,
    precision_curve,
    rolled_back,
)
from imgrec_app.services.evaluation_foryou import (
    FORYOU_GRID,
    Shopper,
    evaluate_for_you,
    foryou_grid,
    foryou_weights,
    hold_out_real,
    real_history_owners,
    record_background,
    record_simulated,
    score_for_you,
    shopper_request,
    simulate_shoppers,
    simulated_sessions,
)
from imgrec_app.services.evaluation_report import (
    format_table,
    plots,
    render_report,
    summary_rows,
)
from imgrec_app.services.evaluation_similar import (
    SimilarRunner,
    confusions,
    coview_pairs,
    evaluate_classifier,
    evaluate_grid,
    evaluate_similar,
    precision_scores,
    similar_weights,
)
from imgrec_app.services.text import text_model

# --- the whole evaluation --------------------------------------------------------------------------


def evaluate(options: EvaluationOptions | None = None, *, progress: Progress | None = None) -> dict[str, Any]:
    """Evaluate the shelves and the category classifier on the shop's own catalogue.

    Args:
        options: what to evaluate (defaults finish in a couple of minutes on ~600 products).
        progress: wraps long loops, e.g. ``lambda it, desc, total: tqdm(it, desc=desc, total=total)``.

    Returns:
        Plain data (JSON-able): ``similar``, ``classifier``, ``for_you``, ``grid`` (with
        ``options.grid``) and ``timings`` in seconds.

    Raises:
        EvaluationError: when the shop has nothing indexed or no categories.
    """
    options = options or EvaluationOptions()
    wrap: Progress = progress or _identity
    rng = random.Random(options.seed)
    catalogue = load_catalogue()
    queries = list(catalogue.indexed)
    rng.shuffle(queries)
    if options.sample:
        queries = queries[: options.sample]
    model = get_product_model()
    instances = model._default_manager.in_bulk([model._meta.pk.to_python(q) for q in queries])
    by_key = {product_key(pk): p for pk, p in instances.items()}
    runner = SimilarRunner(catalogue, [by_key[q] for q in queries if q in by_key], options.k, wrap)
    timings: dict[str, float] = {}
    result: dict[str, Any] = {
        "options": {
            "k": options.k,
            "sample": options.sample,
            "seed": options.seed,
            "simulated_shoppers": options.simulated_shoppers,
            "events_per_shopper": options.events_per_shopper,
            "folds": options.folds,
            "grid": options.grid,
            "foryou_grid": options.foryou_grid,
            "tuning": options.tuning,
        },
        "image_model": catalogue.image_model[0],
        "text_model": (text_model() or (None,))[0],
        "categories": len(catalogue.category_names),
    }
    started = time.perf_counter()
    result["similar"] = evaluate_similar(catalogue, runner, random.Random(options.seed + 1))
    timings["similar"] = time.perf_counter() - started
    if options.grid:
        started = time.perf_counter()
        result["grid"] = evaluate_grid(catalogue, runner)
        timings["grid"] = time.perf_counter() - started
    started = time.perf_counter()
    result["classifier"] = evaluate_classifier(catalogue, folds=options.folds, progress=wrap)
    timings["classifier"] = time.perf_counter() - started
    if options.tuning:
        # Catalogue tuning (imgrec_tune), held-out by product: services/evaluation_tuning.py.
        from imgrec_app.services.evaluation_tuning import evaluate_tuning

        started = time.perf_counter()
        result["tuning"] = evaluate_tuning(folds=options.folds, k=options.k, seed=options.seed)
        timings["tuning"] = time.perf_counter() - started
    started = time.perf_counter()
    result["for_you"] = evaluate_for_you(catalogue, options, random.Random(options.seed + 2), wrap)
    timings["for_you"] = time.perf_counter() - started
    result["timings"] = timings
    return result


__all__ = [
    "Baselines",
    "Catalogue",
    "EvaluationError",
    "EvaluationOptions",
    "FORYOU_GRID",
    "GRID_COVIEW",
    "GRID_TEXT",
    "HELD_OUT_SHARE",
    "IMAGE_ONLY",
    "METHOD_LABELS",
    "MIN_REAL_EVENTS",
    "MIN_REAL_VISITORS",
    "PREFERRED_SHARE",
    "Progress",
    "SHOPPER_MODELS",
    "Shopper",
    "SimilarRunner",
    "_identity",
    "confusions",
    "coview_pairs",
    "evaluate",
    "evaluate_classifier",
    "evaluate_for_you",
    "evaluate_grid",
    "evaluate_similar",
    "format_table",
    "foryou_grid",
    "foryou_weights",
    "hold_out_real",
    "load_catalogue",
    "ndcg",
    "plots",
    "precision_curve",
    "precision_scores",
    "real_history_owners",
    "record_background",
    "record_simulated",
    "render_report",
    "rolled_back",
    "score_for_you",
    "shopper_request",
    "similar_weights",
    "simulate_shoppers",
    "simulated_sessions",
    "summary_rows",
]
