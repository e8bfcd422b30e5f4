"""Issue 19, fault 4: user-chosen queue names must not become unbounded Prometheus series."""

from __future__ import annotations

from supaworker.worker.events import OutcomeEvent
from supaworker.worker.metrics import MAX_NAMED_QUEUES, OTHER_QUEUES, JobCounter, WorkerMetrics
from tests.unit.worker_doubles import a_job


def queue_labels(metrics: WorkerMetrics) -> set[str]:
    return {
        sample.labels["queue"]
        for family in metrics.registry.collect()
        for sample in family.samples
        if "queue" in sample.labels
    }


def test_a_worker_serving_named_queues_labels_only_those() -> None:
    metrics = WorkerMetrics()
    counter = JobCounter(metrics, ["ocr", "pdf"])
    for i in range(300):
        counter(OutcomeEvent("completed", [a_job(f"user-queue-{i}")], "w1", duration=0.1))
    counter(OutcomeEvent("completed", [a_job("ocr"), a_job("pdf")], "w1", duration=0.1))
    assert queue_labels(metrics) == {"ocr", "pdf", OTHER_QUEUES}
    other = metrics.registry.get_sample_value(
        "supaworker_jobs_total", {"queue": OTHER_QUEUES, "outcome": "completed"}
    )
    assert other == 300  # folded, not dropped


def test_a_worker_serving_every_queue_names_a_bounded_number() -> None:
    metrics = WorkerMetrics()
    counter = JobCounter(metrics)
    for i in range(300):
        counter(OutcomeEvent("claimed", [a_job(f"q{i}")], "w1"))
    labels = queue_labels(metrics)
    assert len(labels) == MAX_NAMED_QUEUES + 1
    assert OTHER_QUEUES in labels and "q0" in labels and "q299" not in labels
    # Series per worker stay bounded whatever the number of queues users create.
    series = sum(len(family.samples) for family in metrics.registry.collect())
    assert series < 1000
