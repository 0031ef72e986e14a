"""The ``fraud`` console script: one module per command, registered here.

Command modules import heavy libraries (TensorFlow, Beam) inside their
functions, so ``fraud --help`` stays fast.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer

from features.errors import InputError

app = typer.Typer(
    name="fraud",
    help="Card-fraud detection: simulate, ingest, train, evaluate, serve, score, triage.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _register() -> None:
    """Attach every command module's Typer commands to ``app``."""
    from fraud.cli import evaluate, produce, simulate

    app.command("simulate")(simulate.simulate)
    app.command("produce")(produce.produce)
    from fraud.cli import archive

    app.add_typer(archive.app, name="archive")
    app.command("evaluate")(evaluate.evaluate)
    from fraud.cli import alerts, checkpoint, db, labels

    app.add_typer(db.app, name="db")
    app.add_typer(checkpoint.app, name="checkpoint")
    app.add_typer(alerts.app, name="alerts")
    app.add_typer(labels.app, name="labels")
    from fraud.cli import audit, users, workbench

    app.add_typer(users.app, name="users")
    app.add_typer(audit.app, name="audit")
    app.command("workbench")(workbench.workbench)
    from fraud.cli import model_server

    app.command("model-server")(model_server.model_server)
    from fraud.cli import models, retrain, train

    app.command("train")(train.train)
    app.command("retrain")(retrain.retrain)
    app.add_typer(models.app, name="models")
    from fraud.cli import score

    app.command("score")(score.score)
    from fraud.cli import terminal_stage

    app.command("terminal-stage")(terminal_stage.terminal_stage)
    from fraud.cli import demo

    app.command("demo")(demo.demo)
    from fraud.cli import bench

    app.add_typer(bench.app, name="bench")


_register()


def run(argv: Sequence[str] | None = None) -> int:
    """Run one command in this process; its exit code.

    0 success; 2 a usage error (Typer) or an input error (one line on stderr,
    no traceback); 1 anything else. Tests call this in-process.
    """
    try:
        app(args=None if argv is None else list(argv), prog_name="fraud")
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def main() -> None:
    """Entry point of the ``fraud`` console script."""
    sys.exit(run())
