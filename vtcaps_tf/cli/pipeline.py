"""`vtcaps pipeline run --config FILE`: the TFX-style chain ExampleGen -> Statistics -> Validate
-> Train -> Evaluate -> Push, with step caching (`vtcaps_pipeline.orchestration.runner`)."""

from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vtcaps pipeline",
                                description="TFX-style chain ExampleGen -> Statistics -> Validate -> "
                                            "Train -> Evaluate -> Push, with step caching.")
    sub = p.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="run the chain from a config file (JSON or YAML)")
    run.add_argument("--config", required=True, help="pipeline config file")
    run.add_argument("--force", action="store_true", help="run every step, ignoring the cache")
    run.add_argument("--pipeline-root", help="override the config's pipeline_root")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from vtcaps_pipeline.orchestration import runner

    config = runner.load_config(args.config)
    steps = runner.default_steps(config)
    root = args.pipeline_root or config["pipeline_root"]
    results = runner.Pipeline(root, steps, config).run(force=args.force)
    print(runner.summary_table(results))
    line = runner.evaluation_line(results)
    if line:
        print(line)
    return 0
