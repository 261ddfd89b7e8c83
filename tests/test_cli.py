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
