"""``observe_all`` counts what observing each value does: the same buckets, count and sum."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from services.shared.metrics import FANOUT_BUCKETS, LATENCY_BUCKETS, observe_all


def exposition(buckets: tuple[float, ...], values: list[float], *, at_once: bool) -> bytes:
    """The histogram's exposition without its creation time."""
    registry = CollectorRegistry()
    histogram = Histogram("h", "h", buckets=buckets, registry=registry)
    if at_once:
        observe_all(histogram, values)
    else:
        for value in values:
            histogram.observe(value)
    return b"\n".join(line for line in generate_latest(registry).splitlines() if b"h_created" not in line)


def test_the_same_as_observing_each_value() -> None:
    latencies = [0.0, 0.005, 0.0051, 0.3, 1.0, 60.0, 61.5, 1e6, 0.01, 0.01]
    fanouts = [0, 1, 1, 2, 4, 10, 11, 500, 501]
    for buckets, values in ((LATENCY_BUCKETS, latencies), (FANOUT_BUCKETS, fanouts), (LATENCY_BUCKETS, [])):
        one_by_one = exposition(buckets, values, at_once=False)
        assert exposition(buckets, values, at_once=True) == one_by_one
    assert b'h_bucket{le="0.005"} 2.0' in exposition(LATENCY_BUCKETS, latencies, at_once=True)


def test_a_stand_in_without_buckets_observes_one_by_one() -> None:
    seen: list[float] = []

    class StandIn:
        def observe(self, value: float) -> None:
            seen.append(value)

    observe_all(StandIn(), [1.0, 2.0])  # type: ignore[arg-type]
    assert seen == [1.0, 2.0]
