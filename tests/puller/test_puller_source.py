"""Parsing and validating spec.source: the rules that keep user input off the filesystem's edges."""

from __future__ import annotations

import pytest

from localmodel_server.puller.errors import PullError, Reason
from localmodel_server.puller.hf import pick_quant_file
from localmodel_server.puller.source import SourceError, parse_source

SHA = "ab" * 32


def test_each_kind_parses_with_defaults() -> None:
    assert parse_source({"hf": {"repo": "Qwen/Qwen2.5-0.5B-Instruct-GGUF", "quant": "Q8_0"}}).hf.revision == "main"
    assert parse_source('{"url": "https://example.com/m.gguf"}').kind == "url"
    s3 = parse_source({"s3": {"bucket": "models", "key": "a/b.gguf", "endpoint": "http://minio:9000"}})
    assert s3.kind == "s3" and s3.s3.region is None
    pvc = parse_source({"pvc": {"claimName": "shared", "path": "llama/model.gguf"}})
    assert pvc.pvc.claim_name == "shared"


def test_identity_is_canonical_and_ignores_the_secret() -> None:
    one = parse_source({"hf": {"repo": "a/b", "file": "m.gguf"}, "sha256": SHA.upper(), "secretRef": {"name": "x"}})
    two = parse_source({"sha256": SHA, "hf": {"revision": "main", "file": "m.gguf", "repo": "a/b"}})
    assert one.identity() == two.identity() == {"hf": {"repo": "a/b", "file": "m.gguf", "revision": "main"}, "sha256": SHA}
    assert parse_source({"hf": {"repo": "a/b", "file": "m.gguf", "revision": "v2"}}).identity() != two.identity()


@pytest.mark.parametrize(
    ("source", "complaint"),
    [
        ({}, "exactly one of hf, url, s3, pvc, ollama, oci (got none)"),
        ({"url": "https://x/m.gguf", "s3": {"bucket": "bkt", "key": "k"}}, "got url, s3"),
        ({"url": "ftp://example.com/m.gguf"}, "http:// or https://"),
        ({"url": "file:///etc/passwd"}, "http:// or https://"),
        ({"hf": {"repo": "a/b", "file": "../m.gguf"}}, "without '/' or '..'"),
        ({"hf": {"repo": "a/b", "file": "sub/m.gguf"}}, "without '/' or '..'"),
        ({"hf": {"repo": "a/b"}}, "exactly one of file or quant"),
        ({"hf": {"repo": "a/b", "file": "m.gguf", "quant": "Q8_0"}}, "exactly one of file or quant"),
        ({"hf": {"repo": "a/b", "quant": "Q8_0; rm -rf /"}}, "quant must be a tag"),
        ({"hf": {"repo": "no-owner", "file": "m.gguf"}}, "owner/name"),
        ({"pvc": {"claimName": "c", "path": "/etc/passwd"}}, "inside the volume"),
        ({"pvc": {"claimName": "c", "path": "models/../../x.gguf"}}, "inside the volume"),
        ({"url": "https://x/m.gguf", "sha256": "abc"}, "64 hexadecimal"),
        ({"url": "https://x/m.gguf", "mirror": "y"}, "mirror"),
        ({"s3": {"bucket": "bkt", "key": "k", "endpoint": "minio:9000"}}, "s3.endpoint"),
    ],
)
def test_invalid_sources_are_rejected_with_a_readable_reason(source: dict, complaint: str) -> None:
    with pytest.raises(SourceError) as caught:
        parse_source(source)
    assert complaint in str(caught.value)


def test_descriptions_never_carry_credentials() -> None:
    source = parse_source({"url": "https://user:pw@example.com:8443/m.gguf?X-Amz-Signature=secret"})
    assert source.describe() == "https://example.com:8443/m.gguf"


def test_quant_picks_the_file_carrying_the_whole_tag() -> None:
    files = ["README.md", "m-Q4_K.gguf", "m-Q4_K_M.gguf", "m-q8_0.gguf", "m.IQ4_XS.gguf", "mmproj-Q8_0.gguf"]
    assert pick_quant_file(files, "Q4_K_M") == "m-Q4_K_M.gguf"
    assert pick_quant_file(files, "Q4_K") == "m-Q4_K.gguf"
    assert pick_quant_file(files, "Q8_0") == "m-q8_0.gguf"
    assert pick_quant_file(files, "IQ4_XS") == "m.IQ4_XS.gguf"


def test_quant_with_no_or_several_matches_is_an_error() -> None:
    with pytest.raises(PullError) as none:
        pick_quant_file(["m-Q8_0.gguf"], "Q5_K_M")
    assert none.value.reason is Reason.SOURCE_NOT_FOUND and "m-Q8_0.gguf" in none.value.message
    with pytest.raises(PullError) as several:
        pick_quant_file(["a-Q8_0.gguf", "b-Q8_0.gguf"], "Q8_0")
    assert several.value.reason is Reason.SOURCE_NOT_FOUND and "a-Q8_0.gguf, b-Q8_0.gguf" in several.value.message
    with pytest.raises(PullError) as split:
        pick_quant_file(["m-Q8_0-00001-of-00002.gguf", "m-Q8_0-00002-of-00002.gguf"], "Q8_0")
    assert split.value.reason is Reason.INVALID_MODEL
