"""Reconstruction methods, each a plain function over a :class:`Problem`.

One module per method family: :mod:`~medrecon.solvers.classical` (``fbp``, ``cgls``,
``sirt``, ``tv``), :mod:`~medrecon.solvers.zero_filled`, :mod:`~medrecon.solvers.cgsense`,
:mod:`~medrecon.solvers.l1wavelet`, :mod:`~medrecon.solvers.dps`,
:mod:`~medrecon.solvers.dds`, :mod:`~medrecon.solvers.rmpvi`. Call them directly; the
application finds them by name only through the method records of
:mod:`medrecon.methods`, which also time them.
"""

from medrecon.solvers.problem import Callback, Problem, Reconstruction

__all__ = ["Callback", "Problem", "Reconstruction"]
