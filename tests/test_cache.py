"""numba's on-disk cache of our kernels: one stamp over every kernel module, so an edit or upgrade
of a module the kernels call never serves stale machine code; a package folder that cannot hold
a cache falls back to the user-wide cache directory."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from edgelstm.kernels import cache, cpu

PACKAGE = Path(__file__).resolve().parent.parent / "edgelstm"
RUN_ONE_KERNEL = ("import numpy as np; from edgelstm.kernels import cpu; x = np.ones((2, 3), np.float32); "
                  "cpu.activation(x, 0, np.empty_like(x))")


def test_every_kernel_is_stamped_with_all_kernel_sources():
    assert cache.INSTALLED
    locator = cpu.activation._cache._impl._locator
    assert type(locator).__module__ == "edgelstm.kernels.cache"
    assert locator.get_source_stamp() == ("edgelstm-kernels", cache.sources_digest())


def copy_package(tmp_path: Path) -> Path:
    shutil.copytree(PACKAGE, tmp_path / "edgelstm", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path / "edgelstm" / "kernels"


def run_kernel(tmp_path: Path) -> str:
    env = dict(os.environ, PYTHONPATH=str(tmp_path), NUMBA_DEBUG_CACHE="1", XDG_CACHE_HOME=str(tmp_path / "user"))
    env.pop("NUMBA_CACHE_DIR", None)
    result = subprocess.run([sys.executable, "-c", RUN_ONE_KERNEL], env=env, capture_output=True, text=True,
                            check=True, cwd=tmp_path)
    return "\n".join(line for line in result.stdout.splitlines() if "cpu.activation" in line)


def test_editing_a_module_the_kernels_call_recompiles_them(tmp_path):
    kernels = copy_package(tmp_path)
    assert "data saved" in run_kernel(tmp_path)
    assert "data loaded" in run_kernel(tmp_path)
    (kernels / "quantized.py").write_text((kernels / "quantized.py").read_text() + "\n# an upgrade\n")
    again = run_kernel(tmp_path)
    assert "data loaded" not in again and "index saved" in again


def test_a_package_folder_without_room_for_a_cache_falls_back_to_the_user_cache(tmp_path):
    kernels = copy_package(tmp_path)
    (kernels / "__pycache__").write_text("not a folder")  # like a read-only install: numba cannot write there
    assert f"data saved to '{tmp_path / 'user'}" in run_kernel(tmp_path)
    assert f"data loaded from '{tmp_path / 'user'}" in run_kernel(tmp_path)
