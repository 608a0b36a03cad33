"""side_effect.yml's and verify.yml's client of Airflow's database, THROUGH the
virtual IP (HAProxy's PostgreSQL port, the Patroni primary): every answer it
gives also says that the VIP, HAProxy and the primary serve writes.

Run by Airflow's Python on a node, the script on stdin:

    docker exec -i NODE /opt/airflow/bin/python - ACTION [ARG] < probe_db.py

It takes the probe's connection URL from /etc/airflow/airflow.env (as the
probe DAG does), so no secret reaches a command line. It prints JSON.

  now               the database's clock (text, and epoch seconds) and the
                    server's address (the primary)
  write TAG         commit one row: the server's address and clock
  fresh SINCE       scheduled ha_probe runs started after SINCE, and the
                    first one's end (success only)
  missed SINCE      minutes after SINCE with no scheduled run, up to the
                    latest scheduled run
  snapshot          every finished DAG run and task instance with its state
  lost SNAPSHOT     what a snapshot (JSON) holds that is now missing or in
                    another state
  counts            probe executions, duplicated tries, successful runs
"""

import json
import sys
from urllib.parse import unquote, urlsplit

ENV_FILE = "/etc/airflow/airflow.env"
CONN_VAR = "AIRFLOW_CONN_HA_PROBE_DB"


def connect():
    import psycopg2

    url = None
    with open(ENV_FILE) as env:
        for line in env:
            key, _, value = line.strip().partition("=")
            if key == CONN_VAR:
                url = value.strip('"').replace('\\"', '"').replace("\\\\", "\\")
    if url is None:
        raise SystemExit(f"{ENV_FILE}: no {CONN_VAR}")
    parts = urlsplit(url)
    return psycopg2.connect(
        host=parts.hostname,
        port=parts.port or 5432,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        dbname=parts.path.lstrip("/"),
        connect_timeout=5,
    )


def query(sql, args=()):
    conn = connect()
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def main(action, *args):
    if action == "now":
        now, epoch, server = query(
            "SELECT now()::text, extract(epoch FROM now())::float8, host(inet_server_addr())"
        )[0]
        return {"now": now, "epoch": epoch, "server": server}
    if action == "write":
        conn = connect()
        try:
            with conn, conn.cursor() as cur:
                cur.execute(
                    "CREATE TABLE IF NOT EXISTS ha_failover_writes"
                    " (tag text, at timestamptz DEFAULT now())"
                )
                cur.execute("INSERT INTO ha_failover_writes (tag) VALUES (%s)", (args[0],))
                cur.execute(
                    "SELECT pg_is_in_recovery(), host(inet_server_addr()),"
                    " extract(epoch FROM now())::float8"
                )
                in_recovery, server, at = cur.fetchone()
        finally:
            conn.close()
        return {"in_recovery": in_recovery, "server": server, "at": at}
    if action == "fresh":
        rows = query(
            "SELECT count(*), extract(epoch FROM min(end_date))::float8 FROM dag_run"
            " WHERE dag_id = 'ha_probe' AND run_type = 'scheduled' AND state = 'success'"
            " AND start_date > %s",
            (args[0],),
        )
        return {"count": rows[0][0], "first_end": rows[0][1]}
    if action == "missed":
        # Minute ticks from the first whole minute after SINCE to the latest
        # scheduled run, against the runs whose interval ends there (the same
        # for Airflow's cron timetables with and without data intervals).
        rows = query(
            "WITH latest AS (SELECT max(data_interval_end) AS t FROM dag_run"
            "  WHERE dag_id = 'ha_probe' AND run_type = 'scheduled'),"
            " ticks AS (SELECT generate_series(date_trunc('minute', %s::timestamptz)"
            "  + interval '1 minute', (SELECT t FROM latest), interval '1 minute') AS t)"
            " SELECT count(*) FROM ticks WHERE NOT EXISTS (SELECT 1 FROM dag_run d"
            "  WHERE d.dag_id = 'ha_probe' AND d.run_type = 'scheduled'"
            "  AND d.data_interval_end = ticks.t)",
            (args[0],),
        )
        return {"missed": rows[0][0]}
    if action in ("snapshot", "lost"):
        runs = query(
            "SELECT dag_id || '/' || run_id, state FROM dag_run"
            " WHERE state IN ('success', 'failed')"
        )
        tis = query(
            "SELECT dag_id || '/' || run_id || '/' || task_id || '/' || map_index, state"
            " FROM task_instance WHERE state IN ('success', 'failed', 'skipped')"
        )
        now = {"runs": dict(runs), "task_instances": dict(tis)}
        if action == "snapshot":
            return now
        before = json.loads(args[0])
        lost = [
            f"{key}: {state} -> {now[kind].get(key)}"
            for kind in ("runs", "task_instances")
            for key, state in before[kind].items()
            if now[kind].get(key) != state
        ]
        return {"lost": len(lost), "examples": lost[:10]}
    if action == "counts":
        rows = query(
            "SELECT (SELECT count(*) FROM ha_probe_runs),"
            " (SELECT count(*) FROM (SELECT 1 FROM ha_probe_runs"
            "  GROUP BY dag_id, run_id, task_id, try_number HAVING count(*) > 1) AS d),"
            " (SELECT count(*) FROM dag_run WHERE dag_id = 'ha_probe' AND state = 'success')"
        )
        executions, duplicates, successes = rows[0]
        return {"executions": executions, "duplicates": duplicates, "successes": successes}
    raise SystemExit(f"unknown action {action!r}")


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:])))
