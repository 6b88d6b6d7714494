"""LoRA: fine-tune two small matrices per layer instead of the whole model.

Hu et al. (2021, "LoRA: Low-Rank Adaptation of Large Language Models") keep a
pretrained kernel ``W`` (d_in, d_out) frozen and learn only a low-rank update
``A @ B`` with ``A`` (d_in, r) and ``B`` (r, d_out), r much smaller than d_in
and d_out; the layer computes ``x @ (W + (alpha / r) * A @ B)``. ``B`` starts
at zero, so training starts exactly from the pretrained model. Trained, the
update can be added into ``W`` once (:func:`merge_lora`), so the fine-tuned
model is as fast as the original.

This module is a thin layer over Keras' own LoRA, ``Dense.enable_lora``. What
Keras 3 does (checked against 3.15, ``keras/src/layers/core/dense.py``):

- ``enable_lora(rank, lora_alpha=None, a_initializer="he_uniform",
  b_initializer="zeros")`` adds float32 weights ``lora_kernel_a`` (d_in, r)
  and ``lora_kernel_b`` (r, d_out), marks the kernel (not the bias)
  non-trainable and sets ``lora_enabled``; ``lora_alpha`` defaults to the
  rank, so the scale ``lora_alpha / lora_rank`` is 1 unless you pass alpha.
- the forward pass uses ``kernel + (lora_alpha / lora_rank) * A @ B``.
- saving writes that merged kernel in place of the kernel and does not write
  ``A`` and ``B``: a saved LoRA model reloads as the merged model, with plain
  Dense layers (call :func:`enable_lora` again to go on training LoRA).
  Load such a file with ``compile=False`` (then compile afresh): the saved
  optimizer has slots for ``A`` and ``B`` that the merged model lacks, so
  Keras would warn and skip them.

What this module adds: picking the layers by name, freezing everything else
in the backbone (embeddings, LayerNorms, biases, as Hu et al. do), counting
trainable parameters, and a merge that also removes the LoRA weights.

Introduced in chapter 5.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from llmft.checks import check_int
from llmft.heads import set_trainable

# Every Dense layer of a GPT block: the fused q/k/v and output projections of
# attention, and both MLP layers. Hu et al. adapt only attention projections
# (mostly query and value); adapting the MLP too usually helps small models.
DEFAULT_TARGETS = ("qkv", "attn_out", "mlp_in", "mlp_out")


def _backbone(model):
    # A SequenceClassifier (or any model with a .backbone) or a bare backbone.
    return getattr(model, "backbone", model)


def dense_layers(model) -> dict[str, keras.layers.Dense]:
    """Every Dense layer of the backbone by path, e.g. ``"block_0/attn/qkv"``.

    Paths are made of layer names, relative to the backbone (``model.backbone``
    if the model has one, else the model itself).
    """
    found = {}

    def walk(layer, prefix):
        for sub in layer._layers:  # direct sublayers, in creation order
            path = f"{prefix}{sub.name}"
            if isinstance(sub, keras.layers.Dense):
                found[path] = sub
            walk(sub, path + "/")

    walk(_backbone(model), "")
    return found


def _matches(path, target):
    # "qkv" matches ".../qkv"; "block_0/attn/qkv" matches that one layer only.
    return path == target or path.endswith("/" + target)


def _reset_compiled_functions(model):
    # Traced train/predict functions still hold the old variables; drop them
    # so that the next fit/predict traces the changed model.
    for name in ("train_function", "test_function", "predict_function"):
        if hasattr(model, name):
            setattr(model, name, None)


def _remove_weight(layer, name):
    # What `del layer.<name>` does (untrack the variable, drop the attribute)
    # without the gc.collect() that Layer.__delattr__ runs per variable, which
    # takes ~0.2 s each once TensorFlow is loaded.
    layer._untrack_variable(getattr(layer, name))
    super(keras.layers.Layer, layer).__delattr__(name)


def enable_lora(model, rank, *, targets=DEFAULT_TARGETS, alpha=None) -> list[str]:
    """Add LoRA to the backbone's Dense layers named in ``targets``; freeze the rest of it.

    Afterwards the trainable weights are each adapted layer's ``lora_kernel_a``
    and ``lora_kernel_b`` plus whatever lies outside the backbone (a
    classifier's head). Call it on a built model, before ``compile``.

    Args:
        model: a built :class:`~llmft.heads.SequenceClassifier` (LoRA goes into
            its ``backbone``) or a built backbone such as a GPT.
        rank: the rank r of the update (>= 1).
        targets: layer names or path suffixes (``"mlp_in"``,
            ``"block_0/attn/qkv"``); each must match at least one Dense layer.
        alpha: the update is scaled by ``alpha / rank``; default ``rank``
            (scale 1, Keras' default).

    Returns:
        the paths of the layers that got LoRA, in model order.
    """
    rank = check_int("rank", rank)
    if alpha is not None and (
        isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0
    ):
        raise ValueError(f"alpha must be a positive number or None; got {alpha!r}")
    if isinstance(targets, str) or not targets or not all(isinstance(t, str) and t for t in targets):
        raise ValueError(f"targets must be a non-empty list of layer names; got {targets!r}")
    backbone = _backbone(model)
    if not backbone.built:
        raise ValueError(
            f"model must be built before enable_lora (call it on a batch of token ids); got {model!r}"
        )
    layers = dense_layers(model)
    for target in targets:
        if not any(_matches(path, target) for path in layers):
            raise ValueError(
                f"targets entry {target!r} matches no Dense layer; Dense layers: {sorted(layers)}"
            )
    chosen = {path: layer for path, layer in layers.items() if any(_matches(path, t) for t in targets)}
    for path, layer in chosen.items():  # check all before changing any
        if layer.lora_enabled:
            raise ValueError(f"LoRA is already enabled on {path!r}; call merge_lora(model) first")

    for layer in chosen.values():
        # B = 0, so the model's outputs are unchanged until training moves B.
        layer.enable_lora(rank, lora_alpha=alpha, a_initializer="he_uniform", b_initializer="zeros")

    # Freeze the whole backbone except A and B (Keras freezes only the kernel).
    lora_ids = {id(w) for layer in chosen.values() for w in (layer.lora_kernel_a, layer.lora_kernel_b)}
    set_trainable(backbone, True)  # layer flags too, e.g. after freeze_backbone()
    for weight in backbone.weights:
        weight.trainable = id(weight) in lora_ids
    _reset_compiled_functions(model)
    return list(chosen)


def merge_lora(model) -> list[str]:
    """Fold each LoRA update into its kernel and remove the LoRA weights.

    ``kernel <- kernel + (lora_alpha / lora_rank) * lora_kernel_a @ lora_kernel_b``
    (the same sum Keras' forward pass and saving use), then the layer is a plain
    Dense again. Outputs stay the same; the backbone becomes fully trainable,
    as a reloaded saved LoRA model is. Compile again before training.

    Returns:
        the paths of the merged layers (empty if no layer had LoRA).
    """
    merged = []
    for path, layer in dense_layers(model).items():
        if not layer.lora_enabled:
            continue
        if layer.quantization_mode is not None:
            raise ValueError(
                f"merge_lora supports float Dense layers only; {path!r} has "
                f"quantization_mode={layer.quantization_mode!r}"
            )
        scale = layer.lora_alpha / layer.lora_rank
        delta = scale * ops.matmul(layer.lora_kernel_a, layer.lora_kernel_b)  # (d_in, d_out)
        layer._kernel.assign(ops.cast(ops.add(layer._kernel, delta), layer._kernel.dtype))
        _remove_weight(layer, "lora_kernel_a")
        _remove_weight(layer, "lora_kernel_b")
        layer.lora_enabled = False
        layer.lora_rank = None
        layer.lora_alpha = None
        merged.append(path)
    if merged:
        if hasattr(model, "unfreeze_backbone"):
            model.unfreeze_backbone()
        else:
            set_trainable(_backbone(model), True)
        _reset_compiled_functions(model)
    return merged


def trainable_fraction(model) -> tuple[int, int, float]:
    """``(trainable_params, total_params, trainable / total)`` of a built model.

    With LoRA enabled the total includes the LoRA weights.
    """
    total = sum(math.prod(w.shape) for w in model.weights)
    if total == 0:
        raise ValueError(f"model has no weights yet (build it by calling it on a batch); got {model!r}")
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    return trainable, total, trainable / total
