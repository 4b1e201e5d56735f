"""Admin: index status page, live progress, re-index permissions, classifier retrain and
applying a predicted category."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command

from imgrec_app.models import CategoryPrediction, IndexedImage, ReindexRun
from tests.conftest import make_image_bytes

pytestmark = pytest.mark.django_db

STATUS = "/admin/imgrec_app/indexedimage/status/"


@pytest.fixture
def staff(client):
    user = User.objects.create_user("merchant", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_indexedimage"))
    client.force_login(user)
    return user


def test_status_page_shows_counts_and_hides_buttons_without_permission(client, staff, make_product, add_image):
    add_image(make_product())
    r = client.get(STATUS)
    assert r.status_code == 200
    html = r.content.decode()
    assert "Images by status" in html and "pending" in html
    assert 'name="scope"' not in html
    assert client.post(STATUS, {"scope": "all"}).status_code == 403
    assert not ReindexRun.objects.exists()


def test_reindex_button_starts_one_run_and_progress_is_json(client, staff, make_product, add_image):
    staff.user_permissions.add(Permission.objects.get(codename="reindex"))
    client.force_login(User.objects.get(pk=staff.pk))
    add_image(make_product())
    add_image(make_product(), make_image_bytes(color=(0, 0, 250)), name="b.jpg")
    assert client.post(STATUS, {"scope": "all"}).status_code == 302
    assert client.post(STATUS, {"scope": "all"}).status_code == 302  # a double click
    assert ReindexRun.objects.count() == 1
    run = ReindexRun.objects.get()
    assert run.total == 2 and IndexedImage.objects.filter(run=run).count() == 2
    progress = client.get(f"{STATUS}run/{run.pk}/").json()
    assert progress["total"] == 2 and progress["remaining"] == 2 and progress["finished"] is False
    html = client.get(STATUS).content.decode()
    assert f"Latest run #{run.pk}" in html and "<progress" in html


def test_non_staff_cannot_reach_the_status_page(client):
    user = User.objects.create_user("shopper", password="pw")
    client.force_login(user)
    assert client.get(STATUS).status_code == 302  # to the admin login
    assert client.post(STATUS, {"scope": "all"}).status_code == 302
    assert not ReindexRun.objects.exists()


def test_retrain_and_apply_a_suggestion(client, make_product, add_image):
    admin = User.objects.create_superuser("boss", "b@example.com", "pw")
    client.force_login(admin)
    red = [make_product(f"Red {i}", category="red") for i in range(4)]
    blue = [make_product(f"Blue {i}", category="blue") for i in range(4)]
    for i, p in enumerate(red):
        add_image(p, make_image_bytes(color=(230, 20 + i * 5, 20)), name=f"r{i}.jpg")
    for i, p in enumerate(blue):
        add_image(p, make_image_bytes(color=(20, 20 + i * 5, 230), shape="box"), name=f"b{i}.jpg")
    # One red-looking product filed under "blue" by mistake.
    odd = make_product("Odd one", category="blue")
    add_image(odd, make_image_bytes(color=(235, 30, 25)), name="odd.jpg")
    call_command("imgrec_reindex", "--missing", "--sync", stdout=io.StringIO(), verbosity=0)
    r = client.post("/admin/imgrec_app/categoryclassifier/retrain/", follow=True)
    assert "Training queued on a worker" in r.content.decode()  # never trained in the request
    assert not CategoryPrediction.objects.exists()
    from imgrec_app.tasks import train_classifier

    train_classifier.apply()  # what the worker runs (a real worker: tests/test_torch_free_web.py)
    prediction = CategoryPrediction.objects.get(object_id=str(odd.pk))
    red_id = str(red[0].category_id)
    assert prediction.category == red_id and prediction.disagrees
    listing = client.get("/admin/imgrec_app/categoryprediction/?disagrees=yes").content.decode()
    assert "Odd one" in listing
    client.post(
        "/admin/imgrec_app/categoryprediction/",
        {"action": "apply_suggestions", "_selected_action": [prediction.pk]},
    )
    odd.refresh_from_db()
    assert str(odd.category_id) == red_id
