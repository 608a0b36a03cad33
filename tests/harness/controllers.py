"""Controllers running inside node containers, as in production, and an
independent observer of where schedulers run.

The metastore servers listen on the test network's gateway, so cutting a node
off the network cuts its controller off the metastore too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import yaml

from .cluster import Cluster, Node
from .observer import Observer
from .procs import wait_for

CONFIG_DIR = "/etc/ha-toolkit"
UNIT = "airflow-scheduler"
CONTROLLER_UNIT = "ha-toolkit-controller"
METRICS_PORT = 9108

CONTROLLER_SERVICE = """[Unit]
Description=ha-toolkit failover controller (test)

[Service]
Type=notify
NotifyAccess=main
ExecStart=/opt/ha-toolkit/bin/ha-toolkit controller run --config /etc/ha-toolkit/controller.yml
WatchdogSec={watchdog}
Restart=on-failure
RestartSec=1
CPUAccounting=yes
MemoryAccounting=yes
Environment=ANSIBLE_HOME=/var/lib/ha-toolkit/ansible
Environment=HOME=/root
"""

FAST_TIMINGS = {
    "poll_interval": 1.0,
    "lease_ttl": 5.0,
    "fence_after": 6.0,
    "start_timeout": 6.0,
    "stop_timeout": 3.0,
    # Generous against a loaded 2-core machine: a missed ping kills a controller.
    "watchdog": 3.0,
    "clock_drift": 0.05,
}


class ControllerCluster:
    """`cluster` nodes each running `ha-toolkit controller run` under systemd."""

    def __init__(
        self,
        cluster: Cluster,
        metastore: dict[str, Any],
        password: str,
        timings: dict[str, float] | None = None,
        watchdog: bool = True,
        alerts: dict[str, Any] | None = None,
    ) -> None:
        self.cluster = cluster
        self.metastore = metastore
        self.password = password
        self.timings = {**FAST_TIMINGS, **(timings or {})}
        # watchdog=False: WatchdogSec=0, for tests that must freeze a controller
        # longer than the watchdog would allow.
        self.watchdog = watchdog
        self.alerts = alerts
        self.observer = Observer({n.name: n.container.id for n in cluster.nodes})

    def install(self) -> None:
        inventory = yaml.safe_load(self.cluster.inventory.read_text())
        inventory["all"]["vars"].update(
            {
                "ansible_ssh_private_key_file": f"{CONFIG_DIR}/id_ed25519",
                "ansible_ssh_common_args": self.cluster.ssh_args().replace(
                    str(self.cluster.known_hosts), f"{CONFIG_DIR}/known_hosts"
                ),
            }
        )
        key = self.cluster.key.read_bytes()
        for node in self.cluster.nodes:
            node.put_file(f"{CONFIG_DIR}/id_ed25519", key, 0o600)
            node.put_file(f"{CONFIG_DIR}/known_hosts", self.cluster.known_hosts.read_bytes())
            node.put_file(f"{CONFIG_DIR}/inventory.yml", yaml.safe_dump(inventory).encode())
            node.put_file(f"{CONFIG_DIR}/metastore.password", self.password.encode(), 0o600)
            self.write_config(node)
            node.put_file(
                f"/etc/systemd/system/{CONTROLLER_UNIT}.service",
                CONTROLLER_SERVICE.format(
                    watchdog=self.timings["watchdog"] if self.watchdog else 0
                ).encode(),
            )
            node.exec("systemctl daemon-reload")

    def config(self, node: Node) -> dict[str, Any]:
        # Half the watchdog (the config refuses a timeout that is not below it): a call
        # that waits out its timeout still ends well before the watchdog fires.
        metastore = {"connect_timeout": self.timings["watchdog"] / 2, **self.metastore}
        if self.password:
            metastore["password_file"] = f"{CONFIG_DIR}/metastore.password"
        return {
            "node_name": node.name,
            "inventory": f"{CONFIG_DIR}/inventory.yml",
            "masters_group": "masters",
            "metastore": metastore,
            "timings": self.timings,
            "service": {"unit": UNIT, "health_url": "http://127.0.0.1:8974/health"},
            "logging": {"level": "DEBUG"},
            "metrics": {"listen": f"127.0.0.1:{METRICS_PORT}"},
            **({"alerts": self.alerts} if self.alerts else {}),
        }

    def write_config(self, node: Node) -> None:
        node.put_file(
            f"{CONFIG_DIR}/controller.yml",
            yaml.safe_dump(self.config(node), sort_keys=False).encode(),
            0o600,
        )

    def start(self, names: list[str] | None = None) -> None:
        for node in self.cluster.nodes:
            if names is None or node.name in names:
                node.exec(f"systemctl start --no-block {CONTROLLER_UNIT}")

    def controller_pid(self, name: str) -> int:
        _, out = self.cluster.node(name).exec(
            f"systemctl show -p MainPID --value {CONTROLLER_UNIT}", check=False
        )
        return int(out.strip() or 0)

    def signal_controller(self, name: str, sig: str) -> None:
        pid = self.controller_pid(name)
        assert pid, f"no controller runs on {name}"
        self.cluster.node(name).exec(f"kill -s {sig} {pid}")

    def ha(self, name: str, args: str, check: bool = True) -> tuple[int, str]:
        """Run the `ha-toolkit` CLI on a node."""
        return self.cluster.node(name).exec(
            f"/opt/ha-toolkit/bin/ha-toolkit --config {CONFIG_DIR}/controller.yml {args}",
            check=check,
        )

    def journal(self, name: str, lines: int = 200) -> str:
        _, out = self.cluster.node(name).exec(
            f"journalctl -u {CONTROLLER_UNIT} --no-pager -n {lines}", check=False
        )
        return out

    def active_controller(self) -> str | None:
        code, out = self.ha(self.cluster.nodes[0].name, "get-current-host --json", check=False)
        if code != 0:
            return None
        import json

        value = json.loads(out).get("active")
        return str(value) if value else None

    def wait_active(self, timeout: float, not_on: str | None = None) -> str:
        found: list[str] = []

        def active() -> bool:
            name = self.active_controller()
            found[:] = [name] if name else []
            return bool(name) and name != not_on

        wait_for(active, timeout, "an ACTIVE controller", interval=0.2)
        return found[0]

    def dump_logs(self) -> str:
        return "\n".join(
            f"===== {n.name} =====\n{self.journal(n.name)}" for n in self.cluster.nodes
        )

    @contextmanager
    def observed(self) -> Iterator[Observer]:
        """Run the observer for the body; fail on any sampled instant with two schedulers."""
        self.observer = Observer({n.name: n.container.id for n in self.cluster.nodes})
        self.observer.start()
        try:
            yield self.observer
        except BaseException:
            print(self.dump_logs())  # shown by pytest for the failed test
            raise
        finally:
            self.observer.stop()
        assert self.observer.samples > 0
        assert not self.observer.overlaps, (
            f"two schedulers at once: {self.observer.overlaps[:5]}\n{self.dump_logs()}"
        )
