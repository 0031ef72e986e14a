"""`fraud models list|promote|rollback|canary`: a model directory's versions and labels.

Every change rewrites ``<model-dir>/models.config`` (TF Serving's model config,
which ``fraud model-server --model-config`` and the official server poll) and
appends to ``<model-dir>/decisions.jsonl``. Each command prints JSON last.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from features.errors import InputError

app = typer.Typer(help="Model versions, labels (stable, canary), promotion and rollback.",
                  no_args_is_help=True)

ModelDirOption = Annotated[
    Path, typer.Option(envvar="FRAUD_MODEL_DIR", help="Model directory: <dir>/<version>/.")
]
ReasonOption = Annotated[str, typer.Option(help="Why (recorded in the decision log).")]
NameOption = Annotated[
    str, typer.Option(envvar="FRAUD_MODEL_NAME", help="Model name in a new models.config.")
]
WaitOption = Annotated[
    list[str] | None,
    typer.Option("--wait-for-server", metavar="URL", envvar="FRAUD_WAIT_FOR_SERVER",
                 help="For the official TF Serving: first add the version to the served ones, "
                      "wait until this server (grpc:// or http://, repeatable) reports it "
                      "AVAILABLE, then move the label."),
]
WaitSecondsOption = Annotated[
    float, typer.Option(min=0.0, help="Longest wait for --wait-for-server.")
]
BasePathOption = Annotated[
    str | None,
    typer.Option(envvar="FRAUD_SERVING_BASE_PATH", show_default="--model-dir, absolute",
                 help="base_path written into a new models.config (as the server sees it)."),
]


def _print(payload: dict[str, Any]) -> None:
    print(json.dumps(payload, default=str))


def _waiter(urls: list[str] | None, model_dir: Path, seconds: float) -> Any:
    if not urls:
        return None
    from rich.console import Console

    from features.model_registry import read_config
    from scoring.clients.wait import waiter

    config = read_config(model_dir)
    console = Console(stderr=True, log_path=False)
    return waiter(urls, config.name if config else "fraud", seconds, console.log)


def _changed(change: Any) -> dict[str, Any]:
    config = change.config
    return {"labels": dict(config.labels), "served_versions": list(config.served_versions),
            "decision": change.entry}


@app.command("list")
def list_versions(model_dir: ModelDirOption) -> None:
    """Every version with its window, figures, labels and promotion decision (JSON last)."""
    from rich.console import Console
    from rich.table import Table

    from features.model_dir import (
        MetadataError,
        list_versions,
        read_metadata,
        require_model_dir,
    )
    from features.model_registry import read_config, read_decisions

    root = require_model_dir(model_dir)
    config = read_config(root)
    decisions = read_decisions(root)
    labels = dict(config.labels) if config else {}
    served = set(config.policy.aspired(list_versions(root))) if config else set()
    rows: list[dict[str, Any]] = []
    for version in list_versions(root):
        details: dict[str, Any] = {}
        window: list[str | None] = [None, None]
        created: str | None = None
        error: str | None = None
        try:
            meta = read_metadata(root, version)
            details, created = dict(meta.details), meta.created_at
            window = [None if d is None else d.isoformat()
                      for d in (meta.train_start, meta.train_end)]
        except MetadataError as err:
            error = str(err)
        retrain = details.get("retrain") or {}
        logged = [d for d in decisions
                  if d.get("version") == version or d.get("challenger_version") == version]
        rows.append({
            "version": version,
            "labels": sorted(k for k, v in labels.items() if v == version),
            "served": version in served if config else None,
            "train_window": window,
            "created_at": created,
            "validation_metrics": details.get("validation_metrics"),
            "evaluation": (retrain.get("figures") or {}).get("challenger"),
            "decision": retrain.get("decision"),
            "reason": retrain.get("reason"),
            "last_action": logged[-1].get("action") if logged else None,
            "metadata_error": error,
        })
    table = Table(title=f"{root}", show_lines=False)
    for column in ("version", "labels", "served", "train window", "eval cp@100",
                   "eval AUC", "decision"):
        table.add_column(column)
    for row in rows:
        evaluation: dict[str, Any] = row["evaluation"] or {}
        table.add_row(
            str(row["version"]), ",".join(row["labels"]), str(row["served"]),
            " to ".join(str(d) for d in row["train_window"]),
            _fmt(evaluation.get("card_precision_at_100")), _fmt(evaluation.get("auc_roc")),
            str(row["decision"] or ""),
        )
    Console(stderr=True).print(table)
    _print({"model_dir": str(root), "labels": labels,
            "served_versions": list(config.served_versions) if config else None,
            "model_config": None if config is None else str(root / "models.config"),
            "versions": rows, "decisions": len(decisions)})


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else ""


@app.command("promote")
def promote(
    model_dir: ModelDirOption,
    version: Annotated[int | None, typer.Argument(
        min=0, show_default="the canary version", help="Version to label stable.")] = None,
    reason: ReasonOption = "",
    model_name: NameOption = "fraud",
    serving_base_path: BasePathOption = None,
    wait_for_server: WaitOption = None,
    wait_seconds: WaitSecondsOption = 300.0,
) -> None:
    """Label VERSION stable (default: the canary); the previous stable stays loaded."""
    from features import model_registry as registry
    from features.model_config import CANARY
    from features.model_dir import require_model_dir

    root = require_model_dir(model_dir)
    with registry.locked(root):
        if version is None:
            config = registry.read_config(root)
            version = config.label(CANARY) if config else None
            if version is None:
                raise InputError("no canary version to promote: name the version")
        change = registry.promote(root, version, reason=reason, name=model_name,
                                  base_path=serving_base_path,
                                  wait=_waiter(wait_for_server, root, wait_seconds))
    _print(_changed(change))


@app.command("rollback")
def rollback(
    model_dir: ModelDirOption,
    reason: ReasonOption = "",
    wait_for_server: WaitOption = None,
    wait_seconds: WaitSecondsOption = 300.0,
) -> None:
    """Move stable back to the previous stable version (recorded in the decision log)."""
    from features import model_registry as registry
    from features.model_dir import require_model_dir

    root = require_model_dir(model_dir)
    with registry.locked(root):
        change = registry.rollback(root, reason=reason,
                                   wait=_waiter(wait_for_server, root, wait_seconds))
    _print(_changed(change))


@app.command("canary")
def canary(
    model_dir: ModelDirOption,
    version: Annotated[int | None, typer.Argument(min=0, help="Version to label canary.")] = None,
    clear: Annotated[bool, typer.Option(help="Remove the canary label.")] = False,
    reason: ReasonOption = "",
    model_name: NameOption = "fraud",
    serving_base_path: BasePathOption = None,
    wait_for_server: WaitOption = None,
    wait_seconds: WaitSecondsOption = 300.0,
) -> None:
    """Label VERSION canary (scorers with --canary-share send it that share), or --clear."""
    from features import model_registry as registry
    from features.model_dir import require_model_dir

    if (version is None) != clear:
        raise InputError("give a VERSION to label canary, or --clear")
    root = require_model_dir(model_dir)
    with registry.locked(root):
        change = registry.set_canary(root, version, reason=reason, name=model_name,
                                     base_path=serving_base_path,
                                     wait=_waiter(wait_for_server, root, wait_seconds))
    _print(_changed(change))
