"""An S3 endpoint on 127.0.0.1: moto in server mode, reached over real HTTP by boto3."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

REGION = "us-east-1"


@dataclass(frozen=True)
class MotoS3:
    endpoint: str

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="test-key",
            aws_secret_access_key="test-secret",
        )


@pytest.fixture(scope="session")
def moto_s3_server() -> Iterator[MotoS3]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield MotoS3(f"http://{host}:{port}")
    finally:
        server.stop()


@pytest.fixture
def moto_s3(moto_s3_server: MotoS3, monkeypatch: pytest.MonkeyPatch) -> MotoS3:
    """The shared moto server, with AWS credentials in the environment as the pull Job gets them."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return moto_s3_server
