"""Smoke tests of the node harness: systemd, sshd, Ansible over SSH, cut-off helpers."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ha_toolkit.nodes import run_playbook
from tests.harness.cluster import Cluster


def test_nodes_boot_with_systemd_running(cluster: Cluster) -> None:
    assert len(cluster.nodes) == 3
    assert {n.system_state() for n in cluster.nodes} == {"running"}
    assert len({n.address for n in cluster.nodes}) == 3
    assert [n.exec("hostname")[1].strip() for n in cluster.nodes] == ["node1", "node2", "node3"]


def test_playbook_over_ssh_reports_per_host(cluster: Cluster) -> None:
    result = run_playbook("ping.yml", cluster.inventory, limit="masters")
    assert result.status == "successful", result
    assert sorted(result.hosts) == ["node1", "node2", "node3"]
    for name, host in result.hosts.items():
        assert host.ok, host
        assert host.report == {"hostname": name}
        assert host.changed == 0


def test_wrong_host_key_is_refused(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fresh ControlPath dir: an SSH master kept alive by an earlier test would
    # skip the host-key check altogether.
    monkeypatch.setenv("ANSIBLE_SSH_CONTROL_PATH_DIR", str(tmp_path / "cp"))
    # Give node2 node1's host key: host-key checking must refuse node2 only.
    lines = cluster.known_hosts.read_text().splitlines()
    node1_key = lines[0].split(" ", 1)[1]
    lines[1] = f"{cluster.node('node2').address} {node1_key}"
    wrong = tmp_path / "known_hosts"
    wrong.write_text("\n".join(lines) + "\n")
    inventory = yaml.safe_load(cluster.inventory.read_text())
    inventory["all"]["vars"]["ansible_ssh_common_args"] = cluster.ssh_args().replace(
        str(cluster.known_hosts), str(wrong)
    )
    inventory_file = tmp_path / "inventory.yml"
    inventory_file.write_text(yaml.safe_dump(inventory))

    result = run_playbook("ping.yml", inventory_file)
    assert result.hosts["node2"].status == "unreachable"
    assert "identification has changed" in result.hosts["node2"].message.lower()
    assert result.hosts["node1"].ok and result.hosts["node3"].ok


def test_cut_off_and_heal(cluster: Cluster) -> None:
    a, b, c = cluster.nodes
    assert a.can_reach(b.address) and a.can_reach(c.address)
    cluster.cut_off(a.name, b.address)
    try:
        assert not a.can_reach(b.address)
        assert not b.can_reach(a.address)
        assert a.can_reach(c.address)
        assert b.can_reach(c.address)
    finally:
        cluster.heal(a.name)
    assert a.can_reach(b.address) and b.can_reach(a.address)


def test_isolate_and_heal(cluster: Cluster) -> None:
    a, b, c = cluster.nodes
    cluster.isolate(a.name)
    try:
        assert not a.can_reach(b.address)
        assert not c.can_reach(a.address)
        assert b.can_reach(c.address)
        assert a.exec("true")[0] == 0  # still controllable through the engine
    finally:
        cluster.heal(a.name)
    assert a.can_reach(b.address) and c.can_reach(a.address)


def test_stop_start_and_pause(cluster: Cluster) -> None:
    _, b, c = cluster.nodes
    cluster.pause(c.name)
    try:
        assert not b.can_reach(c.address)
    finally:
        cluster.unpause(c.name)
    assert b.can_reach(c.address)
    cluster.stop(c.name)
    assert not b.can_reach(c.address)
    cluster.start(c.name)
    assert c.system_state() == "running"
    assert b.can_reach(c.address)
