"""``make bench``: speed and memory of llmft on this machine -> results/bench.json.

Everything is measured back to back in one run, so that the ratios (training
vs the matmul peak, bfloat16 vs float32, llmft vs KerasHub, with vs without
the KV cache) compare numbers taken under the same conditions. The machine
load (``os.getloadavg()``) is recorded at the start and the end: on a shared
machine absolute numbers move with it. The appendix page ``book/bench.ipynb``
only reads the JSON.

Usage::

    python tools/bench.py                       # the full run (about 10 min on 2 cores)
    python tools/bench.py --quick --out /tmp/b.json   # tiny sizes, to try the script
    python tools/bench.py --smoke-run                 # time every chapter in the smoke profile first
    python tools/bench.py --make-test-seconds 1001 --make-test-source "CI log of ..."
    python tools/bench.py --suite-only                # after re-running chapters: their times only

The smoke wall times come from ``--smoke-run`` (papermill in temporary folders,
about 10 min), kept in ``LLMFT_HOME/bench/smoke_times.json`` for the next full
run; the time of ``make test`` from ``--make-test-seconds`` or, by default, the
figure measured in README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llmft import env  # noqa: E402  (first: imports TensorFlow quietly)
from llmft import base_models, bench, data, estimates, gpt, paths, profiles, train  # noqa: E402

import numpy as np  # noqa: E402

# Where --smoke-run writes the chapters' smoke wall times and the full run reads them.
SMOKE_TIMES = paths.llmft_home() / "bench" / "smoke_times.json"

SIZES = {
    # config: the ~5M-parameter GPT at context 128 that the targets are about.
    "full": dict(layers=5, hidden=256, heads=4, batch=16, steps=10, warmup=3, rounds=3, small_steps=6,
                 gen_tokens=256, gen_context=512, gen_repeats=2, rss_steps=3, rss_batch=8, peak_size=1024,
                 corpus_chars=400_000),
    "quick": dict(layers=2, hidden=64, heads=2, batch=4, steps=3, warmup=2, rounds=2, small_steps=3,
                  gen_tokens=24, gen_context=64, gen_repeats=1, rss_steps=2, rss_batch=2, peak_size=256,
                  corpus_chars=40_000),
}

# The measured variants of the ~5M config (keys of bench.variant_key) and the
# ratios between them, each named in results/bench.json's train section:
# ratio name -> (faster, slower), two variants that differ in one setting.
BASE = ("gpt5m", "llmft", "float32", False, False)
JIT = ("gpt5m", "llmft", "float32", True, False)
BF16 = ("gpt5m", "llmft", "mixed_bfloat16", False, False)
BF16_JIT = ("gpt5m", "llmft", "mixed_bfloat16", True, False)
HUB = ("gpt5m", "keras_hub", "float32", False, False)
DETERMINED = ("gpt5m", "llmft", "float32", False, True)
RATIO_PAIRS = {
    "jit_speedup": (JIT, BASE),
    "bf16_speedup": (BF16, BASE),
    # mixed_bfloat16 with XLA against float32 with XLA, and against bf16 without XLA
    "bf16_speedup_jit": (BF16_JIT, JIT),
    "jit_speedup_bf16": (BF16_JIT, BF16),
    "speedup_vs_keras_hub": (BASE, HUB),
}


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def make_test_seconds(args):
    """(seconds, source) of ``make test``: the argument, else the README's measured figure."""
    if args.make_test_seconds is not None:
        return float(args.make_test_seconds), args.make_test_source or "command-line argument --make-test-seconds"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"(\d+) min (\d+) s in all", readme)
    if not m:
        return None, "not measured (no --make-test-seconds and no 'N min M s in all' in README.md)"
    return 60.0 * int(m.group(1)) + int(m.group(2)), f"README.md: '{m.group(0)}' (fresh clone, .ci/run = make test)"


def smoke_run(out):
    """Run every chapter with the smoke profile (papermill, temp folders); write {stem: seconds}."""
    import papermill

    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update(LLMFT_PROFILE="smoke", LLMFT_RESULTS_DIR=str(Path(tmp) / "results"),
                          LLMFT_HOME=str(Path(tmp) / "home"))
        os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
        for notebook in paths.chapter_notebooks(ROOT):
            start = time.perf_counter()
            papermill.execute_notebook(str(notebook), str(Path(tmp) / notebook.name), kernel_name="python3",
                                       cwd=str(notebook.parent), progress_bar=False)
            times[notebook.stem] = time.perf_counter() - start
            log(f"smoke {notebook.stem}: {times[notebook.stem]:.1f} s")
            # after every chapter, so that an interrupted run keeps what it measured
            paths.atomic_write_json(out, {
                "profile": "smoke", "seconds": times, "loadavg_end": list(os.getloadavg()),
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})


def suite_section(args) -> dict:
    """Wall times of the committed cpu chapters, of the smoke chapters and of ``make test`` (nothing is run)."""
    cpu = bench.notebook_seconds(paths.chapter_notebooks(ROOT))
    seconds, source = make_test_seconds(args)
    suite = {"cpu_chapter_seconds": cpu, "cpu_chapters_seconds_total": sum(cpu.values()),
             "cpu_source": "papermill metadata (metadata.papermill.duration) of the committed chapters",
             "make_test_seconds": seconds, "make_test_source": source}
    if args.smoke_times and args.smoke_times.is_file():
        smoke = json.loads(args.smoke_times.read_text(encoding="utf-8"))
        suite.update(smoke_chapter_seconds=smoke["seconds"], smoke_chapters_seconds_total=sum(smoke["seconds"].values()),
                     smoke_chapters_measured=len(smoke["seconds"]),
                     smoke_source=f"tools/bench.py --smoke-run on {smoke['date']} (papermill, smoke profile, "
                                  f"load average at its end {smoke['loadavg_end'][0]:.1f})" + (f"; {smoke['note']}" if smoke.get("note") else ""))
    return suite


def targets(out) -> dict:
    """Issue #8's targets for a 2-core x86 CPU, checked against ``out``'s train, generate and suite sections."""
    seconds = out["suite"]["make_test_seconds"]
    return {
        "train_fraction_of_fp32_peak >= 0.7": out["train"]["fraction_of_fp32_peak"] >= 0.7,
        "bf16_speedup >= 1.5": out["train"]["bf16_speedup"] >= 1.5,
        "speedup_vs_keras_hub >= 1.2": out["train"]["speedup_vs_keras_hub"] >= 1.2,
        "kv_cache_speedup >= 5": out["generate"]["kv_cache_speedup"] >= 5,
        "make_test_seconds <= 1200": seconds is not None and seconds <= 1200,
        "cpu_chapters_seconds_total <= 3600": out["suite"]["cpu_chapters_seconds_total"] <= 3600,
        "bf16_speedup (cpu time) >= 1.5": out["train"]["cpu_time"]["bf16_speedup"] >= 1.5,
        "speedup_vs_keras_hub (cpu time) >= 1.2": out["train"]["cpu_time"]["speedup_vs_keras_hub"] >= 1.2,
        "mfu": "not measured: no GPU on this machine",
    }


def refresh_suite(path, args):
    """Re-read the suite section into the JSON at ``path`` and re-check the targets; measurements stay.

    For after a re-run of chapters: their times come from the notebooks'
    metadata, not from this run's measurements, so they can be updated
    without measuring the rest again. ``suite.refreshed`` records when.
    """
    out = json.loads(Path(path).read_text(encoding="utf-8"))
    out["suite"] = {**suite_section(args),
                    "refreshed": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    out["targets"] = targets(out)
    paths.atomic_write_json(path, out)
    return out


def corpus(chars):
    """Token ids of real pretraining text (the cpu profile's character tokenizer) and the vocabulary size."""
    tokenizer = base_models.base_tokenizer(profiles.get_profile("cpu"))
    docs = data.pretraining_documents("train", max_chars=chars)
    return train.token_stream(docs, tokenizer), tokenizer.vocab_size


def versions():
    report = env.environment_report()
    packages = dict(report["packages"])
    packages["keras-hub"] = env._version("keras-hub")
    return {"python": report["python"], "platform": report["platform"], "packages": packages}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="default: results/bench.json")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (try the script; numbers mean nothing)")
    parser.add_argument("--smoke-run", type=Path, nargs="?", const=SMOKE_TIMES, default=None,
                        help="only time the chapters in the smoke profile (writes JSON, default %(const)s)")
    parser.add_argument("--smoke-times", type=Path, default=SMOKE_TIMES,
                        help="JSON written by --smoke-run; used when it exists (default %(default)s)")
    parser.add_argument("--make-test-seconds", type=float, default=None)
    parser.add_argument("--make-test-source", default=None)
    parser.add_argument("--suite-only", action="store_true",
                        help="only re-read the chapter and test times into an existing JSON (measures nothing)")
    args = parser.parse_args(argv)
    if args.smoke_run:
        smoke_run(args.smoke_run)
        return 0
    target = args.out or paths.results_dir() / "bench.json"
    if args.suite_only:
        if not target.is_file():
            parser.error(f"--suite-only: {target} does not exist (run the full benchmark first)")
        refresh_suite(target, args)
        log(f"refreshed the suite section of {target}")
        return 0

    size = SIZES["quick" if args.quick else "full"]
    started = time.perf_counter()
    out = {
        "machine": {"cpu_model": bench.cpu_model(), "cpu_count": os.cpu_count(), "cpu_flags": bench.cpu_flags(),
                    "accelerator": env.detect_accelerator(), "backend": env.backend(), **versions()},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "sizes": "quick" if args.quick else "full",
        "loadavg_start": list(os.getloadavg()),
    }
    ids, vocab = corpus(size["corpus_chars"])
    log(f"corpus: {len(ids):,} tokens, vocabulary {vocab}")

    # 1) training throughput, each variant next to a fresh matmul peak
    config = dict(vocab_size=vocab, context_length=128, num_layers=size["layers"], num_heads=size["heads"],
                  hidden_dim=size["hidden"])
    small = dict(gpt.PRESETS["small"], vocab_size=vocab, dropout=0.0)
    if args.quick:
        small = dict(small, num_layers=1, hidden_dim=32, num_heads=2)
    # Each ratio below compares two variants that differ in one setting only
    # (bf16 with XLA: the policy against XLA in float32, and XLA against bf16
    # without). Two measurements of one variant minutes apart differ by 10%
    # or more on this shared machine, so the five variants of the ~5M config
    # are measured in alternating rounds, and each ratio is the median of
    # its per-round values. The small preset and the run with TensorFlow's op
    # determinism on (as the chapters train, env.set_seed; a fresh process)
    # are measured once, after the rounds.
    alternated = [(key, config) for key in (BASE, JIT, HUB, BF16, BF16_JIT)]
    once = [(("small", "llmft", "float32", False, False), small), (DETERMINED, config)]
    schedule = [(r, v) for r in range(size["rounds"]) for v in alternated] + [(0, v) for v in once]
    peaks = {"float32": [], "bfloat16": []}
    runs = []

    def measure_peaks():
        for dtype in peaks:
            peaks[dtype].append(bench.matmul_peak(dtype, size=size["peak_size"], repeats=5, trials=3))

    for round_, ((name, builder, policy, jit, deterministic), cfg) in schedule:
        measure_peaks()
        steps = size["small_steps"] if name == "small" else size["steps"]
        run = bench.train_throughput(cfg, ids, batch_size=size["batch"], steps=steps, warmup_steps=size["warmup"],
                                     jit_compile=jit, policy=policy, builder=builder, deterministic=deterministic)
        run.update(config=name, round=round_, fp32_peak_before=peaks["float32"][-1]["flops_per_second"])
        runs.append(run)
        log(f"train round {round_} {name} {builder} {policy} jit={jit} deterministic={deterministic}: "
            f"{run['tokens_per_second']:.0f} tokens/s, {run['flops_per_second'] / 1e9:.1f} GFLOP/s (peak before {run['fp32_peak_before'] / 1e9:.1f})")
    measure_peaks()

    variants = bench.median_runs(runs)
    by_key = {bench.variant_key(v): v for v in variants}
    fp32_peak = max(p["flops_per_second"] for p in peaks["float32"])
    bf16_peak = max(p["flops_per_second"] for p in peaks["bfloat16"])
    base, jitted, determined = by_key[BASE], by_key[JIT], by_key[DETERMINED]
    best_fp32 = max(base, jitted, key=lambda r: r["tokens_per_second"])
    # The same square matmuls compiled by XLA (other kernels): explains
    # what XLA does to the float32 and the bfloat16 variants above.
    xla = {dtype: bench.matmul_peak(dtype, size=size["peak_size"], repeats=5, trials=3, jit_compile=True)
           for dtype in peaks}
    log("matmul peak with XLA: " + ", ".join(f"{d} {p['flops_per_second'] / 1e9:.0f} GFLOP/s" for d, p in xla.items()))
    out["peak"] = {"float32": peaks["float32"], "bfloat16": peaks["bfloat16"],
                   "float32_flops_per_second": fp32_peak, "bfloat16_flops_per_second": bf16_peak,
                   "bf16_over_fp32": bench.ratio(bf16_peak, fp32_peak),
                   "xla": xla, "xla_bf16_over_fp32": bench.ratio(xla["bfloat16"]["flops_per_second"],
                                                                 xla["float32"]["flops_per_second"])}
    per_round = {name: bench.round_ratios(runs, *pair) for name, pair in RATIO_PAIRS.items()}
    per_round_cpu = {name: bench.round_ratios(runs, *pair, cpu=True) for name, pair in RATIO_PAIRS.items()}
    best_key = bench.variant_key(best_fp32)
    out["train"] = {
        "runs": runs,
        "variants": variants,
        "rounds": size["rounds"],
        "config": config,
        "flops_per_token": estimates.gpt_flops_per_token(config),
        "flops_note": "matmul FLOPs (2 per multiply-add) from llmft.estimates.gpt_flops_per_token; train = 3 x forward",
        "summary_note": "variants: median over the rounds; each ratio: the median of its per-round values (per_round)",
        "fraction_of_fp32_peak": best_fp32["flops_per_second"] / fp32_peak,
        "fraction_of_fp32_peak_no_jit": base["flops_per_second"] / fp32_peak,
        "fraction_of_fp32_peak_adjacent": float(np.median([r["flops_per_second"] / r["fp32_peak_before"]
                                                           for r in runs if bench.variant_key(r) == best_key])),
        **{name: float(np.median(values)) for name, values in per_round.items()},
        "per_round": per_round,
        # > 1: the chapters' deterministic training is that many times slower (one run, against the median)
        "determinism_slowdown": bench.ratio(base["tokens_per_second"], determined["tokens_per_second"]),
    }
    # Each matmul of the ~5M config's step timed alone: the step time if it
    # were nothing but matmuls, against the measured step (no XLA).
    model5m = gpt.GPT(**config)
    model5m.build((None, config["context_length"]))
    matmuls = bench.step_matmuls(model5m, size["batch"])
    log(f"matmuls of one step alone: {matmuls['seconds']:.3f} s ({matmuls['flops'] / matmuls['seconds'] / 1e9:.1f} GFLOP/s)"
        f" against {base['seconds_per_step']:.3f} s for the whole step")
    out["train"]["matmuls_only"] = {
        **matmuls, "batch_size": size["batch"],
        "note": "every MatMul/BatchMatMul of one training step timed alone at its shape (bench.step_matmuls)",
        "fraction_of_fp32_peak": matmuls["flops"] / matmuls["seconds"] / fp32_peak,
        "share_of_step_no_jit": matmuls["seconds"] / base["seconds_per_step"],
    }
    # The same ratios from CPU seconds per step (all threads of this process):
    # time spent waiting for a core that another process holds does not count.
    out["train"]["cpu_time"] = {
        "note": "ratios of CPU seconds per step (less disturbed by other load than wall time); medians of per_round",
        **{name: float(np.median(values)) for name, values in per_round_cpu.items()},
        "per_round": per_round_cpu,
        "determinism_slowdown": bench.ratio(determined["cpu_seconds_per_step"], base["cpu_seconds_per_step"]),
    }
    # The MLP's GELU alone at the ~5M config's shape (batch x context, 4C):
    # why llmft.gpt.gelu computes in float32 under mixed_bfloat16.
    shape = (size["batch"] * config["context_length"], 4 * config["hidden_dim"])
    gelu = {name: bench.activation_seconds(shape, dtype=dtype, upcast=upcast)
            for name, dtype, upcast in (("float32", "float32", False), ("bfloat16_native", "bfloat16", False),
                                        ("bfloat16_upcast", "bfloat16", True))}
    out["train"]["gelu"] = {
        **gelu, "note": "forward + backward of the exact GELU alone (bench.activation_seconds); "
                        "bfloat16_upcast is llmft.gpt.gelu, what the bf16 variants above run",
        "native_bf16_over_fp32_seconds": bench.ratio(gelu["bfloat16_native"]["seconds"], gelu["float32"]["seconds"]),
        "upcast_speedup": bench.ratio(gelu["bfloat16_native"]["seconds"], gelu["bfloat16_upcast"]["seconds"]),
    }
    log("GELU forward + backward: " + ", ".join(f"{k} {v['seconds'] * 1e3:.1f} ms" for k, v in gelu.items()))

    # 1b) the start of a fit: how long tracing takes with and without the
    # early build (train.build_before_fit), for the smoke profile's tiny GPT
    # and the ~5M config; alternated, best of two each.
    tiny = dict(gpt.PRESETS["tiny"], vocab_size=vocab, context_length=32)
    fit_start = {"runs": [], "configs": {"tiny": tiny, "gpt5m": config},
                 "note": "seconds from model.fit's start (build_before_fit included) to the end of its first step"}
    for name, cfg in (("tiny", tiny), ("gpt5m", config)):
        for _ in range(2):
            for build_first in (False, True):
                run = bench.first_step_seconds(cfg, ids, batch_size=size["batch"], build_first=build_first)
                fit_start["runs"].append({**run, "config": name})
        lazy, built = ([r for r in fit_start["runs"] if r["config"] == name and r["build_first"] == flag]
                       for flag in (False, True))
        fit_start[name] = {"lazy_seconds": min(r["seconds"] for r in lazy),
                           "built_seconds": min(r["seconds"] for r in built),
                           "lazy_traces": lazy[0]["traces"], "built_traces": built[0]["traces"]}
        fit_start[name]["speedup"] = bench.ratio(fit_start[name]["lazy_seconds"], fit_start[name]["built_seconds"])
        log(f"fit start {name}: {fit_start[name]['lazy_seconds']:.1f} s with {lazy[0]['traces']} traces, "
            f"{fit_start[name]['built_seconds']:.1f} s with {built[0]['traces']}")
    out["fit_start"] = fit_start

    # 2) generation with and without the KV cache
    import keras

    keras.utils.set_random_seed(0)
    model = gpt.GPT(**dict(small, context_length=size["gen_context"]))
    prompt = [int(i) for i in ids[:8]]
    model(np.array([prompt], "int32"))
    speeds = {}
    for use_cache in (True, False):
        speeds[use_cache] = bench.generation_speed(model, prompt, size["gen_tokens"], use_cache=use_cache,
                                                   repeats=size["gen_repeats"])
        log(f"generate use_cache={use_cache}: {speeds[use_cache]['tokens_per_second']:.1f} tokens/s")
    out["generate"] = {
        "model": {**small, "context_length": size["gen_context"], "params": int(model.count_params()),
                  "weights": "random init (speed does not depend on them)"},
        "prompt_tokens": len(prompt), "new_tokens": size["gen_tokens"], "strategy": "greedy",
        "with_cache": {k: v for k, v in speeds[True].items() if k != "tokens"},
        "without_cache": {k: v for k, v in speeds[False].items() if k != "tokens"},
        "identical_tokens": speeds[True]["tokens"] == speeds[False]["tokens"],
        "kv_cache_speedup": bench.ratio(speeds[True]["tokens_per_second"], speeds[False]["tokens_per_second"]),
    }

    # 3) peak memory, each task in a fresh process
    memory = {task: bench.peak_rss(task, config, batch_size=size["rss_batch"], steps=size["rss_steps"])
              for task in ("idle", "finetune_full", "finetune_lora")}
    for task, row in memory.items():
        row["above_idle_bytes"] = row["peak_rss_bytes"] - memory["idle"]["peak_rss_bytes"]
        log(f"memory {task}: {row['peak_rss_bytes'] / 2**20:.0f} MiB")
    out["memory"] = {"tasks": memory, "config": config, "batch_size": size["rss_batch"], "lora_rank": 8,
                     "lora_over_full_above_idle": bench.ratio(max(memory["finetune_lora"]["above_idle_bytes"], 1),
                                                              max(memory["finetune_full"]["above_idle_bytes"], 1))}

    # 4) the test suite and the chapters; 5) targets of issue #8 (a 2-core x86 CPU)
    out["suite"] = suite_section(args)
    out["targets"] = targets(out)
    out["loadavg_end"] = list(os.getloadavg())
    out["bench_seconds"] = time.perf_counter() - started
    paths.atomic_write_json(target, json.loads(json.dumps(out)))
    log(f"wrote {target} in {out['bench_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
