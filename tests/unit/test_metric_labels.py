"""qa.homeserver.metric_labels: Synapse's Prometheus label lookups through a cache that returns exactly the child
prometheus_client would, installed behind the launcher on the release read."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from qa.homeserver.metric_labels import KEEP_ENV, READ_AGAINST, cache_label_lookups, cached

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


def test_a_second_identical_lookup_is_answered_by_the_cache_not_by_prometheus_client() -> None:
    # The point of the cache: were every call passed on, all the tests above would still pass.
    reached: list[tuple[Any, ...]] = []

    def counting(self: Any, *values: Any, **named: Any) -> Any:
        reached.append((values, tuple(named.items())))
        return original(self, *values, **named)

    lookup, metric = cached(counting), _counter()
    child = lookup(metric, desc="a", server_name="s")
    assert lookup(metric, desc="a", server_name="s") is child and len(reached) == 1
    assert lookup(metric, "a", "s") is lookup(metric, "a", "s") is child and len(reached) == 2  # one per call shape
    lookup(metric, desc="b", server_name="s")
    assert len(reached) == 3  # other values: prometheus_client's own lookup
    metric.remove("a", "s")
    assert lookup(metric, desc="a", server_name="s") is not child and len(reached) == 4  # a removed child: again


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


def _probe_labels_restored(monkeypatch: pytest.MonkeyPatch) -> type:
    """prometheus_client's MetricWrapperBase, its `labels` put back after the test (an install is process-wide)."""
    base = prometheus.metrics.MetricWrapperBase
    monkeypatch.setattr(base, "labels", base.labels)
    return base


def test_another_prometheus_client_release_keeps_its_labels_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    base = _probe_labels_restored(monkeypatch)
    before = base.labels
    note = cache_label_lookups(release="0.99.0")
    assert note is not None and "0.99.0" in note and sorted(READ_AGAINST)[0] in note
    assert base.labels is before  # nothing installed
    assert cache_label_lookups(release=sorted(READ_AGAINST)[0]) is None  # the release read: installed
    assert getattr(base.labels, "_matrix_qa_cached_labels", False)


def test_without_the_labels_it_relies_on_nothing_is_installed_and_boot_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    base = _probe_labels_restored(monkeypatch)
    monkeypatch.delattr(base, "labels")
    note = cache_label_lookups(release=sorted(READ_AGAINST)[0])  # the release read, another layout: no exception
    assert note is not None and "no MetricWrapperBase.labels" in note and not hasattr(base, "labels")


@pytest.mark.parametrize(("stand_in", "missing"), [
    (lambda self, *values, **named: object(), "without its _labelvalues"),
    (lambda self, *values, **named: original(self.__class__("x", "d", ["v"], registry=None), *values, **named),
     "not kept in its metric's _metrics"),
    (lambda self, *values, **named: 1 / 0, "probe failed: ZeroDivisionError"),
])
def test_a_labels_unlike_the_one_read_keeps_its_own(monkeypatch: pytest.MonkeyPatch, stand_in: Any,
                                                   missing: str) -> None:
    base = _probe_labels_restored(monkeypatch)
    monkeypatch.setattr(base, "labels", stand_in)
    note = cache_label_lookups(release=sorted(READ_AGAINST)[0])
    assert note is not None and missing in note and base.labels is stand_in  # not wrapped


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
