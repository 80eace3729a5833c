"""The Kafka edge: every Kafka client of wapipe is built here, from the one ``Settings``.

* ``endpoint``: where the brokers are and how to reach them (TLS/SASL), in each library's terms;
* ``clients``: confluent-kafka producers and consumers with their delivery guarantees;
* ``follow`` / ``follow_aio``: topics followed into memory (a thread; the send worker's event loop);
* ``scan``: a topic read once to its end (erasure and retention checks, exports, campaign progress);
* ``batches``: a consumer group's records in batches, each committed after its work;
* ``group_start``: a consumer group's committed and end offsets, asked without joining it;
* ``lane_consumer``: the send worker's group member, its records handed to the loop in batches;
* ``offset_guard``, ``faust_internals``: what must still guard against (or reach into) Faust,
  aiokafka and mode for the normaliser; only ``faust_internals`` names their private attributes.

Nothing here imports the app layer (``wapipe.app``).
"""
