"""`capi report --html FILE` (SPEC §10): one self-contained page that a real browser (headless
Chromium, with every network request failing) opens and draws: each chart's plot area holds data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from capi_cli.cli.app import app
from chromium import count_colour, plot_areas, screenshot
from support.report_history import play_history

CHARTS = 4  # conversions per day, value per day, the funnel, match keys (the donut is checked by colour)
DONUT_SENT_WITH_AD = (55, 178, 77)  # report.html's colour of "sent, ad known"


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return play_history(tmp_path_factory.mktemp("html-history"))


def _page(env: dict, path: Path, *args: str) -> Path:
    result = CliRunner().invoke(app, ["report", "--html", str(path), "--json", *args], env=env)
    assert result.exit_code == 0, result.output
    json.loads(result.stdout)  # --html writes the page besides the usual output
    return path


def test_page_is_self_contained(history: dict, tmp_path: Path) -> None:
    text = _page(history["env"], tmp_path / "report.html").read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    # No resource from elsewhere: no src/href to a URL, no CDN (the links in the text are the ads' own).
    assert not re.search(r"""<(script|link|img|iframe)[^>]+(src|href)=["']?(https?:)?//""", text)
    assert "Plotly.newPlot" in text and len(text) > 3_000_000  # plotly.js itself is in the page
    assert "Summer sale: 20% off sarees" in text and "orders-token.csv" in text


def test_page_opens_in_chromium_with_its_charts_drawn(history: dict, tmp_path: Path) -> None:
    page = _page(history["env"], tmp_path / "report.html")
    png = screenshot(page, tmp_path / "report.png", tmp_path / "profile")
    areas = plot_areas(png)
    assert len(areas) == CHARTS, areas
    assert all(area["ink"] >= 150 for area in areas), areas
    assert count_colour(png, DONUT_SENT_WITH_AD) > 2000


def test_page_of_another_grouping_still_charts_the_ads(history: dict, tmp_path: Path) -> None:
    page = _page(history["env"], tmp_path / "by-day.html", "--by", "day")
    areas = plot_areas(screenshot(page, tmp_path / "by-day.png", tmp_path / "profile"))
    assert len(areas) == CHARTS and all(area["ink"] >= 150 for area in areas), areas


def test_the_check_sees_empty_charts(tmp_path: Path) -> None:
    """An empty ledger draws axes and nothing else: the pixel check must tell (or it proves nothing).
    The match-key chart still writes its 0% labels."""
    page = _page({}, tmp_path / "empty.html")
    areas = plot_areas(screenshot(page, tmp_path / "empty.png", tmp_path / "profile"))
    assert len(areas) == CHARTS and all(area["ink"] == 0 for area in areas[:3]), areas


def test_html_without_the_charts_library_is_one_line_exit_3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "plotly", None)  # as if capi-cli[report] were not installed
    result = CliRunner().invoke(app, ["report", "--html", str(tmp_path / "r.html")])
    assert result.exit_code == 3
    assert "pip install 'capi-cli[report]'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "r.html").exists()
