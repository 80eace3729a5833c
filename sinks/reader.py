"""Read-only ClickHouse queries for every process, whoever owns the data.

``open_reader(settings)`` returns a ``Reader`` with ``.query(sql, parameters) -> list[tuple]``:

* ``CLICKHOUSE_URL`` set (a server): a direct client; every process connects itself.
* the embedded default (chDB lets one process open a folder): when ``wapipe sink`` runs, it owns
  the folder and serves read-only queries on 127.0.0.1 (its URL is in ``<state>/sink.json``), so
  the reader talks to that endpoint; when no sink runs, the reader opens the folder itself.

Every query runs with ClickHouse's ``readonly=1``: the endpoint cannot be used to write or drop.
Values keep their types across the endpoint (date/time columns are sent as ISO text with their
ClickHouse type and rebuilt).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, Protocol

import httpx

from wapipe.config import Settings
from wapipe.procs import pid_alive

READONLY = {"readonly": 1}


class ReaderError(RuntimeError):
    """A query the reader could not run (bad SQL, a write, the endpoint gone)."""


class Reader(Protocol):
    def query(self, sql: str, parameters: dict | None = None) -> list[tuple]: ...
    def close(self) -> None: ...


def endpoint_file(settings: Settings) -> Path:
    return settings.state_dir / "sink.json"


class DirectReader:
    def __init__(self, client: Any, *, owned: bool = True) -> None:
        self.client = client
        self._owned = owned

    def query(self, sql: str, parameters: dict | None = None) -> list[tuple]:
        try:
            return [tuple(r) for r in self.client.query(sql, parameters=parameters or {}, settings=READONLY).result_rows]
        except Exception as exc:
            raise ReaderError(str(exc)) from exc

    def query_typed(self, sql: str, parameters: dict | None = None) -> tuple[list[str], list[str], list[tuple]]:
        try:
            r = self.client.query(sql, parameters=parameters or {}, settings=READONLY)
        except Exception as exc:
            raise ReaderError(str(exc)) from exc
        return list(r.column_names), [t.name for t in r.column_types], [tuple(x) for x in r.result_rows]

    def close(self) -> None:
        if self._owned:
            self.client.close()


def _revive(value: Any, ch_type: str) -> Any:
    if value is None:
        return None
    base = ch_type.removeprefix("Nullable(").removeprefix("LowCardinality(")
    if base.startswith("DateTime"):
        v = dt.datetime.fromisoformat(value)
        return v
    if base.startswith("Date"):
        return dt.date.fromisoformat(value)
    return value


class HttpReader:
    def __init__(self, url: str, *, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(timeout=timeout)

    def query(self, sql: str, parameters: dict | None = None) -> list[tuple]:
        try:
            r = self._http.post(f"{self.url}/query", json={"sql": sql, "parameters": parameters or {}})
        except httpx.HTTPError as exc:
            raise ReaderError(f"sink read endpoint {self.url}: {exc}") from exc
        body = r.json()
        if r.status_code != 200:
            raise ReaderError(body.get("error", r.text))
        types = body["types"]
        return [tuple(_revive(v, t) for v, t in zip(row, types)) for row in body["rows"]]

    def close(self) -> None:
        self._http.close()


def open_reader(settings: Settings) -> Reader:
    from wapipe.clickhouse import clickhouse_client

    if settings.clickhouse_url:
        return DirectReader(clickhouse_client(settings.clickhouse_url))
    ep = endpoint_file(settings)
    if ep.exists():
        try:
            info = json.loads(ep.read_text())
            if pid_alive(int(info["pid"])):
                return HttpReader(info["url"])
        except (ValueError, KeyError, OSError):
            pass
    return DirectReader(clickhouse_client(settings.clickhouse_dsn))
