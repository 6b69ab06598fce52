"""The `pipeline` command: run a job, predict with, explain or serve a registered model, open the MLflow UI.

User errors (config, arguments, input files) print one message and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
from pathlib import Path

from pipeline.errors import ExportError, UserError
from signal2image.errors import require

EXIT_USAGE = 2


def _add_tracking_uri(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tracking-uri", default=None, help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)"
    )


def _add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        help="an .onnx file or a registry URI such as models:/gearbox-fault@champion",
    )


def _add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (repeatable), e.g. --set train.epochs=2 --set transform.kind=stft",
    )


def _positive_rate(text: str) -> float:
    """`--fs`: a positive, finite number of Hz (0 or nan would switch the rate check off)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a sample rate in Hz such as 12800, got {text!r}"
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive, finite rate in Hz such as 12800, got {text!r}")
    return value


def _require_serve() -> None:
    """What `pipeline serve` imports beyond the base install (the extra ``serve``), checked before
    `deploy.service` imports it."""
    for module in ("fastapi", "uvicorn", "prometheus_client", ("python_multipart", "multipart")):
        require(module, "serve", "pipeline serve")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand; each sets ``func``, the ``cmd_*`` that runs it."""
    parser = argparse.ArgumentParser(
        prog="pipeline",
        description=(
            "Fault and defect diagnosis by transfer learning: turn vibration signals into images, train "
            "an ImageNet CNN from scratch and from pretrained weights, compare them in MLflow, register "
            "the best model and export it to ONNX."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser(
        "run",
        help="run a job from a YAML config (ingest, train strategies, compare, export, register)",
        description="Run the whole job described by CONFIG and print the comparison of strategies.",
    )
    run.add_argument("config", metavar="CONFIG", help="job file, e.g. configs/gearbox.yaml")
    _add_overrides(run)
    run.add_argument(
        "--resume",
        action="store_true",
        help=(
            "continue the last interrupted run of this config: finished trials are kept, "
            "the interrupted one continues from its last checkpoint"
        ),
    )
    run.set_defaults(func=cmd_run)

    tune = sub.add_parser(
        "tune",
        help="search hyper-parameters on the validation split (Optuna), write CONFIG's .tuned.yaml",
        description=(
            "Search the config's tune.space (or a default space: strategy, learning rates, weight decay, "
            "dropout) with Optuna's TPE sampler and a pruner fed by the per-epoch validation score. Only "
            "the validation split is scored. One MLflow parent run per study, one child run per trial. "
            "The best trial is written next to CONFIG as <name>.tuned.yaml: `pipeline run` it for the "
            "test scores. Running the same command again continues the study; several processes with "
            "the same --storage tune one study together."
        ),
    )
    tune.add_argument("config", metavar="CONFIG", help="job file, e.g. configs/forda.yaml")
    _add_overrides(tune)
    tune.add_argument(
        "--trials",
        type=int,
        default=None,
        help="finished (completed or pruned) trials the study should hold (default 20; none with --timeout)",
    )
    tune.add_argument(
        "--timeout", default=None, help="stop starting trials after this long, e.g. 2h, 45m, 1h30m, 600"
    )
    tune.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL shared by the processes (default: optuna.db next to the MLflow store)",
    )
    tune.add_argument(
        "--study", default=None, help="study name (default: the job name and a hash of the config)"
    )
    tune.set_defaults(func=cmd_tune)

    predict = sub.add_parser(
        "predict",
        help="classify signal files (NPY, NPZ, CSV) or images with an exported model",
        description=(
            "Signal models: cut each file into the model's windows, apply the transform rebuilt from the "
            "model's metadata, and print the class of the mean probability. Image models: classify each "
            "image."
        ),
    )
    _add_model(predict)
    predict.add_argument(
        "files", nargs="+", metavar="FILE", help="signal files (.npy, .npz, .csv) or images (.png, .jpg, ...)"
    )
    predict.add_argument(
        "--fs",
        type=_positive_rate,
        default=None,
        help="sample rate of the files in Hz (checked against the model's and a rate the file declares)",
    )
    _add_tracking_uri(predict)
    predict.add_argument("--json", action="store_true", help="print one JSON object per file")
    predict.set_defaults(func=cmd_predict)

    explain = sub.add_parser(
        "explain",
        help="which frequencies and times the model looks at: a relevance map per signal file or image",
        description=(
            "For each FILE write a PNG: the input image on its Hz x seconds axes (pixels for images), the "
            "relevance map for the predicted class over it (Grad-CAM on the backbone's stride-8 layer, or "
            "integrated gradients at input resolution) and the band profile (relevance summed over time "
            "per frequency band, the top bands in the title). Needs the PyTorch weights the job logged: "
            "give a registry URI or the job's run id, not an .onnx file (ONNX has no gradients)."
        ),
    )
    explain.add_argument(
        "--model",
        required=True,
        help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID or a run id of `pipeline run`",
    )
    explain.add_argument(
        "files", nargs="+", metavar="FILE", help="signal files (.npy, .npz, .csv, ...) or images"
    )
    explain.add_argument(
        "--method",
        choices=["gradcam", "ig"],
        default="gradcam",
        help="gradcam (default; 8 bands at 64 px) or ig (integrated gradients, input resolution, slower)",
    )
    explain.add_argument(
        "--out", metavar="DIR", default="explanations", help="where the PNGs go (default explanations)"
    )
    explain.add_argument(
        "--target", metavar="CLASS", default=None, help="explain this class instead of the predicted one"
    )
    explain.add_argument(
        "--fs",
        type=_positive_rate,
        default=None,
        help="sample rate of the files in Hz (checked against the model's and a rate the file declares)",
    )
    explain.add_argument(
        "--max-windows",
        type=int,
        default=32,
        help="most windows of a signal file to explain, evenly spread (default 32)",
    )
    _add_tracking_uri(explain)
    explain.add_argument(
        "--json", action="store_true", help="print one JSON object per file with its band profile"
    )
    explain.set_defaults(func=cmd_explain)

    models_ = sub.add_parser(
        "models",
        help="list registered model versions, or point an alias at a version",
        description="The MLflow model registry of this project's store.",
    )
    models_sub = models_.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    listing = models_sub.add_parser(
        "list", help="every registered version with its aliases, strategy, test accuracy and data hash"
    )
    _add_tracking_uri(listing)
    listing.set_defaults(func=cmd_models_list)
    promote = models_sub.add_parser(
        "promote",
        help="point an alias (default champion) at a version by hand",
        description=(
            "Point ALIAS at VERSION of NAME, e.g. `pipeline models promote gearbox-fault 3 --alias champion`."
        ),
    )
    promote.add_argument("name", metavar="NAME", help="registered model name")
    promote.add_argument("version", metavar="VERSION", help="version number")
    promote.add_argument("--alias", default="champion", help="alias to move (default champion)")
    _add_tracking_uri(promote)
    promote.set_defaults(func=cmd_models_promote)

    export = sub.add_parser(
        "export",
        help="derive INT8/FP16 variants and a Triton repository from an exported model",
        description=(
            "Take MODEL (an .onnx file or models:/NAME@ALIAS written by `pipeline run`), check it, and write "
            "the "
            "requested variants next to a copy of it in --out, each tested on the test split of CONFIG's "
            "data "
            "against the FP32 model (accuracy change and speed-up), and/or a Triton model repository."
        ),
    )
    export.add_argument(
        "config",
        metavar="CONFIG",
        help="the job file the model was trained with (its data gives calibration and test inputs)",
    )
    _add_model(export)
    _add_overrides(export)
    export.add_argument(
        "--variant",
        action="append",
        default=[],
        choices=["int8", "fp16"],
        help="int8 (CPU) and/or fp16 (GPU); repeatable",
    )
    export.add_argument(
        "--triton",
        metavar="DIR",
        default=None,
        help="write a Triton Inference Server model repository into DIR",
    )
    export.add_argument(
        "--out",
        metavar="DIR",
        default="artifacts/export",
        help="where the variants go (default artifacts/export)",
    )
    export.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=None,
        help="points of test accuracy a variant may lose (default: the config's export.max_accuracy_drop)",
    )
    export.add_argument(
        "--signal-model",
        action="store_true",
        help=(
            "write the raw-signal model (windows in, transform inside the graph) beside the copy; done "
            "anyway for a signal model with --variant or --triton"
        ),
    )
    _add_tracking_uri(export)
    export.set_defaults(func=cmd_export)

    serve = sub.add_parser(
        "serve",
        help="serve a model over HTTP (FastAPI + uvicorn, micro-batching, Prometheus metrics)",
        description=(
            "Serve MODEL: POST /v1/predict/signal (JSON or float32 bytes) or /v1/predict/image (PNG/JPEG or "
            "multipart), GET /v1/model, /v1/drift, /healthz, /readyz, /metrics, POST /v1/admin/reload. "
            "The API key, "
            "when "
            "wanted, comes from the environment variable PIPELINE_API_KEY (never from the command line)."
        ),
    )
    _add_model(serve)
    _add_tracking_uri(serve)
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help=(
            "interface to listen on (default 127.0.0.1: this machine only). Any other address needs "
            "PIPELINE_API_KEY (which then protects predict too) or --allow-unauthenticated"
        ),
    )
    serve.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help=(
            "listen beyond loopback with predict open to anyone who reaches the port (no API key); "
            "without it a non-loopback --host needs PIPELINE_API_KEY"
        ),
    )
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument(
        "--max-batch", type=int, default=32, help="most windows/images per model run (default 32)"
    )
    serve.add_argument(
        "--max-wait-ms",
        type=float,
        default=5.0,
        help="longest a request waits for others to join its batch (default 5)",
    )
    serve.add_argument("--no-batching", action="store_true", help="run every request on its own")
    serve.add_argument(
        "--threads",
        type=int,
        default=None,
        help="ONNX Runtime intra-op threads (default: the measured best, see docs/deploy.md)",
    )
    serve.add_argument(
        "--max-body-mb", type=float, default=16.0, help="largest accepted request body in MB (default 16)"
    )
    serve.add_argument(
        "--max-windows",
        type=int,
        default=1024,
        help="most windows (signal) or images per request; more get 413 (default 1024)",
    )
    serve.add_argument(
        "--max-pixels",
        type=int,
        default=40_000_000,
        help=(
            "most pixels per image and per request, read from the image headers before decoding; "
            "more get 413 (default 40000000)"
        ),
    )
    serve.add_argument(
        "--body-timeout-s",
        type=float,
        default=10.0,
        help="longest wait for the next chunk of a request body, then 408 (default 10)",
    )
    serve.add_argument(
        "--model-root",
        metavar="DIR",
        default=None,
        help=(
            "reload may load model files inside DIR (symlinks resolved); without it reload takes only "
            "registry URIs (models:/...) and the --model the service started with"
        ),
    )
    serve.add_argument(
        "--resample",
        action="store_true",
        help="resample signals sent at another rate instead of refusing them",
    )
    serve.add_argument(
        "--protect-predict",
        action="store_true",
        help="require the API key for predict too (reload always requires it)",
    )
    serve.add_argument(
        "--device",
        choices=["auto", "cuda", "cpu"],
        default="auto",
        help="execution provider (auto: CUDA when usable)",
    )
    serve.add_argument(
        "--drift-window",
        type=int,
        default=200,
        metavar="N",
        help="drift watch: windows (or images) of recent requests tested against the training reference "
        "(default 200)",
    )
    serve.add_argument(
        "--drift-alpha",
        type=float,
        default=0.01,
        help="drift watch: alarm when the test's p-value is below this (default 0.01)",
    )
    serve.add_argument(
        "--no-drift", action="store_true", help="no drift watch (GET /v1/drift says it is off)"
    )
    serve.set_defaults(func=cmd_serve)

    ui = sub.add_parser(
        "ui",
        help="open the MLflow UI on this project's store",
        description="Start `mlflow ui` on the embedded store (./mlflow.db) or the given tracking URI.",
    )
    _add_tracking_uri(ui)
    ui.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    ui.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    ui.set_defaults(func=cmd_ui)
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    """`pipeline run`: the job of the config, then its summary; under torchrun, ranks above 0 only train."""
    from pipeline.config import load_config

    # A stop from a scheduler or container (SIGTERM) ends the runs KILLED, like Ctrl-C, instead of
    # leaving them RUNNING.
    signal.signal(signal.SIGTERM, _interrupt)

    cfg = load_config(args.config, args.overrides)
    from pipeline import distributed
    from pipeline.job import run_job
    from pipeline.report import summary
    from pipeline.trials import run_worker

    world = distributed.init_from_env()  # under torchrun: one process per rank
    try:
        if world is not None and not world.is_main:
            run_worker(cfg)
            return 0
        result = run_job(cfg, config_path=args.config, resume=args.resume)
        print(summary(result))
        return 0
    finally:
        distributed.shutdown()


def cmd_tune(args: argparse.Namespace) -> int:
    """`pipeline tune`: the study of the config, then its tuned config next to it."""
    from pipeline.config import load_config

    signal.signal(signal.SIGTERM, _interrupt)  # a stop ends the current trial failed, like Ctrl-C
    if args.trials is not None and args.trials < 1:
        raise UserError(f"--trials must be at least 1, got {args.trials}")
    require("optuna", "tune", "pipeline tune")
    from pipeline.tune import parse_duration, run_tune

    timeout = parse_duration(args.timeout) if args.timeout is not None else None
    cfg = load_config(args.config, args.overrides)
    run_tune(
        cfg,
        config_path=args.config,
        overrides=tuple(args.overrides),
        trials=args.trials,
        timeout=timeout,
        storage=args.storage,
        study=args.study,
    )
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """`pipeline predict`: one line (or JSON object) per file with its class; a signal's is the class of
    the mean probability over its windows."""
    from deploy.inferencer import OnnxInferencer
    from deploy.signal_request import probabilities
    from pipeline.ingest.files import read_signal_file
    from signal2image.imageio import decode_image

    inferencer = OnnxInferencer.from_uri(args.model, tracking_uri=args.tracking_uri)
    for file in args.files:
        if inferencer.is_image:
            try:
                image = decode_image(file)
            except (ValueError, FileNotFoundError) as exc:
                raise UserError(f"{file}: not a readable image ({exc})") from None
            probs = inferencer.predict_images([image])[0]
            label = inferencer.classes[int(probs.argmax())]
            result = {"file": file, "label": label, "probabilities": probabilities(inferencer.classes, probs)}
            print(json.dumps(result) if args.json else f"{file}: {label} (p={probs.max():.3f})")
            continue
        loaded = read_signal_file(file)
        fs = loaded.fs if args.fs is None else args.fs
        if (
            args.fs is not None
            and loaded.fs is not None
            and not math.isclose(loaded.fs, args.fs, rel_tol=1e-6)
        ):
            raise UserError(
                f"{file}: the file declares fs = {loaded.fs:g} Hz but --fs is {args.fs:g} Hz; "
                "drop --fs (the file's rate is used) or fix the file"
            )
        try:
            prediction = inferencer.predict_signal(loaded.data, fs=fs, names=loaded.channels)
        except UserError as exc:
            raise UserError(f"{file}: {exc}") from None
        if args.json:
            windows = len(prediction.window_labels)
            out = {"file": file, "label": prediction.label, "probabilities": prediction.probabilities}
            print(json.dumps({**out, "windows": windows}))
        else:
            agree = sum(label == prediction.label for label in prediction.window_labels)
            print(
                f"{file}: {prediction.label} (p={prediction.probabilities[prediction.label]:.3f}; "
                f"{agree}/{len(prediction.window_labels)} windows agree)"
            )
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """`pipeline explain`: a PNG per file (image, heat map, band profile); one line or JSON object each."""
    from pipeline.explain import explain_files, resolve_model, top_bands

    if args.max_windows < 1:
        raise UserError(f"--max-windows must be at least 1, got {args.max_windows}")
    model = resolve_model(args.model, tracking_uri=args.tracking_uri)
    results = explain_files(
        model,
        args.files,
        method=args.method,
        out=Path(args.out),
        target=args.target,
        fs=args.fs,
        max_windows=args.max_windows,
    )
    for r in results:
        if args.json:
            print(json.dumps(r.to_json()))
        else:
            print(f"{r.file}: {r.label}; relevance for {r.target!r}: {top_bands(r.profile)} -> {r.png}")
    return 0


def _registry_client(tracking_uri: str | None):
    import mlflow

    from pipeline.tracking import check_server, resolve_tracking_uri, use_store

    uri = resolve_tracking_uri(tracking_uri)
    check_server(uri, source="--tracking-uri")
    use_store(uri)
    return mlflow.MlflowClient(uri)


def cmd_models_list(args: argparse.Namespace) -> int:
    """`pipeline models list`: every registered version as a table."""
    from pipeline.registry import LIST_HEADERS, list_versions
    from pipeline.report import text_table

    rows = list_versions(_registry_client(args.tracking_uri))
    print(
        text_table(LIST_HEADERS, rows)
        if rows
        else "no registered models yet; `pipeline run CONFIG` registers one"
    )
    return 0


def cmd_models_promote(args: argparse.Namespace) -> int:
    """`pipeline models promote`: point an alias at a version by hand."""
    from pipeline.registry import promote

    print(promote(_registry_client(args.tracking_uri), args.name, args.version, args.alias))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """`pipeline export`: copy the model to ``--out`` with its raw-signal model (a signal model's, copied
    or built and checked on the test split), add the checked variants and/or a Triton repository.

    Returns:
        1 when a variant loses more test accuracy than allowed (it is removed), else 0.
    """
    import shutil

    from deploy.inferencer import OnnxInferencer
    from deploy.signal_model import signal_model_path
    from deploy.variants import write_triton_repository
    from pipeline.config import load_config
    from pipeline.data import prepare_data
    from pipeline.export import check_compatible, check_variants, export_signal

    if not args.variant and not args.triton and not args.signal_model:
        raise UserError(
            "nothing to do: give --variant int8, --variant fp16, --triton DIR and/or --signal-model"
        )
    cfg = load_config(args.config, args.overrides)
    inferencer = OnnxInferencer.from_uri(
        args.model, tracking_uri=args.tracking_uri, prefer_signal_model=False
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_path = out / "model.onnx"
    if inferencer.path.resolve() != model_path.resolve():
        shutil.copyfile(inferencer.path, model_path)
    print(f"model: {args.model} -> {model_path}")
    notes: list[str] = []
    refused: list[str] = []
    data = None
    if args.variant or (args.signal_model and not inferencer.is_image):
        data = prepare_data(cfg, echo=lambda line: print(line))
        check_compatible(inferencer.metadata, data)
    if not inferencer.is_image:
        raw, given = signal_model_path(model_path), signal_model_path(inferencer.path)
        if given.is_file() and not args.signal_model:
            if given.resolve() != raw.resolve():
                shutil.copyfile(given, raw)
            print(f"raw-signal model: {given} -> {raw}")
        else:
            if data is None:
                data = prepare_data(cfg, echo=lambda line: print(line))
                check_compatible(inferencer.metadata, data)
            export_signal(model_path, data, tolerance=cfg.export.tolerance, echo=print)
    elif args.signal_model:
        notes.append("no raw-signal model: this is an image model")
    if args.variant:
        assert data is not None
        drop = cfg.export.max_accuracy_drop if args.max_accuracy_drop is None else args.max_accuracy_drop
        reports = check_variants(
            model_path,
            args.variant,
            data,
            calibration_inputs=cfg.export.calibration_inputs,
            max_accuracy_drop=drop,
            echo=print,
        )
        refused = [r.kind for r in reports if not r.accepted]
        for r in reports:
            if not r.accepted:
                r.path.unlink(missing_ok=True)
        if refused:
            notes.append(f"removed {refused}: they lose more than {drop:g} points of test accuracy")
    if args.triton:
        folder = write_triton_repository(model_path, Path(args.triton), name=cfg.tracking.registered_model)
        notes.append(
            f"Triton repository: {folder} (run: tritonserver --model-repository {args.triton}; see "
            "docs/deploy.md)"
        )
    for note in notes:
        print(note)
    return 1 if args.variant and refused else 0


def cmd_serve(args: argparse.Namespace) -> int:
    """`pipeline serve`: check the options, load the model, then serve it with uvicorn until stopped."""
    _require_serve()
    import logging

    import uvicorn

    from deploy.inferencer import choose_providers
    from deploy.limits import is_loopback, listen_policy
    from deploy.service import ServiceSettings, create_app

    for name, value, low in (
        ("--max-batch", args.max_batch, 1),
        ("--port", args.port, 1),
        ("--max-body-mb", args.max_body_mb, 0.001),
        ("--max-windows", args.max_windows, 1),
        ("--max-pixels", args.max_pixels, 1),
        ("--body-timeout-s", args.body_timeout_s, 0.001),
    ):
        if value < low:
            raise UserError(f"{name} must be at least {low}, got {value}")
    if args.max_wait_ms < 0:
        raise UserError(f"--max-wait-ms must be >= 0, got {args.max_wait_ms}")
    if args.drift_window < 10:
        raise UserError(f"--drift-window must be at least 10 windows, got {args.drift_window}")
    if not 0 < args.drift_alpha < 1:
        raise UserError(f"--drift-alpha must be between 0 and 1 (a p-value), got {args.drift_alpha}")
    if args.model_root is not None and not Path(args.model_root).is_dir():
        raise UserError(f"--model-root {args.model_root}: not a folder")
    api_key = os.environ.get("PIPELINE_API_KEY") or None
    if args.protect_predict and not api_key:
        raise UserError("--protect-predict needs an API key: set the environment variable PIPELINE_API_KEY")
    protect_predict = listen_policy(
        args.host,
        api_key=api_key,
        allow_unauthenticated=args.allow_unauthenticated,
        protect_predict=args.protect_predict,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not is_loopback(args.host):
        logging.getLogger("pipeline.serve").warning(
            "listening on %s beyond loopback: predict %s; reload %s",
            args.host,
            "requires the API key" if protect_predict else "is OPEN to anyone who reaches the port",
            "requires the API key" if api_key else "is disabled (no API key)",
        )
    settings = ServiceSettings(
        model=args.model,
        tracking_uri=args.tracking_uri,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        batching=not args.no_batching,
        api_key=api_key,
        protect_predict=protect_predict,
        max_body_bytes=int(args.max_body_mb * (1 << 20)),
        max_windows=args.max_windows,
        max_pixels=args.max_pixels,
        body_timeout_s=args.body_timeout_s,
        model_root=args.model_root,
        resample=args.resample,
        threads=args.threads,
        providers=choose_providers(args.device),
        drift=not args.no_drift,
        drift_window=args.drift_window,
        drift_alpha=args.drift_alpha,
    )
    app = create_app(settings, preload=True)  # a bad model fails here with exit code 2, before the port opens
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=10)
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    """`pipeline ui`: replace this process by ``mlflow ui`` on the store (does not return)."""
    from pipeline.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        raise UserError(
            f"no MLflow store at {uri}; run `pipeline run configs/gearbox.yaml` first or pass --tracking-uri"
        )
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    print(f"MLflow UI on http://{args.host}:{args.port} ({uri}); Ctrl-C stops it", flush=True)
    os.execv(sys.executable, command)
    return 0  # not reached


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _runs_started() -> int:
    """MLflow runs started so far by this process (0 while `pipeline.tracking` is not even imported)."""
    tracking = sys.modules.get("pipeline.tracking")
    return tracking.runs_started() if tracking is not None else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `pipeline` command.

    Returns:
        The exit code: the command's (0 on success), 2 for a user error, 1 for a failed export, 130 on
        Ctrl-C (or SIGTERM during `pipeline run`). Bad arguments exit 2 through argparse.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    runs_before = _runs_started()
    try:
        try:
            return int(args.func(args))
        except Exception as exc:
            if _from_interrupt(exc):  # a Ctrl-C or SIGTERM that a library re-raised as another error
                raise KeyboardInterrupt from exc
            raise
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ExportError as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if args.command == "tune" and _runs_started() > runs_before:
            message = (
                "the running trial is marked failed (its MLflow run KILLED) and the study is kept; "
                "run the same command again to continue it"
            )
        elif _runs_started() > runs_before:
            message = "MLflow runs in progress are marked KILLED and the last checkpoints are kept"
        else:
            message = "no MLflow run had started, nothing was logged"
        print(f"interrupted: {message}", file=sys.stderr)
        return 130


def _from_interrupt(exc: BaseException) -> bool:
    """Whether `exc` stands for an interrupt: a KeyboardInterrupt in its cause or context chain, or
    one that a C++ extension (torch) turned into a RuntimeError naming it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, KeyboardInterrupt) or (
            isinstance(current, RuntimeError) and "KeyboardInterrupt" in str(current)
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


if __name__ == "__main__":
    raise SystemExit(main())
