"""`fraud train`: the batch retraining job; prints the exported version's path last."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fraud.cli.dates import parse_day


def train(
    input: Annotated[
        Path, typer.Option("--input", envvar="FRAUD_INPUT",
                           help="Labelled transactions: a file or a directory (Parquet lake).")
    ],
    train_start: Annotated[
        str, typer.Option(metavar="YYYY-MM-DD", envvar="FRAUD_TRAIN_START",
                          help="First day of the training window (UTC, inclusive); "
                               "earlier transactions are history for the features.")
    ],
    train_end: Annotated[
        str, typer.Option(metavar="YYYY-MM-DD", envvar="FRAUD_TRAIN_END",
                          help="Last day of the training window (UTC, inclusive); "
                               "nothing later is read.")
    ],
    model_dir: Annotated[
        Path, typer.Option(envvar="FRAUD_MODEL_DIR",
                           help="Model directory: the export goes to <model-dir>/<version>/.")
    ],
    delay_days: Annotated[
        int, typer.Option(envvar="FRAUD_DELAY_DAYS", min=0,
                          help="Days after which a fraud label is known (terminal risk).")
    ] = 7,
    epochs: Annotated[
        int, typer.Option(envvar="FRAUD_EPOCHS", min=1,
                          help="Maximum epochs (early stopping on validation AP).")
    ] = 20,
    batch_size: Annotated[
        int, typer.Option(envvar="FRAUD_BATCH_SIZE", min=1,
                          help="Batch size per replica (global = this x replicas).")
    ] = 512,
    labels: Annotated[
        list[Path] | None, typer.Option("--labels", metavar="FILE",
                                        help="Analysts' decisions (fraud labels export, .jsonl "
                                             "or .csv) that override the input's labels; "
                                             "repeatable, the latest decision wins.")
    ] = None,
    runner: Annotated[
        str, typer.Option(envvar="FRAUD_RUNNER",
                          help="Beam runner, e.g. DirectRunner, FlinkRunner, SparkRunner, "
                               "DataflowRunner.")
    ] = "DirectRunner",
    beam_option: Annotated[
        list[str] | None, typer.Option(envvar="FRAUD_BEAM_OPTION", metavar="KEY=VALUE",
                                       help="Beam pipeline option, repeatable "
                                            "(e.g. flink_master=host:8081).")
    ] = None,
    replicas: Annotated[
        int | None, typer.Option(envvar="FRAUD_REPLICAS", min=1, show_default="all GPUs or 1 CPU",
                                 help="Split the CPU into N logical devices, one replica each "
                                      "(tests the multi-replica path without GPUs).")
    ] = None,
    work_dir: Annotated[
        Path | None, typer.Option(envvar="FRAUD_WORK_DIR", show_default="a temporary directory",
                                  help="Keep the transformed data and transform output here.")
    ] = None,
    logs_dir: Annotated[
        Path | None, typer.Option(envvar="FRAUD_LOGS_DIR", show_default="<model-dir>/logs",
                                  help="TensorBoard logs.")
    ] = None,
    alerts_per_day: Annotated[
        int, typer.Option(envvar="FRAUD_ALERTS_PER_DAY", min=1,
                          help="Daily alert budget that sets the alert threshold.")
    ] = 100,
    mixed_precision: Annotated[
        bool, typer.Option(envvar="FRAUD_MIXED_PRECISION",
                           help="float16 compute on GPUs (ignored without a GPU).")
    ] = False,
    seed: Annotated[int, typer.Option(envvar="FRAUD_SEED", help="Random seed.")] = 0,
    cluster_workers: Annotated[
        int | None, typer.Option(envvar="FRAUD_CLUSTER_WORKERS", min=1,
                                 help="Multi-worker training without TF_CONFIG: the number of "
                                      "workers (e.g. a Kubernetes Indexed Job's completions); "
                                      "builds TF_CONFIG with --cluster-address and --task-index.")
    ] = None,
    cluster_address: Annotated[
        str | None, typer.Option(envvar="FRAUD_CLUSTER_ADDRESS", metavar="PATTERN",
                                 help="Each worker's HOST:PORT with {index} for its number, "
                                      "e.g. fraud-train-{index}.fraud-train:2222.")
    ] = None,
    task_index: Annotated[
        int | None, typer.Option(envvar="JOB_COMPLETION_INDEX", min=0,
                                 help="This worker's number (Kubernetes sets "
                                      "JOB_COMPLETION_INDEX in an Indexed Job); 0 is the chief.")
    ] = None,
) -> None:
    """Retrain the model on a window of labelled history and export a new version.

    With TF_CONFIG naming a cluster (or --cluster-workers), every worker runs this same
    command: they train one model together (MultiWorkerMirroredStrategy) and the chief
    alone exports it and prints its path; another worker prints a JSON summary last.
    """
    import json
    import os

    from features.errors import InputError
    from fraud.cli.console import stderr_console

    if cluster_workers is not None:
        from training.cluster import indexed_job_tf_config

        if os.environ.get("TF_CONFIG"):
            raise InputError("give either TF_CONFIG or --cluster-workers, not both")
        if cluster_address is None or task_index is None:
            raise InputError("--cluster-workers needs --cluster-address and --task-index "
                             "(JOB_COMPLETION_INDEX)")
        os.environ["TF_CONFIG"] = indexed_job_tf_config(task_index, cluster_workers,
                                                        cluster_address)

    from training.settings import TrainConfig
    from training.train_job import TrainJobConfig, run

    console = stderr_console()
    config = TrainJobConfig(
        input_path=input,
        train_start=parse_day("--train-start", train_start),
        train_end=parse_day("--train-end", train_end),
        model_dir=model_dir,
        delay_days=delay_days,
        runner=runner,
        beam_options=tuple(beam_option or ()),
        replicas=replicas,
        work_dir=work_dir,
        logs_dir=logs_dir,
        alerts_per_day=alerts_per_day,
        label_files=tuple(labels or ()),
        train=TrainConfig(epochs=epochs, batch_size=batch_size,
                          mixed_precision=mixed_precision, seed=seed),
    )
    result = run(config, progress=lambda message: console.log(message))
    if result.exported:
        print(result.export_path)
    else:
        training = result.metadata.details["training"]
        print(json.dumps({"exported": None, "role": "worker",
                          "workers": training["workers"], "replicas": training["replicas"],
                          "examples_per_replica": training["examples_per_replica"],
                          "validation_metrics": result.metadata.details["validation_metrics"]}))
