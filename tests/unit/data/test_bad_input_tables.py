"""Kaldi tables as a corpus edited by hand for years leaves them (issue 24, part 7).

Every table reader goes through :func:`espnet_delta.fileio.read_table`; each case below is
either read as meant (a BOM, CRLF, trailing blanks) or refused with one error naming the
file and line. Cases already covered elsewhere (tabs between columns, duplicate ids, blank
lines, an id alone, a missing file: ``test_kaldi_io.py``) are not repeated.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from espnet_delta.data.kaldi_dir import DataDirError, Utterance, validate_data_dir, write_data_dir
from espnet_delta.data.myst import read_whisper_hyps
from espnet_delta.fileio import TableError, TableRow, count_lines, read_table
from espnet_delta.scoring.inputs import ScoringInputError, pair_utterances

BOM = b"\xef\xbb\xbf"

# (case, file bytes, rows read as (key, value))
READ_AS_MEANT = [
    ("crlf", b"a-1 HELLO WORLD\r\na-2 BYE\r\n", [("a-1", "HELLO WORLD"), ("a-2", "BYE")]),
    ("bom", BOM + b"a-1 HELLO\na-2 BYE\n", [("a-1", "HELLO"), ("a-2", "BYE")]),
    ("bom_and_crlf", BOM + b"a-1 HELLO\r\na-2\r\n", [("a-1", "HELLO"), ("a-2", "")]),
    ("trailing_blanks", b"a-1 HELLO \t \na-2 BYE   \n", [("a-1", "HELLO"), ("a-2", "BYE")]),
    ("no_final_newline", b"a-1 HELLO\na-2 BYE", [("a-1", "HELLO"), ("a-2", "BYE")]),
    ("non_ascii", "a-1 CAFÉ NAÏVE\n".encode(), [("a-1", "CAFÉ NAÏVE")]),
    ("unsorted_kept_in_file_order", b"b-1 X\na-1 Y\n", [("b-1", "X"), ("a-1", "Y")]),
]


@pytest.mark.parametrize(("case", "data", "rows"), READ_AS_MEANT, ids=[c[0] for c in READ_AS_MEANT])
def test_tables_edited_elsewhere_are_read_as_meant(tmp_path, case, data, rows) -> None:
    path = tmp_path / "text"
    path.write_bytes(data)
    assert [(r.key, r.value) for r in read_table(path)] == rows


# (case, file bytes, line named in the error, words of the message)
REFUSED = [
    ("latin1_line_3", b"a-1 X\na-2 Y\na-3 CAF\xc9\n", 3, "not valid UTF-8 (byte 0xc9"),
    ("cp1252_quote", b"a-1 DON\x92T\n", 1, "not valid UTF-8"),
    ("cr_only_line_ends", b"a-1 HELLO\ra-2 BYE\r", 1, "carriage return inside a line"),
    ("nul_tail_after_crash", b"a-1 HELLO\n\x00\x00\x00\x00\n", 2, "NUL bytes"),
    ("whitespace_only_line", b"a-1 HELLO\n \t \na-2 BYE\n", 2, "empty line"),
    ("duplicate_same_content", b"a-1 HELLO\na-1 HELLO\n", 2, "duplicate id 'a-1'"),
    ("duplicate_after_bom", BOM + b"a-1 HELLO\na-1 BYE\n", 2, "duplicate id 'a-1'"),
]


@pytest.mark.parametrize(("case", "data", "line", "message"), REFUSED, ids=[c[0] for c in REFUSED])
def test_broken_tables_are_one_error_naming_file_and_line(tmp_path, case, data, line, message) -> None:
    path = tmp_path / "text"
    path.write_bytes(data)
    with pytest.raises(TableError) as info:
        read_table(path, what="text")
    assert (info.value.path, info.value.line) == (str(path), line)
    assert str(info.value).startswith(f"{path}:{line}: ") and message in str(info.value)
    assert "\n" not in str(info.value)


def test_a_folder_where_a_table_should_be(tmp_path) -> None:
    (tmp_path / "text").mkdir()
    with pytest.raises(TableError, match=r"text: text not found \(it is a folder\)"):
        read_table(tmp_path / "text", what="text")


def test_count_lines_refuses_latin1_naming_the_file(tmp_path) -> None:
    path = tmp_path / "shape"
    path.write_bytes(b"a 1\n\nb 2\nc\xe9 3\n")
    with pytest.raises(TableError, match=r"shape:4: .*not valid UTF-8"):
        count_lines(path)
    path.write_bytes(BOM + b"a 1\r\n\r\nb 2\r\n")
    assert count_lines(path) == 2


# ---------------------------------------------------------------- data dirs
def _data_dir(tmp_path: Path) -> Path:
    return write_data_dir(tmp_path / "d", [Utterance(f"s-{k}", "s", f"/a/{k}.wav", "HI THERE", 1.0) for k in (1, 2, 3)])


def test_data_dir_converted_to_crlf_with_bom_stays_valid(tmp_path) -> None:
    d = _data_dir(tmp_path)
    for name in ("wav.scp", "text", "utt2spk", "spk2utt", "utt2dur"):
        (d / name).write_bytes(BOM + (d / name).read_bytes().replace(b"\n", b"\r\n"))
    assert validate_data_dir(d) == 3  # three utterances written above


@pytest.mark.parametrize(
    ("file", "data", "line", "message"),
    [
        ("text", b"s-1 HI\ns-3 HO\n", 2, "has no entry in text"),  # s-2 in utt2spk only (line 2)
        ("wav.scp", b"s-1 /a/1.wav\ns-2 /a/2.wav\ns-3 /a/3.wav\ns-4 /a/4.wav\n", 4, "has no entry in utt2spk"),
        ("utt2dur", b"s-1 1.0\ns-2 abc\ns-3 1.0\n", 2, "bad duration"),
    ],
    ids=["id_in_utt2spk_not_in_text", "id_in_wav_scp_not_in_utt2spk", "duration_not_a_number"],
)
def test_data_dir_tables_that_disagree(tmp_path, file, data, line, message) -> None:
    d = _data_dir(tmp_path)
    (d / file).write_bytes(data)
    with pytest.raises(DataDirError, match=message) as info:
        validate_data_dir(d)
    assert info.value.line == line and Path(info.value.path).parent == d


# ---------------------------------------------------------------- Whisper hypotheses
def test_whisper_hyps_with_bom_crlf_and_an_empty_hypothesis(tmp_path) -> None:
    path = tmp_path / "hyp.tsv"
    path.write_bytes(BOM + b"s-1\tthe cat sat\r\ns-2\t\r\n\r\ns-3 spaces not tab\r\n")
    assert read_whisper_hyps(path) == {"s-1": "the cat sat", "s-2": "", "s-3": "spaces not tab"}


def test_whisper_hyps_with_a_third_column_is_an_error(tmp_path) -> None:
    path = tmp_path / "hyp.tsv"
    path.write_text("s-1\tthe cat sat\n" "s-2\tthe dog\t-0.25\n", encoding="utf-8")
    with pytest.raises(TableError, match=r"hyp.tsv:2: expected 'utt_id<TAB>hypothesis'"):
        read_whisper_hyps(path)


# ---------------------------------------------------------------- scoring inputs
def test_scoring_reads_a_bom_crlf_reference_against_a_plain_hypothesis(tmp_path) -> None:
    ref, hyp = tmp_path / "ref", tmp_path / "hyp"
    ref.write_bytes(BOM + b"s-1 THE CAT\r\ns-2 A DOG\r\n")
    hyp.write_bytes(b"s-1 THE CAT\ns-2 A FROG\n")
    utts = pair_utterances(ref, hyp)
    assert [(u.utt_id, u.ops) for u in utts] == [("s-1", "CC"), ("s-2", "CS")]  # one substitution


@pytest.mark.parametrize(
    ("ref", "hyp", "spk", "named", "message"),
    [
        (b"s-1 A\n", b"s-1 A\ns-9 B\n", None, "hyp", "have no reference"),
        (b"s-1 A\ns-2 B\n", b"s-1 A\n", b"s-1 s\n", "utt2spk", "no speaker for utterance 's-2'"),
        (b"s-1 A\n", b"s-1 CAF\xc9\n", None, "hyp", "not valid UTF-8"),
        (b"", b"", None, "ref", "no utterances"),
    ],
    ids=["hyp_without_ref", "utt2spk_missing_a_speaker", "latin1_hyp", "empty_ref"],
)
def test_scoring_input_errors_name_the_file(tmp_path, ref, hyp, spk, named, message) -> None:
    files = {"ref": ref, "hyp": hyp, "utt2spk": spk}
    for name, data in files.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
    with pytest.raises(ScoringInputError, match=message) as info:
        pair_utterances(tmp_path / "ref", tmp_path / "hyp", tmp_path / "utt2spk" if spk is not None else None)
    assert str(info.value).startswith(str(tmp_path / named))


def test_table_row_keeps_line_numbers_after_a_bom(tmp_path) -> None:
    path = tmp_path / "t"
    path.write_bytes(BOM + b"a-1 X\n\na-2 Y\n")
    assert read_table(path, skip_blank=True) == [TableRow(1, "a-1", "X"), TableRow(3, "a-2", "Y")]


def test_a_data_dir_with_a_segments_file_is_refused(tmp_path) -> None:
    d = _data_dir(tmp_path)
    (d / "segments").write_text("s-1 rec-1 0.00 1.00\ns-2 rec-1 0.50 99.0\n")  # the second is past the end
    with pytest.raises(DataDirError, match=r"segments: segments files are not supported") as info:
        validate_data_dir(d)
    assert info.value.path == str(d / "segments")


# ---------------------------------------------------------------- token lists brought from elsewhere
@pytest.mark.parametrize(
    ("data", "line", "message"),
    [
        (b"<blank>\n<unk>\nA\nB\nA\n<sos/eos>\n", 5, "token 'A' repeated (first on line 3)"),
        (BOM + b"<blank>\n<unk>\nA\n", 1, "byte-order mark"),
        (b"<blank>\n<unk>\n\nA\n", 3, "empty token"),
        (b"<blank>\n<unk>\n\xc9\n", 3, "not valid UTF-8"),
        (b"<unk>\n<blank>\nA\n", None, "starts with <blank>"),
    ],
    ids=["duplicate_token", "bom", "blank_line", "latin1", "blank_not_first"],
)
def test_bad_token_lists_name_file_and_line(tmp_path, data, line, message) -> None:
    from espnet_delta.data.tokens import read_token_list

    path = tmp_path / "tokens.txt"
    path.write_bytes(data)
    with pytest.raises(TableError, match=re.escape(message)) as info:
        read_token_list(path)
    assert (info.value.path, info.value.line) == (str(path), line)


def test_a_crlf_token_list_reads_as_espnet_reads_it(tmp_path) -> None:
    from espnet_delta.data.tokens import read_token_list

    path = tmp_path / "tokens.txt"
    path.write_bytes(b"<blank>\r\n<unk>\r\nA\r\n<space>\r\n<sos/eos>\r\n")
    assert read_token_list(path) == ["<blank>", "<unk>", "A", "<space>", "<sos/eos>"]
