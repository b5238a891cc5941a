"""``RunSpec``: everything a run is asked to do, declared once.

The CLI builds it from its arguments, the flows from their parameters (``InferenceOptions``
and ``PolygonSettings`` are flow parameters too: the Prefect UI shows them as forms), and
the plan stores it in the workdir. Adding an option means adding one field here (plus
its CLI flag). The checks that need nothing but the value itself run when a spec is
built and raise the same ``UsageError`` the CLI prints; the checks that need the card,
the input or the machine run when the run is planned (``pipeline.run.plan``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import SegpipeError, UsageError
from pipeline.sources.limits import DEFAULT_MAX_PIXELS

Precision = Literal["auto", "fp32", "bf16", "fp16"]


class Spec(BaseModel):
    """A frozen part of a run spec. Built in code, a refused value raises the ``SegpipeError``
    its check names (the CLI's one-line error) rather than pydantic's wrapper around it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _own_error(exc) from None


def _own_error(exc: ValidationError) -> Exception:
    """The first ``SegpipeError`` a validator raised, else pydantic's error as it is."""
    for error in exc.errors():
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, SegpipeError):
            return cause
    return exc


class Outputs(Spec):
    """What the run writes: the labels always, the rest when asked for."""

    labels: Path = Field(description="Labels: .tif (COG), .nii/.nii.gz, or .dcm (DICOM SEG)")
    probabilities: Path | None = Field(None, description="Float32 class probabilities")
    polygons: Path | None = Field(None, description="Class polygons (.gpkg, .geojson)")
    stats: Path | None = Field(None, description="Per-class counts and areas or volumes, JSON")


class InferenceOptions(Spec):
    """How the network is fed and run: the ``segpipe segment`` options of the same names."""

    device: str = Field("auto", description="auto, cpu, cuda or cuda:N (on the machine that runs inference)")
    batch_size: int = Field(4, description="Patches per network call")
    precision: Precision = Field("auto", description="fp16 and bf16 on CUDA only")
    patch_size: tuple[int, ...] | None = Field(
        None, description="N, or one N per axis; default from the card"
    )
    overlap: float | None = Field(None, description="In [0, 1); default from the card")
    bands: list[str] | None = Field(None, description="Bands for the card's channels (names or 1-based)")
    max_pixels: int = Field(
        DEFAULT_MAX_PIXELS, description="Refuse inputs that declare more pixels/voxels (0: no limit)"
    )
    copy_input: bool = Field(
        False,
        description="Copy a local raster into the workdir instead of reading it in place "
        "(for regions run on machines that see the workdir but not the input)",
    )

    @field_validator("batch_size")
    @classmethod
    def _batch_size(cls, value: int) -> int:
        if value < 1:
            raise UsageError(f"--batch-size must be >= 1, got {value}")
        return value

    @field_validator("precision", mode="before")
    @classmethod
    def _precision(cls, value: object) -> object:
        if value not in get_args(Precision):
            raise UsageError(f"--precision must be one of {', '.join(get_args(Precision))}, got '{value}'")
        return value

    @field_validator("overlap")
    @classmethod
    def _overlap(cls, value: float | None) -> float | None:
        if value is not None and not 0.0 <= value < 1.0:
            raise UsageError(f"--overlap must be in [0, 1), got {value}")
        return value

    @field_validator("max_pixels")
    @classmethod
    def _max_pixels(cls, value: int) -> int:
        if value < 0:
            raise UsageError(f"--max-pixels must be >= 0 (0 for no limit), got {value}")
        return value


class PolygonSettings(Spec):
    """Which polygons to write: ``--polygon-classes``, ``--min-area``, ``--simplify``."""

    classes: list[str] | None = Field(None, description="Class names or indices; default: all but background")
    min_area_m2: float = Field(0.0, description="Drop polygons under this area (m2)")
    simplify: float = Field(0.0, description="Simplify tolerance (pixels)")

    @model_validator(mode="after")
    def _finite_and_not_negative(self) -> PolygonSettings:
        if not (math.isfinite(self.min_area_m2) and math.isfinite(self.simplify)):
            raise UsageError("--min-area and --simplify must be finite numbers")
        if self.min_area_m2 < 0 or self.simplify < 0:
            raise UsageError("--min-area and --simplify must be >= 0")
        return self


class FloodReference(Spec):
    """What the model's water is compared with: ``--reference-water`` (with ``--reference-threshold``
    for an occurrence raster) or ``--pre-event``; none of them: the card's own classes."""

    reference_water: Path | None = Field(
        None, description="Water mask or occurrence raster, or water polygons, in any CRS"
    )
    reference_threshold: float | None = Field(
        None, description="Occurrence (%) from which the reference raster is water, in (0, 100]"
    )
    pre_event: Path | None = Field(
        None, description="Pre-event scene: its water (same model) is the reference"
    )

    @model_validator(mode="after")
    def _one_reference(self) -> FloodReference:
        if self.reference_water is not None and self.pre_event is not None:
            raise UsageError("--reference-water and --pre-event exclude each other; give one")
        threshold = self.reference_threshold
        if threshold is not None:
            if self.reference_water is None:
                raise UsageError("--reference-threshold needs --reference-water")
            if not (math.isfinite(threshold) and 0 < threshold <= 100):
                raise UsageError(f"--reference-threshold must be in (0, 100], got {threshold}")
        return self

    @property
    def active(self) -> bool:
        return self.reference_water is not None or self.pre_event is not None


class RunSpec(Spec):
    """One run: ``inputs`` segmented with ``model`` into ``outputs``.

    ``workdir`` None: a hidden workdir beside the labels, removed when the run ends.
    """

    inputs: list[Path] = Field(min_length=1)
    model: str = Field(description="Model card path or bundled card name")
    outputs: Outputs
    inference: InferenceOptions = InferenceOptions()
    polygons: PolygonSettings = PolygonSettings()
    reference: FloodReference = FloodReference()
    series: str | None = Field(None, description="DICOM folder: the SeriesInstanceUID to segment")
    workdir: Path | None = Field(None, description="Keep intermediates here (resumable)")
    resume: bool = Field(True, description="Resume a workdir whose fingerprint matches")
    overwrite: bool = Field(False, description="Replace output files that already exist")
    allow_remote: bool = Field(False, description="Let files named inside the input be remote or elsewhere")

    @classmethod
    def of(cls, inputs: list[Path], model: str, labels: Path, **options: Any) -> RunSpec:
        """A spec from flat options: each keyword goes to the part that declares it
        (``device=`` to ``inference``, ``stats=`` to ``outputs``, ``min_area_m2=`` to ``polygons``,
        ``polygon_classes=`` to ``polygons.classes``, ``pre_event=`` to ``reference``)."""
        parts: dict[str, dict[str, Any]] = {
            "outputs": {"labels": labels},
            "inference": {},
            "polygons": {},
            "reference": {},
        }
        top: dict[str, Any] = {}
        for name, value in options.items():
            part = name.removeprefix("polygon_") if name == "polygon_classes" else name
            owner = next((key for key in parts if part in _PARTS[key].model_fields), None)
            if owner is not None and part != "labels":
                parts[owner][part] = value
            elif name in cls.model_fields and name not in parts:
                top[name] = value
            else:
                raise TypeError(f"RunSpec has no option '{name}'")
        return cls(
            inputs=inputs,
            model=model,
            outputs=Outputs(**parts["outputs"]),
            inference=InferenceOptions(**parts["inference"]),
            polygons=PolygonSettings(**parts["polygons"]),
            reference=FloodReference(**parts["reference"]),
            **top,
        )


_PARTS: dict[str, type[Spec]] = {
    "outputs": Outputs,
    "inference": InferenceOptions,
    "polygons": PolygonSettings,
    "reference": FloodReference,
}
