"""A real headless Chromium for page tests: a screenshot of a local file with the network cut
off, and a check of its pixels that tells a drawn chart from an empty one.

Chromium comes from Debian's `chromium` package (.ci/run installs it when missing). Without it a
test skips on a developer's machine and fails under CI (CI=true), where it must run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

# plotly's default template paints each plot area this colour (plotly.io.templates["plotly"]).
PLOT_AREA = (229, 236, 246)
MIN_BAND_ROWS = 60  # a plot area is taller than this; table rules and legends are not
MIN_INK = 150  # pixels of data (lines, bars, labels) a drawn chart shows at least


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI") == "true":
        pytest.fail("Chromium is missing: .ci/run installs it (apt-get install chromium)")
    pytest.skip("Chromium is not installed (apt-get install chromium)")


def screenshot(page: Path, out: Path, profile: Path, *, width: int = 1280, height: int = 2600) -> Path:
    """Open `page` in headless Chromium with no network at all, wait for its scripts, shoot it."""
    command = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync", f"--user-data-dir={profile}",
        # Any request for the network fails: a page that needs a CDN shows empty charts.
        "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
        "--hide-scrollbars", f"--window-size={width},{height}", "--virtual-time-budget=10000",
        f"--screenshot={out}", page.resolve().as_uri(),
    ]
    proc = subprocess.run(command, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    assert out.exists(), f"no screenshot (exit {proc.returncode}): {proc.stderr.decode(errors='replace')[-2000:]}"
    return out


def _near(pixel: tuple[int, ...], colour: tuple[int, int, int], tolerance: int = 3) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel[:3], colour, strict=True))


def plot_areas(png: Path) -> list[dict[str, int]]:
    """Each plot area in the screenshot (a band of rows painted PLOT_AREA) with the pixels of data
    drawn inside it: what is neither the area's colour nor its white grid lines."""
    from PIL import Image

    image = Image.open(png).convert("RGB")
    width, height = image.size
    pixels = image.load()
    rows: list[tuple[int, int, int]] = []  # (y, first x, last x) of rows with plot-area colour
    for y in range(height):
        xs = [x for x in range(0, width, 2) if _near(pixels[x, y], PLOT_AREA)]
        if len(xs) >= 10:
            rows.append((y, xs[0], xs[-1]))
    bands: list[list[tuple[int, int, int]]] = []
    for row in rows:
        if bands and row[0] - bands[-1][-1][0] <= 40:  # a full-width bar may hide the area for a few rows
            bands[-1].append(row)
        else:
            bands.append([row])
    areas = []
    for band in bands:
        top, bottom = band[0][0], band[-1][0]
        if bottom - top < MIN_BAND_ROWS:
            continue
        left, right = min(r[1] for r in band), max(r[2] for r in band)
        ink = 0  # every other pixel of every other row, counted four times: quick, and lines 2 px wide still show
        for y in range(top, bottom + 1, 2):
            for x in range(left, right + 1, 2):
                pixel = pixels[x, y]
                if not _near(pixel, PLOT_AREA, 12) and min(pixel[:3]) < 235:
                    ink += 4
        areas.append({"top": top, "bottom": bottom, "left": left, "right": right, "ink": ink})
    return areas


def count_colour(png: Path, colour: tuple[int, int, int]) -> int:
    from PIL import Image

    image = Image.open(png).convert("RGB")
    width, height = image.size
    pixels = image.load()
    return sum(1 for y in range(0, height, 2) for x in range(0, width, 2) if _near(pixels[x, y], colour)) * 4
