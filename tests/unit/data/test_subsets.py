"""Nested duration subsets: reproducible, nested, bounded, short train skipped."""

from __future__ import annotations

import logging
import random

import pytest

from espnet_delta.data.kaldi_dir import Utterance
from espnet_delta.data.subsets import nested_subsets, parse_hours, subset_name


def make_train(n: int = 600, seed: int = 1) -> list[Utterance]:
    rng = random.Random(seed)
    return [Utterance(f"spk{k % 7}-u{k:04d}", f"spk{k % 7}", f"/x/{k}.flac", "A B C", round(rng.uniform(1.0, 15.0), 3)) for k in range(n)]


HOURS = (0.1, 0.5, 1.0)  # train is ~1.3 h


def ids(utts: list[Utterance]) -> list[str]:
    return [u.utt_id for u in utts]


def test_same_seed_same_ids_regardless_of_input_order() -> None:
    train = make_train()
    a = nested_subsets(train, HOURS, seed=3)
    b = nested_subsets(list(reversed(train)), HOURS, seed=3)
    assert {h: ids(u) for h, u in a.items()} == {h: ids(u) for h, u in b.items()}


def test_different_seed_differs() -> None:
    train = make_train()
    assert ids(nested_subsets(train, HOURS, seed=0)[0.1]) != ids(nested_subsets(train, HOURS, seed=1)[0.1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nested_and_duration_bounds(seed: int) -> None:
    train = make_train()
    longest = max(u.duration for u in train)
    subsets = nested_subsets(train, HOURS, seed=seed)
    assert sorted(subsets) == list(HOURS)
    previous: set[str] = set()
    for hours in HOURS:
        chosen = set(ids(subsets[hours]))
        assert previous <= chosen
        total = sum(u.duration for u in subsets[hours])
        assert hours * 3600 <= total < hours * 3600 + longest
        assert ids(subsets[hours]) == sorted(chosen)  # written sorted by id
        previous = chosen


def test_target_larger_than_train_is_skipped_with_warning(caplog) -> None:
    train = make_train(20)  # ~3 min
    caplog.set_level(logging.WARNING)
    subsets = nested_subsets(train, (0.01, 10.0), seed=0)
    assert list(subsets) == [0.01]
    assert "skipping train_10h" in caplog.text


def test_whole_train_is_a_valid_target() -> None:
    train = make_train(10)
    total_h = sum(u.duration for u in train) / 3600
    assert len(nested_subsets(train, (total_h,), seed=0)[total_h]) == 10


def test_names_and_parsing() -> None:
    assert [subset_name(h) for h in (1, 5, 10, 0.1, 0.2, 0.5, 2 / 3600)] == [
        "train_1h", "train_5h", "train_10h", "train_6min", "train_12min", "train_30min", "train_2s"
    ]
    assert [subset_name(h) for h in (1.5, 0.002, 1e-4)] == ["train_1p5h", "train_7p2s", "train_0p36s"]
    assert parse_hours("1,5,10") == [1.0, 5.0, 10.0]
    assert parse_hours(" 0.1, 0.2 ") == [0.1, 0.2]
    assert parse_hours("") == []
    with pytest.raises(ValueError):
        parse_hours("1,-2")
