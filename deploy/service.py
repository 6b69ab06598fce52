"""The inference service on the line: FastAPI + uvicorn around one `OnnxInferencer`.

Requests are gathered by a micro-batcher (up to `max_batch` windows or images, or `max_wait_ms`)
and run as one batch: the signal-to-image transform and the network both see the whole batch.
Everything that can be done once is done at start-up or on reload: the ONNX Runtime session, the
transform (with its CWT filter bank), the parsed metadata, a warm-up batch.

Endpoints: POST /v1/predict/signal, POST /v1/predict/image, GET /v1/model, /healthz, /readyz,
/metrics (Prometheus), POST /v1/admin/reload (API key required).
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

from deploy.inferencer import OnnxInferencer
from deploy.signal_request import RequestError, probabilities
from signal2image.errors import UserError
from signal2image.imageio import decode_image

log = logging.getLogger("pipeline.serve")
disable_created_metrics()  # no *_created series: they double the exposition and nobody graphs them

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
        resample: a signal at another sample rate is resampled (polyphase) instead of refused.
        threads: ONNX Runtime intra-op threads (None: ONNX Runtime's default).
        providers: execution providers (None: CUDA when usable, else the CPU).
    """

    model: str
    tracking_uri: str | None = None
    max_batch: int = 32
    max_wait_ms: float = 5.0
    batching: bool = True
    api_key: str | None = None
    protect_predict: bool = False
    max_body_bytes: int = 16 << 20
    resample: bool = False
    threads: int | None = None
    providers: list[str] | None = None


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


@dataclass
class _Job:
    inputs: Any  # raw windows (n, C, L) as an array, or decoded images as a list
    kind: str  # "windows" or "images"
    inferencer: OnnxInferencer  # the model the request was checked against: it also runs it
    enqueued: float
    future: asyncio.Future[np.ndarray] = field(repr=False)


class Batcher:
    """Gathers concurrent requests into batches of at most `max_batch` samples and runs each batch
    in one worker thread (the event loop stays free to accept requests meanwhile)."""

    def __init__(
        self,
        run: Callable[[OnnxInferencer, str, Any], tuple[np.ndarray, dict[int, str]]],
        *,
        max_batch: int,
        max_wait_ms: float,
        enabled: bool,
        metrics: Metrics,
    ) -> None:
        self.run, self.max_batch, self.max_wait, self.enabled, self.metrics = (
            run,
            max_batch,
            max_wait_ms / 1000,
            enabled,
            metrics,
        )
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self.task: asyncio.Task[None] | None = None
        self.pending: _Job | None = None  # a request that did not fit the last batch opens the next

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

    async def submit(self, inferencer: OnnxInferencer, kind: str, inputs: Any) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Job(inputs, kind, inferencer, time.perf_counter(), future))
        return await future

    async def _gather(self) -> list[_Job]:
        first, self.pending = self.pending, None
        batch = [first if first is not None else await self.queue.get()]
        size = len(batch[0].inputs)
        if not self.enabled:
            return batch
        deadline = time.perf_counter() + self.max_wait
        while size < self.max_batch:
            remaining = deadline - time.perf_counter()
            try:
                job = (
                    self.queue.get_nowait()
                    if remaining <= 0
                    else await asyncio.wait_for(self.queue.get(), remaining)
                )
            except (TimeoutError, asyncio.QueueEmpty):
                break
            if (
                size + len(job.inputs) > self.max_batch
                or job.kind != batch[0].kind
                or job.inferencer is not batch[0].inferencer
            ):
                self.pending = job
                break
            batch.append(job)
            size += len(job.inputs)
        return batch

    async def _loop(self) -> None:
        while True:
            batch = await self._gather()
            try:
                await self._run(batch)
            except Exception as exc:  # noqa: BLE001 - the batcher must outlive any batch; every request gets an answer
                log.exception("batch of %d request(s) failed", len(batch))
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)

    async def _run(self, batch: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        for job in batch:
            self.metrics.queue_time.observe(start - job.enqueued)
        if len(batch) == 1:
            inputs = batch[0].inputs
        elif batch[0].kind == "windows":
            inputs = np.concatenate([job.inputs for job in batch])
        else:
            inputs = [image for job in batch for image in job.inputs]
        self.metrics.batch_size.observe(len(inputs))
        self.metrics.batch_requests.observe(len(batch))
        result = await loop.run_in_executor(
            self.executor, self.run, batch[0].inferencer, batch[0].kind, inputs
        )
        probs, problems = result
        offset = 0
        for job in batch:
            rows = range(offset, offset + len(job.inputs))
            bad = [problems[r] for r in rows if r in problems]
            if job.future.done():
                pass
            elif bad:
                where = "the input" if len(job.inputs) == 1 else f"{len(bad)} of {len(job.inputs)} windows"
                job.future.set_exception(ApiError(422, "data", f"{where}: {bad[0]}"))
            else:
                job.future.set_result(probs[offset : offset + len(job.inputs)])
            offset += len(job.inputs)


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
    def run(inferencer: OnnxInferencer, kind: str, inputs: Any) -> tuple[np.ndarray, dict[int, str]]:
        """One batch on the model its requests were checked against (a reload meanwhile does not
        change it): the transform and the network each run once on all of it. Rows that turned
        non-finite on the way come back as {row: reason}, so only their requests fail."""
        if kind == "windows":  # the recording z-score was done per request
            return inferencer.predict_windows_checked(inputs, normalised=True)
        return inferencer.predict_images_checked(inputs)


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
    return {"source": source, "kind": inferencer.metadata.kind, **meta, "providers": inferencer.providers}


# ----------------------------------------------------------------------------- request parsing


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(
            413,
            "body",
            f"the body has {int(declared)} bytes; the limit is {limit} (serve with a larger --max-body-mb, "
            "or send fewer windows per call)",
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(
                413, "body", f"the body exceeds the limit of {limit} bytes; send fewer windows per call"
            )
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body:
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


def parse_signal(body: bytes, content_type: str, query: dict[str, str]) -> tuple[np.ndarray, float]:
    """(channels, samples) float32 and fs from a JSON or an octet-stream body."""
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
    return data.astype(np.float32), fs


def signal_windows(inferencer: OnnxInferencer, signal: np.ndarray, fs: float, resample: bool) -> np.ndarray:
    """The model's windows of a request's signal (`deploy.signal_request.prepare_signal`); 422 naming
    the field when the model cannot take it."""
    try:
        return inferencer.signal_windows(signal, fs, resample=resample)
    except RequestError as exc:
        raise ApiError(422, exc.field, str(exc)) from None


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
    state: dict[str, Any] = {}
    reload_lock = asyncio.Lock()
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

    def _describe(inferencer: OnnxInferencer, source: str) -> None:
        state["description"] = model_description(inferencer, source)
        metrics.model_info.clear()
        model = inferencer.metadata.model
        metrics.model_info.labels(model.name, model.version, source).set(1)

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

    @app.post("/v1/predict/signal")
    async def predict_signal(request: Request) -> JSONResponse:
        _authorise(request, settings.protect_predict)
        inferencer = _model("signal")
        body = await read_body(request, settings.max_body_bytes)
        signal, fs = parse_signal(body, request.headers.get("content-type", ""), dict(request.query_params))
        windows = signal_windows(inferencer, signal, fs, settings.resample)
        probs = await state["batcher"].submit(inferencer, "windows", windows)
        return JSONResponse(signal_answer(inferencer, probs))

    @app.post("/v1/predict/image")
    async def predict_image(request: Request) -> JSONResponse:
        _authorise(request, settings.protect_predict)
        inferencer = _model("image")
        content_type = request.headers.get("content-type", "")
        payloads: list[tuple[str, bytes]] = []
        if content_type.startswith("multipart/form-data"):
            form = await request.form(max_part_size=settings.max_body_bytes)
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
            payloads = [("body", await read_body(request, settings.max_body_bytes))]
        else:
            raise ApiError(
                415,
                "content-type",
                f"content type {content_type or '(none)'!r} is not accepted; send image/png, image/jpeg or "
                "multipart/form-data",
            )
        images = []
        for name, data in payloads:
            if len(data) > settings.max_body_bytes:
                raise ApiError(
                    413, "file", f"{name}: {len(data)} bytes exceed the limit of {settings.max_body_bytes}"
                )
            try:
                images.append(decode_image(data))
            except ValueError as exc:
                raise ApiError(
                    422,
                    "file" if name != "body" else "body",
                    f"{name}: not a readable image ({exc}); send PNG, JPEG, BMP, TIFF or WebP bytes",
                ) from None
        probs = await state["batcher"].submit(inferencer, "images", images)
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
        body = await request.body()
        if len(body) > 1 << 16:
            raise ApiError(
                413, "body", 'a reload request is a small JSON object: {"model": "models:/NAME@ALIAS"}'
            )
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
    return app
