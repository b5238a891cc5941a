"""What flows and their tasks return: plain, JSON-ready records (paths as strings).

They travel between Dask workers and the flow, go into done manifests and the archive
report, and feed the artifacts shown in the UI.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegionRun(_Record):
    """One region of a scene, as run on one worker."""

    rows: tuple[int, int]
    patches: int
    seconds: float
    device: str
    worker: str = Field("", description="Dask worker address ('' when run in the flow's process)")


class Prepared(_Record):
    """A scene ingested into its workdir, and the row ranges its regions cover."""

    workdir: str
    regions: list[tuple[int, int]]
    seconds: float


class SceneResult(_Record):
    """A finished flood-mapping run."""

    name: str
    inputs: list[str]
    model: str
    classes: list[str]
    outputs: dict[str, str]
    statistics: dict[str, Any]
    regions: list[RegionRun]
    timings: dict[str, float]
    gpu_requested: bool
    flow_run_id: str = ""
    fingerprint: dict[str, Any] = Field(
        default_factory=dict, description="Input, model (weights SHA-256), options: decides reuse"
    )
    stamps: dict[str, dict[str, int | str]] = Field(
        default_factory=dict,
        description="Size, mtime, inode of each output file as written, or the ETag of each object "
        "as stored (ownership)",
    )


CaseStatus = Literal["done", "reused", "quarantined", "failed"]
CaseKind = Literal["nifti", "nrrd", "dicom"]


class CaseResult(_Record):
    """One case of a scan archive: its outputs, or why it has none."""

    name: str
    input: str
    kind: CaseKind
    status: CaseStatus
    reason: str = ""
    outputs: dict[str, str] = Field(default_factory=dict)
    volumes_ml: dict[str, float] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)
    device: str = ""
    worker: str = ""
    fingerprint: dict[str, Any] = Field(
        default_factory=dict, description="Input, model (weights SHA-256), options: decides reuse"
    )
    stamps: dict[str, dict[str, int | str]] = Field(
        default_factory=dict,
        description="Size, mtime, inode of each output file as written, or the ETag of each object "
        "as stored (ownership)",
    )


class ArchiveReport(_Record):
    """The record of one scan-archive run, written as JSON under ``output_dir``."""

    archive: str
    model: str
    classes: list[str]
    output_dir: str
    flow_run_id: str
    started: str
    seconds: float
    gpu_requested: bool
    cases: list[CaseResult]
    ignored: list[str] = Field(default_factory=list, description="Archive entries that are not cases")

    def count(self, status: CaseStatus) -> int:
        return sum(case.status == status for case in self.cases)


InboxStatus = Literal["started", "processed", "done", "running", "waiting", "failed"]


class InboxEntry(_Record):
    """What one flood-inbox run did with one scene."""

    name: str
    inputs: list[str]
    status: InboxStatus
    detail: str = ""
    flow_run_id: str = ""
    pre_event: str = Field(
        "", description="With pairing: the pre-event scene's file name, or why there is none"
    )
