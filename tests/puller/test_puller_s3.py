"""S3 sources through boto3 against moto in server mode on 127.0.0.1."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest
from support.puller_gguf import write_gguf
from support.s3_moto import REGION, MotoS3

from localmodel_server.puller import PullError, Reason, RetryPolicy, parse_source, pull
from localmodel_server.puller.progress import NullSink
from localmodel_server.puller.store import MODEL_FILE, PARTIAL_FILE

FAST = RetryPolicy(attempts=3, backoff_initial=0.01, backoff_max=0.05, stall_timeout=2, connect_timeout=2)


@pytest.fixture
def bucket(moto_s3: MotoS3) -> str:
    name = f"models-{uuid.uuid4().hex[:8]}"
    moto_s3.client().create_bucket(Bucket=name)
    return name


def s3_source(moto_s3: MotoS3, bucket: str, key: str, **extra: str) -> object:
    return parse_source({"s3": {"bucket": bucket, "key": key, "endpoint": moto_s3.endpoint, "region": REGION}, **extra})


def test_pull_from_an_s3_compatible_endpoint(moto_s3: MotoS3, bucket: str, tmp_path: Path) -> None:
    model = write_gguf(tmp_path / "m.gguf", extra_bytes=1 << 20)
    moto_s3.client().upload_file(str(model), bucket, "llama/m.gguf")
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    result = pull(s3_source(moto_s3, bucket, "llama/m.gguf", sha256=digest), tmp_path / "models", policy=FAST)  # type: ignore[arg-type]
    assert result.sha256 == digest and result.gguf.architecture == "llama"
    assert (tmp_path / "models" / MODEL_FILE).read_bytes() == model.read_bytes()


@pytest.mark.parametrize("missing", ["key", "bucket"])
def test_missing_objects_are_source_not_found(moto_s3: MotoS3, bucket: str, tmp_path: Path, missing: str) -> None:
    source = s3_source(moto_s3, bucket if missing == "key" else "no-such-bucket", "nope.gguf")
    with pytest.raises(PullError) as caught:
        pull(source, tmp_path / "models", policy=FAST)  # type: ignore[arg-type]
    assert caught.value.reason is Reason.SOURCE_NOT_FOUND and "does not exist" in caught.value.message


def test_unreachable_endpoint_is_a_network_error(moto_s3: MotoS3, tmp_path: Path) -> None:
    source = parse_source({"s3": {"bucket": "models", "key": "m.gguf", "endpoint": "http://127.0.0.1:9"}})
    with pytest.raises(PullError) as caught:
        pull(source, tmp_path / "models", policy=FAST)
    assert caught.value.reason is Reason.NETWORK_ERROR


class CrashAtAQuarter(NullSink):
    def progress(self, done: int, total: int | None) -> None:
        if total and done >= total // 4:
            raise KeyboardInterrupt


def test_an_interrupted_s3_pull_resumes_with_a_ranged_presigned_get(
    moto_s3: MotoS3, bucket: str, tmp_path: Path
) -> None:
    model = write_gguf(tmp_path / "m.gguf", extra_bytes=32 << 20)
    moto_s3.client().upload_file(str(model), bucket, "m.gguf")
    source, dest = s3_source(moto_s3, bucket, "m.gguf"), tmp_path / "models"
    with pytest.raises(KeyboardInterrupt):
        pull(source, dest, CrashAtAQuarter(), policy=FAST)  # type: ignore[arg-type]
    kept = (dest / PARTIAL_FILE).stat().st_size
    result = pull(source, dest, policy=FAST)  # type: ignore[arg-type]
    assert 0 < kept and result.bytes_fetched == model.stat().st_size - kept
    assert result.sha256 == hashlib.sha256(model.read_bytes()).hexdigest()
