"""Hatch build hook: compile the reader's C fast path, ``alorws.client._speedups``.

It cythonizes ``src/alorws/client/_speedups.pyx`` against the picows of the build environment
(its ``picows.pxd``) and compiles it with the machine's C compiler. A wheel gets the module and a
platform tag; an editable install gets it next to the .pyx, in ``src/`` (where the editable
install points). Nothing here may fail the install: any error is a warning, and the package is
then the pure-Python one (``alorws.client._ws.COMPILED`` is False).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import tempfile
import traceback
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


MODULE = "alorws.client._speedups"
PYX = Path("src/alorws/client/_speedups.pyx")


class SpeedupsBuildHook(BuildHookInterface):
    """Builds ``alorws.client._speedups`` for wheels and editable installs, if it can."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return  # an sdist ships the .pyx; its wheel is built where it is installed
        root = Path(self.root)
        self._tmp = tempfile.mkdtemp(prefix="alorws-build-")
        try:
            self._build(version, build_data, root, Path(self._tmp))
        except BaseException as exc:  # a compiler's SystemExit too: never fail the install
            if isinstance(exc, KeyboardInterrupt):
                raise
            self._warn(exc)

    def _build(self, version: str, build_data: dict[str, Any], root: Path, tmp: Path) -> None:
        if version == "editable":
            # A module left by an earlier build must not outlive a failed rebuild of a new .pyx.
            for old in (root / PYX.parent).glob("_speedups.*"):
                if old.suffix in (".so", ".pyd"):
                    old.unlink()
        so, picows_version = _compile(root, tmp)
        if version == "editable":
            # The editable install imports from src/: the module goes next to its .pyx.
            shutil.copy2(so, root / PYX.parent / so.name)
        else:
            build_data["pure_python"] = False
            build_data["infer_tag"] = True
            build_data["force_include"][str(so)] = f"alorws/client/{so.name}"
        self.app.display_info(f"alorws: built {MODULE} against picows {picows_version}")

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        tmp = getattr(self, "_tmp", None)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    def _warn(self, exc: BaseException) -> None:
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        message = (
            f"alorws: the compiled reader ({MODULE}) was not built ({detail}); "
            "installing the pure-Python reader"
        )
        self.app.display_warning(message)
        traceback.print_exc()  # shown by pip install -v


def _compile(root: Path, tmp: Path) -> tuple[Path, str]:
    """Cythonize and compile the module in ``tmp``: the built extension and the picows version
    it was built against."""
    from Cython.Build import cythonize
    from setuptools import Distribution, Extension
    from setuptools.command.build_ext import build_ext

    spec = importlib.util.find_spec("picows")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("picows is not installed in the build environment")
    picows_dir = Path(next(iter(spec.submodule_search_locations)))
    picows_version = importlib.metadata.version("picows")
    # A copy in tmp: cythonize writes its .c next to the source it is given.
    source = tmp / PYX.name
    shutil.copy2(root / PYX, source)
    ext = Extension(
        MODULE,
        [str(source)],
        # The runtime uses the module only with this very picows version (struct layouts).
        define_macros=[("ALORWS_PICOWS_VERSION", f'"{picows_version}"')],
    )
    modules = cythonize(
        [ext],
        include_path=[str(picows_dir.parent)],
        quiet=True,
        force=True,
        language_level=3,
    )
    dist = Distribution({"name": "alorws-speedups", "ext_modules": modules})
    cmd = build_ext(dist)
    cmd.build_lib = str(tmp / "lib")
    cmd.build_temp = str(tmp / "temp")
    cmd.ensure_finalized()
    cmd.run()
    built = Path(cmd.get_ext_fullpath(MODULE))
    if not built.is_file():
        raise RuntimeError(f"the compiler produced no {built.name}")
    return built, picows_version
