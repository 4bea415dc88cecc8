"""The one scp reader and the line counter of espnet_delta.fileio; the shared --test option."""

from __future__ import annotations

import argparse

import pytest

from espnet_delta.cli import add_test_set_argument, parse_test_sets
from espnet_delta.fileio import TableError, count_lines, read_scp


def test_read_scp_keeps_file_order_and_line_numbers(tmp_path) -> None:
    scp = tmp_path / "feats.scp"
    scp.write_text("u2 a.ark:17\nu1 a.ark:5\n")
    rows = read_scp(scp)
    assert [(r.lineno, r.key, r.value) for r in rows] == [(1, "u2", "a.ark:17"), (2, "u1", "a.ark:5")]


def test_read_scp_refuses_lines_without_a_value_and_pipes_when_asked(tmp_path) -> None:
    scp = tmp_path / "wav.scp"
    scp.write_text("u1 a.wav\nu2\n")
    with pytest.raises(TableError, match=r"wav.scp:2: expected '<utt> <path>', got 'u2'"):
        read_scp(scp)
    scp.write_text("u1 a.wav\nu2 sox b.wav -t wav - |\n")
    assert read_scp(scp)[1].value == "sox b.wav -t wav - |"  # a pipe is a value like any other by default
    with pytest.raises(TableError, match=r"wav.scp:2: expected '<utt> <audio file>' \(no pipes\)"):
        read_scp(scp, value="<audio file>", allow_pipes=False)


def test_count_lines_skips_blank_lines(tmp_path) -> None:
    path = tmp_path / "feats_shape"
    path.write_text("a 3,4\n\nb 5,4\n  \nc 1,4")  # 3 rows, two blank lines, no final newline
    assert count_lines(path) == 3


def test_parse_test_sets(tmp_path) -> None:
    scp = tmp_path / "wav.scp"
    scp.write_text("u1 a.wav\n")
    parser = argparse.ArgumentParser()
    add_test_set_argument(parser)
    args = parser.parse_args(["--test", f"dev={scp}", "--test", f"test={scp}"])
    assert parse_test_sets(parser, args.test) == [("dev", scp), ("test", scp)]
    for bad in ([], ["--test", str(scp)], ["--test", f"dev={tmp_path / 'missing.scp'}"]):
        with pytest.raises(SystemExit):
            parse_test_sets(parser, parser.parse_args(bad).test)
