"""CampaignStates: state per (tenant, campaign); a record without a tenant names no campaign."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.send.views import CampaignStates

STATES = ("RUNNING", "PAUSED", "STOPPED")


def test_a_stop_of_one_tenant_leaves_the_same_campaign_id_of_another_running():
    c = CampaignStates()
    c.apply({"tenant_id": "A", "campaign_id": "promo", "state": "STOPPED"})
    c.apply({"tenant_id": "B", "campaign_id": "other", "state": "PAUSED"})
    assert c.stopped("A", "promo") and not c.stopped("B", "promo") and c.state("B", "promo") == "RUNNING"
    assert c.paused("B", "other") and not c.paused("A", "other")


def test_a_record_without_tenant_is_ignored():
    c = CampaignStates()
    c.apply({"tenant_id": "", "campaign_id": "promo", "state": "STOPPED"})
    assert not c.stopped("A", "promo") and not c.stopped("", "promo")


controls = st.lists(st.tuples(st.sampled_from(["A", "B", ""]), st.sampled_from(["promo", "x"]), st.sampled_from(STATES)),
                    max_size=20)


@settings(max_examples=300, deadline=None)
@given(controls)
def test_state_is_the_latest_record_of_that_tenant_and_campaign(records):
    c = CampaignStates()
    for tenant, campaign, state in records:
        c.apply({"tenant_id": tenant, "campaign_id": campaign, "state": state})
    for tenant in ("A", "B"):
        for campaign in ("promo", "x"):
            mine = [s for t, k, s in records if t == tenant and k == campaign]
            assert c.state(tenant, campaign) == (mine[-1] if mine else "RUNNING")
