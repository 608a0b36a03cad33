"""node-action's fencing token: the highest epoch a node has seen, kept on the node under an
exclusive lock (node_action.Fence), in a temporary state folder. Nothing here touches systemd."""

from __future__ import annotations

import threading
from pathlib import Path

from ha_toolkit.node_action import EPOCH_FILE, Fence, read_epoch


def admit(state_dir: Path, epoch: int) -> tuple[bool, int]:
    fence = Fence(str(state_dir))
    try:
        return fence.admit(epoch)
    finally:
        fence.close()


def test_epochs_are_admitted_in_order_and_a_lower_one_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"  # created by the first action
    assert read_epoch(str(state)) == 0
    assert admit(state, 3) == (True, 0)
    assert (state / EPOCH_FILE).read_text() == "3\n"
    assert admit(state, 3) == (True, 3)  # the same ACTIVE again
    assert admit(state, 5) == (True, 3)
    assert admit(state, 4) == (False, 5)  # a deposed ACTIVE
    assert read_epoch(str(state)) == 5  # a refusal records nothing
    assert sorted(p.name for p in state.iterdir()) == [EPOCH_FILE, "epoch.lock"]  # no temp file


def test_the_lock_is_held_for_the_whole_action(tmp_path: Path) -> None:
    first = Fence(str(tmp_path))
    assert first.admit(7) == (True, 0)
    second: list[tuple[bool, int]] = []
    waiting = threading.Thread(target=lambda: second.append(admit(tmp_path, 6)))
    waiting.start()
    waiting.join(0.3)
    # A second action (another process in real life) waits while the first one acts...
    assert waiting.is_alive() and not second
    first.close()
    waiting.join(5)
    # ...and then judges its epoch against what the first recorded.
    assert second == [(False, 7)]
