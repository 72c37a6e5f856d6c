"""Wire-protocol dialects: ``apex`` (the default), ``netra`` (the real platform), or your own.

``load_dialect("netra", auth_in="subprotocol")`` returns a configured :class:`Dialect`;
``load_dialect("mycompany.apex_dialect:Dialect")`` imports a class written outside the project
(see ``docs/dialects.md`` and the template ``docs/dialect_template.py``). A misspelt name or a
class that does not load raises :class:`DialectError` naming it.
"""

from __future__ import annotations

import difflib
import importlib

from .apex import ApexDialect
from .base import (
    FINAL_OUTCOMES,
    OPERATIONS,
    Codec,
    ConnectArgs,
    Dialect,
    DialectError,
    OperationUnsupported,
    SessionOpenError,
)

__all__ = [
    "BUILT_IN",
    "FINAL_OUTCOMES",
    "OPERATIONS",
    "ApexDialect",
    "Codec",
    "ConnectArgs",
    "Dialect",
    "DialectError",
    "OperationUnsupported",
    "SessionOpenError",
    "load_dialect",
]


def _netra() -> type[Dialect]:
    from .netra import NetraDialect

    return NetraDialect


#: The dialects that ship, by name (loaded lazily).
BUILT_IN = {"apex": lambda: ApexDialect, "netra": _netra}


def dialect_class(spec: str) -> type[Dialect]:
    """The Dialect class named by ``spec``: a built-in name or ``module:ClassName``."""
    name = (spec or "apex").strip()
    if name.lower() in BUILT_IN:
        return BUILT_IN[name.lower()]()
    if ":" not in name:
        close = difflib.get_close_matches(name.lower(), BUILT_IN, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise DialectError(
            f"Unknown dialect '{name}' (APEX_DIALECT).{hint} Use one of: {', '.join(BUILT_IN)}, "
            "or 'package.module:ClassName' for your own."
        )
    module_name, _, class_name = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 - any import failure is the user's to see
        raise DialectError(
            f"Dialect '{name}' (APEX_DIALECT) does not load: importing '{module_name}' failed: "
            f"{type(error).__name__}: {error}. Is its directory on the Python path (robot --pythonpath)?"
        ) from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise DialectError(f"Dialect '{name}' (APEX_DIALECT) does not load: '{module_name}' has no '{class_name}'.")
    if not (isinstance(cls, type) and issubclass(cls, Dialect)):
        raise DialectError(
            f"Dialect '{name}' (APEX_DIALECT) is not a dialect: '{class_name}' must subclass "
            "MessagingLibrary.dialects.Dialect."
        )
    return cls


def load_dialect(spec: str | None = None, auth_in: str | None = None) -> Dialect:
    """A configured dialect: ``spec`` as for :func:`dialect_class`, ``auth_in`` its token placement."""
    cls = dialect_class(spec or "apex")
    try:
        return cls(auth_in=auth_in or None)
    except DialectError:
        raise
    except Exception as error:  # noqa: BLE001
        raise DialectError(f"Dialect '{spec}' (APEX_DIALECT) failed to start: {type(error).__name__}: {error}") from None
