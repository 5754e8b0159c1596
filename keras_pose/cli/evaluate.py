"""Score a pose model or a COCO results file: named metrics overall and per keypoint, COCO AP.

    python tools/evaluate.py --model runs/NAME --records 'data/coco/val-*.tfrecord' \
        --annotations person_keypoints_val2017.json [--flip-test]
    python tools/evaluate.py --model runs/NAME --records 'data/mpii/val-*.tfrecord' \
        --metrics pck_torso@0.2,pckh@0.5,poster_acc@0.5
    python tools/evaluate.py --predictions results.json --annotations person_keypoints_val2017.json

``--model`` takes a run directory, a ``.keras`` file or a SavedModel (a version directory or a
``saved_models/NAME`` base, whose newest version is used). A Keras model is scored without and
with the flip test (the average with the mirrored input's prediction; the papers report with
it): ``evaluation.json`` holds the plain scores at the top level and the flip-tested ones under
``flip_test``, and the output starts with both headlines side by side (``--no-flip-test`` skips
the second pass). A SavedModel can only be scored as it was exported (with or without the flip
test); the output says which. ``--metrics`` (default
pck_torso@0.2,pck_bbox@0.05): pck_torso@A, pck_bbox@A, pckh@A and poster_acc@T; the poster's
accuracy needs the model's heatmaps, so it takes a run directory or .keras file of a heatmap
model (not a SavedModel or a results file). COCO AP needs annotations and a keypoint set with
OKS sigmas; otherwise it is skipped and the report says why. Writes ``evaluation.json``,
``pck_per_keypoint.png`` (every metric per keypoint, without the flip test) and (with
``--model``) ``results.json`` (without) and ``results_flip_test.json`` (with the flip test) in
COCO results format to ``--output``.
"""

from __future__ import annotations

import argparse
import pathlib
import sys


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="run dir, .keras file or SavedModel directory")
    source.add_argument("--predictions", help="COCO keypoint results JSON to score")
    parser.add_argument("--records", help="TFRecord glob of the evaluation persons (--model)")
    parser.add_argument("--annotations", help="COCO keypoint annotations JSON (for AP, and "
                        "ground truth for --predictions)")
    parser.add_argument("--keypoint-set", help="coco17, mpii16 or lsp14 (default: from the "
                        "run's pipeline, else the annotations, else the keypoint count)")
    parser.add_argument("--metrics", default=None,
                        help="comma-separated metric names, headline first (default "
                        "pck_torso@0.2,pck_bbox@0.05); e.g. pck_torso@0.2,pckh@0.5,poster_acc@0.5")
    parser.add_argument("--flip-test", action="store_true",
                        help="kept for old command lines: Keras models are now scored with and "
                        "without the flip test by default")
    parser.add_argument("--no-flip-test", action="store_true",
                        help="score Keras models without the flip test only (one pass)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-batches", type=int, default=None,
                        help="evaluate only this many batches (a quick look)")
    parser.add_argument("--output", default="evaluation", help="output directory")
    args = parser.parse_args(argv)
    if args.model and not args.records:
        parser.error("--model needs --records")
    if args.predictions and not args.annotations:
        parser.error("--predictions needs --annotations (the ground truth)")
    if args.batch_size <= 0:
        parser.error(f"--batch-size must be > 0, received {args.batch_size}")
    return args


def metric_names(text: str | None) -> list[str]:
    """``--metrics`` as canonical names (the default pair when not given)."""
    from keras_pose import metrics

    if text is None:
        return list(metrics.DEFAULT_METRICS)
    names = [name.strip() for name in text.split(",") if name.strip()]
    return [spec.name for spec in metrics.parse_metrics(names)]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    from keras_pose import evaluate, metrics
    from keras_pose.io import read_json, write_json_atomic
    from keras_pose.keypoints import get_keypoint_set
    from keras_pose.visualize import draw_pck_chart, write_png

    output = pathlib.Path(args.output)
    try:
        names = metric_names(args.metrics)
        keypoint_set = get_keypoint_set(args.keypoint_set) if args.keypoint_set else None
        coco = evaluate.load_coco(args.annotations) if args.annotations else None
        if args.predictions:
            path = pathlib.Path(args.predictions)
            results = read_json(path, "results file")
            if not isinstance(results, list) or not results:
                raise ValueError(f"{path}: expected a non-empty JSON list of COCO results")
            keypoint_set = keypoint_set or evaluate.keypoint_set_for(coco)
            metrics.check_metrics(metrics.parse_metrics(names), keypoint_set,
                                  no_heatmaps=evaluate.RESULTS_NO_HEATMAPS)
            predictions, info = evaluate.match_results(results, coco, keypoint_set=keypoint_set)
            report = evaluate.score_predictions(predictions, coco, keypoint_set=keypoint_set,
                                                metric_names=names, results=results)
            report["matching"] = info
            report["predictions"] = str(path)
        else:
            common = dict(keypoint_set=keypoint_set, coco=coco, batch_size=args.batch_size,
                          max_batches=args.max_batches, progress=True, metric_names=names)
            if args.no_flip_test:
                plain, keypoint_set = evaluate.predict_model_records(
                    args.model, args.records, flip_test=False, **common)
                both = {"plain": plain, "flip_test": None,
                        "flip_test_note": "flip test not computed (--no-flip-test)"}
            else:
                both, keypoint_set = evaluate.predict_model_records(
                    args.model, args.records, flip_test="both", **common)
            predictions, flipped = both["plain"], both["flip_test"]
            report = evaluate.score_with_and_without_flip(
                predictions, flipped, coco, keypoint_set=keypoint_set, metric_names=names,
                note=both["flip_test_note"])
            write_json_atomic(output / "results.json", evaluate.to_coco_results(predictions))
            if flipped is not None:
                write_json_atomic(output / "results_flip_test.json",
                                  evaluate.to_coco_results(flipped))
            report.update(model=str(args.model), records=args.records)
    except (ValueError, FileNotFoundError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    report["keypoint_set"] = keypoint_set.name
    report["annotations"] = args.annotations
    print(evaluate.format_report(report))
    write_json_atomic(output / "evaluation.json", report)
    chart = draw_pck_chart(report["metrics"]["per_keypoint"],
                           title=f"per-keypoint accuracy "
                           f"({report['metrics']['num_persons']} persons)")
    write_png(output / "pck_per_keypoint.png", chart)
    print(f"wrote {output / 'evaluation.json'} and {output / 'pck_per_keypoint.png'}")
    return 0

