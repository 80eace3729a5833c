"""The demo's numbers fall on different partitions of the keyed topics (Kafka's partitioner), so
one number's campaign is not read only as fast as another's on the same log."""

from hypothesis import given, strategies as st

from wapipe.app.demo.plan import DemoPlan, number_ids
from wapipe.edge.clients import partition_for


@given(n=st.integers(1, 12), partitions=st.integers(1, 12))
def test_numbers_are_spread_over_the_partitions(n, partitions):
    ids = number_ids(n, partitions)
    assert len(set(ids)) == n
    used = [partition_for(i, partitions) for i in ids]
    # Each partition holds at most ceil(n / partitions) of them (an even spread).
    assert max(used.count(p) for p in set(used)) <= -(-n // partitions)


def test_the_default_plan_puts_its_three_numbers_on_three_partitions():
    ids = [t.phone_number_id for t in DemoPlan(partitions=4).tenants()]
    assert len({partition_for(i, 4) for i in ids}) == 3
    assert ids[0] == "990001"  # the first keeps the id earlier runs used
