"""Product-photo-sized test files made from the demo catalogue (shared by the benchmarks).

The catalogue's 567 images are small public-domain PNG drawings (≤ 320 px).  Real shop photos are
800–2000 px JPEGs (sometimes PNGs) with a studio backdrop and sensor noise, and their size is what
decoding costs.  Each file here is one catalogue image, upscaled (Lanczos) so that its long side is
a random size in [min_px, max_px], composited on a soft vertical gradient backdrop with a 4:3 or
square frame, with Gaussian noise (σ = 2 levels) added so that JPEG/PNG compress like photos and
not like flat drawings.  JPEGs are written at quality 90 (4:2:0), PNGs as 8-bit RGB with zlib
level 6 (Pillow's defaults).  Files are cached under ``$IMGREC_VAR_DIR/bench-photos/``.
"""

from __future__ import annotations

import multiprocessing
import random
from pathlib import Path

import numpy as np
from PIL import Image

from bench._common import catalogue_images, cores, var_dir

EXTENSIONS = {"JPEG": "jpg", "PNG": "png"}


def _photo(src: Path, long_side: int, rng: random.Random, nrng: np.random.Generator) -> Image.Image:
    art = Image.open(src)
    art.load()
    art = art.convert("RGBA")
    square = rng.random() < 0.5
    width = long_side
    height = long_side if square else int(long_side * 3 / 4)
    if rng.random() < 0.3:  # portrait frame
        width, height = height, width
    top = np.array([rng.randint(225, 250)] * 3, dtype=np.float32)
    bottom = top - rng.randint(10, 35)
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    backdrop = np.broadcast_to(top * (1 - ramp) + bottom * ramp, (height, width, 3))
    canvas = Image.fromarray(backdrop.astype(np.uint8), "RGB")
    scale = 0.8 * min(width / art.width, height / art.height)
    art = art.resize((max(1, int(art.width * scale)), max(1, int(art.height * scale))), Image.Resampling.LANCZOS)
    canvas.paste(art, ((width - art.width) // 2, (height - art.height) // 2), art)
    pixels = np.asarray(canvas, dtype=np.int16)
    noise = nrng.normal(0.0, 2.0, size=pixels.shape).round().astype(np.int16)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8), "RGB")


def make_photos(fmt: str, count: int, *, min_px: int = 800, max_px: int = 2000, seed: int = 0) -> list[Path]:
    """``count`` distinct photo-like files of ``fmt`` ("JPEG" or "PNG"); cached between runs."""
    fmt = fmt.upper()
    ext = EXTENSIONS[fmt]
    folder = var_dir() / "bench-photos" / f"{ext}-{min_px}-{max_px}-s{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"photo-{i:05d}.{ext}" for i in range(count)]
    todo = [(fmt, i, str(p), min_px, max_px, seed) for i, p in enumerate(paths) if not p.exists()]
    if todo:
        print(f"making {len(todo)} {fmt} photo(s) in {folder} (cached for later runs)...", flush=True)
        with multiprocessing.get_context("spawn").Pool(cores()) as pool:
            pool.map(_make_one, todo, chunksize=1)
    return paths


def _make_one(job: tuple[str, int, str, int, int, int]) -> None:
    fmt, i, path, min_px, max_px, seed = job
    # Per-file seeds: the i-th file is the same whatever ``count`` is.
    rng = random.Random(f"{seed}-{fmt}-{i}")
    nrng = np.random.default_rng([seed, i, len(fmt)])
    sources = catalogue_images()
    img = _photo(sources[(i * 7 + seed) % len(sources)], rng.randint(min_px, max_px), rng, nrng)
    tmp = Path(path).with_suffix(".tmp")
    if fmt == "JPEG":
        img.save(tmp, "JPEG", quality=90)
    else:
        img.save(tmp, "PNG")
    tmp.replace(path)


def describe(paths: list[Path]) -> dict[str, float]:
    """Mean file size (kB) and mean pixel count (megapixels) of some files."""
    sizes, pixels = [], []
    for p in paths:
        sizes.append(p.stat().st_size / 1024)
        with Image.open(p) as img:
            pixels.append(img.width * img.height / 1e6)
    return {
        "files": len(paths),
        "mean_kb": round(float(np.mean(sizes)), 1),
        "mean_megapixels": round(float(np.mean(pixels)), 2),
    }
