"""Translations: the shipped Simplified Chinese catalogue is complete and compiled, and a shelf
and the admin's index status page render in Chinese when zh-hans is active."""

from __future__ import annotations

import gettext as gnu_gettext
import re
import shutil
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.template import Context, Template
from django.utils import translation

import imgrec_app
from tests.test_recommend import _request, catalogue  # noqa: F401

LOCALE = Path(imgrec_app.__file__).resolve().parent / "locale"  # the installed app (the wheel, in CI)
PO = LOCALE / "zh_Hans" / "LC_MESSAGES" / "django.po"
STATUS = "/admin/imgrec_app/indexedimage/status/"


def _po_entries(text: str) -> list[tuple[str, str, list[str]]]:
    """(msgid, msgstr or msgstr[0], flags) of each entry after the header."""

    def joined(block: str, key: str) -> str:
        m = re.search(rf'^{re.escape(key)} ((?:".*"\n?)+)', block, re.M)
        return "".join(re.findall(r'"(.*)"', m.group(1))).replace('\\"', '"') if m else ""

    entries = []
    for block in text.split("\n\n")[1:]:
        flags = [f.strip() for line in re.findall(r"^#, (.*)$", block, re.M) for f in line.split(",")]
        msgstr = joined(block, "msgstr") or joined(block, "msgstr[0]")
        entries.append((joined(block, "msgid"), msgstr, flags))
    return entries


def test_the_chinese_catalogue_is_complete_and_compiled():
    entries = _po_entries(PO.read_text(encoding="utf-8"))
    assert len(entries) >= 120
    untranslated = [mid for mid, mstr, flags in entries if not mstr or "fuzzy" in flags]
    assert not untranslated, untranslated
    compiled = gnu_gettext.GNUTranslations(open(PO.with_suffix(".mo"), "rb"))
    stale = [mid for mid, mstr, _ in entries if compiled.gettext(mid) != mstr]
    assert not stale, f"django.mo is older than django.po (run compilemessages): {stale}"


@pytest.mark.skipif(shutil.which("xgettext") is None, reason="needs GNU gettext (apt-get install gettext)")
def test_the_catalogue_has_every_string_of_the_source(tmp_path, monkeypatch):
    """``makemessages`` over the app's source finds no string the shipped catalogue lacks: a
    string marked for translation after the catalogue was last updated fails here (the fix is
    the command in CONTRIBUTING.md, "Translations")."""
    copy = tmp_path / "imgrec_app"
    shutil.copytree(LOCALE.parent, copy, ignore=shutil.ignore_patterns("locale", "__pycache__", "static"))
    (copy / "locale").mkdir()
    monkeypatch.chdir(copy)
    call_command("makemessages", locale=["zh_Hans"], verbosity=0)
    fresh = _po_entries((copy / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po").read_text(encoding="utf-8"))
    assert len(fresh) >= 120
    shipped = {mid: (mstr, flags) for mid, mstr, flags in _po_entries(PO.read_text(encoding="utf-8"))}
    missing = [mid for mid, _, _ in fresh if mid not in shipped]
    assert not missing, f"not in {PO.name} (run makemessages + translate + compilemessages): {missing}"
    untranslated = [mid for mid, _, _ in fresh if not shipped[mid][0] or "fuzzy" in shipped[mid][1]]
    assert not untranslated, untranslated


@pytest.mark.django_db
def test_a_shelf_renders_in_chinese(catalogue):  # noqa: F811
    products, _ = catalogue
    page = Template("{% load imgrec_tags %}{% imgrec_similar_shelf product limit=3 %}")
    with translation.override("zh-hans"):
        html = page.render(Context({"product": products[0], "request": _request()}))
    assert '<h2 class="imgrec-shelf__title">相似商品</h2>' in html
    assert html.count('<small class="imgrec-shelf__reason">外观相似</small>') == 3
    english = page.render(Context({"product": products[0], "request": _request()}))
    assert "Similar products" in english and "相似商品" not in english


@pytest.mark.django_db
def test_the_admin_status_page_renders_in_chinese(client, make_product, add_image):
    user = User.objects.create_user("merchant", password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_indexedimage", "reindex"]))
    client.force_login(user)
    add_image(make_product())
    assert client.post(STATUS, {"scope": "all"}).status_code == 302
    with translation.override("zh-hans"):
        html = client.get(STATUS).content.decode()
    for text in ("按状态统计的图片", "队列", "全部重新索引", "要重新索引所有图片吗？", "最近一次运行 #", "已就绪 0，失败 0，共 1，剩余 1"):
        assert text in html, text
    # the script's progress line is the same translated sentence, with placeholders
    assert 'data-text="已就绪 {ready}，失败 {failed}，共 {total}，剩余 {remaining} · {rate} 张/秒"' in html
    assert "Images by status" not in html


def test_verbose_names_are_translated():
    from imgrec_app.models import IndexedImage

    with translation.override("zh-hans"):
        assert str(IndexedImage._meta.verbose_name_plural) == "已索引图片"
        assert str(IndexedImage._meta.get_field("failure_reason").verbose_name) == "失败原因"
