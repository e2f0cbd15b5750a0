"""Limits of the coil calibration region of Cartesian MRI (torch-free, so that the
command line and the protocol schema can state them without loading torch).

fastMRI's narrowest setting, R = 8 with a 4 % centre, gives 10 fully sampled centre
lines at width 256 and 15 at width 368.
"""

MIN_CALIBRATION = 4
"""The narrowest calibration region (fully sampled centre lines) of a Cartesian file,
of ``recon mri --calibration`` and of the protocol's ``acquisition.calibration``: one
limit."""

MIN_ESPIRIT_CALIBRATION = 6
"""The narrowest region ESPIRiT calibrates on (with the 3 x 3 to 5 x 5 kernel that
:func:`medrecon.operators.coils.espirit_kernel_width` picks there). Narrower regions fall
back to low-resolution maps (:func:`medrecon.operators.coils.lowres_maps`)."""
