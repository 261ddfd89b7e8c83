# The two commands a newcomer needs (see README.md):
#   make demo   set everything up, then run the main job on the bundled sample clip
#   make test   set everything up, then run the test suite
# Set-up is a virtual environment in .venv; it is made once and reused.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup gl models demo test bench synthetic accuracy clean

setup: $(VENV)/.installed gl

# The overlay video draws meshes with OpenGL off-screen (EGL); on a machine without a GPU,
# Mesa's llvmpipe does it on the CPU. Installed with apt-get when missing and run as root (CI);
# elsewhere the overlay falls back to the slower engines.render and this says what to install.
gl:
	@if ! (ldconfig -p | grep -q libEGL_mesa && ldconfig -p | grep -q "libGL\.so\.1"); then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libgl1 libegl1 libegl-mesa0 libgl1-mesa-dri >/dev/null; \
	  else echo "note: no EGL driver: install libgl1 libegl1 libegl-mesa0 libgl1-mesa-dri for the fast overlay"; fi; \
	fi

# The BlazePose networks: taken from the mediapipe wheel with pip, checked, converted once into
# the cache (~/.cache/meshstream or $MESHSTREAM_CACHE). Quick when already there.
models: setup
	$(BIN)/meshstream models fetch

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

# The main job on the bundled sample clip: meshes published on tcp://127.0.0.1:5556
# (watch them with `.venv/bin/meshstream listen tcp://127.0.0.1:5556` in another terminal),
# then an offline pass writing out/sample.npz and the overlay video out/sample.mp4.
demo: models
	$(BIN)/meshstream run
	mkdir -p out
	$(BIN)/meshstream process stream/assets/sample.mp4 -o out/sample.npz --render out/sample.mp4

test: models
	$(BIN)/python -m pytest -q -ra

bench: models
	$(BIN)/meshstream bench

# The synthetic benchmark's clips with exact ground truth (docs/accuracy.md).
synthetic: setup
	$(BIN)/python tools/make_synthetic.py --out out/synthetic --seed 0 --contact-sheet

# The standing accuracy benchmark: the synthetic set, `meshstream process` in each stage
# configuration, `meshstream eval`; the table of docs/accuracy.md (out/benchmark/table.md).
accuracy: models
	$(BIN)/python tools/run_benchmark.py --out out/benchmark --markdown out/benchmark/table.md

clean:
	rm -rf $(VENV) out
