"""Build step that puts the top-level data folders inside the wheel (everything else is in pyproject.toml).

``probes/``, ``training/configs/`` and ``training/accelerate/`` stay where the repository keeps them;
building a wheel copies their files to ``probelab/_bundled/<same path>``, where
:mod:`probelab.resources` finds them in an installed copy. An editable install copies nothing: the
package then reads the checkout's folders directly.
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# repository folder -> the files of it that ship (the table in probelab/resources.py names the same folders)
BUNDLED = {
    "probes": ("*.jsonl", "*.txt", "README.md"),
    "training/configs": ("*.yaml", "*.yml", "*.toml"),
    "training/accelerate": ("*.yaml",),
}


class BuildPyWithData(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "probelab" / "_bundled"
        shutil.rmtree(target, ignore_errors=True)  # no stale copies from an earlier build
        for folder, patterns in BUNDLED.items():
            files = sorted({p for pattern in patterns for p in (ROOT / folder).glob(pattern) if p.is_file()})
            if not files:
                raise SystemExit(f"setup.py: no data files in {folder}/ to bundle")
            dest = target / folder
            dest.mkdir(parents=True, exist_ok=True)
            for src in files:
                shutil.copy2(src, dest / src.name)


setup(cmdclass={"build_py": BuildPyWithData})
