"""``python -m pipeline.cli``: the ``segpipe`` command."""

from __future__ import annotations

import sys

from pipeline.cli import main

sys.exit(main())
