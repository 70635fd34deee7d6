"""The run manifest: one row per input of a ``predict`` run, in Parquet or JSON Lines.

Columns (:data:`COLUMNS`): ``input`` (path or URL), ``outputs`` (list of paths or URLs written),
``height``, ``width`` (pixels, as displayed), ``depth_min``, ``depth_median``, ``depth_max`` (metres, valid
pixels), ``seconds``, ``status`` (``done``, ``skipped``, ``failed``, ``out_of_memory``) and ``error``; a
value that does not apply is null. Rows follow the report's order (input order, patterns that matched
nothing first).

The format follows the file's suffix: ``.parquet`` (needs ``pyarrow``: ``pip install
'clip2depth[manifest]'``) or ``.jsonl``. A manifest is written whole at the end of a run, atomically (or
as one upload to storage). When a run with ``skip_existing`` finds the manifest of an earlier run there,
its skipped inputs keep the sizes and depths that run recorded (:func:`carry_over`).
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from clip2depth.errors import ConfigError
from clip2depth.inference.plan import STATUSES, InputRecord
from clip2depth.inference.storage import Location, join, location, name_of, read_bytes, write_bytes
from clip2depth.io.outputs import writable_folder

logger = logging.getLogger(__name__)

COLUMNS = ("input", "outputs", "height", "width", "depth_min", "depth_median", "depth_max", "seconds", "status",
           "error")  # fmt: skip
"""The manifest's columns, in order."""

MANIFEST_NAME = "manifest.parquet"
"""The manifest's name in the output folder where a run writes one by default (torchrun, Ray)."""

SUFFIXES = (".parquet", ".jsonl")

_CARRIED = ("outputs", "height", "width", "depth_min", "depth_median", "depth_max")


def default_manifest(out_dir: Location) -> Location:
    """``OUT/manifest.parquet``."""
    return join(out_dir, MANIFEST_NAME)


def check_manifest_path(path: Location) -> None:
    """Fail before a run starts when ``path`` has no manifest suffix, is Parquet without ``pyarrow``, or is a
    local path that cannot be written (a folder, or below a file or a folder without write permission).

    Raises:
        ConfigError: naming the file and what to do (``manifest=...``).
    """
    name = name_of(path)
    if isinstance(path, Path):
        if path.is_dir():
            raise ConfigError(f"manifest={path} is a folder; name a file in it (e.g. {path / MANIFEST_NAME})",
                              params=("manifest",))  # fmt: skip
        writable_folder(path.parent, "the manifest's folder", create=False)
    if not name.lower().endswith(SUFFIXES):
        raise ConfigError(f"manifest={path} must end in .parquet or .jsonl (the format follows the suffix)",
                          params=("manifest",))  # fmt: skip
    if name.lower().endswith(".parquet"):
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ConfigError(f"manifest={path}: Parquet needs pyarrow (pip install 'clip2depth[manifest]'); or "
                              "name a .jsonl manifest", params=("manifest",)) from None  # fmt: skip


def record_row(record: InputRecord) -> dict[str, Any]:
    """One manifest row: :data:`COLUMNS` from an :class:`~clip2depth.inference.plan.InputRecord`."""
    return {"input": record.input, "outputs": [str(p) for p in record.outputs], "height": record.height,
            "width": record.width, "depth_min": record.depth_min, "depth_median": record.depth_median,
            "depth_max": record.depth_max, "seconds": record.seconds, "status": record.status,
            "error": record.error}  # fmt: skip


def row_record(row: dict[str, Any], index: int = -1) -> InputRecord:
    """The :class:`~clip2depth.inference.plan.InputRecord` of a manifest row (the inverse of :func:`record_row`)."""
    return InputRecord(index, row["input"], row["status"], outputs=tuple(map(location, row.get("outputs") or ())),
                       height=row.get("height"), width=row.get("width"), depth_min=row.get("depth_min"),
                       depth_median=row.get("depth_median"), depth_max=row.get("depth_max"),
                       seconds=row.get("seconds"), error=row.get("error"))  # fmt: skip


def encode(records: Iterable[InputRecord], name: str) -> bytes:
    """The bytes of a manifest file named ``name`` (its suffix picks the format)."""
    rows = [record_row(r) for r in records]
    if not name.lower().endswith(".parquet"):
        return "".join(json.dumps(row, allow_nan=False) + "\n" for row in rows).encode()
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("input", pa.string()), ("outputs", pa.list_(pa.string())), ("height", pa.int32()),
                        ("width", pa.int32()), ("depth_min", pa.float64()), ("depth_median", pa.float64()),
                        ("depth_max", pa.float64()), ("seconds", pa.float64()), ("status", pa.string()),
                        ("error", pa.string())])  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=schema)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def decode(data: bytes, name: str) -> list[dict[str, Any]]:
    """The rows of a manifest file's bytes (ValueError when they are not a manifest)."""
    if name.lower().endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(pa.BufferReader(data)).to_pylist()
        except pa.ArrowException as exc:
            raise ValueError(str(exc)) from exc
    else:
        rows = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
    for row in rows:
        if not isinstance(row, dict) or not {"input", "status"} <= set(row) or row["status"] not in STATUSES:
            raise ValueError("a row without input and a known status")
    return rows


def write_manifest(path: Location, records: Sequence[InputRecord]) -> None:
    """Write the manifest of ``records`` to ``path`` (a local file, atomically, or an object)."""
    write_bytes(path, encode(records, name_of(path)))


def read_manifest(path: Location) -> list[dict[str, Any]] | None:
    """The rows of the manifest at ``path``; None when there is none, or it is unreadable (with a warning)."""
    data = read_bytes(path)
    if data is None:
        return None
    try:
        return decode(data, name_of(path))
    except (ValueError, UnicodeDecodeError) as exc:
        logger.warning("%s is not a readable manifest (%s); its rows are not carried over", path, exc)
        return None


def carry_over(records: Sequence[InputRecord], previous: Sequence[dict[str, Any]]) -> list[InputRecord]:
    """``records`` with each ``skipped`` input's outputs, size and depths taken from an earlier run's row.

    The earlier row counts only when that run finished the input (status ``done``, or ``skipped`` with
    values of its own); the status stays ``skipped``, and ``seconds`` is not carried (no time was spent).
    """
    done = {row["input"]: row for row in previous if row.get("status") in ("done", "skipped")}
    carried = []
    for record in records:
        row = done.get(record.input)
        if record.status == "skipped" and row is not None:
            values = {key: row.get(key) for key in _CARRIED}
            values["outputs"] = tuple(map(location, values["outputs"] or ()))
            values = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in values.items()}
            record = replace(record, **values)
        carried.append(record)
    return carried
