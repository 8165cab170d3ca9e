"""The serving load test's engine: many client threads, mixed good and bad requests, one model.

A :class:`Target` is a serving function (a request's payload → embeddings float32 [n, D]), the
exception type(s) it refuses bad input with, and its :class:`~serve_load_cases.Case`\\ s.
:func:`references` computes each good case's embedding once, single-threaded; :func:`drive` then
sends randomly chosen cases from ``clients`` threads at once and classifies every answer:

* ``ok``: a good request answered with its reference embedding (max abs difference <= atol);
* ``refused``: a bad request refused with the target's refusal type;
* ``wrong``: a good request answered with another embedding, or refused;
* ``accepted``: a bad request answered;
* ``crash``: any other exception.

:class:`RssSampler` samples the process's resident memory (``VmRSS``) while a phase runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from measure import rss_mib
from serve_load_cases import Case

OUTCOMES = ("ok", "refused", "wrong", "accepted", "crash")


@dataclass
class Target:
    """One serving path under test.

    Attributes:
      name: for the report.
      call: a request's payload → float32 [n, D] embeddings (raises to refuse it).
      refusals: the exception types a refusal must have.
      cases: the distinct requests sent.
      keep: objects that must stay alive while ``call`` is used (e.g. the loaded SavedModel).
    """

    name: str
    call: Callable[[np.ndarray], np.ndarray]
    refusals: tuple[type[BaseException], ...]
    cases: list[Case]
    keep: tuple = ()


@dataclass
class Tally:
    """What happened to the requests of one case.

    Attributes:
      counts: outcome → requests.
      seconds: every request's latency, seconds.
      message: the first refusal's message; problem: the first crash's, wrong or accepted
        answer's description.
    """

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    seconds: list[float] = field(default_factory=list)
    message: str = ""
    problem: str = ""

    def add(self, outcome: str, seconds: float, message: str) -> None:
        """Count one request (``seconds``: its latency)."""
        self.counts[outcome] += 1
        self.seconds.append(seconds)
        if outcome == "refused":
            self.message = self.message or message
        elif outcome != "ok":
            self.problem = self.problem or f"{outcome}: {message}"

    def merge(self, other: Tally) -> None:
        """Add ``other``'s requests to this tally."""
        for outcome, count in other.counts.items():
            self.counts[outcome] += count
        self.seconds.extend(other.seconds)
        self.message = self.message or other.message
        self.problem = self.problem or other.problem


def short_message(err: BaseException) -> str:
    """The informative line of an exception's message (TensorFlow's graph errors have many)."""
    text = getattr(err, "message", None) or str(err)
    skip = ("Graph execution error", "Detected at node", "<stack traces unavailable>")
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("[[") and not line.startswith(skip):
            return line.split(" [Op:")[0]
    return type(err).__name__


def attempt(
    target: Target, case: Case, reference: np.ndarray | None, atol: float
) -> tuple[str, float, str]:
    """Send ``case`` once: (outcome, latency in seconds, message or "")."""
    start = time.perf_counter()
    try:
        out = target.call(case.payload)
    except target.refusals as err:
        seconds = time.perf_counter() - start
        return ("wrong" if case.good else "refused"), seconds, short_message(err)
    except Exception as err:  # anything else is a crash of the serving path
        seconds = time.perf_counter() - start
        return "crash", seconds, f"{type(err).__name__}: {short_message(err)}"
    seconds = time.perf_counter() - start
    if not case.good:
        return "accepted", seconds, f"answered with shape {np.shape(out)}"
    out = np.asarray(out)
    if out.shape != reference.shape or not np.allclose(out, reference, rtol=0.0, atol=atol):
        diff = np.abs(out - reference).max() if out.shape == reference.shape else "n/a"
        return "wrong", seconds, f"shape {out.shape}, max |diff| {diff}"
    return "ok", seconds, ""


def references(target: Target, atol: float) -> tuple[dict[str, np.ndarray], list[str]]:
    """Each good case's embedding, computed once single-threaded; and the problems found.

    A problem: a good case refused or answered with non-finite or non-unit rows, or a good batch
    whose rows differ from its single-image cases' references by more than ``atol``.
    """
    refs, problems = {}, []
    for case in target.cases:
        if not case.good:
            continue
        try:
            out = np.asarray(target.call(case.payload))
        except Exception as err:
            problems.append(f"{case.name}: refused when sent alone ({short_message(err)})")
            continue
        norms = np.linalg.norm(out, axis=-1)
        if not np.all(np.isfinite(out)) or not np.allclose(norms, 1.0, atol=1e-4):
            problems.append(f"{case.name}: the embedding is not finite and of unit length")
        refs[case.name] = out
    for case in target.cases:
        if case.parts and case.name in refs and all(p in refs for p in case.parts):
            stacked = np.concatenate([refs[p] for p in case.parts])
            diff = np.abs(refs[case.name] - stacked).max()
            if diff > atol:
                problems.append(f"{case.name}: rows differ from the single crops' by {diff:.2e}")
    return refs, problems


def _client(
    target: Target,
    refs: dict[str, np.ndarray],
    count: int | None,
    deadline: float | None,
    seed: tuple[int, int],
    atol: float,
) -> dict[str, Tally]:
    """One client's requests: ``count`` of them, or until ``deadline`` (perf_counter seconds)."""
    rng = np.random.default_rng(seed)
    tallies: dict[str, Tally] = {}
    sent = 0
    while (count is None or sent < count) and (deadline is None or time.perf_counter() < deadline):
        case = target.cases[int(rng.integers(len(target.cases)))]
        outcome = attempt(target, case, refs.get(case.name), atol)
        tallies.setdefault(case.name, Tally()).add(*outcome)
        sent += 1
    return tallies


def drive(
    target: Target,
    refs: dict[str, np.ndarray],
    clients: int,
    requests: int = 0,
    duration_s: float = 0.0,
    seed: int = 0,
    atol: float = 1e-5,
) -> tuple[dict[str, Tally], float]:
    """Send requests from ``clients`` threads at once; ({case name: tally}, wall seconds).

    Args:
      requests: total requests, split evenly over the clients (used when ``duration_s`` is 0).
      duration_s: when > 0, every client sends until this many seconds have passed.
      seed: each client draws its cases from its own generator, seeded (seed, client index).
    """
    merged = {case.name: Tally() for case in target.cases}
    lock = threading.Lock()

    def run(index: int, count: int | None, deadline: float | None) -> None:
        try:
            tallies = _client(target, refs, count, deadline, (seed, index), atol)
        except BaseException as err:  # the client thread itself died: count it as a crash
            tallies = {"(client thread)": Tally()}
            tallies["(client thread)"].add("crash", 0.0, f"{type(err).__name__}: {err}")
        with lock:
            for name, tally in tallies.items():
                merged.setdefault(name, Tally()).merge(tally)

    start = time.perf_counter()
    deadline = start + duration_s if duration_s > 0 else None
    threads = []
    for index in range(clients):
        count = None if deadline else requests // clients + (index < requests % clients)
        threads.append(threading.Thread(target=run, args=(index, count, deadline)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return merged, time.perf_counter() - start


class RssSampler:
    """``with RssSampler(interval_s) as s:`` samples VmRSS (MiB) every ``interval_s`` seconds.

    After the block, ``samples`` holds the values in order (one taken at entry, one at exit).
    """

    def __init__(self, interval_s: float = 0.05):
        self.interval_s = interval_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.samples.append(rss_mib())

    def __enter__(self) -> RssSampler:
        self.samples.append(rss_mib())
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(rss_mib())

    def start_end_mib(self) -> tuple[float, float]:
        """Resident memory (MiB) at the phase's start and end: the medians of the first and the
        last tenth of the samples (a single sample is noisy)."""
        k = max(1, len(self.samples) // 10)
        return float(np.median(self.samples[:k])), float(np.median(self.samples[-k:]))

    def growth_pct(self) -> float:
        """Growth of the resident memory over the phase, in % of its start
        (:meth:`start_end_mib`)."""
        start, end = self.start_end_mib()
        return 100.0 * (end - start) / start


def totals(*phases: dict[str, Tally]) -> dict[str, int]:
    """Outcome counts summed over every case of the phases."""
    out = dict.fromkeys(OUTCOMES, 0)
    for phase in phases:
        for tally in phase.values():
            for outcome, count in tally.counts.items():
                out[outcome] += count
    return out


def latencies_ms(phase: dict[str, Tally]) -> np.ndarray:
    """Every request's latency in a phase, milliseconds, float64 [requests]."""
    return 1e3 * np.array([s for tally in phase.values() for s in tally.seconds], np.float64)
