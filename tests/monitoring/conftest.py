"""Fixtures shared by the monitoring tests (helpers live in monitoring_fixtures.py)."""

import pytest
from monitoring_fixtures import Receiver

from core.params import load_params


@pytest.fixture
def params():
    return load_params(
        overrides={
            "gate": {"sample_rows": 300, "dcr_rows": 200},
            "monitoring": {"drift": {"min_requests": 5, "embedding_rows": 100}},
        }
    )


@pytest.fixture
def receiver():
    r = Receiver(fail_first=1)
    yield r
    r.close()
