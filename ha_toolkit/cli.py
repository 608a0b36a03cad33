"""The `ha-toolkit` command: parse, load the config, run one use case, print.

Exit codes: 0 success; 1 the operation failed or the cluster is not as asked
(e.g. no scheduler runs); 2 bad input (config, arguments, inventory);
3 several schedulers run (is-scheduler-running).

Output: a table or sentence for people, or with ``--json`` (before or after the
command, on every command) exactly one JSON document on stdout, also when the
command fails. Errors always go to stderr as one line as well, so a script can
show them as they are.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ha_toolkit import __version__
from ha_toolkit.alerts import Alerter
from ha_toolkit.config import (
    DEFAULT_PATH,
    Config,
    ConfigError,
    config_from_airflow_cfg,
    load_config,
    write_sample_config,
)
from ha_toolkit.metastore import ClusterRecord, Metastore, MetastoreError, open_metastore
from ha_toolkit.models import NodeStatus
from ha_toolkit.nodes import InventoryError, SchedulerNodes
from ha_toolkit.warm_ansible import WarmAnsible

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_SEVERAL = 0, 1, 2, 3
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
log = logging.getLogger("ha_toolkit.cli")


class UsageError(Exception):
    """Bad input that is not in the config file (exit 2)."""


# -- helpers ------------------------------------------------------------------------------------
def _table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    cells = [[str(c) for c in header], *[["-" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


def _print_json(data: object) -> None:
    print(json.dumps(data, indent=2, default=str, sort_keys=True))


def _report(args: argparse.Namespace, text: str, data: dict[str, Any]) -> None:
    """One outcome: `text` for people, or `data` as JSON with --json."""
    if args.json:
        _print_json(data)
    else:
        print(text)


def _refuse(args: argparse.Namespace, message: str, data: dict[str, Any]) -> int:
    """A refused operation: one line on stderr (and `data` with --json); exit 1."""
    print(message, file=sys.stderr)
    if args.json:
        _print_json({**data, "error": message})
    return EXIT_FAILED


def _open_store(config: Config) -> Metastore:
    return open_metastore(config.metastore)


def _nodes(config: Config) -> SchedulerNodes:
    return SchedulerNodes(
        config.inventory,
        config.masters_group,
        config.service.unit,
        config.service.health_url,
        config.timings.stop_timeout,
        data_dir=None,
    )


def _masters_with_this_node(config: Config) -> SchedulerNodes:
    """The masters, refusing (exit 2) a config whose node_name is not one of them: its
    controller could never confirm a placement, and would fence its own node for ever."""
    nodes = _nodes(config)
    if config.node_name not in nodes.masters:
        raise UsageError(
            f"{config.inventory}: node_name {config.node_name!r} is not in group "
            f"{config.masters_group!r} (hosts: {', '.join(nodes.masters)})"
        )
    return nodes


def _record_dict(record: ClusterRecord) -> dict[str, Any]:
    data = asdict(record)
    data["failed_nodes"] = list(record.failed_nodes)
    data["standbys"] = list(record.standbys)
    data["live_standbys"] = list(record.live_standbys)
    return data


# -- commands -----------------------------------------------------------------------------------
def cmd_controller_run(config: Config, args: argparse.Namespace) -> int:
    from ha_toolkit.controller import Controller
    from ha_toolkit.local import LocalScheduler, watchdog_interval
    from ha_toolkit.metrics import Metrics

    nodes = _masters_with_this_node(config)
    watchdog = watchdog_interval()
    if watchdog is not None and watchdog >= config.timings.fence_after:
        raise UsageError(
            f"systemd WatchdogSec={watchdog:g} of the controller unit must be less than "
            f"timings.fence_after ({config.timings.fence_after:g}) in {config.path}"
        )
    store = _open_store(config)
    # Every poll forks an already imported ansible-playbook (warm_ansible); the
    # self-fencing stop (LocalScheduler) keeps the plain cold run.
    with WarmAnsible() as warm:
        nodes.warm = warm
        controller = Controller(
            config,
            store,
            nodes,
            LocalScheduler(config.node_name, config.service.unit, config.timings.stop_timeout),
            Alerter(config.alerts),
            Metrics(config.metrics_listen),
        )
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: controller.stop())
        controller.run()
    return EXIT_OK


def cmd_init(config_path: Path, args: argparse.Namespace) -> int:
    if not config_path.exists():
        values: dict[str, Any] = {}
        masters: list[str] = []
        notes: list[str] = []
        if args.from_airflow_cfg:
            migration = config_from_airflow_cfg(Path(args.from_airflow_cfg))
            values, masters, notes = migration.values, migration.masters, migration.warnings
            if not args.json:
                for note in notes:
                    print(f"note: {note}", file=sys.stderr)
                if masters:
                    print(
                        "masters from airflow.cfg (put them in the inventory's masters group): "
                        + ", ".join(masters)
                    )
        write_sample_config(config_path, values)
        _report(
            args,
            f"wrote {config_path}: fill in the metastore and run `ha-toolkit init` again",
            {"wrote": str(config_path), "masters": masters, "notes": notes},
        )
        return EXIT_OK
    config = load_config(config_path)
    for warning in config.warnings:
        log.warning("%s", warning)
    store = _open_store(config)
    try:
        store.setup()
    finally:
        store.close()
    _report(
        args,
        f"metastore ready ({config.metastore.type}, prefix {config.metastore.prefix!r})",
        {"metastore": "ready", "type": config.metastore.type, "prefix": config.metastore.prefix},
    )
    return EXIT_OK


def cmd_check_config(config_path: Path, args: argparse.Namespace) -> int:
    """Load the file as `controller run` would; nothing else (no metastore, no network)."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"ha-toolkit: {exc}", file=sys.stderr)
        if args.json:
            _print_json({"valid": False, "path": str(config_path), "error": str(exc)})
        return EXIT_BAD_INPUT
    if args.json:
        # The effective timings and service (defaults applied): the role sizes the
        # units' WatchdogSec and TimeoutStopSec from them and binds the scheduler's
        # unit, instead of repeating the controller's defaults.
        _print_json(
            {
                "valid": True,
                "path": str(config_path),
                "warnings": list(config.warnings),
                "timings": dataclasses.asdict(config.timings),
                "service": dataclasses.asdict(config.service),
            }
        )
    else:
        for warning in config.warnings:
            print(f"note: {warning}", file=sys.stderr)
        print(f"{config_path}: ok")
    return EXIT_OK


def cmd_test_connection(config: Config, args: argparse.Namespace) -> int:
    # The check `controller run` makes, first: a config it would refuse does not pass.
    nodes = _masters_with_this_node(config)
    ok = True
    rows: list[list[object]] = []
    store = _open_store(config)
    try:
        store.read()
        rows.append(["metastore", config.metastore.type, "ok"])
    except MetastoreError as exc:
        rows.append(["metastore", config.metastore.type, f"FAILED: {exc}"])
        ok = False
    finally:
        store.close()
    for node, st in nodes.run({}, epoch=0, timeout=60).items():
        rows.append(["master", node, "ok" if st.reachable else f"FAILED: {st.error}"])
        ok = ok and st.reachable
    if args.json:
        _print_json([{"kind": k, "name": n, "result": r} for k, n, r in rows])
    else:
        print(_table(rows, ["kind", "name", "result"]))
    return EXIT_OK if ok else EXIT_FAILED


def _status_rows(statuses: dict[str, NodeStatus]) -> list[list[object]]:
    return [
        [
            n,
            "yes" if s.running else "no",
            s.active_state,
            s.main_pid or None,
            {True: "healthy", False: "unhealthy", None: "-"}[s.healthy] if s.running else None,
            s.error or None,
        ]
        for n, s in statuses.items()
    ]


def cmd_is_scheduler_running(config: Config, args: argparse.Namespace) -> int:
    statuses = _nodes(config).run({}, epoch=0, timeout=60)
    running = [n for n, s in statuses.items() if s.running]
    if args.json:
        _print_json({n: asdict(s) for n, s in statuses.items()})
    else:
        print(
            _table(_status_rows(statuses), ["node", "running", "state", "pid", "health", "error"])
        )
    if len(running) > 1:
        return EXIT_SEVERAL
    return EXIT_OK if running else EXIT_FAILED


def cmd_status(config: Config, args: argparse.Namespace) -> int:
    store = _open_store(config)
    try:
        record = store.read()
        events = store.events(args.limit) if args.history else []
    finally:
        store.close()
    health: str | None = None
    if record.scheduler_node and not args.no_check:
        try:
            st = _nodes(config).run({}, 0, timeout=30, hosts=[record.scheduler_node])
            s = st[record.scheduler_node]
            health = (
                "unreachable"
                if not s.reachable
                else "stopped"
                if not s.running
                else {True: "healthy", False: "unhealthy", None: "running"}[s.healthy]
            )
        except InventoryError as exc:
            health = f"unknown ({exc})"
    if args.json:
        data = _record_dict(record)
        data["scheduler_health"] = health
        if args.history:
            data["events"] = [asdict(e) for e in events]
        _print_json(data)
        return EXIT_OK
    rows: list[list[object]] = [
        ["active controller", record.holder or "none"],
        ["epoch", record.epoch],
        [
            "lease remaining",
            f"{record.lease_remaining:.1f} s" if record.lease_remaining is not None else None,
        ],
        ["scheduler node", record.scheduler_node or "none"],
        ["scheduler health", health],
        ["failed nodes", ", ".join(record.failed_nodes) or None],
        ["standbys", ", ".join(record.standbys) or None],
        ["paused", "yes" if record.paused else "no"],
        ["failover requested", record.failover_to],
        ["last poll", _ago(record.last_poll)],
    ]
    print(_table(rows, ["", ""]).split("\n", 1)[1])
    if args.history:
        print()
        print(
            _table(
                [[e.time, e.controller, e.epoch, e.action, e.node, e.result] for e in events],
                ["time", "controller", "epoch", "action", "node", "result"],
            )
        )
    return EXIT_OK


def _ago(when: datetime | None) -> str | None:
    if when is None:
        return None
    seconds = (datetime.now(UTC) - when.replace(tzinfo=when.tzinfo or UTC)).total_seconds()
    return f"{when.isoformat(timespec='seconds')} ({seconds:.0f} s ago)"


def cmd_metadata(config: Config, args: argparse.Namespace) -> int:
    # JSON with or without --json: this command exists to dump the record.
    store = _open_store(config)
    try:
        _print_json(_record_dict(store.read()))
    finally:
        store.close()
    return EXIT_OK


def cmd_clear_metadata(config: Config, args: argparse.Namespace) -> int:
    store = _open_store(config)
    try:
        record = store.read()
        if record.holder and not args.force:
            return _refuse(
                args,
                f"refused: controller {record.holder} holds the lease "
                f"(epoch {record.epoch}); stop the controllers or use --force",
                {"cleared": False},
            )
        store.clear()
    finally:
        store.close()
    _report(
        args,
        "metadata cleared (the event log and the epoch counter are kept)",
        {"cleared": True},
    )
    return EXIT_OK


def cmd_failover(config: Config, args: argparse.Namespace) -> int:
    masters = _nodes(config).masters
    if args.to and args.to not in masters:
        raise UsageError(
            f"--to {args.to}: not in group {config.masters_group!r} "
            f"of {config.inventory} (hosts: {', '.join(masters)})"
        )
    store = _open_store(config)
    try:
        before = store.read()
        outcome: dict[str, Any] = {
            "from": before.scheduler_node,
            "to": args.to,
            "requested": False,
            "scheduler_node": before.scheduler_node,
            "moved": False,
        }
        if before.holder is None:
            return _refuse(args, "refused: no ACTIVE controller to carry out the failover", outcome)
        store.request_failover(args.to)
        outcome["requested"] = True
        if not args.json:
            print(
                f"failover requested from {before.scheduler_node or 'none'} "
                f"to {args.to or 'the next master'}"
            )
        if args.wait <= 0:
            if args.json:
                _print_json(outcome)
            return EXIT_OK
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline:
            record = store.read()
            if record.failover_to is None:
                moved = record.scheduler_node != before.scheduler_node or (
                    args.to is not None and record.scheduler_node == args.to
                )
                outcome.update(scheduler_node=record.scheduler_node, moved=moved)
                _report(args, f"scheduler node is now {record.scheduler_node}", outcome)
                return EXIT_OK if moved else EXIT_FAILED
            time.sleep(0.2)
        return _refuse(
            args, f"the ACTIVE did not carry out the failover within {args.wait:.0f} s", outcome
        )
    finally:
        store.close()


def cmd_pause(config: Config, args: argparse.Namespace, paused: bool = True) -> int:
    store = _open_store(config)
    try:
        store.set_paused(paused)
    finally:
        store.close()
    _report(
        args,
        "paused: the ACTIVE controller takes no node action" if paused else "resumed",
        {"paused": paused},
    )
    return EXIT_OK


def cmd_send_test_alert(config: Config, args: argparse.Namespace) -> int:
    if config.alerts.smtp is None and config.alerts.webhook_url is None:
        raise UsageError(f"{config.path}: alerts: no smtp or webhook_url configured")
    errors = Alerter(config.alerts).send(
        f"[ha-toolkit] test alert from {config.node_name}",
        "This is a test alert sent by `ha-toolkit send-test-alert`.",
    )
    for error in errors:
        print(f"FAILED: {error}", file=sys.stderr)
    if args.json:
        _print_json({"sent": not errors, "errors": errors})
    elif not errors:
        print("test alert sent")
    return EXIT_FAILED if errors else EXIT_OK


def cmd_get_current_host(config: Config, args: argparse.Namespace) -> int:
    store = _open_store(config)
    try:
        record = store.read()
    finally:
        store.close()
    active = record.holder.split("#")[0] if record.holder else None
    if args.json:
        _print_json(
            {"active": active, "controller": record.holder, "scheduler": record.scheduler_node}
        )
    else:
        print(f"active controller: {active or 'none'}")
        print(f"scheduler node:    {record.scheduler_node or 'none'}")
    return EXIT_OK if record.holder else EXIT_FAILED


# -- parser -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ha-toolkit",
        description="Keep exactly one Airflow scheduler running across the masters.",
    )

    def add_globals(p: argparse.ArgumentParser, default: Callable[[object], object]) -> None:
        p.add_argument(
            "--config",
            type=Path,
            default=default(Path(os.environ.get("HA_TOOLKIT_CONFIG", DEFAULT_PATH))),
            help=f"config file (default {DEFAULT_PATH}, or $HA_TOOLKIT_CONFIG)",
        )
        p.add_argument(
            "--log-json",
            action="store_true",
            default=default(False),
            help="log one JSON object per line",
        )
        p.add_argument(
            "--log-level",
            default=default(None),
            metavar="LEVEL",
            help=f"override logging.level ({', '.join(LOG_LEVELS)})",
        )
        p.add_argument(
            "--json",
            action="store_true",
            default=default(False),
            help="machine-readable output: one JSON document on stdout",
        )

    add_globals(parser, lambda value: value)
    # The same options after the command too (`ha-toolkit status --config X`); there
    # they override what was given before it.
    after = argparse.ArgumentParser(add_help=False)
    add_globals(after, lambda value: argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text, parents=[after])

    controller = add("controller", "the failover controller daemon")
    controller_sub = controller.add_subparsers(dest="action", required=True, metavar="ACTION")
    controller_sub.add_parser(
        "run", help="run in the foreground (systemd runs this)", parents=[after]
    )
    init = add("init", "write a sample config, or create the metastore schema (idempotent)")
    init.add_argument(
        "--from-airflow-cfg",
        metavar="PATH",
        help="migrate the [scheduler_failover] section of an old airflow.cfg",
    )
    add(
        "check-config",
        "check the config file as the controller would load it (no metastore, no network)",
    )
    add("test-connection", "check the metastore and reach every master")
    add("is-scheduler-running", "which masters run the scheduler (exit 0 when exactly one)")
    status = add("status", "the ACTIVE controller, lease, scheduler node and health")
    status.add_argument("--history", action="store_true", help="show the event log too")
    status.add_argument("--limit", type=int, default=30, help="events to show (default 30)")
    status.add_argument(
        "--no-check", action="store_true", help="do not ask the scheduler node for its health"
    )
    add("metadata", "dump the metastore record as JSON")
    clear = add("clear-metadata", "reset the lease and placement (keeps the event log)")
    clear.add_argument("--force", action="store_true", help="even while a lease is held")
    failover = add("failover", "move the scheduler (planned switchover)")
    failover.add_argument("--to", metavar="NODE", help="target master (default: the next one)")
    failover.add_argument(
        "--wait", type=float, default=120.0, help="seconds to wait for the move (0: do not wait)"
    )
    add("pause", "maintenance: the ACTIVE keeps its lease but takes no node action")
    add("resume", "end maintenance")
    add("send-test-alert", "send a test message through every configured alert channel")
    add("get-current-host", "the ACTIVE controller and the scheduler node")
    add("version", "print the version")
    return parser


COMMANDS: dict[str, Callable[[Config, argparse.Namespace], int]] = {
    "test-connection": cmd_test_connection,
    "is-scheduler-running": cmd_is_scheduler_running,
    "status": cmd_status,
    "metadata": cmd_metadata,
    "clear-metadata": cmd_clear_metadata,
    "failover": cmd_failover,
    "pause": lambda c, a: cmd_pause(c, a, True),
    "resume": lambda c, a: cmd_pause(c, a, False),
    "send-test-alert": cmd_send_test_alert,
    "get-current-host": cmd_get_current_host,
}


def main(argv: Sequence[str] | None = None) -> int:
    from ha_toolkit.logs import setup_logging

    args = build_parser().parse_args(argv)
    if args.log_level is not None:
        if args.log_level.upper() not in LOG_LEVELS:
            return _bad_input(
                args,
                f"--log-level: expected one of {', '.join(LOG_LEVELS)}, got {args.log_level!r}",
            )
        args.log_level = args.log_level.upper()
    if args.command == "version":
        _report(args, f"ha-toolkit {__version__}", {"version": __version__})
        return EXIT_OK
    try:
        if args.command in ("init", "check-config"):
            setup_logging(args.log_level or "WARNING", args.log_json)
            if args.command == "check-config":
                return cmd_check_config(args.config, args)
            return cmd_init(args.config, args)
        config = load_config(args.config)
        daemon = args.command == "controller"
        setup_logging(
            args.log_level or (config.logging.level if daemon else "WARNING"),
            args.log_json or config.logging.json,
        )
        for warning in config.warnings:  # a deprecated key: the file still loads
            log.warning("%s", warning)
        if daemon:
            return cmd_controller_run(config, args)
        return COMMANDS[args.command](config, args)
    except (ConfigError, UsageError, InventoryError) as exc:
        return _bad_input(args, str(exc))
    except MetastoreError as exc:
        message = f"metastore: {exc}"
        print(f"ha-toolkit: {message}", file=sys.stderr)
        if args.json:
            _print_json({"error": message})
        return EXIT_FAILED


def _bad_input(args: argparse.Namespace, message: str) -> int:
    print(f"ha-toolkit: {message}", file=sys.stderr)
    if args.json:
        _print_json({"error": message})
    return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
