"""The drift watch: is the line still like the data the model was trained on?

At export (`build_reference`) the model file gets a `DriftReference`: the ``features`` output (the
penultimate features, projected by a PCA fitted on training features, computed inside the graph)
and the band energies of a seeded sample of training inputs, with their operating conditions. The
service (`DriftMonitor`) keeps the same two things for a sliding window of recent requests and
compares window and reference with a two-sample test: the maximum mean discrepancy (MMD) with a
Gaussian (RBF) kernel whose bandwidth is the median pairwise distance, and a permutation p-value.

Why not a library: alibi-detect 0.13 (MMDDrift) needs a TensorFlow or PyTorch backend and its base
install pulls transformers, opencv, numba and pandas and pins numpy to 1.26 (this project is on
2.x); frouros 0.9 pins numpy and scipy below the versions installed here. The test is 30 lines of
numpy (`mmd_test`), tested against known cases in `tests/test_drift.py`, and computes every
permutation from one kernel matrix in a single matrix product.

Everything here is numpy and runs off the request path: the service's batch thread only hands the
batch's outputs over (`DriftMonitor.observe` appends to a queue); the test runs in the monitor's
own low-priority thread.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from deploy.metadata import FEATURES_OUTPUT, DriftReference

log = logging.getLogger("pipeline.serve")

CONDITIONS = ("rpm", "load")
N_BANDS = 8
REFERENCE_SAMPLES = 256
SUMMARISED_INPUTS = 2048
PROJECTION_DIMS = 32
OUT_OF_RANGE_TOLERANCE = 0.02  # of the trained span, beyond [min, max] of the training split


# ----------------------------------------------------------------------------- the test


@dataclass(frozen=True)
class MmdResult:
    """One two-sample test: the unbiased MMD^2 estimate, its permutation p-value, the kernel bandwidth."""

    score: float
    p_value: float
    bandwidth: float
    permutations: int


def mmd_test(x: np.ndarray, y: np.ndarray, *, permutations: int = 500, seed: int = 0) -> MmdResult:
    """Two-sample test of whether the rows of `x` and of `y` come from one distribution.

    The statistic is the unbiased estimate of MMD^2 with the kernel exp(-d^2 / (2 sigma^2)), sigma
    the median distance between the pooled samples (the median heuristic). The p-value is
    (1 + #{permutations with MMD^2 >= the observed}) / (1 + permutations): the rows of the pooled
    sample are reassigned to two groups of the same sizes at random, and all assignments are scored
    at once from one kernel matrix.

    Raises:
        ValueError: fewer than two rows in a sample, or samples of different widths.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"need two (n, d) samples of one width, got {x.shape} and {y.shape}")
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError(f"need at least two rows in each sample, got {n} and {m}")
    z = np.concatenate([x, y])
    total = n + m
    sq = np.einsum("ij,ij->i", z, z)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * (z @ z.T), 0.0)
    np.fill_diagonal(d2, 0.0)
    off = d2[np.triu_indices(total, 1)]
    positive = off[off > 0]
    sigma2 = float(np.median(positive)) if positive.size else 1.0
    kernel = np.exp(-d2 / (2 * sigma2))
    rng = np.random.default_rng(seed)
    # Row 0: the observed split; the others: random splits of the pooled rows into n and m.
    member = np.zeros((permutations + 1, total))
    member[0, :n] = 1.0
    if permutations:
        picks = rng.permuted(np.tile(np.arange(total), (permutations, 1)), axis=1)[:, :n]
        member[np.repeat(np.arange(1, permutations + 1), n), picks.ravel()] = 1.0
    km = member @ kernel
    sxx = np.einsum("ij,ij->i", km, member)  # sum over pairs inside x (diagonal included)
    row = km.sum(axis=1)  # sum over (x, all)
    syy = kernel.sum() - 2 * row + sxx
    sxy = row - sxx
    mmd2 = (sxx - n) / (n * (n - 1)) + (syy - m) / (m * (m - 1)) - 2 * sxy / (n * m)
    p_value = (1 + int(np.sum(mmd2[1:] >= mmd2[0]))) / (1 + permutations)
    return MmdResult(float(mmd2[0]), float(p_value), math.sqrt(sigma2), permutations)


# ----------------------------------------------------------------------------- the reference, at export


def fit_projection(features: np.ndarray, dims: int = PROJECTION_DIMS) -> tuple[np.ndarray, np.ndarray, float]:
    """PCA of training features: (mean (D,), components (D, k), fraction of the variance kept),
    k = min(`dims`, D, N - 1). The sign of each axis is fixed (largest loading positive)."""
    x = np.asarray(features, dtype=np.float64)
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    k = max(1, min(dims, x.shape[1], len(x) - 1))
    axes = vt[:k]
    signs = np.sign(axes[np.arange(k), np.abs(axes).argmax(axis=1)])
    axes = axes * np.where(signs == 0, 1, signs)[:, None]
    variance = s**2
    kept = float(variance[:k].sum() / variance.sum()) if variance.sum() > 0 else 1.0
    return mean.astype(np.float32), axes.T.astype(np.float32), kept


def row_frequencies(transform: Any, window_length: int) -> np.ndarray:
    """Hz of each row of the network input of a time-frequency `transform` (row 0 the lowest),
    following the bilinear resize of its (frequency x time) magnitude to the image size."""
    freqs = np.asarray(transform.frequencies(window_length), dtype=np.float64)
    size = int(transform.image_size)
    position = (np.arange(size) + 0.5) * len(freqs) / size - 0.5
    return np.interp(position, np.arange(len(freqs)), freqs)


def band_layout(
    transform: Any, window_length: int | None, n_bands: int = N_BANDS
) -> tuple[tuple[int, ...], tuple[float, ...], str]:
    """(row boundaries, band edges, unit): `n_bands` bands of equal rows of the network input; edges
    in Hz for a time-frequency transform (halfway between the rows either side), rows otherwise."""
    size = int(transform.image_size)
    n_bands = max(1, min(n_bands, size))
    rows = tuple(int(r) for r in np.linspace(0, size, n_bands + 1).round())
    if not getattr(transform, "has_frequency_axis", False) or window_length is None:
        return rows, tuple(float(r) for r in rows), "row"
    freqs = np.asarray(transform.frequencies(window_length), dtype=np.float64)
    position = np.asarray(rows, dtype=np.float64) * len(freqs) / size - 0.5
    edges = np.interp(position, np.arange(len(freqs)), freqs)
    return rows, tuple(float(e) for e in edges), "Hz"


def band_energies(inputs: np.ndarray, rows: Sequence[int]) -> np.ndarray:
    """(N, C, H, W) network inputs -> (N, B): the mean over channels and time (columns) of each band
    of rows. (N, H) inputs are taken as that mean already (a raw-signal model's ``profile`` output)."""
    x = np.asarray(inputs, dtype=np.float32)
    profile = x if x.ndim == 2 else x.mean(axis=(1, 3))  # (N, H)
    bounds = np.asarray(rows)
    sums = np.add.reduceat(profile, bounds[:-1], axis=1)
    return (sums / np.diff(bounds)).astype(np.float32)


def reference_pick(n: int, count: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded sample of `count` of `n` items (all when fewer)."""
    if n <= count:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, count, replace=False))


def session_features(session: Any, inputs: np.ndarray, *, batch: int = 64) -> np.ndarray:
    """The ``features`` output of an ONNX Runtime `session` for network inputs (N, C, H, W)."""
    from deploy.onnx_export import INPUT_NAME

    out = [
        session.run([FEATURES_OUTPUT], {INPUT_NAME: np.ascontiguousarray(inputs[i : i + batch], np.float32)})[
            0
        ]
        for i in range(0, len(inputs), batch)
    ]
    return np.concatenate(out).astype(np.float32)


def build_reference(
    session: Any,
    inputs: np.ndarray,
    *,
    transform: Any,
    window_length: int | None,
    conditions: np.ndarray | None = None,
    condition_range: Mapping[str, tuple[float, float]] | None = None,
    recording: np.ndarray | None = None,
    raw_dim: int = 0,
    explained_variance: float = 0.0,
    samples: int = REFERENCE_SAMPLES,
    seed: int = 0,
) -> DriftReference:
    """The drift reference of an exported model with a ``features`` output.

    Args:
        session: an ONNX Runtime session on the model (its own features: a variant gets its own).
        inputs: training network inputs (N, C, H, W) summarised: the band statistics are over all
            of them, the stored sample is a seeded pick of `samples` of them.
        transform: the model's transform (band edges in Hz from its frequencies).
        conditions: (N, len(CONDITIONS)) rpm and load of each input (NaN unknown), or None.
        condition_range: per condition, [min, max] over the whole training split.
        recording: (N,) the training recording of each input, or None (kept as the reference's
            `groups`, renumbered 0..R-1).
    """
    rows, edges, unit = band_layout(transform, window_length)
    bands = band_energies(inputs, rows)
    pick = reference_pick(len(inputs), samples, seed)
    features = session_features(session, inputs[pick])
    keep_conditions = conditions is not None and bool(np.isfinite(conditions).any())
    return DriftReference(
        features=features,
        bands=bands[pick],
        band_rows=rows,
        band_edges=edges,
        band_unit=unit,
        band_mean=tuple(float(v) for v in bands.mean(axis=0)),
        band_std=tuple(float(v) for v in bands.std(axis=0)),
        conditions=np.asarray(conditions, np.float32)[pick] if keep_conditions else None,
        condition_names=CONDITIONS if keep_conditions else (),
        condition_range=dict(condition_range or {}) if keep_conditions else {},
        raw_dim=raw_dim,
        explained_variance=explained_variance,
        n_summarised=int(len(inputs)),
        seed=seed,
        groups=None if recording is None else np.unique(np.asarray(recording)[pick], return_inverse=True)[1],
    )


# ----------------------------------------------------------------------------- the watch, in the service


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def condition_vector(condition: Mapping[str, float] | None) -> np.ndarray:
    """A request's condition as (rpm, load), NaN for what it does not give."""
    condition = condition or {}
    return np.array([float(condition.get(name, math.nan)) for name in CONDITIONS], dtype=np.float64)


class DriftMonitor:
    """A sliding window of recent requests' features and band energies, tested against a reference.

    Args:
        reference: the model's `DriftReference`.
        window: requests' windows (or images) in the sliding window.
        alpha: alarm when the test's p-value is below it.
        permutations: of the permutation test.
        step: test again after this many new samples (default: a quarter of the window); the first
            test runs when the window is full.
        neighbours: the fewest training recordings nearest to the requests' conditions that a
            window is judged against (default: a quarter of the reference's recordings, at least
            16; samples, for a reference without recordings). See `neighbours_of`.
        on_update: called with the status after every test (the service sets its gauges there).
        label: the model version, in the status.
    """

    def __init__(
        self,
        reference: DriftReference,
        *,
        window: int = 200,
        alpha: float = 0.01,
        permutations: int = 200,
        step: int | None = None,
        neighbours: int | None = None,
        on_update: Callable[[dict[str, Any]], None] | None = None,
        label: str = "",
    ) -> None:
        if window < 2:
            raise ValueError(f"the drift window needs at least 2 samples, got {window}")
        self.reference = reference
        self.window, self.alpha, self.permutations = int(window), float(alpha), int(permutations)
        self.step = max(1, step if step is not None else self.window // 4)
        recordings = len(np.unique(reference.groups)) if reference.groups is not None else reference.size
        self.neighbours = neighbours or max(16, recordings // 4)
        self.on_update, self.label = on_update, label
        # The test space: both blocks weighted alike (total variance about 1 each in the reference).
        self._band_mean = np.asarray(reference.band_mean, np.float64)
        self._band_std = np.where(np.asarray(reference.band_std) > 0, reference.band_std, 1.0)
        spread = float(np.sqrt(np.asarray(reference.features, np.float64).var(axis=0).sum()))
        self._feature_scale = spread if spread > 0 else 1.0
        self._ref_space = self._space(reference.features, reference.bands)
        self._ref_conditions = self._scaled_conditions(reference.conditions)
        # Per training recording (each sample its own, for a reference without recordings): its
        # (scaled) condition and the one sample of it that a condition-matched test uses.
        groups = reference.groups if reference.groups is not None else np.arange(reference.size)
        first = np.unique(np.asarray(groups), return_index=True)[1]
        rng = np.random.default_rng(reference.seed)
        self._group_sample = np.array(
            [rng.choice(np.flatnonzero(groups == groups[i])) for i in first], dtype=np.int64
        )
        self._group_conditions = (
            None if self._ref_conditions is None else self._ref_conditions[self._group_sample]
        )
        self._pending: collections.deque[tuple[np.ndarray, np.ndarray, np.ndarray]] = collections.deque(
            maxlen=4096
        )
        self._features: collections.deque[np.ndarray] = collections.deque(maxlen=self.window)
        self._bands: collections.deque[np.ndarray] = collections.deque(maxlen=self.window)
        self._conditions: collections.deque[np.ndarray] = collections.deque(maxlen=self.window)
        self._new = 0
        self._observed = 0  # rows moved into the window so far
        self._tested_at = 0  # rows observed when the last test ran
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state: dict[str, Any] = {
            "score": None,
            "p_value": None,
            "p_value_matched": None,
            "p_value_all": None,
            "alarm": False,
            "since": None,
            "evaluated_at": None,
            "evaluations": 0,
            "alarmed_evaluations": 0,
            "bandwidth": None,
            "compared_with": None,
            "matched_on": [],
            "bands": [],
            "conditions": {},
            "seconds": None,
        }

    # -- the request side: cheap, never blocks
    def observe(self, features: np.ndarray, inputs: np.ndarray, conditions: Sequence[np.ndarray]) -> None:
        """Hand over one batch's rows: ``features`` output (n, k), network inputs (n, C, H, W) and
        each row's condition vector (`condition_vector`). Only appends to a queue."""
        self._pending.append(
            (features, inputs, np.asarray(conditions, np.float64).reshape(len(features), -1))
        )
        self._wake.set()

    # -- the monitor's thread
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="drift", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        with contextlib.suppress(AttributeError, OSError):  # Linux: this thread only, below the others
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        while not self._stop.is_set():
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            try:
                self.process()
            except Exception:  # noqa: BLE001 - the watch must never take the service down
                log.exception("drift test failed")

    def process(self) -> bool:
        """Move the queued rows into the window and test when due; True when a test ran. (The
        monitor's thread calls it; tests call it directly.)"""
        while self._pending:
            features, inputs, conditions = self._pending.popleft()
            bands = band_energies(inputs, self.reference.band_rows)
            for row in range(len(features)):
                self._features.append(np.asarray(features[row], np.float32))
                self._bands.append(bands[row])
                self._conditions.append(conditions[row])
            self._new += len(features)
            with self._lock:
                self._observed += len(features)
        if len(self._features) < self.window or self._new < self.step:
            return False
        self._new = 0
        self._evaluate()
        with self._lock:  # after the test: observed - tested_at < step says the window is judged
            self._tested_at = self._observed
        return True

    def _space(self, features: np.ndarray, bands: np.ndarray) -> np.ndarray:
        feats = np.asarray(features, np.float64) / self._feature_scale
        z = (np.asarray(bands, np.float64) - self._band_mean) / self._band_std / math.sqrt(bands.shape[1])
        return np.concatenate([feats, z], axis=1)

    def _scaled_conditions(self, values: np.ndarray | None) -> np.ndarray | None:
        """(n, 2) rpm and load -> divided by the trained span from its minimum (NaN stays NaN)."""
        if values is None or self.reference.conditions is None:
            return None
        out = np.full((len(values), len(CONDITIONS)), np.nan)
        for j, name in enumerate(CONDITIONS):
            if name in self.reference.condition_range:
                lo, hi = self.reference.condition_range[name]
                out[:, j] = (np.asarray(values, np.float64)[:, j] - lo) / (hi - lo if hi > lo else 1.0)
        return out

    def matched_dims(self, conditions: np.ndarray) -> list[int]:
        """The conditions (columns) a window is judged on: those that every request in it declares,
        inside the trained range (`OUT_OF_RANGE_TOLERANCE`), and that the reference knows. None when
        a request declares none or one beyond the trained range: then the whole reference is the
        yardstick (the training data says nothing of a speed it never saw)."""
        if self._ref_conditions is None or not len(conditions):
            return []
        known = np.isfinite(conditions).all(axis=0) & np.isfinite(self._ref_conditions).all(axis=0)
        scaled = self._scaled_conditions(conditions)
        assert scaled is not None
        with np.errstate(invalid="ignore"):
            inside = ((scaled >= -OUT_OF_RANGE_TOLERANCE) & (scaled <= 1 + OUT_OF_RANGE_TOLERANCE)).all(
                axis=0
            )
        return [int(j) for j in np.flatnonzero(known & inside)]

    def neighbours_of(self, conditions: np.ndarray, dims: list[int]) -> np.ndarray:
        """The training recordings (`DriftReference.groups`; samples, for a reference without them)
        a window of requests with these conditions is judged against: for each request its k
        nearest recordings (rpm and load divided by their trained span, on the columns `dims`), k
        the smallest that brings together at least `neighbours` recordings. So a window at one
        planned speed meets the recordings nearest that speed, and a window spread over the trained
        conditions the recordings near each of its requests."""
        assert self._group_conditions is not None
        scaled = self._scaled_conditions(conditions)
        assert scaled is not None
        ref = self._group_conditions[:, dims]
        dist = ((scaled[:, dims][:, None, :] - ref[None, :, :]) ** 2).sum(axis=2)
        order = np.argsort(dist, axis=1, kind="stable")
        want = min(self.neighbours, len(ref))
        seen = np.zeros(len(ref), dtype=bool)
        for k in range(len(ref)):
            seen[order[:, k]] = True
            if seen.sum() >= want:
                break
        return np.flatnonzero(seen)

    def judged(
        self, space: np.ndarray, conditions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, list[str], int]:
        """What the test compares: (reference, window) samples, the conditions matched on, and how
        many reference samples the window is judged against.

        Without conditions (or with one beyond the trained range): the whole reference and the window
        as they are. With them: one sample of each of the training recordings among the `neighbours`
        nearest to some request's condition, and both those and the window minus a linear trend in
        the conditions fitted on those samples. One sample per recording: windows of one recording
        are alike (same load, gain, resonance, class), so the permutation test needs independent
        reference samples just as the requests are; a window at one planned speed then meets the
        training recordings of about that speed, and the slope of the features with speed among
        them is no alarm either. A change the conditions do not explain (noise, a new fault) is."""
        dims = self.matched_dims(conditions)
        if not dims:
            return self._ref_space, space, [], self.reference.size
        chosen = self._group_sample[self.neighbours_of(conditions, dims)]
        assert self._ref_conditions is not None
        scaled = self._scaled_conditions(conditions)
        assert scaled is not None

        def design(values: np.ndarray) -> np.ndarray:
            return np.concatenate([np.ones((len(values), 1)), values[:, dims]], axis=1)

        basis = design(self._ref_conditions[chosen])
        if np.linalg.matrix_rank(basis) < basis.shape[1]:  # all at one condition: no slope to remove
            basis, trend_window = basis[:, :1], design(scaled)[:, :1]
        else:
            trend_window = design(scaled)
        beta = np.linalg.lstsq(basis, self._ref_space[chosen], rcond=None)[0]
        reference = self._ref_space[chosen] - basis @ beta
        window = space - trend_window @ beta
        return reference, window, [CONDITIONS[j] for j in dims], int(len(chosen))

    def _outside(self, conditions: np.ndarray) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for j, name in enumerate(CONDITIONS):
            column = conditions[:, j]
            given = column[np.isfinite(column)]
            if name not in self.reference.condition_range or not given.size:
                continue
            lo, hi = self.reference.condition_range[name]
            margin = OUT_OF_RANGE_TOLERANCE * (hi - lo)
            beyond = given[(given < lo - margin) | (given > hi + margin)]
            if beyond.size:
                out[name] = {
                    "requests": int(beyond.size),
                    "trained": [lo, hi],
                    "seen": [float(beyond.min()), float(beyond.max())],
                }
        return out

    def _evaluate(self) -> None:
        start = time.perf_counter()
        features = np.stack(self._features)
        bands = np.stack(self._bands)
        conditions = np.stack(self._conditions)
        window_space = self._space(features, bands)
        reference, window, matched_on, compared_with = self.judged(window_space, conditions)
        with _one_blas_thread():
            result = mmd_test(reference, window, permutations=self.permutations)
            # With conditions, an intersection-union test: the alarm needs the window to differ from
            # the reference matched on its conditions AND from the whole reference (p = the larger).
            p_all = (
                mmd_test(self._ref_space, window_space, permutations=self.permutations).p_value
                if matched_on
                else result.p_value
            )
        p_value = max(result.p_value, p_all)
        # Band change in reference std units: against the reference, or what it expects at the conditions.
        width = len(self.reference.band_mean)
        change = (window[:, -width:].mean(axis=0) - reference[:, -width:].mean(axis=0)) * math.sqrt(width)
        edges = self.reference.band_edges
        moved = [
            {
                "range": [round(edges[b], 1), round(edges[b + 1], 1)],
                "unit": self.reference.band_unit,
                "change_std": round(float(change[b]), 3),
            }
            for b in np.argsort(-np.abs(change))[:3]
        ]
        alarm = p_value < self.alpha
        outside = self._outside(conditions)
        with self._lock:
            state = self._state
            state.update(
                score=result.score,
                p_value=p_value,
                p_value_matched=result.p_value if matched_on else None,
                p_value_all=p_all,
                bandwidth=result.bandwidth,
                evaluated_at=_now(),
                evaluations=state["evaluations"] + 1,
                compared_with=compared_with,
                matched_on=matched_on,
                bands=moved,
                conditions={
                    "requests_with_condition": int(np.isfinite(conditions).any(axis=1).sum()),
                    "outside_trained_range": outside,
                },
                seconds=round(time.perf_counter() - start, 4),
            )
            if alarm:
                state["alarmed_evaluations"] += 1
                state["since"] = state["since"] or state["evaluated_at"]
            else:
                state["since"] = None
            state["alarm"] = alarm
        if self.on_update is not None:
            self.on_update(self.status())

    def status(self) -> dict[str, Any]:
        """What ``GET /v1/drift`` answers."""
        with self._lock:
            state = dict(self._state)
            n = len(self._features)
            counts = {"observed": self._observed, "tested_at": self._tested_at}
        return {
            "available": True,
            "model_version": self.label,
            "window_size": self.window,
            "n_in_window": n,
            "alpha": self.alpha,
            **state,
            **counts,
            "step": self.step,
            "reference_samples": self.reference.size,
            "test": f"MMD (RBF kernel, median heuristic), {self.permutations} permutations",
        }


@contextlib.contextmanager
def _one_blas_thread() -> Any:
    """Keep numpy's BLAS to one thread during a test (the other cores serve requests), when
    threadpoolctl is installed."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield
