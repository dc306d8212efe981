"""qa.homeserver.metric_labels: Synapse's Prometheus label lookups through a cache that returns exactly the child
prometheus_client would, installed behind the launcher on the release read."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from qa.homeserver.metric_labels import KEEP_ENV, cached

prometheus = pytest.importorskip("prometheus_client")
original = prometheus.metrics.MetricWrapperBase.labels
labels = cached(original)


def _counter() -> Any:
    return prometheus.Counter("c", "doc", ["desc", "server_name"], registry=prometheus.CollectorRegistry())


def test_the_same_values_find_the_same_child_as_prometheus_client_would() -> None:
    metric = _counter()
    child = labels(metric, desc="a", server_name="s")
    assert labels(metric, desc="a", server_name="s") is child is original(metric, desc="a", server_name="s")
    assert labels(metric, "a", "s") is child  # positional values: the same child
    assert labels(metric, server_name="s", desc="a") is child  # keyword order does not matter
    assert labels(metric, desc="b", server_name="s") is not child
    labels(metric, desc="a", server_name="s").inc(2)
    assert metric.labels(desc="a", server_name="s")._value.get() == 2  # counted where prometheus_client reads it
    assert cached(labels) is labels  # wrapping twice changes nothing


def test_a_removed_or_cleared_child_is_not_handed_out_again() -> None:
    metric = _counter()
    child = labels(metric, desc="a", server_name="s")
    metric.remove("a", "s")
    again = labels(metric, desc="a", server_name="s")
    assert again is not child and metric._metrics[("a", "s")] is again
    metric.clear()
    assert labels(metric, desc="a", server_name="s") is not again
    assert list(metric._metrics) == [("a", "s")]


def test_values_that_are_not_str_go_to_prometheus_client_itself() -> None:
    # 1 == True, but their label values "1" and "True" are two children: a cache keyed on the values would mix them.
    metric = prometheus.Counter("c", "doc", ["code"], registry=prometheus.CollectorRegistry())
    one, true = labels(metric, 1), labels(metric, True)
    assert one is not true and (one._labelvalues, true._labelvalues) == (("1",), ("True",))
    assert labels(metric, code=1) is one


@pytest.mark.parametrize("call", [lambda m: labels(m, "a"), lambda m: labels(m, desc="a"),
                                  lambda m: labels(m, "a", server_name="s"), lambda m: labels(m, "a", "s", "t")])
def test_what_prometheus_client_refuses_is_still_refused(call: Any) -> None:
    with pytest.raises(ValueError):
        call(_counter())


_SPAWNED = """
import json, sys
from prometheus_client.metrics import MetricWrapperBase
from qa.homeserver.seeded_boot import load_app
_, note = load_app("synapse.app.homeserver", {sys.argv[1]: "1"})
print(json.dumps([note, getattr(MetricWrapperBase.labels, "_matrix_qa_cached_labels", False)]))
"""


@pytest.mark.parametrize(("env", "installed"), [("UNRELATED", True), (KEEP_ENV, False)])
def test_behind_the_launcher_synapses_metrics_look_their_children_up_in_the_cache(env: str, installed: bool) -> None:
    pytest.importorskip("synapse")
    done = subprocess.run([sys.executable, "-c", _SPAWNED, env], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1]) == [None, installed]
