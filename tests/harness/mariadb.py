"""A throwaway MariaDB server: its own data dir, a free port, stopped by PID."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from pathlib import Path

import pymysql

from .procs import Process, free_port, wait_for

DATABASE = "ha_toolkit"


class MariaDBServer:
    """`mariadbd` bound to `host` (loopback by default, or a Docker network's
    gateway so node containers can reach it)."""

    def __init__(self, workdir: Path, host: str = "127.0.0.1") -> None:
        self.workdir = workdir
        self.host = host
        self.port = free_port(host)
        self.user = "ha_toolkit"
        self.password = secrets.token_hex(12)
        self.database = DATABASE
        self.datadir = workdir / "data"
        self.process: Process | None = None

    @property
    def dsn(self) -> str:
        return f"mysql://{self.user}:{self.password}@{self.host}:{self.port}/{self.database}"

    def _argv(self) -> list[str]:
        return [
            shutil.which("mariadbd") or "/usr/sbin/mariadbd",
            "--no-defaults",
            "--user=root",
            f"--datadir={self.datadir}",
            f"--socket={self.workdir / 'mysqld.sock'}",
            f"--pid-file={self.workdir / 'mysqld.pid'}",
            f"--port={self.port}",
            f"--bind-address={self.host}",
            "--skip-name-resolve",
            "--innodb-buffer-pool-size=32M",
            "--performance-schema=OFF",
            "--skip-log-bin",
        ]

    def start(self) -> None:
        if not self.datadir.exists():
            self.workdir.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [
                    "mariadb-install-db",
                    "--no-defaults",
                    f"--datadir={self.datadir}",
                    "--user=root",
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                ],
                check=True,
                capture_output=True,
            )
            first_start = True
        else:
            first_start = False
        self.process = Process(self._argv(), self.workdir / "mariadbd.log")
        self.process.start()
        if first_start:
            wait_for(self._root_answers, 30, f"mariadbd on {self.host}:{self.port}")
            self._create_user()
        wait_for(self.answers, 30, f"mariadbd on {self.host}:{self.port}")

    def _root_answers(self) -> bool:
        assert self.process is not None
        if not self.process.running():
            raise RuntimeError(f"mariadbd exited: {self.process.tail(3)}")
        conn = pymysql.connect(unix_socket=str(self.workdir / "mysqld.sock"), user="root")
        conn.close()
        return True

    def _create_user(self) -> None:
        conn = pymysql.connect(
            unix_socket=str(self.workdir / "mysqld.sock"), user="root", autocommit=True
        )
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")
            cur.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (self.user, self.password))
            cur.execute(f"GRANT ALL ON `{self.database}`.* TO %s@'%%'", (self.user,))
        conn.close()

    def connect(self) -> pymysql.connections.Connection[pymysql.cursors.Cursor]:
        return pymysql.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            database=self.database,
            autocommit=True,
            connect_timeout=2,
        )

    def answers(self) -> bool:
        """Readiness is a real query (mariadb-admin ping says yes even on access denied)."""
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                return cur.fetchone() == (1,)
        finally:
            conn.close()

    def stop(self) -> None:
        if self.process:
            self.process.stop(30)

    def kill(self) -> None:
        if self.process:
            self.process.kill()

    def restart(self) -> None:
        self.stop()
        self.start()
