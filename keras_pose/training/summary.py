"""The closing summary of a training run, as ``tools/train.py`` prints it."""

from __future__ import annotations

from keras_pose import metrics


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_summary(summary: dict) -> str:
    """The closing summary as a person reads it at the end of ``tools/train.py``.

    A step that failed after training (``summary["failed"]``) shows as FAILED; its scores,
    evaluation file or SavedModel are left out.
    """
    failed = summary.get("failed", {})
    lines = [
        "",
        f"Run {summary['pipeline']!r} ({summary['model']}) finished in "
        f"{summary['wall_seconds']:.0f} s "
        f"(training and validation {summary['train_seconds']:.0f} s); "
        f"peak memory {summary['peak_rss_mib']:,} MiB"
        + (f" (training before its first validation: {summary['peak_rss_mib_training']:,} MiB)."
           if "peak_rss_mib_training" in summary else "."),
    ]
    if "metrics" in summary:
        lines += _format_scores(summary)
    if "cascade" in summary:
        lines += _format_cascade(summary["cascade"])
    lines += [
        f"  logs       : {summary['run_dir']}/logs   ({summary['tensorboard']})",
        f"  checkpoint : {summary['best_checkpoint']}",
    ]
    for key, label, failure in (("evaluation", "evaluation", "evaluation"),
                                ("export", "SavedModel", "export")):
        if key in summary:
            lines.append(f"  {label:<11s}: {summary[key]}")
        elif failure in failed:
            lines.append(f"  {failure:<11s}: FAILED (see the error below)")
    return "\n".join(lines)


def _format_cascade(stages: list[dict]) -> list[str]:
    """One line per stage of a stage-wise cascade: held-out scores of stages 1..s and the
    training-set error the next stage was trained on."""
    lines = ["  cascade (held-out, stages 1..s; training error of stage s):"]
    for report in stages:
        held_out = report["held_out"]
        scores = "   ".join(f"{metrics.parse_metric(name).label} {_fmt(value)}"
                            for name, value in held_out["metrics"].items())
        line = (f"    stage {report['stage']}: {scores}   mean error "
                f"{_fmt(held_out['mean_error_px'], 2)} px")
        if "train_errors" in report:
            errors = report["train_errors"]
            line += (f"   train error {errors['overall_mean_distance']:.4f} "
                     f"({errors['unit']} units)")
        lines.append(line)
    return lines


def _format_scores(summary: dict) -> list[str]:
    specs = [metrics.parse_metric(name) for name in summary["metrics"]]
    headline, others = specs[0], specs[1:]
    flip_key = f"val_{headline.name}_flip_test"
    coco = ""
    if summary.get("coco_ap") is not None:
        coco = f"   COCO AP: {summary['coco_ap']:.3f}"
        if summary.get("coco_ap_flip_test") is not None:
            coco += f" (flip test {summary['coco_ap_flip_test']:.3f})"
    elif summary.get("coco_skipped"):
        coco = "   COCO AP: skipped (no OKS sigmas)"
    flipped = (f" (flip test {_fmt(summary[flip_key])})" if flip_key in summary else "")
    lines = [
        f"  val {headline.label} : {_fmt(summary['val_' + headline.name])}{flipped}   "
        + "".join(f"{s.label}: {_fmt(summary['val_' + s.name])}   " for s in others)
        + f"({summary['val_persons']} held-out persons){coco}",
        f"  per keypoint ({headline.label}, without flip test):",
    ]
    items = list(summary[f"per_keypoint_{headline.name}"].items())
    for i in range(0, len(items), 3):
        lines.append("    " + "  ".join(
            f"{n:>15s} {_fmt(v, 2)}" for n, v in items[i:i + 3]))
    return lines
