"""`localmodel-pull`: the pull Job's entry point (docs/architecture.md, "Puller").

With --probe instead of --dest it only reports the source's size
(status.download.bytesTotal and {"result": "Probed", "bytesTotal": N}): the
operator sizes the weights claim from it.

Exit 0 with the weights in place (or the size reported); 3 with a reason (also
written as JSON to --termination-log, where Kubernetes turns it into the
container's termination message), which fails the Job at once; 1 when the pull
crashed on something unforeseen (an I/O error such as ESTALE, a library bug),
which the Job retries; 2 for a malformed command line. Expected failures print
one line, never a traceback; credentials only ever come from the environment.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from ..contract import PULL_CRASHED_EXIT_CODE, PULL_REPORTED_FAILURE_EXIT_CODE
from .errors import PullError
from .progress import FanOut, ProgressSink, TerminalProgress
from .api import probe, pull
from .result import PullResult
from .source import SourceError, parse_source

log = logging.getLogger("localmodel_server.puller")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="localmodel-pull", description="Download GGUF weights for a LocalModel into a volume, verified."
    )
    parser.add_argument("--source", required=True, help="the LocalModel's spec.source as JSON")
    parser.add_argument("--dest", type=Path, help="directory that receives model.gguf")
    parser.add_argument(
        "--probe", action="store_true", help="instead of pulling, report the source's size (no --dest)"
    )
    parser.add_argument("--report-to", metavar="NAMESPACE/NAME", help="LocalModel whose status shows the progress")
    parser.add_argument("--termination-log", type=Path, help="file that receives the outcome as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        source = parse_source(args.source)
    except SourceError as err:
        parser.error(str(err))
    if args.probe == (args.dest is not None):
        parser.error("give exactly one of --dest and --probe")
    if args.probe and source.pvc is not None:
        parser.error("a pvc source is used in place: there is nothing to probe")
    sink = _sinks(args.report_to, parser)
    try:
        if args.probe:
            outcome = {"result": "Probed", "bytesTotal": probe(source, sink)}
        else:
            outcome = _success(pull(source, args.dest, sink))
    except PullError as err:
        log.error("%s failed: %s", "probe" if args.probe else "pull", err)
        _write_outcome(args.termination_log, {"result": "Failed", "reason": str(err.reason), "message": err.message})
        return PULL_REPORTED_FAILURE_EXIT_CODE
    except Exception as err:  # noqa: BLE001 - the pod log keeps the traceback; the Job retries
        log.exception("%s crashed; the Job retries it", "probe" if args.probe else "pull")
        _write_outcome(args.termination_log, {"result": "Crashed", "message": f"{type(err).__name__}: {err}"})
        return PULL_CRASHED_EXIT_CODE
    _write_outcome(args.termination_log, outcome)
    print(json.dumps(outcome, sort_keys=True))
    return 0


def _sinks(report_to: str | None, parser: argparse.ArgumentParser) -> ProgressSink:
    terminal = TerminalProgress(sys.stderr)
    if report_to is None:
        return terminal
    from .k8s_status import KubernetesStatusReporter, api_from_environment, parse_target

    try:
        namespace, name = parse_target(report_to)
    except ValueError as err:
        parser.error(str(err))
    try:
        api = api_from_environment()
    except Exception as err:  # noqa: BLE001 - any config problem: pull anyway, the termination log still reports
        log.warning("cannot report progress to %s: no usable Kubernetes config (%s)", report_to, type(err).__name__)
        return terminal
    return FanOut(terminal, KubernetesStatusReporter(api, namespace, name))


def _success(result: PullResult) -> dict[str, Any]:
    return {
        "result": "Succeeded",
        "outcome": result.outcome,
        "path": result.path,
        "sizeBytes": result.size_bytes,
        "sha256": result.sha256,
        "gguf": result.gguf.to_status(),
        "bytesFetched": result.bytes_fetched,
    }


def _write_outcome(path: Path | None, outcome: dict[str, Any]) -> None:
    if path is None:
        return
    try:
        path.write_text(json.dumps(outcome, sort_keys=True))
    except OSError as err:
        log.warning("cannot write the termination log %s: %s", path, err.strerror)


if __name__ == "__main__":
    sys.exit(main())
