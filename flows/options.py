"""Groups of flow parameters, validated when a run starts (the UI shows them as forms).

The public parameters of the flows are plain strings; these models hold the optional
knobs, with the same meaning and defaults as the ``segpipe segment`` options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.run.segment import SegmentOptions
from pipeline.sources.limits import DEFAULT_MAX_PIXELS


class InferenceOptions(BaseModel):
    """How the network runs: the ``segpipe segment`` options of the same names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: str = Field("auto", description="auto, cpu, cuda or cuda:N (on the machine that runs inference)")
    batch_size: int = Field(4, ge=1, description="Patches per network call")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    patch_size: list[int] | None = Field(None, description="N, or one N per axis; default from the card")
    overlap: float | None = Field(None, ge=0.0, lt=1.0, description="Default from the card")
    bands: list[str] | None = Field(None, description="Bands for the card's channels (names or 1-based)")
    max_pixels: int = Field(
        DEFAULT_MAX_PIXELS, ge=0, description="Refuse inputs that declare more pixels/voxels (0: no limit)"
    )

    def segment_options(
        self,
        workdir: Path,
        stats: Path | None = None,
        probabilities: Path | None = None,
        polygons: Path | None = None,
        polygon_settings: PolygonSettings | None = None,
        allow_remote: bool = False,
        resume: bool = True,
        overwrite: bool = False,
    ) -> SegmentOptions:
        """``SegmentOptions`` with an explicit workdir (kept after a failure, so reruns resume).

        ``allow_remote`` is the flows' parameter of that name (``--allow-remote``).
        """
        polygon_settings = polygon_settings or PolygonSettings()
        return SegmentOptions(
            bands=self.bands,
            device=self.device,
            batch_size=self.batch_size,
            patch_size=None if self.patch_size is None else tuple(self.patch_size),
            overlap=self.overlap,
            precision=self.precision,
            probabilities=probabilities,
            polygons=polygons,
            polygon_classes=polygon_settings.classes,
            min_area_m2=polygon_settings.min_area_m2,
            simplify=polygon_settings.simplify,
            stats=stats,
            workdir=workdir,
            resume=resume,
            overwrite=overwrite,
            allow_remote=allow_remote,
            max_pixels=self.max_pixels,
        )


class PolygonSettings(BaseModel):
    """Which flood polygons to write: ``--polygon-classes``, ``--min-area``, ``--simplify``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    classes: list[str] | None = Field(None, description="Class names or indices; default: all but background")
    min_area_m2: float = Field(0.0, ge=0.0)
    simplify: float = Field(0.0, ge=0.0, description="Tolerance in pixels")
