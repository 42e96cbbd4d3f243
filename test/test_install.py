"""`pip install .` and `pip install -e .` put torchao._models.sam beside the real torchao.

Each case runs in a fresh virtual environment that has its own torchao (installed from the
wheel of the version under test) and sees torch through a .pth link to this environment.
The scratch-install cases lay out a torchao without ``_models/__init__.py`` (or without
``_models``, as on torchao's main branch since #4720) with our files installed into it.
"""

import hashlib
import os
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


def run(*args: str, cwd: Path | None = None, with_stderr: bool = False) -> str:
    """stdout of ARGS (then stderr too, if asked); fails the test if it fails."""
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + (done.stderr if with_stderr else "")


def pip_install(python: str, *args: str, cwd: Path | None = None, verbose: bool = False) -> str:
    """pip install --no-deps ARGS with the venv's interpreter (nothing from the network); -q,
    or -v for the build backend's output and warnings (stdout and stderr)."""
    level = "-v" if verbose else "-q"
    return run(python, "-m", "pip", "install", level, "--no-deps", *args, cwd=cwd, with_stderr=True)


def assert_no_setuptools_warning(pip_output: str) -> None:
    """pip -v shows the build backend's output: no deprecated packaging metadata."""
    assert "SetuptoolsDeprecationWarning" not in pip_output, pip_output[-3000:]
    assert "project.license" not in pip_output


def copy_sources(dst: Path) -> Path:
    """The files a build reads (so that building leaves the checkout alone)."""
    shutil.copytree(
        REPO,
        dst,
        ignore=shutil.ignore_patterns(
            ".git", "build", "*.egg-info", "__pycache__", ".venv", ".whl", "results", "datasets"
        ),
    )
    return dst


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
    return python, site, copy_sources(tmp / "src")


def install_and_probe(python: str, site: Path, src: Path, *pip_args: str) -> list[str]:
    before = digest_tree(site / "torchao")
    assert_no_setuptools_warning(
        pip_install(python, "--no-build-isolation", *pip_args, cwd=src, verbose=True)
    )
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


@pytest.fixture(scope="module")
def target_install(tmp_path_factory):
    """`pip install --target` of this repo alone: (its folder, pip's -v output)."""
    tmp = tmp_path_factory.mktemp("target")
    src = copy_sources(tmp / "src")
    args = ("--no-build-isolation", "--target", str(tmp / "target"), str(src))
    return tmp / "target", pip_install(sys.executable, *args, cwd=tmp, verbose=True)


def test_build_metadata_has_spdx_license_and_pillow(target_install):
    target, output = target_install
    assert_no_setuptools_warning(output)
    (dist_info,) = target.glob("torchao_sam-*.dist-info")
    metadata = (dist_info / "METADATA").read_text()
    assert "License-Expression: BSD-3-Clause" in metadata
    assert "Requires-Dist: pillow" in metadata
    assert not (target / "torchao" / "__init__.py").exists()
    assert not (target / "torchao" / "_models" / "__init__.py").exists()
    assert (target / "torchao" / "_models" / "sam" / "__init__.py").is_file()


@pytest.mark.slow
def test_the_warning_check_sees_a_license_table(tmp_path):
    """The check above is not vacuous: the old `license = { text = ... }` trips it."""
    src = copy_sources(tmp_path / "src")
    pyproject = src / "pyproject.toml"
    text = pyproject.read_text()
    assert 'license = "BSD-3-Clause"' in text
    pyproject.write_text(text.replace('license = "BSD-3-Clause"', 'license = { text = "BSD" }'))
    args = ("--no-build-isolation", "--target", str(tmp_path / "target"), str(src))
    output = pip_install(sys.executable, *args, cwd=tmp_path, verbose=True)
    with pytest.raises(AssertionError):
        assert_no_setuptools_warning(output)


def scratch_torchao(root: Path, models: str) -> Path:
    """root/torchao: the installed torchao linked entry by entry, its ``_models`` folder
    "no_init" (kept without __init__.py) or "absent" (torchao's main branch)."""
    installed, dst = Path(torchao.__file__).parent, root / "torchao"
    dst.mkdir(parents=True)
    for entry in installed.iterdir():
        if entry.name not in ("_models", "__pycache__"):
            (dst / entry.name).symlink_to(entry)
    if models == "no_init":
        (dst / "_models").mkdir()
        for entry in (installed / "_models").glob("*"):
            if entry.name not in ("__init__.py", "__pycache__", "sam"):
                (dst / "_models" / entry.name).symlink_to(entry)
    return dst


@pytest.mark.slow
@pytest.mark.parametrize("models", ["no_init", "absent"])
def test_import_when_torchao_ships_no_models_init(target_install, tmp_path, models):
    """A regular install copies our files into torchao/_models/sam/; with no
    torchao/_models/__init__.py, torchao._models is a namespace package and the import works."""
    target, _ = target_install
    scratch = scratch_torchao(tmp_path / "site", models)
    # what pip does in one site-packages (its --target refuses to merge into torchao/)
    shutil.copytree(target / "torchao" / "_models" / "sam", scratch / "_models" / "sam")
    done = subprocess.run(
        [sys.executable, "-c", "import torchao._models as m; print(m.__file__); " + PROBE],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()[-4:]
    assert lines[0] == "None"  # a namespace package: no __init__.py
    assert Path(lines[1]) == scratch / "_models" / "sam" / "__init__.py"
    assert Path(lines[2]) == scratch / "quantization" / "__init__.py"
    assert lines[3] == "build_sam_vit_b"
