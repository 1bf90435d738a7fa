"""Settings: environment over kiln.toml over defaults, and one-line errors naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

import kiln
from kiln.core import (
    ConfigError,
    InvalidInput,
    Settings,
    configure,
    get_settings,
    load_settings,
    mask_url,
    reset_settings,
)


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def one_line_error(excinfo: pytest.ExceptionInfo[ConfigError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    assert "Traceback" not in message
    return message


# -- defaults -----------------------------------------------------------------------------


def test_defaults_live_under_dot_kiln_in_the_working_directory(tmp_path: Path) -> None:
    settings = load_settings(environ={}, cwd=tmp_path)
    home = tmp_path.resolve() / ".kiln"
    assert settings.home == home
    assert settings.db_url == f"sqlite:///{home / 'kiln.db'}"
    assert settings.artifact_uri == str(home / "artifacts")
    assert settings.s3_endpoint_url is None
    assert settings.heartbeat_timeout_s == 60.0
    assert settings.metric_flush_interval_s == 0.5
    assert set(settings.sources.values()) == {"default"}


def test_get_settings_uses_the_process_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KILN_HOME")  # set by the autouse fixture
    monkeypatch.chdir(tmp_path)
    reset_settings()
    settings = get_settings()
    assert settings.home == tmp_path.resolve() / ".kiln"
    assert get_settings() is settings  # resolved once, then kept


def test_relative_home_resolves_against_the_working_directory(tmp_path: Path) -> None:
    settings = load_settings(environ={"KILN_HOME": "data/kiln"}, cwd=tmp_path)
    assert settings.home == tmp_path.resolve() / "data" / "kiln"
    assert settings.db_url == f"sqlite:///{settings.home / 'kiln.db'}"
    assert settings.artifact_uri == str(settings.home / "artifacts")


def test_relative_artifact_directory_resolves_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={"KILN_ARTIFACT_URI": "arts"})
    assert settings.artifact_uri == str(tmp_path.resolve() / "arts")


def test_relative_artifact_directory_honours_the_cwd_argument(tmp_path: Path) -> None:
    settings = load_settings(environ={"KILN_ARTIFACT_URI": "arts"}, cwd=tmp_path)
    assert settings.artifact_uri == str(tmp_path.resolve() / "arts")


def test_heartbeat_interval_is_a_quarter_of_the_timeout(tmp_path: Path) -> None:
    settings = load_settings(environ={"KILN_HEARTBEAT_TIMEOUT_S": "20"}, cwd=tmp_path)
    assert settings.heartbeat_timeout_s == 20.0
    assert settings.heartbeat_interval_s == 5.0


# -- precedence ---------------------------------------------------------------------------


def test_toml_at_top_level_overrides_defaults(tmp_path: Path) -> None:
    write_toml(
        tmp_path / "kiln.toml",
        'home = "store"\nheartbeat_timeout_s = 30\nmetric_flush_interval_s = 0.25\n',
    )
    settings = load_settings(environ={}, cwd=tmp_path)
    assert settings.home == tmp_path.resolve() / "store"
    assert settings.heartbeat_timeout_s == 30.0
    assert settings.metric_flush_interval_s == 0.25
    assert settings.sources["home"] == f"{tmp_path / 'kiln.toml'}:home"
    assert settings.sources["db_url"] == "default"


def test_toml_under_a_kiln_table_overrides_defaults(tmp_path: Path) -> None:
    write_toml(
        tmp_path / "kiln.toml",
        '[kiln]\ndb_url = "postgresql://kiln@db.example:5432/meta"\n'
        'artifact_uri = "s3://bucket/prefix/"\n'
        's3_endpoint_url = "http://minio:9000"\n',
    )
    settings = load_settings(environ={}, cwd=tmp_path)
    assert settings.db_url == "postgresql://kiln@db.example:5432/meta"
    assert settings.artifact_uri == "s3://bucket/prefix"
    assert settings.s3_endpoint_url == "http://minio:9000"


def test_environment_overrides_toml(tmp_path: Path) -> None:
    write_toml(
        tmp_path / "kiln.toml",
        '[kiln]\nheartbeat_timeout_s = 30\ndb_url = "sqlite:///from-toml.db"\n',
    )
    env = {"KILN_HEARTBEAT_TIMEOUT_S": "12", "KILN_DB_URL": "sqlite:///from-env.db"}
    settings = load_settings(environ=env, cwd=tmp_path)
    assert settings.heartbeat_timeout_s == 12.0
    assert settings.db_url == "sqlite:///from-env.db"
    assert settings.sources["heartbeat_timeout_s"] == "KILN_HEARTBEAT_TIMEOUT_S"
    assert settings.sources["db_url"] == "KILN_DB_URL"


def test_empty_environment_variable_falls_through_to_toml(tmp_path: Path) -> None:
    write_toml(tmp_path / "kiln.toml", "heartbeat_timeout_s = 30\n")
    settings = load_settings(environ={"KILN_HEARTBEAT_TIMEOUT_S": ""}, cwd=tmp_path)
    assert settings.heartbeat_timeout_s == 30.0


def test_arguments_override_environment(tmp_path: Path) -> None:
    settings = load_settings(
        environ={"KILN_HEARTBEAT_TIMEOUT_S": "12"}, cwd=tmp_path, heartbeat_timeout_s=3
    )
    assert settings.heartbeat_timeout_s == 3.0
    assert settings.sources["heartbeat_timeout_s"] == "argument"


def test_kiln_config_names_the_toml_file(tmp_path: Path) -> None:
    write_toml(tmp_path / "kiln.toml", "heartbeat_timeout_s = 30\n")  # ignored
    elsewhere = tmp_path / "conf"
    elsewhere.mkdir()
    config = write_toml(elsewhere / "team.toml", "[kiln]\nheartbeat_timeout_s = 45\n")
    settings = load_settings(environ={"KILN_CONFIG": str(config)}, cwd=tmp_path)
    assert settings.heartbeat_timeout_s == 45.0
    assert settings.sources["heartbeat_timeout_s"] == f"{config}:heartbeat_timeout_s"


def test_kiln_config_that_is_not_a_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"KILN_CONFIG": str(missing)}, cwd=tmp_path)
    message = one_line_error(info)
    assert "KILN_CONFIG" in message
    assert str(missing) in message


def test_aws_endpoint_url_is_the_fallback_s3_endpoint(tmp_path: Path) -> None:
    env = {"AWS_ENDPOINT_URL": "http://aws-default:9000"}
    assert load_settings(environ=env, cwd=tmp_path).s3_endpoint_url == "http://aws-default:9000"
    env["KILN_S3_ENDPOINT_URL"] = "http://kiln:9000"
    assert load_settings(environ=env, cwd=tmp_path).s3_endpoint_url == "http://kiln:9000"


def test_environment_through_get_settings_and_configure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KILN_METRIC_FLUSH_INTERVAL_S", "0.125")
    reset_settings()
    assert get_settings().metric_flush_interval_s == 0.125
    configured = configure(metric_flush_interval_s=2)
    assert isinstance(configured, Settings)
    assert get_settings() is configured
    assert kiln.get_settings().metric_flush_interval_s == 2.0
    reset_settings()
    assert get_settings().metric_flush_interval_s == 0.125
    assert get_settings().home == tmp_path / "kiln-home"  # KILN_HOME from the fixture


# -- invalid values -----------------------------------------------------------------------


@pytest.mark.parametrize("url", ["nope", "localhost:5432/db", "sqlite:/relative.db"])
def test_malformed_db_url_names_the_setting_and_supported_forms(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"KILN_DB_URL": url}, cwd=tmp_path)
    message = one_line_error(info)
    assert message.startswith("KILN_DB_URL:")
    assert "malformed" in message
    assert "sqlite:///" in message and "postgresql://" in message


@pytest.mark.parametrize(
    "url", ["postgresql://kiln:s3cret@db:notaport/meta", "postgresql://kiln:s3cret@[::1/meta"]
)
def test_malformed_db_host_or_port_is_a_config_error(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"KILN_DB_URL": url}, cwd=tmp_path)
    message = one_line_error(info)
    assert message.startswith("KILN_DB_URL:")
    assert "s3cret" not in message


@pytest.mark.parametrize("url", ["mysql://kiln:s3cret@db/meta", "mongodb://db/meta"])
def test_unknown_db_scheme_names_the_setting_and_supported_schemes(
    tmp_path: Path, url: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"KILN_DB_URL": url}, cwd=tmp_path)
    message = one_line_error(info)
    assert message.startswith("KILN_DB_URL:")
    assert repr(url.split("://", 1)[0]) in message
    assert "supported schemes: sqlite, postgresql" in message
    assert "s3cret" not in message


def test_db_url_error_from_toml_names_the_file_and_key(tmp_path: Path) -> None:
    toml = write_toml(tmp_path / "kiln.toml", 'db_url = "mysql://db/meta"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, cwd=tmp_path)
    assert one_line_error(info).startswith(f"{toml}:db_url:")


@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite:///:memory:", "postgresql://db.example", "postgresql:///meta"]
)
def test_db_url_without_a_database_is_an_error(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"KILN_DB_URL": url}, cwd=tmp_path)
    assert one_line_error(info).startswith("KILN_DB_URL:")


@pytest.mark.parametrize("uri", ["gs://bucket/prefix", "hdfs://namenode/kiln"])
def test_unknown_artifact_scheme_names_the_setting_and_supported_schemes(
    tmp_path: Path, uri: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"KILN_ARTIFACT_URI": uri}, cwd=tmp_path)
    message = one_line_error(info)
    assert message.startswith("KILN_ARTIFACT_URI:")
    assert repr(uri.split("://", 1)[0]) in message
    assert "file, s3" in message


def test_s3_artifact_uri_needs_a_bucket(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"KILN_ARTIFACT_URI": "s3://"}, cwd=tmp_path)
    message = one_line_error(info)
    assert message.startswith("KILN_ARTIFACT_URI:")
    assert "bucket" in message


@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan", "1s"])
def test_invalid_heartbeat_names_the_setting_and_value(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"KILN_HEARTBEAT_TIMEOUT_S": value}, cwd=tmp_path)
    message = one_line_error(info)
    assert message.startswith("KILN_HEARTBEAT_TIMEOUT_S:")
    assert repr(value) in message
    assert "positive number" in message


def test_invalid_number_in_toml_names_the_file_and_key(tmp_path: Path) -> None:
    toml = write_toml(tmp_path / "kiln.toml", '[kiln]\nmetric_flush_interval_s = "soon"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, cwd=tmp_path)
    message = one_line_error(info)
    assert message.startswith(f"{toml}:metric_flush_interval_s:")
    assert "'soon'" in message


@pytest.mark.parametrize("text", ["db_ulr = 'x'\n", "[kiln]\nhearbeat_timeout_s = 5\n"])
def test_unknown_toml_key_names_it_and_the_known_ones(tmp_path: Path, text: str) -> None:
    toml = write_toml(tmp_path / "kiln.toml", text)
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, cwd=tmp_path)
    message = one_line_error(info)
    assert message.startswith(f"{toml}:")
    assert text.split("=")[0].split("\n")[-1].strip() in message
    assert "db_url" in message and "heartbeat_timeout_s" in message


def test_kiln_entry_that_is_not_a_table_is_an_error(tmp_path: Path) -> None:
    write_toml(tmp_path / "kiln.toml", "kiln = 3\n")
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, cwd=tmp_path)
    assert "[kiln]" in one_line_error(info)


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    toml = write_toml(tmp_path / "kiln.toml", "home = \n")
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, cwd=tmp_path)
    message = str(info.value)
    assert message.startswith(f"{toml}:")
    assert "TOML" in message


def test_unknown_argument_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown setting 'db_uri'"):
        load_settings(environ={}, cwd=tmp_path, db_uri="sqlite:///x.db")


def test_config_error_is_invalid_input() -> None:
    assert issubclass(ConfigError, InvalidInput)
    assert issubclass(ConfigError, ValueError)


# -- masking ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://kiln:s3cret@db:5432/meta", "postgresql://kiln:***@db:5432/meta"),
        ("postgresql://kiln:p@ss:w@db/meta", "postgresql://kiln:***@db/meta"),
        ("postgresql://kiln@db/meta", "postgresql://kiln@db/meta"),
        ("sqlite:////tmp/kiln.db", "sqlite:////tmp/kiln.db"),
        ("s3://bucket/prefix", "s3://bucket/prefix"),
        ("http://[::1", "http://[::1"),  # unparseable: returned as it is
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_describe_masks_passwords(tmp_path: Path) -> None:
    env = {
        "KILN_DB_URL": "postgresql://kiln:s3cret@db.example:5432/meta",
        "KILN_ARTIFACT_URI": "s3://bucket/prefix",
        "KILN_ONLINE_URL": "redis://:s3cret@cache.example:6379/0",
    }
    described = load_settings(environ=env, cwd=tmp_path).describe()
    assert described["db_url"] == "postgresql://kiln:***@db.example:5432/meta"
    assert described["online_url"] == "redis://:***@cache.example:6379/0"
    assert described["artifact_uri"] == "s3://bucket/prefix"
    assert not any("s3cret" in value for value in described.values())
    assert set(described) == {
        "home",
        "db_url",
        "artifact_uri",
        "online_url",
        "offline_dir",
        "s3_endpoint_url",
        "heartbeat_timeout_s",
        "metric_flush_interval_s",
    }


def test_online_and_offline_defaults_and_bad_online_url(tmp_path: Path) -> None:
    settings = load_settings(environ={}, cwd=tmp_path)
    assert settings.online_url == f"sqlite:///{tmp_path / '.kiln' / 'online.db'}"
    assert settings.offline_dir == tmp_path / ".kiln" / "offline"
    with pytest.raises(ConfigError, match=r"KILN_ONLINE_URL.*supported schemes: sqlite, redis"):
        load_settings(environ={"KILN_ONLINE_URL": "memcached://x"}, cwd=tmp_path)
