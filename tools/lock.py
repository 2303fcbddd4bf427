"""Refresh requirements/run.txt and requirements/test.txt: the newest versions that
pyproject.toml's ranges allow, pinned exactly with their hashes (`make lock`).

run.txt is what `make demo` installs (caltrail's own dependencies); test.txt adds the test
and dask extras (`make test`, CI: the tests run a local Dask cluster). test.txt is resolved first and run.txt is held to it, so the two
never disagree on a version. pip-tools runs in a throwaway venv of its own, pinned here.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIP_TOOLS = "pip-tools==7.7.0"
COMMON = [
    "--quiet",
    "--generate-hashes",
    "--allow-unsafe",  # setuptools (requirements/build.in) is pinned too
    "--strip-extras",
    "--no-emit-index-url",
    "--no-emit-find-links",
    "--no-emit-trusted-host",
    "--upgrade",
]


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="caltrail-lock-") as tmp:
        env_dir = Path(tmp) / "venv"
        venv.create(env_dir, with_pip=True)
        python = str(env_dir / "bin" / "python")
        subprocess.run([python, "-m", "pip", "install", "--quiet", PIP_TOOLS], check=True)
        compile_ = [python, "-m", "piptools", "compile", *COMMON]
        sources = ["pyproject.toml", "requirements/build.in"]
        subprocess.run(
            [*compile_, "--extra", "test", "--extra", "dask", "-o", "requirements/test.txt", *sources],
            check=True,
            cwd=ROOT,
        )
        subprocess.run(
            [*compile_, "-c", "requirements/test.txt", "-o", "requirements/run.txt", *sources],
            check=True,
            cwd=ROOT,
        )
    print("requirements/run.txt and requirements/test.txt refreshed; run `make test`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
