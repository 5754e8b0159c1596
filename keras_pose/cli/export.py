"""Export a trained pose model as a TF Serving SavedModel version and update models.config.

    python tools/export.py --model runs/NAME --name NAME [--version N] [--base saved_models]
    python tools/export.py --model runs/NAME/model.keras --name NAME \
        --serving-root "$PWD/saved_models"

Writes ``<base>/<name>/<version>/`` atomically (next free version by default) with the
signatures ``serving_default`` (uint8 images), ``serving_boxes`` (+ person boxes),
``serving_bytes`` and ``serving_bytes_boxes`` (encoded JPEG/PNG strings), and rewrites
``<base>/models.config`` for ``tensorflow_model_server --model_config_file``.

    python tools/export.py --model runs/NAME --name NAME --format tflite \
        [--quantize float16|dynamic]
    python tools/export.py --model runs/NAME --name NAME --format tflite --quantize int8 \
        --records 'data/coco/train-*.tfrecord'
    python tools/export.py --model runs/NAME --name NAME --format onnx [--output DIR]

``--format tflite|onnx`` writes the network (batch norms folded) as ``model.tflite`` or
``model.onnx`` with ``keras_pose.json`` into ``<base>/<name>/<format>/`` (``tflite``,
``tflite_float16``, ``tflite_dynamic``, ``tflite_int8``, ``onnx``; TF Serving ignores these
folders) or ``--output``.
``tools/predict.py`` and ``tools/evaluate.py`` take the file (or its folder) as ``--model``: they
crop, decode and map keypoints with the SavedModel's code around the LiteRT interpreter or ONNX
Runtime (``pip install 'keras-pose[export]'``). ``--quantize dynamic`` stores int8 weights and
quantizes each int8 op's input at run time (float32's accuracy, about 2x faster than float32 in
LiteRT on a CPU);
``--quantize int8`` is full integer, for integer-only accelerators, calibrated on up to 200
crops of ``--records``; it can lose accuracy, so score the file with ``tools/evaluate.py``.

``--precision bfloat16`` computes the network in bfloat16 (inputs, decoding and outputs stay
float32; the signatures are the same). It is refused on a machine without bfloat16 hardware
(AVX512-BF16 or AMX on the CPU, or an NVIDIA GPU from Ampere on), where it would be emulated:
less precise and no faster. Before writing, the export scores the float32 and the bfloat16
graphs on held-out records (the run's ``[data] val_records``, or ``--records``), prints both
PCK@0.2 and the change, and refuses (exit 1, nothing written) when bfloat16 loses more than
``--max-pck-drop`` points.
"""

from __future__ import annotations

import argparse
import pathlib
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="run directory or .keras file")
    parser.add_argument("--name", required=True, help="model name in TF Serving")
    parser.add_argument("--version", type=int, default=None,
                        help="version number (default: one more than the newest)")
    parser.add_argument("--base", default="saved_models", help="export base directory")
    parser.add_argument("--margin", type=float, default=None,
                        help="crop margin (default: the run's [data] margin, else 1.25)")
    parser.add_argument("--keypoint-set", default=None,
                        help="coco17 or mpii16 (default: the run's, else by keypoint count)")
    parser.add_argument("--flip-test", action="store_true",
                        help="put the flip test into the serving graph (2x compute)")
    parser.add_argument("--serving-root", default=None,
                        help="absolute path where the server sees --base, for models.config "
                        "(default: the root already in the file, else /models for Docker)")
    parser.add_argument("--no-config", action="store_true", help="leave models.config alone")
    parser.add_argument("--format", default="saved_model",
                        choices=["saved_model", "tflite", "onnx"],
                        help="saved_model (TF Serving), tflite or onnx (default saved_model)")
    parser.add_argument("--quantize", choices=["float16", "dynamic", "int8"], default=None,
                        help="tflite post-training quantization: float16 weights; dynamic "
                        "(int8 weights, activations quantized per call: float32's accuracy); "
                        "int8 (full integer, calibrated on --records; can lose accuracy)")
    parser.add_argument("--output", default=None,
                        help="tflite/onnx: folder to write (default <base>/<name>/<format>)")
    parser.add_argument("--precision", default="float32", choices=("float32", "bfloat16"),
                        help="saved_model: the network's arithmetic (bfloat16: only on "
                        "bfloat16 hardware)")
    parser.add_argument("--records", default=None,
                        help="TFRecord glob: the crops --quantize int8 calibrates with, or the "
                        "held-out records the bfloat16 PCK change is measured on (default: "
                        "the run's [data] val_records)")
    parser.add_argument("--check-records", type=int, default=256,
                        help="records scored for the bfloat16 PCK change (default 256)")
    parser.add_argument("--max-pck-drop", type=float, default=0.5,
                        help="refuse bfloat16 when PCK@0.2 drops by more points (default 0.5)")
    args = parser.parse_args(argv)
    if args.format == "saved_model" and (args.quantize or args.output):
        parser.error("--quantize and --output apply to --format tflite/onnx")
    if args.format != "saved_model" and args.precision != "float32":
        parser.error("--precision applies to --format saved_model (tflite: --quantize)")
    if args.quantize and args.format != "tflite":
        parser.error("--quantize applies to --format tflite")
    if args.quantize == "int8" and not args.records:
        parser.error("--quantize int8 needs --records (TFRecords to calibrate with)")
    if args.check_records < 1:
        parser.error(f"--check-records must be >= 1, received {args.check_records}")

    from keras_pose import export
    from keras_pose.keypoints import get_keypoint_set
    from keras_pose.precision import FLOAT32, check_precision

    try:
        check_precision(args.precision)  # before loading anything
        loaded = export.load_pose_model(args.model)
        keypoint_set = (get_keypoint_set(args.keypoint_set) if args.keypoint_set
                        else loaded.keypoint_set)
        margin = args.margin if args.margin is not None else loaded.margin
        if args.format != "saved_model":
            return _export_file(args, loaded, keypoint_set, margin)
        if args.precision != FLOAT32:
            comparison = _compare_precision(args, loaded, keypoint_set, margin)
            print(f"precision check: {comparison.summary()}")
            if comparison.drop_points > args.max_pck_drop:
                print(f"error: {args.precision} loses {comparison.drop_points:.2f} points of "
                      f"{comparison.metric}, more than --max-pck-drop {args.max_pck_drop:g}; "
                      "nothing was exported (export float32)", file=sys.stderr)
                return 1
        path = export.export_saved_model(
            loaded.model, name=args.name, base=args.base, version=args.version, margin=margin,
            keypoint_set=keypoint_set, flip_test=args.flip_test,
            update_config=not args.no_config, serving_root=args.serving_root,
            source=str(loaded.path), precision=args.precision,
        )
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"exported {loaded.path} -> {path}")
    print(f"  keypoints: {keypoint_set.name if keypoint_set else loaded.model.num_keypoints}, "
          f"input {loaded.model.input_size}, margin {margin}, flip test {args.flip_test}, "
          f"precision {args.precision}")
    print(f"  signatures: {', '.join(export.SIGNATURES)}")
    if not args.no_config:
        print(f"  models.config: {pathlib.Path(args.base) / export.MODELS_CONFIG}")
    print(f"  inspect: saved_model_cli show --dir {path} --all")
    return 0


def _export_file(args: argparse.Namespace, loaded, keypoint_set, margin: float) -> int:
    """``--format tflite|onnx``: write the file and its metadata, then say how to use it."""
    from keras_pose import export

    directory = args.output or export.export_directory(args.base, args.name, args.format,
                                                       args.quantize)
    path = export.export_file(
        loaded.model, directory, file_format=args.format, quantize=args.quantize,
        records=args.records, margin=margin, keypoint_set=keypoint_set,
        flip_test=args.flip_test, source=str(loaded.path))
    print(f"exported {loaded.path} -> {path} ({path.stat().st_size / 1e6:.2f} MB)")
    print(f"  format {args.format}, quantize {args.quantize or 'none'}, input "
          f"{loaded.model.input_size}, margin {margin}, flip test {args.flip_test}")
    print(f"  predict: python tools/predict.py --model {path} --input IMAGE --output OUT")
    if args.quantize == "int8":
        # Full-integer int8 measured PCK losses of 2-12 points on hourglasses: say how to check.
        print(f"  accuracy: python tools/evaluate.py --model {path} --records HELD_OUT_GLOB "
              "(full-integer int8 can lose PCK; --quantize dynamic keeps float32's)")
    return 0


def _compare_precision(args: argparse.Namespace, loaded, keypoint_set, margin: float):
    """PCK of the float32 and ``args.precision`` graphs on the held-out records."""
    from keras_pose.evaluate.precision import compare_precision

    records = args.records or (loaded.pipeline.data.val_records if loaded.pipeline else "")
    if not records:
        raise ValueError(f"--precision {args.precision} measures the PCK change on held-out "
                         f"records: {args.model} has no run pipeline naming val_records, "
                         "pass --records")
    if keypoint_set is None:
        raise ValueError("the PCK check needs the keypoint set: pass --keypoint-set")
    return compare_precision(loaded.model, records, keypoint_set=keypoint_set, margin=margin,
                             precision=args.precision, flip_test=args.flip_test,
                             max_records=args.check_records)
