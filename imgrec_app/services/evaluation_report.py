"""Presenting an evaluation result: the summary table and the self-contained HTML report with plots.

Part of :mod:`imgrec_app.services.evaluation` (which re-exports everything here).
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from django.template.loader import render_to_string

from imgrec_app.services.evaluation_common import GRID_COVIEW, METHOD_LABELS, EvaluationError
from imgrec_app.services.evaluation_foryou import FORYOU_GRID

# --- presenting it ---------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def summary_rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(section, method, value)`` rows of the headline numbers, for the console and the report."""
    rows: list[tuple[str, str, str]] = []
    sim = result["similar"]
    vectors = sim.get("vectors") or {}
    section = f"Similar products: precision@{sim['k']} by category"
    if vectors.get("tuned_head"):
        section += f" ({vectors['note']})"
    for name, scores in sim["methods"].items():
        rows.append((section, METHOD_LABELS[name], _pct(scores["precision"])))
    clf = result["classifier"]
    if clf.get("skipped"):
        rows.append(("Category classifier", "skipped", clf["skipped"]))
    for scores in clf["methods"].values():
        rows.append(
            (f"Category classifier: {clf.get('folds', '?')}-fold accuracy", scores["label"], _pct(scores["accuracy"]))
        )
    if result.get("tuning"):
        from imgrec_app.services.evaluation_tuning import summary_rows as tuning_rows

        rows += tuning_rows(result["tuning"])
    fy = result["for_you"]
    if fy.get("skipped"):
        rows.append(("Recommended for you", "skipped", fy["skipped"]))
    source = "SIMULATED shoppers" if fy.get("simulated") else "real visitors"
    for name, scores in fy.get("methods", {}).items():
        rows.append(
            (
                f"Recommended for you ({source}): hit rate@{fy['k']} / NDCG@{fy['k']}",
                METHOD_LABELS[name],
                f"{_pct(scores['hit_rate'])} / {scores['ndcg']:.3f}",
            )
        )
    for row in fy.get("grid", {}).get("rows", []):
        rows.append(
            (
                f"FORYOU_WEIGHTS grid ({source}): hit rate@{fy['k']} / NDCG@{fy['k']}",
                ", ".join(f"{key} {row[key]:g}" for key in FORYOU_GRID),
                f"{_pct(row['hit_rate'])} / {row['ndcg']:.3f}",
            )
        )
    best = fy.get("grid", {}).get("best")
    if best and "hit_rate_check" in best:
        rows.append(
            (
                f"FORYOU_WEIGHTS grid ({source}): best on one half of the shoppers, read on the other",
                ", ".join(f"{key} {best[key]:g}" for key in FORYOU_GRID),
                f"{_pct(best['hit_rate_check'])} (best baseline {_pct(fy['grid']['baseline_hit_rate_check'])})",
            )
        )
    if "grid" in result:
        grid = result["grid"]
        for row in grid["rows"]:
            rows.append(
                (
                    f"SIMILAR_WEIGHTS grid: precision@{grid['k']}",
                    f"image 1, text {row['text']:g}, coview {row['coview']:g}"
                    + (f" ({row['note']})" if row["note"] else ""),
                    _pct(row["precision"]),
                )
            )
    return rows


def format_table(rows: list[tuple[str, str, str]]) -> str:
    """The summary rows as an aligned text table, one block per section."""
    width = max((len(m) for _, m, _ in rows), default=10)
    lines: list[str] = []
    section = None
    for sec, method, value in rows:
        if sec != section:
            lines += ["", sec]
            section = sec
        lines.append(f"  {method:<{width}}  {value}")
    return "\n".join(lines).lstrip("\n")


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _bars(
    plt: Any, labels: list[str], series: dict[str, list[float]], title: str, ylabel: str, *, horizontal: bool = False
) -> str:
    """A grouped bar chart as base64 PNG."""
    n = len(series)
    positions = np.arange(len(labels))
    width = 0.8 / max(1, n)
    height = max(3.0, 0.28 * len(labels) * n) if horizontal else 3.6
    fig, ax = plt.subplots(figsize=(8, height))
    for j, (name, values) in enumerate(series.items()):
        offsets = positions + (j - (n - 1) / 2) * width
        if horizontal:
            ax.barh(offsets, values, height=width, label=name)
        else:
            ax.bar(offsets, values, width=width, label=name)
    if horizontal:
        ax.set_yticks(positions, labels)
        ax.invert_yaxis()
        ax.set_xlabel(ylabel)
    else:
        ax.set_xticks(positions, labels, rotation=20, ha="right")
        ax.set_ylabel(ylabel)
    ax.set_title(title)
    if n > 1:
        ax.legend(fontsize=8)
    ax.grid(axis="x" if horizontal else "y", alpha=0.3)
    return _png(fig)


def plots(result: dict[str, Any]) -> dict[str, str]:
    """The report's figures, as base64-encoded PNGs (matplotlib, Agg backend)."""
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise EvaluationError("The HTML report needs matplotlib: pip install 'django-imgrec[eval]'.") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, str] = {}
    sim = result["similar"]
    k = sim["k"]
    methods = sim["methods"]
    out["similar_bars"] = _bars(
        plt,
        [METHOD_LABELS[m] for m in methods],
        {f"precision@{k}": [s["precision"] for s in methods.values()]},
        f"Similar products: neighbours in the product's category (precision@{k})",
        "precision",
    )
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for name, scores in methods.items():
        ax.plot(range(1, k + 1), scores["curve"], marker="o", label=METHOD_LABELS[name])
    ax.set_xlabel("shelf position k")
    ax.set_ylabel("precision@k")
    ax.set_ylim(0, 1.05)
    ax.set_title("Precision as the shelf gets longer")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    out["similar_curve"] = _png(fig)
    cats = list(methods["configured"]["per_category"])
    out["similar_by_category"] = _bars(
        plt,
        cats,
        {
            METHOD_LABELS[m]: [methods[m]["per_category"].get(c, 0.0) for c in cats]
            for m in ("configured", "image_only")
        },
        f"precision@{k} by category",
        "precision",
        horizontal=True,
    )
    clf = result["classifier"]
    if clf["methods"]:
        out["classifier"] = _bars(
            plt,
            [s["label"] for s in clf["methods"].values()],
            {"accuracy": [s["accuracy"] for s in clf["methods"].values()]},
            f"Category classifier, {clf.get('folds', '?')}-fold accuracy",
            "accuracy",
        )
    fy = result["for_you"]
    if fy.get("methods"):
        names = list(fy["methods"])
        source = "simulated shoppers" if fy.get("simulated") else "real visitors"
        out["for_you"] = _bars(
            plt,
            [METHOD_LABELS[n] for n in names],
            {
                f"hit rate@{fy['k']}": [fy["methods"][n]["hit_rate"] for n in names],
                f"NDCG@{fy['k']}": [fy["methods"][n]["ndcg"] for n in names],
                f"category match@{fy['k']}": [fy["methods"][n]["category_match"] for n in names],
            },
            f"Recommended for you on held-out browsing ({source.upper() if fy.get('simulated') else source})",
            "score",
        )
    if "grid" in result:
        grid = result["grid"]
        fig, ax = plt.subplots(figsize=(8, 3.6))
        for coview in GRID_COVIEW:
            rows = [r for r in grid["rows"] if r["coview"] == coview]
            ax.plot([r["text"] for r in rows], [r["precision"] for r in rows], marker="o", label=f"coview {coview:g}")
        ax.set_xlabel("text weight (image weight 1)")
        ax.set_ylabel(f"precision@{grid['k']}")
        ax.set_title("SIMILAR_WEIGHTS grid")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        out["grid"] = _png(fig)
    return out


def render_report(result: dict[str, Any]) -> str:
    """The evaluation as one self-contained HTML page (plots embedded as base64 PNG)."""
    from django.utils import timezone

    sim = result["similar"]
    context = {
        "result": result,
        "plots": plots(result),
        "summary": summary_rows(result),
        "generated_at": timezone.now(),
        "similar_rows": [
            {
                "label": METHOD_LABELS[name],
                "precision": _pct(s["precision"]),
                "macro": _pct(s["macro_precision"]),
                "fallback": _pct(s.get("fallback_share")),
            }
            for name, s in sim["methods"].items()
        ],
        "category_rows": [
            {
                "category": c,
                "configured": _pct(v),
                "image_only": _pct(sim["methods"]["image_only"]["per_category"].get(c)),
            }
            for c, v in sorted(sim["methods"]["configured"]["per_category"].items(), key=lambda kv: kv[1])
        ],
        "similar_confusions": [
            {**c, "share": _pct(c["share"])} for c in sim["methods"]["configured"].get("confusions", [])
        ],
        "classifier_rows": [
            {"label": s["label"], "accuracy": _pct(s["accuracy"])} for s in result["classifier"]["methods"].values()
        ],
        "classifier_categories": [
            {"category": c, "accuracy": _pct(v)}
            for c, v in sorted(result["classifier"].get("per_category", {}).items(), key=lambda kv: kv[1])
        ],
        "for_you_rows": [
            {
                "label": METHOD_LABELS[name],
                "hit_rate": _pct(s["hit_rate"]),
                "ndcg": f"{s['ndcg']:.3f}",
                "category_match": _pct(s["category_match"]),
            }
            for name, s in result["for_you"].get("methods", {}).items()
        ],
        "grid_rows": [
            {
                **r,
                "precision": _pct(r["precision"]),
                "macro_precision": _pct(r["macro_precision"]),
                "best": r == result["grid"]["best"],
            }
            for r in result.get("grid", {}).get("rows", [])
        ],
    }
    return render_to_string("imgrec_app/evaluation_report.html", context)
