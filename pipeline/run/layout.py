"""The names of a workdir's files and folders: this module alone spells them.

A workdir holds one run's intermediates (``pipeline.run.workdir``): the marker that
proves segpipe made it, the manifest (fingerprint, finished stages, stamps of the
outputs written), the plan, the zarr arrays on the source grid (or, for the input, the
record of the files read in place) and, when the card
resamples, on the model grid, the done marks of the engine's chunk rows, and the
record of a DICOM SEG's source series. The names are part of the on-disk format: a
rerun resumes a workdir an earlier version wrote, so they never change without
``LAYOUT_VERSION``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MARKER = ".segpipe-workdir"
LAYOUT_VERSION = 2  # 2: a local raster read in place (image.json, validity.zarr)


@dataclass(frozen=True)
class WorkdirLayout:
    """Where each intermediate of the workdir ``path`` lives."""

    path: Path

    @classmethod
    def beside(cls, output: Path) -> WorkdirLayout:
        """The hidden workdir beside ``output`` when no ``--workdir`` is given."""
        return cls(output.parent / f".{output.name}.segpipe-work")

    @property
    def marker(self) -> Path:
        """JSON with the segpipe and layout versions (``pipeline.run.ownership``)."""
        return self.path / MARKER

    @property
    def manifest(self) -> Path:
        return self.path / "manifest.json"

    @property
    def manifest_staging(self) -> Path:
        """The manifest's next version, renamed over it when complete."""
        return self.path / ".manifest.json.tmp"

    @property
    def plan(self) -> Path:
        return self.path / "plan.json"

    @property
    def image(self) -> Path:
        """The ingested input, ``(C, *spatial)`` on the source grid, with its geometry in the attributes."""
        return self.path / "image.zarr"

    @property
    def image_record(self) -> Path:
        """Instead of ``image``: which bands of which local files make the input, read in place
        (``pipeline.ingest.in_place``), with the attributes ``image`` would carry."""
        return self.path / "image.json"

    @property
    def validity(self) -> Path:
        """With ``image_record``, when a band can be invalid: where every band is valid."""
        return self.path / "validity.zarr"

    @property
    def labels(self) -> Path:
        return self.path / "labels.zarr"

    @property
    def probabilities(self) -> Path:
        return self.path / "probabilities.zarr"

    @property
    def postprocessed(self) -> Path:
        """The labels after the card's post-processing steps (the engine's labels stay as they are)."""
        return self.path / "postprocessed.zarr"

    @property
    def model_image(self) -> Path:
        """The prepared input resampled to the card's spacing (only when the card resamples)."""
        return self.path / "model_image.zarr"

    @property
    def model_labels(self) -> Path:
        return self.path / "model_labels.zarr"

    @property
    def model_probabilities(self) -> Path:
        return self.path / "model_probabilities.zarr"

    @property
    def done(self) -> Path:
        """The engine's done marks, one per finished chunk row of the array it writes."""
        return self.path / "done"

    @property
    def seg_source(self) -> Path:
        """What a DICOM SEG output needs from its source series (``pipeline.sinks.dicom_seg``)."""
        return self.path / "dicom_seg_source.json"

    @property
    def flood_labels(self) -> Path:
        """The model's water combined with a reference: land, permanent and flood water
        (``pipeline.run.flood_extent``)."""
        return self.path / "flood_labels.zarr"

    @property
    def pre_event(self) -> Path:
        """The workdir of the same card's run on the pre-event scene."""
        return self.path / "pre-event"

    @property
    def pre_event_water(self) -> Path:
        """That run's labels (land, water) as a GeoTIFF on the pre-event scene's grid."""
        return self.path / "pre-event-water.tif"


def is_state(name: str) -> bool:
    """Whether ``name`` (relative to a workdir) is one of the small files every stage reads:
    the marker, the manifest, the plan, the SEG source record, the in-place image record, an
    array's metadata, a done mark."""
    here = WorkdirLayout(Path())
    state = (here.marker, here.manifest, here.plan, here.seg_source, here.image_record)
    files = {str(path) for path in state}
    top, _, rest = name.partition("/")
    return name in files or (top.endswith(".zarr") and rest == "zarr.json") or top == str(here.done)


def chunk_row(name: str, array: Path) -> int | None:
    """The index along the first spatial axis of the chunk ``name`` of a channel-first array
    (``image.zarr/c/CHANNEL/ROW/...``, relative to the workdir), None for other files."""
    parts = name.split("/")
    if len(parts) < 4 or parts[0] != array.name or parts[1] != "c" or not parts[3].isdigit():
        return None
    return int(parts[3])
