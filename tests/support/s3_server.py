"""A real S3-compatible server for the recordings tests: moto's server (`python -m moto.server`)
in a subprocess on a free loopback port, spoken to over HTTP with boto3.

`start_s3_server()` is a context manager: it starts the server, waits until it answers, makes a
user with an access key allowed `s3:*` and one bucket, and then turns authentication on (moto's
`/moto-api/reset-auth`), so a wrong key is refused as AWS would refuse it; it kills the server
on exit. Without moto the tests skip, unless `CHORUS_REQUIRE_S3=1` (CI), where they fail
instead: moto is in the `dev` dependency group.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from support.servers import free_port

BUCKET = "chorus-recordings"
POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
}


def require_moto() -> None:
    if importlib.util.find_spec("moto") is None:
        message = "moto is not installed (uv sync installs the dev group)"
        if os.environ.get("CHORUS_REQUIRE_S3") == "1":
            pytest.fail(message + " and CHORUS_REQUIRE_S3=1")
        pytest.skip(message)


class S3Server:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.bucket = BUCKET
        self.access_key_id = ""
        self.secret_access_key = ""
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1).close()
                break
            except (urllib.error.URLError, OSError):
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto's server did not start: {command}") from None
                time.sleep(0.05)
        self._provision()

    def _provision(self) -> None:
        """A user, its key and the bucket (before authentication is on), then turn it on."""
        with self.client("iam", key=("setup", "setup")) as iam:
            iam.create_user(UserName="chorus")
            key = iam.create_access_key(UserName="chorus")["AccessKey"]
            policy = json.dumps(POLICY)
            iam.put_user_policy(UserName="chorus", PolicyName="s3", PolicyDocument=policy)
        self.access_key_id, self.secret_access_key = key["AccessKeyId"], key["SecretAccessKey"]
        with self.client(key=("setup", "setup")) as s3:
            s3.create_bucket(Bucket=self.bucket)
        request = urllib.request.Request(
            f"{self.url}/moto-api/reset-auth",
            data=b"0",  # requests without a valid signature from here on: none
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        urllib.request.urlopen(request, timeout=5).close()

    @contextmanager
    def client(self, service: str = "s3", *, key: tuple[str, str] | None = None) -> Iterator[Any]:
        """A boto3 client of this server, with the user's key unless given another."""
        import boto3

        key_id, secret = key or (self.access_key_id, self.secret_access_key)
        client = boto3.session.Session().client(
            service,
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
        )
        try:
            yield client
        finally:
            client.close()

    def environment(self, *, wrong: bool = False) -> dict[str, str]:
        """The AWS variables a server of ours needs for this one (a key it refuses: `wrong`),
        and no AWS files of the machine's."""
        return {
            "AWS_ACCESS_KEY_ID": "AKIAWRONGWRONGWRONG0" if wrong else self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }

    def objects(self, prefix: str = "") -> dict[str, bytes]:
        """Every object under `prefix`, by key (blocking)."""
        with self.client() as s3:
            listed = s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix).get("Contents", [])
            return {
                item["Key"]: s3.get_object(Bucket=self.bucket, Key=item["Key"])["Body"].read()
                for item in listed
            }

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()


@contextmanager
def start_s3_server() -> Iterator[S3Server]:
    require_moto()
    server = S3Server()
    try:
        server.start()
        yield server
    finally:
        server.kill()
