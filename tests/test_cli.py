"""The command-line layer: ``keras_pose.cli``, the ``tools/*.py`` wrappers, the console scripts
and the shipped pipelines of an installed (non-editable) wheel."""

from __future__ import annotations

import ast
import configparser
import os
import pathlib
import runpy
import shutil
import subprocess
import sys
import zipfile

import pytest

from keras_pose import cli

REPO = pathlib.Path(__file__).resolve().parents[1]
TOOLS = sorted((REPO / "tools").glob("*.py"))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _console_scripts() -> dict[str, str]:
    """setup.cfg's console scripts: {script name: "module:function"}."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    lines = config["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict((part.strip() for part in line.split("=")) for line in lines)


def test_every_tool_is_a_wrapper_of_a_cli_main_with_a_console_script():
    scripts = _console_scripts()
    targets = set(scripts.values())
    assert len(TOOLS) == len(scripts) == 11
    for path in TOOLS:
        tree = ast.parse(path.read_text())
        imports = [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]
        # One import, of this tool's main from keras_pose.cli; no sys.path edits.
        assert len(imports) == 1 and imports[0].module == "keras_pose.cli", path
        function = imports[0].names[0].name
        assert function == f"{path.stem}_main", path
        assert callable(getattr(cli, function))
        assert f"keras_pose.cli:{function}" in targets, f"no console script runs {path.name}"
        assert "sys.path" not in path.read_text()
    for name, target in scripts.items():
        module, function = target.split(":")
        assert module == "keras_pose.cli" and callable(getattr(cli, function)), name
        assert name == "keras-pose-" + function.removesuffix("_main").replace("_", "-")


@pytest.mark.parametrize("path", TOOLS, ids=[path.stem for path in TOOLS])
def test_tool_wrapper_runs_its_main(path, monkeypatch, capsys):
    """``python tools/X.py --help``, in this process: the wrapper, run as ``__main__``, imports
    and runs its main, which names the tool in its usage."""
    monkeypatch.setattr(sys, "argv", [str(path), "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(path), run_name="__main__")
    assert exit_info.value.code in (0, None)
    assert capsys.readouterr().out.startswith(f"usage: {path.name} ")


def test_a_tool_runs_as_a_script():
    """One wrapper as a user starts it (its own interpreter, tools/ first on sys.path; conftest.py
    puts this checkout on the subprocess's PYTHONPATH)."""
    path = REPO / "tools" / "predict.py"
    result = subprocess.run([sys.executable, str(path), "--help"], capture_output=True,
                            text=True, timeout=120, env=ENV, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage: predict.py ")


def test_importing_the_cli_leaves_tensorflow_out():
    """``--help`` and argument errors of every tool stay quick: no TensorFlow import."""
    code = ("import sys, keras_pose.cli; "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, env=ENV, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_default_pipeline_in_a_checkout_is_the_top_level_quickstart():
    assert cli.DEFAULT_PIPELINE == REPO / "pipelines" / "quickstart.toml"
    assert cli.shipped_pipeline("lspet") == REPO / "pipelines" / "lspet.toml"
    # A name that is not shipped points at the package data, so the error names a real place.
    missing = cli.shipped_pipeline("no_such_pipeline")
    assert missing == REPO / "keras_pose" / "pipelines" / "no_such_pipeline.toml"


def test_bad_box_is_an_argument_error():
    assert cli.parse_box("1,2,3.5,4") == [1.0, 2.0, 3.5, 4.0]
    for text in ("1,2,3", "1,2,0,4", "a,b,c,d"):
        with pytest.raises(Exception, match="x,y,w,h"):
            cli.parse_box(text)


def _copy_sources(target: pathlib.Path) -> pathlib.Path:
    """The files a build reads, copied: building in the checkout would write build/ there."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("keras_pose", "pipelines"):
        shutil.copytree(REPO / name, target / name, ignore=ignore)
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, target / name)
    return target


@pytest.mark.slow
def test_wheel_ships_the_pipelines_and_an_installed_copy_finds_the_default(tmp_path):
    source = _copy_sources(tmp_path / "source")
    wheels = tmp_path / "wheels"
    # --no-build-isolation: the installed setuptools, no network.
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", str(source), "-w", str(wheels)],
                           capture_output=True, text=True, timeout=300, env=ENV, cwd=tmp_path)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("keras_pose-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names
                            if n.endswith(".dist-info/entry_points.txt"))
    shipped = sorted(path.name for path in (REPO / "pipelines").glob("*.toml"))
    assert "quickstart.toml" in shipped
    assert {f"keras_pose/pipelines/{name}" for name in shipped} <= names
    assert "keras_pose/cli/__init__.py" in names
    for script, target in _console_scripts().items():
        assert f"{script} = {target}" in entry_points

    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps",
                              "--no-index", "--target", str(target), str(wheel)],
                             capture_output=True, text=True, timeout=300, env=ENV, cwd=tmp_path)
    assert install.returncode == 0, install.stderr[-3000:]
    # Only the installed copy on the path, from a folder outside the checkout.
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {**ENV, "PYTHONPATH": str(target)}
    code = ("import keras_pose.cli as cli; from keras_pose.pipeline import load_pipeline; "
            "print(cli.__file__); print(cli.DEFAULT_PIPELINE); "
            "print(load_pipeline(cli.DEFAULT_PIPELINE).name)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300, env=env, cwd=outside)
    assert result.returncode == 0, result.stderr[-3000:]
    module, default, name = result.stdout.split()
    assert module == str(target / "keras_pose" / "cli" / "__init__.py")
    assert default == str(target / "keras_pose" / "pipelines" / "quickstart.toml")
    assert name == "quickstart"
    # The console script, as pip wrote it, names the same default in its help.
    script = target / "bin" / "keras-pose-train"
    # COLUMNS: argparse would break the long path across lines.
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True,
                            timeout=120, env={**env, "COLUMNS": "1000"}, cwd=outside)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("usage: keras-pose-train ")
    assert f"(default: {default})" in result.stdout


def test_setup_cfg_lists_every_package_folder():
    """setup.cfg names its packages (to map pipelines/): a new package folder must be added."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    folders = {".".join(path.parent.relative_to(REPO).parts)
               for path in (REPO / "keras_pose").rglob("__init__.py")}
    assert listed == folders | {"keras_pose.pipelines"}
