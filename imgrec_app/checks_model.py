"""Checks of the model settings: the backbone and its options (E003, E004), precision and decoder
(E053, E054, W053).  Called from :func:`imgrec_app.checks.check_settings`."""

from __future__ import annotations

from django.core.checks import CheckMessage, Error, Warning

from imgrec_app.conf import SETTING_NAME, imgrec_settings


def check_backbone() -> list[CheckMessage]:
    from imgrec_app.ml.registry import get_backbone, list_backbones

    name = imgrec_settings.BACKBONE
    try:
        get_backbone(name)
    except (KeyError, TypeError):  # TypeError: an unhashable value
        return [
            Error(
                f"{SETTING_NAME}['BACKBONE'] = {name!r} is not a registered backbone.",
                hint=f"Registered: {', '.join(list_backbones())}.",
                id="imgrec_app.E003",
            )
        ]
    options = imgrec_settings.BACKBONE_OPTIONS
    if not isinstance(options, dict):
        return [
            Error(
                f"{SETTING_NAME}['BACKBONE_OPTIONS'] must be a dict.",
                hint="e.g. {'weights_path': '/models/r50.pth', 'weights_version': 'v2'}.",
                id="imgrec_app.E003",
            )
        ]
    try:
        get_backbone(name).with_options(options)
    except ValueError as exc:
        return [
            Error(
                f"{SETTING_NAME}['BACKBONE_OPTIONS'] is invalid: {exc}",
                hint="'preprocess' is one of 'crop', 'pad', 'product'; "
                "'pooling' e.g. 'avg', 'gem', 'gem+flip', 'gem+multi'.",
                id="imgrec_app.E003",
            )
        ]
    path = options.get("weights_path")
    if path:
        import os

        if not os.path.isfile(path):
            return [
                Error(
                    f"The weights file {path!r} named in {SETTING_NAME}['BACKBONE_OPTIONS'] does not exist.",
                    hint="imgrec never downloads weights: copy the file there or fix the path.",
                    id="imgrec_app.E004",
                )
            ]
    return []


def check_precision_decoder() -> list[CheckMessage]:
    from imgrec_app.ml.hardware import native_bf16_cpu
    from imgrec_app.ml.registry import DECODERS, PRECISIONS

    precision, decoder = imgrec_settings.PRECISION, imgrec_settings.DECODER
    if precision not in PRECISIONS:
        return [
            Error(
                f"{SETTING_NAME}['PRECISION'] must be one of {', '.join(map(repr, PRECISIONS))}, not {precision!r}.",
                hint="'bf16' is its own model id: switching re-embeds the catalogue.",
                id="imgrec_app.E053",
            )
        ]
    if decoder not in DECODERS:
        return [
            Error(
                f"{SETTING_NAME}['DECODER'] must be one of {', '.join(map(repr, DECODERS))}, not {decoder!r}.",
                hint="'torchvision' decodes JPEG batches on the model's device (GPU workers).",
                id="imgrec_app.E054",
            )
        ]
    preprocess = _configured_preprocess() if decoder != "pillow" else None
    if preprocess not in (None, "crop"):
        return [
            Error(
                f"{SETTING_NAME}['DECODER'] = {decoder!r} implements the 'crop' recipe only, and the "
                f"backbone's recipe is {preprocess!r} (EfficientNet-Lite's default is 'product').",
                hint="Set BACKBONE_OPTIONS['preprocess'] = 'crop' to use it, or DECODER 'pillow' with the "
                "'pad' or 'product' recipes.",
                id="imgrec_app.E054",
            )
        ]
    if precision == "bf16" and str(imgrec_settings.DEVICE) in ("cpu", "auto") and not native_bf16_cpu():
        return [
            Warning(
                f"{SETTING_NAME}['PRECISION'] = 'bf16' but this machine's CPU has no native bfloat16 "
                "(no avx512_bf16 or amx_bf16 flag): a CPU worker here refuses to embed.",
                hint="Run the workers on CPUs with AVX512-BF16/AMX (or GPUs), or use PRECISION 'fp32'.",
                id="imgrec_app.W053",
            )
        ]
    return []


def _configured_preprocess() -> str | None:
    """The configured backbone's effective preprocessing recipe (``BackboneSpec.with_options``
    resolves it), or None when the backbone or its options are invalid (E003 reports those)."""
    from imgrec_app.ml.registry import get_backbone

    try:
        return get_backbone(imgrec_settings.BACKBONE).with_options(imgrec_settings.BACKBONE_OPTIONS).preprocess
    except (KeyError, TypeError, ValueError, AttributeError):  # AttributeError: options not a dict
        return None
