"""Counting rare events of the media server (rejected streams, malformed frames, tool errors) as EMF metrics.

Powertools' shared `metrics` object keeps one set of dimensions for everything in its buffer, and this
process runs hundreds of calls at once: a dimension added for one event would stick to every other
call's metrics until the next flush. So each event here is its own EMF document (`single_metric`),
printed at once with its own dimensions. That costs one stdout line per event, which is why only rare
events go through here and frequent ones are added up by the caller first (see FrameProblems).
"""

from aws_lambda_powertools.metrics import MetricUnit, single_metric

from switchboard.observability import NAMESPACE, SERVICE


def count(metric: str, value: int = 1, **dimensions: str) -> None:
    """Emit `metric` (a Count) with `value` and these dimensions; keep dimension values low-cardinality."""
    with single_metric(
        name=metric, unit=MetricUnit.Count, value=value, namespace=NAMESPACE, default_dimensions={"service": SERVICE}
    ) as emitted:
        for name, dimension in dimensions.items():
            emitted.add_dimension(name=name, value=dimension)
