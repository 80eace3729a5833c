"""Every Kafka client of the project is built in ``wapipe/edge/`` (issue 22, item 1): no module
outside it constructs a confluent-kafka or aiokafka client class. Read from the source (AST):

* ``Consumer(...)`` where the name was imported from the libraries (aliases too:
  ``from confluent_kafka import Consumer as C; C(...)``);
* ``confluent_kafka.Consumer(...)``, ``ck.admin.AdminClient(...)``: through a module imported from them.

A class of our own that happens to be called ``Consumer`` is not flagged (the name must come from
the libraries). Scanned: the packages and ``bench/`` (a bench measures the pipeline through the
same clients, so its numbers hold for it). Not scanned: ``tests/``, whose clients check the edge
from outside it on purpose (a plain producer writes poison records the edge's producer would not,
a reader with the library's own defaults reads what the edge wrote) and whose unit tests build
stand-ins named ``Consumer``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from wapipe.config import REPO_ROOT

LIBRARIES = ("confluent_kafka", "aiokafka")
CLIENTS = frozenset({"Consumer", "Producer", "AdminClient", "DeserializingConsumer", "SerializingProducer",
                     "AIOKafkaConsumer", "AIOKafkaProducer", "AIOKafkaAdminClient"})
SOURCES = ("wapipe", "processors", "producers", "sinks", "connectors", "bench")
EDGE = REPO_ROOT / "wapipe" / "edge"


def _library(module: str | None) -> bool:
    return bool(module) and module.split(".")[0] in LIBRARIES


def constructions(tree: ast.AST) -> list[tuple[int, str]]:
    """Where ``tree`` constructs a client class of the libraries: (line, call)."""
    classes: set[str] = set()  # local names bound to a client class of the libraries
    modules: set[str] = set()  # local names bound to a module of the libraries
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and _library(node.module):
            for alias in node.names:
                if alias.name in CLIENTS:
                    classes.add(alias.asname or alias.name)
                else:  # from confluent_kafka import admin
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if _library(alias.name):
                    modules.add(alias.asname or alias.name.split(".")[0])

    def through_module(node: ast.expr) -> bool:
        while isinstance(node, ast.Attribute):
            node = node.value
        return isinstance(node, ast.Name) and node.id in modules

    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if (isinstance(f, ast.Name) and f.id in classes) or (
                isinstance(f, ast.Attribute) and f.attr in CLIENTS and through_module(f.value)):
            found.append((node.lineno, ast.unparse(f)))
    return found


def project_files() -> list[Path]:
    return sorted(p for folder in SOURCES for p in (REPO_ROOT / folder).rglob("*.py"))


def test_no_module_outside_the_edge_builds_a_kafka_client():
    offenders = []
    for path in project_files():
        if path.is_relative_to(EDGE):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        offenders += [f"{path.relative_to(REPO_ROOT)}:{line}: {what}(...)" for line, what in constructions(tree)]
    assert not offenders, "Kafka clients built outside wapipe/edge (build them with wapipe.edge.clients):\n" + \
        "\n".join(offenders)


def test_the_edge_is_where_the_clients_are_built():
    """The exemption is not empty: the scan sees the edge's own constructions (it would see them anywhere)."""
    seen = {what for path in EDGE.rglob("*.py") for _, what in constructions(ast.parse(path.read_text()))}
    assert {"Consumer", "Producer", "AdminClient", "AIOKafkaConsumer"} <= seen


@pytest.mark.parametrize("source", [
    "from confluent_kafka import Consumer\nc = Consumer({'group.id': 'g'})",
    "from confluent_kafka import Producer as P\np = P({})",
    "from confluent_kafka.admin import AdminClient\na = AdminClient({})",
    "import confluent_kafka\nc = confluent_kafka.Consumer({})",
    "import confluent_kafka as ck\na = ck.admin.AdminClient({})",
    "from confluent_kafka import admin\na = admin.AdminClient({})",
    "def f():\n    from aiokafka import AIOKafkaConsumer\n    return AIOKafkaConsumer(bootstrap_servers='x')",
    "import aiokafka\np = aiokafka.AIOKafkaProducer(bootstrap_servers='x')",
    "from aiokafka.admin import AIOKafkaAdminClient\na = AIOKafkaAdminClient()",
    "from confluent_kafka import DeserializingConsumer\nc = DeserializingConsumer({})",
])
def test_each_way_of_building_one_is_caught(source):
    assert constructions(ast.parse(source)), source


@pytest.mark.parametrize("source", [
    "from wapipe.edge.clients import consumer\nc = consumer('b', 'g')",
    "class Consumer:\n    pass\nc = Consumer()",  # ours, not the library's
    "from producers.erp.consumer import ErpConsumer\nc = ErpConsumer('b', 't', keys=k)",
    "from confluent_kafka import Consumer\ndef f(c: Consumer) -> None:\n    c.close()",  # named, not built
    "from confluent_kafka import TopicPartition\ntp = TopicPartition('t', 0)",
])
def test_what_is_not_a_construction_is_not_flagged(source):
    assert not constructions(ast.parse(source)), source
