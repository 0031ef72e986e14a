"""`fraud retrain`: scheduled retraining with a promotion gate; the decision printed last."""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

from features.errors import InputError
from fraud.cli.dates import parse_day


def retrain(
    input: Annotated[
        Path, typer.Option("--input", envvar="FRAUD_INPUT",
                           help="Labelled transactions: the Parquet lake (fraud archive), "
                                "date partitions or files.")
    ],
    model_dir: Annotated[
        Path, typer.Option(envvar="FRAUD_MODEL_DIR",
                           help="Model directory: versions, models.config, decisions.jsonl.")
    ],
    metric: Annotated[
        str, typer.Option(envvar="FRAUD_GATE_METRIC",
                          help="Metric the challenger must win on: card_precision_at_100, "
                               "auc_roc, average_precision, precision_at_threshold, "
                               "recall_at_threshold.")
    ] = "card_precision_at_100",
    margin: Annotated[
        float, typer.Option(envvar="FRAUD_GATE_MARGIN", min=0.0,
                            help="The challenger must beat the champion on --metric by more "
                                 "than this (absolute).")
    ] = 0.0,
    tolerance: Annotated[
        float, typer.Option(envvar="FRAUD_GATE_TOLERANCE", min=0.0,
                            help="Largest drop (absolute) allowed on the other metrics "
                                 "(AUC-ROC, average precision, card precision@100).")
    ] = 0.01,
    train_days: Annotated[
        int, typer.Option(envvar="FRAUD_TRAIN_DAYS", min=2, help="Days of the training window.")
    ] = 28,
    eval_days: Annotated[
        int, typer.Option(envvar="FRAUD_EVAL_DAYS", min=1,
                          help="Most recent labelled days held out to compare the models.")
    ] = 7,
    delay_days: Annotated[
        int, typer.Option(envvar="FRAUD_DELAY_DAYS", min=0,
                          help="Days after which a fraud label is known.")
    ] = 7,
    history_days: Annotated[
        int | None, typer.Option(envvar="FRAUD_HISTORY_DAYS", min=0,
                                 show_default="what the features look back over (37)",
                                 help="Days of history before the training window.")
    ] = None,
    as_of: Annotated[
        str | None, typer.Option(metavar="YYYY-MM-DD", envvar="FRAUD_AS_OF",
                                 show_default="the newest day with data",
                                 help="Decide as if this were the newest day with data.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option(help="Train, evaluate and decide, but write nothing into "
                                "--model-dir (the challenger is discarded).")
    ] = False,
    canary: Annotated[
        bool, typer.Option(help="Label an accepted challenger 'canary' instead of 'stable' "
                                "(promote it later with fraud models promote).")
    ] = False,
    model_name: Annotated[
        str, typer.Option(envvar="FRAUD_MODEL_NAME", help="Model name in a new models.config.")
    ] = "fraud",
    serving_base_path: Annotated[
        str | None, typer.Option(envvar="FRAUD_SERVING_BASE_PATH",
                                 show_default="--model-dir, absolute",
                                 help="base_path written into a new models.config (the model "
                                      "directory as the model server sees it).")
    ] = None,
    epochs: Annotated[
        int, typer.Option(envvar="FRAUD_EPOCHS", min=1,
                          help="Maximum epochs (early stopping on validation AP).")
    ] = 20,
    batch_size: Annotated[
        int, typer.Option(envvar="FRAUD_BATCH_SIZE", min=1, help="Batch size per replica.")
    ] = 512,
    alerts_per_day: Annotated[
        int, typer.Option(envvar="FRAUD_ALERTS_PER_DAY", min=1,
                          help="Daily alert budget that sets the alert threshold.")
    ] = 100,
    labels: Annotated[
        list[Path] | None, typer.Option("--labels", metavar="FILE",
                                        help="Analysts' decisions overriding the input's "
                                             "labels (fraud labels export); repeatable.")
    ] = None,
    runner: Annotated[
        str, typer.Option(envvar="FRAUD_RUNNER", help="Beam runner.")
    ] = "DirectRunner",
    beam_option: Annotated[
        list[str] | None, typer.Option(envvar="FRAUD_BEAM_OPTION", metavar="KEY=VALUE",
                                       help="Beam pipeline option, repeatable.")
    ] = None,
    seed: Annotated[int, typer.Option(envvar="FRAUD_SEED", help="Random seed.")] = 0,
    wait_for_server: Annotated[
        list[str] | None,
        typer.Option("--wait-for-server", metavar="URL", envvar="FRAUD_WAIT_FOR_SERVER",
                     help="For the official TF Serving: add the new version to the served ones, "
                          "wait until this server (grpc:// or http://, repeatable) serves it, "
                          "then move the label.")
    ] = None,
    wait_seconds: Annotated[
        float, typer.Option(min=0.0, help="Longest wait for --wait-for-server.")
    ] = 300.0,
) -> None:
    """Retrain on the latest labelled window; promote the challenger only if it beats the champion.

    Exit codes: 0 promoted (or first champion, or canary with --canary), 3 kept
    the champion, 2 input error, 1 failure. With --dry-run the code says what
    would have been decided. The decision is printed last as JSON (also on
    errors). docs/retraining.md.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from rich.console import Console

    console = Console(stderr=True, log_path=False, soft_wrap=True)
    try:
        from training.gate import GateRule
        from training.retrain import RetrainConfig, run
        from training.settings import TrainConfig

        try:
            rule = GateRule(metric=metric, margin=margin, tolerance=tolerance)
        except ValueError as err:
            raise InputError(str(err)) from None
        config = RetrainConfig(
            input_path=input, model_dir=model_dir, rule=rule, train_days=train_days,
            eval_days=eval_days, delay_days=delay_days, history_days=history_days,
            as_of=None if as_of is None else parse_day("--as-of", as_of), dry_run=dry_run,
            canary=canary, model_name=model_name, serving_base_path=serving_base_path,
            alerts_per_day=alerts_per_day, runner=runner, beam_options=tuple(beam_option or ()),
            label_files=tuple(labels or ()),
            train=TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed),
            wait_for_servers=tuple(wait_for_server or ()), wait_seconds=wait_seconds,
        )
        result = run(config, progress=console.log)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        print(json.dumps({"decision": "input_error", "error": str(err), "exit_code": 2}))
        raise typer.Exit(2) from None
    except Exception as err:
        traceback.print_exc()
        print(json.dumps({"decision": "failed", "error": f"{type(err).__name__}: {err}",
                          "exit_code": 1}))
        raise typer.Exit(1) from None
    print(json.dumps(result.decision, default=str))
    raise typer.Exit(result.exit_code)
