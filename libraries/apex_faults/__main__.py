"""``python -m apex_faults``: the same as the ``apex-faults`` command."""

from .cli import main

raise SystemExit(main())
