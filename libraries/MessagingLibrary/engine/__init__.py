"""The library's engine: asyncio loop thread, sessions, History, checkers, measurements.

Nothing in this package imports Robot Framework: it is plain Python, unit-tested with pytest,
and it never logs to Robot (background threads must not; see DESIGN.md).
"""
