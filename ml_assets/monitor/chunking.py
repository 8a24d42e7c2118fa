"""How monitoring chunks its data for NannyML: the reference in several chunks, a partition in one.

NannyML calculators take one chunker, used both when fitting (to chunk the reference and derive
thresholds from the spread of the metric over reference chunks) and when calculating (to chunk
the monitored data). The platform monitors a partition as ONE chunk, but thresholds need several
reference chunks, and none of NannyML's chunkers does both: :func:`partition_chunker` builds one
that does, switched by its ``phase`` (``"reference"`` while fitting, ``"analysis"`` while
calculating; :class:`~ml_assets.monitor.suite.FittedSuite` switches it).

A threshold judges a partition by how a metric varies over reference chunks, so the chunks
should be what a partition is: the rows of one partition window, in time. Given the windows'
starts (``reference_starts``), the reference is cut at them (:func:`window_chunks`): each chunk
then holds one window's rows, with the same within-window structure as a monitored partition
(a slowly moving aggregate feature is nearly constant within a week, for example, and a chunk of
rows drawn from several weeks would not show that). Windows with too few rows are merged into a
neighbour. Without the starts, the reference is cut into ``reference_chunks`` equal chunks in time
order.

NannyML is imported inside the factory, never when this module is imported (it costs seconds).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

REFERENCE = "reference"
ANALYSIS = "analysis"


def window_chunks(
    times: Sequence[Any], starts: Sequence[dt.datetime], min_rows: int
) -> list[tuple[int, int]]:
    """``[start, end)`` row ranges of time-sorted ``times`` cut at the window ``starts``.

    A range of fewer than ``min_rows`` rows is merged into the one before it (the first into the
    one after it), so no threshold rests on a sliver of a window at the edge of the reference.
    Empty windows give no range. ``times`` must be sorted ascending and comparable with
    ``starts`` (both naive UTC, or both aware)."""
    import bisect
    import itertools

    n = len(times)
    if n == 0:
        return []
    cuts = sorted({bisect.bisect_left(times, s) for s in starts} | {0, n})
    ranges = [(a, b) for a, b in itertools.pairwise(cuts) if b > a]
    merged: list[tuple[int, int]] = []
    for a, b in ranges:
        if merged and (b - a < min_rows or merged[-1][1] - merged[-1][0] < min_rows):
            merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    if len(merged) > 1 and merged[-1][1] - merged[-1][0] < min_rows:
        last = merged.pop()
        merged[-1] = (merged[-1][0], last[1])
    return merged


def partition_chunker(
    reference_chunks: int,
    timestamp: str | None,
    reference_starts: Sequence[dt.datetime] | None = None,
    min_rows: int = 1,
) -> Any:
    """A NannyML ``Chunker``.

    Reference phase: with ``reference_starts`` (naive UTC window starts), one chunk per window
    (:func:`window_chunks`, ranges below ``min_rows`` rows merged); otherwise
    ``reference_chunks`` equal chunks in time order (the remainder appended to the last).
    ``max_reference_chunks`` (an attribute, default unlimited) caps the count: past it the
    reference is cut into that many equal chunks instead. Analysis phase: the whole frame as one
    chunk. Set ``.phase`` to :data:`REFERENCE` or :data:`ANALYSIS` before each fit/calculate."""
    import pandas as pd
    from nannyml.chunk import Chunk, Chunker, SizeBasedChunker

    class PartitionChunker(Chunker):
        def __init__(self, n: int, timestamp_column_name: str | None) -> None:
            super().__init__(timestamp_column_name)
            self.reference_chunks = max(1, n)
            self.reference_starts = list(reference_starts) if reference_starts else None
            self.max_reference_chunks: int | None = None
            self.phase = REFERENCE

        def _equal(self, data: pd.DataFrame, n: int) -> list[Chunk]:
            size = max(1, data.shape[0] // n)
            return SizeBasedChunker(
                chunk_size=size,
                incomplete="append",
                timestamp_column_name=self.timestamp_column_name,
            )._split(data)

        def _windows(self, data: pd.DataFrame) -> list[Chunk] | None:
            ts = self.timestamp_column_name
            if not self.reference_starts or not ts or ts not in data.columns:
                return None
            times = pd.to_datetime(data[ts])
            if times.isna().any() or not times.is_monotonic_increasing:
                return None
            ranges = window_chunks(list(times), self.reference_starts, min_rows)
            if len(ranges) < 2:
                return None
            chunks = []
            for i, (a, b) in enumerate(ranges):
                part = data.iloc[a:b]
                chunk = Chunk(key=f"[{a}:{b - 1}]", data=part, start_index=a, end_index=b - 1)
                chunk.start_datetime = times.iloc[a]
                chunk.end_datetime = times.iloc[b - 1]
                chunk.chunk_index = i
                chunks.append(chunk)
            return chunks

        def _split(self, data: pd.DataFrame) -> list[Chunk]:
            if data.shape[0] == 0:
                return []
            if self.phase == REFERENCE:
                cap = self.max_reference_chunks
                chunks = self._windows(data)
                if chunks is None:
                    return self._equal(data, min(self.reference_chunks, cap or 10**9))
                if cap is not None and len(chunks) > cap:
                    return self._equal(data, cap)
                return chunks
            chunk = Chunk(key=ANALYSIS, data=data, start_index=0, end_index=data.shape[0] - 1)
            ts = self.timestamp_column_name
            if ts and ts in data.columns:
                chunk.start_datetime = pd.to_datetime(data[ts].min())
                chunk.end_datetime = pd.to_datetime(data[ts].max())
            return [chunk]

    return PartitionChunker(reference_chunks, timestamp)
