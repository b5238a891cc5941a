"""A private ``prefect server start`` and headless Chromium, as the tests and docs/screenshots.py use them.

Both are real programs a user runs: the server gets its own SQLite home, a free loopback
port, the V1 UI (it works offline) and no telemetry; Chromium runs headless with a
throw-away profile and no background network.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
STARTUP_S = 180.0
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


class ServiceError(RuntimeError):
    """A local service did not start or did not answer."""


@dataclass(frozen=True)
class PrefectServer:
    """A running ``prefect server start``: its UI and API, its own home, the env to reach it."""

    url: str
    api: str
    home: Path
    env: dict[str, str]
    log: Path
    startup_s: float


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stop_process_group(process: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM the group ``process`` leads (started with ``start_new_session``); SIGKILL if it lingers.

    A Prefect worker turns the first SIGTERM into a SIGINT to itself and may keep running;
    a second SIGTERM makes it kill itself.
    """
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=wait)


def server_env(home: Path, port: int) -> dict[str, str]:
    """The environment of a private server and of everything that reports to it."""
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
def prefect_server(home: Path, startup_s: float = STARTUP_S) -> Iterator[PrefectServer]:
    """``prefect server start`` until the block ends; :class:`ServiceError` if it is not healthy in time."""
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
    started = time.monotonic()
    try:
        while True:
            if process.poll() is not None:
                raise ServiceError(
                    f"prefect server exited with {process.returncode}:\n{log.read_text()[-3000:]}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > started + startup_s:
                raise ServiceError(
                    f"prefect server not healthy after {startup_s:.0f} s:\n{log.read_text()[-3000:]}"
                )
            time.sleep(0.5)
        startup = time.monotonic() - started
        yield PrefectServer(url=url, api=f"{url}/api", home=home, env=env, log=log, startup_s=startup)
    finally:
        stop_process_group(process)


def find_browser() -> str | None:
    """The first headless-capable Chromium on PATH, or None."""
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium(
    browser: str, profile: Path, url: str, *args: str, window: tuple[int, int] = (1400, 1000)
) -> str:
    """Run headless Chromium on ``url`` with ``args`` (``--dump-dom``, ``--screenshot=...``); its stdout."""
    done = subprocess.run(
        [
            browser,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={window[0]},{window[1]}",
            "--virtual-time-budget=20000",
            *args,
            url,
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if done.returncode != 0:
        raise ServiceError(f"chromium failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout
