"""Writing reconstructions: the output path's suffix picks the format.

=================  ===========================================================
``.nii[.gz]``      NIfTI, with the RAS affine of the volume's geometry
``.h5/.hdf5``      HDF5: ``/reconstruction`` (slices, rows, cols) float32, optional
                   ``/reference``; attributes ``units``, ``spacing``, ``origin``,
                   ``orientation``, ``method`` and ``metrics`` (JSON)
``.png``           a figure of the middle slice (with reference and error map)
no suffix          a DICOM series folder (derived from the source series if any);
                   float maps (``parametric=True``: standard deviation) as one
                   Parametric Map instance (:mod:`medrecon.data.dicom_pmap`)
=================  ===========================================================

The identity of a DICOM output (PS3.3 C.7.1.1 Patient, C.7.2.1 General Study, C.7.4.1
Frame of Reference): a volume read from DICOM, or reconstructed from a file that
``medrecon simulate`` made from DICOM (with ``/dicom_source``,
:mod:`medrecon.data.dicom_source`, applied by the study), keeps its source's patient,
study, frame of reference and geometry. Otherwise :func:`study_identity` makes the study identity
from the input file (its SHA-256, unless the site names the study), so that every
re-run and every output of one study are one DICOM study.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from medrecon.data.atomic import check_output_path
from medrecon.data.dicom import StudyIdentity, write_dicom_series
from medrecon.data.dicom_pmap import write_parametric_map
from medrecon.data.digest import file_sha256
from medrecon.data.kspace_write import write_fastmri_reconstruction
from medrecon.data.nifti import write_nifti
from medrecon.data.volume import Volume
from medrecon.errors import InputError
from medrecon.figures import comparison_panels, save_figure

FORMATS = {".nii": "nifti", ".gz": "nifti", ".h5": "hdf5", ".hdf5": "hdf5", ".png": "png",
           "": "dicom"}


def output_format(path: str | os.PathLike[str]) -> str:
    """``"nifti"``, ``"hdf5"``, ``"png"`` or ``"dicom"`` from the path; checks the folder exists."""
    path = check_output_path(path)
    suffix = path.suffix.lower()
    if suffix == ".gz" and not path.name.lower().endswith(".nii.gz"):
        suffix = ".unknown"
    if suffix not in FORMATS:
        raise InputError(path, "output", f"unknown output format {suffix!r}: use .nii, .nii.gz, "
                         ".h5, .png, or a folder name (no suffix) for a DICOM series")
    kind = FORMATS[suffix]
    if kind != "dicom" and path.is_dir():
        raise InputError(path, "output", "is a folder, expected a file name")
    if kind == "dicom" and path.exists() and not path.is_dir():
        raise InputError(path, "output", "is a file; a DICOM series is written to a folder")
    return kind


def study_identity(input_file: str | os.PathLike[str] | None, *, study: str = "",
                   patient_id: str = "", patient_name: str = "",
                   name: str | None = None) -> StudyIdentity:
    """The DICOM study identity of the outputs of ``input_file``.

    ``study`` is the study key as a template: ``{sha256}`` is the input file's SHA-256
    and ``{study}`` the study's ``name`` (default: the file's stem); empty means
    ``{sha256}``, so the same file always gives the same Study and Frame of Reference
    UIDs and a different file a different study. ``patient_id`` and ``patient_name``
    are written as given (``{study}`` too); an empty Patient ID is pseudonymous
    (:class:`~medrecon.data.dicom.StudyIdentity`). Without an input file (and without
    ``study``) the identity is random: a new study.

    >>> study_identity(None, study="site-7/case-12").key
    'site-7/case-12'
    """
    path = None if input_file is None else Path(input_file)
    name = name if name is not None else (path.name.split(".")[0] if path else "")
    template = study or "{sha256}"
    if path is None and "{sha256}" in template:
        from pydicom.uid import generate_uid

        return StudyIdentity(str(generate_uid()), patient_id, patient_name)
    fields = {"study": name}
    if "{sha256}" in template + patient_id + patient_name:
        fields["sha256"] = file_sha256(path) if path is not None else ""
    try:
        return StudyIdentity(template.format(**fields), patient_id.format(**fields),
                             patient_name.format(**fields))
    except (KeyError, ValueError, IndexError) as exc:
        raise InputError(None, "dicom", f"bad template in study={template!r}, patient_id="
                         f"{patient_id!r} or patient_name={patient_name!r} ({exc}); "
                         "fields: {study}, {sha256}") from None


def write_reconstruction(volume: Volume, path: str | os.PathLike[str], *, method: str,
                         reference: np.ndarray | None = None,
                         metrics: dict[str, float] | None = None,
                         input_file: str | os.PathLike[str] | None = None,
                         identity: StudyIdentity | None = None,
                         parametric: bool = False) -> Path:
    """Write ``volume`` to ``path`` in the format its suffix names (see module docstring).

    A volume with a DICOM source (``volume.source``: read from DICOM, or given a
    measurement file's source by :meth:`DicomSource.apply
    <medrecon.data.dicom_source.DicomSource.apply>`, as :func:`medrecon.run.reconstruct_study`
    does) is written into the source's study. ``identity``: the DICOM study of a volume
    without one (default :func:`study_identity` of ``input_file``, the measurement file
    it was reconstructed from).
    ``parametric``: a float map (standard deviation), written to DICOM as a Parametric
    Map instead of an image series."""
    path = Path(path)
    kind = output_format(path)
    metrics = metrics or {}
    if kind == "nifti":
        write_nifti(volume, path)
    elif kind == "dicom":
        if identity is None and volume.source is None:
            identity = study_identity(input_file)
        if parametric:
            write_parametric_map(volume, path, series_description=f"medrecon {method}",
                                 identity=identity)
        else:
            write_dicom_series(volume, path, series_description=f"medrecon {method}",
                               identity=identity)
    elif kind == "png":
        middle = volume.array.shape[0] // 2
        ref = None if reference is None else np.asarray(reference).reshape(volume.array.shape)[
            middle]
        text = ", ".join(f"{k} {v:.3g}" for k, v in metrics.items())
        save_figure(path, comparison_panels(volume.array[middle], method, volume.units, ref),
                    suptitle=text)
    else:
        write_fastmri_reconstruction(
            path, volume.array, reference=reference,
            attrs={"units": volume.units, "spacing": volume.spacing, "origin": volume.origin,
                   "orientation": volume.orientation, "method": method,
                   "metrics": json.dumps(metrics)})
    return path
