"""A test host in a network namespace: an address that is not loopback but never leaves this machine.

Some addresses must not be loopback: the apiserver refuses 127.0.0.0/8 in
EndpointSlices. A namespace joined to this one by a veth pair gives a
private /30 whose far end is a separate host as far as the kernel is
concerned, while every packet stays inside the sandbox.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class TestHost:
    name: str
    address: str  # the host's end of the veth pair

    @property
    def exec_prefix(self) -> list[str]:
        """Prepend to a command to run it on the test host."""
        return ["ip", "netns", "exec", self.name]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture(scope="session")
def test_host() -> Iterator[TestHost]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("a network-namespace test host needs root and iproute2 (`ip`)")
    tag = f"lm{os.getpid() % 100000}"
    name, outer, inner = f"{tag}-host", f"{tag}-o", f"{tag}-i"
    # 10.251.0.0/30 is never routed off this machine: it exists only on this veth pair.
    near, far = "10.251.0.1", "10.251.0.2"
    _ip("netns", "add", name)
    try:
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", name)
        _ip("addr", "add", f"{near}/30", "dev", outer)
        _ip("link", "set", outer, "up")
        _ip("netns", "exec", name, "ip", "addr", "add", f"{far}/30", "dev", inner)
        _ip("netns", "exec", name, "ip", "link", "set", inner, "up")
        _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield TestHost(name, far)
    finally:
        subprocess.run(["ip", "link", "del", outer], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
