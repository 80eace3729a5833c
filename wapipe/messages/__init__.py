"""Typed messages: dataclasses matching the Avro schemas in ``schemas/avro/``.

One module per schema family. Each class reads the dict ``wapipe.avro.AvroSerde.decode`` returns
(``from_avro``: any schema version still read, resolved to the latest by fastavro) and gives the
dict ``AvroSerde.encode`` writes (``to_avro``: the latest version). Decoding a latest-version
record, ``from_avro`` then ``to_avro`` and encoding again gives the same bytes.

The classes are slotted and not frozen (a frozen dataclass took 3-4x as long to build, measured:
~4 µs against ~0.7 µs for 15 fields, and the send path builds several per message); treat them as
values: build a changed copy with ``dataclasses.replace``, never assign to a field.
"""
