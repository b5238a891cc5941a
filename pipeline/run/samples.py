"""The sample inputs that ship with segpipe, and the small scan archive the demo derives.

``data/samples/`` sits at the repository root. A source checkout or editable install
finds it there, beside the ``pipeline`` package; a wheel carries it as
``pipeline/samples/`` (pyproject's ``package-dir``). The T1 volume comes from the
``nilearn`` package, which ships the MNI152 template: nothing is downloaded.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from pipeline.errors import NotFoundError

PACKAGE = Path(__file__).resolve().parents[1]  # the pipeline package
FLOOD_SCENE = "Spain_7370579_S1Hand.tif"
MNI_T1 = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"


def samples_dir() -> Path:
    """``data/samples`` of the checkout, or ``pipeline/samples`` of an installed wheel."""
    for folder in (PACKAGE.parent / "data" / "samples", PACKAGE / "samples"):
        if (folder / FLOOD_SCENE).is_file():
            return folder
    raise NotFoundError(
        f"segpipe's sample data not found in {PACKAGE.parent / 'data' / 'samples'} or "
        f"{PACKAGE / 'samples'}; reinstall segpipe from a full checkout"
    )


def flood_scene() -> Path:
    """The shipped Sentinel-1 flood chip (VV, VH in dB; see ``data/samples/SOURCES.md``)."""
    return samples_dir() / FLOOD_SCENE


def mni_t1() -> Path:
    """The MNI152 T1 template inside the installed ``nilearn`` package."""
    try:
        path = Path(str(resources.files("nilearn") / "datasets" / "data" / MNI_T1))
    except ModuleNotFoundError:
        raise NotFoundError(
            "the MNI152 T1 ships with nilearn, which is not installed: pip install nilearn"
        ) from None
    if not path.is_file():
        raise NotFoundError(f"the MNI152 T1 is missing from the installed nilearn: {path}")
    return path


def make_scan_archive(folder: Path) -> dict[str, str]:
    """Write the demo's archive of real T1 cases into ``folder``; what each case shows.

    ``t1`` the template as given (RAS, 1 mm); ``t1-lps`` the same voxels stored in LPS
    order (the flow reorients it, and the mask comes back in LPS); ``t1-1p5mm``
    resampled to 1.5 mm voxels (the mask is written back on that grid); ``broken`` the
    first 64 KiB of the file (quarantined with its reason).
    """
    import nibabel as nib
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform
    from nibabel.processing import resample_to_output

    folder.mkdir(parents=True, exist_ok=True)
    source = mni_t1()
    image = nib.Nifti1Image.from_filename(source)
    shutil.copyfile(source, folder / "t1.nii.gz")
    to_lps = ornt_transform(io_orientation(image.affine), axcodes2ornt("LPS"))  # type: ignore[no-untyped-call]
    nib.save(image.as_reoriented(to_lps), folder / "t1-lps.nii.gz")  # type: ignore[no-untyped-call]
    coarse = resample_to_output(image, voxel_sizes=(1.5, 1.5, 1.5), order=1)  # type: ignore[no-untyped-call]
    resampled = nib.Nifti1Image(coarse.get_fdata().astype("float32"), coarse.affine)  # type: ignore[no-untyped-call]
    nib.save(resampled, folder / "t1-1p5mm.nii.gz")
    (folder / "broken.nii.gz").write_bytes(source.read_bytes()[: 64 * 1024])
    return {
        "t1": "the T1 as given (RAS, 1 mm)",
        "t1-lps": "the same volume stored in LPS orientation",
        "t1-1p5mm": "resampled to 1.5 mm voxels",
        "broken": "a truncated file: quarantined with its reason",
    }
