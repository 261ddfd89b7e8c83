"""Training, data generation and measurement for meshstream: nothing here runs in the product.

The runtime (``stream``, ``engines``) never imports this package; these modules import the
runtime. What lives here: motion capture reading and retargeting (``mocap``), synthetic and
rendered training people (``synthetic``, ``rendered``), the lifter's training and evaluation,
the synthetic benchmark's clips (``make_synthetic``), SMPL-format test files
(``random_files``) and the measurement scripts behind the figures in docs/.

Each script is a module with ``main()``, run as ``python -m meshstream_tools.NAME`` or through
its thin wrapper ``python tools/NAME.py``. The package is installed with the project
(``pip install -e .``, which ``make setup`` does); it works from a source checkout, whose
folder it writes to where a script says so (:data:`REPOSITORY`).
"""

from pathlib import Path

# The repository this package sits in (tools/meshstream_tools/ -> the checkout's root).
REPOSITORY = Path(__file__).resolve().parents[2]
