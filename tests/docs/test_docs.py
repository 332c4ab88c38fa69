"""The documentation cannot drift: generated pages match their sources, every resource in the docs passes
`eft validate`, every command in them names real targets, files, flags and chart values, and the site builds
in strict mode (a broken link or a page left out of the nav fails it)."""

from __future__ import annotations

import io
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from eft_api.reference import PAGES, write_pages
from eft_cli.main import build_parser
from eft_cli.validate import validate_files

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
PAGES_MD = [*sorted(DOCS.rglob("*.md")), REPO / "README.md"]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
#: Programs a docs command may name that the smoke test does not run (a cluster, a registry, AWS).
EXTERNAL = {"kubectl", "docker", "podman", "aws", "eft-operator", "open"}
QUICKSTART = yaml.safe_load((REPO / "examples" / "quickstart.yaml").read_text())


def _blocks(lang: str) -> list[tuple[Path, str]]:
    out = []
    for page in PAGES_MD:
        for m in FENCE.finditer(page.read_text(encoding="utf-8")):
            if m.group(1) == lang:
                out.append((page, m.group(2)))
    return out


def _commands(block: str) -> list[str]:
    """The command lines of a shell block: continuations joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in joined.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _ids(items: list[tuple[Path, str]]) -> list[str]:
    return [f"{p.relative_to(REPO)}:{i}" for i, (p, _) in enumerate(items)]


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        return {**base, **{k: _merge(base.get(k), v) for k, v in over.items()}}
    return over


def _resources(page: Path) -> dict[str, dict[str, Any]]:
    """The full resources a page shows, by the file name its text saves them as (``<name>.yaml``)."""
    out = {}
    for _, block in (b for b in _blocks("yaml") if b[0] == page):
        doc = yaml.safe_load(block)
        if isinstance(doc, dict) and doc.get("kind") == "EmbeddingFinetune":
            out[f"{doc['metadata']['name']}.yaml"] = doc
    return out


def test_generated_reference_pages_are_current(tmp_path: Path) -> None:
    write_pages(tmp_path)
    for name in PAGES:
        current = (DOCS / "reference" / name).read_text(encoding="utf-8")
        assert current == (tmp_path / name).read_text(encoding="utf-8"), f"run `make docs`: docs/reference/{name}"


YAML_BLOCKS = _blocks("yaml")


@pytest.mark.parametrize(("page", "block"), YAML_BLOCKS, ids=_ids(YAML_BLOCKS))
def test_every_resource_in_the_docs_is_valid(page: Path, block: str, tmp_path: Path) -> None:
    doc = yaml.safe_load(block)
    assert isinstance(doc, dict), f"{page}: a yaml block that does not parse to a mapping"
    if doc.get("kind") == "EmbeddingFinetune":
        resource = doc
    elif set(doc) == {"spec"}:  # a fragment: shown over the quickstart resource
        resource = _merge(QUICKSTART, doc)
    elif set(doc) <= set(_chart_values()["properties"]):  # chart values: the chart's strict schema judges them
        errors = [e.message for e in Draft202012Validator(_chart_values()).iter_errors(doc)]
        assert errors == [], f"{page}: chart values the chart refuses:\n{block}\n{errors}"
        return
    else:  # status and ConfigMap excerpts: checked where they are generated
        pytest.skip("not a resource")
    path = tmp_path / "doc.yaml"
    path.write_text(yaml.safe_dump(resource))
    out = io.StringIO()
    assert validate_files([str(path)], out) == 0, f"{page}:\n{block}\n{out.getvalue()}"


SH_BLOCKS = _blocks("sh")


def _chart_values() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(
        (REPO / "charts" / "embedding-finetune-operator" / "values.schema.json").read_text()
    )
    return schema


def _check_helm(words: list[str]) -> None:
    if words[1] == "uninstall":
        return
    chart = next(w for w in words[2:] if w.startswith("charts/"))
    assert (REPO / chart / "Chart.yaml").exists(), chart
    schema = _chart_values()
    for i, w in enumerate(words):
        if w == "--set":
            node = schema
            for part in words[i + 1].split("=", 1)[0].split("."):
                assert part in node.get("properties", {}), f"chart value {words[i + 1]!r} is not in values.schema.json"
                node = node["properties"][part]


def _check_make(words: list[str]) -> None:
    makefile = (REPO / "Makefile").read_text()
    for target in (w for w in words[1:] if "=" not in w):
        assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"make has no target {target!r}"


def _check_eft(words: list[str], page: Path, tmp_path: Path) -> None:
    for name, doc in _resources(page).items():
        (tmp_path / name).write_text(yaml.safe_dump(doc))
    args = build_parser().parse_args(words[1:])  # a flag the CLI lacks fails here (SystemExit)
    if args.command in ("validate", "render") and "--server" not in words:
        done = subprocess.run(
            [sys.executable, "-m", "eft_cli.main", *words[1:]],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"{page}: `{' '.join(words)}` failed:\n{done.stdout}{done.stderr}"


@pytest.mark.parametrize(("page", "block"), SH_BLOCKS, ids=_ids(SH_BLOCKS))
def test_every_command_in_the_docs_names_real_things(page: Path, block: str, tmp_path: Path) -> None:
    (tmp_path / "examples").symlink_to(REPO / "examples")
    for line in _commands(block):
        words = [w for w in shlex.split(line) if not re.match(r"^[A-Z_]+=", w)]
        prog = words[0]
        if prog == "make":
            _check_make(words)
        elif prog == "helm":
            _check_helm(words)
        elif prog == "eft":
            expanded = [str(p.relative_to(REPO)) for w in words for p in sorted(REPO.glob(w))] if "*" in line else []
            _check_eft(words if not expanded else [*words[:2], *expanded], page, tmp_path)
        else:
            assert prog in EXTERNAL, f"{page}: `{line}`: a command the docs test does not know ({prog})"
            for i, w in enumerate(words):
                if w == "-f" and not words[i + 1].startswith("-"):
                    target = words[i + 1]
                    assert (REPO / target).exists() or target in _resources(page), f"{page}: {target} does not exist"


@pytest.mark.parametrize(("page", "block"), _blocks("python"), ids=_ids(_blocks("python")))
def test_python_blocks_compile(page: Path, block: str) -> None:
    compile(block, str(page), "exec")


def test_readme_is_a_landing_page_whose_links_resolve() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme):
        if not target.startswith("http"):
            assert (REPO / target).exists(), f"README links to a missing file: {target}"


def test_every_environment_variable_of_the_operator_is_documented() -> None:
    config = (REPO / "operator" / "eft_operator" / "config.py").read_text(encoding="utf-8")
    pages = [DOCS / "platform" / "running-the-operator.md", DOCS / "operations.md"]
    read = set(re.findall(r'"(EFT_[A-Z_]+)"', config))
    assert len(read) >= 15
    rows = "\n".join(line for p in pages for line in p.read_text(encoding="utf-8").splitlines() if "| `EFT_" in line)
    assert {v for v in read if f"`{v}`" not in rows} == set()


def test_the_failure_jsonpath_and_reasons_are_documented() -> None:
    page = (DOCS / "guide" / "using.md").read_text(encoding="utf-8")
    assert """[?(@.type=="Stalled")].reason}""" in page
    for reason in ("JobRejected", "PodCreationRefused", "ImageNotAllowed", "Unschedulable", "ReconcileFailed"):
        assert f"`{reason}`" in page


def test_the_site_builds_in_strict_mode(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert (tmp_path / "site" / "index.html").exists()
