"""torch is an extra (``pip install "era-sklearn[torch]"``): the default path never imports it,
a saved MLP adapter loads and transforms with numpy alone, and each torch-only feature says
which extra to install.

The checks run in fresh interpreters, some with torch made unimportable (an import hook that
raises as a missing package does), so that they mean the same with and without torch
installed; .ci/run also runs this suite in a fresh venv that has no torch at all.
"""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]

#: Prelude of a child interpreter in which ``import torch`` fails as for a missing package.
WITHOUT_TORCH = textwrap.dedent("""\
    import sys

    class _NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "torch":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, _NoTorch())
""")


def run_python(code, *, without_torch, timeout=120):
    """Run ``code`` in a fresh interpreter on this checkout; return its stdout and stderr."""
    prelude = WITHOUT_TORCH if without_torch else ""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)], cwd=ROOT, capture_output=True,
        check=False, text=True, timeout=timeout, env=env,
    )
    assert proc.returncode == 0, f"child failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout, proc.stderr


def test_pyproject_makes_torch_an_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = lambda reqs: {r.split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip()
                          for r in reqs}
    assert "torch" not in names(project["dependencies"])
    extras = project["optional-dependencies"]
    assert names(extras["torch"]) == {"torch"}
    # The CI's torch-free run installs this one: neither torch nor a library that needs it.
    assert not names(extras["test-notorch"]) & {"torch", "sentence-transformers"}
    assert not any("[torch" in r or ",torch" in r for r in extras["test-notorch"])


def test_readme_and_ci_install_torch_only_for_the_tests():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    main_job, test_line = re.search(r"```bash\n(.*?)\n```", readme, re.DOTALL)[1].splitlines()
    assert "torch" not in main_job
    assert test_line.startswith("pip install torch==2.13.0 && ") and "[torch," in test_line
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci[-1] == test_line  # the README's test command, verbatim, closes the CI log
    assert '"$notorch/bin/pip" install -e ".[test-notorch]"' in ci
    assert '"$notorch/bin/python" -m pytest -q' in ci


def test_default_path_never_imports_torch(tmp_path):
    """Closed-form stage 1, softmax and ridge stage 2, hybrid, transform, HNSW, persistence."""
    out, _ = run_python(f"""
        import sys
        import numpy as np
        from era_sklearn import Corpus, ERAAdapter, HNSWIndex, search

        rng = np.random.default_rng(0)
        D_q, D_d = rng.normal(size=(300, 16)), rng.normal(size=(300, 8))
        rows = rng.integers(0, 300, 60)
        X, Y = D_q[rows] + 0.1 * rng.normal(size=(60, 16)), D_d[rows]
        for align, adapt in [("procrustes", "softmax"), ("lstsq", "ridge")]:
            adapter = ERAAdapter(align=align, adapt=adapt, random_state=0)
            adapter.fit_align(D_q, D_d).fit(X, Y, corpus=Corpus(D_d))
        hybrid = ERAAdapter(hybrid=True, random_state=0).fit_align(np.hstack([D_q, D_d]), D_d)
        hybrid.transform(np.hstack([X, Y]))
        path = adapter.save({str(tmp_path / "adapter.safetensors")!r})
        loaded = ERAAdapter.load(path)
        assert np.array_equal(loaded.transform(X), adapter.transform(X))
        index = HNSWIndex(random_state=0).fit(D_d)
        index.save({str(tmp_path / "index")!r})
        index = HNSWIndex.load({str(tmp_path / "index")!r})
        search(loaded, index, X[:3], k=5)
        print("torch" in sys.modules)
    """, without_torch=False)
    assert out.split() == ["False"]


@pytest.mark.torch
def test_saved_mlp_adapter_loads_and_transforms_without_torch(tmp_path):
    from era_sklearn import ERAAdapter
    from era_sklearn.adapt import Contrastive

    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 12)).astype(np.float32)
    Y = (X @ rng.normal(size=(12, 6)) + 0.1 * rng.normal(size=(120, 6))).astype(np.float32)
    mlp = Contrastive(model="mlp", hidden_size=8, max_epochs=3, min_valid_queries=2,
                      fallback=False, device="cpu")
    adapter = ERAAdapter(adapt=mlp, random_state=0).fit_align(X, Y).fit(X[:40], Y[:40])
    assert adapter.module_params_ is not None  # the trained branch is part of the file
    path = adapter.save(tmp_path / "mlp.safetensors")
    run_python(f"""
        import numpy as np
        from era_sklearn import ERAAdapter

        loaded = ERAAdapter.load({str(path)!r})
        Q = np.random.default_rng(1).normal(size=(7, 12)).astype(np.float32)
        np.save({str(tmp_path / "Q.npy")!r}, Q)
        np.save({str(tmp_path / "out.npy")!r}, loaded.transform(Q))
    """, without_torch=True)
    Q = np.load(tmp_path / "Q.npy")
    # The same numpy code on the same arrays; only the BLAS's summation order may differ
    # between the two processes: at most d_in = 12 roundings per entry of each of the four
    # products (stage map, two MLP layers, normalisation), on rows of unit length.
    tol = 4 * 12 * np.finfo(np.float32).eps
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), adapter.transform(Q), rtol=0,
                               atol=tol)


def test_torch_features_name_the_extra(tmp_path):
    """Without torch, each torch-only feature raises one ImportError naming the extra."""
    out, _ = run_python(f"""
        import json
        import numpy as np
        from era_sklearn import ERAAdapter, paper_recipe
        from era_sklearn.adapt import Contrastive
        from era_sklearn.align import TorchAlign

        X, Y = np.random.default_rng(0).normal(size=(2, 40, 6))
        attempts = {{
            "paper_recipe": lambda: paper_recipe(),
            "TorchAlign": lambda: ERAAdapter(align=TorchAlign()).fit_align(X, Y),
            "align='torch'": lambda: ERAAdapter(align="torch").fit_align(X, Y),
            "Contrastive": lambda: ERAAdapter(adapt="contrastive").fit(X, Y),
            "MLP branch": lambda: ERAAdapter(adapt=Contrastive(model="mlp")).fit_align(X, Y)
                                                                          .fit(X, Y),
            "from_era_checkpoint": lambda: ERAAdapter.from_era_checkpoint(
                {str(tmp_path / "era.pt")!r}),
        }}
        messages = {{}}
        for name, attempt in attempts.items():
            try:
                attempt()
            except ImportError as exc:
                messages[name] = [type(exc).__name__, str(exc)]
            else:
                messages[name] = ["no error", ""]
        print(json.dumps(messages))
    """, without_torch=True)
    for name, (kind, message) in json.loads(out).items():
        assert kind == "ImportError", (name, kind, message)
        assert 'pip install "era-sklearn[torch]"' in message, (name, message)


def test_main_job_without_torch_skips_the_torch_methods_in_one_line(tmp_path):
    """The README's first line installs no torch: the main benchmark still runs, and says
    in one line which methods it leaves out (no traceback, no ModuleNotFoundError)."""
    from era_sklearn.datasets import shared_dir

    try:
        shared_dir()
    except FileNotFoundError as exc:
        pytest.skip(f"shared data absent: {exc}")
    out, err = run_python(f"""
        import runpy
        import sys

        sys.argv = ["quality", "--methods", "procrustes", "era-contrastive", "--seeds", "0",
                    "--budgets", "8", "--jobs", "1", "--out", {str(tmp_path)!r}]
        runpy.run_module("benchmarks.quality", run_name="__main__")
    """, without_torch=True, timeout=300)
    notes = [line for line in out.splitlines() if "torch" in line]
    assert notes[0] == ('torch is not installed: skipping 1 torch-based method(s) (ERA '
                        'procrustes+contrastive); pip install "era-sklearn[torch]" runs them.')
    for text in (out, err):
        assert "Traceback" not in text and "ModuleNotFoundError" not in text
    saved = json.loads((tmp_path / "quality_scifact_all-MiniLM-L6-v2.json").read_text())
    assert list(saved["results"]) == ["align-only procrustes"]
    assert saved["skipped_without_torch"] == ["ERA procrustes+contrastive"]
