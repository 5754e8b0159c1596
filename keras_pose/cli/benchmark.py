"""Benchmarks: ``python tools/benchmark.py {pipeline,augment,train,infer,memory,all} [options]``.

Each subcommand measures keras-pose and a baseline in the same run and prints medians and the
ratio; see ``keras_pose/benchmarks/``.
"""

from __future__ import annotations

import argparse
import importlib

SUBCOMMANDS = ("pipeline", "augment", "train", "infer", "memory")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"keras_pose.benchmarks.{name}")
        modules[name] = module
        module.add_arguments(sub.add_parser(name, help=module.__doc__.splitlines()[0]))
    all_parser = sub.add_parser("all", help="every benchmark with its default options")
    for module in modules.values():
        if hasattr(module, "add_all_arguments"):
            module.add_all_arguments(all_parser)
    args = parser.parse_args(argv)
    if args.command == "all":
        status = 0
        for name, module in modules.items():
            sub_args = sub.choices[name].parse_args(module.all_argv(args))
            status |= module.run(sub_args) or 0
        return status
    return modules[args.command].run(args) or 0

