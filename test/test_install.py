"""`pip install .` and `pip install -e .` put torchao._models.sam beside the real torchao.

Each case runs in a fresh virtual environment that has its own torchao (installed from the
wheel of the version under test) and sees torch through a .pth link to this environment.
"""

import hashlib
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

import torchao

REPO = Path(__file__).resolve().parents[1]
PROBE = (
    "import torchao._models.sam as s, torchao.quantization as q; "
    "print(s.__file__); print(q.__file__); print(s.sam_model_registry['vit_b'].__name__)"
)


def run(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def pip_install(python: str, *args: str, cwd: Path | None = None) -> str:
    """pip install -q --no-deps ARGS with the venv's interpreter (nothing from the network)."""
    return run(python, "-m", "pip", "install", "-q", "--no-deps", *args, cwd=cwd)


def digest_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and "sam" not in p.parts
    }


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """(python, site-packages) of a fresh venv with torchao installed from its wheel."""
    tmp = tmp_path_factory.mktemp("install")
    wheels = tmp / "wheels"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "-d",
            str(wheels),
            f"torchao=={torchao.__version__.split('+')[0]}",
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"could not fetch the torchao wheel from PyPI: {done.stderr[-300:]}")
    venv.create(tmp / "venv", with_pip=False)
    python = str(tmp / "venv" / "bin" / "python")
    site = Path(
        run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip()
    )
    # torch, pip, setuptools from this environment, after the venv's own site-packages
    (site / "zz_parent_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip_install(python, "--no-index", "--ignore-installed", *map(str, wheels.glob("torchao-*.whl")))
    src = tmp / "src"
    shutil.copytree(
        REPO,
        src,
        ignore=shutil.ignore_patterns(
            ".git", "build", "*.egg-info", "__pycache__", ".venv", ".whl", "results", "datasets"
        ),
    )
    return python, site, src


def install_and_probe(python: str, site: Path, src: Path, *pip_args: str) -> list[str]:
    before = digest_tree(site / "torchao")
    pip_install(python, "--no-build-isolation", *pip_args, cwd=src)
    lines = run(python, "-c", PROBE, cwd=site.parent).splitlines()[-3:]
    assert Path(lines[1]) == site / "torchao" / "quantization" / "__init__.py"
    assert lines[2] == "build_sam_vit_b"
    assert digest_tree(site / "torchao") == before, "installing changed torchao's own files"
    run(python, "-m", "pip", "uninstall", "-q", "-y", "torchao-sam")
    assert digest_tree(site / "torchao") == before, "uninstalling changed torchao's own files"
    assert not (site / "torchao" / "_models" / "sam").exists()
    run(python, "-c", "import torchao._models, torchao.quantization", cwd=site.parent)
    return lines


@pytest.mark.slow
def test_pip_install(env):
    python, site, src = env
    lines = install_and_probe(python, site, src, ".")
    assert Path(lines[0]) == site / "torchao" / "_models" / "sam" / "__init__.py"


@pytest.mark.slow
def test_pip_install_editable(env):
    python, site, src = env
    lines = install_and_probe(python, site, src, "-e", ".")
    assert Path(lines[0]) == src / "torchao" / "_models" / "sam" / "__init__.py"


def test_repo_ships_no_torchao_files():
    assert not (REPO / "torchao" / "__init__.py").exists()
    assert not (REPO / "torchao" / "_models" / "__init__.py").exists()
