"""What ``/metrics`` reads when it is scraped, from state every process shares: circuits, budgets, the audit
writer's backlog, Celery task outcomes.

Read then rather than counted on the hot path: these live in the hot state (Redis
in production), the database and the spool directory, so any worker answering the
scrape sees the whole gateway's figures, not its own share. Runs in a thread
(database queries and synchronous reads); nothing here is on a request's path.
"""

from __future__ import annotations

import logging

from celery.signals import task_postrun, task_revoked
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from gateway_project import metrics as m
from gateway_project.hotstate import get_hot_state

log = logging.getLogger("gateway.metrics")

CIRCUIT_VALUES = {"closed": 0, "half_open": 1, "open": 2}
TASKS_KEY = "celery-tasks"
MAX_BUDGETS = 1000  # budgets exported at most, the most used first


class SharedStateCollector:
    """Each part is read on its own: one that fails (the database away) leaves the others' figures."""

    def collect(self):
        for part in (_targets, _budgets, _audit_backlog, _task_outcomes):
            try:
                yield from part()
            except Exception:
                log.exception("metrics: %s could not be read", part.__name__.strip("_"))


def _targets():
    from routing import balance
    from routing.models import Agent
    from routing.table import route_of

    circuit = GaugeMetricFamily(
        "gateway_target_circuit_state", "Each upstream target's circuit: 0 closed, 1 half-open, 2 open.",
        labels=("agent", "target"),
    )  # fmt: skip
    in_flight = GaugeMetricFamily(
        "gateway_target_in_flight",
        "Requests in flight on each upstream target, every worker's.",
        labels=("agent", "target"),
    )
    errors = GaugeMetricFamily(
        "gateway_target_error_ratio",
        "Each upstream target's recent failures as a share of its attempts (the breaker's moving average).",
        labels=("agent", "target"),
    )
    latency = GaugeMetricFamily(
        "gateway_target_latency_seconds",
        "Each upstream target's recent time to answer headers (the balancer's moving average).",
        labels=("agent", "target"),
    )
    agents = Agent.objects.filter(is_active=True).prefetch_related("targets").order_by("slug")
    for agent in agents[: m.agents.cap]:
        for state in balance.health(route_of(agent)):
            labels = (agent.slug, state["target"])
            circuit.add_metric(labels, CIRCUIT_VALUES.get(state["circuit"], 2))
            in_flight.add_metric(labels, state["in_flight"])
            errors.add_metric(labels, state["error_rate"])
            if state["latency_ms"] is not None:
                latency.add_metric(labels, state["latency_ms"] / 1000)
    return [circuit, in_flight, errors, latency]


def _budgets():
    from billing.models import Budget
    from billing.status import budget_status

    labels = ("budget", "scope", "target", "period", "mode")
    used = GaugeMetricFamily(
        "gateway_budget_utilisation_ratio",
        "Each active budget's spend in its current window over its limit.",
        labels=labels,
    )
    spent = GaugeMetricFamily(
        "gateway_budget_spent_usd", "Each active budget's spend in its current window.", labels=labels
    )
    limit = GaugeMetricFamily("gateway_budget_limit_usd", "Each active budget's limit.", labels=labels)
    budgets = Budget.objects.filter(is_active=True).select_related("client", "cost_center", "api_key").order_by("pk")
    for budget in budgets[:MAX_BUDGETS]:
        status = budget_status(budget)
        values = (str(budget.pk), budget.scope, status["target"][: m.LABEL_LENGTH], budget.period, budget.mode)
        limit_usd = float(budget.limit_usd)
        spent_usd = float(status["spent_usd"])
        used.add_metric(values, spent_usd / limit_usd if limit_usd > 0 else float(spent_usd > 0))
        spent.add_metric(values, spent_usd)
        limit.add_metric(values, limit_usd)
    return [used, spent, limit]


def _audit_backlog():
    from audit.quarantine import quarantined_count
    from gateway_project.writer import writer

    files, rows = writer.spool.waiting_rows()
    yield GaugeMetricFamily(
        "gateway_audit_spooled_files", "Batches the database refused, kept on this host's disk to be replayed.", files
    )
    yield GaugeMetricFamily("gateway_audit_spooled_rows", "Rows in those batches.", rows)
    yield GaugeMetricFamily(
        "gateway_audit_quarantined_rows", "Rows the database refused for their data, set aside for admins.",
        quarantined_count(),
    )  # fmt: skip


def _task_outcomes():
    tasks = CounterMetricFamily(
        "gateway_celery_tasks", "Celery tasks finished, by task and outcome (SUCCESS, FAILURE, RETRY, REVOKED...).",
        labels=("task", "outcome"),
    )  # fmt: skip
    store = get_hot_state()
    for name, count in sorted(store.tallies_now(store.key(TASKS_KEY)).items()):
        task, _, outcome = name.rpartition("|")
        tasks.add_metric((task, outcome), count)
    return [tasks]


def count_task_outcome(task_name: str, outcome: str) -> None:
    """Count a finished task in the hot state, where every worker's (and every host's) counts meet."""
    try:
        store = get_hot_state()
        store.tally_now(store.key(TASKS_KEY), f"{task_name[: m.LABEL_LENGTH]}|{outcome}")
    except Exception:  # a count never fails the task
        log.exception("metrics: task %s not counted", task_name)


@task_postrun.connect(dispatch_uid="gateway-metrics-task-postrun")
def _after_task(sender=None, task=None, state=None, **kwargs):
    if task is not None:
        count_task_outcome(task.name, state or "UNKNOWN")


@task_revoked.connect(dispatch_uid="gateway-metrics-task-revoked")
def _revoked(sender=None, request=None, **kwargs):
    count_task_outcome(getattr(sender, "name", None) or "unknown", "REVOKED")
