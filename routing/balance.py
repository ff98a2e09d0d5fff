"""Pick one of an agent's targets for an attempt, and count it in flight until the attempt ends.

The counts, the moving averages and the circuit of every target live in the hot
state (shared by all gateway processes in production): a target is taken with
one atomic step that also checks its circuit and its ``max_concurrent``, and
released with one that feeds the attempt's outcome to the circuit breaker.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from gateway_project.errors import GatewayError
from gateway_project.hotstate import BreakerRule, HotState, TargetAcquire, TargetRelease, TargetState, get_hot_state
from gateway_project.ids import new_id
from routing.table import AgentRoute, TargetRoute

# The name of the one target of an agent that has none of its own (its ``upstream_url``).
DEFAULT_TARGET = "upstream"
# Least-busy load of a target without a ``max_concurrent``: as if it took this many at once.
UNLIMITED_CAPACITY = 100
# Latency-aware scoring: a target failing every request scores this much worse than one that never fails.
ERROR_WEIGHT = 2.0
# A lease not released by then (a crashed process) stops counting in flight: the route's timeout plus this.
LEASE_MARGIN_SECONDS = 60


@dataclass(slots=True)
class Lease:
    """One attempt's hold on a target."""

    route: AgentRoute
    target: TargetRoute
    key: str
    name: str
    probe: bool


def targets_of(route: AgentRoute) -> tuple[TargetRoute, ...]:
    """The agent's enabled targets; none means its own upstream URL."""
    return route.targets or (TargetRoute(DEFAULT_TARGET, route.base_url, upstream_api_key=route.upstream_api_key),)


def target_key(store: HotState, agent: str, target: str) -> str:
    return store.key("target", agent, target)


def breaker_rule(route: AgentRoute) -> BreakerRule:
    return BreakerRule(route.breaker_failures, round(route.breaker_window * 1000), round(route.breaker_cooldown * 1000))


class NoTarget(Exception):
    """Every target refused: circuits open (``circuit``) or all at their ``max_concurrent``."""

    def __init__(self, route: AgentRoute, circuit: bool, retry_ms: int):
        self.route, self.circuit, self.retry_ms = route, circuit, retry_ms
        super().__init__(route.slug)

    def error(self) -> GatewayError:
        return unavailable(self.route.slug, self.circuit, self.retry_ms)


def unavailable(slug: str, circuit: bool, retry_ms: int) -> GatewayError:
    retry = max(1, math.ceil(retry_ms / 1000))
    if circuit:
        code = "circuit_open"
        message = f"The agent '{slug}' is failing: its circuit is open. Retry after {retry} s."
    else:
        code = "targets_busy"
        message = f"Every target of the agent '{slug}' is at its capacity. Retry after {retry} s."
    return GatewayError(503, "api_error", code, message, [(b"retry-after", str(retry).encode())])


def _load(target: TargetRoute, state: TargetState) -> float:
    return state.in_flight / (target.max_concurrent or UNLIMITED_CAPACITY)


def order(strategy: str, targets: list[TargetRoute], states: list[TargetState] | None, rng=random) -> list[TargetRoute]:
    """The targets in the order to try them, best first, by the agent's strategy."""
    if strategy == "weighted" or states is None:
        weighted = [t for t in targets if t.weight > 0] or targets  # all at zero: share equally
        # A weighted shuffle (Efraimidis-Spirakis): the first is drawn in proportion to weight, and so on.
        return sorted(weighted, key=lambda t: rng.random() ** (1 / (t.weight or 1)), reverse=True)
    pairs = list(zip(targets, states, strict=True))
    rng.shuffle(pairs)  # ties go to any
    if strategy == "least_busy":
        pairs.sort(key=lambda pair: _load(*pair))
    else:  # latency-aware: load + latency relative to the slowest + twice the error rate, lower wins
        slowest = max((s.latency_ms for _, s in pairs), default=0) or 1
        pairs.sort(
            key=lambda pair: _load(*pair) + max(pair[1].latency_ms, 0) / slowest + ERROR_WEIGHT * pair[1].error_rate
        )
    return [target for target, _ in pairs]


async def acquire(route: AgentRoute, tried: set[str], lease_seconds: float) -> Lease:
    """Take the best target not ``tried`` yet (else the best tried one) that its circuit and capacity allow."""
    store = get_hot_state()
    targets = list(targets_of(route))
    states = None
    if len(targets) > 1 and route.strategy != "weighted":
        states = await store.target_states([target_key(store, route.slug, t.name) for t in targets])
    fresh = [t for t in targets if t.name not in tried]
    ranked = order(route.strategy, fresh, _states_of(fresh, targets, states), random)
    if len(fresh) < len(targets):
        used = [t for t in targets if t.name in tried]
        ranked += order(route.strategy, used, _states_of(used, targets, states), random)
    circuit, retry_ms = False, None
    lease_ms = round(lease_seconds * 1000)
    for target in ranked:
        key = target_key(store, route.slug, target.name)
        name = new_id()
        verdict, wait_ms = await store.target_acquire(key, name, target.max_concurrent, lease_ms)
        if verdict in ("ok", "probe"):
            return Lease(route, target, key, name, verdict == "probe")
        circuit = circuit or verdict in ("open", "probing")
        retry_ms = wait_ms if retry_ms is None else min(retry_ms, wait_ms)
    raise NoTarget(route, circuit, retry_ms or 1000)


def first_lease(route: AgentRoute) -> tuple[Lease, TargetAcquire] | None:
    """The first attempt's lease and how to take it, when choosing needs no live state (one target, or the
    weighted strategy): the admission then takes it in its own round trip. None: ``acquire`` chooses."""
    targets = targets_of(route)
    if len(targets) > 1 and route.strategy != "weighted":
        return None
    target = order(route.strategy, list(targets), None, random)[0]
    store = get_hot_state()
    lease = Lease(route, target, target_key(store, route.slug, target.name), new_id(), False)
    lease_ms = round((route.timeout + LEASE_MARGIN_SECONDS) * 1000)
    return lease, TargetAcquire(lease.key, lease.name, target.max_concurrent, lease_ms)


def _states_of(subset, targets, states):
    if states is None:
        return None
    by_name = {t.name: s for t, s in zip(targets, states, strict=True)}
    return [by_name[t.name] for t in subset]


def ending(lease: Lease, outcome: str, latency_ms: float) -> TargetRelease:
    """The release of ``lease``, to hand to the request's settle (one round trip for both)."""
    return TargetRelease(lease.key, lease.name, outcome, latency_ms, lease.probe, breaker_rule(lease.route))


async def release(lease: Lease, outcome: str, latency_ms: float) -> str:
    """End the attempt: ``outcome`` "ok", "fail" or "none" (no verdict on the target). Returns the circuit."""
    return await get_hot_state().target_release(
        lease.key, lease.name, outcome, latency_ms, lease.probe, breaker_rule(lease.route)
    )


def health(route: AgentRoute) -> list[dict]:
    """Every target's live state, for the console and the API (synchronous)."""
    store = get_hot_state()
    targets = targets_of(route)
    states = store.target_states_now([target_key(store, route.slug, t.name) for t in targets])
    return [describe(target, state) for target, state in zip(targets, states, strict=True)]


def describe(target: TargetRoute, state: TargetState) -> dict:
    circuit = state.shown_circuit
    retry_ms = state.blocked_ms()
    return {
        "target": target.name,
        "url": target.base_url,
        "weight": target.weight,
        "max_concurrent": target.max_concurrent,
        "circuit": circuit,
        "open_for_seconds": round(retry_ms / 1000, 1) if circuit == "open" else 0,
        "consecutive_failures": state.failures,
        "in_flight": state.in_flight,
        "latency_ms": round(state.latency_ms, 1) if state.latency_ms >= 0 else None,
        "error_rate": round(state.error_rate, 3),
    }


def reset(route: AgentRoute, target_name: str | None = None) -> None:
    """Close the circuits of an agent's targets (or one of them) by hand."""
    store = get_hot_state()
    for target in targets_of(route):
        if target_name is None or target.name == target_name:
            store.target_reset_now(target_key(store, route.slug, target.name))
