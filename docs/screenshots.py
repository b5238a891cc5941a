"""Refresh the README's pictures (docs/images/) from a real run of the project's own demo.

Run ``PYTHONPATH=. python docs/screenshots.py`` from the checkout's root. It starts a
temporary ``prefect server start`` on a free loopback port (its own SQLite home, no
telemetry), runs ``segpipe demo`` against it, copies the flood scene's and the first
scan's quick-looks, and takes a headless Chromium screenshot of the flood run's page in
the Prefect UI. Pictures are shrunk to stay small in the repository.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"
FLOOD_RUN = "flood-Spain_7370579_S1Hand"
FLOOD_QUICKLOOK = Path("flood") / "Spain_7370579_S1Hand.quicklook.png"
BRAIN_QUICKLOOK = Path("scans") / "t1.quicklook.png"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
)
WINDOW = (1400, 900)
MAX_WIDTH = 1100  # README pictures: wide enough to read, small enough to keep under ~300 kB
STARTUP_S = 180.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def server_env(home: Path, port: int) -> dict[str, str]:
    """The environment of a private server and of everything that reports to it (the V1 UI works offline)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
        PREFECT_SERVER_API_HOST="127.0.0.1",
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_V2_ENABLED="false",
        PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT="false",
        DO_NOT_TRACK="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    return env


@contextlib.contextmanager
def prefect_server(home: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """``prefect server start`` until the block ends; yields the UI's URL and the env to reach it."""
    port = free_port()
    env = server_env(home, port)
    url = f"http://127.0.0.1:{port}"
    log = home / "server.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if process.poll() is not None:
                raise SystemExit(f"prefect server exited:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"prefect server not healthy after {STARTUP_S:.0f} s")
            time.sleep(0.5)
        yield url, env
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if process.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=15)


def flow_run_id(url: str, name: str) -> str:
    response = httpx.post(
        f"{url}/api/flow_runs/filter", json={"flow_runs": {"name": {"any_": [name]}}, "limit": 1}, timeout=30
    )
    response.raise_for_status()
    runs = response.json()
    if not runs:
        raise SystemExit(f"no flow run named {name} on the server")
    return str(runs[0]["id"])


def browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit(f"no headless browser found ({', '.join(BROWSERS)}); install Debian's chromium")


def screenshot(url: str, destination: Path, profile: Path) -> None:
    done = subprocess.run(
        [
            browser(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            "--virtual-time-budget=20000",
            f"--screenshot={destination}",
            url,
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if done.returncode != 0 or not destination.is_file():
        raise SystemExit(f"chromium failed ({done.returncode}):\n{done.stderr[-3000:]}")


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
        with prefect_server(scratch / "prefect") as (url, env):
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
