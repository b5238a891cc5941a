"""Refresh the README's pictures (docs/images/) from a real run of the project's own demo.

Run ``PYTHONPATH=. python docs/screenshots.py`` from the checkout's root. It starts a
temporary ``prefect server start`` on a free loopback port (its own SQLite home, no
telemetry), runs ``segpipe demo`` against it, copies the flood scene's and the first
scan's quick-looks, and takes a headless Chromium screenshot of the flood run's page in
the Prefect UI. Pictures are shrunk to stay small in the repository.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from PIL import Image

from tests.local_services import chromium, find_browser, prefect_server

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"
FLOOD_RUN = "flood-Spain_7370579_S1Hand"
FLOOD_QUICKLOOK = Path("flood") / "Spain_7370579_S1Hand.quicklook.png"
BRAIN_QUICKLOOK = Path("scans") / "t1.quicklook.png"
WINDOW = (1400, 900)
MAX_WIDTH = 1100  # README pictures: wide enough to read, small enough to keep under ~300 kB


def flow_run_id(url: str, name: str) -> str:
    response = httpx.post(
        f"{url}/api/flow_runs/filter", json={"flow_runs": {"name": {"any_": [name]}}, "limit": 1}, timeout=30
    )
    response.raise_for_status()
    runs = response.json()
    if not runs:
        raise SystemExit(f"no flow run named {name} on the server")
    return str(runs[0]["id"])


def screenshot(url: str, destination: Path, profile: Path) -> None:
    browser = find_browser()
    if browser is None:
        raise SystemExit("no headless browser found; install Debian's chromium")
    chromium(browser, profile, url, f"--screenshot={destination}", window=WINDOW)
    if not destination.is_file():
        raise SystemExit(f"chromium wrote no screenshot of {url}")


def shrink(source: Path, destination: Path, max_width: int = MAX_WIDTH) -> None:
    """``source`` at most ``max_width`` wide, as an optimised 256-colour PNG (pictures of
    flat UI colours and tinted masks lose nothing visible)."""
    with Image.open(source) as image:
        picture = image.convert("RGB")
    if picture.width > max_width:
        height = round(picture.height * max_width / picture.width)
        picture = picture.resize((max_width, height), Image.Resampling.LANCZOS)
    picture.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(destination, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=IMAGES, help="folder for the PNGs (docs/images)")
    parser.add_argument("--device", default="auto", help="segpipe demo --device")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="segpipe-screenshots-") as folder:
        scratch = Path(folder)
        (scratch / "prefect").mkdir()
        with prefect_server(scratch / "prefect") as server:
            url, env = server.url, server.env
            demo = scratch / "demo"
            command = [sys.executable, "-m", "pipeline.cli", "demo", "-o", str(demo), "--device", args.device]
            subprocess.run([*command, "-q"], env=env, cwd=ROOT, check=True)
            page = scratch / "run.png"
            screenshot(f"{url}/runs/flow-run/{flow_run_id(url, FLOOD_RUN)}", page, scratch / "profile")
            shrink(page, args.output / "prefect-run.png")
        shrink(demo / FLOOD_QUICKLOOK, args.output / "quicklook-flood.png")
        shrink(demo / BRAIN_QUICKLOOK, args.output / "quicklook-brain.png")
    for name in ("quicklook-flood.png", "quicklook-brain.png", "prefect-run.png"):
        path = args.output / name
        print(f"{path} ({path.stat().st_size // 1024} kB)")


if __name__ == "__main__":
    main()
