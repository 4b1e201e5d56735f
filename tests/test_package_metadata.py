"""The package as PyPI receives it: its long description, licence metadata and sdist (issue 14).

PyPI shows the long description on its own page, where a relative path resolves to nothing: the
README's screenshots (``docs/screenshots/*.png``) would be broken images and its links to
``docs/*.md`` would 404.  pyproject.toml builds the long description from README.md with
hatch-fancy-pypi-readme (the screenshots section replaced by a note, relative links turned into
the files' paths); these tests read what a build really wrote.

- In a source checkout: the sdist and, from it, the wheel are built with ``python -m build
  --no-isolation`` (hatchling and hatch-fancy-pypi-readme are pinned in requirements.txt), and
  the wheel's METADATA is read.
- In the torch-free job (scripts/ci-torch-free), where imgrec_app comes from the installed wheel
  and there is no source tree: the installed distribution's METADATA (the same wheel).

The Markdown is parsed with markdown-it-py (CommonMark, as PyPI's renderer), so inline images,
reference-style images, links and raw ``<img>`` / ``<a>`` HTML are all found.
"""

from __future__ import annotations

import email.message
import email.parser
import importlib.metadata
import re
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

import imgrec_app

ROOT = Path(__file__).resolve().parent.parent
DIST_NAME = "django-imgrec"
# True in a checkout (the app is imported from the tree); False in the torch-free job's copy.
SOURCE_TREE = Path(imgrec_app.__file__).resolve().parent == ROOT / "imgrec_app"

_ABSOLUTE = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.IGNORECASE)  # https:, mailto:, data:, //host
_HTML_ATTR = re.compile(r"""<(img|a|source)\b[^>]*?\s(?:src|href|srcset)\s*=\s*["']?([^"'\s>]+)""", re.IGNORECASE)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist and the wheel built from it, as `python -m build` makes them for an upload."""
    if not SOURCE_TREE:
        pytest.skip("no source tree here (torch-free job): the installed wheel is checked instead")
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"python -m build failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return {"sdist": sdist, "wheel": wheel}


@pytest.fixture(scope="module")
def metadata(request: pytest.FixtureRequest) -> email.message.Message:
    """The wheel's METADATA: freshly built in a checkout, the installed one in the torch-free job."""
    if SOURCE_TREE:
        wheel = request.getfixturevalue("built")["wheel"]
        with zipfile.ZipFile(wheel) as zf:
            (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
            text = zf.read(name).decode("utf-8")
    else:
        dist = importlib.metadata.distribution(DIST_NAME)
        text = dist.read_text("METADATA") or ""
        assert text, f"the installed {DIST_NAME} has no METADATA"
    return email.parser.Parser().parsestr(text)


def _description(metadata: email.message.Message) -> str:
    body = metadata.get_payload()
    assert isinstance(body, str)
    return body


def _tokens(markdown: str) -> Iterator[Token]:
    for token in MarkdownIt("commonmark").parse(markdown):
        yield token
        yield from token.children or ()


def relative_targets(markdown: str) -> list[tuple[str, str]]:
    """(kind, target) of every image and link whose address is relative (PyPI cannot resolve it).

    A link to a section of the page itself (``#…``) works and is not counted.
    """
    found = []
    for token in _tokens(markdown):
        if token.type == "image":
            found.append(("image", str(token.attrGet("src") or "")))
        elif token.type == "link_open":
            found.append(("link", str(token.attrGet("href") or "")))
        elif token.type in ("html_inline", "html_block"):
            for tag, value in _HTML_ATTR.findall(token.content):
                found.append(("image" if tag.lower() != "a" else "link", value))
    return [(kind, target) for kind, target in found if not _ABSOLUTE.match(target) and not target.startswith("#")]


def test_the_finder_sees_every_form_of_relative_image_and_link() -> None:
    # The check below is only as good as this parser: each form PyPI would break is found.
    sample = (
        "![shot](docs/screenshots/a.png)\n\n"
        "![ref shot][s]\n\n[s]: docs/screenshots/b.png\n\n"
        '<img src="docs/c.png" alt="c">\n\n'
        "text <img src='./d.png'> and [design](docs/DESIGN.md#x) and <a href=\"LICENSE\">licence</a>\n\n"
        "![ok](https://example.org/e.png) [ok](https://example.org) [here](#install) `![code](no.png)`\n"
    )
    assert relative_targets(sample) == [
        ("image", "docs/screenshots/a.png"),
        ("image", "docs/screenshots/b.png"),
        ("image", "docs/c.png"),
        ("image", "./d.png"),
        ("link", "docs/DESIGN.md#x"),
        ("link", "LICENSE"),
    ]


def test_the_readme_itself_has_the_relative_screenshots_the_build_must_drop() -> None:
    # Guards the guard: were the README ever free of them, the next test would prove nothing.
    readme = ROOT / "README.md"
    if not readme.exists():
        pytest.skip("README.md not here")
    assert ("image", "docs/screenshots/product-page.png") in relative_targets(readme.read_text("utf-8"))


def test_no_relative_image_or_link_reaches_the_long_description(metadata: email.message.Message) -> None:
    assert metadata["Description-Content-Type"].startswith("text/markdown")
    assert relative_targets(_description(metadata)) == [], (
        "a relative image or link reaches PyPI's long description: adjust the fragments/substitutions "
        "in [tool.hatch.metadata.hooks.fancy-pypi-readme] (pyproject.toml)"
    )


def test_the_long_description_is_the_whole_readme_but_its_screenshots(metadata: email.message.Message) -> None:
    # A cut-off marker that drifted would drop the rest of the README silently: every section
    # heading of README.md but "Screenshots" must be there, in order, and the note instead of it.
    description = _description(metadata)
    readme = ROOT / "README.md"
    if not readme.exists():
        pytest.skip("README.md not here")
    headings = [line for line in readme.read_text("utf-8").splitlines() if re.match(r"#{1,3} ", line)]
    assert len(headings) > 10
    positions = []
    for heading in headings:
        if heading == "## Screenshots":
            continue
        assert heading in description.splitlines(), f"{heading!r} is missing from the long description"
        positions.append(description.splitlines().index(heading))
    assert positions == sorted(positions)
    assert "no public\nrepository address" in description


def test_licence_metadata_is_spdx_with_the_licence_file(metadata: email.message.Message) -> None:
    assert metadata["Metadata-Version"] in ("2.4", "2.5")
    assert metadata["License-Expression"] == "BSD-3-Clause"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert metadata["License"] is None  # the deprecated free-text field is gone


def test_the_sdist_carries_the_app_docs_and_licence_but_not_the_repository_tooling(built: dict[str, Path]) -> None:
    with tarfile.open(built["sdist"]) as tf:
        names = {name.split("/", 1)[1] for name in tf.getnames() if "/" in name}
    for needed in (
        "pyproject.toml",
        "README.md",
        "LICENSE",
        "CHANGELOG.md",
        "docs/DESIGN.md",
        "imgrec_app/__init__.py",
        "imgrec_app/py.typed",
        "imgrec_app/migrations/0001_initial.py",
        "imgrec_app/locale/zh_Hans/LC_MESSAGES/django.mo",
    ):
        assert needed in names, f"{needed} is missing from the sdist"
    for left_out in ("tests/", "shop_demo/", "bench/", "scripts/", "docs/screenshots/", "var/"):
        assert not [name for name in names if name.startswith(left_out)], f"the sdist ships {left_out}"
    assert not [name for name in names if name.endswith((".pyc", ".whl"))]
