"""`source.s3`: boto3 signs and describes the object; the engine fetches a presigned GET.

boto3 brings the credential chain (AWS_* from the Secret, or a pod identity),
SigV4 and `endpoint_url` for MinIO and other compatible stores. A fresh presigned
URL per attempt keeps long resumable transfers valid past any single expiry.
Without credentials the requests go unsigned, which is what public buckets need.
"""

from __future__ import annotations

import boto3
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .errors import PullError, Reason
from .transfer import HttpRequest
from .remote import RemoteFile
from .source import S3Source

PRESIGN_SECONDS = 6 * 3600
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NoSuchBucket", "NotFound"})
_DENIED = frozenset({"401", "403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"})


def resolve_s3(spec: S3Source) -> RemoteFile:
    session = boto3.session.Session()
    signed = session.get_credentials() is not None
    config = Config(
        signature_version="s3v4" if signed else UNSIGNED,
        s3={"addressing_style": "path"} if spec.endpoint else {},
        retries={"max_attempts": 5, "mode": "standard"},
        connect_timeout=15,
        read_timeout=30,
    )
    s3 = session.client("s3", endpoint_url=spec.endpoint, region_name=spec.region, config=config)
    where = f"s3://{spec.bucket}/{spec.key}"
    try:
        head = s3.head_object(Bucket=spec.bucket, Key=spec.key)
    except ClientError as err:
        code = str(err.response.get("Error", {}).get("Code", ""))
        if code in _NOT_FOUND:
            raise PullError(Reason.SOURCE_NOT_FOUND, f"{where} does not exist") from None
        if code in _DENIED:
            hint = "" if signed else " (no AWS credentials were given)"
            raise PullError(Reason.UNAUTHORIZED, f"access to {where} denied{hint}") from None
        raise PullError(Reason.NETWORK_ERROR, f"{where}: S3 error {code}") from None
    except BotoCoreError as err:
        raise PullError(Reason.NETWORK_ERROR, f"{where}: {type(err).__name__}") from None

    def presigned() -> HttpRequest:
        params = {"Bucket": spec.bucket, "Key": spec.key}
        return HttpRequest(s3.generate_presigned_url("get_object", Params=params, ExpiresIn=PRESIGN_SECONDS))

    return RemoteFile(request=presigned, size=int(head["ContentLength"]), version=str(head.get("ETag")))
