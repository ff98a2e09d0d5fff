"""The policy engine: ordered rules whose conditions are CEL expressions over a documented request context.

A rule set is compiled once per load (``compile_rules``) and decides a request from
the values its rules read, nothing else: ``PolicySet.decide`` takes them as a
``RequestContext`` and returns a ``Decision``. Rules run in order; the first enforced
**deny** whose condition holds refuses the request; an enforced **allow** marked
``final`` stops the evaluation (later denies do not apply); a rule in dry run only
notes what it would have done. A condition that fails on a request (a field of the
wrong type, a bad address) matches a deny rule and not an allow rule: a rule that
cannot be evaluated never lets through what it was written to stop.

Conditions read only the fields listed in ``CONTEXT_FIELDS`` and the functions in
``FUNCTIONS``; ``check_condition`` refuses any other (with the position of a syntax
error), which is what "type-checked on save" means here. The CEL library converts each
value it is given at a cost of microseconds, so a request is given only the fields
its rule set reads, and decisions are remembered by those values: the steady state is
one dictionary look-up per request.
"""

from __future__ import annotations

import functools
import ipaddress
import operator
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import cel
from django.conf import settings

from gateway_project.snapshots import RefreshingTable

# The context a condition reads: variable -> field -> what the field holds (for the docs and the checks).
CONTEXT_FIELDS: dict[str, dict[str, str]] = {
    "request": {
        "agent": "the agent's slug (empty for /v1/models and /v1/usage)",
        "model": "the model asked for (empty when the agent chooses)",
        "method": "the HTTP method (WS for a WebSocket session)",
        "path": "the path as sent, without the query",
        "route": "the path route's prefix, empty for the gateway's own endpoints",
        "ip": "the client's address (as the trusted proxies report it)",
        "body_bytes": "the body's size in bytes",
        "tokens": "the input estimate in tokens (about four bytes a token)",
    },
    "client": {
        "slug": "the client's slug",
        "tags": "the client's tags (a list of strings)",
        "cost_center": "its cost center's slug, or empty",
    },
    "key": {
        "prefix": "the key's visible prefix",
        "tags": "the key's tags",
        "roles": "the agent roles it holds (for a token: with the roles its claims give)",
        "plan": "the slug of the plan it was issued on, or empty",
    },
    "identity": {
        "subject": "the token's subject (sub claim; empty for an API key)",
        "roles": "the caller's roles (an API key's own roles)",
        "groups": "the token's groups (its provider's groups claim; empty for an API key)",
    },
}
LIST_FIELDS = frozenset({("client", "tags"), ("key", "tags"), ("key", "roles"), ("identity", "roles"),
                         ("identity", "groups")})  # fmt: skip
INT_FIELDS = frozenset({("request", "body_bytes"), ("request", "tokens")})
NOW = "now"  # the request's time as a timestamp, to the minute
# Longer text (a model name or path a client chose) is handed to the rules as a value they cannot read, so a rule
# reading it fails (a deny refuses): a regular expression never runs over megabytes on the event loop, and padding
# cannot push what a rule looks for out of a cut.
MAX_CONTEXT_TEXT = 1024


class _TooLong:
    """What a rule sees of a value over ``MAX_CONTEXT_TEXT`` characters: nothing CEL can take."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<longer than the rules read>"


TOO_LONG = _TooLong()


def _zone(name: str) -> ZoneInfo:
    try:
        return _zone_named(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(f"no time zone named {name!r}") from None


@functools.lru_cache(maxsize=256)
def _zone_named(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def hour(moment: datetime, zone: str) -> int:
    """The hour (0-23) of ``moment`` in the time zone ``zone`` (an IANA name such as Europe/Berlin)."""
    return moment.astimezone(_zone(zone)).hour


def weekday(moment: datetime, zone: str) -> int:
    """The day of the week of ``moment`` in ``zone``: 0 is Sunday, 6 Saturday (as CEL's ``getDayOfWeek``)."""
    return (moment.astimezone(_zone(zone)).weekday() + 1) % 7


@functools.lru_cache(maxsize=4096)
def _network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(cidr, strict=False)


def ip_in(address: str, networks: Iterable[str]) -> bool:
    """Whether ``address`` is in any of ``networks`` (CIDR blocks or single addresses); an empty or unparsable
    address is in none. Every network is read, so a bad one fails the rule (and its check on save) at once."""
    if isinstance(networks, str):
        raise ValueError("ip_in takes a list of networks, e.g. ['10.0.0.0/8']")
    try:
        parsed = [_network(str(cidr)) for cidr in networks]
    except ValueError as error:
        raise ValueError(f"ip_in: {error}") from None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip.version == network.version and ip in network for network in parsed)


FUNCTIONS = {"ip_in": ip_in, "hour": hour, "weekday": weekday}
# What a condition may call beyond our functions: CEL's operators and standard functions and macros.
_STANDARD_FUNCTIONS = frozenset({
    "size", "startsWith", "endsWith", "contains", "matches", "int", "uint", "double", "string", "bytes", "bool",
    "timestamp", "duration", "type", "dyn", "has", "all", "exists", "exists_one", "map", "filter",
    "getFullYear", "getMonth", "getDayOfYear", "getDayOfMonth", "getDate", "getDayOfWeek", "getHours", "getMinutes",
    "getSeconds", "getMilliseconds",
})  # fmt: skip
_FIELD = re.compile(r"(?<![\w.])([A-Za-z_]\w*)\s*(?:\.\s*([A-Za-z_]\w*)|\[\s*)?")
_POSITION = re.compile(r"<input>:(\d+):(\d+): ([^\n]*)")


class ConditionError(ValueError):
    """A condition the engine will not run, with what is wrong (and where, for a syntax error)."""


_STRING_PREFIX = re.compile(r"(?i)(?:rb|br|r|b)?(\'\'\'|\"\"\"|'|\")")
_MACRO = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")


def _code_only(expression: str) -> str:
    """``expression`` with its string literals emptied ('') and its comments blanked, by CEL's lexical rules: quotes
    single, double or tripled; an ``r`` prefix (raw: a backslash escapes nothing) or ``b``; ``//`` to the line's
    end. What is left is names, fields, operators and numbers."""
    out, at, size = [], 0, len(expression)
    while at < size:
        char = expression[at]
        if expression.startswith("//", at):
            end = expression.find("\n", at)
            at = size if end < 0 else end
            out.append(" ")
            continue
        quote = _STRING_PREFIX.match(expression, at) if char in "rRbB'\"" else None
        if quote and (at == 0 or not (expression[at - 1].isalnum() or expression[at - 1] == "_")):
            raw = "r" in expression[at : quote.start(1)].lower()
            delimiter = quote.group(1)
            at = quote.end()
            while at < size and not expression.startswith(delimiter, at):
                at += 2 if expression[at] == "\\" and not raw else 1
            at += len(delimiter)
            out.append("''")
            continue
        out.append(char)
        at += 1
    return "".join(out)


def _fields_read(expression: str) -> set[tuple[str, str | None]]:
    """The (variable, field) pairs ``expression`` reads; (variable, None) when it reads a variable other than by a
    plain field (``client['slug']``, ``client`` alone). Found in the source with its strings and comments blanked;
    ``compile_condition`` checks the result on the samples."""
    source = _code_only(expression)
    bound = set(_MACRO.findall(source))
    found = set()
    for match in _FIELD.finditer(source):
        name, member = match.group(1), match.group(2)
        if name in bound:
            continue
        if name in CONTEXT_FIELDS:
            found.add((name, member))
        elif name == NOW:
            found.add((NOW, None))
    return found


def _restricted(sample: dict, reads: frozenset) -> dict:
    """``sample`` cut to ``reads``, as a rule group's context is."""
    cut: dict = {}
    for variable, member in reads:
        if member is None or variable == NOW:
            cut[variable] = sample[variable]
        else:
            cut.setdefault(variable, {})[member] = sample[variable][member]
    return cut


def _outcome(program, variables: dict):
    try:
        return program.execute(cel.Context(variables=variables, functions=FUNCTIONS))
    except Exception as error:
        return type(error)


def _syntax_message(error: Exception) -> str:
    text = str(error)
    where = _POSITION.search(text)
    if where:
        line, column, what = where.groups()
        return f"Line {line}, column {column}: {what}"
    return text.split("\n", 1)[0]


def compile_condition(expression: str):
    """The compiled program and the fields it reads; ``ConditionError`` when it is not a condition we run."""
    if not expression.strip():
        raise ConditionError("Write a condition, e.g. request.agent == 'ledger'.")
    try:
        program = cel.compile(expression)
    except (ValueError, TypeError, RuntimeError) as error:
        raise ConditionError(_syntax_message(error)) from None
    references = program.references()
    bound = set(_MACRO.findall(_code_only(expression)))  # a comprehension's own variable (tags.exists(t, ...))
    unknown = sorted(set(references["variables"]) - set(CONTEXT_FIELDS) - {NOW} - bound)
    if unknown:
        known = ", ".join([*CONTEXT_FIELDS, NOW])
        raise ConditionError(f"Unknown name {', '.join(unknown)}: a condition reads {known}.")
    calls = {name for name in references["functions"] if name[0] not in "_@!-"} - _STANDARD_FUNCTIONS
    unknown = sorted(calls - set(FUNCTIONS))
    if unknown:
        raise ConditionError(f"Unknown function {', '.join(unknown)}: the gateway adds {', '.join(FUNCTIONS)}.")
    reads = _fields_read(expression)
    for variable, member in sorted(reads, key=lambda pair: (pair[0], pair[1] or "")):
        if member is not None and member not in CONTEXT_FIELDS.get(variable, {}):
            fields = ", ".join(CONTEXT_FIELDS[variable])
            raise ConditionError(f"{variable} has no field {member!r}; it has {fields}.")
    reads = frozenset(reads)
    if any(_outcome(program, _restricted(sample, reads)) != _outcome(program, sample) for sample in SAMPLES):
        # The source read wrongly (a construct the scan does not know): give the rule every variable it names.
        reads = frozenset((name, None) for name in references["variables"] if name in CONTEXT_FIELDS or name == NOW)
    return program, reads


def check_condition(expression: str) -> None:
    """Refuse (``ConditionError``) a condition that does not compile, reads what the context does not have, or does
    not give true or false on a request of every shape (the samples: empty values, and filled ones)."""
    program, _ = compile_condition(expression)
    for sample in SAMPLES:
        try:
            result = program.execute(cel.Context(variables=sample, functions=FUNCTIONS))
        except Exception as error:  # the library raises TypeError, ValueError, KeyError, RuntimeError ...
            raise ConditionError(f"It fails on a request: {_first_line(error)}") from None
        if not isinstance(result, bool):
            raise ConditionError(f"It must be true or false; on a request it gives {type(result).__name__}.")


def _first_line(error: Exception) -> str:
    text = str(error).split("\n", 1)[0]
    return f"no field {text}" if isinstance(error, KeyError) else text


def _sample(filled: bool) -> dict:
    values = {}
    for variable, fields in CONTEXT_FIELDS.items():
        values[variable] = {
            name: (["finance", "internal"] if filled else [])
            if (variable, name) in LIST_FIELDS
            else (1200 if filled else 0)
            if (variable, name) in INT_FIELDS
            else ("10.1.2.3" if name == "ip" else f"sample-{name}" if filled else "")
            for name in fields
        }
    values[NOW] = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
    return values


SAMPLES = (_sample(False), _sample(True))


class RequestContext(NamedTuple):
    """What a rule set may read of one request (``build`` takes only the fields its rules read)."""

    request: dict
    client: dict
    key: dict
    identity: dict
    now: datetime


class Decision(NamedTuple):
    denied_by: PolicyRuleEntry | None  # the enforced deny that refuses the request
    would_deny: tuple[str, ...] = ()  # dry-run denies that matched (names)
    allowed_by: str = ""  # the final allow that stopped the evaluation
    failed: tuple[str, ...] = ()  # rules whose condition failed on this request

    @property
    def notes(self) -> dict:
        """What the audit record keeps of it (``details.policy``); empty when no rule did anything."""
        notes = {}
        if self.denied_by is not None:
            notes["denied_by"] = self.denied_by.name
        if self.would_deny:
            notes["would_deny"] = list(self.would_deny)
        if self.allowed_by:
            notes["allowed_by"] = self.allowed_by
        if self.failed:
            notes["failed"] = list(self.failed)
        return notes


ALLOWED = Decision(None)


@dataclass(frozen=True, slots=True)
class PolicyRuleEntry:
    """One compiled rule."""

    rule_id: int
    name: str
    effect: str  # "deny" or "allow"
    final: bool  # an allow that stops the evaluation
    dry_run: bool
    message: str
    program: object = field(repr=False)


MEMO_SIZE = 10_000


def _normalised(reads: Iterable[tuple[str, str | None]]) -> tuple[tuple[str, str | None], ...]:
    """``reads`` in a fixed order, a variable read whole standing for its fields."""
    reads = set(reads)
    whole = {variable for variable, member in reads if member is None}
    kept = {(variable, None) if variable in whole else (variable, member) for variable, member in reads}
    return tuple(sorted(kept, key=lambda pair: (pair[0], pair[1] or "")))


def _values(reads: tuple, context: RequestContext) -> tuple:
    """The values ``reads`` names in ``context``, in their order, hashable (lists as tuples)."""
    out = []
    for variable, member in reads:
        if variable == NOW:
            out.append(context.now)
            continue
        source = getattr(context, variable)
        out.append(_frozen(source if member is None else source.get(member, "")))
    return tuple(out)


def _remember(memo: dict, key: tuple, value):
    """Keep ``value`` under ``key``, forgetting everything first once ``MEMO_SIZE`` are kept (values an attacker
    varies cost an evaluation each, never memory); return it."""
    if len(memo) >= MEMO_SIZE:
        memo.clear()
    memo[key] = value
    return value


class _Group:
    """The rules that read the same fields: their conditions run together, on one conversion of those fields, and
    their outcomes (True, False, or None for a condition that failed) are remembered by those values."""

    def __init__(self, reads: tuple, rules: list[PolicyRuleEntry]):
        self.reads = reads
        self.rules = rules
        self._memo: dict[tuple, tuple] = {}
        self._pick = None  # the group's values out of all the rule set's (``take_from``)

    def take_from(self, all_reads: tuple) -> None:
        where = [all_reads.index(pair) for pair in self.reads]
        if len(where) > 1:
            self._pick = operator.itemgetter(*where)
        elif where:
            self._pick = lambda values, at=where[0]: (values[at],)
        else:  # rules that read nothing (constant, or no longer compiling)
            self._pick = lambda values: ()

    def outcomes(self, all_values: tuple) -> tuple:
        """The outcome of each of the group's rules on the request whose rule-set values are ``all_values``."""
        values = self._pick(all_values)
        found = self._memo.get(values)
        return _remember(self._memo, values, self._evaluate(values)) if found is None else found

    def _evaluate(self, values: tuple) -> tuple:
        variables: dict = {}
        for (variable, member), value in zip(self.reads, values, strict=True):
            if variable == NOW:
                variables[NOW] = value
            elif member is None:
                variables[variable] = _thawed(value)
            else:
                variables.setdefault(variable, {})[member] = list(value) if type(value) is tuple else value
        try:
            context = cel.Context(variables=variables, functions=FUNCTIONS)
        except Exception:  # a value the library cannot take (a lone surrogate in a model name): every rule fails
            return (None,) * len(self.rules)
        found = []
        for rule in self.rules:
            try:
                result = rule.program.execute(context)
            except Exception:  # a condition that cannot be evaluated on this request
                result = None
            found.append(result if type(result) is bool else None)  # anything but true or false: failed
        return tuple(found)


class PolicySet:
    """The active rules in order, compiled.

    The CEL library converts every value it is given (microseconds each), so values are
    converted as seldom as possible: a request whose values the rules read were all seen
    before is decided by one look-up; otherwise only the groups of rules whose own values
    changed run (rules reading the same fields are a group, converted once). Both memories
    are bounded.
    """

    def __init__(self, rules: Iterable[tuple[PolicyRuleEntry, frozenset]]):
        rules = list(rules)
        self._reads = _normalised(pair for _, reads in rules for pair in reads)
        whole = {variable for variable, member in self._reads if member is None}
        groups: dict[tuple, _Group] = {}
        placed = []  # (rule, its group, its index in the group)
        for rule, reads in rules:
            # A variable some rule reads whole is read whole by every rule (one value for the memories to key on).
            key = _normalised(
                (variable, None) if variable in whole else (variable, member) for variable, member in reads
            )
            group = groups.setdefault(key, _Group(key, []))
            placed.append((rule, group, len(group.rules)))
            group.rules.append(rule)
        self.rules: tuple[PolicyRuleEntry, ...] = tuple(rule for rule, _, _ in placed)
        self._placed = tuple(placed)
        for group in groups.values():
            group.take_from(self._reads)
        self._memo: dict[tuple, Decision] = {}

    def __bool__(self) -> bool:
        return bool(self.rules)

    def decide(self, context: RequestContext) -> Decision:
        if not self.rules:
            return ALLOWED
        values = _values(self._reads, context)
        decided = self._memo.get(values)
        return _remember(self._memo, values, self._evaluate(values)) if decided is None else decided

    def _evaluate(self, values: tuple) -> Decision:
        would_deny, failed = [], []
        known: dict[int, tuple] = {}
        for rule, group, index in self._placed:
            outcomes = known.get(id(group))
            if outcomes is None:
                outcomes = known[id(group)] = group.outcomes(values)
            matched = outcomes[index]
            if matched is None:  # fail closed for a deny, never an allow
                failed.append(rule.name)
                matched = rule.effect == "deny"
            if not matched:
                continue
            if rule.dry_run:
                if rule.effect == "deny":
                    would_deny.append(rule.name)
                continue
            if rule.effect == "deny":
                return Decision(rule, tuple(would_deny), "", tuple(failed))
            if rule.final:
                return Decision(None, tuple(would_deny), rule.name, tuple(failed))
        return Decision(None, tuple(would_deny), "", tuple(failed))


class RuleOutcome(NamedTuple):
    name: str
    effect: str
    dry_run: bool
    final: bool
    outcome: str  # "matched", "not matched", "failed: <why>", or "not reached"


def explain(rules: PolicySet, context: RequestContext) -> tuple[Decision, list[RuleOutcome]]:
    """The decision on ``context`` and what each rule made of it (the rule tester's answer): every rule is
    evaluated, those after the deciding one marked "not reached"."""
    decision = rules.decide(context)
    variables = {
        "request": dict(context.request), "client": dict(context.client), "key": dict(context.key),
        "identity": dict(context.identity), NOW: context.now,
    }  # fmt: skip
    try:
        cel_context = cel.Context(variables=variables, functions=FUNCTIONS)
    except Exception as error:
        cel_context, unreadable = None, _first_line(error)
    deciding = decision.denied_by.name if decision.denied_by is not None else decision.allowed_by
    outcomes, reached = [], True
    for rule in rules.rules:
        if not reached:
            outcomes.append(RuleOutcome(rule.name, rule.effect, rule.dry_run, rule.final, "not reached"))
            continue
        try:
            if cel_context is None:
                raise ValueError(unreadable)
            result = rule.program.execute(cel_context)
            if type(result) is not bool:
                raise ValueError(f"gives {type(result).__name__}, not true or false")
            outcome = "matched" if result else "not matched"
        except Exception as error:
            outcome = f"failed: {_first_line(error)}"
        outcomes.append(RuleOutcome(rule.name, rule.effect, rule.dry_run, rule.final, outcome))
        reached = rule.name != deciding
    return decision, outcomes


def context_from_json(data) -> RequestContext:
    """A request context from a JSON object (the rule tester's input): each variable an object of its fields, ``now``
    an ISO 8601 time; what is left out is empty (or the current minute). ``ValueError`` says what is wrong."""
    if not isinstance(data, dict):
        raise ValueError("Give a JSON object with request, client, key, identity and now.")
    unknown = sorted(set(data) - set(CONTEXT_FIELDS) - {NOW})
    if unknown:
        raise ValueError(f"Unknown name {', '.join(unknown)}: the context has {', '.join([*CONTEXT_FIELDS, NOW])}.")
    parts = {}
    for variable, fields in CONTEXT_FIELDS.items():
        given = data.get(variable, {})
        if not isinstance(given, dict):
            raise ValueError(f"{variable} must be an object of its fields.")
        extra = sorted(set(given) - set(fields))
        if extra:
            raise ValueError(f"{variable} has no field {extra[0]!r}; it has {', '.join(fields)}.")
        parts[variable] = {name: _field_value(variable, name, given.get(name)) for name in fields}
    moment = data.get(NOW)
    if moment is None:
        now = datetime.now(UTC).replace(second=0, microsecond=0)
    else:
        try:
            now = datetime.fromisoformat(str(moment))
        except ValueError:
            raise ValueError("now must be an ISO 8601 time, e.g. 2026-01-05T09:30:00Z.") from None
        if now.tzinfo is None:
            raise ValueError("now needs its offset (Z for UTC).")
    return RequestContext(parts["request"], parts["client"], parts["key"], parts["identity"], now)


def _field_value(variable: str, name: str, value):
    pair = (variable, name)
    if pair in LIST_FIELDS:
        value = [] if value is None else value
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ValueError(f"{variable}.{name} must be a list of strings.")
        return value
    if pair in INT_FIELDS:
        value = 0 if value is None else value
        if type(value) is not int:
            raise ValueError(f"{variable}.{name} must be a whole number.")
        return value
    value = "" if value is None else value
    if not isinstance(value, str):
        raise ValueError(f"{variable}.{name} must be a string.")
    return value


def _frozen(value):
    if type(value) is list:
        return tuple(value)
    if type(value) is dict:
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    return value


def _thawed(value):
    if type(value) is tuple and value and type(value[0]) is tuple:
        return {k: list(v) if type(v) is tuple else v for k, v in value}
    return value


def compile_rules(rows: Iterable) -> PolicySet:
    """The rule set of ``rows`` (``PolicyRule`` objects, in order). A row whose condition no longer compiles (the
    engine changed since it was saved) is kept as a rule that fails: a deny then refuses, an allow never matches."""
    entries = []
    for row in rows:
        try:
            program, read = compile_condition(row.condition)
        except ConditionError:
            program, read = _FAILING, frozenset()
        entry = PolicyRuleEntry(row.pk, row.name, row.effect, row.final, row.dry_run, row.message, program)
        entries.append((entry, read))
    return PolicySet(entries)


class _Failing:
    def execute(self, context):
        raise RuntimeError("the condition does not compile")


_FAILING = _Failing()


def _load_rules() -> PolicySet:
    from keys.models import PolicyRule

    return compile_rules(PolicyRule.objects.filter(is_active=True, draft=False).order_by("position", "pk"))


# The active rules as last loaded: a change is in force on every process within the refresh interval.
policy_table = RefreshingTable("policies", _load_rules, interval=lambda: settings.GATEWAY["CONFIG_REFRESH_SECONDS"])
