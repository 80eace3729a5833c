"""The scan's end-offset query against a broker whose partition leadership is moving: it asks again
(NOT_LEADER_FOR_PARTITION / LEADER_NOT_AVAILABLE) and answers; any other error, or a move that
outlasts the wait, is a ScanError. The broker side is scripted: a moving leader cannot be made on
demand on the single test broker."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from wapipe.edge.scan import ScanError, _watermarks


class Broker:
    def __init__(self, *answers) -> None:
        self.answers = list(answers)
        self.asked = 0

    def get_watermark_offsets(self, tp, timeout, cached):  # noqa: ARG002 - confluent's signature
        self.asked += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, int):
            raise KafkaException(KafkaError(answer))
        return answer


def test_a_moving_leader_is_asked_again():
    b = Broker(KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, (0, 7))
    assert _watermarks(b, "t", 0) == (0, 7) and b.asked == 3


def test_another_error_or_a_move_that_lasts_is_a_scan_error():
    with pytest.raises(ScanError, match="t\\[0\\]"):
        _watermarks(Broker(KafkaError.TOPIC_AUTHORIZATION_FAILED), "t", 0)
    b = Broker(KafkaError.NOT_LEADER_FOR_PARTITION)
    with pytest.raises(ScanError):
        _watermarks(b, "t", 0, wait_s=0.5)
    assert b.asked >= 2
