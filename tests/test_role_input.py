"""Bad role input stops a role at its start, with one line that names the variable and what
was expected; good input passes the same checks.

Only each role's tasks/assert.yml runs (include_role tasks_from=assert), with ansible-playbook
on local-connection hosts: no container, no network config. The facts the roles' defaults read
(the default IPv4 interface) are set per host, as gathering them on those hosts would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"

SECRETS = {
    "patroni_superuser_password": "s3cret-super",
    "patroni_replication_password": "s3cret-repl",
    "patroni_airflow_password": "s3cret-airflow",
    # This machine may have a Debian-managed PostgreSQL 15 (the last check refuses to take one
    # over); a version no machine has keeps that check from depending on the test's host.
    "patroni_postgresql_version": "no-such-version",
}


def ipv4(address: str) -> dict[str, Any]:
    """The part of a host's default_ipv4 fact the roles read, on a /24."""
    network = address.rsplit(".", 1)[0] + ".0"
    return {
        "address": address,
        "interface": "eth0",
        "prefix": 24,
        "network": network,
        "netmask": "255.255.255.0",
    }


def run_asserts(
    tmp_path: Path,
    role: str,
    groups: dict[str, dict[str, dict[str, Any]]],
    group_vars: dict[str, Any] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `role`'s assert tasks on the hosts of its group (the first of `groups`), every host
    local; `groups` maps group -> host -> host vars (test_ipv4 becomes its default_ipv4 fact)."""
    inventory = {
        "all": {
            "vars": {
                "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable,
                **(group_vars or {}),
            },
            "children": {name: {"hosts": hosts} for name, hosts in groups.items()},
        }
    }
    playbook = [
        {
            # First on every host, as site.yml's facts are there before any role: the roles
            # read other groups' facts too (patroni reads the zookeeper hosts' addresses).
            "name": "Stand in for gathered facts",
            "hosts": "all",
            "gather_facts": False,
            "tasks": [
                {
                    # cacheable: the fact lands in ansible_facts, where the defaults look.
                    "ansible.builtin.set_fact": {
                        "ansible_default_ipv4": "{{ test_ipv4 }}",
                        "cacheable": True,
                    }
                }
            ],
        },
        {
            "name": f"Check {role}'s input",
            "hosts": next(iter(groups)),
            "gather_facts": False,
            "tasks": [
                {"ansible.builtin.include_role": {"name": role, "tasks_from": "assert"}},
            ],
        },
    ]
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "playbook.yml").write_text(yaml.safe_dump(playbook, sort_keys=False))
    env = os.environ | {
        "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
        "ANSIBLE_HOME": str(tmp_path / "ansible"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible" / "tmp"),
        "ANSIBLE_NOCOLOR": "1",
        # Only the default callback's output is read below, whatever the caller's settings.
        "ANSIBLE_STDOUT_CALLBACK": "default",
    }
    argv = [str(ANSIBLE_PLAYBOOK), "-i", "inventory.yml", "playbook.yml"]
    # cwd=tmp_path: no ansible.cfg of the caller's working directory applies.
    return subprocess.run(
        argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def failure_messages(out: subprocess.CompletedProcess[str]) -> list[str]:
    """The msg of every `fatal: [host]: FAILED! => {...}` line of the run, and of every
    `failed: [host] (item=...) => {...}` line (a looped task's failed item)."""
    messages = []
    for line in out.stdout.splitlines():
        if line.startswith("fatal: [") and "FAILED! => " in line:
            messages.append(json.loads(line.split("FAILED! => ", 1)[1])["msg"])
        elif line.startswith("failed: [") and " => {" in line:
            messages.append(json.loads(line.split(" => ", 1)[1])["msg"])
    return messages


def assert_stopped_with(
    out: subprocess.CompletedProcess[str], variable: str, expected: str
) -> None:
    output = out.stdout + out.stderr
    assert out.returncode != 0, output
    messages = failure_messages(out)
    assert messages, output
    for message in messages:
        # One line that starts with the variable's name and says what was expected.
        assert "\n" not in message, message
        assert message.startswith(f"{variable}: expected "), message
        assert expected in message, message


def assert_passed(out: subprocess.CompletedProcess[str]) -> None:
    assert out.returncode == 0, out.stdout + out.stderr
    assert failure_messages(out) == []


ROLES = sorted(path.parent.parent.name for path in (REPO / "roles").glob("*/tasks/main.yml"))
# Modules that only read; any other task in a checks.yml must say it changes nothing.
READ_ONLY = {"assert", "find", "service_facts", "slurp", "stat", "uri", "wait_for"}


def flatten(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every task of a task file, those inside blocks included, in order."""
    out: list[dict[str, Any]] = []
    for task in tasks:
        out += flatten(task["block"]) if "block" in task else [task]
    return out


def module_of(task: dict[str, Any]) -> str:
    (name,) = (k for k in task if k.startswith(("ansible.builtin.", "community.")))
    return name.rsplit(".", 1)[1]


def test_every_role_checks_its_input_first() -> None:
    # What the runs below prove of assert.yml holds for a role's run only if nothing comes
    # first; checks.yml proves the result only if nothing comes after it.
    assert len(ROLES) >= 8, ROLES
    for role in ROLES:
        steps = flatten(yaml.safe_load((REPO / "roles" / role / "tasks" / "main.yml").read_text()))
        imported = [step.get("ansible.builtin.import_tasks") for step in steps]
        assert None not in imported, f"{role}: main.yml only imports its steps"
        assert imported[0] == "assert.yml", role
        assert imported[-1] == "checks.yml", role


# Dict arguments whose keys are the user's (settings passed through, connection ids, policy
# definitions): argument_specs cannot list their `options` (docs/provisioning.md).
OPEN_MAPS = {
    "airflow_celery_extra_config",
    "airflow_connections",
    "airflow_config_overrides",
    "mysql_settings",
    "patroni_postgresql_parameters",
    "rabbitmq_policies[].tags",
}


def maps_without_options(options: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the dict arguments (or list-of-dict elements) that list no options."""
    out: list[str] = []
    for name, spec in options.items():
        is_list = spec.get("type") == "list"
        full = prefix + name + ("[]" if is_list else "")
        if "options" in spec:
            out += maps_without_options(spec["options"], full + ".")
        elif spec.get("type") == "dict" or spec.get("elements") == "dict":
            out.append(full)
    return out


def test_every_variable_is_declared_and_documented() -> None:
    open_maps: list[str] = []
    for role in ROLES:
        path = REPO / "roles" / role
        options = yaml.safe_load((path / "meta" / "argument_specs.yml").read_text())[
            "argument_specs"
        ]["main"]["options"]
        defaults = yaml.safe_load((path / "defaults" / "main.yml").read_text()) or {}
        readme = (path / "README.md").read_text()
        assert set(defaults) <= set(options), f"{role}: defaults not in argument_specs"
        for name in options:
            assert f"`{name}`" in readme, f"{role}: {name} is not in README.md"
        open_maps += maps_without_options(options)
    assert sorted(open_maps) == sorted(OPEN_MAPS)


def test_checks_only_read() -> None:
    # Read-only, and run in check mode too (a command is skipped there unless told not to be).
    for role in ROLES:
        tasks = flatten(
            yaml.safe_load((REPO / "roles" / role / "tasks" / "checks.yml").read_text())
        )
        assert tasks, role
        for task in tasks:
            if module_of(task) in READ_ONLY:
                continue
            assert task.get("changed_when") is False, f"{role}: {task['name']}"
            assert task.get("check_mode") is False, f"{role}: {task['name']}"


# keepalived: three load balancers on 10.0.0.0/24, default priorities 150, 140, 130.
LOADBALANCERS = {f"lb{i}": {"test_ipv4": ipv4(f"10.0.0.1{i}")} for i in (1, 2, 3)}


def test_keepalived_good_input_passes(tmp_path: Path) -> None:
    out = run_asserts(
        tmp_path,
        "keepalived",
        {"loadbalancer": LOADBALANCERS},
        {"keepalived_virtual_ip": "10.0.0.100"},
    )
    assert_passed(out)


def test_keepalived_two_members_at_the_same_priority(tmp_path: Path) -> None:
    hosts = {name: dict(hostvars) for name, hostvars in LOADBALANCERS.items()}
    hosts["lb1"]["keepalived_priority"] = 100
    hosts["lb2"]["keepalived_priority"] = 100
    out = run_asserts(
        tmp_path, "keepalived", {"loadbalancer": hosts}, {"keepalived_virtual_ip": "10.0.0.100"}
    )
    assert_stopped_with(out, "keepalived_priority", "expected a distinct value in 1-254")


def test_keepalived_vip_outside_the_hosts_subnet(tmp_path: Path) -> None:
    out = run_asserts(
        tmp_path,
        "keepalived",
        {"loadbalancer": LOADBALANCERS},
        {"keepalived_virtual_ip": "10.0.1.100"},  # the hosts are on 10.0.0.0/24
    )
    assert_stopped_with(out, "keepalived_virtual_ip", "expected a free address in 10.0.0.")


def zookeeper_hosts(count: int) -> dict[str, dict[str, Any]]:
    return {f"zk{i}": {"test_ipv4": ipv4(f"10.0.0.2{i}")} for i in range(1, count + 1)}


def test_zookeeper_good_input_passes(tmp_path: Path) -> None:
    out = run_asserts(tmp_path, "zookeeper", {"zookeeper": zookeeper_hosts(3)})
    assert_passed(out)


def test_zookeeper_fewer_than_three_members(tmp_path: Path) -> None:
    out = run_asserts(tmp_path, "zookeeper", {"zookeeper": zookeeper_hosts(2)})
    assert_stopped_with(out, "zookeeper_group", "expected at least 3 members")


def patroni_groups(members: int) -> dict[str, dict[str, dict[str, Any]]]:
    # database first: the play runs on it. The DCS is the default zookeeper group.
    database = {f"db{i}": {"test_ipv4": ipv4(f"10.0.0.3{i}")} for i in range(1, members + 1)}
    return {"database": database, "zookeeper": zookeeper_hosts(3)}


@pytest.mark.parametrize(
    ("members", "synchronous"),
    [(3, True), (1, False)],
    ids=["three-members-synchronous", "one-member-asynchronous"],
)
def test_patroni_good_input_passes(tmp_path: Path, members: int, synchronous: bool) -> None:
    out = run_asserts(
        tmp_path,
        "patroni",
        patroni_groups(members),
        SECRETS | {"patroni_synchronous_mode": synchronous},
    )
    assert_passed(out)


def test_patroni_synchronous_mode_on_one_member(tmp_path: Path) -> None:
    # Synchronous mode is the role's default.
    out = run_asserts(tmp_path, "patroni", patroni_groups(1), SECRETS)
    assert_stopped_with(out, "patroni_synchronous_mode", "expected false on a one-member cluster")


# airflow: two masters and a worker.
AIRFLOW_GROUPS = {
    "masters": {"m1": {"test_ipv4": ipv4("10.0.0.41")}, "m2": {"test_ipv4": ipv4("10.0.0.42")}},
    "workers": {"w1": {"test_ipv4": ipv4("10.0.0.51")}},
}
AIRFLOW = {
    "airflow_database_host": "10.0.0.100",
    "airflow_database_password": "s3cret-db",
    "airflow_broker_host": "10.0.0.100",
    "airflow_broker_password": "s3cret-amqp",
    "airflow_api_base_url": "http://10.0.0.100:8080",
    "airflow_fernet_key": "bW9sZWN1bGUtb25seS1mZXJuZXQta2V5LTAxMjM0NTY=",
    "airflow_jwt_secret": "s3cret-jwt",
    "airflow_api_secret_key": "s3cret-api",
    "airflow_admin_password": "s3cret-admin",
}


def test_airflow_good_input_passes(tmp_path: Path) -> None:
    out = run_asserts(tmp_path, "airflow", AIRFLOW_GROUPS, AIRFLOW)
    assert_passed(out)


def test_airflow_empty_secret(tmp_path: Path) -> None:
    out = run_asserts(tmp_path, "airflow", AIRFLOW_GROUPS, AIRFLOW | {"airflow_jwt_secret": ""})
    assert_stopped_with(out, "airflow_jwt_secret", "expected a non-empty value")
    assert "s3cret" not in out.stdout


def test_airflow_bad_fernet_key(tmp_path: Path) -> None:
    out = run_asserts(
        tmp_path, "airflow", AIRFLOW_GROUPS, AIRFLOW | {"airflow_fernet_key": "short"}
    )
    assert_stopped_with(out, "airflow_fernet_key", "expected a Fernet key")
    assert "short" not in out.stdout


def test_airflow_without_celery(tmp_path: Path) -> None:
    out = run_asserts(
        tmp_path, "airflow", AIRFLOW_GROUPS, AIRFLOW | {"airflow_extras": ["postgres", "fab"]}
    )
    assert_stopped_with(out, "airflow_extras", "expected celery among the extras")


METASTORE = {"metastore": {"db1": {"test_ipv4": ipv4("10.0.0.61")}}}


def test_mysql_good_input_passes(tmp_path: Path) -> None:
    out = run_asserts(tmp_path, "mysql", METASTORE, {"mysql_metastore_password": "s3cret"})
    assert_passed(out)


def test_mysql_missing_password(tmp_path: Path) -> None:
    out = run_asserts(tmp_path, "mysql", METASTORE)
    assert_stopped_with(out, "mysql_metastore_password", "expected a non-empty password")


def test_mysql_host_name_with_skip_name_resolve(tmp_path: Path) -> None:
    given = {"mysql_metastore_password": "s3cret", "mysql_metastore_allowed_host": "master1"}
    out = run_asserts(tmp_path, "mysql", METASTORE, given)
    assert_stopped_with(out, "mysql_metastore_allowed_host", "expected an address")


MASTERS = {"masters": {"m1": {"test_ipv4": ipv4("10.0.0.41")}}}


def test_failover_controller_good_input_passes(tmp_path: Path) -> None:
    given = {
        "failover_controller_mysql_host": "db1",
        "failover_controller_metastore_password": "pw",
    }
    out = run_asserts(tmp_path, "failover_controller", MASTERS, given)
    assert_passed(out)


def test_failover_controller_mysql_without_password(tmp_path: Path) -> None:
    out = run_asserts(
        tmp_path, "failover_controller", MASTERS, {"failover_controller_mysql_host": "db1"}
    )
    assert_stopped_with(out, "failover_controller_metastore_password", "expected a non-empty")


def test_haproxy_stats_user_with_a_colon(tmp_path: Path) -> None:
    given = {"haproxy_stats_user": "ops:x", "haproxy_stats_password": "s3cret"}
    out = run_asserts(
        tmp_path, "haproxy", {"loadbalancer": {"lb1": {"test_ipv4": ipv4("10.0.0.11")}}}, given
    )
    assert_stopped_with(out, "haproxy_stats_user", "expected a non-empty user name without ':'")
