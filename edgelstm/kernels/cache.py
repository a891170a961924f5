"""numba's on-disk cache for our kernels, keyed on every kernel source, not only the calling file.

numba stamps a cached function with its own source file. Our kernels inline code from sibling
modules (activations.py, blas.py, int8.py, quantized.py): an upgrade or an edit that changed only
those would be served the old machine code. The locators here give every function defined in
``edgelstm/kernels`` one stamp, a hash of all the modules in that folder. numba's own order is
kept: ``NUMBA_CACHE_DIR`` when set, the package's ``__pycache__`` when writable, else the
user-wide cache directory (a read-only install still caches).
"""

import hashlib
from functools import lru_cache
from pathlib import Path

from numba.core import caching

KERNELS = Path(__file__).resolve().parent


@lru_cache(maxsize=1)
def sources_digest() -> str:
    """SHA-256 over the names and contents of every module in edgelstm/kernels."""
    digest = hashlib.sha256()
    for path in sorted(KERNELS.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _locator(base: type) -> type:
    class KernelsLocator(base):
        @classmethod
        def from_function(cls, py_func, py_file):
            if Path(py_file).resolve().parent != KERNELS:
                return None
            return super().from_function(py_func, py_file)

        def get_source_stamp(self):
            return ("edgelstm-kernels", sources_digest())

    KernelsLocator.__name__ = KernelsLocator.__qualname__ = f"Kernels{base.__name__.lstrip('_')}"
    return KernelsLocator


def _numba_class(*names: str):
    return next((getattr(caching, n) for n in names if hasattr(caching, n)), None)


def install() -> bool:
    """Put our locators ahead of numba's (once); False when this numba's caching has another shape."""
    impl = _numba_class("CacheImpl", "_CacheImpl")
    bases = [_numba_class("UserProvidedCacheLocator", "_UserProvidedCacheLocator"),
             _numba_class("InTreeCacheLocator", "_InTreeCacheLocator"),
             _numba_class("UserWideCacheLocator", "_UserWideCacheLocator")]
    if impl is None or None in bases or not isinstance(getattr(impl, "_locator_classes", None), list):
        return False
    classes = impl._locator_classes
    if any(getattr(c, "__module__", "") == __name__ for c in classes):
        return True
    classes[:0] = [_locator(base) for base in bases]
    return True


INSTALLED = install()
