"""Test doubles and helpers shared by the unit tests (importable because tests/unit is on sys.path)."""


class FakeClock:
    """A monotonic clock in seconds that moves only when told to."""

    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class Keywords:
    """Calls a library's keywords by their Python names, as Robot would after argument conversion."""

    def __init__(self, library) -> None:
        self.library = library

    def __getattr__(self, name):
        def call(*args, **kwargs):
            return self.library.run_keyword(name, list(args), kwargs)

        return call
