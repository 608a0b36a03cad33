"""How metastore failures are named: a refusal of our credentials is not "unreachable".
No servers: the backends' error classification is fed the exceptions their client
libraries raise."""

from __future__ import annotations

import pymysql
import pytest
from kazoo.exceptions import AuthFailedError, ConnectionLoss, NoAuthError

from ha_toolkit.config import MetastoreConfig
from ha_toolkit.metastore import MetastoreAuthError, MetastoreError, credentials
from ha_toolkit.metastore.mysql import MySQLMetastore, is_access_denied
from ha_toolkit.metastore.zookeeper import ZooKeeperMetastore
from ha_toolkit.metastore.zookeeper import is_access_denied as zk_access_denied

SECRET = "s3cret-Pa55word"
PASSWORD_FILE = "/etc/ha-toolkit/metastore.password"


def mysql_store() -> MySQLMetastore:
    return MySQLMetastore(
        MetastoreConfig(
            type="mysql",
            dsn="mysql://ha@db1:3306/ha_toolkit",
            user="ha",
            password_file=PASSWORD_FILE,
            password=SECRET,
        )
    )


def test_mysql_access_denied_is_an_auth_error_naming_user_host_and_file() -> None:
    denied = pymysql.err.OperationalError(
        1045, "Access denied for user 'ha'@'10.0.0.5' (using password: YES)"
    )
    assert is_access_denied(denied)
    error = mysql_store()._error("connect", denied)
    assert isinstance(error, MetastoreAuthError) and isinstance(error, MetastoreError)
    message = str(error)
    assert "\n" not in message and SECRET not in message
    assert message.startswith("mysql db1:3306/ha_toolkit: connect failed: access denied for ")
    assert f"user 'ha' (password from {PASSWORD_FILE})" in message
    assert message.endswith("Access denied for user 'ha'@'10.0.0.5' (using password: YES)")


@pytest.mark.parametrize("code", [1044, 1142, 1698])
def test_other_mysql_refusals_of_our_rights_are_auth_errors(code: int) -> None:
    exc = pymysql.err.ProgrammingError(code, "denied")
    assert is_access_denied(exc)
    assert isinstance(mysql_store()._error("read", exc), MetastoreAuthError)


@pytest.mark.parametrize(
    "exc",
    [
        pymysql.err.OperationalError(2003, "Can't connect to MySQL server on 'db1' ([Errno 111])"),
        pymysql.err.OperationalError(1213, "Deadlock found"),
        ConnectionRefusedError(111, "Connection refused"),
    ],
)
def test_unreachability_stays_a_plain_metastore_error(exc: BaseException) -> None:
    assert not is_access_denied(exc)
    error = mysql_store()._error("connect", exc)
    assert type(error) is MetastoreError and "access denied" not in str(error)


def test_a_password_the_server_echoes_is_masked() -> None:
    exc = pymysql.err.OperationalError(1045, f"Access denied (tried {SECRET})")
    assert SECRET not in str(mysql_store()._error("connect", exc))


def test_credentials_name_the_source_of_the_password_never_the_password() -> None:
    from_file = MetastoreConfig(user="ha", password_file=PASSWORD_FILE, password=SECRET)
    assert credentials(from_file) == f"user 'ha' (password from {PASSWORD_FILE})"
    inline = MetastoreConfig(user="ha", password=SECRET)
    assert credentials(inline) == (
        "user 'ha' (password from metastore.password or $HA_TOOLKIT_METASTORE_PASSWORD)"
    )
    assert credentials(MetastoreConfig(user="ha")) == "user 'ha' (no password)"
    assert credentials(MetastoreConfig()) == "no user (no password)"


def zk_store() -> ZooKeeperMetastore:
    return ZooKeeperMetastore(
        MetastoreConfig(
            type="zookeeper",
            hosts=("zk1:2181", "zk2:2181"),
            user="ha",
            password_file=PASSWORD_FILE,
            password=SECRET,
        )
    )


@pytest.mark.parametrize("exc", [NoAuthError(), AuthFailedError()])
def test_zookeeper_refusals_are_auth_errors(exc: BaseException) -> None:
    assert zk_access_denied(exc)
    with pytest.raises(MetastoreAuthError) as caught, zk_store()._errors("read"):
        raise exc
    message = str(caught.value)
    assert message.startswith("zookeeper zk1:2181,zk2:2181: read failed: access denied for ")
    assert f"user 'ha' (password from {PASSWORD_FILE})" in message
    assert SECRET not in message and "\n" not in message


def test_zookeeper_connection_loss_stays_a_plain_metastore_error() -> None:
    assert not zk_access_denied(ConnectionLoss())
    with pytest.raises(MetastoreError) as caught, zk_store()._errors("read"):
        raise ConnectionLoss()
    assert type(caught.value) is MetastoreError
