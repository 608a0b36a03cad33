"""The controller node image: the node image plus ha-toolkit installed from a
wheel of this repo, as on a production master, and the test fixtures.

Two layers, each tagged by a hash of what went into it, so a run rebuilds
only what changed: dependencies (pyproject.toml) and code (ha_toolkit/,
playbooks/, the fixtures). Wheels are built on the host: pip inside the
containers has no route to a package index it trusts.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
from pathlib import Path

import docker
import docker.errors

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
VENV = "/opt/ha-toolkit"


def _hash_paths(*paths: Path, extra: str = "") -> str:
    digest = hashlib.sha256(extra.encode())
    for root in paths:
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for f in files:
            if "__pycache__" in f.parts:
                continue
            digest.update(str(f.relative_to(REPO)).encode())
            digest.update(f.read_bytes())
    return digest.hexdigest()[:12]


def _tar_dir(files: dict[str, Path]) -> bytes:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for arcname, path in files.items():
            tar.add(str(path), arcname=arcname)
    return data.getvalue()


def _build_layer(
    client: docker.DockerClient,
    base: str,
    tag: str,
    files: dict[str, Path],
    script: str,
    volumes: dict[str, dict[str, str]] | None = None,
) -> str:
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    container = client.containers.run(
        base,
        command=["sleep", "infinity"],
        detach=True,
        labels={"ha-toolkit.build": "1"},
        volumes=volumes or {},
    )
    try:
        container.exec_run(["mkdir", "-p", "/tmp/build"])
        container.put_archive("/tmp/build", _tar_dir(files))
        code, out = container.exec_run(["/bin/bash", "-euc", script])
        if code != 0:
            raise RuntimeError(f"building {tag} failed: {out.decode(errors='replace')[-2000:]}")
        container.exec_run(["rm", "-rf", "/tmp/build"])
        repository, _, version = tag.partition(":")
        container.commit(
            repository=repository,
            tag=version,
            changes=['CMD ["/lib/systemd/systemd"]', "ENV container=docker"],
        )
    finally:
        container.remove(force=True)
    return tag


def _wheels(out: Path, deps: bool) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("ha_toolkit-*.whl"):
        old.unlink()
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--disable-pip-version-check",
        "--wheel-dir",
        str(out),
        str(REPO),
    ]
    if not deps:
        cmd.insert(4, "--no-deps")
    subprocess.run(cmd, check=True, capture_output=True)
    return sorted(out.glob("*.whl"))


def controller_image(client: docker.DockerClient, base_image: str, build_dir: Path) -> str:
    deps_tag = "ha-toolkit-controller-deps:" + _hash_paths(
        REPO / "pyproject.toml", extra=base_image
    )
    try:
        client.images.get(deps_tag)
    except docker.errors.ImageNotFound:
        wheels = _wheels(build_dir / "wheelhouse", deps=True)
        _build_layer(
            client,
            base_image,
            deps_tag,
            {f"wheelhouse/{w.name}": w for w in wheels},
            f"python3 -m venv {VENV}\n"
            f"{VENV}/bin/pip install -q --no-index --find-links /tmp/build/wheelhouse "
            "ha-toolkit\n",
        )
    code_tag = "ha-toolkit-controller:" + _hash_paths(
        REPO / "ha_toolkit", REPO / "playbooks", FIXTURES, extra=deps_tag
    )
    try:
        client.images.get(code_tag)
        return code_tag
    except docker.errors.ImageNotFound:
        pass
    wheel = next(w for w in _wheels(build_dir / "wheel", deps=False) if "ha_toolkit" in w.name)
    files = {
        f"wheel/{wheel.name}": wheel,
        "node_action.py": REPO / "ha_toolkit" / "node_action.py",
        "stand_in_scheduler.py": FIXTURES / "stand_in_scheduler.py",
        "airflow-scheduler.service": FIXTURES / "airflow-scheduler.service",
        "ha-toolkit-binds.conf": FIXTURES / "ha-toolkit-binds.conf",
    }
    script = f"""
{VENV}/bin/pip install -q --no-index --no-deps --force-reinstall /tmp/build/wheel/*.whl
install -D -m 0755 /tmp/build/node_action.py /usr/local/libexec/ha-toolkit/node-action
install -D -m 0755 /tmp/build/stand_in_scheduler.py /usr/local/bin/stand-in-scheduler
install -D -m 0644 /tmp/build/airflow-scheduler.service \
    /etc/systemd/system/airflow-scheduler.service
install -D -m 0644 /tmp/build/ha-toolkit-binds.conf \
    /etc/systemd/system/airflow-scheduler.service.d/ha-toolkit.conf
install -d -m 0700 /etc/ha-toolkit /var/lib/ha-toolkit
"""
    return _build_layer(client, deps_tag, code_tag, files, script)


AIRFLOW_UNIT = """[Unit]
Description=Airflow scheduler (real, SQLite; test image)

[Service]
Environment=AIRFLOW_HOME=/var/lib/airflow
Environment=AIRFLOW__CORE__LOAD_EXAMPLES=False
Environment=AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK=True
Environment=AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST=127.0.0.1
ExecStart=/opt/airflow/bin/airflow scheduler
Restart=on-failure
RestartSec=1
"""


def airflow_image(client: docker.DockerClient, controller_tag: str, build_dir: Path) -> str:
    """The controller image with a real Airflow scheduler as the `airflow-scheduler`
    unit (SQLite metadata database per node), from the Airflow wheelhouse built on
    the host by scripts/airflow-wheelhouse.sh."""
    wheelhouse = build_dir / "wheelhouse-airflow"
    subprocess.run(
        ["bash", str(REPO / "scripts" / "airflow-wheelhouse.sh"), str(wheelhouse)], check=True
    )
    stamp = (wheelhouse / ".stamp").read_text().strip()
    tag = "ha-toolkit-airflow:" + _hash_paths(extra=controller_tag + stamp + AIRFLOW_UNIT)
    unit = build_dir / "airflow-scheduler.service"
    unit.write_text(AIRFLOW_UNIT)
    script = """
python3 -m venv /opt/airflow
/opt/airflow/bin/pip install -q --no-index --find-links /wheelhouse apache-airflow psycopg2-binary
install -m 0644 /tmp/build/airflow-scheduler.service /etc/systemd/system/airflow-scheduler.service
mkdir -p /var/lib/airflow
AIRFLOW_HOME=/var/lib/airflow AIRFLOW__CORE__LOAD_EXAMPLES=False /opt/airflow/bin/airflow db migrate
"""
    return _build_layer(
        client,
        controller_tag,
        tag,
        {"airflow-scheduler.service": unit},
        script,
        volumes={str(wheelhouse.resolve()): {"bind": "/wheelhouse", "mode": "ro"}},
    )
