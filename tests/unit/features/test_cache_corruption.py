"""A damaged feature cache is found before anything reads it, named in one line, and only the
damaged shard is extracted again (issue 24, part 3).

Each test damages a copy of one clean 2-shard extraction, reruns the extraction and checks:
the warning names the damaged file, only the damaged shard's utterances are computed again,
the other shard's files are untouched, and the cache ends byte-equal to the clean one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from conftest import first_utterances
from espnet_delta.features import extract as feature_extract
from espnet_delta.features.extract import extract_features

#: one utterance per batch: a redone shard is byte-identical to the clean one
BATCH = dict(batch_seconds=60.0, batch_size=1, progress=False, device="cpu")
N_UTTS = 2  # round-robin over 2 shards: one utterance each


@pytest.fixture(scope="module")
def data(mini_data, tmp_path_factory):
    return first_utterances(mini_data, tmp_path_factory.mktemp("data2") / "train", N_UTTS)


@pytest.fixture(scope="module")
def clean(cache_conf, cache_extractor, data, tmp_path_factory):
    """A clean extraction into a relative out_dir (as the recipes do), so that a copy elsewhere
    is a cache of its own."""
    root, cwd = tmp_path_factory.mktemp("clean"), os.getcwd()
    os.chdir(root)
    try:
        result = extract_features(cache_conf, data, Path("feats"), num_shards=2, extractor=cache_extractor, **BATCH)
    finally:
        os.chdir(cwd)
    assert result.written == [1, 2] and result.merged
    return root / "feats"


def contents(out: Path) -> dict:
    """Every file's bytes; in a shard's checksum record the ark's modification time is left out
    (a redone shard is written later)."""
    files = {}
    for p in sorted(out.iterdir()):
        if not p.is_file() or p.name.startswith(".feats."):
            continue
        if p.suffix == ".sum":
            record = json.loads(p.read_text())
            del record["ark"]["mtime_ns"]
            files[p.name] = record
        else:
            files[p.name] = p.read_bytes()
    return files


def shard_files(out: Path, k: int) -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(out.glob(f"feats.{k}.*"))}


@pytest.fixture
def damaged(clean, tmp_path, monkeypatch):
    """A copy of the clean cache to damage, as ``feats`` in the current directory."""
    shutil.copytree(clean, tmp_path / "feats")  # copy2: the arks keep their modification times
    monkeypatch.chdir(tmp_path)
    return Path("feats")


def rerun(cache_conf, cache_extractor, data, out, monkeypatch, caplog, **kwargs):
    """Extract again; return (utterances computed, warning lines)."""
    real, calls = feature_extract.write_matrix, []
    monkeypatch.setattr(feature_extract, "write_matrix", lambda fd, utt, m: calls.append(utt) or real(fd, utt, m))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        result = extract_features(cache_conf, data, out, num_shards=2, extractor=cache_extractor, **BATCH, **kwargs)
    assert result.merged
    return calls, [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def utts_of_shard(out: Path, k: int) -> list:
    return [line.split()[0] for line in (out / f"feats.{k}.shape").read_text().splitlines()]


def test_a_clean_cache_is_reused_untouched(cache_conf, cache_extractor, data, clean, damaged, monkeypatch, caplog):
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in damaged.iterdir() if p.is_file()}
    calls, warnings = rerun(cache_conf, cache_extractor, data, damaged, monkeypatch, caplog)
    assert calls == [] and warnings == []
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in damaged.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("damage", ["truncated", "byte_flipped"])
def test_a_damaged_ark_is_extracted_again_alone(cache_conf, cache_extractor, data, clean, damaged, monkeypatch,
                                                caplog, damage):
    ark = damaged / "feats.2.ark"
    size = ark.stat().st_size
    if damage == "truncated":  # e.g. a copy that ran out of space
        os.truncate(ark, size - 100)
    else:  # one byte in the middle of the float data
        with open(ark, "r+b") as f:
            f.seek(size // 2)
            byte = f.read(1)
            f.seek(size // 2)
            f.write(bytes([byte[0] ^ 0xFF]))
    other = shard_files(damaged, 1)
    calls, warnings = rerun(cache_conf, cache_extractor, data, damaged, monkeypatch, caplog)
    assert len(warnings) == 1 and str(ark) in warnings[0] and "\n" not in warnings[0]
    assert ("truncated" if damage == "truncated" else "contents changed") in warnings[0]
    assert sorted(calls) == utts_of_shard(clean, 2)  # only shard 2's utterances computed again
    assert shard_files(damaged, 1) == other  # shard 1 not rewritten (bytes and times)
    assert contents(damaged) == contents(clean)


def test_a_byte_flip_that_kept_the_time_needs_the_full_check(cache_conf, cache_extractor, data, clean, damaged,
                                                             monkeypatch,
                                                             caplog):
    """Media corruption keeps the modification time: the default check (sizes, and CRC-32 of
    arks whose time changed) passes it; ``full_check`` finds it."""
    ark = damaged / "feats.1.ark"
    st = ark.stat()
    with open(ark, "r+b") as f:
        f.seek(st.st_size - 1)
        last = f.read(1)
        f.seek(st.st_size - 1)
        f.write(bytes([last[0] ^ 0x01]))
    os.utime(ark, ns=(st.st_atime_ns, st.st_mtime_ns))
    calls, warnings = rerun(cache_conf, cache_extractor, data, damaged, monkeypatch, caplog)
    assert calls == [] and warnings == []
    calls, warnings = rerun(cache_conf, cache_extractor, data, damaged, monkeypatch, caplog, full_check=True)
    assert len(warnings) == 1 and str(ark) in warnings[0]
    assert sorted(calls) == utts_of_shard(clean, 1)
    assert contents(damaged) == contents(clean)


def test_feats_scp_pointing_past_the_end_is_merged_again(cache_conf, cache_extractor, data, clean, damaged, monkeypatch,
                                                           caplog):
    scp = damaged / "feats.scp"
    lines = scp.read_text().splitlines()
    utt, value = lines[1].split()
    ark, offset = value.rsplit(":", 1)
    lines[1] = f"{utt} {ark}:{Path(ark).stat().st_size + 10}"
    scp.write_text("\n".join(lines) + "\n")
    shards = {k: shard_files(damaged, k) for k in (1, 2)}
    calls, warnings = rerun(cache_conf, cache_extractor, data, damaged, monkeypatch, caplog)
    assert len(warnings) == 1 and f"{scp}:2:" in warnings[0] and "past the end" in warnings[0]
    assert calls == [] and {k: shard_files(damaged, k) for k in (1, 2)} == shards  # no shard redone
    assert contents(damaged) == contents(clean)


def test_a_shard_scp_pointing_past_the_end_redoes_that_shard(cache_conf, cache_extractor, data, clean, damaged,
                                                             monkeypatch,
                                                              caplog):
    scp = damaged / "feats.1.scp"
    utt, value = scp.read_text().splitlines()[0].split()
    scp.write_text(scp.read_text().replace(value, value.rsplit(":", 1)[0] + ":99999999", 1))
    calls, warnings = rerun(cache_conf, cache_extractor, data, damaged, monkeypatch, caplog)
    assert len(warnings) == 1 and str(scp) in warnings[0]
    assert sorted(calls) == utts_of_shard(clean, 1)
    assert contents(damaged) == contents(clean)


def test_a_hand_edited_layout_is_written_again(cache_conf, cache_extractor, data, clean, damaged, monkeypatch, caplog):
    """Swapping two streams' columns by hand would make training read E_ft as E_delta."""
    path = damaged / "layout.json"
    layout = json.loads(path.read_text())
    a, b = layout["streams"][1], layout["streams"][2]
    a["name"], b["name"] = b["name"], a["name"]
    path.write_text(json.dumps(layout, indent=2) + "\n")
    shards = {k: shard_files(damaged, k) for k in (1, 2)}
    calls, warnings = rerun(cache_conf, cache_extractor, data, damaged, monkeypatch, caplog)
    assert len(warnings) == 1 and str(path) in warnings[0] and "changed since extraction" in warnings[0]
    assert calls == [] and {k: shard_files(damaged, k) for k in (1, 2)} == shards
    assert contents(damaged) == contents(clean)


def test_a_cache_without_checksums_is_read_once_and_recorded(cache_conf, cache_extractor, data, clean, damaged,
                                                             monkeypatch,
                                                             caplog):
    """Caches extracted before checksums: every matrix is loaded once and checked against the
    shape file, then the record is written; a truncated ark is still found."""
    for sum_file in damaged.glob("feats.*.sum"):
        sum_file.unlink()
    os.truncate(damaged / "feats.2.ark", (damaged / "feats.2.ark").stat().st_size - 100)
    calls, warnings = rerun(cache_conf, cache_extractor, data, damaged, monkeypatch, caplog)
    assert len(warnings) == 1 and "feats.2.ark" in warnings[0]
    assert sorted(calls) == utts_of_shard(clean, 2)
    assert any("before checksums were recorded" in r.getMessage() and "feats.1.ark" in r.getMessage()
               for r in caplog.records)
    assert contents(damaged) == contents(clean)


def test_the_check_before_training_stops_on_a_truncated_shard_and_passes_a_clean_cache(
        cache_conf, cache_extractor, data, clean, damaged, monkeypatch, caplog):
    """Stage 7 runs the extraction with ``merge_only`` before any fusion training reads the cache:
    nothing is computed; a clean cache passes as it is, a truncated ark stops the stage with
    the file named, and stage 6 then redoes that shard alone."""
    computed = []
    real = feature_extract.write_matrix
    monkeypatch.setattr(feature_extract, "write_matrix", lambda fd, utt, m: computed.append(utt) or real(fd, utt, m))
    assert extract_features(cache_conf, data, damaged, num_shards=2, extractor=cache_extractor,
                            merge_only=True, **BATCH).merged
    ark = damaged / "feats.1.ark"
    os.truncate(ark, ark.stat().st_size - 8)
    caplog.clear()
    with caplog.at_level(logging.WARNING), pytest.raises(RuntimeError, match=r"shard\(s\) \[1\] of 2 are not complete"):
        extract_features(cache_conf, data, damaged, num_shards=2, extractor=cache_extractor, merge_only=True, **BATCH)
    assert any(str(ark) in r.getMessage() for r in caplog.records)
    assert computed == [] and not (damaged / "feats.scp").exists()  # no merged table left for a training to read
    assert extract_features(cache_conf, data, damaged, num_shards=2, extractor=cache_extractor,
                            **BATCH).merged  # stage 6 again
    assert sorted(computed) == utts_of_shard(clean, 1)
    assert contents(damaged) == contents(clean)
