"""Test doubles shared by the unit tests (importable because tests/unit is on sys.path)."""


class FakeClock:
    """A monotonic clock in seconds that moves only when told to."""

    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds
