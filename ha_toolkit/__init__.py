"""ha-toolkit: keep exactly one Airflow scheduler running across a set of masters."""

__version__ = "0.1.0"
