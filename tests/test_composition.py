"""One composition: the config object, flags and TOML files, compose(), and the library API."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stream.config import Config, ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _parse(argv: list[str]):
    from stream.cli import build_parser

    return build_parser().parse_args(argv)


def test_flags_and_a_toml_file_with_the_same_values_build_the_same_chain(tmp_path):
    from stream.commands._common import config_from_args
    from stream.compose import compose

    flags = ["process", "stream/assets/sample.mp4", "-o", str(tmp_path / "a.npz"), "--max-people", "2",
             "--fov", "75", "--smoothing", "one-euro", "--fit-iterations", "4", "--no-refine"]
    (tmp_path / "run.toml").write_text(
        f'[meshstream]\nresults = "{tmp_path / "a.npz"}"\nmax-people = 2\nfov = 75\nsmoothing = "one-euro"\n'
        'fit_iterations = 4\nrefine = false\n')
    from_flags = config_from_args(_parse(flags))
    from_file = config_from_args(_parse(["process", "stream/assets/sample.mp4", "--config", str(tmp_path / "run.toml")]))
    assert from_flags == from_file
    chains = [compose(config) for config in (from_flags, from_file)]
    described = [[(type(s).__name__, s.name, s.budget_ms) for s in chain.stages] for chain in chains]
    assert described[0] == described[1]
    assert [name for _, name, _ in described[0]] == ["pose", "track", "lift", "smooth", "body", "world", "results"]
    pose, _, lift, smooth, _, _, _ = chains[0].stages
    assert pose.max_people == 2 and lift.fit_iterations == 4 and not lift.refine and smooth.smoothing == "one-euro"
    assert chains[0].camera.fov_deg == 75
    for chain in chains:
        chain.source.close()


def test_a_flag_overrides_the_config_file(tmp_path):
    from stream.commands._common import config_from_args

    (tmp_path / "run.toml").write_text("max_people = 2\nfov = 75\n")
    config = config_from_args(_parse(["process", "x.mp4", "-o", "x.npz", "--config", str(tmp_path / "run.toml"),
                                      "--max-people", "3"]))
    assert config.max_people == 3 and config.fov_deg == 75.0


@pytest.mark.parametrize("options, message", [
    (dict(fov_deg=0), "--fov"), (dict(fov_deg=180), "--fov"), (dict(fov_deg=-10), "--fov"),
    (dict(max_people=0), "--max-people"), (dict(backend="foo"), "--backend"), (dict(device="gpu"), "--device"),
    (dict(results="out.json"), "must end in .npz"), (dict(smoothing_lag=-1), "--smoothing-lag"),
    (dict(fit_anchor=-1.0), "--fit-anchor"), (dict(threads=0), "--threads"), (dict(max_people=2.5), "whole number"),
])
def test_bad_values_are_refused_when_the_config_is_built(options, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Config(**options)


def test_outputs_never_overwrite_the_input_or_each_other(tmp_path):
    video = tmp_path / "in.mp4"
    video.write_bytes(b"not really a video")
    with pytest.raises(ConfigError, match="is the input file"):
        Config(source=str(video), render=str(video))
    with pytest.raises(ConfigError, match="is the input file"):
        Config(source=str(video), results=str(video.with_suffix(".npz")), stats_json=str(video))
    with pytest.raises(ConfigError, match="its own path"):
        Config(source=str(video), results=str(tmp_path / "o.npz"), stats_json=str(tmp_path / "o.npz"))


def test_toml_files_with_unknown_names_or_bad_syntax_are_refused(tmp_path):
    (tmp_path / "typo.toml").write_text("max_peeple = 2\n")
    with pytest.raises(ConfigError, match="unknown option 'max_peeple'"):
        Config.from_toml(tmp_path / "typo.toml")
    (tmp_path / "broken.toml").write_text("max_people = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Config.from_toml(tmp_path / "broken.toml")


def test_a_bad_flag_is_refused_in_one_line_before_any_model_loads(tmp_path):
    """The command exits 2 with one line; it never reaches the pose engine (whose TFLite start-up
    line would show in the output)."""
    for flags, said in ((["--fov", "0"], "--fov"), (["--backend", "tensorrt"], "--backend tensorrt"),
                        (["--device", "cuda"], "--device cuda"), (["-o", str(tmp_path / "x.json")], ".npz")):
        argv = ["process", "stream/assets/sample.mp4", "-o", str(tmp_path / "x.npz"), *flags]
        out = subprocess.run([sys.executable, "-m", "stream", *argv], cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 2, out.stderr
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and said in lines[0] and "Traceback" not in out.stderr, out.stderr


def _readme_library_example() -> str:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    example = [b for b in blocks if "meshstream.open" in b]
    assert example, "the README shows the library API in a python block"
    return example[0]


def test_the_readme_library_example_runs_on_the_bundled_clip_and_yields_bodies_with_ids(tmp_path):
    code = _readme_library_example()
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    lines = [line.split() for line in out.stdout.splitlines() if line.strip()]
    assert len(lines) >= 10  # a line per frame and body: frame index, person id, wrist x y z
    assert all(int(parts[1]) >= 0 for parts in lines)
    assert [int(parts[0]) for parts in lines] == sorted(int(parts[0]) for parts in lines)
    assert (tmp_path / "sample.npz").is_file()  # the example's results file sink


def test_library_runs_close_their_sinks_and_keep_what_was_computed_when_left_early(tmp_path):
    import meshstream

    class Counter:
        def __init__(self):
            self.frames, self.closed = 0, False

        def add(self, packet):
            self.frames += 1

        def close(self):
            self.closed = True

    counter = Counter()
    # Without the world stage, which holds 2 s of frames offline (as smoothing holds its lag).
    with meshstream.open(results=str(tmp_path / "r.npz"), sinks=[counter], world=False) as run:
        for frame in run:
            assert frame.intrinsics is not None and frame.image.shape == (1280, 720, 3)
            if frame.index == 3:
                break
    assert counter.closed and 4 <= counter.frames < 65
    data = np.load(tmp_path / "r.npz")
    assert 4 <= len(np.unique(data["frame_index"])) == counter.frames
    assert np.isfinite(data["joints"]).all()


def test_quiet_after_the_subcommand_silences_the_stats_table_and_the_engines_start_up_lines(tmp_path):
    out = subprocess.run([sys.executable, "-m", "stream", "process", "stream/assets/sample.mp4", "-o",
                          str(tmp_path / "q.npz"), "--max-frames", "2", "--no-progress", "-q"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "XNNPACK" not in out.stderr and "INFO" not in out.stderr
    assert "p95" not in out.stdout and "wrote" in out.stdout
