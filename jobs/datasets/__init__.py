"""Dataset input (streaming readers with per-row validation) and result writers."""

from jobs.datasets.readers import FORMATS, detect_format, read_rows
from jobs.datasets.rows import BadRow, DatasetError, PromptRow

__all__ = ["FORMATS", "BadRow", "DatasetError", "PromptRow", "detect_format", "read_rows"]
