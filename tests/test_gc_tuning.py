"""The collector setting of the long-running roles (``services.shared.gc_tuning``): a working set the
size of the delivery worker's records in flight does not start young passes, and cyclic garbage is
still collected."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

PROBE = textwrap.dedent("""
    import gc, json
    from services.shared.gc_tuning import tune_gc

    tune_gc()
    passes = []
    gc.callbacks.append(lambda phase, info: phase == "start" and passes.append(info["generation"]))

    # 10,000 records in flight, each as the worker holds it: a record, its headers, its state.
    in_flight = [{"headers": [("akece_attempt", b"1"), ("akece_webhook_id", b"7")], "value": b"x" * 64,
                  "state": {"attempt": 1, "key": ("7", str(n))}} for n in range(10_000)]
    while_held = len(passes)

    # cyclic garbage, which only the collector frees: it must still be collected
    class Node:
        pass

    for _ in range(300_000):
        a, b = Node(), Node()
        a.other, b.other = b, a
    print(json.dumps({"while_held": while_held, "after_garbage": len(passes), "held": len(in_flight)}))
""")


def test_records_in_flight_do_not_start_a_pass_but_cyclic_garbage_is_still_collected() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["held"] == 10_000
    assert result["while_held"] == 0, "a young pass walked the records in flight"
    assert result["after_garbage"] >= 1, "cyclic garbage was never collected"
