"""Package layout; the metadata, dependencies and console scripts are in ``setup.cfg``.

The shipped pipelines stay in the top-level ``pipelines/`` folder and are installed as the package
data ``keras_pose/pipelines/*.toml``, so ``keras-pose-train`` finds its default pipeline from a
non-editable install (``keras_pose.cli.train.shipped_pipeline``). ``setup.cfg`` cannot map them:
its ``packages = find:`` lists only folders under ``keras_pose/``.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["keras_pose", "keras_pose.*"]), "keras_pose.pipelines"],
    package_dir={"keras_pose.pipelines": "pipelines"},
    package_data={"keras_pose.pipelines": ["*.toml"]},
)
