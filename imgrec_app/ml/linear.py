"""The category classifier's learner: a multinomial logistic regression whose regularisation is
chosen by an inner cross-validation on the training products only.

A fixed ``C = 2`` under-fitted the unit-length image vectors: on the demo catalogue an image-only
probe read 58.8 % at C = 2 and 64.6 % with C chosen this way (docs/EVALUATION.md, "The
classifier's regularisation").  The choice is part of ``fit``, so an outer cross-validation refits
it on each training fold and every reported accuracy stays held-out.

Needs scikit-learn: import this module where the classifier is trained or evaluated, not at the
top of modules the torch-free web process loads.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold

# Inverse regularisation strengths tried (log-spaced from the old fixed 2.0) and the inner folds.
CANDIDATE_CS: tuple[float, ...] = (2.0, 8.0, 32.0, 128.0)
INNER_FOLDS = 3
# Used when the training rows are too few to choose (a category with a single product).
FALLBACK_C = 8.0
MAX_ITER = 2000
# The choice reads at most this many training rows (a per-category proportional sample, seeded),
# so a large catalogue pays 12 small fits for it, not 12 full ones; the final fit uses every row.
MAX_CHOICE_ROWS = 5000


class ChosenCLogistic(ClassifierMixin, BaseEstimator):
    """``LogisticRegression`` with C chosen among ``Cs`` by stratified inner k-fold accuracy.

    A scikit-learn classifier (``fit``, ``predict``, ``predict_proba``, ``classes_``, ``coef_``,
    ``intercept_``; the chosen strength in ``C_``, the rows its choice read in ``choice_rows_``).
    ``C`` fixes the strength (no inner search).
    """

    def __init__(
        self,
        Cs: tuple[float, ...] = CANDIDATE_CS,
        C: float | None = None,
        inner_folds: int = INNER_FOLDS,
        max_iter: int = MAX_ITER,
        max_choice_rows: int = MAX_CHOICE_ROWS,
    ) -> None:
        self.Cs = Cs
        self.C = C
        self.inner_folds = inner_folds
        self.max_iter = max_iter
        self.max_choice_rows = max_choice_rows

    def _choice_sample(self, y: np.ndarray) -> np.ndarray:
        """Row indices the choice reads: all, or a seeded sample keeping each category's share
        (at least one row of each)."""
        if len(y) <= self.max_choice_rows:
            return np.arange(len(y))
        rng = np.random.default_rng(0)
        share = self.max_choice_rows / len(y)
        picked = [
            rng.choice(rows, size=max(1, int(round(len(rows) * share))), replace=False)
            for rows in (np.flatnonzero(y == c) for c in np.unique(y))
        ]
        return np.sort(np.concatenate(picked))

    def _choose(self, X: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        """``(C, rows the choice read)``: the given C (no rows read), or the inner search's best."""
        if self.C is not None:
            return float(self.C), 0
        rows = self._choice_sample(y)
        X, y = X[rows], y[rows]
        folds = min(self.inner_folds, int(np.unique(y, return_counts=True)[1].min()))
        if len(self.Cs) == 1:
            return float(self.Cs[0]), len(rows)
        if folds < 2:
            return FALLBACK_C, len(rows)
        search = GridSearchCV(
            LogisticRegression(max_iter=self.max_iter),
            {"C": list(self.Cs)},
            cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=0),
            scoring="accuracy",
            refit=False,
        )
        search.fit(X, y)
        return float(search.best_params_["C"]), len(rows)

    def fit(self, X: np.ndarray, y: Any) -> ChosenCLogistic:
        y = np.asarray(y)
        self.C_, self.choice_rows_ = self._choose(X, y)
        self.model_ = LogisticRegression(C=self.C_, max_iter=self.max_iter).fit(X, y)
        self.classes_ = self.model_.classes_
        self.coef_ = self.model_.coef_
        self.intercept_ = self.model_.intercept_
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model_.predict(X)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.model_.predict_proba(X)
