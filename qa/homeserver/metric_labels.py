"""Inside the embedded Synapse: its Prometheus metrics find a labelled child in one dict lookup (issue 29).

Synapse counts and times nearly everything it does in labelled Prometheus metrics: every SQL statement, every
transaction, every `Measure` block (seven metrics each), every request and background process. Each count starts
with `metric.labels(...)`, which in prometheus_client validates the label names (two `sorted()` calls for keyword
labels), turns every value into a string and takes a lock, all to find the same child object as the last call
with the same values. Nobody reads them here (`enable_metrics: false`, no listener), yet they run on the one thread
that serves the scenarios: ~6 % of a fast run's Synapse samples were inside `labels` (bench/synapse_profile.py).

`cache_label_lookups()` puts a cache in front: the call's own values (all `str`, as Synapse passes them) map to the
child the original returned, which is returned again while it is still that metric's child for those values (checked
on every hit: a `remove()` or `clear()` drops it); anything else (a non-str value, both kinds of labels, a mistake
the original would raise on) goes to prometheus_client's own `labels`. So the metrics hold exactly what they held.

Installed before Synapse starts (qa.homeserver.seeded_boot; once in the zygote), only on the prometheus_client release
read (`READ_AGAINST`) and only when a throwaway metric shows the attributes the cache relies on: otherwise nothing is
installed, prometheus_client keeps its `labels`, and Synapse's log says why. MATRIX_QA_SYNAPSE_METRIC_LABELS=1
keeps it too (for comparing).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

KEEP_ENV = "MATRIX_QA_SYNAPSE_METRIC_LABELS"  # "1": prometheus_client's labels as it is
READ_AGAINST = frozenset({"0.26.0"})
_CACHED = "_matrix_qa_cached_labels"


def cached(labels: Callable[..., Any]) -> Callable[..., Any]:
    """`MetricWrapperBase.labels` with a per-metric cache of the children it returned for str values."""
    if getattr(labels, _CACHED, False):
        return labels

    @functools.wraps(labels)
    def cached_labels(self: Any, *values: Any, **named: Any) -> Any:
        if named:
            if values:
                return labels(self, *values, **named)  # the original's error
            key: tuple[Any, ...] = tuple(named.items())
            for value in named.values():
                if type(value) is not str:
                    return labels(self, **named)
        else:
            key = values
            for value in values:
                if type(value) is not str:
                    return labels(self, *values)
        children = self.__dict__.get(_CACHED)
        if children is None:
            children = self.__dict__.setdefault(_CACHED, {})
        child = children.get(key)
        # Still this metric's child for these values? (remove() and clear() take children away.)
        if child is not None and self._metrics.get(child._labelvalues) is child:
            return child
        child = labels(self, *values, **named)
        children[key] = child
        return child

    setattr(cached_labels, _CACHED, True)
    return cached_labels


def _relied_on(metric_class: Any, counter: Any) -> str | None:
    """What the cache relies on, looked at on a throwaway metric (registered nowhere): a callable `labels` on the
    class, a child that is its metric's `_metrics` entry under its own `_labelvalues` (the hit check). None when all
    hold; otherwise what is missing."""
    if not callable(getattr(metric_class, "labels", None)):
        return "no MetricWrapperBase.labels"
    probe = counter("matrix_qa_probe", "the label cache's probe", ["value"], registry=None)
    child = probe.labels("v")
    if getattr(child, "_labelvalues", None) != ("v",):
        return "a child without its _labelvalues"
    if getattr(probe, "_metrics", {}).get(("v",)) is not child:
        return "a child not kept in its metric's _metrics"
    return None


def cache_label_lookups(release: str | None = None) -> str | None:
    """Install the cache on prometheus_client's metrics (idempotent). None when done; otherwise why not (a line for
    Synapse's log): not installed, another release than the one read (`release`: the installed one's unless given),
    or not the layout the cache relies on. Never raises: Synapse boots either way."""
    try:
        from importlib.metadata import version

        from prometheus_client.metrics import Counter, MetricWrapperBase

        release = release if release is not None else version("prometheus_client")
    except Exception as exc:  # not installed, or no metadata: leave it be
        return f"matrix-qa: Synapse's metrics keep prometheus_client's labels (not found: {exc})"
    if release not in READ_AGAINST:
        return (f"matrix-qa: Synapse's metrics keep prometheus_client's labels (qa.homeserver.metric_labels was "
                f"written against prometheus_client {', '.join(sorted(READ_AGAINST))}, this is {release})")
    try:
        missing = _relied_on(MetricWrapperBase, Counter)
    except Exception as exc:  # the probe itself broke: the same answer, nothing installed
        missing = f"its probe failed: {type(exc).__name__}: {exc}"
    if missing is not None:
        return f"matrix-qa: Synapse's metrics keep prometheus_client's labels (prometheus_client {release}: {missing})"
    MetricWrapperBase.labels = cached(MetricWrapperBase.labels)  # type: ignore[method-assign]
    return None
