"""Throwaway ZooKeeper servers: a single server or a 3-member ensemble."""

from __future__ import annotations

import socket
from pathlib import Path

from .procs import Process, free_port, wait_for

CLASSPATH = "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar"


def four_letter(host: str, port: int, word: str, timeout: float = 1.0) -> str:
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(word.encode())
        chunks = []
        while data := s.recv(4096):
            chunks.append(data)
    return b"".join(chunks).decode(errors="replace")


class ZooKeeperMember:
    def __init__(self, workdir: Path, host: str, myid: int) -> None:
        self.workdir = workdir
        self.host = host
        self.myid = myid
        self.client_port = free_port(host)
        self.quorum_port = free_port(host)
        self.election_port = free_port(host)
        self.process: Process | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.client_port}"

    def write_config(self, peers: list[ZooKeeperMember]) -> Path:
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        lines = [
            "tickTime=500",
            "initLimit=10",
            "syncLimit=5",
            f"dataDir={data}",
            f"clientPort={self.client_port}",
            f"clientPortAddress={self.host}",
            "admin.enableServer=false",
            "4lw.commands.whitelist=ruok,srvr,stat,mntr,cons,envi",
            # Session timeouts down to 2 ticks: tests use short sessions.
            "minSessionTimeout=1000",
            "maxSessionTimeout=30000",
        ]
        if len(peers) > 1:
            (data / "myid").write_text(f"{self.myid}\n")
            lines += [f"server.{p.myid}={p.host}:{p.quorum_port}:{p.election_port}" for p in peers]
        cfg = self.workdir / "zoo.cfg"
        cfg.write_text("\n".join(lines) + "\n")
        return cfg

    def start(self) -> None:
        argv = [
            "java",
            "-Xmx128m",
            "-XX:+UseSerialGC",
            "-cp",
            CLASSPATH,
            "-Dzookeeper.admin.enableServer=false",
            "org.apache.zookeeper.server.quorum.QuorumPeerMain",
            str(self.workdir / "zoo.cfg"),
        ]
        self.process = Process(argv, self.workdir / "zookeeper.log")
        self.process.start()

    def mode(self) -> str | None:
        """'standalone', 'leader' or 'follower' while serving, else None."""
        try:
            out = four_letter(self.host, self.client_port, "srvr")
        except OSError:
            return None
        for line in out.splitlines():
            if line.startswith("Mode:"):
                return line.split(":", 1)[1].strip()
        return None

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    def kill(self) -> None:
        if self.process:
            self.process.kill()


class ZooKeeperCluster:
    """One server (size=1) or an ensemble (size=3) on `host`."""

    def __init__(self, workdir: Path, size: int = 1, host: str = "127.0.0.1") -> None:
        self.members = [ZooKeeperMember(workdir / f"zk{i}", host, i) for i in range(1, size + 1)]
        for m in self.members:
            m.write_config(self.members)

    @property
    def hosts(self) -> str:
        """kazoo/ZooKeeper connect string."""
        return ",".join(m.address for m in self.members)

    def start(self) -> None:
        for m in self.members:
            m.start()
        self.wait_serving()

    def wait_serving(self, timeout: float = 60) -> None:
        def serving() -> bool:
            for m in self.members:
                if m.process and not m.process.running():
                    raise RuntimeError(f"zookeeper {m.myid} exited: {m.process.tail(3)}")
            modes = [m.mode() for m in self.members if m.process and m.process.running()]
            return bool(modes) and all(modes) and (len(self.members) == 1 or "leader" in modes)

        wait_for(serving, timeout, f"zookeeper at {self.hosts}")

    def leader(self) -> ZooKeeperMember:
        for m in self.members:
            if m.mode() == "leader":
                return m
        raise LookupError("no zookeeper leader")

    def stop_member(self, index: int) -> None:
        self.members[index].stop()

    def kill_member(self, index: int) -> None:
        self.members[index].kill()

    def start_member(self, index: int) -> None:
        self.members[index].start()

    def stop(self) -> None:
        for m in self.members:
            m.stop()
