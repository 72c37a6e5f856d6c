"""apex_faults: the fault matrix command (``apex-faults``, ``python -m apex_faults``).

Runs the Robot suites against the built-in mock once per fault mode (and once with none, and
once through the fault proxy with none) and writes a matrix of which scenario failed under
which fault, judged against the catalogue (:mod:`apex_faults.catalogue`), the specification
of what each fault must break.
"""

from .cli import main

__all__ = ["main"]
