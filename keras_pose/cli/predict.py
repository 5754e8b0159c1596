"""Draw predicted skeletons on images and videos and write the keypoints as JSON.

    python tools/predict.py --model PATH --input IMAGE_OR_VIDEO_OR_DIR --output OUT \
        [--box x,y,w,h] [--threshold 0.2] [--flip-test] \
        [--annotations GT.json [--grid GRID.png] [--limit N]]

``--model`` is a SavedModel (a version directory or a ``saved_models/NAME`` base: the newest
version), a ``.keras`` file or a run directory. Images give ``OUT/<name>.png``, videos
``OUT/<name>.mp4`` (mp4v); ``OUT/keypoints.json`` holds every prediction in image pixels.
``--box`` is the person box used for every image and frame (default: the whole image).

``--annotations`` names a COCO-format ground-truth file (the converters write one per split,
``SPLIT.annotations.json``; keypoints in COCO's pixel indices, read ``+0.5`` into continuous
coordinates; ``keypoints.json`` gives them continuous, as the predictions): each image it
annotates is predicted once per annotated person, in
that person's box, and ``OUT/<name>.png`` shows ground truth (left) beside the prediction
(right). ``--grid`` tiles those pairs into one picture; ``--limit`` keeps the first N images.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import cv2
import numpy as np

from keras_pose.cli.arguments import parse_box
from keras_pose.keypoints import keypoints_from_coco

PANEL_HEIGHT = 256  # pixels of one ground-truth / prediction panel in a --grid


def read_ground_truth(path: pathlib.Path) -> dict[str, list[dict]]:
    """file name -> its persons (``bbox``, ``keypoints`` [K, 3]) from a COCO-format file.

    The file's keypoints are pixel indices (COCO's convention, that of every COCO-format file of
    keras-pose); they come back continuous (``+0.5``), as predictions and drawing take them.
    """
    try:
        data = json.loads(path.read_text())
        names = {image["id"]: image["file_name"] for image in data["images"]}
        persons: dict[str, list[dict]] = {}
        for ann in data["annotations"]:
            if ann.get("iscrowd", 0):
                continue
            persons.setdefault(names[ann["image_id"]], []).append({
                "bbox": [float(v) for v in ann["bbox"]],
                "keypoints": keypoints_from_coco(
                    np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)),
            })
    except FileNotFoundError:
        raise FileNotFoundError(f"annotation file not found: {path}") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: not a COCO-format keypoint file ({error!r})") from None
    return persons


def _panel(image: np.ndarray, box, height: int) -> np.ndarray:
    """The square crop of ``image`` around ``box`` (1.25 x its longer side), ``height`` px."""
    from keras_pose.data.coco import crop_box_for_bbox, crop_matrix

    # The converter's crop geometry (pixel centres at +0.5), as the records cut it.
    matrix = crop_matrix(crop_box_for_bbox(np.asarray(box, np.float64), 1.25), height)
    return cv2.warpAffine(image, matrix, (height, height), flags=cv2.INTER_LINEAR)


def collect_inputs(path: pathlib.Path, image_suffixes, video_suffixes):
    """(images, videos) named by ``path``: a file, or the files of a directory."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"input not found: {path}")
    images = [p for p in files if p.suffix.lower() in image_suffixes]
    videos = [p for p in files if p.suffix.lower() in video_suffixes]
    if not images and not videos:
        raise ValueError(f"{path}: no images ({', '.join(image_suffixes)}) or videos "
                         f"({', '.join(video_suffixes)})")
    return images, videos


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True,
                        help="SavedModel directory, .keras file or run directory")
    parser.add_argument("--input", required=True, help="image, video, or a directory of them")
    parser.add_argument("--output", required=True, help="output directory")
    parser.add_argument("--box", type=parse_box, default=None,
                        help="person box x,y,w,h in pixels (default: the whole image)")
    parser.add_argument("--threshold", type=float, default=0.0,
                        help="draw keypoints whose score is above this")
    parser.add_argument("--flip-test", action="store_true",
                        help="average with the mirrored image (Keras models only)")
    parser.add_argument("--keypoint-set", default=None,
                        help="for drawing when the model does not say (coco17, mpii16)")
    parser.add_argument("--batch-size", type=int, default=8, help="video frames per call")
    parser.add_argument("--annotations", type=pathlib.Path, default=None,
                        help="COCO-format ground truth: predict in each annotated person's box "
                             "and draw ground truth beside the prediction")
    parser.add_argument("--grid", type=pathlib.Path, default=None,
                        help="with --annotations: one PNG tiling every ground-truth/prediction "
                             "pair")
    parser.add_argument("--grid-columns", type=int, default=4, help="pairs per grid row")
    parser.add_argument("--limit", type=int, default=0,
                        help="only the first N images (sorted by name); 0 = all")
    args = parser.parse_args(argv)
    if args.grid and not args.annotations:
        parser.error("--grid needs --annotations (it shows ground truth beside predictions)")

    from keras_pose import export, serving
    from keras_pose.io import write_json_atomic as write_json
    from keras_pose.keypoints import get_keypoint_set
    from keras_pose.visualize import draw_skeleton, image_grid, label, write_png

    output = pathlib.Path(args.output)
    try:
        images, videos = collect_inputs(pathlib.Path(args.input), serving.IMAGE_SUFFIXES,
                                        serving.VIDEO_SUFFIXES)
        truth = read_ground_truth(args.annotations) if args.annotations else None
        if truth is not None:
            images, videos = [p for p in images if p.name in truth], []
            if not images:
                raise ValueError(f"no image of {args.input} is annotated in {args.annotations}")
        if args.limit:
            images = images[:args.limit]
        tiles = []
        predictor = export.load_predictor(args.model, flip_test=args.flip_test)
        keypoint_set = (get_keypoint_set(args.keypoint_set) if args.keypoint_set
                        else predictor.keypoint_set)
        if keypoint_set is None:
            raise ValueError("the model does not name its keypoint set; pass --keypoint-set")
        report = {"model": str(args.model), "keypoint_set": keypoint_set.name,
                  "keypoint_names": list(keypoint_set.names), "box": args.box,
                  "images": [], "videos": []}
        for path in images if truth is not None else ():
            image = serving.read_image(path)
            pairs, entries = [], []
            for person in truth[path.name]:
                result = predictor.predict(image, person["bbox"])
                points, scores = result["keypoints"][0], result["scores"][0]
                gt = person["keypoints"]
                ground = draw_skeleton(image, gt[:, :2], gt[:, 2], keypoint_set)
                predicted = serving.draw_prediction(image, points, scores, keypoint_set,
                                                    threshold=args.threshold)
                pair = np.concatenate(
                    [label(_panel(ground, person["bbox"], PANEL_HEIGHT), "ground truth"),
                     label(_panel(predicted, person["bbox"], PANEL_HEIGHT), "predicted")],
                    axis=1)
                pairs.append(pair)
                entries.append({"box": person["bbox"], "keypoints": points.tolist(),
                                "scores": scores.tolist(),
                                "ground_truth": gt.tolist()})
            target = output / f"{path.stem}.png"
            write_png(str(target), np.concatenate(pairs, axis=0))
            tiles.extend(pairs)
            report["images"].append({"image": str(path), "output": str(target),
                                     "persons": entries})
            print(f"{path} -> {target}")
        if args.grid:
            write_png(str(args.grid), image_grid(tiles, args.grid_columns))
            print(f"grid: {args.grid} ({len(tiles)} persons)")
        for path in images if truth is None else ():
            image = serving.read_image(path)
            result = predictor.predict(image, args.box)
            points, scores = result["keypoints"][0], result["scores"][0]
            overlay = serving.draw_prediction(image, points, scores, keypoint_set,
                                              threshold=args.threshold, box=args.box)
            target = output / f"{path.stem}.png"
            write_png(str(target), overlay)
            report["images"].append({"image": str(path), "output": str(target),
                                     "keypoints": points.tolist(), "scores": scores.tolist()})
            print(f"{path} -> {target}")
        for path in videos:
            result = serving.annotate_video(
                predictor.predict, path, output / f"{path.stem}.mp4", keypoint_set=keypoint_set,
                box=args.box, threshold=args.threshold, batch_size=args.batch_size)
            report["videos"].append(result)
            print(f"{path} -> {result['output']} ({len(result['frames'])} frames)")
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    write_json(output / "keypoints.json", report)
    print(f"keypoints: {output / 'keypoints.json'}")
    return 0

