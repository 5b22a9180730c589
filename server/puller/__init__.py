"""The weight puller: fetch a GGUF model into a volume, verified, resumable, reporting progress.

`pull(source, dest, sink)` is the API; `localmodel-pull` (cli.py) wraps it for the Job.
"""

from .errors import PullError, Reason
from .transfer import RetryPolicy
from .progress import ProgressSink, TerminalProgress
from .api import pull
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
    "pull",
]
