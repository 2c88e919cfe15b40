"""ament_python package definition; also installable with plain pip (see README)."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "loger_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["loger_core", "loger_core.*", "loger_ros", "loger_ros.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/rviz", glob("rviz/*.rviz")),
    ],
    package_data={"loger_core": ["weights/*.safetensors", "weights/*.json", "weights/*.md"]},
    include_package_data=True,
    # The robot's Python, not only our venv: ROS 2 Humble brings Python 3.10 + numpy 1.21, Jazzy
    # Python 3.12 + numpy 1.26 (and a cv_bridge compiled against it); our venv pins numpy 2.
    python_requires=">=3.10",
    install_requires=["setuptools", "numpy>=1.21,<3"],
    zip_safe=True,
    maintainer="loger_ros developers",
    maintainer_email="loger-ros@example.org",
    description="ROS 2 mapping node (odometry, TF, point-cloud map) over the LoGeR long-context 3D reconstruction network.",
    license="Apache-2.0",
    tests_require=["pytest"],
    # loger-batch (Ray); the rest of the package never imports ray. CI pins the version it tests
    # in requirements-test.txt.
    extras_require={"batch": ["ray>=2.40"]},
    entry_points={
        "console_scripts": [
            "loger_node = loger_ros.node:main",
            "loger_lifecycle_node = loger_ros.lifecycle_node:main",
            "loger-replay = loger_ros.entry:replay_main",
            "loger-reconstruct = loger_core.cli.entry:reconstruct_main",
            "loger-synth = loger_core.synthetic.cli:main",
            "loger-train = loger_core.cli.entry:train_main",
            "loger-batch = loger_ros.batch.cli:main",
        ],
    },
)
