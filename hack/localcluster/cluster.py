"""A one-node Kubernetes cluster on this machine, as kubernetes' own
hack/local-up-cluster.sh runs one: every component a process on the host.

    cluster.py up       start what is not running (a second `up` reuses what runs)
    cluster.py status   what runs, and whether the node is Ready
    cluster.py down     stop everything; no process, mount, bridge or iptables rule is left
    cluster.py env      print `export KUBECONFIG=...` for a shell

Runs as root, with the project's venv (it uses `cryptography`):
    .venv/bin/python hack/localcluster/cluster.py up

The pieces: etcd and kube-apiserver (tests/controlplane), kube-controller-manager,
kube-scheduler, kubelet and kube-proxy in iptables mode (hack/localcluster/kube),
containerd and runc (Debian), CNI bridge networking (Debian's plugins), CoreDNS
behind the kube-dns Service, and local-path-provisioner behind the default
StorageClass. What each is told is computed in cluster_config.py.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(HERE), str(REPO)]

import cluster_config as config  # noqa: E402
import cluster_pki as pki  # noqa: E402
from cluster_config import Layout  # noqa: E402

DEFAULT_STATE = Path(os.environ.get("LOCALMODEL_CLUSTER_DIR", "/var/lib/localmodel-cluster"))
IMAGES_DIR = Path(os.environ.get("LOCALMODEL_IMAGES_DIR", Path.home() / ".cache/localmodel/images"))
IMAGES = ("pause", "busybox", "server", "operator")
# Started in this order, stopped in the reverse.
COMPONENTS = ("containerd", "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
              "kubelet", "kube-proxy", "coredns", "local-path-provisioner")


def log(message: str) -> None:
    print(f"cluster.py: {message}", file=sys.stderr, flush=True)


class ClusterError(Exception):
    pass


# --- binaries -----------------------------------------------------------------------


def binaries() -> dict[str, Path]:
    """Builds (first time) or finds the Go binaries; build.sh prints name=path lines."""
    out = subprocess.run([str(REPO / "tests/controlplane/build.sh"), "cluster"], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    found = {name: Path(path) for name, _, path in (line.partition("=") for line in out.split())}
    for name, package in (("containerd", "containerd"), ("ctr", "containerd"), ("runc", "runc"),
                          ("iptables", "iptables")):
        path = shutil.which(name)
        if not path:
            raise ClusterError(f"{name} is missing: apt-get install {package}")
        found[name] = Path(path)
    if not Path("/usr/lib/cni/bridge").exists():
        raise ClusterError("the CNI plugins are missing: apt-get install containernetworking-plugins")
    return found


# --- processes --------------------------------------------------------------------


def _pid(layout: Layout, name: str) -> int | None:
    """The component's pid if it runs (the pidfile's process still has our command line)."""
    try:
        pid = int((layout.run / f"{name}.pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid if str(layout.state).encode() in cmdline else None


def _start(layout: Layout, name: str, args: list[str]) -> None:
    layout.logs.mkdir(parents=True, exist_ok=True)
    with open(layout.logs / f"{name}.log", "ab") as out:
        # A session of its own: the cluster outlives this command.
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True)
    (layout.run / f"{name}.pid").write_text(str(proc.pid))


def _stop(layout: Layout, name: str, timeout: float = 20) -> None:
    pid = _pid(layout, name)
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    (layout.run / f"{name}.pid").unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _wait(what: str, ready: Callable[[], bool], layout: Layout, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        with contextlib.suppress(FileNotFoundError, ValueError):
            if not _alive(int((layout.run / f"{name}.pid").read_text())):
                break
        time.sleep(0.3)
    tail = (layout.logs / f"{name}.log").read_text(errors="replace").splitlines()[-25:]
    raise ClusterError(f"{what} did not come up; the end of {layout.logs / name}.log:\n" + "\n".join(tail))


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return response.status == 200
    except OSError:
        return False


# --- the machine's side: bridge, forwarding, mounts ------------------------------


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True)


def _check_addresses_free() -> None:
    routes = json.loads(_run("ip", "-j", "route", "show").stdout)
    for route in routes:
        if route.get("dev") == config.BRIDGE or route["dst"] == "default":
            continue
        network = ipaddress.ip_network(route["dst"], strict=False)
        for ours in (config.POD_CIDR, config.SERVICE_CIDR):
            if network.overlaps(ours):
                raise ClusterError(f"{ours} is taken on this machine (route {route['dst']} dev {route.get('dev')})")


def network_up(layout: Layout) -> None:
    if _run("ip", "link", "show", config.BRIDGE, check=False).returncode != 0:
        _check_addresses_free()
        _run("ip", "link", "add", config.BRIDGE, "type", "bridge")
        _run("ip", "addr", "add", f"{config.NODE_IP}/{config.POD_CIDR.prefixlen}", "dev", config.BRIDGE)
    _run("ip", "link", "set", config.BRIDGE, "up")
    forward = Path("/proc/sys/net/ipv4/ip_forward")
    saved = layout.state / "ip_forward.before"
    if not saved.exists():
        saved.write_text(forward.read_text())
    # Service traffic is rewritten to a pod and forwarded from the bridge back to it.
    forward.write_text("1\n")


def network_down(layout: Layout) -> None:
    _run("ip", "link", "del", config.BRIDGE, check=False)
    saved = layout.state / "ip_forward.before"
    if saved.exists():
        Path("/proc/sys/net/ipv4/ip_forward").write_text(saved.read_text())


def _mounts_under(prefixes: list[Path]) -> list[str]:
    points = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    chosen = [p for p in points if any(p == str(x) or p.startswith(f"{x}/") for x in prefixes)]
    return sorted(set(chosen), key=len, reverse=True)


def unmount_under(prefixes: list[Path]) -> None:
    for _ in range(5):
        points = _mounts_under(prefixes)
        if not points:
            return
        for point in points:
            _run("umount", "-l", point, check=False)


def _cgroup_dirs() -> Iterator[Path]:
    """kubelet's pod cgroups in every v1 hierarchy (it makes them; the mounts stay)."""
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        top = hierarchy / "kubepods"
        if top.is_dir():
            yield from sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
            yield top


def _kill_cgroup_tasks() -> None:
    for directory in _cgroup_dirs():
        with contextlib.suppress(OSError):
            for pid in (directory / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)


def _remove_cgroups() -> None:
    for _ in range(10):
        left = list(_cgroup_dirs())
        if not left:
            return
        for directory in left:
            with contextlib.suppress(OSError):
                directory.rmdir()
        time.sleep(0.2)


# --- files ---------------------------------------------------------------------------


def write_files(layout: Layout) -> None:
    for directory in (layout.run, layout.logs, layout.cni_conf_dir, layout.volumes,
                      layout.admin_kubeconfig.parent):
        directory.mkdir(parents=True, exist_ok=True)
    os.chmod(layout.volumes, 0o755)
    if not (layout.pki / "ca.crt").exists():
        pki.write_pki(layout.pki)
    ca = (layout.pki / "ca.crt").read_bytes()
    for stem in pki.CLIENTS:
        path = layout.kubeconfig(stem)
        if stem == "apiserver-kubelet-client" or path.exists():
            continue
        document = config.kubeconfig(ca, (layout.pki / f"{stem}.crt").read_bytes(),
                                     (layout.pki / f"{stem}.key").read_bytes(), pki.CLIENTS[stem][0])
        path.touch(mode=0o600)
        path.write_text(config.dump(document))
    files = {
        layout.state / "containerd.toml": config.containerd_config(layout),
        layout.cni_conf_dir / "10-localmodel.conflist": config.dump(config.cni_conflist(layout)),
        layout.state / "kubelet.yaml": config.dump(config.kubelet_config(layout)),
        layout.state / "kube-proxy.yaml": config.dump(config.kube_proxy_config(layout)),
        layout.state / "Corefile": config.corefile(layout),
    }
    for path, text in files.items():
        # Only when changed: kube-proxy exits when its configuration file is written.
        if not path.exists() or path.read_text() != text:
            path.write_text(text)


# --- up ------------------------------------------------------------------------------


def _admin_ssl(layout: Layout) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(layout.pki / "ca.crt"))
    context.load_cert_chain(str(layout.pki / "admin.crt"), str(layout.pki / "admin.key"))
    return context


def kubectl(bins: dict[str, Path], layout: Layout, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run([str(bins["kubectl"]), f"--kubeconfig={layout.admin_kubeconfig}", *args],
                          input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def _ctr(bins: dict[str, Path], layout: Layout, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run(str(bins["ctr"]), f"--address={layout.containerd_socket}", "-n", "k8s.io", *args, check=check)


def import_images(bins: dict[str, Path], layout: Layout) -> None:
    """Loads images.sh's tarballs into containerd, each once per build of the tarball."""
    stamps = layout.run / "images"
    stamps.mkdir(exist_ok=True)
    for name in IMAGES:
        tarball = IMAGES_DIR / f"{name}.tar"
        if not tarball.exists():
            if name in ("pause", "busybox"):
                raise ClusterError(f"{tarball} is missing: run hack/localcluster/images.sh {name}")
            log(f"no {tarball}; the cluster starts without the {name} image (images.sh {name} builds it)")
            continue
        stamp = stamps / name
        mtime = str(tarball.stat().st_mtime_ns)
        if stamp.exists() and stamp.read_text() == mtime:
            continue
        log(f"importing {tarball.name} into containerd")
        _ctr(bins, layout, "images", "import", str(tarball))
        stamp.write_text(mtime)


def up(layout: Layout) -> None:
    if os.geteuid() != 0:
        raise ClusterError("run as root: the cluster makes a bridge, mounts and iptables rules")
    bins = binaries()
    layout.state.mkdir(parents=True, exist_ok=True)
    write_files(layout)
    network_up(layout)
    started = time.monotonic()

    def ensure(name: str, args: list[str], ready: Callable[[], bool], timeout: float = 60) -> None:
        if _pid(layout, name) is None:
            log(f"starting {name}")
            _start(layout, name, args)
        _wait(name, ready, layout, name, timeout)

    ensure("containerd", [str(bins["containerd"]), f"--config={layout.state / 'containerd.toml'}"],
           lambda: _ctr(bins, layout, "version", check=False).returncode == 0)
    import_images(bins, layout)
    ensure("etcd", config.etcd_args(bins["etcd"], layout),
           lambda: _http_ok(f"http://127.0.0.1:{config.ETCD_CLIENT_PORT}/health"))
    context = _admin_ssl(layout)
    ensure("kube-apiserver", config.apiserver_args(bins["kube-apiserver"], layout),
           lambda: _http_ok(f"{config.server_url()}/readyz", context), timeout=120)
    always = lambda: True  # noqa: E731  (they report through the API)
    ensure("kube-controller-manager", config.controller_manager_args(bins["kube-controller-manager"], layout), always)
    ensure("kube-scheduler", config.scheduler_args(bins["kube-scheduler"], layout), always)
    kubectl(bins, layout, "apply", "--server-side", "--force-conflicts", "-f", "-",
            stdin="\n---\n".join(config.dump(m) for m in config.addon_manifests(layout)))
    ensure("kubelet", config.kubelet_args(bins["kubelet"], layout),
           lambda: _http_ok("http://127.0.0.1:10248/healthz"), timeout=60)
    ensure("kube-proxy", config.kube_proxy_args(bins["kube-proxy"], layout),
           lambda: _http_ok("http://127.0.0.1:10256/healthz"))
    ensure("coredns", config.coredns_args(bins["coredns"], layout),
           lambda: _http_ok("http://127.0.0.1:18080/health"))
    ensure("local-path-provisioner", config.local_path_args(bins["local-path-provisioner"], layout), always)
    kubectl(bins, layout, "wait", "--for=condition=Ready", f"node/{config.NODE_NAME}", "--timeout=120s")
    _wait_for_default_serviceaccount(bins, layout)
    log(f"cluster up in {time.monotonic() - started:.0f} s; export KUBECONFIG={layout.admin_kubeconfig}")


def _wait_for_default_serviceaccount(bins: dict[str, Path], layout: Layout, timeout: float = 60) -> None:
    """Pods cannot be created in `default` until the controller-manager has made its ServiceAccount."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ClusterError):
            kubectl(bins, layout, "get", "serviceaccount", "default", "-n", "default")
            return
        time.sleep(0.5)
    raise ClusterError("the controller-manager made no default ServiceAccount")


# --- down ---------------------------------------------------------------------------


def _sandbox_netns(bins: dict[str, Path], layout: Layout) -> list[Path]:
    """The network namespaces containerd made for pods (bind mounts under /run/netns)."""
    paths = []
    listing = _ctr(bins, layout, "containers", "list", "--quiet", check=False).stdout.split()
    for container in listing:
        info = _ctr(bins, layout, "containers", "info", container, check=False).stdout
        with contextlib.suppress(ValueError, KeyError, TypeError):
            for namespace in json.loads(info)["Spec"]["linux"]["namespaces"]:
                if namespace.get("type") == "network" and namespace.get("path", "").startswith("/var/run/netns/"):
                    paths.append(Path(namespace["path"]))
    return sorted(set(paths))


def _kill_containers(bins: dict[str, Path], layout: Layout) -> None:
    for line in _ctr(bins, layout, "tasks", "list", check=False).stdout.splitlines()[1:]:
        task = line.split()[0]
        _ctr(bins, layout, "tasks", "kill", "--signal", "SIGKILL", task, check=False)
    _kill_cgroup_tasks()


def _kill_shims(layout: Layout) -> None:
    """containerd-shim processes outlive containerd; ours name our socket."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes()
            if b"containerd-shim" in cmdline and str(layout.containerd_socket).encode() in cmdline:
                os.kill(int(proc.name), signal.SIGKILL)


def remove_kube_chains() -> None:
    """Deletes the KUBE-* chains kubelet makes (KUBE-FIREWALL, the canaries) and any
    kube-proxy's cleanup left, with the rules that jump to them, in both families.
    No other Kubernetes runs on this machine, so every KUBE-* chain is this cluster's."""
    for family in ("iptables", "ip6tables"):
        if not shutil.which(family):
            continue
        for table in ("filter", "nat", "mangle"):
            dump = _run(f"{family}-save", "-t", table, check=False).stdout.splitlines()
            chains = [line[1:].split()[0] for line in dump if line.startswith(":KUBE-")]
            for line in dump:
                words = shlex.split(line)
                if line.startswith("-A ") and not words[1].startswith("KUBE-") and any(
                        w.startswith("KUBE-") for w in words):
                    _run(family, "-t", table, "-D", *words[1:], check=False)
            for chain in chains:
                _run(family, "-t", table, "-F", chain, check=False)
            for chain in chains:
                _run(family, "-t", table, "-X", chain, check=False)


def _iptables_left() -> list[str]:
    rules = []
    for family in ("iptables", "ip6tables"):
        if shutil.which(family):
            rules += _run(f"{family}-save", check=False).stdout.splitlines()
    return [r for r in rules if "KUBE-" in r or "CNI-" in r]


def down(layout: Layout) -> None:
    if not layout.state.exists():
        log("no cluster here")
        return
    bins = binaries()
    for name in ("local-path-provisioner", "coredns", "kube-proxy", "kubelet"):
        _stop(layout, name)
    # kube-proxy removes its own chains.
    _run(str(bins["kube-proxy"]), "--cleanup", f"--config={layout.state / 'kube-proxy.yaml'}", check=False)
    netns: list[Path] = []
    if _pid(layout, "containerd") is not None:
        netns = _sandbox_netns(bins, layout)
        _kill_containers(bins, layout)
    _stop(layout, "containerd")
    _kill_shims(layout)
    _kill_cgroup_tasks()
    for name in reversed(COMPONENTS[1:5]):
        _stop(layout, name)
    for path in netns:
        _run("umount", "-l", str(path), check=False)
        path.unlink(missing_ok=True)
    unmount_under([layout.state])
    _remove_cgroups()
    network_down(layout)
    remove_kube_chains()
    left = _iptables_left()
    if left:
        log("iptables rules left behind:\n" + "\n".join(left))
    shutil.rmtree(layout.state)
    log("cluster down")


def status(layout: Layout) -> int:
    running = {name: _pid(layout, name) for name in COMPONENTS}
    for name, pid in running.items():
        print(f"{name:26} {'running, pid ' + str(pid) if pid else 'stopped'}")
    if all(running.values()):
        print(f"KUBECONFIG={layout.admin_kubeconfig}")
        return 0
    return 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status", "env"])
    parser.add_argument("--state", type=Path, default=DEFAULT_STATE, help="the cluster's folder (default %(default)s)")
    args = parser.parse_args()
    layout = Layout(args.state.resolve())
    try:
        if args.command == "up":
            up(layout)
        elif args.command == "down":
            down(layout)
        elif args.command == "env":
            print(f"export KUBECONFIG={layout.admin_kubeconfig}")
        else:
            return status(layout)
    except (ClusterError, subprocess.CalledProcessError) as error:
        log(str(error))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
