"""The scorer bound to a version label: promotion and rollback followed, canary share split."""

from __future__ import annotations

import numpy as np

from features.behaviour import BehaviourConfig
from features.canary import canary_rows
from features.model_dir import ModelMetadata
from scoring.clients.base import ModelStatus, ServedMetadata, UnknownLabel
from tests.unit.scorer_fakes import FakeModel, make_scorer, tx_message


class LabelledModel(FakeModel):
    """A FakeModel whose server has TF Serving version labels (``labels``: label -> version)."""

    def __init__(self, versions: dict[int, ModelMetadata], labels: dict[str, int]) -> None:
        super().__init__(versions=versions)
        self.labels = labels

    def _resolve(self, version: int | None, label: str | None) -> int:
        if version is not None:
            return version
        if label is None:  # the terminal stage asks for "latest": give it the stable one
            return self.labels.get("stable", max(self.versions))
        if label not in self.labels:
            raise UnknownLabel(f"INVALID_ARGUMENT: Unrecognized servable version label: {label}")
        return self.labels[label]

    def predict(self, inputs, version=None, label=None):
        return super().predict(inputs, version=self._resolve(version, label))

    def metadata(self, version=None, label=None) -> ServedMetadata:
        return super().metadata(self._resolve(version, label))

    def status(self, label=None) -> ModelStatus:
        if label is not None and label not in self.labels:
            return ModelStatus(False, None, "Unrecognized servable version label",
                               unknown_label=True)
        return ModelStatus(True, self._resolve(None, label))


def _run_changing(scorer, changes: dict[int, callable]) -> None:
    """Run ``scorer``; after the batch starting at offset ``k`` is processed, call changes[k]."""
    original = scorer._process_batch

    def process(batch):
        result = original(batch)
        change = changes.get(batch[0].offset)
        if change is not None:
            change()
        return result

    scorer._process_batch = process
    scorer.run()


def test_promotion_and_rollback_of_the_stable_label_are_followed_without_a_restart():
    model = LabelledModel({3: ModelMetadata(threshold=0.5), 5: ModelMetadata(threshold=0.5)},
                          {"stable": 3})
    messages = [tx_message(i, 90) for i in range(9)]
    scorer, _, _, store, _ = make_scorer(messages, model=model, max_batch=3, threshold=None)
    _run_changing(scorer, {0: lambda: model.labels.update(stable=5),
                           3: lambda: model.labels.update(stable=3)})
    versions = {k: a.model_version for k, a in store.alerts.items()}
    assert versions == {"t0": 3, "t1": 3, "t2": 3, "t3": 5, "t4": 5, "t5": 5,
                        "t6": 3, "t7": 3, "t8": 3}
    assert scorer.model.bound_by == "label stable"
    assert scorer.metrics.health.as_dict()["model_version"] == 3


def test_a_label_moved_to_an_incompatible_version_is_refused_visibly():
    other = BehaviourConfig(delay_days=3)
    model = LabelledModel({3: ModelMetadata(threshold=0.5),
                           6: ModelMetadata(threshold=0.5, behaviour=other)}, {"stable": 3})
    messages = [tx_message(i, 90) for i in range(6)]
    scorer, _, _, store, _ = make_scorer(messages, model=model, max_batch=3, threshold=None)
    _run_changing(scorer, {0: lambda: model.labels.update(stable=6)})
    assert {a.model_version for a in store.alerts.values()} == {3}
    health = scorer.metrics.health.as_dict()
    assert health["status"] == "degraded"
    assert "label delay 3 days" in health["refused_model_versions"]["6"]


def test_a_canary_scores_its_share_of_events_chosen_by_transaction_id():
    model = LabelledModel({3: ModelMetadata(threshold=0.5), 5: ModelMetadata(threshold=0.5)},
                          {"stable": 3, "canary": 5})
    messages = [tx_message(i, 90) for i in range(60)]
    scorer, _, _, store, _ = make_scorer(messages, model=model, max_batch=20, threshold=None,
                                         canary_share=0.3)
    scorer.run()
    ids = [f"t{i}" for i in range(60)]
    expected = dict(zip(ids, np.where(canary_rows(ids, 0.3), 5, 3).tolist(), strict=True))
    assert {k: a.model_version for k, a in store.alerts.items()} == expected
    assert 5 < sum(v == 5 for v in expected.values()) < 35
    assert scorer.model.canary is not None and scorer.model.canary.version == 5
    assert scorer.metrics.health.as_dict()["model_version"] == 3  # the stable one


def test_an_incompatible_canary_is_refused_and_every_event_goes_to_stable():
    other = BehaviourConfig(late_tolerance_hours=2)
    model = LabelledModel({3: ModelMetadata(threshold=0.5),
                           5: ModelMetadata(threshold=0.5, behaviour=other)},
                          {"stable": 3, "canary": 5})
    messages = [tx_message(i, 90) for i in range(20)]
    scorer, _, _, store, _ = make_scorer(messages, model=model, max_batch=10, threshold=None,
                                         canary_share=0.5)
    scorer.run()
    assert {a.model_version for a in store.alerts.values()} == {3}
    refused = scorer.metrics.health.as_dict()["refused_model_versions"]
    assert refused["5"].startswith("canary: version 5 was trained with")


def test_without_the_label_on_the_server_the_latest_version_is_followed():
    model = LabelledModel({3: ModelMetadata(threshold=0.5), 4: ModelMetadata(threshold=0.5)}, {})
    messages = [tx_message(i, 90) for i in range(3)]
    scorer, _, _, store, _ = make_scorer(messages, model=model, threshold=None)
    scorer.run()
    assert {a.model_version for a in store.alerts.values()} == {4}
    assert scorer.model.bound_by == "latest"
