"""Zero-filled reconstruction: the adjoint of the forward operator applied to the data.

For MRI with an orthonormal Fourier transform and a sampling mask, ``A^H y`` is the
inverse FFT of the k-space with the unsampled locations set to zero (the classical
"zero-filled" image, the baseline of Lustig, Donoho & Pauly, "Sparse MRI", MRM
58:1182-1195, 2007, and of the fastMRI benchmarks). For a multi-coil SENSE operator
``A x = (M F S_c x)_c`` it is ``sum_c conj(S_c) F^H M y_c``, the coil-combined
adjoint image (Roemer's optimal combination when the maps satisfy
``sum_c |S_c|^2 = 1``, as ESPIRiT maps do inside the support). Maps of another root sum
of squares (those of prewhitened data, :func:`medrecon.studies.mri.whitened_maps`, are
``Psi^{-1/2} S``) would weight the image by ``sum_c |S_c|^2``; the combination is
therefore divided by it, ``sum_c conj(S_c) z_c / sum_c |S_c|^2`` (Roemer et al., "The
NMR phased array", MRM 16:192-225, 1990, with its intensity normalisation; for whitened
maps the SNR-optimal ``S^H Psi^{-1} z / S^H Psi^{-1} S``), which changes nothing for
maps of root sum of squares 1.

Non-Cartesian data sample k-space unevenly (radial and spiral trajectories crowd the
centre), and the bare adjoint ``F^H y`` then weights each region of k-space by its
sampling density: a blurred image of the wrong scale. With density compensation
weights ``w`` (one per sample, scaled as ``1 / density`` in samples per cycle^2, as
:func:`medrecon.operators.nufft.pipe_menon_density` gives them) the zero-filled image
is ``A^H (w y)``, the gridding reconstruction of Jackson et al. ("Selection of a
convolution function for Fourier inversion using gridding", IEEE TMI 10:473-478, 1991)
and Pipe & Menon (MRM 41:179-186, 1999): ``F^H W F`` approximates the identity on the
sampled disc, so the image keeps the object's scale. The weights broadcast against
``y`` along its last (sample) axis.

Example:
    >>> import torch
    >>> from medrecon.operators.base import Multiply
    >>> from medrecon.solvers.problem import Problem
    >>> from medrecon.solvers.zero_filled import zero_filled
    >>> mask = torch.tensor([1.0, 0.0, 1.0])
    >>> zero_filled(Problem(Multiply((3,), mask), torch.tensor([2.0, 0.0, 3.0]))).image
    tensor([2., 0., 3.])
"""

from __future__ import annotations

import torch

from medrecon.solvers.problem import Callback, Problem, Reconstruction


def zero_filled(problem: Problem, *, density: torch.Tensor | None = None,
                callback: Callback | None = None) -> Reconstruction:
    """``x = A^H y`` (or ``A^H (w y)`` with density weights ``density = w``, shape ``(K,)``
    for ``K`` samples per coil) per batch item, divided by ``sum_c |S_c|^2`` for an
    operator with coil maps ``S`` (module docstring); not iterative (``iterations = 0``).

    ``residual`` is the relative data residual ``||A x - y|| / ||y||`` of the result,
    shape ``batch``. ``callback`` is accepted for the solver contract and never called
    (there are no iterations).
    """
    y = problem.y
    if density is not None:
        if density.ndim != 1 or density.shape[0] != y.shape[-1]:
            raise ValueError(f"zero_filled: density must have shape ({y.shape[-1]},), got "
                             f"{tuple(density.shape)}")
        y = y * density.to(device=y.device, dtype=y.real.dtype)
    image = problem.operator.adjoint(y)
    maps = getattr(problem.operator, "maps", None)
    if isinstance(maps, torch.Tensor) and maps.ndim == 3:  # SENSE: normalised combination
        weight = maps.abs().pow(2).sum(0).to(device=image.device, dtype=image.real.dtype)
        image = torch.where(weight > 0, image / weight.clamp_min(1e-30), image)
    return Reconstruction(image=image, method="zf", iterations=0,
                          residual=problem.residual(image))
