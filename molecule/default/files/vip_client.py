"""A client of the cluster's virtual IP for verify.yml, run by Airflow's Python
(psycopg2 and kombu come with it) on a host that holds no part of the VIP.

  vip_client.py VIP pg-write TAG        commit one row through HAProxy's PostgreSQL port
  vip_client.py VIP pg-rows RUN_ID      the ha_probe_runs rows of one DAG run
  vip_client.py VIP amqp                log in to RabbitMQ through HAProxy's AMQP port

It prints JSON. Passwords come from PGPASSWORD and AMQP_PASSWORD, never the
command line; user, database and vhost are Airflow's (`airflow`).
"""

import json
import os
import sys

vip, action = sys.argv[1], sys.argv[2]


def pg():
    import psycopg2

    return psycopg2.connect(
        host=vip, port=5432, dbname="airflow", user="airflow", connect_timeout=5
    )


if action == "pg-write":
    conn = pg()
    with conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE IF NOT EXISTS molecule_vip (tag text, at timestamptz DEFAULT now())"
        )
        cur.execute("INSERT INTO molecule_vip (tag) VALUES (%s)", (sys.argv[3],))
        cur.execute("SELECT pg_is_in_recovery(), host(inet_server_addr())")
        in_recovery, server = cur.fetchone()
        cur.execute("SELECT count(*) FROM molecule_vip WHERE tag = %s", (sys.argv[3],))
        (rows,) = cur.fetchone()
    conn.close()
    print(json.dumps({"in_recovery": in_recovery, "server": server, "rows": rows}))
elif action == "pg-rows":
    conn = pg()
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT task_id, try_number, hostname FROM ha_probe_runs WHERE run_id = %s",
            (sys.argv[3],),
        )
        rows = [list(row) for row in cur.fetchall()]
    conn.close()
    print(json.dumps(rows))
elif action == "amqp":
    from kombu import Connection

    with Connection(
        hostname=vip,
        port=5672,
        userid="airflow",
        password=os.environ["AMQP_PASSWORD"],
        virtual_host="airflow",
        connect_timeout=5,
    ) as conn:
        conn.connect()
        props = conn.connection.server_properties
        print(
            json.dumps(
                {
                    "connected": conn.connected,
                    "product": props.get("product"),
                    "node": props.get("cluster_name"),
                }
            )
        )
else:
    raise SystemExit(f"unknown action {action!r}")
