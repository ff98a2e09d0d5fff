"""The lock files' gate: the hash-pinned locks cover the hand-edited requirements, and .venv is what they pin.

requirements.txt and requirements-dev.txt are what people edit; requirements.lock and
requirements-dev.lock are what gets installed (`pip install --require-hashes`). This module
reads all of them, and `pip freeze`, and says what disagrees. Standard library only: dev.py
runs it with whatever python3 the machine has.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

REGENERATE = "python3 dev.py lock"
# Installed into every virtualenv by venv/pip themselves, never pinned in a lock.
UNLOCKED = frozenset({"pip", "setuptools", "wheel", "distribute"})
# pip's own options that say where to find packages; they do not name a requirement.
INDEX_OPTIONS = frozenset(
    "-i --index-url --extra-index-url --no-index -f --find-links --pre --prefer-binary --only-binary --no-binary"
    " --trusted-host".split()
)

_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_REQUIREMENT = re.compile(
    rf"^(?P<name>{_NAME})\s*(?:\[(?P<extras>[^\]]*)\])?\s*(?P<spec>[^;@]*?)\s*(?:;\s*(?P<marker>.+?))?\s*$"
)
_CLAUSE = re.compile(r"^(?P<op>===|==|!=|~=|<=|>=|<|>)\s*(?P<version>[A-Za-z0-9.*+!_-]+)$")
_HASH = re.compile(r"^(?P<alg>sha256|sha384|sha512):(?P<hex>[0-9a-f]+)$")
_HASH_LENGTH = {"sha256": 64, "sha384": 96, "sha512": 128}


class LockFormatError(ValueError):
    """A requirements or lock file line this gate cannot read (the message says which line)."""


@dataclass(frozen=True)
class Requirement:
    """One line of a hand-edited requirements file."""

    name: str
    specifier: str
    marker: str
    source: str  # "requirements.txt:12"

    @property
    def pinned_version(self) -> str | None:
        match = _CLAUSE.match(self.specifier)
        if match and match["op"] in ("==", "===") and "*" not in match["version"] and "," not in self.specifier:
            return match["version"]
        return None


@dataclass(frozen=True)
class Pin:
    """One entry of a lock file: an exact version, the hashes pip may accept for it, and why it is there."""

    name: str
    version: str
    hashes: tuple[str, ...]
    via: tuple[str, ...] = field(default=(), compare=False)
    line: int = field(default=0, compare=False)


def canonical_name(name: str) -> str:
    """PEP 503: Django, django and DJANGO are one project, as are zope.interface and zope-interface."""
    return re.sub(r"[-_.]+", "-", name).lower()


def canonical_version(version: str) -> str:
    """Enough of PEP 440 for pins: case, a leading v and trailing .0s of the release do not matter."""
    version = version.strip().lower().removeprefix("v")
    match = re.match(r"^(\d+(?:\.\d+)*)(.*)$", version)
    if not match:
        return version
    release = match[1].split(".")
    while len(release) > 1 and int(release[-1]) == 0:
        release.pop()
    return ".".join(str(int(part)) for part in release) + match[2]


def logical_lines(text: str) -> list[tuple[int, str]]:
    """Lines as pip reads them: comments dropped, backslash continuations joined; numbered from 1."""
    lines: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = re.sub(r"(^|\s)#.*$", "", raw)
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined = (pending + line).strip()
        pending = ""
        if joined:
            lines.append((start, joined))
    if pending.strip():
        lines.append((start, pending.strip()))
    return lines


def _via(text: str) -> dict[int, tuple[str, ...]]:
    """The "# via" annotations uv writes under each entry, keyed by the entry's first line."""
    annotations: dict[int, list[str]] = {}
    entry, collecting = 0, False
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped.startswith("#"):
            if stripped and not raw[:1].isspace():
                entry = number
            collecting = False
            continue
        comment = stripped.lstrip("#").strip()
        if comment == "via":
            collecting = True
        elif comment.startswith("via "):
            annotations.setdefault(entry, []).extend(item.strip() for item in comment[4:].split(","))
            collecting = False
        elif collecting and comment:
            annotations.setdefault(entry, []).append(comment)
    return {line: tuple(items) for line, items in annotations.items()}


def parse_lock(text: str, filename: str = "lock") -> dict[str, Pin]:
    """Every entry of a hash-pinned lock file, by canonical name; anything else in it is an error."""
    via = _via(text)
    pins: dict[str, Pin] = {}
    for number, line in logical_lines(text):
        tokens = line.split()
        hashes = []
        for token in [t for t in tokens if t.startswith("--hash")]:
            value = token.removeprefix("--hash").lstrip("=")
            match = _HASH.match(value)
            if not match or len(match["hex"]) != _HASH_LENGTH[match["alg"]]:
                raise LockFormatError(f"{filename}:{number}: {token!r} is not a sha256/sha384/sha512 hash")
            hashes.append(value)
        requirement = " ".join(t for t in tokens if not t.startswith("--hash"))
        match = _REQUIREMENT.match(requirement)
        clause = _CLAUSE.match(match["spec"]) if match else None
        if requirement.startswith("-") or not clause or clause["op"] not in ("==", "===") or "*" in clause["version"]:
            raise LockFormatError(f"{filename}:{number}: {line[:80]!r} is not an exact name==version pin")
        name = canonical_name(match["name"])
        if name in pins:
            raise LockFormatError(f"{filename}:{number}: {name} is pinned twice (first on line {pins[name].line})")
        pins[name] = Pin(name, clause["version"], tuple(hashes), via.get(number, ()), number)
    return pins


def parse_requirements(path: Path, _seen: frozenset[Path] = frozenset()) -> list[Requirement]:
    """The requirements a hand-edited file names, following -r includes (constraints are not requirements)."""
    path = path.resolve()
    if path in _seen:
        raise LockFormatError(f"{path.name} includes itself through -r")
    requirements: list[Requirement] = []
    for number, line in logical_lines(path.read_text()):
        source = f"{path.name}:{number}"
        option = re.match(r"^(-[A-Za-z]|--[A-Za-z-]+)(?:(?:=|\s+)(.*))?$", line) if line.startswith("-") else None
        if option and option[1] in ("-r", "--requirement") and option[2]:
            requirements += parse_requirements(path.parent / option[2].strip(), _seen | {path})
            continue
        if option and (option[1] in ("-c", "--constraint") or option[1] in INDEX_OPTIONS):
            continue
        match = None if option else _REQUIREMENT.match(line)
        clauses = [c.strip() for c in match["spec"].split(",")] if match and match["spec"] else []
        if not match or not all(_CLAUSE.match(c) for c in clauses):
            raise LockFormatError(f"{source}: {line[:80]!r} is not a name[extras] version-specifier line")
        requirements.append(
            Requirement(canonical_name(match["name"]), ",".join(clauses), match["marker"] or "", source)
        )
    return requirements


def parse_freeze(text: str) -> dict[str, str]:
    """`pip freeze` as {canonical name: version}; a package not installed from an index keeps its whole line."""
    installed: dict[str, str] = {}
    for _, line in logical_lines(text):
        name, separator, version = line.partition("==")
        if separator and re.fullmatch(_NAME, name.strip()):
            installed[canonical_name(name)] = version.strip()
        else:
            found = re.match(_NAME, line.removeprefix("-e").strip())
            installed[canonical_name(found[0]) if found else line] = line
    return installed


def lock_covers(requirements: list[Requirement], lock: dict[str, Pin], lock_name: str) -> list[str]:
    """Every requirement is in the lock (a pin at its version), every entry has hashes, none is left over."""
    problems = []
    named = {r.name for r in requirements}
    for requirement in requirements:
        pin = lock.get(requirement.name)
        if pin is None:
            if not requirement.marker:  # one whose marker leaves it out on Linux/3.11 is legitimately absent
                problems.append(f"{requirement.source}: {requirement.name} is not in {lock_name}")
        elif requirement.pinned_version and canonical_version(requirement.pinned_version) != canonical_version(
            pin.version
        ):
            problems.append(
                f"{requirement.source}: {requirement.name}=={requirement.pinned_version}"
                f" but {lock_name} pins {pin.name}=={pin.version}"
            )
    for pin in lock.values():
        if not pin.hashes:
            problems.append(f"{lock_name}:{pin.line}: {pin.name}=={pin.version} has no --hash")
        # uv notes "-r <file>" under what a file named: if no file names it now and nothing needs it, it is left over.
        stale = [v.removeprefix("-r ") for v in pin.via if v.startswith("-r ")]
        if stale and pin.name not in named and all(v.startswith(("-r ", "-c ")) for v in pin.via):
            problems.append(f"{lock_name}:{pin.line}: {pin.name} is there for {stale[0]}, which no longer names it")
    return problems


def lock_within(runtime: dict[str, Pin], dev: dict[str, Pin], runtime_name: str, dev_name: str) -> list[str]:
    """What deploys is what the tests ran on: each runtime entry is in the dev lock, same version and hashes."""
    problems = []
    for pin in runtime.values():
        other = dev.get(pin.name)
        if other is None:
            problems.append(f"{runtime_name}: {pin.name}=={pin.version} is not in {dev_name}")
        elif canonical_version(other.version) != canonical_version(pin.version):
            problems.append(f"{runtime_name}: {pin.name}=={pin.version} but {dev_name} pins {other.version}")
        elif set(other.hashes) != set(pin.hashes):
            problems.append(f"{runtime_name}: {pin.name}=={pin.version} has other hashes than in {dev_name}")
    return problems


def installed_matches(installed: dict[str, str], lock: dict[str, Pin], lock_name: str) -> list[str]:
    """The virtualenv holds exactly the lock's pins (pip and setuptools aside)."""
    problems = []
    for pin in lock.values():
        version = installed.get(pin.name)
        if version is None:
            problems.append(f".venv: {pin.name}=={pin.version} from {lock_name} is not installed")
        elif canonical_version(version) != canonical_version(pin.version):
            problems.append(f".venv: {pin.name} {version} is installed but {lock_name} pins {pin.version}")
    for name, version in sorted(installed.items()):
        if name not in lock and name not in UNLOCKED:
            problems.append(
                f".venv: {name} {version} is installed but not in {lock_name}"
                f" (add it to requirements-dev.txt, or .venv/bin/python -m pip uninstall {name})"
            )
    return problems


def lock_problems(root: Path) -> list[str]:
    """Where the lock files disagree with requirements*.txt or with each other; empty when they agree."""
    try:
        runtime = parse_lock((root / "requirements.lock").read_text(), "requirements.lock")
        dev = parse_lock((root / "requirements-dev.lock").read_text(), "requirements-dev.lock")
        return (
            lock_covers(parse_requirements(root / "requirements.txt"), runtime, "requirements.lock")
            + lock_covers(parse_requirements(root / "requirements-dev.txt"), dev, "requirements-dev.lock")
            + lock_within(runtime, dev, "requirements.lock", "requirements-dev.lock")
        )
    except (OSError, LockFormatError) as error:
        return [str(error)]


def venv_problems(root: Path, freeze: str) -> list[str]:
    """Where the virtualenv (its `pip freeze`) differs from requirements-dev.lock; empty when it holds exactly that."""
    try:
        dev = parse_lock((root / "requirements-dev.lock").read_text(), "requirements-dev.lock")
    except (OSError, LockFormatError) as error:
        return [str(error)]
    return installed_matches(parse_freeze(freeze), dev, "requirements-dev.lock")
