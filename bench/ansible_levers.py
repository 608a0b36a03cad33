"""Provisioning levers, side by side on one converged cluster.

Re-runs `playbooks/site.yml` (the idempotent re-converge an operator waits
for) against an inventory of node containers that is already converged, once
per variant per trial, the variants interleaved so that the machine's noise
falls on all of them alike. Writes bench/results/ansible_levers.json with
min/median/p95 per variant and each variant's median as a ratio of the
baseline's (Ansible's own linear strategy over `docker exec`).

Variants (all with pipelining; `--variants` picks some):
  linear_docker       ansible-core's linear strategy, community.docker.docker
  linear_docker_implicit   the same, gathering facts in every play (the old default)
  mitogen_docker      Mitogen's linear strategy over docker exec
  linear_ssh          linear strategy over SSH, ControlPersist
  mitogen_ssh         Mitogen over SSH

SSH variants put a throwaway key into each container's root account and
read the containers' addresses from the engine. Not a test: nothing is
asserted. Usage, after `molecule converge -s default`:

  .venv/bin/python bench/ansible_levers.py --inventory DIR [--trials N] [--check]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.stats import summary  # noqa: E402

BASELINE = "linear_docker"
VARIANTS = [
    "linear_docker",
    "mitogen_docker",
    "linear_ssh",
    "mitogen_ssh",
    "linear_docker_implicit",
]


def docker(*argv: str) -> str:
    return subprocess.run(["docker", *argv], check=True, capture_output=True, text=True).stdout


def ssh_access(hosts: list[str], workdir: Path) -> dict[str, str]:
    """A key in every container's root account; returns host -> address."""
    key = workdir / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    addresses = {}
    for host in hosts:
        docker("exec", host, "mkdir", "-p", "-m", "0700", "/root/.ssh")
        docker("cp", f"{key}.pub", f"{host}:/root/.ssh/authorized_keys")
        docker("exec", host, "chown", "root:root", "/root/.ssh/authorized_keys")
        addresses[host] = docker(
            "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", host
        ).strip()
    return addresses


def variant_inventory(
    variant: str, inventory: Path, addresses: dict[str, str], workdir: Path
) -> Path:
    """A copy of the inventory whose host_vars pick the variant's connection.

    host_vars files win over the inventory file's own host variables, and
    (unlike extra vars) leave tasks delegated to localhost alone.
    """
    copy = workdir / f"inventory-{variant}"
    if not copy.exists():
        shutil.copytree(inventory, copy)
        (copy / "host_vars").mkdir(exist_ok=True)
        for host, address in addresses.items():
            if "_ssh" in variant:
                conn = {
                    "ansible_connection": "ssh",
                    "ansible_host": address,
                    "ansible_user": "root",
                    "ansible_private_key_file": str(workdir / "id_ed25519"),
                }
            else:
                # Mitogen takes over the connection named `docker` (the same
                # plugin as community.docker.docker, which it leaves alone).
                name = "docker" if variant.startswith("mitogen") else "community.docker.docker"
                conn = {"ansible_connection": name}
            (copy / "host_vars" / f"{host}.yml").write_text(json.dumps(conn))
    return copy


def run_variant(
    variant: str, inventory: Path, addresses: dict[str, str], workdir: Path, check: bool
) -> float:
    env = dict(os.environ)
    env.update(
        ANSIBLE_ROLES_PATH=str(REPO / "roles"),
        ANSIBLE_PIPELINING="true",
        ANSIBLE_GATHERING="implicit" if variant.endswith("_implicit") else "smart",
        ANSIBLE_DEPRECATION_WARNINGS="false",
        ANSIBLE_PYTHON_INTERPRETER="/usr/bin/python3",
        ANSIBLE_FORKS="8",
    )
    if variant.startswith("mitogen"):
        env.update(
            ANSIBLE_STRATEGY_PLUGINS=str(REPO / "molecule/shared/strategy"),
            ANSIBLE_STRATEGY="mitogen_linear",
        )
    else:
        env["ANSIBLE_STRATEGY"] = "linear"
    if "_ssh" in variant:
        env["ANSIBLE_SSH_ARGS"] = (
            "-o ControlMaster=auto -o ControlPersist=60s "
            f"-o UserKnownHostsFile={workdir / 'known_hosts'} -o StrictHostKeyChecking=accept-new"
        )
    argv = [
        str(REPO / ".venv/bin/ansible-playbook"),
        "-i",
        str(variant_inventory(variant, inventory, addresses, workdir)),
    ]
    argv.append(str(REPO / "playbooks/site.yml"))
    if check:
        argv.append("--check")
    log = workdir / f"{variant}.log"
    started = time.monotonic()
    with log.open("a") as out:
        result = subprocess.run(argv, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"ansible_levers: {variant} failed (rc {result.returncode}), see {log}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inventory", type=Path, required=True)
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--check", action="store_true", help="time site.yml --check instead")
    args = parser.parse_args()
    variants = args.variants.split(",")
    inventory_hosts = json.loads(
        subprocess.run(
            [str(REPO / ".venv/bin/ansible-inventory"), "-i", str(args.inventory), "--list"],
            check=True, capture_output=True, text=True,
        ).stdout
    )["_meta"]["hostvars"]  # fmt: skip
    workdir = Path(tempfile.mkdtemp(prefix="ansible-levers-", dir=REPO / ".build"))
    uses_ssh = any("_ssh" in v for v in variants)
    addresses = (
        ssh_access(sorted(inventory_hosts), workdir)
        if uses_ssh
        else dict.fromkeys(inventory_hosts, "")
    )
    times: dict[str, list[float]] = {v: [] for v in variants}
    for trial in range(args.trials):
        for variant in variants:
            elapsed = run_variant(variant, args.inventory, addresses, workdir, args.check)
            times[variant].append(elapsed)
            print(f"trial {trial + 1} {variant}: {elapsed:.1f} s", flush=True)
    step = "check" if args.check else "reconverge"
    results: dict[str, Any] = {}
    for variant, values in times.items():
        results[variant] = summary(values, None)
    if BASELINE in times:
        base = summary(times[BASELINE], None)["median"]
        for variant in variants:
            results[variant]["ratio_to_baseline"] = round(results[variant]["median"] / base, 3)
    out_path = REPO / "bench/results/ansible_levers.json"
    previous = json.loads(out_path.read_text()) if out_path.exists() else {}
    previous[step] = {
        "hosts": len(inventory_hosts),
        "unit": "seconds of wall time for one site.yml run on a converged cluster",
        "baseline": BASELINE,
        "variants": results,
    }
    out_path.write_text(json.dumps(previous, indent=2) + "\n")
    print(json.dumps(previous[step], indent=2))


if __name__ == "__main__":
    main()
