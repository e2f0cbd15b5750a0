"""medrecon: medical image reconstruction with physics operators and diffusion priors.

Sub-packages: ``medrecon.operators`` (linear physics operators), ``medrecon.data``
(loaders, writers, phantoms), ``medrecon.solvers`` (reconstruction methods) and
``medrecon.metrics``. The command line is ``medrecon`` (:mod:`medrecon.cli`).
"""

from medrecon.errors import InputError, MedreconError

__version__ = "0.1.0"
__all__ = ["InputError", "MedreconError", "__version__"]
