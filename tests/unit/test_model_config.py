"""TF Serving's model config file: read as the official server reads it, written atomically."""

from __future__ import annotations

import pytest

from features import model_config as configs
from features.model_config import ModelConfig, ModelConfigError, VersionPolicy

# As an operator (or TF Serving's documentation) writes it: comments, single quotes.
HAND_WRITTEN = """
# the fraud model, two versions, two labels
model_config_list {
  config {
    name: 'fraud'
    base_path: '/models/fraud'
    model_platform: 'tensorflow'
    model_version_policy { specific { versions: 4 versions: 5 } }
    version_labels { key: 'stable' value: 4 }
    version_labels { key: 'canary' value: 5 }
  }
}
"""


def test_a_hand_written_config_is_read_with_its_policy_and_labels():
    config = configs.parse(HAND_WRITTEN, "models.config")
    assert config.name == "fraud" and config.base_path == "/models/fraud"
    assert config.policy == VersionPolicy("specific", versions=(4, 5))
    assert config.labels == {"canary": 5, "stable": 4}
    assert config.label("stable") == 4 and config.label("nope") is None
    assert config.served_versions == (4, 5)


def test_what_is_written_reads_back_the_same_and_is_tf_servings_text_format(tmp_path):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = configs.specific([3, 7], {"stable": 7, "canary": 9}, "fraud", "/m")
    path = tmp_path / "models.config"
    configs.write(path, config)
    assert configs.read(path) == config
    assert config.served_versions == (3, 7, 9)  # a labelled version is always served
    official = text_format.Parse(path.read_text(), model_server_config_pb2.ModelServerConfig())
    entry = official.model_config_list.config[0]
    assert list(entry.model_version_policy.specific.versions) == [3, 7, 9]
    assert dict(entry.version_labels) == {"stable": 7, "canary": 9}
    assert entry.model_platform == "tensorflow"
    assert [p.name for p in tmp_path.iterdir()] == ["models.config"]  # no temporary left


@pytest.mark.parametrize("policy", [VersionPolicy(), VersionPolicy("latest", num_versions=3),
                                    VersionPolicy("all")])
def test_every_policy_round_trips(tmp_path, policy):
    config = ModelConfig("fraud", "/m", policy, {"stable": 1})
    configs.write(tmp_path / "c", config)
    assert configs.read(tmp_path / "c") == config


def test_policies_choose_the_versions_on_disk():
    on_disk = [1, 2, 5, 9]
    assert VersionPolicy().aspired(on_disk) == [9]
    assert VersionPolicy("latest", num_versions=2).aspired(on_disk) == [5, 9]
    assert VersionPolicy("all").aspired(on_disk) == on_disk
    assert VersionPolicy("specific", versions=(2, 3, 9)).aspired(on_disk) == [2, 9]
    assert VersionPolicy().latest_one and not VersionPolicy("all").latest_one
    no_policy = configs.parse(
        'model_config_list { config { name: "m" base_path: "/m" model_platform: "tensorflow" } }',
        "x")
    assert no_policy.policy == VersionPolicy()  # TF Serving's default: latest 1


@pytest.mark.parametrize(("text", "message"), [
    ("model_config_list { config { name: 'a' base_path: '/a' model_platform: 'tensorflow' } "
     "config { name: 'b' base_path: '/b' model_platform: 'tensorflow' } }", "lists 2 models"),
    ("model_config_list { config { name: 'a' base_path: '/a' } }", "model_platform"),
    ("model_config_list { config { name: 'a' base_path: '/a' model_platform: 'pytorch' } }",
     "model_platform"),
    ("model_config_list { config { name: 'a' model_platform: 'tensorflow' } }", "base_path"),
    ("model_config_list { config { base_path: '/a' model_platform: 'tensorflow' } }", "no name"),
    ("model_config_list { config { name: 'a' base_path: '/a' model_platform: 'tensorflow' "
     "model_version_policy { specific { } } } }", "lists no version"),
    ("model_config_list { config { name: 'a' base_path: '/a' model_platform: 'tensorflow' "
     "version_labels { key: 'has space' value: 1 } } }", "letters, digits"),
    ("model_config_list { config { name: 'a' ", "not a TF Serving model config"),
    ("this is not a config", "not a TF Serving model config"),
    ("", "needs a model_config_list"),
])
def test_what_cannot_be_served_is_refused_with_the_reason(text, message):
    with pytest.raises(ModelConfigError, match=message):
        configs.parse(text, "models.config")


def test_a_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(ModelConfigError, match="not found"):
        configs.read(tmp_path / "models.config")
