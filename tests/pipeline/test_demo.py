"""`vtcaps demo`'s own parts: its synthetic set made again only for other settings, and a results
table of what it measured against the config's own threshold."""

import dataclasses

from vtcaps_pipeline.orchestration import demo
from vtcaps_pipeline.synth import render


def test_a_set_is_reused_for_the_same_settings_and_made_again_for_others(tmp_path):
    said = []
    config = render.SynthConfig(output=str(tmp_path / "synth"), per_class=1, subjects=1, frames=20,
                                size=48)
    first = demo.make_or_reuse_set(render, config, False, said.append)
    assert len(first["videos"]) == 7  # one video of each of the seven classes
    left_over = tmp_path / "synth" / "left_over.txt"
    left_over.write_text("written after the set")
    assert demo.make_or_reuse_set(render, config, False, said.append) == first
    assert left_over.exists() and said[-1] == f"synth: reusing {config.output} (made with the same settings)"
    # --per-class 2 asks for another set: the old one goes, the new one has two videos a class.
    second = demo.make_or_reuse_set(render, dataclasses.replace(config, per_class=2), False, said.append)
    assert len(second["videos"]) == 14 and not left_over.exists()
    assert "was made with other settings" in said[-1]
    # --force makes it again even with the same settings.
    left_over.write_text("written after the set")
    demo.make_or_reuse_set(render, dataclasses.replace(config, per_class=2), True, said.append)
    assert not left_over.exists()


def test_results_table_shows_what_was_measured_and_the_configs_threshold():
    report = {"accuracy": 0.75, "num_samples": 8, "uar": 0.7, "macro_f1": 0.65, "classes": ["a", "b"],
              "per_class": {"a": {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 4},
                            "b": {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 4}}}
    blessing = {"level": "clip", "accuracy": 0.75, "threshold": 0.5, "blessed": True}
    text = demo.results_table(demo.DemoResult(report, blessing, {"synth": 1.0, "train": 2.5},
                                              {"machine": "matmul 100.0 GFLOP/s"}, ok=True))
    assert "test split accuracy (held-out subjects): 75.00%  (8 clips)" in text
    assert "blessing: clip accuracy 75.00% against the config's threshold 50.00%: blessed" in text
    assert "a                   100.00     50.00     66.67       4" in text
    assert "machine: matmul 100.0 GFLOP/s" in text
    assert [line.split() for line in text.splitlines() if line.startswith("total")] == [["total", "3.5"]]
    assert "goal" not in text
