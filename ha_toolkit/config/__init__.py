"""Controller configuration: one YAML file, validated up front.

Every key is declared once, on the dataclass field that holds its value (model.py): its
check, its default and the text that explains it. From there come the validation, the
sample file and the key tables of docs/configuration.md. One module per concern:

- checks.py: value checks, and how values are shown (never secrets);
- schema.py: how a key or section is declared, and walking the declarations;
- model.py: the dataclasses, i.e. every key of the file;
- timing.py: the rules between the timings, and ``move_wait``;
- load.py: reading a file: YAML, the rules between keys, secrets, deprecated keys;
- sample.py: the commented sample file ``ha-toolkit init`` writes;
- migrate.py: migration from an old airflow.cfg ([scheduler_failover]);
- docs.py: the key tables of docs/configuration.md (``python -m ha_toolkit.config.docs``).

Every problem is reported as one line naming the file, the key and what was expected
(:class:`ConfigError`); the CLI exits 2 on it.
"""

from ha_toolkit.config.checks import PASSWORD_ENV, SMTP_PASSWORD_ENV
from ha_toolkit.config.load import DEPRECATED, ConfigError, known_keys, load_config
from ha_toolkit.config.migrate import Migration, config_from_airflow_cfg
from ha_toolkit.config.model import (
    DEFAULT_PATH,
    AlertsConfig,
    Config,
    LoggingConfig,
    MetastoreConfig,
    MetricsConfig,
    ServiceConfig,
    SMTPConfig,
    Timings,
    TLSConfig,
)
from ha_toolkit.config.sample import write_sample_config
from ha_toolkit.config.timing import check_timings, move_wait

__all__ = [
    "DEFAULT_PATH",
    "DEPRECATED",
    "PASSWORD_ENV",
    "SMTP_PASSWORD_ENV",
    "AlertsConfig",
    "Config",
    "ConfigError",
    "LoggingConfig",
    "MetastoreConfig",
    "MetricsConfig",
    "Migration",
    "SMTPConfig",
    "ServiceConfig",
    "TLSConfig",
    "Timings",
    "check_timings",
    "config_from_airflow_cfg",
    "known_keys",
    "load_config",
    "move_wait",
    "write_sample_config",
]
