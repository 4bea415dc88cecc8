"""Task vector norms ||tau||_2 / ||theta_base||_2 (espnet_delta.merge.task_norms), computed by hand
on tiny tensors: an ESPnet checkpoint measured against a bare S3PRL (WavLM container) base."""

from __future__ import annotations

import math

import pytest
import torch

from espnet_delta.merge import ShapeMismatchError, from_object
from espnet_delta.merge.task_norms import task_norm, task_norm_files

PREFIX = "frontend.upstream.upstream.model."
Q = "encoder.layers.0.self_attn.q_proj.weight"
V = "encoder.layers.1.self_attn.v_proj.bias"
FC = "encoder.layers.0.fc1.weight"
MARKER = "encoder.layers.0.self_attn.relative_attention_bias.weight"  # makes the architecture WavLM


def base_state() -> dict:
    return {
        Q: torch.tensor([[3.0, 0.0], [0.0, 4.0]]),  # ||.||^2 = 25
        V: torch.tensor([0.0, 0.0]),  # 0
        FC: torch.tensor([[1.0, 2.0], [2.0, 4.0]]),  # 25
        MARKER: torch.tensor([[1.0]]),  # 1
    }


def finetuned_state() -> dict:
    """tau: Q + [[0, 0], [0, 1]] (||.||^2 = 1), V + [1, 1] (2), FC + [[1, 1], [1, 1]] (4), MARKER + 1 (1);
    the CTC head has no base counterpart, so no task vector; the int buffer is not a weight."""
    b = base_state()
    state = {
        Q: b[Q] + torch.tensor([[0.0, 0.0], [0.0, 1.0]]),
        V: b[V] + 1.0,
        FC: b[FC] + 1.0,
        MARKER: b[MARKER] + 1.0,
    }
    state = {PREFIX + k: v for k, v in state.items()}
    state["ctc.ctc_lo.weight"] = torch.full((3, 2), 100.0)
    state[PREFIX + "encoder.layers.0.num_updates"] = torch.tensor(7)
    return state


def bare_base() -> dict:
    return {"cfg": {"encoder_layers": 2}, "model": base_state()}


def test_relative_norms_by_hand():
    norm = task_norm(from_object(finetuned_state(), "ft"), from_object(bare_base(), "base"))
    # SA: the attention Q/K/V tensors Q and V: ||tau||^2 = 1 + 2, ||theta_base||^2 = 25 + 0
    assert norm.tensors["sa"] == 2
    assert norm.relative("sa") == pytest.approx(math.sqrt(3 / 25))
    # all tensors with a task vector (Q, V, FC, MARKER; not the head, not the int buffer):
    # ||tau||^2 = 1 + 2 + 4 + 1 = 8, ||theta_base||^2 = 25 + 0 + 25 + 1 = 51
    assert norm.tensors["all"] == 4
    assert norm.relative("all") == pytest.approx(math.sqrt(8 / 51))
    assert norm.tau_norm("all") == pytest.approx(math.sqrt(8))


def test_the_base_itself_has_a_zero_task_vector_and_files_load_weights_only(tmp_path):
    torch.save(bare_base(), tmp_path / "base.pt")
    torch.save({PREFIX + k: v for k, v in base_state().items()}, tmp_path / "same.pth")
    norm = task_norm_files(tmp_path / "same.pth", tmp_path / "base.pt")
    assert norm.relative("sa") == 0.0 and norm.relative("all") == 0.0


def test_a_shape_mismatch_is_refused_by_name():
    state = finetuned_state()
    state[PREFIX + FC] = torch.zeros(3, 2)
    with pytest.raises(ShapeMismatchError, match="fc1.weight"):
        task_norm(from_object(state, "ft"), from_object(bare_base(), "base"))
