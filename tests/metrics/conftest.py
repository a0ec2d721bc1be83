import pytest


@pytest.fixture(autouse=True)
def _reporting_zone(settings):
    """The KPI tests work boundaries out by hand in Europe/Berlin."""
    settings.TIME_ZONE = "Europe/Berlin"
