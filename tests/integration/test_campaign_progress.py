"""`wapipe campaign progress` reads whole topics through the edge's scan (``wapipe.edge.scan``),
against the real broker: the latest control record of the tenant's campaign wins whatever poison
or other tenants' records lie around it, and a topic that is missing or not read to its end is a
one-line error, never a count made of part of a topic (the copy it replaced stopped silently at
its deadline and counted what it had read)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from typer.testing import CliRunner

from tests.harness import quiet_configure
from processors.send.campaigns import control_key, progress, publish_control
from wapipe import topics as T
from wapipe.app.cli import app
from wapipe.avro import AvroSerde
from wapipe.edge import scan as edge_scan
from wapipe.edge.clients import producer as make_producer
from wapipe.messages.campaign import PAUSED, RUNNING, STOPPED

pytestmark = pytest.mark.integration



@pytest.fixture
def cli(settings, topics, monkeypatch):
    monkeypatch.setattr("wapipe.log.configure", quiet_configure)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", topics)
    monkeypatch.setenv("WAPIPE_STATE_DIR", str(settings.state_dir))
    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["campaign", *args])


def one_line_error(r) -> str:
    assert r.exit_code == 1, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert "Traceback" not in r.output and "queued" not in r.output  # no count of part of a topic
    return lines[0]


def test_progress_prints_the_campaigns_counts(cli, topics, unique):
    tenant, campaign = f"t-{unique}", f"promo-{unique}"
    publish_control(topics, campaign, PAUSED, tenant_id=tenant)
    publish_control(topics, campaign, STOPPED, tenant_id=f"other-{unique}")  # same id, another tenant
    r = cli("progress", campaign, "--tenant", tenant, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == {"tenant_id": tenant, "campaign_id": campaign, "state": PAUSED, "queued": 0,
                                    "sent": 0, "failed": 0, "unknown": 0, "cancelled": 0, "remaining": 0}


def test_a_missing_topic_is_a_one_line_error(cli, unique, monkeypatch):
    missing = f"no-such-results-{unique}"
    monkeypatch.setattr(T, "SEND_RESULTS", missing)  # the last topic progress reads: the others were counted
    line = one_line_error(cli("progress", f"promo-{unique}", "--tenant", f"t-{unique}"))
    assert missing in line and "progress not known" in line


class _NeverEnds:
    """The real consumer, assigned none of the partitions it is given: as a broker whose fetches
    never answer (the scan cannot reach the end it asked for)."""

    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)

    def assign(self, tps):
        self._real.assign([])


def test_a_topic_not_read_to_its_end_in_time_is_a_one_line_error(cli, topics, unique, monkeypatch):
    publish_control(topics, f"promo-{unique}", PAUSED, tenant_id=f"t-{unique}")  # the topic holds records
    real = edge_scan._consumer
    monkeypatch.setattr(edge_scan, "_consumer", lambda b: _NeverEnds(real(b)))
    line = one_line_error(cli("progress", f"promo-{unique}", "--tenant", f"t-{unique}", "--timeout", "1"))
    assert f"{T.CAMPAIGN_CONTROL}: not read to the end within 1s" in line


# Each example writes to the session's broker and reads four topics whole (~3 s in a full suite): ten keep it fast.
CONTROL = st.one_of(
    st.tuples(st.just("ours"), st.sampled_from([RUNNING, PAUSED, STOPPED])),
    st.tuples(st.just("theirs"), st.sampled_from([RUNNING, PAUSED, STOPPED])),
    st.tuples(st.just("poison"), st.binary(max_size=40).map(lambda b: b"\xff" + b)),  # never a Confluent frame
)


@hsettings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(CONTROL, max_size=8))
def test_the_latest_control_record_of_the_tenants_campaign_wins(topics, records):
    import uuid

    run = uuid.uuid4().hex[:10]
    tenant, campaign = f"t-{run}", f"promo-{run}"
    serde = AvroSerde()
    p = make_producer(topics)
    expected = RUNNING
    for kind, what in records:
        if kind == "poison":
            p.produce(T.CAMPAIGN_CONTROL, key=control_key(tenant, campaign), value=what)
            continue
        owner = tenant if kind == "ours" else f"other-{run}"
        publish_control(topics, campaign, what, tenant_id=owner, serde=serde)
        if kind == "ours":
            expected = what
    assert p.flush(10) == 0
    got = progress(topics, campaign, tenant_id=tenant, serde=serde)
    assert (got.state, got.queued, got.remaining) == (expected, 0, 0)
