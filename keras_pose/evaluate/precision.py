"""What a lower serving precision costs in accuracy: the same serving graph at float32 and at
the lower precision over the same held-out records, scored with one PCK metric."""

from __future__ import annotations

import dataclasses
import glob
import math

from keras_pose import metrics
from keras_pose.data import dataset as dataset_lib
from keras_pose.evaluate.records import predict_saved_model_records
from keras_pose.export.predictor import model_predictor
from keras_pose.keypoints import KeypointSet
from keras_pose.precision import FLOAT32

DEFAULT_METRIC = "pck_torso@0.2"
# The bound: a bfloat16 export may lose at most 0.5 points of PCK@0.2.
DEFAULT_MAX_DROP_POINTS = 0.5
# Enough persons that one flipped keypoint moves PCK by well under the bound (17 keypoints x
# 256 persons: 0.02 points per keypoint), few enough for a minute on a 2-core CPU.
DEFAULT_MAX_RECORDS = 256


@dataclasses.dataclass(frozen=True)
class PrecisionComparison:
    """PCK of the float32 and the lower-precision serving graphs on the same records.

    Attributes:
        metric: the metric's name (``pck_torso@0.2``).
        precision: the lower precision compared (``bfloat16``).
        reference: the float32 graph's score, a fraction.
        lowered: the lower-precision graph's score, a fraction.
        num_persons: persons scored.
        records: the records pattern read.
    """
    metric: str
    precision: str
    reference: float
    lowered: float
    num_persons: int
    records: str

    @property
    def drop_points(self) -> float:
        """float32 minus the lower precision, in PCK points (percent)."""
        return 100.0 * (self.reference - self.lowered)

    def summary(self) -> str:
        return (f"{self.metric} on {self.num_persons} persons of {self.records}: float32 "
                f"{100 * self.reference:.2f}, {self.precision} {100 * self.lowered:.2f}, "
                f"change {-self.drop_points:+.2f} points")


def compare_precision(model, records: str, *, keypoint_set: KeypointSet, margin: float,
                      precision: str, flip_test: bool = False,
                      max_records: int = DEFAULT_MAX_RECORDS, batch_size: int = 16,
                      metric: str = DEFAULT_METRIC) -> PrecisionComparison:
    """Score the serving graph of ``model`` at float32 and at ``precision`` on ``records``.

    Both run exactly what the export writes (``export.model_predictor``: crop, network,
    decoding), on the first ``max_records`` records in file order.

    Args:
        model: a ``PoseModel``.
        records: a TFRecord glob of held-out persons.
        keypoint_set, margin, flip_test: as for the export.
        precision: the precision to compare with float32 (refused without its hardware).
        max_records: read at most this many records.
        batch_size: records per call.
        metric: a PCK metric name (``keras_pose.metrics``).

    Raises:
        ValueError: no records match, or the metric is undefined for the keypoint set.
    """
    if not glob.glob(records):
        raise ValueError(f"no records match {records!r} (the held-out records the {precision} "
                         "export is checked on; pass --records)")
    if max_records < 1:
        raise ValueError(f"max_records must be >= 1, received {max_records}")
    spec = metrics.parse_metric(metric)
    metrics.check_metrics([spec], keypoint_set)
    batch_size = min(batch_size, max_records)
    dataset = dataset_lib.make_dataset(records, batch_size=batch_size,
                                       num_keypoints=keypoint_set.num_keypoints,
                                       training=False, deterministic=True)
    dataset = dataset.unbatch().take(max_records).batch(batch_size)
    scores = {}
    for name in (FLOAT32, precision):
        predictor = model_predictor(model, margin=margin, keypoint_set=keypoint_set,
                                    flip_test=flip_test, precision=name)
        predictions = predict_saved_model_records(predictor, dataset)
        scores[name] = metrics.compute_metric(spec, predictions, keypoint_set)
    if math.isnan(scores[FLOAT32].overall):
        raise ValueError(f"{records}: no labeled keypoints to score {spec.name} on")
    return PrecisionComparison(spec.name, precision, float(scores[FLOAT32].overall),
                               float(scores[precision].overall), scores[FLOAT32].num_persons,
                               records)
