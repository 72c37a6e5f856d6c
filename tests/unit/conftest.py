"""Fixtures of the unit tests that call MessagingLibrary's keywords against a real apex-mock process."""

from datetime import timedelta

import pytest
from fakes import Keywords
from MessagingLibrary import MessagingLibrary
from MessagingLibrary.engine.mock_process import start_mock
from robot.api.types import Secret


@pytest.fixture(scope="module")
def mock(request, tmp_path_factory):
    """An apex-mock process, one per test module: with its defaults, or started with the module's
    ``MOCK_ARGS`` (``fakes.INSTANT``: one that answers at once)."""
    extra = getattr(request.module, "MOCK_ARGS", ())
    process = start_mock(log_file=tmp_path_factory.mktemp("mock") / "mock.log", extra_args=extra, timeout=15)
    yield process
    process.stop()


@pytest.fixture
def lib(mock):
    """A fresh library targeting ``mock``, its keywords callable by Python name; closed afterwards."""
    library = MessagingLibrary(timeout=timedelta(seconds=5))
    kw = Keywords(library)
    kw.configure_target(mock.url, Secret("unit"), admin_token=Secret("admin-unit"))
    yield kw
    library._close()
