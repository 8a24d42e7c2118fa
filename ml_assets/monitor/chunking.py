"""How monitoring chunks its data for NannyML: the reference in several chunks, a partition in one.

NannyML calculators take one chunker, used both when fitting (to chunk the reference and derive
thresholds from the spread of the metric over reference chunks) and when calculating (to chunk
the monitored data). The platform monitors a partition as ONE chunk, but thresholds need several
reference chunks, and none of NannyML's chunkers does both: :func:`partition_chunker` builds one
that does, switched by its ``phase`` (``"reference"`` while fitting, ``"analysis"`` while
calculating; :class:`~ml_assets.monitor.suite.FittedSuite` switches it).

NannyML is imported inside the factory, never when this module is imported (it costs seconds).
"""

from __future__ import annotations

from typing import Any

REFERENCE = "reference"
ANALYSIS = "analysis"


def partition_chunker(reference_chunks: int, timestamp: str | None) -> Any:
    """A NannyML ``Chunker``: ``reference_chunks`` equal chunks (in time order, the remainder
    appended to the last) in the reference phase; the whole frame as one chunk in the analysis
    phase. Set ``.phase`` to :data:`REFERENCE` or :data:`ANALYSIS` before each fit/calculate."""
    import pandas as pd
    from nannyml.chunk import Chunk, Chunker, SizeBasedChunker

    class PartitionChunker(Chunker):
        def __init__(self, n: int, timestamp_column_name: str | None) -> None:
            super().__init__(timestamp_column_name)
            self.reference_chunks = max(1, n)
            self.phase = REFERENCE

        def _split(self, data: pd.DataFrame) -> list[Chunk]:
            if data.shape[0] == 0:
                return []
            if self.phase == REFERENCE:
                size = max(1, data.shape[0] // self.reference_chunks)
                return SizeBasedChunker(
                    chunk_size=size,
                    incomplete="append",
                    timestamp_column_name=self.timestamp_column_name,
                )._split(data)
            chunk = Chunk(key=ANALYSIS, data=data, start_index=0, end_index=data.shape[0] - 1)
            ts = self.timestamp_column_name
            if ts and ts in data.columns:
                chunk.start_datetime = pd.to_datetime(data[ts].min())
                chunk.end_datetime = pd.to_datetime(data[ts].max())
            return [chunk]

    return PartitionChunker(reference_chunks, timestamp)
