"""Tests for llmft.estimates: FLOPs, memory and power-law fits on tiny configs."""

import keras
import numpy as np
import pytest

from llmft import estimates, gpt, lora

TINY = dict(vocab_size=50, context_length=16, num_layers=2, hidden_dim=32)


def _gpt(**overrides):
    keras.utils.set_random_seed(0)
    config = {**TINY, "num_heads": 2, **overrides}
    model = gpt.GPT(**config)
    model(np.zeros((1, config["context_length"]), "int32"))  # build
    return model


# --- compute -----------------------------------------------------------------


def test_training_flops_is_six_n_d():
    assert estimates.training_flops(1_000, 2_000) == 12_000_000.0
    # GPT-3 175B on 300B tokens: about 3.15e23 FLOPs (Brown et al. report 3.14e23).
    assert estimates.training_flops(175e9, 300e9) == pytest.approx(3.15e23)


@pytest.mark.parametrize("args", [(0, 10), (10, -1), (True, 10), (10, float("nan")), ("1", 2)])
def test_training_flops_rejects_bad_arguments(args):
    with pytest.raises(ValueError, match="num_"):
        estimates.training_flops(*args)


def test_param_counts_by_hand():
    counts = estimates.gpt_param_counts(TINY)
    # C=32, F=128: kernels 32*96 + 32*32 + 32*128 + 128*32 = 12288 per block,
    # biases 96 + 32 + 128 + 32 = 288, two LayerNorms 4 * 32 = 128.
    assert counts["block_kernels"] == 2 * 12288
    assert counts["blocks"] == 2 * (12288 + 288 + 128)
    assert counts["token_embedding"] == 50 * 32 and counts["position_embedding"] == 16 * 32
    assert counts["total"] == 1600 + 512 + 25408 + 64
    assert counts["non_embedding"] == 25408 + 64


@pytest.mark.parametrize("overrides", [{}, {"tie_embeddings": False, "mlp_dim": 48}, {"num_layers": 3}])
def test_param_counts_match_a_real_gpt(overrides):
    model = _gpt(**overrides)
    assert estimates.gpt_param_counts(model)["total"] == model.count_params()


def test_param_counts_of_gpt3_sizes():
    # Brown et al. (2020), table 2.1: 6.7B has 32 layers of width 4096, 175B 96 of 12288.
    small = dict(vocab_size=50257, context_length=2048, num_layers=32, hidden_dim=4096)
    large = dict(vocab_size=50257, context_length=2048, num_layers=96, hidden_dim=12288)
    assert estimates.gpt_param_counts(small)["total"] / 1e9 == pytest.approx(6.7, abs=0.05)
    assert estimates.gpt_param_counts(large)["total"] / 1e9 == pytest.approx(175, abs=1)


def test_flops_per_token_by_hand():
    f = estimates.gpt_flops_per_token(TINY)
    assert f["projections"] == 2 * 24576
    assert f["attention"] == 2 * 4 * 16 * 32  # L * 4 T C
    assert f["logits"] == 2 * 50 * 32
    assert f["train"] == 3 * f["forward"] == 3 * (49152 + 4096 + 3200)
    assert f["kaplan_forward"] == 2 * 25472 + 2 * 2 * 16 * 32
    assert estimates.gpt_flops_per_token(TINY, context_length=8)["attention"] == 2 * 4 * 8 * 32


@pytest.mark.parametrize("overrides,batch,length", [({}, 4, 16), ({"tie_embeddings": False, "mlp_dim": 48}, 3, 8)])
def test_counted_train_step_matches_the_formula(overrides, batch, length):
    model = _gpt(**overrides)
    counted = estimates.count_train_step_flops(model, batch, length)
    expected = estimates.gpt_flops_per_token(model, context_length=length)["train"] * batch * length
    assert counted == expected


def test_count_matmul_flops_reads_transposes():
    import tensorflow as tf

    @tf.function
    def f(a, b):
        return tf.matmul(a, b, transpose_a=True) + 0.0, tf.linalg.matmul(a[None], b[None], adjoint_a=True)

    spec = tf.TensorSpec((5, 3), tf.float32)
    graph = f.get_concrete_function(spec, tf.TensorSpec((5, 7), tf.float32)).graph
    # (3, 5) @ (5, 7): 3 * 7 outputs, 5 multiply-adds each, twice.
    assert estimates.count_matmul_flops(graph) == 2 * (2 * 5 * 3 * 7)
    rows = estimates.matmul_ops(graph)
    assert [(r["op"], r["a_shape"], r["b_shape"], r["transpose_a"], r["transpose_b"]) for r in rows] == [
        ("MatMul", [5, 3], [5, 7], True, False), ("BatchMatMulV2", [1, 5, 3], [1, 5, 7], True, False)]
    assert [r["flops"] for r in rows] == [2 * 5 * 3 * 7] * 2 and {r["dtype"] for r in rows} == {"float32"}


def test_matmul_ops_refuse_unknown_shapes():
    import tensorflow as tf

    graph = tf.function(tf.matmul).get_concrete_function(
        tf.TensorSpec((None, 3), tf.float32), tf.TensorSpec((3, 2), tf.float32)).graph
    with pytest.raises(ValueError, match="unknown shape"):
        estimates.matmul_ops(graph)


@pytest.mark.parametrize("bad", [dict(TINY, hidden_dim=0), {"vocab_size": 5}, "tiny"])
def test_gpt_counts_reject_bad_configs(bad):
    with pytest.raises(ValueError):
        estimates.gpt_param_counts(bad)


def test_count_functions_reject_bad_arguments():
    with pytest.raises(ValueError, match="graph"):
        estimates.count_matmul_flops("not a graph")
    with pytest.raises(ValueError, match="batch_size"):
        estimates.count_train_step_flops(_gpt(), 0)
    with pytest.raises(ValueError, match="context_length"):
        estimates.gpt_flops_per_token(TINY, context_length=-3)


# --- memory ------------------------------------------------------------------


def test_memory_full_and_lora_by_hand():
    full = estimates.finetune_memory_bytes(1000)
    assert full == {"weights": 4000, "gradients": 4000, "optimizer": 8000, "total": 16000}
    lora_mem = estimates.finetune_memory_bytes(1100, 100, dtype="bfloat16")
    assert lora_mem == {"weights": 2200, "gradients": 200, "optimizer": 800, "total": 3200}
    mixed = estimates.finetune_memory_bytes(1000, dtype="bfloat16", master_weights=True)
    assert mixed["total"] == 16000  # 2 + 2 + 12 bytes per parameter (ZeRO's 16 bytes)
    assert estimates.finetune_memory_bytes(10, optimizer="sgd")["optimizer"] == 0


@pytest.mark.parametrize("kwargs", [
    dict(total_params=0), dict(total_params=10, trainable_params=11), dict(total_params=10, dtype="fp8"),
    dict(total_params=10, optimizer="lion"), dict(total_params=10, master_weights="yes"),
    dict(total_params=10, trainable_params=-1),
])
def test_memory_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        estimates.finetune_memory_bytes(**kwargs)


def test_lora_param_count_matches_enable_lora():
    model = _gpt()
    lora.enable_lora(model, 4)
    trainable, _, _ = lora.trainable_fraction(model)
    assert estimates.lora_param_count(TINY, 4) == trainable == 2 * 4 * (128 + 64 + 160 + 160)
    assert estimates.lora_param_count(TINY, 2, targets=["qkv"]) == 2 * 2 * (32 + 96)
    with pytest.raises(ValueError, match="targets"):
        estimates.lora_param_count(TINY, 2, targets=["query"])
    with pytest.raises(ValueError, match="rank"):
        estimates.lora_param_count(TINY, 0)


def test_variable_bytes_matches_estimate_after_one_step():
    model = _gpt()
    model.compile(optimizer=keras.optimizers.AdamW(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.ones((2, 16), "int32")
    model.train_on_batch(x, x)
    n = model.count_params()
    est = estimates.finetune_memory_bytes(n)
    assert estimates.variable_bytes(model.weights) == est["weights"]
    # Two moments per weight, plus a few scalars (step counter, learning rate).
    extra = estimates.variable_bytes(model.optimizer.variables) - est["optimizer"]
    assert 0 <= extra <= 64
    with pytest.raises(ValueError, match="variables"):
        estimates.variable_bytes("weights")


# --- power laws --------------------------------------------------------------


def test_power_law_without_offset_by_hand():
    law = estimates.fit_power_law([1, 10, 100], [2.0, 1.0, 0.5])
    assert law.a == pytest.approx(2.0) and law.b == pytest.approx(np.log10(2))
    assert law.c == 0.0 and law.rmse_log < 1e-12
    np.testing.assert_allclose(law([1000]), [0.25])


def test_power_law_recovers_an_offset():
    x = np.array([1e3, 3e3, 1e4, 3e4, 1e5, 3e5])
    law = estimates.fit_power_law(x, 5.0 * x ** -0.3 + 1.5, offset=True)
    assert law.c == pytest.approx(1.5, abs=1e-3) and law.b == pytest.approx(0.3, abs=1e-3)
    # Without the offset the exponent comes out much smaller: the floor bends the line.
    assert estimates.fit_power_law(x, 5.0 * x ** -0.3 + 1.5).b < 0.2


def test_power_law_on_noisy_points():
    rng = np.random.default_rng(0)
    x = np.geomspace(1e4, 1e7, 12)
    y = 30.0 * x ** -0.1 * np.exp(rng.normal(0, 0.01, x.size))
    law = estimates.fit_power_law(x, y)
    assert law.b == pytest.approx(0.1, abs=0.01) and 0 < law.rmse_log < 0.02


@pytest.mark.parametrize("x,y,offset,match", [
    ([1, 2], [1.0], False, "same length"), ([1, 1], [1.0, 2.0], False, "distinct"),
    ([1, 2], [1.0, 0.5], True, "distinct"), ([0, 2], [1.0, 0.5], False, "x must be positive"),
    ([1, 2], [1.0, -0.5], False, "y must be positive"), ([[1, 2]], [[1.0, 0.5]], False, "1-D"),
])
def test_power_law_rejects_bad_arguments(x, y, offset, match):
    with pytest.raises(ValueError, match=match):
        estimates.fit_power_law(x, y, offset=offset)
