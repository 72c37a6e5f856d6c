"""The library's version (one place: the package, the libdoc and the run metadata read it)."""

__version__ = "0.1.0"
