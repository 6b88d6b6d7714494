"""``make test-gpu``: run every chapter with the gpu profile and check its metrics.

Each chapter runs through papermill into ``--out`` (never over the committed
notebooks), with ``LLMFT_PROFILE=gpu`` and ``results/`` redirected there too.
Then the recorded metrics are checked against the thresholds in ``CHECKS``:
a larger model trained longer must do at least as well as the committed cpu
run (``results/*.json``) within a small margin, and the formula checks must
hold on any device. A summary goes to ``<out>/gpu_run.json``.

Where TensorFlow is not installed (e.g. a GPU machine with only JAX and
PyTorch) the chapters run on the Keras JAX backend; chapters that are about
TensorFlow itself (TensorBoard and its profiler, ``tf.distribute``) then fail
and are reported as such rather than hidden.

    python tools/gpu_run.py [--profile gpu] [--out _build/gpu-run] [chapters ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (results file, dotted metric path, rule, value). Rules:
#   ">= cpu - m": at least the committed cpu value minus margin m
#   "<= cpu + m": at most the committed cpu value plus margin m
#   ">= v" / "<= v": an absolute bound
CHECKS = [
    ("ch02", "pretrained_val_loss", "<= cpu + m", 0.05),
    ("ch03", "gpt.val_loss", "<= cpu + m", 0.05),
    ("ch04", "softmax_max_abs_diff", "<= v", 1e-4),
    ("ch04", "mha_max_abs_diff", "<= v", 1e-4),
    ("ch04", "lstm_max_abs_diff", "<= v", 1e-4),
    ("ch05", "test_accuracy.full_finetune", ">= cpu - m", 0.01),
    ("ch05", "test_accuracy.lora", ">= cpu - m", 0.01),
    ("ch06_ner", "entity_f1.micro", ">= cpu - m", 0.02),
    ("ch06_sft", "mean_exact_match.pretrained_sft", ">= cpu - m", 0.02),
    ("ch06_generation", "kv_cache_speedup", ">= v", 5.0),
    ("ch09", "test_metrics.F1", ">= cpu - m", 0.02),
]


def lookup(metrics: dict, dotted: str):
    value = metrics
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            raise KeyError(dotted)
        value = value[key]
    return value


def load_metrics(folder: Path, name: str) -> dict | None:
    path = folder / f"{name}.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))["metrics"]


def evaluate(checks, run_dir: Path, cpu_dir: Path) -> list[dict]:
    """One row per check: the gpu value, the bound, and whether it holds (None: not recorded)."""
    rows = []
    for name, path, rule, amount in checks:
        row = {"results": name, "metric": path, "rule": rule.replace("m", str(amount)).replace("v", str(amount))}
        run = load_metrics(run_dir, name)
        try:
            value = None if run is None else float(lookup(run, path))
        except KeyError:
            value = None
        if rule.startswith(">= cpu") or rule.startswith("<= cpu"):
            cpu = float(lookup(load_metrics(cpu_dir, name), path))
            bound = cpu - amount if rule.startswith(">=") else cpu + amount
            row["cpu"] = cpu
        elif rule in (">= v", "<= v"):
            bound = amount
        else:
            raise ValueError(f"rule must be one of '>= cpu - m', '<= cpu + m', '>= v', '<= v'; got {rule!r}")
        row["bound"], row["value"] = bound, value
        row["ok"] = None if value is None else (value >= bound if rule.startswith(">=") else value <= bound)
        rows.append(row)
    return rows


def pick_backend() -> str:
    """TensorFlow when installed (or KERAS_BACKEND when set), else JAX."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    return "tensorflow" if importlib.util.find_spec("tensorflow") else "jax"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="gpu")
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "gpu-run")
    parser.add_argument("chapters", nargs="*", type=Path)
    args = parser.parse_args(argv)
    # not llmft.paths.chapter_notebooks: importing llmft would fix the Keras backend before pick_backend()
    chapters = args.chapters or sorted(p for p in (ROOT / "chapters").glob("*.ipynb") if not p.name.startswith("."))
    results_dir = args.out / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    os.environ.update(LLMFT_PROFILE=args.profile, LLMFT_RESULTS_DIR=str(results_dir), KERAS_BACKEND=pick_backend())
    import papermill

    runs = []
    for chapter in chapters:
        start = time.perf_counter()
        try:
            papermill.execute_notebook(str(chapter), str(args.out / chapter.name), kernel_name="python3",
                                       cwd=str(chapter.parent), progress_bar=False)
            error = None
        except Exception as err:  # a failed chapter is reported, the others still run
            error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]
        seconds = round(time.perf_counter() - start, 1)
        runs.append({"chapter": chapter.name, "seconds": seconds, "error": error})
        print(f"{chapter.name:32s} {seconds:8.1f} s  {'ok' if error is None else error}", flush=True)
    checks = evaluate(CHECKS, results_dir, ROOT / "results")
    if args.chapters:  # a chosen subset: only the checks whose chapters recorded something
        checks = [row for row in checks if (results_dir / f"{row['results']}.json").is_file()]
    for row in checks:
        state = {True: "ok", False: "FAILED", None: "not recorded"}[row["ok"]]
        print(f"{row['results']:16s} {row['metric']:34s} {row['value']!s:>22s} {row['rule']:>14s}  {state}")
    summary = {"profile": args.profile, "backend": os.environ["KERAS_BACKEND"], "runs": runs, "checks": checks}
    from llmft import paths

    paths.atomic_write_json(args.out / "gpu_run.json", summary)
    failed = [r for r in runs if r["error"]] + [c for c in checks if c["ok"] is not True]
    print(f"{len(runs)} chapters, {len(checks)} checks, {len(failed)} problems -> {args.out / 'gpu_run.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
