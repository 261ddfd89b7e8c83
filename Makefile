# The two commands a newcomer needs (see README.md):
#   make demo   set everything up, then run the main job on the bundled sample clip
#   make test   set everything up, then run the test suite
# Set-up is a virtual environment in .venv; it is made once and reused.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

# Blender as a Python module (bpy) for `make test-blender`: it needs Python 3.11 and numpy < 2,
# so it gets a virtual environment of its own. The Khronos glTF validator (npm) for the GLB test.
BLENDER_PYTHON ?= python3.11
BLENDER_VENV ?= .venv-blender
BPY ?= bpy==5.0.1
GLTF_VALIDATOR ?= gltf-validator@2.0.0-dev.3.10

.PHONY: setup gl models demo test test-ray test-blender gltf-validator chromium bench soak synthetic accuracy clean

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
# then an offline pass writing out/sample.npz, the overlay video out/sample.mp4 and the
# animation files out/sample.bvh and out/sample.glb.
demo: models
	$(BIN)/meshstream run
	mkdir -p out
	$(BIN)/meshstream process stream/assets/sample.mp4 -o out/sample.npz --render out/sample.mp4 --bvh out/sample.bvh --glb out/sample.glb
	@echo "the sample's results: out/sample.npz, overlay video out/sample.mp4, animation out/sample.bvh and out/sample.glb (docs/CONSUMERS.md)"

test: models gltf-validator chromium
	$(BIN)/python -m pytest -q -ra

# meshstream on a local Ray (docs/SCALING.md): installs the `ray` extra (~80 MB wheel), then runs
# the tests marked `ray` (tests/test_distributed.py: archives with a killed worker, two live streams).
test-ray: models
	$(BIN)/python -m pip install -q -e ".[dev,ray]"
	$(BIN)/python -m pytest -q -ra -m ray

# The exports opened in Blender itself: installs bpy (~370 MB) into $(BLENDER_VENV), then runs
# the tests marked `blender` (tests/test_export_blender.py).
test-blender: models $(BLENDER_VENV)/.installed
	MESHSTREAM_BLENDER_PYTHON=$(BLENDER_VENV)/bin/python $(BIN)/python -m pytest -q -ra -m blender

$(BLENDER_VENV)/.installed:
	$(BLENDER_PYTHON) -m venv $(BLENDER_VENV)
	$(BLENDER_VENV)/bin/python -m pip install -q --upgrade pip
	$(BLENDER_VENV)/bin/python -m pip install -q "$(BPY)"
	touch $@

# The Khronos glTF validator in .tools/ (needs node and npm; without them its test is skipped).
gltf-validator:
	@if [ -d .tools/node_modules/gltf-validator ]; then :; \
	elif command -v npm >/dev/null 2>&1; then npm install --silent --no-audit --no-fund --prefix .tools "$(GLTF_VALIDATOR)" \
		|| echo "could not install the glTF validator: its test will be skipped"; \
	else echo "npm not found: the glTF validator test will be skipped"; fi

# Debian's Chromium for the 3D viewer's browser test (apt-get, as root; without it that test is skipped).
chromium:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
		|| echo "could not install chromium: the viewer's browser test will be skipped"; \
	else echo "chromium not found (apt-get install chromium): the viewer's browser test will be skipped"; fi

bench: models
	$(BIN)/meshstream bench

# The soak: the sample clip looped in real time through the live chain to a subscriber for
# SOAK_MINUTES, memory, threads and open files sampled (series in out/soak.json; docs/benchmarks.md).
SOAK_MINUTES ?= 60
soak: models
	mkdir -p out
	$(BIN)/meshstream bench --soak $(SOAK_MINUTES) --soak-json out/soak.json

# The synthetic benchmark's clips with exact ground truth (docs/accuracy.md).
synthetic: setup
	$(BIN)/python tools/make_synthetic.py --out out/synthetic --seed 0 --contact-sheet

# The standing accuracy benchmark: the synthetic set, `meshstream process` in each stage
# configuration, `meshstream eval`; the table of docs/accuracy.md (out/benchmark/table.md).
accuracy: models
	$(BIN)/python tools/run_benchmark.py --out out/benchmark --markdown out/benchmark/table.md

clean:
	rm -rf $(VENV) $(BLENDER_VENV) .tools out
