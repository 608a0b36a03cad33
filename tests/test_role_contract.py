"""The failover_controller role against ha_toolkit: the paths both must agree on, and the
controller's config keys, which the role passes on without repeating their defaults.

Only files are read (the role's YAML, ha_toolkit's constants and schema): no Ansible runs,
and nothing here imports ansible_runner.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ha_toolkit import node_action

REPO = Path(__file__).resolve().parent.parent
ROLE = REPO / "roles" / "failover_controller"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_fixed_paths_are_ha_toolkits() -> None:
    # ha_toolkit has these built in (local.py's self-fencing stop, the runtime playbook,
    # node-action's own default): the role's copy is in vars/, not an overridable default.
    fixed = load(ROLE / "vars" / "main.yml")
    assert fixed == {
        "failover_controller_node_action": node_action.INSTALL_PATH,
        "failover_controller_state_dir": node_action.STATE_DIR,
    }
    playbook = load(REPO / "playbooks" / "scheduler.yml")
    assert playbook[0]["vars"]["ha_node_action"] == node_action.INSTALL_PATH
    defaults = load(ROLE / "defaults" / "main.yml")
    options = load(ROLE / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    for name in fixed:
        assert name not in defaults, name
        assert name not in options, name
