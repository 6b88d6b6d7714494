"""Tests for llmft.bench and tools/bench.py: FLOP arithmetic, JSON shape, tiny configs (no timing asserts)."""

import importlib.util
import json
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest

from llmft import bench, estimates, gpt, paths

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(vocab_size=40, context_length=16, num_layers=1, num_heads=2, hidden_dim=16)
IDS = np.random.default_rng(0).integers(0, 40, 400).astype("int32")


def _tools_bench():
    spec = importlib.util.spec_from_file_location("tools_bench", ROOT / "tools" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- matmul peak ---------------------------------------------------------------


@pytest.mark.parametrize("jit_compile", [False, True])
def test_matmul_peak_counts_two_n_cubed_per_product(jit_compile):
    out = bench.matmul_peak("float32", size=32, repeats=3, trials=2, jit_compile=jit_compile)
    assert out["flops"] == 2 * 32**3 * 3 and out["jit_compile"] is jit_compile
    assert len(out["seconds"]) == 2
    assert out["flops_per_second"] == pytest.approx(out["flops"] / min(out["seconds"]))


def test_matmul_peak_under_xla_keeps_every_product_in_the_loop():
    # XLA moves a product of loop-invariant inputs out of a while loop; then
    # the "peak" counts `repeats` products but times one. The optimized HLO
    # must keep the dot inside the loop body.
    import tensorflow as tf

    a = tf.ones((16, 16))
    loop = bench._matmul_loop(tf, "float32", False, False, repeats=4, jit_compile=True)
    hlo = loop.experimental_get_compiler_ir(a, a)(stage="optimized_hlo")
    computations = re.split(r"\n(?=\S)", hlo)  # each starts at column 0
    with_dot = [c.split("(")[0] for c in computations if re.search(r"\bdot\(", c)]
    assert with_dot and all("while_body" in name for name in with_dot), with_dot


@pytest.mark.parametrize("kwargs", [dict(dtype="float16"), dict(size=0), dict(repeats=True), dict(trials=-1),
                                    dict(jit_compile="yes")])
def test_matmul_peak_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        bench.matmul_peak(**kwargs)


# --- training throughput -------------------------------------------------------


def test_train_throughput_uses_the_stated_flop_count():
    out = bench.train_throughput(TINY, IDS, batch_size=2, steps=2, warmup_steps=1)
    per_token = estimates.gpt_flops_per_token(TINY)["train"]
    assert out["flops_per_token"] == per_token
    assert out["tokens_per_second"] == pytest.approx(2 * 16 / out["seconds_per_step"])
    assert out["flops_per_second"] == pytest.approx(out["tokens_per_second"] * per_token)
    assert out["params"] == estimates.gpt_param_counts(TINY)["total"]
    assert np.isfinite(out["final_loss"]) and out["cpu_seconds_per_step"] >= 0


def test_first_step_seconds_counts_the_traces_with_and_without_the_early_build():
    lazy = bench.first_step_seconds(TINY, IDS, batch_size=2, build_first=False)
    built = bench.first_step_seconds(TINY, IDS, batch_size=2, build_first=True)
    assert (lazy["traces"], built["traces"]) == (2, 1)
    assert lazy["seconds"] > 0 and built["seconds"] > 0 and lazy["params"] == built["params"]
    with pytest.raises(ValueError, match="build_first"):
        bench.first_step_seconds(TINY, IDS, build_first="yes")
    with pytest.raises(ValueError, match="config"):
        bench.first_step_seconds([1], IDS)


def test_deterministic_throughput_runs_in_a_fresh_process_and_repeats_exactly():
    from tensorflow.python.framework import config as tf_config  # no public getter

    before = tf_config.is_op_determinism_enabled()
    runs = [bench.train_throughput(TINY, IDS, batch_size=2, steps=2, warmup_steps=1, deterministic=True)
            for _ in range(2)]
    assert all(r["deterministic"] for r in runs)
    assert runs[0]["final_loss"] == runs[1]["final_loss"]  # op determinism: the same numbers twice
    assert runs[0]["flops_per_token"] == estimates.gpt_flops_per_token(TINY)["train"]
    assert tf_config.is_op_determinism_enabled() == before  # this process is left as it was
    assert bench.train_throughput(TINY, IDS, batch_size=2, steps=1, warmup_steps=1)["deterministic"] is False


def test_keras_hub_peer_has_the_same_size_and_flop_count():
    model = bench.keras_hub_gpt(TINY)
    logits = model(IDS[None, :16])
    assert tuple(logits.shape) == (1, 16, 40)
    # GPT2Backbone has the same weights as the book's tied GPT (separate q/k/v
    # projections hold the same numbers as the fused one).
    assert model.count_params() == estimates.gpt_param_counts(TINY)["total"]
    out = bench.train_throughput(TINY, IDS, batch_size=2, steps=1, warmup_steps=1, builder="keras_hub",
                                 policy="mixed_bfloat16")
    assert out["builder"] == "keras_hub" and out["policy"] == "mixed_bfloat16"
    import keras

    assert keras.config.dtype_policy().name == "float32"  # restored


@pytest.mark.parametrize("kwargs", [dict(builder="torch"), dict(policy="float16"), dict(jit_compile="auto"),
                                    dict(batch_size=0), dict(steps=1.5), dict(warmup_steps=0),
                                    dict(deterministic="yes"), dict(timeout=0)])
def test_train_throughput_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        bench.train_throughput(TINY, IDS, **kwargs)


def test_keras_hub_gpt_rejects_a_config_without_heads():
    with pytest.raises(ValueError, match="config"):
        bench.keras_hub_gpt({k: v for k, v in TINY.items() if k != "num_heads"})


def _run(round_, seconds, cpu, builder="llmft", policy="float32"):
    return {"config": "c", "builder": builder, "policy": policy, "jit_compile": False, "deterministic": False,
            "round": round_, "batch_size": 2, "context_length": 8, "flops_per_token": 100, "params": 7,
            "seconds_per_step": seconds, "cpu_seconds_per_step": cpu, "tokens_per_second": 16 / seconds,
            "flops_per_second": 1600 / seconds, "final_loss": 1.0, "warmup_seconds": 1.0}


def test_median_runs_and_round_ratios_pair_the_rounds():
    runs = [_run(0, 1.0, 2.0), _run(0, 0.5, 1.5, policy="mixed_bfloat16"),
            _run(1, 3.0, 2.2), _run(1, 1.0, 1.0, policy="mixed_bfloat16"),
            _run(2, 2.0, 2.4), _run(2, 2.0, 1.2, policy="mixed_bfloat16")]
    fp32, bf16 = (bench.variant_key(runs[i]) for i in (0, 1))
    rows = bench.median_runs(runs)
    assert [bench.variant_key(r) for r in rows] == [fp32, bf16]  # order of first appearance
    assert [r["rounds"] for r in rows] == [3, 3]
    assert (rows[0]["seconds_per_step"], rows[0]["cpu_seconds_per_step"]) == (2.0, 2.2)
    assert rows[0]["tokens_per_second"] == pytest.approx(16 / 2.0) and rows[0]["flops_per_second"] == pytest.approx(800)
    assert "round" not in rows[0] and "final_loss" not in rows[0]
    # each round against itself: tokens/s 2x, 3x, 1x; CPU seconds 1.5/2.0 ... inverted
    assert bench.round_ratios(runs, bf16, fp32) == pytest.approx([2.0, 3.0, 1.0])
    assert bench.round_ratios(runs, bf16, fp32, cpu=True) == pytest.approx([2.0 / 1.5, 2.2, 2.0])
    assert bench.round_ratios(runs, fp32, bf16) == pytest.approx([0.5, 1 / 3, 1.0])
    # a variant measured once (round 0) pairs with round 0 only
    once = _run(0, 4.0, 4.0, builder="keras_hub")
    assert bench.round_ratios([*runs, once], fp32, bench.variant_key(once)) == pytest.approx([4.0])
    with pytest.raises(ValueError, match="runs"):
        bench.median_runs([])
    with pytest.raises(ValueError, match="no variant"):
        bench.round_ratios(runs, ("x",) * 5, fp32)
    with pytest.raises(ValueError, match="share no round"):
        bench.round_ratios([runs[0], {**runs[1], "round": 5}], bf16, fp32)


def test_activation_seconds_times_keras_gelu_or_the_books():
    for dtype, upcast in (("float32", False), ("bfloat16", True), ("bfloat16", False)):
        out = bench.activation_seconds((4, 8), dtype=dtype, upcast=upcast, repeats=2, trials=2)
        assert (out["dtype"], out["upcast"], out["shape"]) == (dtype, upcast, [4, 8])
        assert out["seconds"] == min(out["trials"]) > 0 and len(out["trials"]) == 2


@pytest.mark.parametrize("kwargs, name", [(dict(dtype="float16"), "dtype"), (dict(upcast=1), "upcast"),
                                          (dict(shape=(0, 4)), "shape"), (dict(shape=4), "shape"),
                                          (dict(repeats=0), "repeats"), (dict(trials=True), "trials")])
def test_activation_seconds_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        bench.activation_seconds(**{"shape": (2, 2), **kwargs})


# --- generation, memory, wall times ---------------------------------------------


def test_generation_speed_with_and_without_cache_agree():
    from llmft import gpt

    model = gpt.GPT(**TINY)
    model(IDS[None, :4])
    fast = bench.generation_speed(model, [1, 2, 3], 5, use_cache=True, repeats=1)
    slow = bench.generation_speed(model, [1, 2, 3], 5, use_cache=False, repeats=1)
    assert fast["tokens"] == slow["tokens"] and len(fast["tokens"]) == 5
    assert fast["tokens_per_second"] == pytest.approx(5 / min(fast["seconds"]))


def test_peak_rss_runs_in_a_fresh_process():
    out = bench.peak_rss("finetune_lora", TINY, batch_size=2, steps=1, rank=2)
    assert out["task"] == "finetune_lora"
    assert out["trainable_params"] == estimates.lora_param_count(TINY, rank=2)
    assert out["peak_rss_bytes"] > 50 * 2**20  # TensorFlow alone is larger


@pytest.mark.parametrize("task", ["gpu", "", None])
def test_peak_rss_rejects_unknown_tasks(task):
    with pytest.raises(ValueError, match="task"):
        bench.peak_rss(task, TINY)


def test_notebook_seconds_reads_papermill_metadata(tmp_path):
    timed = nbformat.v4.new_notebook(metadata={"papermill": {"duration": 12.5}})
    untimed = nbformat.v4.new_notebook()
    nbformat.write(timed, tmp_path / "a.ipynb")
    nbformat.write(untimed, tmp_path / "b.ipynb")
    assert bench.notebook_seconds([tmp_path / "a.ipynb", tmp_path / "b.ipynb"]) == {"a": 12.5}
    with pytest.raises(ValueError, match="paths"):
        bench.notebook_seconds(tmp_path / "a.ipynb")
    with pytest.raises(ValueError, match="paths"):
        bench.notebook_seconds([tmp_path / "missing.ipynb"])


def test_ratio_and_machine_description():
    assert bench.ratio(3.0, 2.0) == 1.5
    for bad in [(0, 1), (1, float("inf")), (True, 1)]:
        with pytest.raises(ValueError):
            bench.ratio(*bad)
    assert isinstance(bench.cpu_model(), str) and bench.cpu_model()
    assert all(isinstance(v, bool) for v in bench.cpu_flags().values())


# --- tools/bench.py and the committed JSON ---------------------------------------


def test_make_test_seconds_from_argument_or_readme():
    tools = _tools_bench()
    args = type("Args", (), {"make_test_seconds": 61.0, "make_test_source": "a CI log"})()
    assert tools.make_test_seconds(args) == (61.0, "a CI log")
    args.make_test_seconds = None
    seconds, source = tools.make_test_seconds(args)
    assert seconds is None or (seconds > 0 and "README.md" in source)


def test_suite_only_rereads_the_times_and_keeps_every_measurement(tmp_path):
    # After a re-run of chapters, `tools/bench.py --suite-only` updates their
    # times (read from the notebooks) without measuring anything again.
    committed_path = ROOT / "results" / "bench.json"
    if not committed_path.exists():
        pytest.skip("results/bench.json not recorded yet (make bench)")
    tools = _tools_bench()
    committed = json.loads(committed_path.read_text(encoding="utf-8"))
    stale = json.loads(json.dumps(committed))
    stale["suite"].update(cpu_chapter_seconds={"gone": 1.0}, cpu_chapters_seconds_total=1e9)
    stale["targets"]["cpu_chapters_seconds_total <= 3600"] = False
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(stale), encoding="utf-8")
    args = type("Args", (), {"make_test_seconds": 61.0, "make_test_source": "a CI log", "smoke_times": None})()
    out = tools.refresh_suite(path, args)
    assert json.loads(path.read_text(encoding="utf-8")) == out
    cpu = bench.notebook_seconds(paths.chapter_notebooks(ROOT))
    assert out["suite"]["cpu_chapter_seconds"] == cpu and out["suite"]["cpu_chapters_seconds_total"] == sum(cpu.values())
    assert (out["suite"]["make_test_seconds"], out["suite"]["make_test_source"]) == (61.0, "a CI log")
    assert out["suite"]["refreshed"]
    assert out["targets"]["cpu_chapters_seconds_total <= 3600"] == (sum(cpu.values()) <= 3600)
    assert out["targets"]["make_test_seconds <= 1200"] is True
    for key in committed:
        if key not in ("suite", "targets"):
            assert out[key] == committed[key], key
    assert {k: v for k, v in out["targets"].items() if "seconds" not in k} == {
        k: v for k, v in committed["targets"].items() if "seconds" not in k}


REQUIRED = {
    "train": ["fraction_of_fp32_peak", "bf16_speedup", "bf16_speedup_jit", "jit_speedup_bf16",
              "speedup_vs_keras_hub", "jit_speedup", "runs", "variants", "rounds", "per_round", "gelu",
              "flops_per_token", "matmuls_only", "determinism_slowdown"],
    "generate": ["kv_cache_speedup", "with_cache", "without_cache", "identical_tokens"],
    "suite": ["make_test_seconds", "make_test_source", "cpu_chapter_seconds"],
    "peak": ["float32_flops_per_second", "bfloat16_flops_per_second", "xla", "xla_bf16_over_fp32"],
    "memory": ["tasks"],
    "fit_start": ["runs", "configs", "tiny", "gpt5m"],
}


def _check_shape(payload):
    for section, keys in REQUIRED.items():
        missing = [k for k in keys if k not in payload[section]]
        assert not missing, f"{section}: {missing}"
    assert len(payload["loadavg_start"]) == 3 and len(payload["loadavg_end"]) == 3
    assert payload["machine"]["cpu_model"] and payload["date"]
    train = payload["train"]
    tools = _tools_bench()
    # variants are the medians of the runs; every ratio is the median of its
    # per-round ratios, and those are the ratios of the raw runs of each round
    assert train["variants"] == bench.median_runs(train["runs"])
    variants = {bench.variant_key(v): v for v in train["variants"]}
    assert all(variants[key]["rounds"] == train["rounds"] for pair in tools.RATIO_PAIRS.values() for key in pair)
    for name, pair in tools.RATIO_PAIRS.items():
        for section, cpu in ((train, False), (train["cpu_time"], True)):
            assert section["per_round"][name] == pytest.approx(bench.round_ratios(train["runs"], *pair, cpu=cpu))
            assert len(section["per_round"][name]) == train["rounds"]
            assert section[name] == pytest.approx(np.median(section["per_round"][name]))
    base, hub = variants[tools.BASE], variants[tools.HUB]
    assert (hub["params"], hub["flops_per_token"]) == (base["params"], base["flops_per_token"])
    assert train["flops_per_token"]["train"] == base["flops_per_token"]
    determined = variants[tools.DETERMINED]  # differs from base in the determinism only, measured once
    assert determined["rounds"] == 1
    assert train["determinism_slowdown"] == pytest.approx(base["tokens_per_second"] / determined["tokens_per_second"])
    assert train["fraction_of_fp32_peak_no_jit"] == pytest.approx(
        base["flops_per_second"] / payload["peak"]["float32_flops_per_second"])
    gelu = train["gelu"]
    assert gelu["upcast_speedup"] == pytest.approx(gelu["bfloat16_native"]["seconds"] / gelu["bfloat16_upcast"]["seconds"])
    assert base["flops_per_token"] == estimates.gpt_flops_per_token(train["config"])["train"]
    # the matmuls timed alone are those of one step of the same config and batch
    alone = train["matmuls_only"]
    assert alone["flops"] == base["flops_per_token"] * alone["batch_size"] * base["context_length"]
    assert alone["flops"] == sum(r["count"] * r["flops"] for r in alone["matmuls"])
    assert alone["share_of_step_no_jit"] == pytest.approx(alone["seconds"] / base["seconds_per_step"])
    # the page's decomposition: utilisation = matmul speed x matmul share of the step
    assert alone["fraction_of_fp32_peak"] * alone["share_of_step_no_jit"] == pytest.approx(
        train["fraction_of_fp32_peak_no_jit"])
    gen = payload["generate"]
    assert gen["kv_cache_speedup"] == pytest.approx(
        gen["with_cache"]["tokens_per_second"] / gen["without_cache"]["tokens_per_second"])
    assert {"idle", "finetune_full", "finetune_lora"} <= set(payload["memory"]["tasks"]) <= set(bench.RSS_TASKS)
    for name in ("tiny", "gpt5m"):
        start = payload["fit_start"][name]
        assert (start["lazy_traces"], start["built_traces"]) == (2, 1)
        assert start["speedup"] == pytest.approx(start["lazy_seconds"] / start["built_seconds"])


def test_the_committed_bench_json_has_the_documented_shape():
    path = ROOT / "results" / "bench.json"
    if not path.exists():
        pytest.skip("results/bench.json not recorded yet (make bench)")
    payload = json.loads(path.read_text(encoding="utf-8"))
    assert payload["sizes"] == "full"
    assert 4e6 < payload["train"]["runs"][0]["params"] < 7e6  # the ~5M config
    assert payload["generate"]["new_tokens"] == 256
    _check_shape(payload)


# --- matmuls of a training step ------------------------------------------------------


def test_step_matmuls_cover_every_matmul_flop_of_the_step():
    model = gpt.GPT(**TINY)
    model.build((None, TINY["context_length"]))
    out = bench.step_matmuls(model, 2, trials=1, flops_per_call=1e6)
    # the rows add up to what estimates counts in the same traced step
    assert out["flops"] == estimates.count_train_step_flops(model, 2)
    assert out["flops"] == sum(r["count"] * r["flops"] for r in out["matmuls"])
    # forward, input gradient and weight gradient of the output layer (tied: V x C)
    V, C = TINY["vocab_size"], TINY["hidden_dim"]
    logits = [r for r in out["matmuls"] if r["flops"] == 2 * 2 * 16 * V * C]
    assert len(logits) == 3
    assert out["seconds"] == pytest.approx(sum(r["count"] * r["flops"] / r["flops_per_second"] for r in out["matmuls"]))
    assert all(r["flops_per_second"] > 0 for r in out["matmuls"])


@pytest.mark.parametrize("kwargs, name", [(dict(batch_size=0), "batch_size"), (dict(trials=True), "trials"),
                                          (dict(flops_per_call=0), "flops_per_call")])
def test_step_matmuls_rejects_bad_arguments(kwargs, name):
    model = gpt.GPT(**TINY)
    with pytest.raises(ValueError, match=name):
        bench.step_matmuls(model, **{"batch_size": 2, **kwargs})
