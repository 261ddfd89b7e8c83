"""The Makefile's newcomer commands (README: `make demo`, `make test`) stay runnable on a fresh clone."""

import re
import shlex
import subprocess
from pathlib import Path

from tests.conftest import ROOT

MAKEFILE = (ROOT / "Makefile").read_text()


def _recipe(target: str) -> list[str]:
    """The command lines of a Makefile target's recipe."""
    match = re.search(rf"^{target}:[^\n]*\n((?:\t[^\n]*\n)+)", MAKEFILE, re.M)
    assert match, f"no recipe for {target}"
    return [line.strip() for line in match.group(1).splitlines()]


def _in_git(folder: str) -> bool:
    """Whether a fresh clone has this folder (git tracks a file in it)."""
    listed = subprocess.run(["git", "ls-files", "--", folder], cwd=ROOT, capture_output=True, text=True)
    return bool(listed.stdout.strip())


def test_demo_creates_every_folder_it_writes_into_before_writing():
    """A fresh clone has no out/ folder: each output path's folder must be made first (or exist in git)."""
    made: set[str] = set()
    for line in _recipe("demo"):
        words = shlex.split(line)
        if words[:2] == ["mkdir", "-p"]:
            made.update(words[2:])
            continue
        for flag in ("-o", "--output", "--render", "--bvh", "--glb"):
            if flag in words:
                folder = str(Path(words[words.index(flag) + 1]).parent)
                assert folder == "." or folder in made or _in_git(folder), \
                    f"`make demo` writes into {folder}/ before making it"


def test_readme_names_the_two_commands_and_the_makefile_has_them():
    readme = (ROOT / "README.md").read_text()
    for target in ("demo", "test"):
        assert f"make {target}" in readme
        assert _recipe(target)
