"""A client of the VIP's PostgreSQL port for verify.yml (psycopg2, which Patroni brings).

  pg_client.py HOST write TAG                one committed row, tagged
  pg_client.py HOST wait-write TAG T0 LIMIT  retry that until it succeeds, or fail LIMIT s after T0
                                             (epoch seconds: the nodes share the host's clock)
  pg_client.py HOST count TAG                rows with that tag

It prints JSON; the password comes from PGPASSWORD, never the command line.
"""

import json
import sys
import time

import psycopg2

host, action, tag = sys.argv[1], sys.argv[2], sys.argv[3]


def connect():
    return psycopg2.connect(
        host=host, port=5432, dbname="airflow", user="airflow", connect_timeout=2
    )


def write():
    with connect() as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE IF NOT EXISTS molecule_ha (tag text, at timestamptz DEFAULT now())"
        )
        cur.execute("INSERT INTO molecule_ha (tag) VALUES (%s)", (tag,))
    conn.close()


if action == "write":
    write()
    print(json.dumps({"written": tag}))
elif action == "wait-write":
    start, limit = float(sys.argv[4]), float(sys.argv[5])
    attempts, error = 0, None
    while time.time() < start + limit:
        attempts += 1
        try:
            write()
        except psycopg2.Error as exc:
            error = str(exc).strip().splitlines()[0]
            time.sleep(0.2)
            continue
        print(json.dumps({"elapsed_s": round(time.time() - start, 2), "attempts": attempts}))
        break
    else:
        sys.exit(f"no write through {host} within {limit} s ({attempts} attempts, last: {error})")
elif action == "count":
    conn = connect()
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM molecule_ha WHERE tag = %s", (tag,))
        print(json.dumps({"count": cur.fetchone()[0]}))
    conn.close()
