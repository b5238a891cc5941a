"""Pictures in Prefect artifacts: the Prefect UI shows a PNG inline from a data URI."""

from __future__ import annotations

import base64


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...``: the form the Prefect UI shows inline for image artifacts."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
