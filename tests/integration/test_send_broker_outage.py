"""The broker stops for 15 s in the middle of a campaign while the worker keeps running,
then comes back on the same ports and data folder (as an operator's broker restarts): every
command gets a final result, none is sent twice, and a command whose outcome could not be known
is UNKNOWN, never resent.

Runs the send-pipeline world (tests/integration/test_send_pipeline.py) on a DEDICATED broker, so
stopping it leaves the session's broker alone.
"""

from __future__ import annotations

import time

import pytest

from tests.integration.test_send_pipeline import SendWorld, send_world  # noqa: F401 - the fixture
from tests.harness import dedicated_broker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N = 300
OUTAGE_S = 15  # longer than the worker's consumer session timeout (10 s)


@pytest.fixture
def own_broker(tmp_path):
    with dedicated_broker(tmp_path / "broker") as provider:
        yield provider


@pytest.fixture
def kafka(own_broker) -> str:
    """send_world's broker: this module's own (it overrides the session's)."""
    return own_broker.bootstrap


@pytest.fixture
def topics(kafka) -> str:
    return kafka  # applied by dedicated_broker


@pytest.mark.send_world(rates=[(100, 100)])
def test_broker_outage_mid_campaign_loses_nothing_and_sends_nothing_twice(send_world: SendWorld, own_broker):
    w = send_world
    w.start_worker()
    keys = w.campaign_under_way("outage", N, accepted=N // 4)
    own_broker._jvm.stop()  # the worker keeps running; ports and data folder are kept
    at_stop = w.accepted()
    time.sleep(OUTAGE_S)
    own_broker._jvm.start(timeout=60)
    assert w.worker.proc.poll() is None, "the worker exited while the broker was away"

    _, _, outcomes = w.settled_at_most_once(keys, timeout=120)
    assert at_stop < N
    print(f"\nbroker stopped after {at_stop} accepted; outcomes {dict(outcomes)}")
