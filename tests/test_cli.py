import subprocess
import sys

from stream import __version__


def test_version_flag_prints_the_package_version():
    out = subprocess.run([sys.executable, "-m", "stream", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"meshstream {__version__}"


def test_every_subcommand_has_help():
    from stream.cli import build_parser

    parser = build_parser()
    names = [a for a in parser._subparsers._group_actions[0].choices]
    for name in names:
        out = subprocess.run([sys.executable, "-m", "stream", name, "--help"], capture_output=True, text=True)
        assert out.returncode == 0, (name, out.stderr)
        assert "usage: meshstream" in out.stdout


def test_engines_get_half_the_cores_unless_told_and_bad_counts_are_refused(monkeypatch):
    import pytest

    from stream.compose import engine_threads
    from stream.config import Config, ConfigError

    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert engine_threads(None) == 8
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert engine_threads(None) == 1
    assert engine_threads(3) == 3
    with pytest.raises(ConfigError, match="--threads must be from 1"):
        Config(threads=0)