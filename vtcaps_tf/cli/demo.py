"""`vtcaps demo` (`make demo`): the whole system on a generated synthetic set
(`vtcaps_pipeline.orchestration.demo.run_demo`). Exits 0 when the model was blessed, served and
predicted over REST, 1 otherwise (after the results table)."""

from __future__ import annotations

import argparse

from vtcaps_tf.errors import EXIT_FAILURE, EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    from vtcaps_pipeline.orchestration import demo  # the standard library only, until it runs

    d = demo.DemoOptions()
    p = argparse.ArgumentParser(prog="vtcaps demo", description=(
        "The whole system on a synthetic expression set: synth -> the pipeline (ExampleGen ... "
        "Push) -> vtcaps serve -> vtcaps predict over REST on held-out videos -> a results table."))
    p.add_argument("--output", default=d.output, help="working directory (default %(default)s)")
    p.add_argument("--config", default=d.config,
                   help="pipeline config with a synth section (default pipeline/orchestration/configs/demo.json)")
    p.add_argument("--base-path", default=d.base_path, help="export base path (default %(default)s)")
    p.add_argument("--per-class", type=int, default=d.per_class,
                   help="videos per class (default: the config's synth section)")
    p.add_argument("--subjects", type=int, default=d.subjects, help="synthetic subjects (default: the config's)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="training epochs (default: the config's)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the synthetic sets (default %(default)s)")
    p.add_argument("--force", action="store_true",
                   help="rerun every pipeline step (no cache) and make the synthetic sets again")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from vtcaps_pipeline.orchestration.demo import DemoOptions, results_table, run_demo

    result = run_demo(DemoOptions(
        output=args.output, config=args.config, base_path=args.base_path, per_class=args.per_class,
        subjects=args.subjects, epochs=args.epochs, seed=args.seed, force=args.force))
    print(results_table(result))
    return EXIT_OK if result.ok else EXIT_FAILURE
