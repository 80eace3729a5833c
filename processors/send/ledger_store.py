"""The send worker's local copy of ``wa.send.ledger``: RocksDB under the state dir.

The ledger topic is the truth; this store is what this worker has read of it (and written to it),
so that a restart or a re-assignment reads only the records newer than what it already holds,
instead of the whole topic (which grows with every message of the dedup window).

Layout (raw bytes keys, one database per worker):

* ``e/<key>``                 → header (partition, offset, tier time, unknown flag) + the entry's
  Avro bytes as written on the topic;
* ``o/<partition>``           → the *frontier*: every record of that partition below it is applied
  here (it only moves over offsets that were applied, never ahead of them);
* ``t/<partition>/<at_ms>/<key>`` → ``tenant NUL subject`` of an accepted template send (the
  messaging tier counts them for 24 h), in time order, so a load finds the last day's without
  reading (or decoding) the rest;
* ``u/<partition>/<key>``     → an entry whose outcome is UNKNOWN (the reconciler's work);

  both indexes are checked against the entry's header when read (at a load): the worker's own
  writes do not read the entry they replace, so an index entry its earlier value left behind
  stays until then;
* ``m/topic_id``              → the ledger topic's id: a store written against another topic
  (a new broker, a topic deleted and re-created) is emptied before use.

Entries expire by RocksDB's TTL (the dedup window plus a day, like the topic's retention).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rocksdict import AccessType, Options, Rdict, WriteBatch

_HEADER = struct.Struct(">HqqB")  # partition, offset (-1: unknown), tier time ms (-1: none), unknown flag
_TOPIC_ID = b"m/topic_id"


def _entry_key(key: str) -> bytes:
    return b"e/" + key.encode()


def _frontier_key(partition: int) -> bytes:
    return b"o/%05d" % partition


def _tier_prefix(partition: int) -> bytes:
    return b"t/%05d/" % partition


def _tier_key(partition: int, at_ms: int, key: str) -> bytes:
    return _tier_prefix(partition) + b"%013d/" % at_ms + key.encode()


def _unknown_prefix(partition: int) -> bytes:
    return b"u/%05d/" % partition


@dataclass(frozen=True)
class TierSend:
    """An accepted business-initiated send, as the messaging tier counts it."""
    at_ms: int
    tenant: str
    subject: str


def _put(batch: WriteBatch, partition: int, offset: int | None, key: str, value: bytes, tier: TierSend | None,
         unknown: bool) -> None:
    """The entry with its header, and its index entries (tier send, UNKNOWN), into ``batch``."""
    header = _HEADER.pack(partition, -1 if offset is None else offset, -1 if tier is None else tier.at_ms, int(unknown))
    batch.put(_entry_key(key), header + value)
    if tier is not None:
        batch.put(_tier_key(partition, tier.at_ms, key), tier.tenant.encode() + b"\0" + tier.subject.encode())
    if unknown:
        batch.put(_unknown_prefix(partition) + key.encode(), b"")


@dataclass(frozen=True)
class OwnWrite:
    """An entry this worker wrote and the broker acknowledged, as the store keeps it."""
    partition: int
    offset: int | None  # None: acknowledged without an offset
    key: str
    value: bytes
    tier: TierSend | None
    unknown: bool


@dataclass(frozen=True)
class Stored:
    partition: int
    offset: int  # -1: written without a known offset
    tier_at_ms: int  # -1: not counted by the tier
    unknown: bool
    value: bytes


class LedgerStore:
    def __init__(self, path: Path, ttl_s: int) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = Rdict(str(path), options=Options(raw_mode=True), access_type=AccessType.with_ttl(int(ttl_s)))

    def close(self) -> None:
        self._db.close()

    # --- the topic this store holds ------------------------------------------------------------
    def bind(self, topic_id: str) -> bool:
        """Use the store for the topic with id ``topic_id``; empties it when it held another topic
        (True then)."""
        held = self._db.get(_TOPIC_ID)
        emptied = held is not None and held.decode() != topic_id
        if emptied:
            self._delete_prefix(b"")
        self._db.put(_TOPIC_ID, topic_id.encode())  # written at each start: the TTL counts from here
        return emptied

    def frontier(self, partition: int) -> int:
        raw = self._db.get(_frontier_key(partition))
        return int(raw) if raw is not None else 0

    def set_frontier(self, partition: int, offset: int) -> None:
        self._db.put(_frontier_key(partition), b"%d" % offset)

    def forget_partition(self, partition: int) -> None:
        """Drop everything held for ``partition`` (its topic partition no longer has what we read)."""
        doomed = [k for k, v in self._scan(b"e/") if _HEADER.unpack_from(v)[0] == partition]
        for k in doomed:
            self._db.delete(k)
        self._delete_prefix(_tier_prefix(partition))
        self._delete_prefix(_unknown_prefix(partition))
        self._db.delete(_frontier_key(partition))

    # --- entries -------------------------------------------------------------------------------
    def get(self, key: str) -> Stored | None:
        raw = self._db.get(_entry_key(key))
        if raw is None:
            return None
        partition, offset, tier_at_ms, unknown = _HEADER.unpack_from(raw)
        return Stored(partition, offset, tier_at_ms, bool(unknown), raw[_HEADER.size:])

    def apply(self, partition: int, offset: int | None, key: str, value: bytes | None, *,
              tier: TierSend | None = None, unknown: bool = False) -> bool:
        """Put (or, for a tombstone, delete) ``key`` as of ``offset``. An entry already held from a
        later offset wins (False). ``offset`` None: a write whose offset is not known, applied."""
        old = self.get(key)
        if old is not None and offset is not None and old.offset > offset:
            return False
        batch = WriteBatch(raw_mode=True)
        if old is not None:
            if old.tier_at_ms >= 0:
                batch.delete(_tier_key(old.partition, old.tier_at_ms, key))
            if old.unknown:
                batch.delete(_unknown_prefix(old.partition) + key.encode())
        if value is None:
            batch.delete(_entry_key(key))
        else:
            _put(batch, partition, offset, key, value, tier, unknown)
        self._db.write(batch)
        return True

    def put_own(self, writes: Iterable[OwnWrite], frontiers: dict[int, int]) -> None:
        """Keep this worker's own acknowledged writes, and the frontiers they moved, in one write
        and without reading first: each is the newest record of its key, because its writer held
        the partition from its load until the acknowledgement (the ledger checks that). Index
        entries of the values they replace are dropped when a load reads the indexes."""
        batch = WriteBatch(raw_mode=True)
        for w in writes:
            _put(batch, w.partition, w.offset, w.key, w.value, w.tier, w.unknown)
        for partition, offset in frontiers.items():
            batch.put(_frontier_key(partition), b"%d" % offset)
        self._db.write(batch)

    # --- what a load hands to the tier and the reconciler ------------------------------------
    def tier_sends(self, partition: int, since_ms: int) -> Iterator[TierSend]:
        """Accepted template sends at or after ``since_ms``, oldest first; older index entries
        are removed on the way (the tier forgets them after 24 h)."""
        prefix = _tier_prefix(partition)
        stale: list[bytes] = []
        for k, v in self._scan(prefix):
            at_ms = int(k[len(prefix):len(prefix) + 13])
            held = self.get(k[len(prefix) + 14:].decode())
            if at_ms < since_ms or held is None or (held.partition, held.tier_at_ms) != (partition, at_ms):
                stale.append(k)  # forgotten by the tier, or left by a value since replaced
                continue
            tenant, _, subject = v.partition(b"\0")
            yield TierSend(at_ms, tenant.decode(), subject.decode())
        for k in stale:
            self._db.delete(k)

    def unknown_keys(self, partition: int) -> list[str]:
        """The keys of ``partition`` whose entry's outcome is UNKNOWN; index entries left by a value
        since replaced are removed on the way."""
        prefix = _unknown_prefix(partition)
        keys, stale = [], []
        for k, _ in self._scan(prefix):
            key = k[len(prefix):].decode()
            held = self.get(key)
            if held is not None and held.unknown and held.partition == partition:
                keys.append(key)
            else:
                stale.append(k)
        for k in stale:
            self._db.delete(k)
        return keys

    def estimated_keys(self) -> int:
        return int(self._db.property_int_value("rocksdb.estimate-num-keys") or 0)

    def _scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """The keys under ``prefix`` with their values, in key order."""
        for k, v in self._db.items(from_key=prefix):
            if not k.startswith(prefix):
                return
            yield k, v

    def _delete_prefix(self, prefix: bytes) -> None:
        doomed = [k for k, _ in self._scan(prefix)]
        for k in doomed:
            self._db.delete(k)
