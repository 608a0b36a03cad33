"""ha_probe: a canary DAG that makes duplicate task executions countable.

Every run of its one task inserts a row (dag_id, run_id, task_id, try_number,
hostname, recorded_at) into the PostgreSQL table ``ha_probe_runs``, creating
the table when missing. A healthy cluster has exactly one row per
(dag_id, run_id, task_id, try_number); two rows mean two schedulers (or a
redelivered Celery message) ran the same try twice. ``hostname`` shows which
Celery worker ran it.

The database is the Airflow connection ``ha_probe_db`` (the ``airflow`` role
defines it from ``airflow_connections``, as an AIRFLOW_CONN_HA_PROBE_DB
environment variable). Scheduled every minute, no catch-up, paused on
creation: unpause it (UI or ``PATCH /api/v2/dags/ha_probe``) to start it.

    SELECT run_id, task_id, try_number, count(*) FROM ha_probe_runs
    GROUP BY 1, 2, 3 HAVING count(*) > 1;      -- duplicates: must be empty
"""

from __future__ import annotations

import socket
from datetime import datetime, timedelta

from airflow.sdk import BaseHook, dag, get_current_context, task

CONN_ID = "ha_probe_db"
TABLE = "ha_probe_runs"


@dag(
    dag_id="ha_probe",
    schedule="* * * * *",
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=3,
    dagrun_timeout=timedelta(minutes=10),
    tags=["ha-toolkit"],
    # No retries: one row per run is the expected count.
    default_args={"retries": 0},
)
def ha_probe() -> None:
    @task(task_id="record")
    def record() -> str:
        import psycopg2  # imported here: DAG parsing must not need the driver

        context = get_current_context()
        ti = context["ti"]
        hostname = socket.gethostname()
        conn = BaseHook.get_connection(CONN_ID)
        db = psycopg2.connect(
            host=conn.host,
            port=conn.port or 5432,
            user=conn.login,
            password=conn.password,
            dbname=conn.schema,
            connect_timeout=10,
        )
        try:
            with db, db.cursor() as cur:  # one transaction, committed on success
                cur.execute(
                    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
                    " id BIGSERIAL PRIMARY KEY,"
                    " dag_id TEXT NOT NULL, run_id TEXT NOT NULL, task_id TEXT NOT NULL,"
                    " try_number INTEGER NOT NULL, hostname TEXT NOT NULL,"
                    " recorded_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                )
                cur.execute(
                    f"INSERT INTO {TABLE} (dag_id, run_id, task_id, try_number, hostname)"
                    " VALUES (%s, %s, %s, %s, %s)",
                    (ti.dag_id, ti.run_id, ti.task_id, ti.try_number, hostname),
                )
        finally:
            db.close()
        return hostname

    record()


ha_probe()
