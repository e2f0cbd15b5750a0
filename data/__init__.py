"""Loaders, writers and phantoms (installed as ``medrecon.data``).

- :mod:`medrecon.data.dicom`: DICOM series in, derived DICOM series out.
- :mod:`medrecon.data.nifti`: NIfTI with the DICOM LPS to NIfTI RAS affine.
- :mod:`medrecon.data.sinogram`: sinograms (HDF5 layout with geometry, NPY, TIFF).
- :mod:`medrecon.data.phantom`: deterministic CT-like phantoms.
- :mod:`medrecon.data.samples`: small bundled samples.
"""
