"""Browsing history: visitors, dedupe, bots, merge on login, export/clear, retention."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from imgrec_app.models import Interaction
from imgrec_app.services import history
from tests.test_recommend import _request

pytestmark = pytest.mark.django_db


def test_anonymous_visitor_gets_a_random_id_not_the_session_key(make_product):
    req = _request()
    row = history.record(req, make_product())
    assert row.visitor_id is not None and row.user is None
    assert str(row.visitor_id) == req.session[history.VISITOR_SESSION_KEY]
    # Compare with the key the session really gets when it is saved (the unsaved key is None).
    req.session.save()
    key = req.session.session_key
    assert key and key not in (str(row.visitor_id), row.visitor_id.hex)
    assert not Interaction.objects.filter(visitor_id__isnull=False).exclude(visitor_id=row.visitor_id).exists()
    # A second request of the same session keeps the same visitor id.
    from django.contrib.sessions.backends.db import SessionStore

    again = _request(session=SessionStore(session_key=key))
    assert history.visitor_id(again) == row.visitor_id


def test_repeated_views_in_the_window_count_once_but_other_kinds_count(make_product, settings):
    p = make_product()
    req = _request()
    assert history.record(req, p) is not None
    assert history.record(req, p) is None
    assert history.record(req, p, kind="cart") is not None
    Interaction.objects.update(created_at=timezone.now() - timedelta(seconds=settings.IMGREC.get("DEDUPE_SECONDS", 300) + 1))
    assert history.record(req, p) is not None
    with pytest.raises(ValueError):
        history.record(req, p, kind="wishlist")


def test_bots_are_ignored(make_product):
    req = _request()
    req.META["HTTP_USER_AGENT"] = "Mozilla/5.0 (compatible; Googlebot/2.1)"
    assert history.record(req, make_product()) is None
    assert not Interaction.objects.exists()


def test_merge_on_login_happens_once_and_logout_starts_fresh(make_product):
    a, b, c = make_product(), make_product(), make_product()
    user = User.objects.create_user("ann", password="pw")
    client = Client()
    client.get(a.get_absolute_url())
    client.get(b.get_absolute_url())
    first_visitor = Interaction.objects.get(object_id=str(a.pk)).visitor_id
    client.post("/accounts/login/", {"username": "ann", "password": "pw"})
    assert Interaction.objects.filter(user=user).count() == 2
    assert not Interaction.objects.filter(user__isnull=True).exists()
    # Logging in again later moves nothing more.
    client.post("/accounts/logout/")
    client.post("/accounts/login/", {"username": "ann", "password": "pw"})
    assert Interaction.objects.filter(user=user).count() == 2
    client.get(c.get_absolute_url())  # logged in: recorded for the user directly
    assert Interaction.objects.filter(user=user).count() == 3
    client.post("/accounts/logout/")
    client.get(a.get_absolute_url())  # after logout: a new anonymous history
    anon = Interaction.objects.get(user__isnull=True)
    assert anon.visitor_id != first_visitor


def test_export_and_clear_only_touch_own_rows(make_product):
    p = make_product()
    mine, theirs = _request(), _request()
    history.record(mine, p)
    history.record(theirs, p)
    assert [r["product_id"] for r in history.export(mine)] == [str(p.pk)]
    assert history.clear(mine) == 1
    assert Interaction.objects.count() == 1 and history.export(mine) == []


def test_user_deletion_removes_history_at_once(make_product):
    user = User.objects.create_user("gone", password="pw")
    req = _request(user=user)
    history.record(req, make_product())
    user.delete()
    assert not Interaction.objects.exists()


def test_purge_command_applies_retention(make_product):
    p = make_product()
    history.record(_request(), p)
    history.record(_request(), p)
    Interaction.objects.filter(pk=Interaction.objects.first().pk).update(created_at=timezone.now() - timedelta(days=400))
    out = io.StringIO()
    call_command("imgrec_purge_history", stdout=out)
    assert "Deleted 1" in out.getvalue() and Interaction.objects.count() == 1
