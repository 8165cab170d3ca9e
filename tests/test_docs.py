"""The documentation holds: links and anchors exist, the README stays a guide, its commands run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "export" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# A reference to a documentation section: README.md#datasets, docs/method.md#the-encoder, ...
REFERENCE = re.compile(r"((?:docs/)?[\w-]*(?:README)?[\w-]*\.md)#([\w-]+)")


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown file: its headings' slugs and explicit <a id=...>."""
    text = path.read_text()
    found = set(re.findall(r'<a id="([\w-]+)"', text))
    for heading in re.findall(r"^#+ +(.+?) *$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        found.add(slug)
    return found


def test_every_section_a_message_or_page_points_at_exists():
    sources = [p for p in (ROOT / "maskpre_tf").rglob("*.py")] + DOCS
    missing = []
    for source in sources:
        for target, anchor in REFERENCE.findall(source.read_text()):
            base = source.parent if source.suffix == ".md" else ROOT
            path = (base / target) if (base / target).exists() else ROOT / target
            if not path.exists() or anchor not in anchors(path):
                missing.append(f"{source.relative_to(ROOT)}: {target}#{anchor}")
    assert not missing


def test_every_relative_link_of_the_docs_exists():
    missing = []
    for page in DOCS:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            if not (page.parent / target).exists():
                missing.append(f"{page.relative_to(ROOT)}: {target}")
    assert not missing


def test_the_readme_is_a_guide():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    for section in ("Install", "The demo", "Your own folder", "Python API", "Troubleshooting"):
        assert f"## {section}" in text


def own_folder_commands() -> list[str]:
    """The command lines of the README's own-folder block (comments dropped)."""
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- own-folder-commands")[1].split("```bash\n")[1].split("```")[0]
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


TINY_FOLDER_FLAGS = """--dataset=folder
--data_dir=data/my_crops
--run_dir=runs/folder_cpu
--backbone=resnet_small
--backbone_weights=none
--height=64
--width=32
--pad=2
--batch_size=16
--num_instances=4
--epochs=2
--iters=2
--eps=auto
--k1=8
--k2=2
--min_samples=2
--outliers=instances
"""


@pytest.mark.skipif(shutil.which("bash") is None, reason="the README's commands are bash")
def test_the_readmes_own_folder_commands_run_on_a_generated_folder(synth_market, tmp_path):
    """The README's commands, verbatim, in a project folder whose configs/folder_cpu.flags is a
    tiny budget of the same form and whose data/my_crops holds generated unlabelled crops."""
    crops = tmp_path / "data" / "my_crops"
    crops.mkdir(parents=True)
    train = Path(synth_market) / "bounding_box_train"
    for i, image in enumerate(sorted(train.glob("*.jpg"))):  # a flat folder, no identities
        camera = image.name.split("_")[1][:2]
        shutil.copy(image, crops / f"crop{i:04d}_{camera}_frame.jpg")
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "folder_cpu.flags").write_text(TINY_FOLDER_FLAGS)
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    commands = own_folder_commands()
    assert len(commands) == 3
    for command in commands:
        command = command.replace("python ", f"{sys.executable} ", 1)
        proc = subprocess.run(
            ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert proc.returncode == 0, command + "\n" + proc.stderr[-2000:]
    features = np.load(tmp_path / "runs" / "folder_cpu" / "features.npz")
    assert features["features"].shape[0] == len(list(crops.glob("*.jpg")))
    np.testing.assert_allclose(np.linalg.norm(features["features"], axis=1), 1, atol=1e-5)
