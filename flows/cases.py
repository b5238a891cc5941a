"""Cases of a scan archive: each NIfTI/NRRD file and each folder (a DICOM series) at its top level.

Names come from the entry's name without its suffix, made safe (``flows.names``) and
unique, so outputs of ``../x``-like or clashing names stay inside the output folder and
apart. Hidden entries and the output folder itself (when it lies inside the archive)
are not cases; other files are listed as ignored. A link whose target leaves the
archive is skipped with a warning (and listed as ignored) unless ``follow_symlinks``:
whoever can write into the archive must not make segpipe read from elsewhere. With a
pseudonym key, names are keyed hashes (``flows.pseudonyms``) and the input is recorded
as a keyed hash of its path, so results, manifests and reports hold no folder or file
name. A case's outputs are named after it under the output folder, and so is its workdir
(``flows.layout``), except a pseudonymised case's with outputs in a bucket (``case_workdir``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import BaseModel, ConfigDict, model_validator

from flows import layout
from flows.names import sanitise, strip_suffix, unique
from flows.pseudonyms import digest, private_workdir, pseudonym
from flows.results import CaseKind
from pipeline.errors import InputError, NotFoundError
from pipeline.run.spec import InferenceOptions, Outputs, RunSpec
from pipeline.sources.nifti import is_nifti
from pipeline.sources.nrrd import is_nrrd
from pipeline.sources.references import inside
from pipeline.storage import is_url

log = logging.getLogger(__name__)


class Case(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    path: str
    kind: CaseKind
    input: str = ""
    """How results record the input: ``path``, or a keyed hash of it when pseudonymised."""
    pseudonymised: bool = False

    @model_validator(mode="after")
    def _recorded_input(self) -> Case:
        if not self.input:
            object.__setattr__(self, "input", self.path)
        return self


def _kind(entry: Path) -> CaseKind | None:
    if entry.is_dir():
        return "dicom"
    if is_nifti(entry):
        return "nifti"
    if is_nrrd(entry):
        return "nrrd"
    return None


def find_cases(
    archive: Path, exclude: Path | None = None, key: bytes | None = None, follow_symlinks: bool = False
) -> tuple[list[Case], list[str]]:
    """The archive's cases in name order, and the names of the entries that are not cases."""
    if not archive.exists():
        raise NotFoundError(f"{archive}: archive folder not found")
    if not archive.is_dir():
        raise InputError(f"{archive}: not a folder; pass the folder that holds the cases")
    skip = exclude.resolve() if exclude is not None else None
    entries: list[tuple[Path, CaseKind]] = []
    ignored: list[str] = []
    for entry in sorted(archive.iterdir()):
        if entry.name.startswith(".") or (skip is not None and entry.resolve() == skip):
            continue
        if not follow_symlinks and not inside(entry, [archive]):
            label = entry.name if key is None else pseudonym(key, entry.name, "other")
            log.warning("%s: skipped, a link that leaves the archive (follow_symlinks takes it)", label)
            ignored.append(entry.name)
            continue
        kind = _kind(entry)
        if kind is None:
            ignored.append(entry.name)
        else:
            entries.append((entry, kind))
    if key is None:
        names = unique(sanitise(strip_suffix(entry.name), "case") for entry, _ in entries)
        cases = [
            Case(name=name, path=str(entry.absolute()), kind=kind)
            for name, (entry, kind) in zip(names, entries, strict=True)
        ]
        return cases, ignored
    names = unique(pseudonym(key, entry.relative_to(archive).as_posix()) for entry, _ in entries)
    cases = [
        Case(
            name=name,
            path=str(entry.absolute()),
            kind=kind,
            input=f"hmac-sha256:{digest(key, str(entry.absolute()))}",
            pseudonymised=True,
        )
        for name, (entry, kind) in zip(names, entries, strict=True)
    ]
    return cases, ignored


def case_outputs(output_dir: Path, case: Case) -> dict[str, Path]:
    """``NAME.nii.gz`` and ``NAME.stats.json`` for every case, ``NAME.seg.dcm`` for DICOM cases."""
    outputs = {
        "mask": layout.output(output_dir, case.name, ".nii.gz"),
        "stats": layout.output(output_dir, case.name, ".stats.json"),
    }
    if case.kind == "dicom":
        outputs["seg"] = layout.output(output_dir, case.name, ".seg.dcm")
    return outputs


def case_workdir(output_dir: Path, case: Case) -> Path:
    """The case's workdir, under ``output_dir`` (in its bucket too); a pseudonymised case's with
    outputs in a bucket stays on this machine, since a workdir records the input's paths."""
    if case.pseudonymised and is_url(output_dir):
        return private_workdir(output_dir, case.name)
    return layout.workdir(output_dir, case.name)


def case_spec(output_dir: Path, case: Case, model: str, inference: InferenceOptions) -> RunSpec:
    """The run spec of a case's mask and statistics (also what decides reuse), in a workdir that
    survives a failure, so that a retry resumes."""
    outputs = case_outputs(output_dir, case)
    return RunSpec(
        inputs=[Path(case.path)],
        model=model,
        outputs=Outputs(labels=outputs["mask"], stats=outputs["stats"]),
        inference=inference,
        workdir=case_workdir(output_dir, case),
        overwrite=True,  # the flow has checked which existing outputs it may replace
    )
