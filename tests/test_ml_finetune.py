"""Partial fine-tuning (ml/finetune.py) on real demo photos with the real offline Lite0 weights.

No Django: the frozen network runs once over a small real catalogue (6 categories), the last
block + head conv + projection are trained on half of the products, and the other half — products
the training never saw — is scored.
"""

from __future__ import annotations

import numpy as np
import pytest

from imgrec_app.ml.finetune import FinetuneConfig, TunedTail, frozen_activations, train_tail
from imgrec_app.ml.head import TrainingDataError
from tests.conftest import CATALOGUE_DIR

CATEGORIES = ["fruit", "musical-instruments", "vehicles", "bird-prints"]
PER_CATEGORY = 10
TAP = 15
QUICK = {"tap": TAP, "epochs": 10, "text_weight": 0.0, "threads": 1}


@pytest.fixture(scope="module")
def catalogue():
    """One frozen pass over 40 real demo photos (product framing); halves by product."""
    import torch

    from imgrec_app.ml.encoder import Encoder
    from imgrec_app.ml.preprocess import load_rgb
    from imgrec_app.ml.registry import get_backbone

    torch.set_num_threads(1)
    encoder = Encoder(get_backbone("efficientnet_lite0"), options={"preprocess": "product"}, device="cpu", top_labels=0)
    paths, labels = [], []
    for c, cat in enumerate(CATEGORIES):
        found = sorted((CATALOGUE_DIR / "images" / cat).glob("*.png"))[:PER_CATEGORY]
        paths += found
        labels += [c] * len(found)
    arrays = np.stack(
        [
            encoder.preprocess(load_rgb(p.read_bytes(), allowed_formats=("PNG",), max_pixels=10**8, min_size=256))
            for p in paths
        ]
    )
    acts = frozen_activations(encoder, arrays, TAP)
    # The frozen network's own GeM vectors (checked against it below), from the same pass.
    x = torch.from_numpy(acts.astype(np.float32))
    net = encoder.model.net
    with torch.inference_mode():
        for block in list(net._blocks)[TAP:]:
            x = block(x)
        fmap = net._swish(net._bn1(net._conv_head(x)))
        base = fmap.clamp_min(1e-6).pow(3.0).mean(dim=(2, 3)).pow(1 / 3.0).numpy()
    labels_arr = np.asarray(labels)
    order = np.random.default_rng(0).permutation(len(paths))
    train = np.sort(
        np.concatenate([order[labels_arr[order] == c][: PER_CATEGORY // 2] for c in range(len(CATEGORIES))])
    )
    test = np.setdiff1d(np.arange(len(paths)), train)
    return {
        "encoder": encoder,
        "arrays": arrays,
        "acts": acts,
        "base": base,
        "labels": labels_arr,
        "train": train,
        "test": test,
    }


def _held_out_precision(vectors, labels, test, k=4):
    """precision@k of held-out products among the held-out products only (nothing there was trained on)."""
    V = vectors[test] / np.linalg.norm(vectors[test], axis=1, keepdims=True)
    sims = V @ V.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argsort(-sims, axis=1)[:, :k]
    return float((labels[test][top] == labels[test][:, None]).mean())


def test_fine_tuned_tail_improves_held_out_precision(catalogue):
    c = catalogue
    tail = train_tail(
        c["encoder"].model.net, c["acts"][c["train"]], c["labels"][c["train"]], None, FinetuneConfig.from_dict(QUICK)
    )
    tuned = tail.apply(c["acts"])
    assert tuned.shape == (len(c["labels"]), 256)
    np.testing.assert_allclose(np.linalg.norm(tuned, axis=1), 1.0, atol=1e-4)
    before = _held_out_precision(c["base"], c["labels"], c["test"])
    after = _held_out_precision(tuned, c["labels"], c["test"])
    assert after >= before + 0.05, (before, after)
    # The trained cosine classifier predicts held-out categories better than chance by far.
    accuracy = float(np.mean(tail.predict(tuned[c["test"]]) == c["labels"][c["test"]]))
    assert accuracy >= 0.5, accuracy


def test_tail_round_trips_and_untrained_tail_is_the_base_network(catalogue):
    c = catalogue
    tail = train_tail(
        c["encoder"].model.net,
        c["acts"][c["train"]],
        c["labels"][c["train"]],
        None,
        FinetuneConfig.from_dict({**QUICK, "epochs": 1}),
    )
    again = TunedTail.from_bytes(tail.to_bytes(), c["encoder"].model.net)
    np.testing.assert_allclose(again.apply(c["acts"][:8]), tail.apply(c["acts"][:8]), atol=1e-5)
    # The copied tail starts as the pretrained network: before any step, its pooled features
    # are the production encoder's GeM vectors (prod1-gem), so training starts from ImageNet.
    import torch

    from imgrec_app.ml.encoder import Encoder
    from imgrec_app.ml.registry import get_backbone

    untrained = train_tail(
        c["encoder"].model.net,
        c["acts"][:12],
        np.arange(12) % 2,
        None,
        FinetuneConfig.from_dict({**QUICK, "epochs": 0}),
    )
    with torch.inference_mode():
        pooled = untrained.module.pooled(torch.from_numpy(c["acts"][:4].astype(np.float32))).numpy()
    gem = Encoder(
        get_backbone("efficientnet_lite0"),
        options={"preprocess": "product", "pooling": "gem"},
        device="cpu",
        top_labels=0,
    )
    ref = gem.encode_arrays(c["arrays"][:4]).vectors
    np.testing.assert_allclose(pooled / np.linalg.norm(pooled, axis=1, keepdims=True), ref, atol=1e-4)
    np.testing.assert_allclose(c["base"][:4] / np.linalg.norm(c["base"][:4], axis=1, keepdims=True), ref, atol=1e-4)


def test_tail_refuses_what_cannot_teach(catalogue):
    c = catalogue
    with pytest.raises(TrainingDataError, match="one category"):
        train_tail(
            c["encoder"].model.net, c["acts"][:10], np.zeros(10, dtype=np.int64), None, FinetuneConfig.from_dict(QUICK)
        )
    with pytest.raises(ValueError, match="Unknown fine-tuning option"):
        FinetuneConfig.from_dict({"epochz": 3})
