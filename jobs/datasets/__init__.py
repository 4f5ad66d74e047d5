"""Dataset input (streaming readers with per-row validation) and result writers."""

from jobs.datasets.readers import FORMATS, RowStream, detect_format, read_rows
from jobs.datasets.rows import BadRow, DatasetError, PromptRow, RowLimits
from jobs.datasets.stream import is_seekable

__all__ = [
    "FORMATS",
    "BadRow",
    "DatasetError",
    "PromptRow",
    "RowLimits",
    "RowStream",
    "detect_format",
    "is_seekable",
    "read_rows",
]
