"""TF_CONFIG parsing and the Indexed Job's TF_CONFIG (training/cluster.py)."""

from __future__ import annotations

import json

import pytest

from features.errors import InputError
from training.cluster import indexed_job_tf_config, parse_tf_config


@pytest.mark.parametrize("text", [None, "", "  ", '{"cluster": {}}', '{"task": {}}'])
def test_no_cluster_is_a_local_run(text):
    assert parse_tf_config(text) is None


def test_worker_zero_leads_a_cluster_without_a_chief():
    text = json.dumps({"cluster": {"worker": ["a:1", "b:2", "c:3"]},
                       "task": {"type": "worker", "index": 0}})
    cluster = parse_tf_config(text)
    assert cluster is not None
    assert cluster.workers == 3 and cluster.is_chief and cluster.rank == 0
    other = parse_tf_config(text.replace('"index": 0', '"index": 2'))
    assert other is not None and not other.is_chief and other.rank == 2


def test_a_chief_task_leads_and_workers_follow_it():
    cluster = {"chief": ["c:1"], "worker": ["w0:1", "w1:1"]}
    chief = parse_tf_config(json.dumps({"cluster": cluster, "task": {"type": "chief"}}))
    worker = parse_tf_config(json.dumps({"cluster": cluster,
                                         "task": {"type": "worker", "index": 0}}))
    assert chief is not None and worker is not None
    assert chief.is_chief and chief.rank == 0 and chief.addresses == ("c:1", "w0:1", "w1:1")
    assert not worker.is_chief and worker.rank == 1


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "not JSON"),
    ("[1]", "JSON object"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}', "task type"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}', "task index"),
    ('{"cluster": {"chief": ["a:1", "b:1"]}, "task": {"type": "chief"}}', "at most one chief"),
])
def test_a_malformed_tf_config_is_refused(text, message):
    with pytest.raises(InputError, match=message):
        parse_tf_config(text)


def test_indexed_job_tf_config_names_every_pod_by_index():
    text = indexed_job_tf_config(1, 3, "fraud-train-{index}.fraud-train:2222")
    assert json.loads(text) == {
        "cluster": {"worker": [f"fraud-train-{i}.fraud-train:2222" for i in range(3)]},
        "task": {"type": "worker", "index": 1},
    }
    with pytest.raises(InputError, match="outside"):
        indexed_job_tf_config(3, 3, "h-{index}:1")
    with pytest.raises(InputError, match="index"):
        indexed_job_tf_config(0, 2, "host:1")
