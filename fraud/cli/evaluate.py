"""`fraud evaluate`: score a labelled period with a model version and print its figures."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from fraud.cli.dates import parse_day


def evaluate(
    input_path: Annotated[
        Path, typer.Option("--input", envvar="FRAUD_INPUT",
                           help="Labelled transactions: a file or a directory (Parquet lake).")
    ],
    start: Annotated[
        str, typer.Option(metavar="YYYY-MM-DD", envvar="FRAUD_START",
                          help="First day of the period (UTC, inclusive).")
    ],
    end: Annotated[
        str, typer.Option(metavar="YYYY-MM-DD", envvar="FRAUD_END",
                          help="Last day of the period (UTC, inclusive).")
    ],
    model_dir: Annotated[
        Path, typer.Option(envvar="FRAUD_MODEL_DIR",
                           help="Model directory holding <version>/ exports.")
    ],
    version: Annotated[
        int | None, typer.Option(envvar="FRAUD_VERSION", min=0, show_default="the latest",
                                 help="Model version to evaluate.")
    ] = None,
    scores_out: Annotated[
        Path | None, typer.Option(envvar="FRAUD_SCORES_OUT",
                                  help="Write transaction_id,score of every transaction here.")
    ] = None,
    report_dir: Annotated[
        Path | None, typer.Option(envvar="FRAUD_REPORT_DIR",
                                  help="Write an HTML report with plots into this directory.")
    ] = None,
    keep_known_compromised: Annotated[
        bool, typer.Option(envvar="FRAUD_KEEP_KNOWN_COMPROMISED",
                           help="Assess every transaction; by default, as in the Handbook, those "
                                "of cards with a fraud already known on their day are left out.")
    ] = False,
) -> None:
    """Score a labelled period through the batch path; print AUC-ROC, AP, card precision@100."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
    from fraud.cli.console import stderr_console
    from training.evaluate_job import evaluate as run

    console = stderr_console()
    figures = run(
        input_path, parse_day("--start", start), parse_day("--end", end), model_dir,
        version=version, scores_out=scores_out, report_dir=report_dir,
        keep_known_compromised=keep_known_compromised,
        progress=console.log,
    )
    print(json.dumps(figures))
