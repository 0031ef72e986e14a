"""The training cluster a process belongs to, from ``TF_CONFIG``; free of TensorFlow imports.

``TF_CONFIG`` is TensorFlow's own description of a multi-worker job::

    {"cluster": {"worker": ["host0:2222", "host1:2222"]},
     "task": {"type": "worker", "index": 0}}

When it names a cluster, ``fraud train`` trains under
``MultiWorkerMirroredStrategy`` (:func:`training.trainer.make_strategy`); the
**chief** — the ``chief`` task if the cluster has one, else ``worker`` 0 —
alone exports. :func:`indexed_job_tf_config` builds ``TF_CONFIG`` for a pod of
a Kubernetes Indexed Job from its completion index (``deploy/k8s``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from features.errors import InputError

#: Task types that take part in synchronous training (``evaluator`` does not).
TRAINING_TASKS = ("chief", "worker")


@dataclass(frozen=True)
class Cluster:
    """A process's place in a multi-worker training cluster."""

    task_type: str
    task_index: int
    #: Addresses of every training task, chief first, then the workers in index order.
    addresses: tuple[str, ...]
    #: Whether the cluster has a ``chief`` task (else ``worker`` 0 leads).
    has_chief: bool = False

    @property
    def workers(self) -> int:
        """Processes that train together (chief included)."""
        return len(self.addresses)

    @property
    def is_chief(self) -> bool:
        """Whether this process exports (the ``chief``, else ``worker`` 0)."""
        return self.task_type == "chief" or (
            self.task_type == "worker" and self.task_index == 0 and not self.has_chief
        )

    @property
    def rank(self) -> int:
        """Position of this task among :attr:`addresses`."""
        if self.task_type == "chief":
            return 0
        return self.task_index + (1 if self.has_chief else 0)


def parse_tf_config(text: str | None) -> Cluster | None:
    """The cluster a ``TF_CONFIG`` value names, or ``None`` for a local run.

    Unset, empty or cluster-less ``TF_CONFIG`` means a local run. A malformed
    one is an :class:`InputError`: training alone when a cluster was meant
    would give N independent models instead of one.
    """
    if not text or not text.strip():
        return None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"TF_CONFIG is not JSON: {err}") from None
    if not isinstance(config, Mapping):
        raise InputError("TF_CONFIG must be a JSON object")
    cluster = config.get("cluster") or {}
    if not isinstance(cluster, Mapping):
        raise InputError("TF_CONFIG 'cluster' must be an object of task lists")
    if not any(cluster.get(t) for t in TRAINING_TASKS):
        return None
    task = config.get("task") or {}
    task_type, index = task.get("type"), task.get("index", 0)
    if task_type not in TRAINING_TASKS:
        raise InputError(
            f"TF_CONFIG task type must be one of {', '.join(TRAINING_TASKS)}, got {task_type!r}"
        )
    members: list[Any] = list(cluster.get(task_type) or [])
    if not isinstance(index, int) or not 0 <= index < len(members):
        raise InputError(
            f"TF_CONFIG task index {index!r} is not in the cluster's {len(members)} "
            f"{task_type} address(es)"
        )
    if len(cluster.get("chief") or []) > 1:
        raise InputError("TF_CONFIG may name at most one chief")
    addresses = tuple(str(a) for t in TRAINING_TASKS for a in (cluster.get(t) or []))
    return Cluster(task_type, index, addresses, has_chief=bool(cluster.get("chief")))


def current_cluster() -> Cluster | None:
    """The cluster of this process's ``TF_CONFIG`` environment variable."""
    return parse_tf_config(os.environ.get("TF_CONFIG"))


def indexed_job_tf_config(index: int, workers: int, address_pattern: str) -> str:
    """``TF_CONFIG`` of pod ``index`` of an Indexed Job of ``workers`` pods.

    ``address_pattern`` holds ``{index}``, e.g.
    ``fraud-train-{index}.fraud-train:2222``: a pod of an Indexed Job named
    ``fraud-train`` whose ``subdomain`` is the headless Service ``fraud-train``
    is reachable as ``fraud-train-<index>.fraud-train``. Worker 0 is the chief.
    """
    if workers < 1:
        raise InputError(f"the cluster needs at least 1 worker, got {workers}")
    if not 0 <= index < workers:
        raise InputError(f"task index {index} is outside the {workers} worker(s)")
    if "{index}" not in address_pattern:
        raise InputError(f"the worker address pattern must contain {{index}}: {address_pattern!r}")
    addresses = [address_pattern.replace("{index}", str(i)) for i in range(workers)]
    return json.dumps({"cluster": {"worker": addresses},
                       "task": {"type": "worker", "index": index}})
