"""Ask a TF Serving model server for keypoints, print them, draw them.

    python tools/serve_client.py --model hourglass --image person.jpg [--box x,y,w,h] \
        [--protocol rest|grpc] [--host localhost] [--port 8501] [--version N] [--output OUT]

REST (default port 8501) posts the image bytes base64-encoded to the ``serving_bytes`` signature
(``serving_bytes_boxes`` with ``--box``); gRPC (default port 8500) calls
``PredictionService/Predict``. With ``--output``, writes one skeleton overlay PNG per image and
``keypoints.json`` there.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from keras_pose.cli.arguments import parse_box


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="model name on the server")
    parser.add_argument("--image", required=True, action="append",
                        help="image file (repeat for several)")
    parser.add_argument("--box", type=parse_box, action="append",
                        help="person box x,y,w,h in pixels (one per --image; default: whole "
                        "image)")
    parser.add_argument("--protocol", choices=("rest", "grpc"), default="rest")
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=None, help="default 8501 REST, 8500 gRPC")
    parser.add_argument("--version", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--keypoint-set", default="coco17",
                        help="names and skeleton for printing and drawing (coco17, mpii16)")
    parser.add_argument("--threshold", type=float, default=0.0,
                        help="draw keypoints whose score is above this")
    parser.add_argument("--output", help="directory for overlays and keypoints.json")
    args = parser.parse_args(argv)
    if args.box and len(args.box) != len(args.image):
        parser.error(f"give one --box per --image ({len(args.box)} boxes, "
                     f"{len(args.image)} images)")

    from keras_pose import serving
    from keras_pose.io import write_json_atomic as write_json
    from keras_pose.keypoints import get_keypoint_set
    from keras_pose.visualize import write_png

    try:
        keypoint_set = get_keypoint_set(args.keypoint_set)
        paths = [pathlib.Path(p) for p in args.image]
        images = [serving.read_image(p) for p in paths]
        encoded = [p.read_bytes() for p in paths]
        if args.protocol == "rest":
            client = serving.RestClient(args.host, args.port or 8501, model=args.model,
                                        version=args.version, timeout=args.timeout)
            result = client.predict(encoded, args.box)
        else:
            with serving.GrpcClient(args.host, args.port or 8500, model=args.model,
                                    version=args.version, timeout=args.timeout) as client:
                result = client.predict(encoded, args.box)
        if result["keypoints"].shape[1] != keypoint_set.num_keypoints:
            raise ValueError(
                f"the model returned {result['keypoints'].shape[1]} keypoints but keypoint set "
                f"{keypoint_set.name!r} has {keypoint_set.num_keypoints}; pass --keypoint-set")
    except (ValueError, OSError, serving.ServingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    records = []
    for i, path in enumerate(paths):
        points, scores = result["keypoints"][i], result["scores"][i]
        print(f"{path}:")
        for name, (x, y), score in zip(keypoint_set.names, points, scores, strict=True):
            print(f"  {name:>16} {x:8.1f} {y:8.1f}  score {score:.3f}")
        records.append({"image": str(path), "box": args.box[i] if args.box else None,
                        "keypoints": points.tolist(), "scores": scores.tolist(),
                        "keypoint_names": list(keypoint_set.names)})
        if args.output:
            overlay = serving.draw_prediction(images[i], points, scores, keypoint_set,
                                              threshold=args.threshold,
                                              box=args.box[i] if args.box else None)
            write_png(str(pathlib.Path(args.output) / f"{path.stem}.png"), overlay)
    if args.output:
        write_json(pathlib.Path(args.output) / "keypoints.json", records)
        print(f"wrote overlays and keypoints.json to {args.output}")
    return 0

