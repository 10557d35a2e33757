"""Where a Pub/Sub queue's attempt counts are kept: the --store setting.

The counting itself is the AttemptCounter contract, run on every store by
tests/stores (attempts.py).
"""

from __future__ import annotations

from pathlib import Path

from steadyq.config import load_settings


def test_store_setting_from_file_env_and_flag(tmp_path: Path) -> None:
    (tmp_path / "steadyq.toml").write_text('store = "sqlite:///from-file.db"\n')
    assert load_settings(cwd=tmp_path, environ={}).store == "sqlite:///from-file.db"
    env = {"STEADYQ_STORE": "sqlite:///from-env.db"}
    assert load_settings(cwd=tmp_path, environ=env).store == "sqlite:///from-env.db"
    flag = load_settings(cwd=tmp_path, environ=env, overrides={"store": "sqlite:///flag.db"})
    assert flag.store == "sqlite:///flag.db"
    assert load_settings(cwd=tmp_path / "none", environ={}).store is None
