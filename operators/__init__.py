"""Physics operators (installed as ``medrecon.operators``).

- :mod:`medrecon.operators.base`: the :class:`LinearOperator` contract and primitives.
- :mod:`medrecon.operators.ct_geometry` and :mod:`medrecon.operators.ct`: CT through ASTRA.
- :mod:`medrecon.operators.finite_difference`: image gradients (TV).
- :mod:`medrecon.operators.registry`: every operator, for the generic property test.
"""

from medrecon.operators.base import LinearOperator

__all__ = ["LinearOperator"]
