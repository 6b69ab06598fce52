"""The inference service on the line: FastAPI + uvicorn around one `OnnxInferencer`.

Requests are gathered by a micro-batcher (up to `max_batch` windows or images, or `max_wait_ms`)
and run as one batch: the signal-to-image transform and the network both see the whole batch.
A request larger than a batch is split across batches, fairly (see `Batcher`). Bodies, windows,
pixels and body time are bounded (`ServiceSettings`); images decode off the event loop.
Everything that can be done once is done at start-up or on reload: the ONNX Runtime session, the
transform (with its CWT filter bank), the parsed metadata, a warm-up batch.

Endpoints: POST /v1/predict/signal, POST /v1/predict/image, GET /v1/model, GET /v1/drift,
/healthz, /readyz, /metrics (Prometheus), POST /v1/admin/reload (API key required).

The drift watch (`deploy.drift.DriftMonitor`, one per served model that has a drift reference)
gets each batch's ``features`` output and inputs after the batch has answered its requests, and
tests them in its own thread.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from starlette.exceptions import HTTPException

from deploy.drift import DriftMonitor, condition_vector
from deploy.inferencer import BatchOutput, OnnxInferencer
from deploy.limits import image_pixels, reload_allowed
from deploy.signal_request import RequestError, probabilities
from signal2image.errors import UserError
from signal2image.imageio import decode_image

log = logging.getLogger("pipeline.serve")
disable_created_metrics()  # no *_created series: they double the exposition and nobody graphs them

INLINE_BODY_BYTES = 64 << 10  # larger signal bodies are parsed and cut in a worker thread
RELOAD_BODY_BYTES = 1 << 16
IMAGE_TYPES = ("image/png", "image/jpeg", "image/bmp", "image/tiff", "image/webp", "application/octet-stream")


@dataclass(frozen=True)
class ServiceSettings:
    """How the service runs (the CLI `pipeline serve` fills it).

    Attributes:
        model: an .onnx path or a registry URI (``models:/NAME@ALIAS``).
        tracking_uri: MLflow tracking URI for registry models.
        max_batch: most windows/images run as one batch.
        max_wait_ms: longest a request waits for others to join its batch.
        batching: False runs every request on its own (for comparison).
        api_key: when set, required (header ``X-API-Key``) for reload, and for predict when
            `protect_predict`.
        max_body_bytes: larger request bodies get 413.
        max_windows: most windows (signal) or images per request; more get 413.
        max_pixels: most pixels per image, and in all the images of one request, read from the
            headers before decoding; more get 413.
        body_timeout_s: longest wait for the next chunk of a request body; then 408.
        model_root: reload may load .onnx files inside this folder (symlinks resolved); None: only
            registry URIs and the source the service started with.
        resample: a signal at another sample rate is resampled (polyphase) instead of refused.
        threads: ONNX Runtime intra-op threads (None: ONNX Runtime's default).
        providers: execution providers (None: CUDA when usable, else the CPU).
        drift: watch drift against the model's reference (when it has one).
        drift_window: windows (or images) of recent requests in the drift test.
        drift_alpha: alarm when the drift test's p-value is below it.
        drift_permutations: permutations of the drift test.
    """

    model: str
    tracking_uri: str | None = None
    max_batch: int = 32
    max_wait_ms: float = 5.0
    batching: bool = True
    api_key: str | None = None
    protect_predict: bool = False
    max_body_bytes: int = 16 << 20
    max_windows: int = 1024
    max_pixels: int = 40_000_000
    body_timeout_s: float = 10.0
    model_root: str | None = None
    resample: bool = False
    threads: int | None = None
    providers: list[str] | None = None
    drift: bool = True
    drift_window: int = 200
    drift_alpha: float = 0.01
    drift_permutations: int = 200


class ApiError(Exception):
    """A client error: HTTP status, the offending field and a message that says the fix."""

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(message)
        self.status, self.field, self.message = status, field, message


class Metrics:
    """Prometheus metrics of one service instance (its own registry: several apps can coexist)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "pipeline_requests_total",
            "Requests by endpoint and status code",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "pipeline_errors_total",
            "Requests answered with an error, by endpoint and field",
            ["endpoint", "field"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "pipeline_request_latency_seconds",
            "Time from request to response",
            ["endpoint"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.batch_size = Histogram(
            "pipeline_batch_size",
            "Windows or images per model run",
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        )
        self.batch_requests = Histogram(
            "pipeline_batch_requests",
            "Requests served by one model run",
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64),
        )
        self.queue_time = Histogram(
            "pipeline_queue_time_seconds",
            "Time a request waited for its batch to start",
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
        )
        self.model_info = Gauge(
            "pipeline_model_info",
            "The model being served",
            ["name", "version", "source"],
            registry=self.registry,
        )
        self.reloads = Counter(
            "pipeline_reloads_total", "Model reloads by outcome", ["outcome"], registry=self.registry
        )
        self.drift_score = Gauge(
            "drift_score",
            "MMD^2 between the recent requests and the training reference (GET /v1/drift)",
            ["model_version"],
            registry=self.registry,
        )
        self.drift_p_value = Gauge(
            "drift_p_value",
            "Permutation p-value of the drift test",
            ["model_version"],
            registry=self.registry,
        )
        self.drift_alarm = Gauge(
            "drift_alarm",
            "1 while the drift test's p-value is below --drift-alpha",
            ["model_version"],
            registry=self.registry,
        )

    def clear_drift(self) -> None:
        for gauge in (self.drift_score, self.drift_p_value, self.drift_alarm):
            gauge.clear()

    def set_drift(self, status: dict[str, Any]) -> None:
        version = str(status.get("model_version", ""))
        if status.get("score") is not None:
            self.drift_score.labels(version).set(status["score"])
            self.drift_p_value.labels(version).set(status["p_value"])
        self.drift_alarm.labels(version).set(1 if status.get("alarm") else 0)


@dataclass(eq=False)
class _Request:
    """One request in the batcher's line: its inputs are handed out in pieces of at most `max_batch`,
    and its answer is assembled, in order, when every piece has run."""

    inputs: Any  # raw windows (n, C, L) as an array, or decoded images as a list
    kind: str  # "windows" or "images"
    inferencer: OnnxInferencer  # the model the request was checked against: it also runs it
    enqueued: float
    seq: int  # arrival order (ties of the fair order)
    future: asyncio.Future[np.ndarray] = field(repr=False)
    condition: np.ndarray | None = None  # (rpm, load) the request declared, NaN for what it did not
    taken: int = 0  # inputs handed to model runs so far
    done: int = 0  # inputs whose run has finished
    probs: np.ndarray | None = None
    problems: dict[int, str] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.inputs)


@dataclass(frozen=True)
class _Piece:
    request: _Request
    start: int
    stop: int

    @property
    def inputs(self) -> Any:
        whole = self.start == 0 and self.stop == self.request.size
        return self.request.inputs if whole else self.request.inputs[self.start : self.stop]


class Batcher:
    """Gathers concurrent requests into model runs of at most `max_batch` samples, run one at a time
    in one worker thread (the event loop stays free to accept requests meanwhile).

    Fairness: a request larger than the room left in a run is split; each run is filled from the
    waiting requests in the order of the fewest inputs served so far (then arrival), so a small
    request never waits behind more than the run in progress and one more, however large the other
    clients' requests are. A split request's answer is assembled in the order of its inputs.
    """

    def __init__(
        self,
        run: Callable[[OnnxInferencer, str, Any], BatchOutput],
        *,
        max_batch: int,
        max_wait_ms: float,
        enabled: bool,
        metrics: Metrics,
        observe: Callable[[OnnxInferencer, list[_Piece], BatchOutput], None] | None = None,
    ) -> None:
        self.run, self.max_batch, self.max_wait, self.enabled, self.metrics = (
            run,
            max_batch,
            max_wait_ms / 1000,
            enabled,
            metrics,
        )
        self.observe = observe  # after a run has answered its requests: the drift watch
        self.line: list[_Request] = []  # requests with inputs not yet handed to a run
        self.arrived = asyncio.Event()
        self.seq = 0
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the batching loop on the running event loop (call from inside it, e.g. the lifespan)."""
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True)

    async def submit(
        self, inferencer: OnnxInferencer, kind: str, inputs: Any, condition: np.ndarray | None = None
    ) -> np.ndarray:
        """The probabilities of `inputs` (in their order), run in one or more batches; `condition`
        (rpm, load) goes to the drift watch with the request's rows."""
        future = asyncio.get_running_loop().create_future()
        self.seq += 1
        self.line.append(
            _Request(inputs, kind, inferencer, time.perf_counter(), self.seq, future, condition=condition)
        )
        self.arrived.set()
        return await future

    def _take(self, pieces: list[_Piece], size: int) -> int:
        """Add pieces of the waiting requests to the run being gathered, fewest served first; returns
        the run's new size."""
        for request in sorted(self.line, key=lambda r: (r.taken, r.seq)):
            if size >= self.max_batch or (pieces and not self.enabled):
                break
            if request.future.done():  # failed or cancelled meanwhile: nothing left to run for it
                self.line.remove(request)
                continue
            if pieces and (
                request.kind != pieces[0].request.kind
                or request.inferencer is not pieces[0].request.inferencer
            ):
                continue  # another model or kind (a reload happened): it opens a later run
            count = min(self.max_batch - size, request.size - request.taken)
            pieces.append(_Piece(request, request.taken, request.taken + count))
            request.taken += count
            size += count
            if request.taken == request.size:
                self.line.remove(request)
        return size

    async def _gather(self) -> list[_Piece]:
        pieces: list[_Piece] = []
        size = 0
        while not pieces:
            while not self.line:
                self.arrived.clear()
                await self.arrived.wait()
            size = self._take(pieces, 0)
        deadline = time.perf_counter() + self.max_wait
        while self.enabled and size < self.max_batch:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), remaining)
            except TimeoutError:
                break
            size = self._take(pieces, size)
        return pieces

    async def _loop(self) -> None:
        while True:
            pieces = await self._gather()
            try:
                await self._run(pieces)
            # the batcher must outlive any batch, and every request gets an answer
            except Exception as exc:  # noqa: BLE001
                log.exception("batch of %d request(s) failed", len(pieces))
                for piece in pieces:
                    if not piece.request.future.done():
                        piece.request.future.set_exception(exc)
                    if piece.request in self.line:
                        self.line.remove(piece.request)

    async def _run(self, pieces: list[_Piece]) -> None:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        for piece in pieces:
            if piece.start == 0:  # the request's first run: its time in the queue
                self.metrics.queue_time.observe(start - piece.request.enqueued)
        if len(pieces) == 1:
            inputs = pieces[0].inputs
        elif pieces[0].request.kind == "windows":
            inputs = np.concatenate([piece.inputs for piece in pieces])
        else:
            inputs = [image for piece in pieces for image in piece.inputs]
        self.metrics.batch_size.observe(len(inputs))
        self.metrics.batch_requests.observe(len(pieces))
        head = pieces[0].request
        out = await loop.run_in_executor(self.executor, self.run, head.inferencer, head.kind, inputs)
        probs, problems = out.probs, out.problems
        offset = 0
        for piece in pieces:
            request, count = piece.request, piece.stop - piece.start
            if request.probs is None:
                request.probs = np.empty((request.size, *probs.shape[1:]), dtype=probs.dtype)
            request.probs[piece.start : piece.stop] = probs[offset : offset + count]
            for row in range(count):
                if offset + row in problems:
                    request.problems[piece.start + row] = problems[offset + row]
            request.done += count
            offset += count
            if request.done == request.size and not request.future.done():
                self._answer(request)
        if self.observe is not None and out.features is not None:  # answers first, then the watch
            try:
                self.observe(head.inferencer, pieces, out)
            except Exception:  # noqa: BLE001 - the watch never fails a batch
                log.exception("handing a batch to the drift watch failed")

    @staticmethod
    def _answer(request: _Request) -> None:
        if request.problems:
            bad = [reason for _, reason in sorted(request.problems.items())]
            where = "the input" if request.size == 1 else f"{len(bad)} of {request.size} windows"
            request.future.set_exception(ApiError(422, "data", f"{where}: {bad[0]}"))
        else:
            assert request.probs is not None
            request.future.set_result(request.probs)


class ModelHolder:
    """The served model; `swap` replaces it atomically (requests already accepted run on the model
    they were checked against)."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.inferencer: OnnxInferencer | None = None
        self.source = settings.model
        self.ready = False

    def load(self, source: str) -> OnnxInferencer:
        """Load and warm up the model at `source` (a path or ``models:/...``) without serving it yet.

        Raises:
            UserError: the model cannot be found or loaded.
        """
        inferencer = OnnxInferencer.from_uri(
            source,
            tracking_uri=self.settings.tracking_uri,
            providers=self.settings.providers,
            threads=self.settings.threads,
        )
        if (
            self.settings.threads is None
            and inferencer.metadata.variant is not None
            and inferencer.metadata.variant.kind == "int8"
        ):
            # Measured (benchmarks/RESULTS.md): INT8 ran as fast on 1 thread as on 2 at batch 32 and
            # twice as fast at batch 1; one thread leaves the other core to HTTP and the transform.
            inferencer = OnnxInferencer(inferencer.path, providers=self.settings.providers, threads=1)
        warm_up(inferencer)
        return inferencer

    def swap(self, inferencer: OnnxInferencer, source: str) -> None:
        """Serve `inferencer` (loaded from `source`) from now on, and mark the service ready."""
        self.inferencer, self.source, self.ready = inferencer, source, True

    @staticmethod
    def run(inferencer: OnnxInferencer, kind: str, inputs: Any) -> BatchOutput:
        """One batch on the model its requests were checked against (a reload meanwhile does not
        change it): the transform and the network each run once on all of it. Rows that turned
        non-finite on the way come back as {row: reason}, so only their requests fail; the
        ``features`` output and the inputs come back for the drift watch."""
        if kind == "windows":  # the recording z-score was done per request
            return inferencer.run_windows(inputs, normalised=True)
        return inferencer.run_images(inputs)


def _width(inferencer: OnnxInferencer) -> int | None:
    """The width of the model's ``features`` output, when the graph states it."""
    assert inferencer.features_index is not None
    width = inferencer.session.get_outputs()[inferencer.features_index].shape[-1]
    return width if isinstance(width, int) else None


class DriftWatch:
    """The drift monitor of the served model (one per model: a reload starts a new one), its
    gauges, and the answer of ``GET /v1/drift``."""

    def __init__(self, settings: ServiceSettings, metrics: Metrics) -> None:
        self.settings, self.metrics = settings, metrics
        self.inferencer: OnnxInferencer | None = None
        self.monitor: DriftMonitor | None = None
        self.reason = "no model loaded yet"

    def attach(self, inferencer: OnnxInferencer) -> None:
        """Watch `inferencer` from now on (the previous model's window is dropped)."""
        old, self.monitor = self.monitor, None
        if old is not None:
            old.stop()
        self.metrics.clear_drift()
        self.inferencer = inferencer
        meta = inferencer.metadata
        if not self.settings.drift:
            self.reason = "the drift watch is off (pipeline serve --no-drift)"
        elif meta.drift is None:
            self.reason = meta.drift_note or "the model was exported without a drift reference"
        elif inferencer.features_index is None:
            self.reason = "the model has a drift reference but no 'features' output; export it again"
        elif _width(inferencer) not in (None, meta.drift.features.shape[1]):
            self.reason = "the model's drift reference does not match its 'features' output; export it again"
        else:
            self.reason = ""
            version = meta.model.version or meta.model.name or "unversioned"
            self.monitor = DriftMonitor(
                meta.drift,
                window=self.settings.drift_window,
                alpha=self.settings.drift_alpha,
                permutations=self.settings.drift_permutations,
                on_update=self.metrics.set_drift,
                label=version,
            )
            self.metrics.set_drift(self.monitor.status())
            self.monitor.start()

    def observe(self, inferencer: OnnxInferencer, pieces: list[_Piece], out: BatchOutput) -> None:
        """A batch's rows to the monitor (rows of another model, after a reload, are not watched)."""
        monitor = self.monitor
        if monitor is None or inferencer is not self.inferencer or out.features is None or out.inputs is None:
            return
        no_condition = np.full(2, np.nan)
        conditions = [
            piece.request.condition if piece.request.condition is not None else no_condition
            for piece in pieces
            for _ in range(piece.stop - piece.start)
        ]
        if out.problems:
            keep = [row for row in range(len(conditions)) if row not in out.problems]
            monitor.observe(out.features[keep], out.inputs[keep], [conditions[row] for row in keep])
        else:
            monitor.observe(out.features, out.inputs, conditions)

    def status(self) -> dict[str, Any]:
        if self.monitor is None:
            return {"available": False, "reason": self.reason}
        return self.monitor.status()

    def stop(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()


def warm_up(inferencer: OnnxInferencer) -> None:
    """Run one batch through the whole path: builds the filter bank and lets ONNX Runtime plan."""
    if inferencer.is_image:
        s = inferencer.metadata.input_shape[-1]
        inferencer.predict_images([np.zeros((s, s), dtype=np.float32)])
    else:
        channels = len(inferencer.channels)
        inferencer.predict_windows(
            np.random.default_rng(0)
            .standard_normal((2, channels, inferencer.window_length))
            .astype(np.float32)
        )


def model_description(inferencer: OnnxInferencer, source: str) -> dict[str, Any]:
    """GET /v1/model: the model's metadata, where it was loaded from, and its execution providers."""
    meta = inferencer.metadata.to_json()
    if inferencer.metadata.drift is not None:  # its arrays are for the watch, not for readers
        meta["drift_reference"] = inferencer.metadata.drift.summary()
    return {"source": source, "kind": inferencer.metadata.kind, **meta, "providers": inferencer.providers}


# ----------------------------------------------------------------------------- request parsing


def guarded_request(request: Request, limit: int, timeout: float) -> Request:
    """`request` with the service's body rules on its receive channel, for every way of reading the
    body (`read_body`, a multipart form): at most `limit` bytes (413, before reading when the
    Content-Length says so), and each chunk within `timeout` seconds of the previous one (408), so a
    client that declares more than it sends cannot hold a connection and its handler forever."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(
            413,
            "body",
            f"the body has {int(declared)} bytes; the limit is {limit} (serve with a larger --max-body-mb, "
            "or send fewer windows per call)",
        )
    receive = request.receive
    received = 0

    async def guarded() -> Any:
        nonlocal received
        try:
            message = await asyncio.wait_for(receive(), timeout)
        except TimeoutError:
            expected = f"of the {declared} declared" if declared and declared.isdigit() else "so far"
            raise ApiError(
                408,
                "body",
                f"no part of the body arrived for {timeout:g} s ({received} bytes {expected}); send the "
                "whole body without pausing (and a Content-Length that matches it), or serve with a "
                "larger --body-timeout-s",
            ) from None
        if message.get("type") == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise ApiError(
                    413, "body", f"the body exceeds the limit of {limit} bytes; send fewer windows per call"
                )
        return message

    return Request(request.scope, guarded)


async def read_body(request: Request, *, allow_empty: bool = False) -> bytes:
    """The whole body of a `guarded_request`; 400 when empty (unless `allow_empty`)."""
    chunks = [chunk async for chunk in request.stream()]
    body = b"".join(chunks)
    if not body and not allow_empty:
        raise ApiError(
            400,
            "body",
            'the body is empty; send the signal as JSON {"fs": ..., "data": [...]} or float32 bytes, or an '
            "image",
        )
    return body


def parse_fs(value: Any, source: str) -> float:
    """The sample rate `value` as a positive finite float; `source` says where it came from, for the message.

    Raises:
        ApiError: 422 on field ``fs``.
    """
    try:
        fs = float(value)
    except (TypeError, ValueError, OverflowError):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise ApiError(
            422, "fs", f"fs must be the sample rate in Hz (a positive number), got {shown} in the {source}"
        ) from None
    if not math.isfinite(fs) or fs <= 0:
        raise ApiError(422, "fs", f"fs must be a positive finite number of Hz, got {value!r}")
    return fs


def parse_condition(doc: dict[str, Any], query: dict[str, str]) -> np.ndarray | None:
    """The operating condition a request declares (``rpm``, ``load`` in the JSON body or the query;
    the body wins) as (rpm, load) with NaN for what it leaves out; None when it gives neither.

    Raises:
        ApiError: 422 on field ``rpm`` or ``load``: not a finite number (rpm: positive).
    """
    values: dict[str, float] = {}
    for name in ("rpm", "load"):
        raw = doc.get(name) if doc.get(name) is not None else query.get(name)
        if raw is None:
            continue
        try:
            value = float(raw)
        except (TypeError, ValueError, OverflowError):
            value = math.nan
        if isinstance(raw, bool) or not math.isfinite(value) or (name == "rpm" and value <= 0):
            shown = repr(raw) if len(repr(raw)) <= 40 else repr(raw)[:37] + "..."
            what = "the shaft speed in rev/min (a positive number)" if name == "rpm" else "a finite number"
            raise ApiError(422, name, f"{name} must be {what}, got {shown}")
        values[name] = value
    return condition_vector(values) if values else None


def parse_signal(
    body: bytes, content_type: str, query: dict[str, str]
) -> tuple[np.ndarray, float, np.ndarray | None]:
    """(channels, samples) float32, fs and the declared condition (`parse_condition`) from a JSON
    or an octet-stream body."""
    doc: dict[str, Any] = {}
    if content_type.startswith("application/json"):
        try:
            doc = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(
                400, "body", f'the body is not valid JSON ({exc}); send {{"fs": 12800, "data": [...]}}'
            ) from None
        if not isinstance(doc, dict) or "data" not in doc or "fs" not in doc:
            raise ApiError(
                422, "body", "the JSON needs the keys 'fs' (Hz) and 'data' (samples, or channels x samples)"
            )
        fs = parse_fs(doc["fs"], "JSON body")
        try:
            data = np.asarray(doc["data"], dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            raise ApiError(
                422,
                "data",
                "data must be a list of numbers (one channel) or a list of equal-length lists (channels x "
                "samples)",
            ) from None
    elif content_type.startswith("application/octet-stream"):
        if "fs" not in query:
            raise ApiError(
                422,
                "fs",
                "float32 bodies need the sample rate as a query parameter: ?fs=12800 (and &channels=N for N "
                "channels, one after the other)",
            )
        fs = parse_fs(query["fs"], "query")
        channels = query.get("channels", "1")
        if not channels.isdigit() or int(channels) < 1:
            raise ApiError(422, "channels", f"channels must be a positive integer, got {channels!r}")
        if len(body) % 4:
            raise ApiError(422, "body", f"a float32 body must be a multiple of 4 bytes long, got {len(body)}")
        data = np.frombuffer(body, dtype="<f4").astype(np.float64)
        if data.size % int(channels):
            raise ApiError(422, "channels", f"{data.size} values do not split into {channels} equal channels")
        data = data.reshape(int(channels), -1)
    else:
        raise ApiError(
            415,
            "content-type",
            f"content type {content_type or '(none)'!r} is not accepted; use application/json or "
            "application/octet-stream",
        )
    if data.ndim == 1:
        data = data[None, :]
    if data.ndim != 2 or data.size == 0:
        raise ApiError(
            422, "data", f"data must be samples or channels x samples, got shape {list(data.shape)}"
        )
    if not np.all(np.isfinite(data)):
        bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        raise ApiError(
            422, "data", f"{bad} value(s) are NaN or Inf; clean or interpolate them before sending"
        )
    return data.astype(np.float32), fs, parse_condition(doc, query)


def signal_windows(inferencer: OnnxInferencer, signal: np.ndarray, fs: float, resample: bool) -> np.ndarray:
    """The model's windows of a request's signal (`deploy.signal_request.prepare_signal`); 422 naming
    the field when the model cannot take it."""
    try:
        return inferencer.signal_windows(signal, fs, resample=resample)
    except RequestError as exc:
        raise ApiError(422, exc.field, str(exc)) from None


def check_window_count(inferencer: OnnxInferencer, windows: np.ndarray, limit: int) -> None:
    """413 on field ``data`` when a signal makes more than `limit` windows."""
    if len(windows) > limit:
        samples = (limit - 1) * inferencer.window_hop + inferencer.window_length
        raise ApiError(
            413,
            "data",
            f"the signal makes {len(windows)} windows; the limit is {limit} per request (--max-windows): "
            f"send it in parts of at most {samples} samples per channel at {inferencer.fs:g} Hz, or serve "
            "with a larger --max-windows",
        )


def check_images(payloads: list[tuple[str, bytes]], *, max_images: int, max_pixels: int) -> None:
    """413 before any decoding: too many images, or more pixels than `max_pixels` in one image or in
    all of them together (the pixel counts come from the headers, see `deploy.limits.image_pixels`)."""
    field = "body" if payloads and payloads[0][0] == "body" else "file"
    if len(payloads) > max_images:
        raise ApiError(
            413,
            field,
            f"{len(payloads)} images in one request; the limit is {max_images} (--max-windows): send them "
            "in several requests",
        )
    total = 0
    for name, data in payloads:
        pixels = image_pixels(data)
        if pixels is None:  # not an image: decoding says so
            continue
        if pixels > max_pixels:
            raise ApiError(
                413,
                field,
                f"{name}: the image has {pixels:,} pixels; the limit is {max_pixels:,} per image "
                "(--max-pixels): downscale it before sending (the model sees it resized anyway), or serve "
                "with a larger --max-pixels",
            )
        total += pixels
        if total > max_pixels:
            raise ApiError(
                413,
                field,
                f"the images of this request hold more than {max_pixels:,} pixels in all (--max-pixels); "
                "send fewer per request, or downscale them",
            )


def decode_images(payloads: list[tuple[str, bytes]]) -> list[np.ndarray]:
    """Decoded images (`signal2image.imageio.decode_image`); 422 naming the file that is not one.
    Runs in a worker thread: decoding a large image must not hold the event loop."""
    images = []
    for name, data in payloads:
        try:
            images.append(decode_image(data))
        except ValueError as exc:
            raise ApiError(
                422,
                "file" if name != "body" else "body",
                f"{name}: not a readable image ({exc}); send PNG, JPEG, BMP, TIFF or WebP bytes",
            ) from None
    return images


def signal_answer(inferencer: OnnxInferencer, probs: np.ndarray) -> dict[str, Any]:
    """The JSON answer to a signal request: the verdict over its windows' probabilities, and each
    window's label."""
    verdict = inferencer.verdict(probs)
    return {
        "label": verdict.label,
        "probabilities": verdict.probabilities,
        "windows": int(len(probs)),
        "window_labels": verdict.window_labels,
    }


# ----------------------------------------------------------------------------- the app


class MeasureMiddleware:
    """Counts requests by route and status, errors by field, and latency (plain ASGI: Starlette's
    BaseHTTPMiddleware costs far more per request)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        seen: dict[str, Any] = {"status": 500, "field": ""}

        async def watch(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                seen["field"] = next(
                    (v.decode() for k, v in message.get("headers", []) if k == b"x-error-field"), ""
                )
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", "unmatched")  # known routes only: no label per random URL
            if endpoint.startswith("/v1/") or endpoint == "unmatched":
                self.metrics.requests.labels(endpoint, str(seen["status"])).inc()
                self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
                if seen["status"] >= 400:
                    self.metrics.errors.labels(endpoint, seen["field"]).inc()


def create_app(settings: ServiceSettings, *, preload: bool = False) -> FastAPI:
    """The FastAPI app; the model loads (and warms up) before /readyz says ready.

    Args:
        preload: load the model now (a bad model raises UserError here, before any port opens)
            instead of at start-up.
    """
    metrics = Metrics()
    holder = ModelHolder(settings)
    drift = DriftWatch(settings, metrics)
    state: dict[str, Any] = {}
    reload_lock = asyncio.Lock()
    # Decoding images and preparing large signals, off the event loop; two at a time bounds the memory
    # that decoding can take at once (the model runs in the batcher's own thread).
    prepare_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="prepare")
    preloaded = holder.load(settings.model) if preload else None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loop = asyncio.get_running_loop()
        inferencer = (
            preloaded
            if preloaded is not None
            else await loop.run_in_executor(None, holder.load, settings.model)
        )
        holder.swap(inferencer, settings.model)
        _describe(inferencer, settings.model)
        batcher = Batcher(
            holder.run,
            max_batch=settings.max_batch,
            max_wait_ms=settings.max_wait_ms,
            enabled=settings.batching,
            metrics=metrics,
            observe=drift.observe,
        )
        batcher.start()
        state["batcher"] = batcher
        log.info(
            "serving %s on %s (batching %s, max_batch %d, max_wait %.1f ms)",
            settings.model,
            inferencer.providers[0],
            "on" if settings.batching else "off",
            settings.max_batch,
            settings.max_wait_ms,
        )
        yield
        await batcher.stop()
        drift.stop()
        prepare_pool.shutdown(wait=False, cancel_futures=True)

    def _describe(inferencer: OnnxInferencer, source: str) -> None:
        state["description"] = model_description(inferencer, source)
        metrics.model_info.clear()
        model = inferencer.metadata.model
        metrics.model_info.labels(model.name, model.version, source).set(1)
        drift.attach(inferencer)

    app = FastAPI(title="fault-pipeline inference", version="1", lifespan=lifespan)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            {"error": {"field": exc.field, "message": exc.message}},
            status_code=exc.status,
            headers={"x-error-field": exc.field},
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        return JSONResponse(
            {"error": {"field": where, "message": first.get("msg", "invalid request")}},
            status_code=422,
            headers={"x-error-field": where},
        )

    app.add_middleware(MeasureMiddleware, metrics=metrics)

    def _authorise(request: Request, required: bool) -> None:
        if not required:
            return
        if settings.api_key is None:
            raise ApiError(
                403,
                "X-API-Key",
                "this endpoint is disabled: start the service with an API key (PIPELINE_API_KEY) to enable "
                "it",
            )
        given = request.headers.get("x-api-key", "")
        if not hmac.compare_digest(given.encode(), settings.api_key.encode()):
            raise ApiError(401, "X-API-Key", "missing or wrong API key; send it in the X-API-Key header")

    def _model(kind: str) -> OnnxInferencer:
        inferencer = holder.inferencer
        if inferencer is None or not holder.ready:
            raise ApiError(503, "model", "the model is not loaded yet; retry when /readyz answers 200")
        if (kind == "image") != inferencer.is_image:
            other = "image" if inferencer.is_image else "signal"
            raise ApiError(404, "path", f"this service holds a {other} model; use POST /v1/predict/{other}")
        return inferencer

    def _guarded(request: Request, limit: int | None = None) -> Request:
        return guarded_request(
            request, settings.max_body_bytes if limit is None else limit, settings.body_timeout_s
        )

    def _prepare_signal(body: bytes, content_type: str, query: dict[str, str], inferencer: OnnxInferencer):
        signal, fs, condition = parse_signal(body, content_type, query)
        windows = signal_windows(inferencer, signal, fs, settings.resample)
        check_window_count(inferencer, windows, settings.max_windows)
        return windows, condition

    @app.post("/v1/predict/signal")
    async def predict_signal(request: Request) -> JSONResponse:
        _authorise(request, settings.protect_predict)
        inferencer = _model("signal")
        body = await read_body(_guarded(request))
        args = (body, request.headers.get("content-type", ""), dict(request.query_params), inferencer)
        if len(body) > INLINE_BODY_BYTES:  # parsing, resampling, z-scoring a large signal: off the loop
            windows, condition = await asyncio.get_running_loop().run_in_executor(
                prepare_pool, _prepare_signal, *args
            )
        else:
            windows, condition = _prepare_signal(*args)
        probs = await state["batcher"].submit(inferencer, "windows", windows, condition)
        return JSONResponse(signal_answer(inferencer, probs))

    @app.post("/v1/predict/image")
    async def predict_image(request: Request) -> JSONResponse:
        _authorise(request, settings.protect_predict)
        inferencer = _model("image")
        content_type = request.headers.get("content-type", "")
        payloads: list[tuple[str, bytes]] = []
        if content_type.startswith("multipart/form-data"):
            try:
                form = await _guarded(request).form(max_part_size=settings.max_body_bytes)
            except HTTPException as exc:  # Starlette's multipart parser: a malformed form
                raise ApiError(
                    400,
                    "body",
                    f"not a readable multipart form ({exc.detail}); send the image(s) as file fields "
                    "(curl -F file=@image.png)",
                ) from None
            payloads = [
                (str(getattr(v, "filename", k)), await v.read())
                for k, v in form.multi_items()
                if hasattr(v, "read")
            ]
            if not payloads:
                raise ApiError(
                    422, "file", "the multipart form holds no file; send the image(s) as file fields"
                )
        elif content_type.split(";")[0].strip() in IMAGE_TYPES:
            payloads = [("body", await read_body(_guarded(request)))]
        else:
            raise ApiError(
                415,
                "content-type",
                f"content type {content_type or '(none)'!r} is not accepted; send image/png, image/jpeg or "
                "multipart/form-data",
            )
        for name, data in payloads:
            if len(data) > settings.max_body_bytes:
                raise ApiError(
                    413, "file", f"{name}: {len(data)} bytes exceed the limit of {settings.max_body_bytes}"
                )
        check_images(payloads, max_images=settings.max_windows, max_pixels=settings.max_pixels)
        condition = parse_condition({}, dict(request.query_params))
        images = await asyncio.get_running_loop().run_in_executor(prepare_pool, decode_images, payloads)
        probs = await state["batcher"].submit(inferencer, "images", images, condition)
        classes = inferencer.classes
        results = [
            {
                "file": name,
                "label": classes[int(p.argmax())],
                "probabilities": probabilities(classes, p),
            }
            for (name, _), p in zip(payloads, probs)
        ]
        return JSONResponse(
            results[0] if len(results) == 1 and payloads[0][0] == "body" else {"results": results}
        )

    @app.get("/v1/model")
    async def model_info() -> JSONResponse:
        if "description" not in state:
            raise ApiError(503, "model", "the model is not loaded yet")
        return JSONResponse(state["description"])

    @app.get("/v1/drift")
    async def drift_status() -> JSONResponse:
        return JSONResponse(drift.status())

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ready = holder.ready and "batcher" in state
        return JSONResponse({"ready": ready, "model": holder.source}, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/admin/reload")
    async def reload(request: Request) -> JSONResponse:
        _authorise(request, True)
        try:
            body = await read_body(_guarded(request, RELOAD_BODY_BYTES), allow_empty=True)
        except ApiError as exc:
            if exc.status != 413:
                raise
            raise ApiError(
                413, "body", 'a reload request is a small JSON object: {"model": "models:/NAME@ALIAS"}'
            ) from None
        try:
            doc = json.loads(body) if body.strip() else {}
            source = doc.get("model") or holder.source
        except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
            raise ApiError(
                400,
                "body",
                'send JSON {"model": "models:/NAME@ALIAS" or a path}; an empty body reloads the current '
                "source",
            ) from None
        if not isinstance(source, str):
            raise ApiError(
                422, "model", f"model must be a string (a path or models:/NAME@ALIAS), got {source!r}"
            )
        if not reload_allowed(source, started_with=settings.model, model_root=settings.model_root):
            metrics.reloads.labels("refused").inc()
            where = (
                f"a file inside --model-root {settings.model_root}"
                if settings.model_root
                else "no other file (serve with --model-root DIR to allow the .onnx files in DIR)"
            )
            raise ApiError(
                403,
                "model",
                f"reload may load a registry model (models:/NAME@ALIAS), the source this service started "
                f"with ({settings.model}), or {where}; {source!r} is none of these",
            )
        async with reload_lock:
            try:
                inferencer = await asyncio.get_running_loop().run_in_executor(None, holder.load, source)
            except UserError as exc:
                metrics.reloads.labels("failed").inc()
                raise ApiError(
                    422, "model", f"cannot load {source!r}: {exc}; the previous model stays in service"
                ) from None
            current = holder.inferencer
            if current is not None and current.is_image != inferencer.is_image:
                metrics.reloads.labels("failed").inc()
                raise ApiError(
                    422,
                    "model",
                    f"{source!r} is {'an image' if inferencer.is_image else 'a signal'} model and this "
                    "service serves the other kind; the previous model stays",
                )
            holder.swap(inferencer, source)  # requests in flight finish on the model they started with
            _describe(inferencer, source)
            metrics.reloads.labels("ok").inc()
        log.info("reloaded: now serving %s", source)
        return JSONResponse({"reloaded": True, "model": state["description"]})

    app.state.holder = holder
    app.state.metrics = metrics
    app.state.drift = drift
    return app
