#!/usr/bin/env python3
"""Forward TCP connections: tcp-forward.py LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT

The demo's gateway container (inventory/demo/containers.yml) runs it to
serve http://127.0.0.1:8080 on the Docker host from the cluster's virtual IP:
it stands in for the route a user's network has to the VIP, nothing more (it
is not part of the cluster, and a real deployment has no such hop). Each
accepted connection gets a new connection to the target; either side closing
closes both. Standard library only.
"""

import asyncio
import signal
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def main(listen_host: str, listen_port: int, target_host: str, target_port: int) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            target_r, target_w = await asyncio.wait_for(
                asyncio.open_connection(target_host, target_port), timeout=5
            )
        except OSError:  # TimeoutError included
            client_w.close()
            return
        await asyncio.gather(pipe(client_r, target_w), pipe(target_r, client_w))

    server = await asyncio.start_server(handle, listen_host, listen_port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 5:
        raise SystemExit(__doc__.splitlines()[0])
    host, port, target, target_port = sys.argv[1:]
    # PID 1 of its container: without a handler, SIGTERM (docker stop) would be ignored.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    asyncio.run(main(host, int(port), target, int(target_port)))
