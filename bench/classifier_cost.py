"""What the category classifier's choice of C costs: one ``ChosenCLogistic`` fit against a plain
``LogisticRegression(C=2)`` fit (the learner before 2026-12-04) on the same rows, in one run.

Synthetic unit-length vectors shaped like image embeddings (a large shared component, classes apart
in a few dimensions), since the question is time, not accuracy.  Prints seconds and ratios for the
capped choice (``MAX_CHOICE_ROWS``) and, with ``--uncapped``, for a choice over every row.

    .venv/bin/python bench/classifier_cost.py --rows 2000 20000 --dim 512 --uncapped
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sklearn.linear_model import LogisticRegression  # noqa: E402

from imgrec_app.ml.linear import MAX_CHOICE_ROWS, ChosenCLogistic  # noqa: E402


def vectors(rows: int, dim: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.zeros((classes, dim))
    centres[:, :16] = 2.0 * rng.normal(size=(classes, 16))
    y = rng.integers(0, classes, rows)
    X = 4.0 * np.abs(rng.normal(size=dim)) + centres[y] + rng.normal(size=(rows, dim))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32), y


def timed(estimator: object, X: np.ndarray, y: np.ndarray) -> tuple[float, object]:
    start = time.perf_counter()
    fitted = estimator.fit(X, y)  # type: ignore[attr-defined]
    return time.perf_counter() - start, fitted


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, nargs="+", default=[2000, 20000])
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--uncapped", action="store_true", help="also time the choice over every row")
    a = p.parse_args()
    print(f"| rows | C=2 fit s | chosen (cap {MAX_CHOICE_ROWS}) s | × C=2 | C | uncapped s | × C=2 |")
    print("|---|---|---|---|---|---|---|")
    for rows in a.rows:
        X, y = vectors(rows, a.dim, a.classes)
        plain, _ = timed(LogisticRegression(C=2.0, max_iter=2000), X, y)
        capped, model = timed(ChosenCLogistic(), X, y)
        line = f"| {rows} | {plain:.1f} | {capped:.1f} | {capped / plain:.1f} | {model.C_:g} |"  # type: ignore[attr-defined]
        if a.uncapped:
            full, _ = timed(ChosenCLogistic(max_choice_rows=rows), X, y)
            line += f" {full:.1f} | {full / plain:.1f} |"
        else:
            line += " – | – |"
        print(line, flush=True)


if __name__ == "__main__":
    main()
