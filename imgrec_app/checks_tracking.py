"""System checks of the measured-shelf settings: ``TRACKING``, ``ATTRIBUTION_WINDOW``,
``TRACKING_BEACON_RATE`` and ``EXPERIMENTS`` (ids ``imgrec_app.E048``–``E052``)."""

from __future__ import annotations

import re
from typing import Any

from django.core.checks import CheckMessage, Error, Tags, register

from imgrec_app.conf import SETTING_NAME, imgrec_settings, override

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HINT = "See the settings reference in README.md (EXPERIMENTS) and services/experiments.py."


@register(Tags.compatibility)
def check_tracking(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """E048 tracking settings, E049–E052 ``EXPERIMENTS``."""
    errors = _check_tracking_values()
    config = imgrec_settings.EXPERIMENTS
    if not isinstance(config, dict):
        return [
            *errors,
            _error(f"{SETTING_NAME}['EXPERIMENTS'] must be a dict of experiment name -> definition.", "E049"),
        ]
    for name, exp in config.items():
        errors += _check_experiment(name, exp)
    errors += _check_overlaps(config)
    return errors


def _error(msg: str, code: str, hint: str = _HINT) -> Error:
    return Error(msg, hint=hint, id=f"imgrec_app.{code}")


def _check_tracking_values() -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    if not isinstance(imgrec_settings.TRACKING, bool):
        errors.append(_error(f"{SETTING_NAME}['TRACKING'] must be True or False.", "E048", "Default: True."))
    window = imgrec_settings.ATTRIBUTION_WINDOW
    if isinstance(window, bool) or not isinstance(window, (int, float)) or window <= 0:
        errors.append(
            _error(
                f"{SETTING_NAME}['ATTRIBUTION_WINDOW'] must be a number of seconds > 0, not {window!r}.",
                "E048",
                "Default: 86400.",
            )
        )
    from imgrec_app.services.throttle import parse_rate

    try:
        parse_rate(imgrec_settings.TRACKING_BEACON_RATE)
    except (ValueError, KeyError, IndexError, AttributeError):
        errors.append(
            _error(
                f"{SETTING_NAME}['TRACKING_BEACON_RATE'] must be like '60/min' or None.", "E048", "Default: '60/min'."
            )
        )
    return errors


def _check_experiment(name: Any, exp: Any) -> list[CheckMessage]:
    from imgrec_app.services.experiments import SHELVES

    label = f"{SETTING_NAME}['EXPERIMENTS'][{name!r}]"
    if not isinstance(name, str) or not _NAME.match(name):
        return [_error(f"{label}: the name must be 1-64 letters, digits, '-', '_' or '.'.", "E049")]
    if not isinstance(exp, dict):
        return [_error(f"{label} must be a dict with 'shelves', 'control' and 'variants'.", "E049")]
    errors: list[CheckMessage] = []
    shelves = exp.get("shelves")
    if not isinstance(shelves, (list, tuple)) or not shelves or any(s not in SHELVES for s in shelves):
        errors.append(_error(f"{label}['shelves'] must be a non-empty list of {', '.join(SHELVES)}.", "E049"))
    if not isinstance(exp.get("active", True), bool):
        errors.append(_error(f"{label}['active'] must be True or False.", "E049"))
    variants = exp.get("variants")
    if not isinstance(variants, dict) or len(variants) < 2:
        return [*errors, _error(f"{label}['variants'] must be a dict of at least two variants.", "E050")]
    if exp.get("control") not in variants:
        errors.append(
            _error(f"{label}['control'] must name one of its variants ({', '.join(map(str, variants))}).", "E050")
        )
    total = 0.0
    for vname, spec in variants.items():
        vlabel = f"{label}['variants'][{vname!r}]"
        if not isinstance(vname, str) or not _NAME.match(vname):
            errors.append(_error(f"{vlabel}: the name must be 1-64 letters, digits, '-', '_' or '.'.", "E050"))
            continue
        if not isinstance(spec, dict):
            errors.append(_error(f"{vlabel} must be a dict with 'traffic' and 'settings'.", "E050"))
            continue
        traffic = spec.get("traffic")
        if isinstance(traffic, bool) or not isinstance(traffic, (int, float)) or not 0 <= traffic <= 100:
            errors.append(_error(f"{vlabel}['traffic'] must be a percentage 0-100, not {traffic!r}.", "E050"))
        else:
            total += float(traffic)
        errors += _check_variant_settings(vlabel, spec.get("settings", {}))
    if total > 100:
        errors.append(_error(f"{label}: the variants' traffic sums to {total:g} %, over 100 %.", "E050"))
    return errors


def _check_variant_settings(vlabel: str, values: Any) -> list[CheckMessage]:
    """E051: only per-request shelf settings, with values the settings checks accept."""
    from imgrec_app import checks
    from imgrec_app.services.experiments import VARIANT_SETTINGS

    if not isinstance(values, dict):
        return [_error(f"{vlabel}['settings'] must be a dict of IMGREC settings.", "E051")]
    bad = sorted(str(k) for k in values if k not in VARIANT_SETTINGS)
    if bad:
        return [
            _error(
                f"{vlabel}['settings'] may not change {', '.join(bad)}.",
                "E051",
                f"A variant may change: {', '.join(sorted(VARIANT_SETTINGS))}.",
            )
        ]
    if not values:
        return []
    # The variant's values must pass the same checks as the IMGREC values they replace.
    base = {(m.id, m.msg) for m in checks.check_settings()}
    with override(values):
        new = [m for m in checks.check_settings() if (m.id, m.msg) not in base]
    return [_error(f"{vlabel}['settings']: {m.msg}", "E051", m.hint or _HINT) for m in new]


def _check_overlaps(config: dict[Any, Any]) -> list[CheckMessage]:
    """E052: one active experiment per shelf (an impression records one experiment)."""
    owner: dict[str, str] = {}
    errors: list[CheckMessage] = []
    for name, exp in config.items():
        if (
            not isinstance(exp, dict)
            or not exp.get("active", True)
            or not isinstance(exp.get("shelves"), (list, tuple))
        ):
            continue
        for shelf in exp["shelves"]:
            if shelf in owner:
                errors.append(
                    _error(
                        f"{SETTING_NAME}['EXPERIMENTS'] {owner[shelf]!r} and {name!r} are both active "
                        f"on the {shelf!r} shelf.",
                        "E052",
                        "Run one experiment per shelf at a time: set 'active': False on one of them.",
                    )
                )
            else:
                owner[shelf] = str(name)
    return errors
