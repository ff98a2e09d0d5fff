"""Long-running agent calls: ``POST /v1/agent/invoke`` with ``"async": true`` becomes an ``AgentJob``.

Submitting is the synchronous call's checks and admission, then a row and a 202: the
rate limits count it, its worst-case cost is reserved in every hard budget, and the
key's and the agent's concurrency slots are held from submission until the job settles
(a queued job is a request in flight; otherwise ``async`` would be a way around a key's
``max_concurrent`` and an agent's shared capacity). The reservation is held for
``GATEWAY_JOB_MAX_QUEUE_SECONDS`` plus the agent's timeout plus a margin, so it cannot
lapse under a job that is still allowed to run.

The job runs the same ``invoke_route`` as the synchronous call: in the gateway process
as an asyncio task in the embedded profile, on a Celery worker in production. It
settles the reservation with the real usage and writes one audit record (request id =
the job's id, ``details.job_id``) and one usage row. The 202 submission has its own
audit record too (status 202, no tokens, no cost, ``details.job_id``), so every HTTP
request stays in the log while usage is counted once. What the job needs to run and
to be released later (the admission's budget checks and slots, the key as admitted,
the agent's timeout) is kept in its ``request`` under ``gateway``.

A job whose runner died is failed with ``job_expired`` and its reservation and slots
released: by beat's ``expire_stuck_jobs`` sweep (production) and whenever the job is
read while overdue (both profiles).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import time
import uuid
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import partial

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from audit.redaction_rules import warm_rules
from billing.budgets import BudgetRule
from billing.periods import Period
from billing.pricing import Price, Quote, prices
from gateway_project import metrics, tracing
from gateway_project.credentials import new_signing_secret
from gateway_project.errors import GatewayError, bad_request, not_found
from gateway_project.hotstate import BudgetCheck, get_hot_state
from gateway_project.logs import request_id
from keys.access import KeySnapshot, authorize, ensure_usable, rate_checks, snapshot_for
from routing import guarding, job_webhooks, protocols, spans
from routing.admission import Ticket, admit, input_estimate, settle, within_deadline
from routing.admission import _refusal as rate_refusal
from routing.exchange import Exchange
from routing.facts import Demand, RequestFacts
from routing.models import AgentJob
from routing.pricing import quote_for
from routing.table import AgentRoute, routing_table

log = logging.getLogger("gateway.jobs")

OBJECT = "agent.job"
PATH = "/v1/agent/invoke"
# A job's reservation and its running time outlive the agent's timeout by this much.
MARGIN_SECONDS = 60
LIST_LIMIT = 100

_here: set[asyncio.Task] = set()  # jobs running in this process (embedded profile): keep them referenced


# --- asking for one -----------------------------------------------------------


def wants_async(ex: Exchange, payload: dict) -> bool:
    """Whether the call asked for a job (``"async": true`` or ``Prefer: respond-async``); 400 on a bad flag."""
    flag = payload.get("async")
    if flag is not None and not isinstance(flag, bool):
        raise bad_request("'async' must be true or false.")
    preferred = prefers_async(ex)
    if not (flag or preferred) and payload.get("webhook_url") is not None:
        raise bad_request("'webhook_url' is only used by asynchronous calls: add \"async\": true.")
    return bool(flag or preferred)


def prefers_async(ex: Exchange) -> bool:
    """RFC 7240: ``Prefer: respond-async`` (among other preferences, any case)."""
    value = ex.header(b"prefer")
    return any(p.split(";", 1)[0].strip().lower() == "respond-async" for p in value.split(","))


def hold_seconds(route: AgentRoute) -> float:
    return settings.GATEWAY_JOB_MAX_QUEUE_SECONDS + route.timeout + MARGIN_SECONDS


async def submit(ex: Exchange, facts: RequestFacts, reason: str, payload: dict, model: str, limit: int) -> None:
    """Admit the call as the synchronous path would, store it as a job, start it and answer 202.

    ``facts`` are routed; the job's reservation is priced like the synchronous call's and held for its
    whole queue time. ``limit`` is the answer's cap the job will send.
    """
    route = facts.route
    webhook = ""
    if payload.get("webhook_url") is not None:
        try:
            webhook = await job_webhooks.check(payload["webhook_url"])
        except job_webhooks.WebhookRefused as error:
            raise bad_request(str(error)) from None
    quoted = await quote_for(route, facts.requested, await routing_table.get())
    demand = Demand(
        input_estimate(ex.body), protocols.max_tokens(payload), limit, hold_seconds(route),
        protocols.referenced_input_tokens(ex.body),
    )  # fmt: skip
    ticket = await admit(ex, ex.learn(facts.priced(quoted).demanding(demand)))
    job = None
    try:
        trace_carrier = tracing.current_context_carrier()  # the job's run is traced as this request's child
        job = await database_sync_to_async(_create)(
            ex, route, reason, payload, model, limit, webhook, ticket, trace_carrier
        )
        await _dispatch(str(job.pk))
    except BaseException as exc:
        await settle(ex, ticket)  # nothing ran: give the slots and the reservation back
        if job is None:
            raise
        await database_sync_to_async(_fail_unqueued)(job.pk)
        log.exception("could not queue job %s", job.pk)
        if not isinstance(exc, Exception):
            raise
        raise GatewayError(
            503, "api_error", "job_queue_unavailable", "The job could not be queued; retry.", [(b"retry-after", b"5")]
        ) from None
    ex.details.update(job_id=str(job.pk), job="submitted")
    ex.extra_headers.append((b"location", status_url(job).encode()))
    if prefers_async(ex):
        ex.extra_headers.append((b"preference-applied", b"respond-async"))
    ex.extra_headers.append((b"x-gateway-route-reason", reason.encode()))
    accepted = {
        "id": str(job.pk),
        "object": OBJECT,
        "status": job.status,
        "status_url": status_url(job),
        "request_id": ex.request_id,
        "created_at": _iso(job.created_at),
    }
    if job.webhook_secret:
        accepted["webhook_secret"] = job.webhook_secret  # its one showing: the job's reads never carry it
    await ex.respond_json(202, accepted)


def _create(ex, route, reason, payload, model, limit, webhook, ticket, trace_carrier) -> AgentJob:
    key = ex.key
    return AgentJob.objects.create(
        request_id=ex.request_id,
        api_key_id=key.key_id,
        client_id=key.client_id,
        agent=route.slug,
        request={
            "body": payload,
            "gateway": {
                "route_reason": reason,
                "model": model,
                "requested": payload.get("model") or "",
                "max_tokens": limit,
                "timeout": route.timeout,
                "default_model": route.default_model,
                "client_ip": ex.client_ip,
                "user_agent": ex.header(b"user-agent"),
                "key": _key_state(key),
                "admission": ticket_state(ticket),
                "trace": trace_carrier,
            },
        },
        webhook_url=webhook,
        webhook_secret=new_signing_secret() if webhook else "",
        webhook_status="pending" if webhook else "",
    )


def _fail_unqueued(job_id) -> None:
    error = {"type": "api_error", "code": "job_queue_unavailable", "message": "The job could not be queued."}
    AgentJob.objects.filter(pk=job_id, status=AgentJob.QUEUED).update(
        status=AgentJob.FAILED, error={**error, "status": 503}, finished_at=timezone.now(), webhook_status=""
    )


async def _dispatch(job_id: str) -> None:
    """Embedded (eager Celery): an asyncio task here, so the 202 goes out now. Production: the broker."""
    if settings.CELERY_TASK_ALWAYS_EAGER:
        task = asyncio.get_running_loop().create_task(_run_here(job_id))
        _here.add(task)
        task.add_done_callback(_here.discard)
        return
    from routing.tasks import run_agent_job

    await asyncio.to_thread(run_agent_job.delay, job_id)


async def _run_here(job_id: str) -> None:
    try:
        finished = await run(job_id)
    except Exception:
        log.exception("job %s failed to run", job_id)
        return
    if finished:
        await asyncio.to_thread(queue_webhook, job_id)


# --- the admission, kept on the job -----------------------------------------


def ticket_state(ticket: Ticket) -> dict:
    """What settling (or releasing) the job's admission needs, as JSON."""
    return {
        "budgets": [dataclasses.asdict(b) for b in ticket.budgets],
        "rules": [{**dataclasses.asdict(r), "anchor": r.anchor and r.anchor.isoformat()} for r in ticket.rules],
        "periods": [{"key": p.key, "start": p.start.isoformat(), "end": p.end.isoformat()} for p in ticket.periods],
        "estimated_tokens": ticket.estimated_tokens,
        "slot_keys": ticket.slot_keys,
        "quote": {
            "model": ticket.facts.quote.model,
            "input": str(ticket.facts.quote.price.input_nanos_per_token),
            "output": str(ticket.facts.quote.price.output_nanos_per_token),
        },
        "requested": ticket.facts.requested,
        "demand": dataclasses.asdict(ticket.facts.demand),
        "answer_by": ticket.answer_by if math.isfinite(ticket.answer_by) else None,
    }


def ticket_of(state: dict, facts: RequestFacts) -> Ticket:
    """The job's admission as a ticket again, for ``facts`` (its id and key): settled (or released) by the runner."""
    rules = tuple(
        BudgetRule(**{**r, "anchor": date.fromisoformat(r["anchor"]) if r["anchor"] else None}) for r in state["rules"]
    )
    periods = [
        Period(p["key"], datetime.fromisoformat(p["start"]), datetime.fromisoformat(p["end"])) for p in state["periods"]
    ]
    budgets = [BudgetCheck(**b) for b in state["budgets"]]
    quoted = state["quote"]
    price = Price(quoted["model"], Decimal(quoted["input"]), Decimal(quoted["output"]))
    demand = Demand(**state["demand"]) if "demand" in state else Demand(state["estimated_tokens"], None, None, 0)
    facts = facts._replace(requested=state["requested"], quote=Quote(quoted["model"], price), demand=demand)
    ticket = Ticket(facts, get_hot_state(), rules, budgets, periods, state["estimated_tokens"], state["slot_keys"])
    ticket.answer_by = state.get("answer_by") or math.inf  # jobs queued before deadlines were kept have none
    return ticket


def _key_state(key: KeySnapshot) -> dict:
    return key.as_json()


def _key_of(state: dict) -> KeySnapshot:
    """The snapshot a job was admitted with."""
    return KeySnapshot.from_json(state)


async def release(job: AgentJob) -> None:
    """Give back a job's slots and budget reservation without spending anything (it never ran, or its runner died)."""
    state = job.request.get("gateway", {})
    if "admission" not in state:
        return
    ticket = ticket_of(state["admission"], RequestFacts(job.request_id))
    await ticket.store.settle([], ticket.slot_keys, ticket.budgets, 0)


# --- running one --------------------------------------------------------------


def _claim(job_id: str) -> AgentJob | None:
    """Take a queued job (a conditional update, so two runners never both run it)."""
    now = timezone.now()
    fresh = Q(created_at__gte=now - timedelta(seconds=settings.GATEWAY_JOB_MAX_QUEUE_SECONDS))
    taken = AgentJob.objects.filter(fresh, pk=job_id, status=AgentJob.QUEUED).update(
        status=AgentJob.RUNNING, started_at=now
    )
    return AgentJob.objects.filter(pk=job_id).select_related("api_key__client").first() if taken else None


def _current_key(job: AgentJob, route: AgentRoute) -> KeySnapshot | GatewayError:
    """The job's key as it is now, or why it may no longer run: it may have been revoked or disabled while the job
    waited, or lost the agent, its model or its role (then it does not run, as the gateway would now refuse the
    call). The job runs with this key, so its fallbacks are checked against it too."""
    if job.api_key is None:
        return GatewayError(403, "permission_error", "key_revoked", "The job's API key no longer exists.")
    key = snapshot_for(job.api_key)
    try:
        ensure_usable(key)
        state = job.request["gateway"]
        authorize(key, route, state.get("model") or state.get("requested") or "")  # the model it will send
    except GatewayError as error:
        return error
    return key


async def _fresh(table) -> None:
    """A worker's tables may be an idle while old: reload them before use rather than run on stale ones."""
    if time.time() - table.loaded_at > settings.GATEWAY["CONFIG_REFRESH_SECONDS"]:
        await table.reload()


def _exchange(job: AgentJob, key: KeySnapshot) -> Exchange:
    state = job.request["gateway"]
    headers = [(b"user-agent", state.get("user_agent", "").encode("latin-1", "replace"))]
    scope = {"method": "POST", "path": PATH, "headers": headers, "client": (state.get("client_ip"), 0)}

    async def discard(message):  # nobody waits on this exchange: the answer goes to the job row
        return None

    ex = Exchange(scope, json.dumps(job.request["body"]).encode(), False, discard)
    ex.request_id = job.pk.hex
    ex.client_ip = state.get("client_ip")
    ex.facts = RequestFacts(ex.request_id, key)
    ex.agent, ex.model = job.agent, state["model"]
    ex.input_text = job.request["body"].get("input", "")
    ex.details = {"job_id": str(job.pk), "job": "run", "submitted_request_id": job.request_id}
    return ex


async def run(job_id: str) -> bool:
    """Run a queued job once; True when this call finished it (its webhook is then due)."""
    job = await database_sync_to_async(_claim)(job_id)
    if job is None:
        await expire_if_overdue(job_id)
        return False
    from routing.endpoints import invoke_route  # the synchronous path's call, retries and fallbacks included

    state = job.request["gateway"]
    ex = _exchange(job, _key_of(state["key"]))
    ex.details["queued_ms"] = round((job.started_at - job.created_at).total_seconds() * 1000, 1)
    request_id.set(ex.request_id)  # log lines written while it runs name the job's record, not a request
    ticket = ticket_of(state["admission"], ex.facts)
    route, error, cancelled = None, None, False
    span = spans.begin_job(ex, state.get("trace"))
    try:
        await warm_rules()
        await _fresh(routing_table)
        route = (await routing_table.get()).agent(job.agent)
        current = await database_sync_to_async(_current_key)(job, route)
        if isinstance(current, GatewayError):
            raise current
        ex.learn(ex.facts.identified(current))
        await _fresh(guarding.guardrail_table)
        await guarding.watch_output(ex, current, job.agent)  # its input was checked when it was submitted
        body = job.request["body"]
        call = partial(invoke_route, ex, route, body["input"], state["model"], state["requested"], state["max_tokens"])
        await within_deadline(ex, ticket, call)  # done while its reservation stands
        guarding.check_kept_output(ex)  # 403 ``guardrail_blocked`` on a block: the job fails with it
        ex.status = 200
    except GatewayError as failure:
        error = failure
    except asyncio.CancelledError:
        cancelled = True
        error = GatewayError(503, "api_error", "job_interrupted", "The gateway stopped while the job ran; retry it.")
    except Exception:
        log.exception("job %s failed", job_id)
        error = GatewayError(500, "api_error", "internal_error", "The gateway failed; see its logs.")
    finally:
        if error is not None:
            ex.status, ex.error_type = error.status, error.code
        try:
            await _fresh(prices)
            await settle(ex, ticket)
        finally:
            ex.record()
            spans.end_job(ex, span)
            metrics.pending.flush()  # a worker's task loop may end before a scheduled hand-over runs
    result = None if error else _result(ex, route, state)
    stored_error = {**json.loads(error.body(ex.request_id))["error"], "status": error.status} if error else None
    finished = await database_sync_to_async(_finish)(job_id, result, stored_error)
    if cancelled:
        raise asyncio.CancelledError
    return finished


def _result(ex: Exchange, route: AgentRoute, state: dict) -> dict:
    """The synchronous call's answer, field for field."""
    return {
        "request_id": ex.request_id,
        "output": ex.output_text,
        "agent_used": ex.agent or route.slug,  # a fallback's, when one answered
        "model": ex.model,
        "route_reason": state["route_reason"],
        "tokens_used": ex.input_tokens + ex.output_tokens,
        "usage": {"input_tokens": ex.input_tokens, "output_tokens": ex.output_tokens},
        "cost_usd": float(ex.cost_nanos) / 1e9,
        "latency_ms": round(ex.elapsed_ms(), 2),
    }


def _finish(job_id: str, result: dict | None, error: dict | None) -> bool:
    """Store the outcome unless the job was expired meanwhile (a sweep decided first)."""
    status = AgentJob.FAILED if error else AgentJob.SUCCEEDED
    done = AgentJob.objects.filter(pk=job_id, status=AgentJob.RUNNING)
    return bool(done.update(status=status, result=result, error=error, finished_at=timezone.now()))


def run_in_worker(job_id: str) -> bool:
    """A Celery worker's run: its own event loop, and the audit and usage rows written before it returns."""
    from gateway_project.writer import writer

    async def run_and_flush() -> bool:
        try:
            return await run(job_id)
        finally:
            await writer.flush()

    tracing.configure()  # once per worker process (a forked child starts its own exporter thread)
    return asyncio.run(run_and_flush())


# --- stuck jobs ---------------------------------------------------------------


def overdue(job: AgentJob, now: datetime | None = None) -> bool:
    """Queued past the queue limit, or running past its deadline and the margin: its runner is gone.

    A running job's deadline is its ticket's ``answer_by``, the one its runner's ``within_deadline`` keeps (its
    fallbacks run within it too): expired before, a job still answering on a fallback gave its slots and
    reservation back while it went on spending. Jobs queued before deadlines were kept: the agent's timeout.
    """
    now = now or timezone.now()
    if job.status == AgentJob.QUEUED:
        return job.created_at < now - timedelta(seconds=settings.GATEWAY_JOB_MAX_QUEUE_SECONDS)
    if job.status == AgentJob.RUNNING and job.started_at:
        state = job.request.get("gateway", {})
        answer_by = state.get("admission", {}).get("answer_by")
        if answer_by:
            return now.timestamp() > answer_by + MARGIN_SECONDS
        timeout = state.get("timeout", settings.GATEWAY["UPSTREAM_TIMEOUT"])
        return job.started_at < now - timedelta(seconds=timeout + MARGIN_SECONDS)
    return False


def _expire(job_id) -> AgentJob | None:
    """Fail an overdue job (conditionally: it may finish meanwhile); return it when this call failed it."""
    job = AgentJob.objects.filter(pk=job_id).first()
    if job is None or not overdue(job):
        return None
    was = "queue" if job.status == AgentJob.QUEUED else "run"
    error = {
        "type": "timeout_error",
        "code": "job_expired",
        "message": f"The job did not finish in time (its {was} limit passed); it was not charged.",
        "param": None,
        "request_id": job.pk.hex,
        "status": 504,
    }
    rows = AgentJob.objects.filter(pk=job_id, status=job.status)
    if not rows.update(status=AgentJob.FAILED, error=error, finished_at=timezone.now()):
        return None
    return job


async def expire_if_overdue(job_id) -> bool:
    """Expire one job if it is overdue, releasing what it held; True when this call did."""
    job = await database_sync_to_async(_expire)(job_id)
    if job is None:
        return False
    await release(job)
    await asyncio.to_thread(queue_webhook, str(job.pk))
    return True


def expire_stuck() -> int:
    """Beat's sweep: fail every overdue job and release what it held; return how many."""
    now = timezone.now()
    shortest = timedelta(seconds=min(settings.GATEWAY_JOB_MAX_QUEUE_SECONDS, MARGIN_SECONDS))
    candidates = AgentJob.objects.filter(
        Q(status=AgentJob.QUEUED, created_at__lt=now - shortest) | Q(status=AgentJob.RUNNING)
    ).only("pk", "status", "created_at", "started_at", "request")
    expired = 0
    for job in candidates:
        if overdue(job, now):
            expired += async_to_sync(expire_if_overdue)(job.pk)
    return expired


# --- webhooks -----------------------------------------------------------------


def queue_webhook(job_id: str) -> None:
    """Hand a finished job's webhook to Celery (run at once when eager); the row says how it went."""
    if not AgentJob.objects.filter(pk=job_id, webhook_status="pending").exclude(webhook_url="").exists():
        return
    from routing.tasks import deliver_job_webhook

    try:
        deliver_job_webhook.delay(str(job_id))
    except Exception:  # the broker is down: the webhook stays pending, visible in the console
        log.exception("could not queue the webhook of job %s", job_id)


# --- reading them -------------------------------------------------------------


async def admit_poll(ex: Exchange) -> None:
    """A status read counts against the key's requests per minute (a 429 slows a busy poller) but takes no
    concurrency slot, which the job itself may hold, and not the daily quota."""
    result = await get_hot_state().admit(rate_checks(get_hot_state(), ex.key, 0)[:1], [], [])
    if not result.ok:
        raise rate_refusal(result.failed, ex.key, result.retry_after_ms)


def status_url(job: AgentJob) -> str:
    return f"/v1/jobs/{job.pk}"


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def job_body(job: AgentJob, *, with_webhook: bool = True) -> dict:
    """A job as ``GET /v1/jobs/<id>`` shows it (and its webhook sends it)."""
    body = {
        "id": str(job.pk),
        "object": OBJECT,
        "status": job.status,
        "status_url": status_url(job),
        "request_id": job.request_id,
        "agent": job.agent,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "result": job.result,
        "error": job.error,
    }
    if with_webhook:
        body["webhook"] = (
            {"url": job.webhook_url, "status": job.webhook_status, "attempts": job.webhook_attempts}
            if job.webhook_url
            else None
        )
    return body


def _own_job(client_id: int, job_id: str) -> AgentJob | None:
    return AgentJob.objects.filter(pk=job_id, client_id=client_id).first()


async def job_for(key: KeySnapshot, job_id: str) -> AgentJob:
    """The key's client's job, expired first if its runner is gone; 404 for anyone else's or no job."""
    try:
        uuid.UUID(job_id)
    except ValueError:
        job = None
    else:
        job = await database_sync_to_async(_own_job)(key.client_id, job_id)
    if job is None:
        raise not_found(f"There is no job '{job_id}'.", "job_not_found")
    if overdue(job) and await expire_if_overdue(job.pk):
        job = await database_sync_to_async(_own_job)(key.client_id, job_id)
    return job


def _recent(client_id: int, status: str, limit: int) -> list[dict]:
    jobs = AgentJob.objects.filter(client_id=client_id)
    if status:
        jobs = jobs.filter(status=status)
    return [job_body(job) for job in jobs.order_by("-created_at")[:limit]]


async def recent_jobs(key: KeySnapshot, query: dict[str, str]) -> dict:
    """The client's latest jobs, newest first (``?status=``, ``?limit=`` up to 100)."""
    status = query.get("status", "")
    if status and status not in dict(AgentJob.STATUS_CHOICES):
        raise bad_request("'status' must be one of queued, running, succeeded, failed.")
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        raise bad_request("'limit' must be a whole number.") from None
    if not 1 <= limit <= LIST_LIMIT:
        raise bad_request(f"'limit' must be between 1 and {LIST_LIMIT}.")
    data = await database_sync_to_async(_recent)(key.client_id, status, limit)
    return {"object": "list", "data": data}
