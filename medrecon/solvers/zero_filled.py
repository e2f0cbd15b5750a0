"""Zero-filled reconstruction: the adjoint of the forward operator applied to the data.

For MRI with an orthonormal Fourier transform and a sampling mask, ``A^H y`` is the
inverse FFT of the k-space with the unsampled locations set to zero (the classical
"zero-filled" image, the baseline of Lustig, Donoho & Pauly, "Sparse MRI", MRM
58:1182-1195, 2007, and of the fastMRI benchmarks). For a multi-coil SENSE operator
``A x = (M F S_c x)_c`` it is ``sum_c conj(S_c) F^H M y_c``, the coil-combined
adjoint image (Roemer's optimal combination when the maps satisfy
``sum_c |S_c|^2 = 1``, as ESPIRiT maps do inside the support). No density
compensation or intensity scaling is applied: those, where wanted, belong to the
operator.

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

from medrecon.solvers.problem import Callback, Problem, Reconstruction


def zero_filled(problem: Problem, *, callback: Callback | None = None) -> Reconstruction:
    """``x = A^H y`` per batch item; not iterative (``iterations = 0``).

    ``residual`` is the relative data residual ``||A x - y|| / ||y||`` of the result,
    shape ``batch``. ``callback`` is accepted for the solver
    contract and never called (there are no iterations).
    """
    image = problem.operator.adjoint(problem.y)
    return Reconstruction(image=image, method="zf", iterations=0,
                          residual=problem.residual(image))
