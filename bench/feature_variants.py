"""Image-feature variants side by side: quality on two catalogues and CPU cost (issue 11 §2).

For each variant (backbone × preprocessing recipe × pooling, each its own model id) and each
catalogue (the demo's, and the held-out one from ``scripts/build-heldout-catalogue``):

- **p@10**: image-only precision@10 by category, cosine k-NN over the catalogue, leave-one-out
  (the share of a product's 10 nearest other products that have its category);
- **probe**: a linear probe's 5-fold accuracy (``LogisticRegression(C=2)``, stratified, seed 0:
  the same probe ``imgrec_evaluate`` reports);
- **img/s**: preprocessing + forward pass on this CPU for the same ``--speed`` images, variants timed
  in interleaved rounds (best round kept), with the ratio to the first variant.

Images go through the production path (``load_rgb`` → ``Encoder.preprocess`` → ``encode_arrays``).
No Django.  Vectors are cached per catalogue and model id in ``var/feature-variants/`` (delete it to
recompute); ``--speed 0`` skips timing.

    .venv/bin/python bench/feature_variants.py --heldout /path/to/heldout-catalogue
    .venv/bin/python bench/feature_variants.py --heldout DIR --variants lite0-p1,lite0-prod-gem --speed 64
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import ROOT, parser, print_table, save_result  # noqa: E402

DEMO = ROOT / "shop_demo" / "catalog" / "data"
CACHE = ROOT / "var" / "feature-variants"
FORMATS = ("JPEG", "PNG", "WEBP", "GIF")
MAX_PIXELS = 40_000_000

# name -> (backbone, BACKBONE_OPTIONS)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "lite0-p1": ("efficientnet_lite0", {}),
    "lite0-pad": ("efficientnet_lite0", {"preprocess": "pad"}),
    "lite0-prod": ("efficientnet_lite0", {"preprocess": "product"}),
    "lite0-prod-gem": ("efficientnet_lite0", {"preprocess": "product", "pooling": "gem"}),
    "lite0-prod-flip": ("efficientnet_lite0", {"preprocess": "product", "pooling": "avg+flip"}),
    "lite0-prod-gem-flip": ("efficientnet_lite0", {"preprocess": "product", "pooling": "gem+flip"}),
    "lite0-prod-gem-multi": ("efficientnet_lite0", {"preprocess": "product", "pooling": "gem+multi"}),
    "lite1-p1": ("efficientnet_lite1", {"preprocess": "crop", "pooling": "avg"}),
    "lite1-prod-gem": ("efficientnet_lite1", {"preprocess": "product", "pooling": "gem"}),
    "lite1-prod-gem-multi": ("efficientnet_lite1", {"preprocess": "product", "pooling": "gem+multi"}),
    "lite2-p1": ("efficientnet_lite2", {"preprocess": "crop", "pooling": "avg"}),
    "lite2-prod-gem": ("efficientnet_lite2", {"preprocess": "product", "pooling": "gem"}),
    "lite2-prod-gem-multi": ("efficientnet_lite2", {"preprocess": "product", "pooling": "gem+multi"}),
}


def load_catalogue(folder: Path) -> tuple[list[Path], list[str]]:
    entries = json.loads((folder / "catalogue.json").read_text())
    return [folder / e["image"] for e in entries], [e["category"] for e in entries]


def make_encoder(name: str) -> Any:
    from imgrec_app.ml.encoder import Encoder
    from imgrec_app.ml.registry import get_backbone

    backbone, options = VARIANTS[name]
    return Encoder(get_backbone(backbone), options=options, device="cpu", top_labels=0)


def decode(paths: list[Path], size: int) -> list[Any]:
    from imgrec_app.ml.preprocess import load_rgb

    return [load_rgb(p.read_bytes(), allowed_formats=FORMATS, max_pixels=MAX_PIXELS, min_size=size) for p in paths]


def embed(encoder: Any, images: list[Any], batch: int = 32) -> np.ndarray:
    out = []
    for start in range(0, len(images), batch):
        arrays = np.stack([encoder.preprocess(img) for img in images[start : start + batch]])
        result = encoder.encode_arrays(arrays)
        if result.errors:
            raise RuntimeError(result.errors)
        out.append(result.vectors)
    return np.concatenate(out)


def vectors_for(name: str, catalogue: str, paths: list[Path], decoded: dict) -> tuple[np.ndarray, str]:
    from imgrec_app.ml.backbones import weights_version_for
    from imgrec_app.ml.registry import get_backbone

    backbone, options = VARIANTS[name]
    spec = get_backbone(backbone).with_options(options)
    model_id = spec.model_id(weights_version_for(spec, options))
    cache = CACHE / catalogue / f"{model_id.replace(':', '_')}-{len(paths)}.npy"
    if cache.exists():
        return np.load(cache), model_id
    key = (catalogue, spec.resize_size)
    if key not in decoded:
        decoded[key] = decode(paths, spec.resize_size)
    started = time.perf_counter()
    encoder = make_encoder(name)
    if spec.flip or spec.multi or not hasattr(encoder.model, "net"):
        vectors = embed(encoder, decoded[key])
    else:
        # avg and GeM from one forward pass (CPU time is scarce); both cached under their own id.
        both = embed_both_poolings(encoder, decoded[key])
        for pooling, vecs in both.items():
            other = spec.with_options({"pooling": pooling})
            path = (
                CACHE
                / catalogue
                / f"{other.model_id(weights_version_for(other, options)).replace(':', '_')}-{len(paths)}.npy"
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, vecs)
        vectors = both[spec.pooling]
    print(f"  {name} on {catalogue}: {len(paths)} images in {time.perf_counter() - started:.0f} s", flush=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, vectors)
    return vectors, model_id


def embed_both_poolings(encoder: Any, images: list[Any], batch: int = 32) -> dict[str, np.ndarray]:
    """Average- and GeM-pooled unit vectors from one pass of an EfficientNet-Lite encoder.

    Checked against the production path (``Encoder.encode_arrays`` of the avg and the GeM
    variant) on the first batch: they must agree to 1e-4, or this raises.
    """
    import torch

    from imgrec_app.ml.backbones import GEM_P
    from imgrec_app.ml.encoder import Encoder

    out: dict[str, list[np.ndarray]] = {"avg": [], "gem": []}
    for start in range(0, len(images), batch):
        arrays = np.stack([encoder.preprocess(img) for img in images[start : start + batch]])
        with torch.inference_mode():
            x = torch.from_numpy(arrays).permute(0, 3, 1, 2).float()
            x = ((x - encoder._mean) / encoder._std).contiguous(memory_format=torch.channels_last)
            fmap = encoder.model.net.extract_features(x)
            pooled = {
                "avg": fmap.mean(dim=(2, 3)),
                "gem": fmap.clamp_min(1e-6).pow(GEM_P).mean(dim=(2, 3)).pow(1.0 / GEM_P),
            }
        for pooling, f in pooled.items():
            out[pooling].append(torch.nn.functional.normalize(f, dim=1).numpy())
        if start == 0:
            for pooling in out:
                spec = encoder.spec.with_options({"pooling": pooling})
                check = Encoder(spec, options={"pooling": pooling}, device="cpu", top_labels=0)
                ref = check.encode_arrays(arrays[:4]).vectors
                np.testing.assert_allclose(out[pooling][0][:4], ref, atol=1e-4)
    return {k: np.concatenate(v) for k, v in out.items()}


def precision_at_k(vectors: np.ndarray, labels: list[str], k: int = 10) -> float:
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argpartition(-sims, k, axis=1)[:, :k]
    y = np.asarray(labels)
    return float((y[top] == y[:, None]).mean())


def probe_accuracy(vectors: np.ndarray, labels: list[str], folds: int = 5) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    pred = cross_val_predict(LogisticRegression(C=2.0, max_iter=2000), vectors, labels, cv=cv)
    return float((pred == np.asarray(labels)).mean())


def speed(names: list[str], images: list[Any], rounds: int) -> dict[str, float]:
    """img/s of preprocess + forward for each variant on the same images (best of interleaved rounds)."""
    encoders = {n: make_encoder(n) for n in names}
    for n in names:  # warm-up (first call allocates)
        embed(encoders[n], images[:8])
    best: dict[str, float] = {}
    for _ in range(rounds):
        for n in names:
            started = time.perf_counter()
            embed(encoders[n], images)
            rate = len(images) / (time.perf_counter() - started)
            best[n] = max(best.get(n, 0.0), rate)
    return best


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--heldout", type=Path, default=ROOT.parent / "heldout-catalogue", help="held-out catalogue folder")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated variant names")
    p.add_argument("--speed", type=int, default=64, help="images timed per variant (0: no timing)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--speed-only", action="store_true", help="only time the variants (no quality)")
    args = p.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    catalogues = {"demo": load_catalogue(DEMO)}
    if (args.heldout / "catalogue.json").exists():
        catalogues["heldout"] = load_catalogue(args.heldout)
    else:
        print(f"no held-out catalogue in {args.heldout} (scripts/build-heldout-catalogue --out DIR)")
    decoded: dict = {}
    rows = []
    for name in names:
        row: dict[str, Any] = {"variant": name}
        for cat, (paths, labels) in catalogues.items() if not args.speed_only else ():
            vectors, model_id = vectors_for(name, cat, paths, decoded)
            row["model_id"] = model_id
            row[f"p@10 {cat}"] = round(precision_at_k(vectors, labels), 3)
            row[f"probe {cat}"] = round(probe_accuracy(vectors, labels), 3)
        rows.append(row)
    if args.speed:
        paths = catalogues["demo"][0]
        step = max(1, len(paths) // args.speed)
        sample = decode(paths[::step][: args.speed], 256)
        rates = speed(names, sample, args.rounds)
        for row in rows:
            row["img/s"] = round(rates[row["variant"]], 1)
            row["× p1 speed"] = round(rates[row["variant"]] / rates[names[0]], 2)
    print_table(rows, title="Feature variants (image only; p@10 leave-one-out cosine k-NN; probe 5-fold)")
    save_result("feature_variants", args, {"rows": rows, "torch_threads": torch.get_num_threads()})


if __name__ == "__main__":
    main()
