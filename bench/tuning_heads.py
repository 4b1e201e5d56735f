"""Compare projection-head configurations held-out (k-fold by product) on an indexed catalogue.

    REDIS_URL=... IMGREC_VAR_DIR=var/demo python bench/tuning_heads.py [--cache var/demo/tuning.npz]
        [--config '{"hidden": 0}' ...]

The catalogue's vectors (base image, text, categories, recommendable flags) are read once from
the database and cached in ``--cache`` (never committed); each ``--config`` (JSON options of
``HeadConfig``) is then measured with ``evaluation_tuning.held_out``: image-only precision@10 and
classifier accuracy, untuned vs tuned, and the seconds it took.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def load(cache: Path) -> tuple[SimpleNamespace, list[str]]:
    from imgrec_app.ml.head import TrainingData

    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        text = z["text"] if z["text"].size else None
        data = TrainingData(z["vectors"], z["labels"], text, None)
        return SimpleNamespace(ids=z["ids"].tolist(), data=data), z["candidates"].tolist()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop_demo.settings")
    import django

    django.setup()
    from imgrec_app.hosts import product_key, recommendable_products
    from imgrec_app.services import tuning
    from imgrec_app.services.models import configured_model

    catalogue = tuning.gather(configured_model().model_id)
    candidates = [product_key(pk) for pk in recommendable_products().values_list("pk", flat=True)]
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        cache,
        ids=np.array(catalogue.ids),
        vectors=catalogue.data.vectors,
        labels=catalogue.data.labels,
        text=catalogue.data.text if catalogue.data.text is not None else np.zeros((0,)),
        candidates=np.array(candidates),
    )
    return SimpleNamespace(ids=catalogue.ids, data=catalogue.data), candidates


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache", type=Path, default=Path("var/demo/tuning.npz"))
    parser.add_argument("--config", action="append", default=[], help="JSON HeadConfig options (repeatable)")
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    from imgrec_app.ml.head import HeadConfig
    from imgrec_app.services.evaluation_tuning import held_out

    catalogue, candidates = load(args.cache)
    print(f"{len(catalogue.ids)} products, {len(set(catalogue.data.labels.tolist()) - {-1})} categories", flush=True)
    for raw in args.config or ["{}"]:
        options = json.loads(raw)
        started = time.perf_counter()
        r = held_out(catalogue, HeadConfig.from_dict(options), folds=args.folds, candidates=candidates)
        print(
            f"{raw:60s} P@10 untuned {r['untuned']['precision']:.3f} tuned {r['tuned']['precision']:.3f} | "
            f"clf untuned {r['untuned']['classifier']:.3f} tuned {r['tuned']['classifier']:.3f} | "
            f"{time.perf_counter() - started:.0f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
