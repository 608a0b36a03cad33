"""Node containers for tests: systemd as PID 1, sshd, one Docker network.

Every container and network carries the label `ha-toolkit.test-run=<run id>`
and is removed by `Cluster.destroy()`; `remove_stale()` clears what earlier
runs left behind when their process is gone. Nothing unlabelled is touched.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import random
import socket
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import docker.types
import yaml

from .procs import wait_for

RUN_LABEL = "ha-toolkit.test-run"
OWNER_LABEL = "ha-toolkit.test-owner"  # "<hostname>:<pid>" of the test process


def owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def new_run_id() -> str:
    return uuid.uuid4().hex[:8]


def remove_stale(client: docker.DockerClient) -> list[str]:
    """Remove labelled containers/networks whose owning test process has ended."""
    removed: list[str] = []
    host = socket.gethostname()

    def stale(labels: dict[str, str]) -> bool:
        who = labels.get(OWNER_LABEL, "")
        h, _, pid = who.partition(":")
        if h != host or not pid.isdigit():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    for c in client.containers.list(all=True, filters={"label": RUN_LABEL}):
        if stale(c.labels):
            c.remove(force=True, v=True)
            removed.append(c.name)
    for n in client.networks.list(filters={"label": RUN_LABEL}):
        if stale(n.attrs.get("Labels") or {}):
            n.remove()
            removed.append(n.name)
    return removed


@dataclass
class Node:
    name: str
    address: str
    container: docker.models.containers.Container

    def exec(self, cmd: str, check: bool = True) -> tuple[int, str]:
        """Run a shell command in the node through the Docker engine (not the network)."""
        code, out = self.container.exec_run(["/bin/sh", "-c", cmd], demux=False)
        text = (out or b"").decode(errors="replace")
        if check and code != 0:
            raise RuntimeError(f"{self.name}: `{cmd}` exited {code}: {text.strip()}")
        return int(code), text

    def put_file(self, path: str, content: bytes, mode: int = 0o644) -> None:
        # Through exec, not the archive API: that one cannot see tmpfs mounts (/run).
        encoded = base64.b64encode(content).decode()
        directory = os.path.dirname(path)
        self.exec(
            f"mkdir -p {directory} && echo {encoded} | base64 -d > {path}.tmp && "
            f"chmod {mode:o} {path}.tmp && mv {path}.tmp {path}"
        )

    def system_state(self) -> str:
        _, out = self.exec("systemctl is-system-running", check=False)
        return out.strip()

    def can_reach(self, address: str, timeout: float = 1.0) -> bool:
        """True when sshd at `address` answers with its banner (a paused node's
        kernel still completes a TCP handshake, so connecting alone proves little)."""
        code, out = self.exec(
            f"timeout {timeout} bash -c 'exec 3<>/dev/tcp/{address}/22 && head -c 4 <&3'",
            check=False,
        )
        return code == 0 and out.startswith("SSH-")


class Cluster:
    """`size` nodes named node1..nodeN on a network of their own."""

    def __init__(
        self,
        image: str,
        workdir: Path,
        size: int = 3,
        run_id: str | None = None,
        client: docker.DockerClient | None = None,
    ) -> None:
        self.image = image
        self.workdir = workdir
        self.size = size
        self.run_id = run_id or new_run_id()
        self.prefix = f"hat-{self.run_id}"
        self.client = client or docker.from_env()
        self.labels = {RUN_LABEL: self.run_id, OWNER_LABEL: owner()}
        self.network: docker.models.networks.Network | None = None
        self.nodes: list[Node] = []
        self.key = workdir / "id_ed25519"
        self.known_hosts = workdir / "known_hosts"
        self.inventory = workdir / "inventory.yml"

    # -- lifecycle -------------------------------------------------------------------------
    def create(self) -> Cluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.network = self._create_network()
            subnet = self.subnet
            for i in range(1, self.size + 1):
                self._run_node(f"node{i}", str(subnet.network_address + 10 + i))
            self._make_key()
            for node in self.nodes:
                self._wait_booted(node)
                node.put_file(
                    "/root/.ssh/authorized_keys", self.key.with_suffix(".pub").read_bytes(), 0o600
                )
            self._write_known_hosts()
            self._write_inventory()
        except BaseException:
            self.destroy()
            raise
        return self

    def _create_network(self) -> docker.models.networks.Network:
        """A bridge network with a subnet of our own choosing, so nodes can have fixed
        addresses and keep them across a stop/start (a killed node comes back as itself)."""
        start = random.randrange(256)
        for i in range(256):
            prefix = f"172.29.{(start + i) % 256}"
            pool = docker.types.IPAMPool(subnet=f"{prefix}.0/24", gateway=f"{prefix}.1")
            ipam = docker.types.IPAMConfig(pool_configs=[pool])
            try:
                return self.client.networks.create(
                    f"{self.prefix}-net", driver="bridge", labels=self.labels, ipam=ipam
                )
            except docker.errors.APIError as exc:
                if "overlap" not in str(exc).lower():
                    raise
        raise RuntimeError("no free /24 left in 172.29.0.0/16 for a test network")

    def _run_node(self, name: str, address: str) -> None:
        assert self.network is not None
        container = self.client.containers.create(
            self.image,
            name=f"{self.prefix}-{name}",
            hostname=name,
            labels=self.labels,
            network=self.network.name,
            cap_add=["SYS_ADMIN", "NET_ADMIN"],
            cgroupns="host",
            security_opt=["seccomp=unconfined"],
            stop_signal="SIGRTMIN+3",
            volumes={"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"}},
            tmpfs={"/run": "", "/run/lock": "", "/tmp": ""},
            environment={"container": "docker"},
            command=["/lib/systemd/systemd"],
        )
        self.network.disconnect(container)
        self.network.connect(container, ipv4_address=address)
        container.start()
        self.nodes.append(Node(name, address, container))

    def _make_key(self) -> None:
        if not self.key.exists():
            subprocess.run(
                [
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    f"ha-toolkit-test-{self.run_id}",
                    "-f",
                    str(self.key),
                ],
                check=True,
            )

    def _wait_booted(self, node: Node) -> None:
        def booted() -> bool:
            state = node.system_state()
            if state == "degraded":
                _, failed = node.exec("systemctl --failed --no-legend", check=False)
                raise RuntimeError(f"{node.name} booted degraded: {failed.strip()}")
            return state == "running"

        wait_for(booted, 60, f"{node.name} to finish booting", interval=0.2)

    def _write_known_hosts(self) -> None:
        # Host keys are read through the Docker engine, not over the network, so a
        # man in the middle on the test network could not plant one.
        lines = []
        for node in self.nodes:
            _, key = node.exec("cat /etc/ssh/ssh_host_ed25519_key.pub")
            keytype, blob = key.split()[:2]
            lines.append(f"{node.address} {keytype} {blob}")
        self.known_hosts.write_text("\n".join(lines) + "\n")

    def ssh_args(self) -> str:
        return (
            f"-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes "
            "-o IdentitiesOnly=yes -o ConnectTimeout=5"
        )

    def _write_inventory(self) -> None:
        inventory = {
            "all": {
                "children": {
                    "masters": {"hosts": {n.name: {"ansible_host": n.address} for n in self.nodes}}
                },
                "vars": {
                    "ansible_user": "root",
                    "ansible_ssh_private_key_file": str(self.key),
                    "ansible_ssh_common_args": self.ssh_args(),
                    "ansible_python_interpreter": "/usr/bin/python3",
                },
            }
        }
        self.inventory.write_text(yaml.safe_dump(inventory, sort_keys=False))

    def destroy(self) -> None:
        for c in self.client.containers.list(
            all=True, filters={"label": f"{RUN_LABEL}={self.run_id}"}
        ):
            c.remove(force=True, v=True)
        for n in self.client.networks.list(filters={"label": f"{RUN_LABEL}={self.run_id}"}):
            n.remove()
        self.nodes = []
        self.network = None

    # -- addresses -------------------------------------------------------------------------
    @property
    def gateway(self) -> str:
        """The host's address on the test network: bind servers here for the nodes to reach."""
        assert self.network is not None
        self.network.reload()
        return str(self.network.attrs["IPAM"]["Config"][0]["Gateway"])

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        assert self.network is not None
        self.network.reload()
        return ipaddress.IPv4Network(self.network.attrs["IPAM"]["Config"][0]["Subnet"])

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    # -- faults ----------------------------------------------------------------------------
    def stop(self, name: str) -> None:
        self.node(name).container.stop(timeout=10)

    def kill(self, name: str) -> None:
        self.node(name).container.kill()

    def start(self, name: str) -> None:
        node = self.node(name)
        node.container.start()
        self._wait_booted(node)

    def pause(self, name: str) -> None:
        self.node(name).container.pause()

    def unpause(self, name: str) -> None:
        self.node(name).container.unpause()

    def cut_off(self, name: str, address: str) -> None:
        """Drop all traffic between node `name` and `address`, both directions."""
        self.node(name).exec(
            f"iptables -I OUTPUT -d {address} -j DROP && iptables -I INPUT -s {address} -j DROP"
        )

    def isolate(self, name: str) -> None:
        """Cut node `name` off the whole network (loopback keeps working)."""
        self.node(name).exec(
            "iptables -I OUTPUT ! -o lo -j DROP && iptables -I INPUT ! -i lo -j DROP"
        )

    def heal(self, name: str) -> None:
        self.node(name).exec("iptables -F INPUT && iptables -F OUTPUT")
