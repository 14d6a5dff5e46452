"""What the delivery worker says about its commits while the broker does not take them, and after."""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaTimeoutError

from services.delivery.commits import Commits
from tests.log_capture import captured_logs

TP = TopicPartition("t.webhooks.deliveries", 0)


class FlakyConsumer:
    """Refuses the first ``refusals`` commits, then takes them."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.committed: list[dict[TopicPartition, Any]] = []

    async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        if self.refusals:
            self.refusals -= 1
            raise KafkaTimeoutError("no coordinator")
        self.committed.append(offsets)


async def test_failed_commits_are_logged_once_per_window_and_their_end_once() -> None:
    consumer = FlakyConsumer(refusals=3)
    commits = Commits("g", unavailable_log_s=60)
    commits.bind(consumer, None)  # the admin client is only for load()
    with captured_logs() as logs:
        for offset in range(5):
            commits.done(commits.add(TP, offset), offset)
            await commits.commit()
    failed = logs.events("delivery.commit_failed")
    assert [e["failures"] for e in failed] == [1]  # one line for the window, not one per try
    resumed = logs.events("delivery.commits_resumed")
    assert [e["failures"] for e in resumed] == [3] and resumed[0]["failed_for_s"] >= 0
    assert [offsets[TP][0] for offsets in consumer.committed] == [4, 5]  # what failed is committed after all
