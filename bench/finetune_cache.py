"""Cache what partial fine-tuning needs: intermediate EfficientNet-Lite activations, base vectors, texts.

One frozen forward pass per image (the production ``load_rgb`` → ``Encoder.preprocess`` path, by the
variant's recipe), keeping, per catalogue (the demo's and the held-out one):

- ``act<i>``: the input of block ``i`` (float16), for the ``--taps`` given (Lite0: 12 = the
  7×7×192 input of the last stage's 2nd block, 15 = the input of the last block);
- ``avg`` / ``gem``: the base vectors of the variant with average / GeM pooling (unit length);
- ``text``: all-MiniLM-L6-v2 vectors of ``name + "\\n" + description`` (the shop's TEXT_FIELDS);
- ``labels``, ``slugs``.

Nothing here is learned, so the cache is fold-safe: the folds are drawn later, by product, and a
fold's training only reads its training rows.  No Django.  Written to
``var/finetune/<catalogue>-<variant>.npz`` (never committed).

    nice -n 10 .venv/bin/python bench/finetune_cache.py --heldout /work/wt/heldout-catalogue \
        --variants lite0-prod,lite0-p1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "shop_demo" / "catalog" / "data"
CACHE = ROOT / "var" / "finetune"
FORMATS = ("JPEG", "PNG", "WEBP", "GIF")

VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "lite0-prod": ("efficientnet_lite0", {"preprocess": "product"}),
    "lite0-p1": ("efficientnet_lite0", {}),
    "lite0-pad": ("efficientnet_lite0", {"preprocess": "pad"}),
    "lite1-prod": ("efficientnet_lite1", {"preprocess": "product"}),
    "lite2-prod": ("efficientnet_lite2", {"preprocess": "product"}),
}


def cache_path(catalogue: str, variant: str) -> Path:
    return CACHE / f"{catalogue}-{variant}.npz"


def load_catalogue(folder: Path) -> list[dict[str, Any]]:
    return json.loads((folder / "catalogue.json").read_text())


def build(variant: str, catalogue: str, folder: Path, taps: list[int], batch: int = 16) -> Path:
    import torch

    from imgrec_app.ml.backbones import GEM_P
    from imgrec_app.ml.encoder import Encoder
    from imgrec_app.ml.preprocess import load_rgb
    from imgrec_app.ml.registry import get_backbone

    out_path = cache_path(catalogue, variant)
    if out_path.exists():
        print(f"{out_path} exists", flush=True)
        return out_path
    entries = load_catalogue(folder)
    backbone, options = VARIANTS[variant]
    encoder = Encoder(get_backbone(backbone), options=options, device="cpu", top_labels=0)
    net = encoder.model.net
    taps = [t for t in taps if t < len(net._blocks)] if taps else []
    acts: dict[int, list[np.ndarray]] = {t: [] for t in taps}
    pooled: dict[str, list[np.ndarray]] = {"avg": [], "gem": []}
    started = time.perf_counter()
    for start in range(0, len(entries), batch):
        chunk = entries[start : start + batch]
        images = [
            load_rgb(
                (folder / e["image"]).read_bytes(),
                allowed_formats=FORMATS,
                max_pixels=40_000_000,
                min_size=encoder.decode_size,
            )
            for e in chunk
        ]
        arrays = np.stack([encoder.preprocess(img) for img in images])
        with torch.inference_mode():
            x = torch.from_numpy(arrays).permute(0, 3, 1, 2).float()
            x = ((x - encoder._mean) / encoder._std).contiguous(memory_format=torch.channels_last)
            x = net._swish(net._bn0(net._conv_stem(x)))
            for idx, block in enumerate(net._blocks):
                if idx in acts:
                    acts[idx].append(x.float().numpy().astype(np.float16))
                x = block(x)
            fmap = net._swish(net._bn1(net._conv_head(x)))
            avg = fmap.mean(dim=(2, 3))
            gem = fmap.clamp_min(1e-6).pow(GEM_P).mean(dim=(2, 3)).pow(1.0 / GEM_P)
        pooled["avg"].append(torch.nn.functional.normalize(avg, dim=1).numpy())
        pooled["gem"].append(torch.nn.functional.normalize(gem, dim=1).numpy())
        if start == 0:  # the same vectors as the production encoder (avg pooling)
            ref = encoder.encode_arrays(arrays[:4]).vectors
            np.testing.assert_allclose(pooled["avg"][0][:4], ref, atol=1e-4)
        done = start + len(chunk)
        if done % (batch * 8) == 0 or done == len(entries):
            rate = done / (time.perf_counter() - started)
            print(f"  {variant} {catalogue}: {done}/{len(entries)} ({rate:.1f} img/s)", flush=True)
    from imgrec_app.ml.text import get_text_encoder

    texts = [f"{e['name']}\n{e.get('description', '')}".strip() for e in entries]
    text = get_text_encoder(device="cpu").encode(texts)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    categories = sorted({e["category"] for e in entries})
    np.savez(
        out_path,
        slugs=np.array([e["slug"] for e in entries]),
        labels=np.array([categories.index(e["category"]) for e in entries], dtype=np.int64),
        categories=np.array(categories),
        avg=np.concatenate(pooled["avg"]),
        gem=np.concatenate(pooled["gem"]),
        text=text,
        model_id=np.array(encoder.model_id),
        seconds=np.array(time.perf_counter() - started),
        **{f"act{t}": np.concatenate(v) for t, v in acts.items()},
    )
    print(f"wrote {out_path} in {time.perf_counter() - started:.0f} s", flush=True)
    return out_path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--heldout", type=Path, default=ROOT.parent / "heldout-catalogue")
    p.add_argument("--variants", default="lite0-prod")
    p.add_argument("--taps", default="12,15", help="blocks whose input is cached ('' for none)")
    p.add_argument("--catalogues", default="demo,heldout")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    folders = {"demo": DEMO, "heldout": args.heldout}
    taps = [int(t) for t in args.taps.split(",") if t.strip()]
    for variant in args.variants.split(","):
        for cat in args.catalogues.split(","):
            build(variant.strip(), cat, folders[cat], taps)


if __name__ == "__main__":
    main()
