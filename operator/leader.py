"""Leader election with a coordination.k8s.io Lease, so that two operator replicas never both act.

`claim` decides (pure); `LeaderElector` reads and writes the Lease through `Kube`.
Writes carry the Lease's resourceVersion, so two replicas racing for it cannot both win.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Mapping
from typing import Any

from localmodel_operator.kube import Kube, KubeError

log = logging.getLogger(__name__)
LEASE_API = "coordination.k8s.io/v1"


def _format(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def holder_is_live(lease: Mapping[str, Any], now: datetime.datetime) -> bool:
    spec = lease.get("spec") or {}
    if not spec.get("holderIdentity") or not spec.get("renewTime"):
        return False
    expires = _parse(spec["renewTime"]) + datetime.timedelta(seconds=int(spec.get("leaseDurationSeconds") or 0))
    return now < expires


def claim(
    lease: Mapping[str, Any] | None, namespace: str, name: str, identity: str, now: datetime.datetime, duration_s: int
) -> dict[str, Any] | None:
    """The Lease to write to become (or stay) the holder; None while another live holder has it."""
    if lease is None:
        return {
            "apiVersion": LEASE_API,
            "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"holderIdentity": identity, "leaseDurationSeconds": duration_s, "acquireTime": _format(now),
                     "renewTime": _format(now), "leaseTransitions": 0},
        }
    spec = dict(lease.get("spec") or {})
    if spec.get("holderIdentity") != identity:
        if holder_is_live(lease, now):
            return None
        spec.update(acquireTime=_format(now), leaseTransitions=int(spec.get("leaseTransitions") or 0) + 1)
    spec.update(holderIdentity=identity, leaseDurationSeconds=duration_s, renewTime=_format(now))
    return {**lease, "spec": spec}


class LeaderElector:
    def __init__(self, kube: Kube, namespace: str, name: str, identity: str, duration_s: int) -> None:
        self._kube, self._namespace, self._name = kube, namespace, name
        self.identity, self.duration_s = identity, duration_s
        self.lost = False

    async def try_acquire(self) -> bool:
        """One attempt to become or stay the holder."""
        lease = await self._kube.get(LEASE_API, "Lease", self._namespace, self._name)
        now = datetime.datetime.now(datetime.timezone.utc)
        wanted = claim(lease, self._namespace, self._name, self.identity, now, self.duration_s)
        if wanted is None:
            return False
        try:
            if lease is None:
                return await self._kube.create(wanted) is not None
            await self._kube.replace(wanted)
            return True
        except KubeError as exc:
            if exc.status == 409:  # another replica wrote the Lease first
                return False
            raise

    async def acquire(self) -> None:
        while not await self.try_acquire():
            await asyncio.sleep(self.duration_s / 3)
        log.info("leading as %s (Lease %s/%s)", self.identity, self._namespace, self._name)

    async def hold(self, stop: asyncio.Event) -> None:
        """Renews every third of the lease; sets `stop` once leadership may have passed to someone else."""
        last_renewal = asyncio.get_running_loop().time()
        while not stop.is_set():
            await asyncio.sleep(self.duration_s / 3)
            try:
                renewed = await self.try_acquire()
            except Exception as exc:  # noqa: BLE001 - any failure to renew counts against the lease
                log.warning("cannot renew the Lease: %s", exc)
                renewed = False
            now = asyncio.get_running_loop().time()
            if renewed:
                last_renewal = now
            elif now - last_renewal >= self.duration_s * 2 / 3:
                # Stop before the lease can expire, so two replicas never overlap.
                log.error("lost the Lease %s/%s; stopping", self._namespace, self._name)
                self.lost = True
                stop.set()

    async def release(self) -> None:
        """Lets a standby replica take over at once instead of after the lease duration."""
        lease = await self._kube.get(LEASE_API, "Lease", self._namespace, self._name)
        if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
            spec = {**lease["spec"], "holderIdentity": None, "renewTime": None}
            try:
                await self._kube.replace({**lease, "spec": spec})
            except KubeError as exc:
                log.warning("cannot release the Lease: %s", exc)
