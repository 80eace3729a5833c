"""What the demo sends: its tenants, the workload's sizes, and what the report must add up to."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

APP_ID = "424242424242"
INVALID_KINDS = ("unknown template", "wrong parameter count", "number of another tenant", "unknown tenant",
                 "expired (valid_until passed)", "session message outside the 24 h window")
UNKNOWN_TENANT = "demo-nobody"


class DemoError(RuntimeError):
    """The demo cannot go on (the reason is for people)."""


@dataclass(frozen=True)
class DemoTenant:
    tenant_id: str
    display_name: str
    business_id: str
    waba_id: str
    phone_number_id: str
    display_phone_number: str
    throughput: int
    token: str
    index: int

    def recipient(self, i: int) -> str:
        """A stable WhatsApp id per (tenant, i): re-runs reach the same customers (their keys exist)."""
        return f"49{self.index + 1:02d}{i:08d}"


@dataclass(frozen=True)
class DemoPlan:
    messages: int = 20_000  # bulk campaign, split equally over the tenants (campaign_split)
    transactional: int = 300
    invalid: int = 30
    failing: int = 20
    duplicates: int = 20
    unreadable: int = 3
    throughputs: tuple[int, ...] = (80, 250, 1000)
    timeout_s: float = 900.0
    stall_s: float = 180.0  # fail when no command gets its final result for this long
    read_ratio: float = 0.7
    partitions: int = 4  # of the keyed topics: the numbers are spread over them (number_ids)

    def tenants(self) -> list[DemoTenant]:
        names = ["acme", "globex", "initech", "umbrella", "hooli", "stark"]
        out = []
        ids = number_ids(len(self.throughputs), self.partitions)
        for i, mps in enumerate(self.throughputs):
            name = names[i] if i < len(names) else f"tenant{i}"
            out.append(DemoTenant(
                tenant_id=f"demo-{name}", display_name=name.capitalize(), business_id=f"77{i + 1:04d}",
                waba_id=f"88{i + 1:04d}", phone_number_id=ids[i], display_phone_number=f"1555010{i:04d}",
                throughput=mps, token=f"demo-token-{name}", index=i))
        return out

    def campaign_split(self) -> list[int]:
        """Campaign sizes per tenant, in ``tenants()`` order: equal, the rest to the last."""
        n = len(self.throughputs)
        sizes = [self.messages // n] * n
        sizes[-1] += self.messages - sum(sizes)
        return sizes


def number_ids(n: int, partitions: int) -> list[str]:
    """``n`` phone number ids on as many different partitions as there are (Kafka's partitioner),
    as the numbers of different businesses mostly are. Numbers sharing a partition share one
    ordered log: the fast number's commands are read only as fast as the slow one's are read
    past (docs/send-pipeline.md, "Numbers sharing a partition")."""
    from wapipe.edge.clients import partition_for

    ids: list[str] = []
    taken: set[int] = set()
    for i in range(n):
        base = f"99{i + 1:04d}"
        if len(taken) >= partitions:
            taken.clear()  # more numbers than partitions: spread them evenly again
        pick = next(c for c in (base, *(f"{base}{k}" for k in range(1, 1000)))
                    if partition_for(c, partitions) not in taken)
        taken.add(partition_for(pick, partitions))
        ids.append(pick)
    return ids


@dataclass
class Expected:
    """What this run published, by kind: the numbers the report must add up to."""

    invalid: Counter = field(default_factory=Counter)  # reason -> commands
    duplicates: int = 0
    unreadable: int = 0
