"""apex_faults: the fault matrix command (``apex-faults``, ``python -m apex_faults``).

Runs the Robot suites against the built-in mock once per fault mode (and once with none, and
once through the fault proxy with none) and writes a matrix of which scenario failed under
which fault, judged against the catalogue (:mod:`apex_faults.catalogue`), the specification
of what each fault must break. While it runs it prints a line per run start (with the time
elapsed and an estimate of the time left) and end; its reports (:mod:`apex_faults.report`) say
each cell in words on a background colour, never in emoji.
"""

from .cli import main

__all__ = ["main"]
