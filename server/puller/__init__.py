"""The weight puller: fetch a GGUF model into a volume, verified, resumable, reporting progress.

`pull(source, dest, sink)` and `probe(source, sink)` are the API; `localmodel-pull` (cli.py) wraps it for the Job.
"""

from .errors import PullError, Reason
from .transfer import RetryPolicy
from .progress import ProgressSink, TerminalProgress
from .api import probe, pull
from .result import PullResult
from .source import ModelSource, SourceError, parse_source

__all__ = [
    "ModelSource",
    "ProgressSink",
    "PullError",
    "PullResult",
    "Reason",
    "RetryPolicy",
    "SourceError",
    "TerminalProgress",
    "parse_source",
    "probe",
    "pull",
]
