"""`source.hf`: resolve a Hugging Face file with huggingface_hub, fetch it with our engine.

huggingface_hub does what is Hub-specific: listing the repository (to pick the
file for `quant`), the HEAD on `/resolve/` that yields the commit, the LFS
sha256 (`X-Linked-Etag`) and size, its error types, and the auth headers. The
bytes then go through the shared engine, so the Hub gets the same resume state
on the volume, stall detection and progress as every other source, and the
file is requested at the resolved commit so a resume never mixes revisions.
"""

from __future__ import annotations

import os
import re

import httpx2
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import build_hf_headers

from .errors import PullError, Reason
from .transfer import HttpRequest
from .remote import RemoteFile
from .source import HfSource

DEFAULT_ENDPOINT = "https://huggingface.co"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SPLIT_PART = re.compile(r"-\d{5}-of-\d{5}\.gguf$", re.IGNORECASE)


def pick_quant_file(files: list[str], quant: str) -> str:
    """The single .gguf whose name carries `quant` as a whole tag (Q4_K does not match Q4_K_M)."""
    tag = re.compile(rf"(?<![A-Za-z0-9]){re.escape(quant)}(?![A-Za-z0-9_])", re.IGNORECASE)
    matches = sorted(
        f
        for f in files
        if f.lower().endswith(".gguf") and tag.search(f.rsplit("/", 1)[-1]) and "mmproj" not in f.lower()
    )
    if not matches:
        available = sorted(f for f in files if f.lower().endswith(".gguf"))
        raise PullError(
            Reason.SOURCE_NOT_FOUND,
            f"no .gguf file carries the tag {quant!r}; the repository has: {', '.join(available) or 'no .gguf files'}",
        )
    if all(_SPLIT_PART.search(f) for f in matches):
        raise PullError(Reason.INVALID_MODEL, f"{quant!r} is a split GGUF ({matches[0]}, ...); use a single-file quant")
    if len(matches) > 1:
        raise PullError(
            Reason.SOURCE_NOT_FOUND, f"several .gguf files carry the tag {quant!r}: {', '.join(matches)}; name one in file"
        )
    return matches[0]


def resolve_hf(spec: HfSource) -> RemoteFile:
    # Read at call time: huggingface_hub reads HF_ENDPOINT once, at import.
    endpoint = os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")
    token = os.environ.get("HF_TOKEN") or None
    where = f"{spec.repo}@{spec.revision}"
    try:
        if spec.file is not None:
            filename = spec.file
        else:
            files = HfApi(endpoint=endpoint, token=token).list_repo_files(spec.repo, revision=spec.revision)
            filename = pick_quant_file(files, spec.quant or "")
        url = hf_hub_url(spec.repo, filename, revision=spec.revision, endpoint=endpoint)
        meta = get_hf_file_metadata(url, token=token, endpoint=endpoint, retry_on_errors=True)
    except GatedRepoError:
        raise PullError(
            Reason.UNAUTHORIZED, f"{spec.repo} is gated: accept its terms on the Hub and give a token via secretRef"
        ) from None
    except RepositoryNotFoundError:
        hint = "" if token else " (a private repository needs HF_TOKEN via secretRef)"
        raise PullError(Reason.SOURCE_NOT_FOUND, f"repository {spec.repo} not found{hint}") from None
    except RevisionNotFoundError:
        raise PullError(Reason.SOURCE_NOT_FOUND, f"revision {spec.revision!r} not found in {spec.repo}") from None
    except RemoteEntryNotFoundError:
        raise PullError(Reason.SOURCE_NOT_FOUND, f"file {spec.file!r} not found in {where}") from None
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        if status in (401, 403):
            raise PullError(Reason.UNAUTHORIZED, f"{where}: HTTP {status}; check HF_TOKEN in secretRef") from None
        raise PullError(Reason.NETWORK_ERROR, f"{where}: the Hub answered HTTP {status}") from None
    except (httpx2.HTTPError, OfflineModeIsEnabled) as err:
        raise PullError(Reason.NETWORK_ERROR, f"{where}: cannot reach {endpoint}: {type(err).__name__}") from None

    commit = meta.commit_hash or spec.revision
    pinned = HttpRequest(
        hf_hub_url(spec.repo, filename, revision=commit, endpoint=endpoint),
        {**build_hf_headers(token=token), "Accept-Encoding": "identity"},
    )
    lfs_sha256 = meta.etag if meta.etag and _SHA256.match(meta.etag) else None
    return RemoteFile(request=lambda: pinned, size=meta.size, sha256=lfs_sha256, version=f"{commit}/{meta.etag}")
