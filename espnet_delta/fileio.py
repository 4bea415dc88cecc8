"""Files the stages write and read: atomic writes (a temporary sibling, then a rename, so
readers never see half a file), claim files (created once, by one process), Kaldi
``<key> <value>`` tables with file:line in their errors, and YAML configs with file names in
their errors."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, NamedTuple, Optional, Type, Union

import yaml

PathLike = Union[str, "os.PathLike[str]"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: errno values of a write that failed for want of space: a full file system, a quota,
#: the process's file-size limit (``ulimit -f``; the write gets EFBIG when SIGXFSZ is ignored)
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def is_disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS


def format_bytes(n: float) -> str:
    """``1.2 MB``-style sizes (powers of 1000) for messages."""
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def disk_full_message(path: PathLike, err: int, needed: Optional[int] = None, at_least: bool = False) -> str:
    """One line: the path, why the write failed, the space it needs and what is free."""
    import resource

    where = Path(path).resolve().parent
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    need = "" if needed is None else f"; needs {'more than ' if at_least else 'about '}{format_bytes(needed)}"
    if err == errno.EFBIG:
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        shown = "unlimited" if limit == resource.RLIM_INFINITY else format_bytes(limit)
        return f"{path}: file too large for the file-size limit (ulimit -f: {shown}){need}; raise the limit and rerun"
    why = "disk quota exceeded" if err == errno.EDQUOT else "no space left on device"
    return f"{path}: {why}{need}, {format_bytes(free)} free in {where}; free space and rerun"


class DiskFullError(OSError):
    """A write failed for want of space (:data:`DISK_FULL_ERRNOS`); ``str()`` is one line
    naming the path and the space needed. The partial file is already removed."""

    def __init__(self, err: int, path: PathLike, needed: Optional[int] = None, at_least: bool = False) -> None:
        super().__init__(err, os.strerror(err), str(path))
        self.needed = needed
        self.message = disk_full_message(path, err, needed, at_least)

    def __str__(self) -> str:
        return self.message


@contextlib.contextmanager
def atomic_path(path: PathLike, fsync: bool = False, needed: Optional[int] = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``.

    The temporary name is unique (mkstemp), so two processes writing the same file
    at once cannot mix their bytes; the last rename wins. On an exception the
    temporary file is removed and ``path`` is left as it was. The file gets the
    usual mode (0666 & ~umask), not mkstemp's 0600. ``fsync`` flushes the data to
    disk before the rename, for files whose presence marks other work as complete
    (a shard's scp), so that a crash cannot leave the marker with lost contents.
    A full disk (:data:`DISK_FULL_ERRNOS`) raises :class:`DiskFullError` naming ``path``
    and the space needed (``needed`` bytes, else more than was written).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        if not is_disk_full(e) or isinstance(e, DiskFullError):
            raise
        written = os.path.getsize(tmp) if os.path.exists(tmp) else 0
        raise DiskFullError(e.errno, path, needed if needed is not None else written, at_least=needed is None) from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: PathLike, text: str, fsync: bool = False) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    data = text.encode("utf-8")
    with atomic_path(path, fsync, needed=len(data)) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def torch_save_atomic(obj: Any, path: PathLike) -> Path:
    """``torch.save`` through a buffer, then an atomic write. Saved to a path, the
    archive's internal record name is the file's name, so saving to a temporary sibling
    would make equal weights differ byte-wise between runs."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    path = Path(path)
    with atomic_path(path, needed=buffer.getbuffer().nbytes) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return path


def write_lines_atomic(path: PathLike, lines: Iterable[str], fsync: bool = False) -> Path:
    """Write UTF-8 ``lines`` (each ending in a newline) to ``path`` atomically."""
    with atomic_path(path, fsync) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(lines)
    return Path(path)


class TableError(ValueError):
    """A Kaldi table (``text``, ``wav.scp``, ``utt2spk``, ...) is malformed.

    ``path`` and ``line`` (1-based, ``None`` when not tied to a line) name the
    offending spot; both are part of the message.
    """

    def __init__(self, message: str, path: Optional[PathLike] = None, line: Optional[int] = None) -> None:
        self.path = None if path is None else str(path)
        self.line = line
        where = "" if path is None else (f"{path}:{line}: " if line is not None else f"{path}: ")
        super().__init__(where + message)


class TableRow(NamedTuple):
    lineno: int
    key: str
    value: str


UTF8_BOM = "\ufeff"


#: The dir of the claim files through which the local back-end's processes share one item list
#: (``espnet_delta.jobs local --task_per_item``); unset: each process does all the items it was given.
CLAIM_DIR_ENV = "ESPNET_DELTA_CLAIM_DIR"


def claim(item: str) -> bool:
    """True when this process may do ``item``: no claim dir is set, or this call created the
    item's claim file; False when another process of the stage claimed it first.

    Static groups leave a core idle behind the longer group; with claims every process walks
    the whole list (largest jobs first) and takes the next unclaimed item: greedy list
    scheduling. ``O_EXCL`` creation is atomic (local file systems, NFS v3+); the back-end makes
    the dir afresh for every run, so an interrupted run's claims never block its rerun.
    """
    claim_dir = os.environ.get(CLAIM_DIR_ENV)
    if not claim_dir:
        return True
    path = Path(claim_dir) / item.replace("%", "%25").replace("/", "%2F")
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f"{item}\tpid {os.getpid()}\n")
    return True


def read_text_file(path: PathLike, what: str = "file", error: Type[TableError] = TableError) -> str:
    """The UTF-8 text of ``path`` without a leading byte-order mark; a missing file (or a
    folder) and non-UTF-8 bytes raise ``error`` naming the file and the line of the bad byte."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found" + (" (it is a folder)" if path.is_dir() else ""), path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        lineno = data.count(b"\n", 0, e.start) + 1
        raise error(f"{what} is not valid UTF-8 (byte {data[e.start]:#04x}; Latin-1 or another encoding?)",
                    path, lineno) from None
    return text[1:] if text.startswith(UTF8_BOM) else text


def read_table(
    path: PathLike,
    *,
    what: str = "table",
    skip_blank: bool = False,
    error: Type[TableError] = TableError,
) -> List[TableRow]:
    """The ``<key> <value>`` lines of a Kaldi table, in file order.

    The key is the first whitespace-separated field, the value the rest of the line
    with surrounding whitespace stripped (possibly empty), as ESPnet's
    ``read_2columns_text`` splits them; unlike it, errors name the file and line and
    the rows keep their line numbers. Files edited elsewhere are read as meant: a
    leading UTF-8 byte-order mark is skipped, CRLF line ends and tabs are whitespace.
    A repeated key, a blank line (unless ``skip_blank``), a missing file, non-UTF-8
    bytes, NUL bytes (the zero-filled tail a crash can leave) or a bare carriage return
    inside a line (CR-only line ends, which would join lines silently) raise ``error`` (a :class:`TableError` subclass, so that
    each caller raises its own type).
    """
    path = Path(path)
    text = read_text_file(path, what, error)
    rows: List[TableRow] = []
    first: Dict[str, int] = {}
    lines = text.split("\n")  # not splitlines(): a transcript may hold U+2028 and the like
    if lines[-1] == "":
        lines.pop()
    for lineno, line in enumerate(lines, 1):
        if "\r" in line.strip():
            raise error(f"carriage return inside a line of {what} (CR-only line ends?)", path, lineno)
        if "\x00" in line:
            raise error(f"NUL bytes in {what} (a file cut short by a crash, or not text?)", path, lineno)
        parts = line.split(maxsplit=1)
        if not parts:
            if skip_blank:
                continue
            raise error(f"empty line in {what}", path, lineno)
        key, value = parts[0], (parts[1].strip() if len(parts) > 1 else "")
        if key in first:
            raise error(f"duplicate id {key!r} in {what} (first on line {first[key]})", path, lineno)
        first[key] = lineno
        rows.append(TableRow(lineno, key, value))
    return rows


def read_scp(
    path: PathLike,
    *,
    what: str = "scp",
    value: str = "<path>",
    allow_pipes: bool = True,
    skip_blank: bool = False,
) -> List[TableRow]:
    """The rows of a ``wav.scp`` or ``feats.scp`` (every line ``<utt> <value>``), in file
    order: the one scp reader of the package (decoding, gate statistics, feature extraction).

    A line without a value, or (unless ``allow_pipes``) a Kaldi pipe ending in ``|``, raises
    :class:`TableError` naming the file and line; the rest as :func:`read_table`.
    """
    rows = read_table(path, what=what, skip_blank=skip_blank)
    for row in rows:
        if not row.value or (not allow_pipes and row.value.endswith("|")):
            got = f"{row.key} {row.value}".strip()
            hint = "" if allow_pipes else " (no pipes)"
            raise TableError(f"expected '<utt> {value}'{hint}, got {got!r}", path, row.lineno)
    return rows


def count_lines(path: PathLike) -> int:
    """Non-blank lines of a text file (utterances of a ``feats.scp`` or shape file); a missing
    file raises FileNotFoundError, bytes that are not UTF-8 :class:`TableError` naming the line."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: not found")
    return sum(1 for line in read_text_file(path).split("\n") if line.strip())


def yaml_problem(e: "yaml.YAMLError") -> str:
    """A YAML error on one line (PyYAML's messages span several): line, column, problem."""
    mark = getattr(e, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(e, "problem", None) or str(e)
    context = getattr(e, "context", None)
    text = f"{where}{problem}" + (f" ({context})" if context else "")
    return " ".join(text.split())


def load_yaml(path: Path) -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config not found: {path}" + (" (it is a folder)" if path.is_dir() else ""))
    text = read_text_file(path, "config")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: invalid YAML: {yaml_problem(e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return data


def set_dotted(config: Dict[str, Any], key: str, value: Any) -> None:
    """``set_dotted(c, "a.b.c", v)`` sets ``c["a"]["b"]["c"] = v``, creating mappings."""
    parts = key.split(".")
    node = config
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ValueError(f"cannot set {key}: {part} is not a mapping")
        node = child
    node[parts[-1]] = value


def write_yaml_atomic(data: Dict[str, Any], out: Path) -> Path:
    return write_text_atomic(out, yaml.safe_dump(data, sort_keys=False))
