"""The three stages of a run as separate processes, as a flow's tasks run them on workers:
``python -m tests.storage.stages plan WORKDIR INPUT REGIONS`` prints the regions as JSON,
``... rows WORKDIR LO HI`` runs one, ``... finish WORKDIR`` writes ``labels.tif`` here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pipeline.run import execute, finish, plan
from pipeline.run.spec import RunSpec
from pipeline.storage import gdal_path
from unet.card import load_card


def main(stage: str, workdir: str, *rest: str) -> None:
    path = gdal_path(workdir)
    if stage == "plan":
        spec = RunSpec.of([gdal_path(rest[0])], "flood-s1", Path("labels.tif"), workdir=path)
        plan.prepare_run(spec, load_card(spec.model))
        print(json.dumps(execute.regions(path, int(rest[1]))))
    elif stage == "rows":
        execute.run_rows(path, (int(rest[0]), int(rest[1])))
    else:
        finish.finish_run(path)


if __name__ == "__main__":
    main(*sys.argv[1:])
