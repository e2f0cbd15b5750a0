"""Physics operators (installed as ``medrecon.operators``).

- :mod:`medrecon.operators.base`: the :class:`LinearOperator` contract and primitives.
- :mod:`medrecon.operators.ct_geometry` and :mod:`medrecon.operators.ct`: CT through ASTRA.
- :mod:`medrecon.operators.finite_difference`: image gradients (TV).
- :mod:`medrecon.operators.registry`: every operator, for the generic property test.
"""



def __getattr__(name: str):
    """``LinearOperator`` on first use, so that geometry-only imports load no torch."""
    if name == "LinearOperator":
        from medrecon.operators.base import LinearOperator

        return LinearOperator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["LinearOperator"]
