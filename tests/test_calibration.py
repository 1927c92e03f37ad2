"""Calibration from the user's own runs: the fit recovers factors it did not see, refuses what
the runs cannot determine, never lets a held-out run into its own fit, and `--profile` moves a
prediction the way its factors say. Runs are the MPT FSDP rows of tests/data (training: fast)."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO, run_cli
from parasim.errors import InputError
from parasim.specs.profile import Factors, Profile, load_profile, profile_from_mapping
from parasim.specs.validation_case import load_cases
from parasim.validation import calibrate as cal
from parasim.validation import crossval
from parasim.validation.run import run_cases

RUNS = REPO / "tests" / "data" / "calib-mpt-h100.yaml"
FILE = str(RUNS)


def _synthetic(truth: dict[str, float]) -> list:
    """The runs with `measured` replaced by the simulator's own prediction on a part whose
    efficiencies are scaled by `truth`: the answer a correct fit must find."""
    cases = load_cases(RUNS)
    scaled = run_cases([(cal.with_factors(c, Factors(truth)), FILE) for c in cases])
    out = []
    for c, r in zip(cases, scaled):
        assert r.status == "ok"
        out.append((replace(c, measured={k: r.predicted[k] for k in c.measured}), FILE))
    return out


@pytest.mark.parametrize("truth", [{"gemm_efficiency": 0.8}, {"gemm_efficiency": 0.85, "attention_efficiency": 0.7}])
def test_the_fit_recovers_factors_it_was_not_told(truth):
    cases = _synthetic(truth)
    names = list(truth)
    obs = cal.observe(cases, names)
    fit, reports = cal.fit_group(obs, names, ("llm-foundry", "h100-sxm"), explicit=True, refine=2)
    for name, want in truth.items():
        # within 5 %: the prior pulls each factor a little toward the catalog's 1
        assert fit.factors[name] == pytest.approx(want, rel=0.05), fit.factors
    # the re-predicted runs are the real simulator's, and now close to the "measured" ones
    assert max(abs(e) for r in reports for e in r.errors.values()) < 0.05


def test_a_calibrated_fit_beats_the_catalog_on_its_runs_and_stays_in_bounds():
    obs = cal.observe([(c, FILE) for c in load_cases(RUNS)], cal.DEFAULT_FACTORS["training"])
    fit, reports = cal.fit_group(obs, cal.DEFAULT_FACTORS["training"], ("llm-foundry", "h100-sxm"), refine=1)
    before = sorted(abs(e) for o in obs for e in o.base.errors.values())
    after = sorted(abs(e) for r in reports for e in r.errors.values())
    assert after[len(after) // 2] < before[len(before) // 2]
    assert all(0.3 <= v <= 1.5 for v in fit.factors.values())


@pytest.fixture(scope="module")
def observed():
    return cal.observe([(c, FILE) for c in load_cases(RUNS)], cal.DEFAULT_FACTORS["training"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(runs=st.integers(1, 16), factors=st.integers(1, 4))
def test_more_factors_than_the_runs_determine_are_refused(observed, runs, factors):
    names = list(cal.DEFAULT_FACTORS["training"][:factors])
    if runs >= cal.MIN_RUNS_PER_FACTOR * factors:
        return  # determined by count (collinearity may still refuse: not this property)
    with pytest.raises(InputError) as e:
        cal.linear_fit(observed[:runs], names, ("llm-foundry", "h100-sxm"), explicit=True)
    assert e.value.field in ("factors", "runs")


def test_by_default_undetermined_factors_are_dropped_with_a_note(observed):
    fit = cal.linear_fit(observed[:3], cal.DEFAULT_FACTORS["training"], ("llm-foundry", "h100-sxm"))[0]
    assert len(fit.factors) == 1 and len(fit.notes) == 3
    assert all("not fitted" in n for n in fit.notes)


def test_a_factor_no_run_moves_is_refused_when_named(observed):
    still = [cal.Observed(o.case, o.file, o.base, sens={}) for o in observed[:6]]  # moved by nothing
    with pytest.raises(InputError, match="do not move it"):
        cal.linear_fit(still, ["comm_efficiency"], ("x", "y"), explicit=True)
    assert cal.linear_fit(still, ["comm_efficiency"], ("x", "y"))[0].factors == {}  # by default: dropped


def test_folds_never_leak(observed, monkeypatch):
    """Each fold's fits see only the other folds' runs."""
    seen: list[set[str]] = []
    real = crossval._fits

    def spy(train, names, scope):
        seen.append({o.case.id for o in train})
        return real(train, names, scope)

    monkeypatch.setattr(crossval, "_fits", spy)
    k = 4
    pairs = crossval.held_out(observed, k, cal.DEFAULT_FACTORS["training"])
    assert len(seen) == k and len(pairs) == len(observed)
    for j, train in enumerate(seen):
        held = {o.case.id for i, o in enumerate(observed) if crossval.fold_of(i, k) == j}
        assert not held & train and held | train == {o.case.id for o in observed}


def test_profile_scopes_most_specific_wins_and_caps_efficiency_at_one():
    p = profile_from_mapping({"parasim_profile": 1, "entries": [
        {"software": "*", "accelerator": "*", "factors": {"gemm_efficiency": 0.5, "memory_efficiency": 1.5}},
        {"software": "vllm", "accelerator": "h100-sxm", "factors": {"gemm_efficiency": 0.9}}]}, "p")
    assert p.factors_for("vllm", "h100-sxm").values == {"gemm_efficiency": 0.9, "memory_efficiency": 1.5}
    assert p.factors_for("sglang", "h100-sxm").get("gemm_efficiency") == 0.5
    from parasim.specs.catalog import accelerators

    acc = accelerators()["h100-sxm"]
    got = p.factors_for("vllm", "h100-sxm").apply(acc).efficiency
    assert got.memory == min(1.0, 1.5 * acc.efficiency.memory) <= 1.0
    assert got.gemm == pytest.approx(0.9 * acc.efficiency.gemm)
    assert accelerators()["h100-sxm"].efficiency == acc.efficiency  # the catalog itself is untouched


def test_a_profile_of_several_software_is_ambiguous_without_one():
    p = Profile(entries=tuple(profile_from_mapping({"parasim_profile": 1, "entries": [
        {"software": s, "accelerator": "*", "factors": {"gemm_efficiency": 0.9}} for s in ("vllm", "sglang")]},
        "p").entries))
    with pytest.raises(InputError, match="several software"):
        p.factors_for(None, "h100-sxm")


# --- the CLI, as a user runs it -----------------------------------------------------------------
def _profile(tmp_path: Path, factors: dict) -> str:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"parasim_profile": 1, "entries": [
        {"software": "*", "accelerator": "*", "factors": factors}]}))
    return str(path)


def _json(*args: str) -> dict:
    r = run_cli(*args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_profile_slows_train_as_its_gemm_factor_says(tmp_path):
    base = ["train", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--gpus", "8", "--seq-len", "2048",
            "--global-batch", "32"]
    plain = _json(*base)
    slow = _json(*base, "--profile", _profile(tmp_path, {"gemm_efficiency": 0.5}))
    assert slow["calibration"]["factors"] == {"gemm_efficiency": 0.5}
    # compute-bound GEMMs at half the efficiency: slower, but never more than twice (the rest is unchanged)
    assert plain["step_time_s"] < slow["step_time_s"] < 2 * plain["step_time_s"]


def test_profile_iteration_overhead_adds_to_every_serving_step(tmp_path):
    base = ["serve", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--requests", "1", "--rate", "1",
            "--prompt-tokens", "32", "--output-tokens", "33", "--iteration-overhead-s", "0.001"]
    plain = _json(*base)["summary"]
    more = _json(*base, "--profile", _profile(tmp_path, {"iteration_overhead_s": 0.01}))["summary"]
    # one request alone: every decode step is one iteration, each 10 ms longer
    assert more["tpot_mean_s"] - plain["tpot_mean_s"] == pytest.approx(0.01, rel=1e-6)


def test_calibrate_writes_a_profile_that_validate_reads_and_is_deterministic(tmp_path):
    outs = []
    for j in ("1", "2"):
        out = tmp_path / f"p{j}.yaml"
        r = run_cli("calibrate", FILE, "-o", str(out), "-j", j)
        assert r.returncode == 0, r.stderr
        outs.append(out.read_text())
    assert outs[0] == outs[1]
    prof = load_profile(tmp_path / "p1.yaml")
    entry = prof.entries[0]
    assert (entry.software, entry.accelerator) == ("llm-foundry", "h100-sxm")
    assert entry.fit["runs"] == 16 and entry.fit["out_of_fold"]["runs"] == 16
    before = _json("validate", FILE)["summary"]["training"]["median_abs_error"]
    after = _json("validate", FILE, "--profile", str(tmp_path / "p1.yaml"))["summary"]["training"]["median_abs_error"]
    assert after < before


def test_calibrate_refuses_named_factors_the_runs_cannot_determine(tmp_path):
    one = tmp_path / "one.yaml"
    cases = yaml.safe_load(RUNS.read_text())["cases"][:3]
    one.write_text(yaml.safe_dump({"cases": cases}))
    r = run_cli("calibrate", str(one), "-o", str(tmp_path / "p.yaml"), "--factors", "gemm_efficiency,memory_efficiency")
    assert r.returncode == 2 and r.stderr.startswith("parasim: error: factors: cannot fit "), r.stderr
    assert not (tmp_path / "p.yaml").exists()


def test_validate_cv_reports_out_of_fold_and_three_run_errors():
    out = _json("validate", FILE, "--cv", "4")
    cv = out["cross_validation"]
    assert cv["k"] == 4 and len(cv["files"]) == 1
    f = cv["files"][0]
    assert f["scored_cases"] == 16 and len(f["out_of_fold_errors"]) == 16
    assert len(f["calibration_runs"]) == 3 and f["calibrated_on_3"]["errors"] == 13
    # one GPU: the per-GPU check fits the same 3 runs and predicts the same rest
    assert f["calibration_runs_per_gpu"] == {"llm-foundry / h100-sxm": f["calibration_runs"]}
    assert f["calibrated_on_3_per_gpu"] == f["calibrated_on_3"]
    assert f["calibrated_out_of_fold"]["median_abs_error"] < f["catalog"]["median_abs_error"]


def test_the_readme_calibration_example_runs(tmp_path):
    text = (REPO / "README.md").read_text()
    section = text.split("## Calibrate to your own runs", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^\$ (parasim .+)$", section, re.MULTILINE)
    assert any(c.startswith("parasim calibrate") for c in commands)
    for cmd in commands:
        args = [a.replace("my-profile.yaml", str(tmp_path / "my-profile.yaml")) for a in shlex.split(cmd)[1:]]
        r = run_cli(*args)
        assert r.returncode == 0, (cmd, r.stderr[-2000:])


def test_cv_factors_by_kind_step_only_their_kind():
    by_kind = cal.factors_by_kind(["gemm_efficiency", "training:attention_efficiency", "iteration_overhead_s"])
    assert by_kind == {"training": ["gemm_efficiency", "attention_efficiency"],
                       "serving": ["gemm_efficiency", "iteration_overhead_s"]}
    with pytest.raises(InputError):
        cal.factors_by_kind(["inference:gemm_efficiency"])


def test_profile_reaches_the_planners_forked_workers(tmp_path):
    base = ["plan", "train", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--gpus", "8", "--seq-len", "2048",
            "--global-batch-tokens", "65536", "--workers", "2", "--top", "1"]
    plain = _json(*base)["best"]["metrics"]["tokens_per_s"]
    slow = _json(*base, "--profile", _profile(tmp_path, {"gemm_efficiency": 0.5}))["best"]["metrics"]["tokens_per_s"]
    assert slow < plain
    r = run_cli(*base, "--executor", "ray", "--profile", _profile(tmp_path, {"gemm_efficiency": 0.5}))
    assert r.returncode == 2 and r.stderr.startswith("parasim: error: profile: "), r.stderr


def test_a_file_of_three_runs_or_fewer_has_no_rest_to_predict(observed):
    assert crossval.few_runs(3) == [] and crossval.few_runs(4) == [0, 1, 3]
    held, few, ids = crossval._plan(observed[:3], 5, ["gemm_efficiency"])
    assert held == [] and few == [] and ids == []


def _profile_with_fit(tmp_path: Path, fit: dict) -> str:
    path = tmp_path / "fit.yaml"
    path.write_text(yaml.safe_dump({"parasim_profile": 1, "entries": [
        {"software": "*", "accelerator": "h100-sxm", "factors": {"gemm_efficiency": 0.9}, "fit": fit}]}))
    return str(path)


def test_a_profiles_own_out_of_fold_error_replaces_the_table_in_expected_error(tmp_path):
    """The profile recorded 3.1 % / 8.0 % on 12 held-out runs: train and serve quote those figures
    (in %), status `profile`; a profile without the record leaves the validated table's figures."""
    oof = {"out_of_fold": {"k": 5, "runs": 12, "p50_abs_error": 0.031, "p90_abs_error": 0.08}}
    train = ["train", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--gpus", "8", "--seq-len", "2048",
             "--global-batch", "32"]
    serve = ["serve", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--requests", "4", "--rate", "1",
             "--prompt-tokens", "32", "--output-tokens", "8"]
    for base in (train, serve):
        got = _json(*base, "--profile", _profile_with_fit(tmp_path, oof))["expected_error"]
        assert (got["status"], got["p50_abs_pct"], got["p90_abs_pct"], got["runs"]) == ("profile", 3.1, 8.0, 12)
        plain = _json(*base)["expected_error"]
        unrecorded = _json(*base, "--profile", _profile_with_fit(tmp_path, {"runs": 2}))["expected_error"]
        assert unrecorded["status"] != "profile" and unrecorded["p50_abs_pct"] == plain["p50_abs_pct"]


def test_a_profile_with_no_entry_for_the_gpu_says_so(tmp_path):
    """A --profile that changes nothing is said on stderr and in the JSON, never silent."""
    path = tmp_path / "a100.yaml"
    path.write_text(yaml.safe_dump({"parasim_profile": 1, "entries": [
        {"software": "*", "accelerator": "a100-sxm-80gb", "factors": {"gemm_efficiency": 0.5}}]}))
    r = run_cli("train", "--model", "llama-3-8b", "--gpu", "h100-sxm", "--gpus", "8", "--seq-len", "2048",
                "--global-batch", "32", "--profile", str(path), "--json")
    assert r.returncode == 0, r.stderr
    cal = json.loads(r.stdout)["calibration"]
    assert cal["factors"] == {} and "h100-sxm" in cal["note"]
    assert "no entry of profile a100.yaml applies" in r.stderr


def test_the_per_gpu_three_run_check_fits_each_gpu_on_its_own_three_runs(observed, monkeypatch):
    """As a user calibrates: each GPU's fit sees 3 runs of that GPU only (its first, middle and
    last), and predicts exactly the rest of that GPU's runs; a GPU of 3 runs or fewer has no check."""
    from parasim.specs.catalog import accelerators

    a100 = accelerators()["a100-sxm-80gb"]
    moved = [replace(o, case=replace(o.case, cluster=replace(o.case.cluster, accelerator=a100))) for o in observed[:8]]
    mixed = list(observed[8:12]) + moved + list(observed[12:])  # 8 runs on A100 between 8 on H100
    seen: list[list[str]] = []
    real = crossval._fits

    def spy(train, names, scope):
        seen.append([o.case.cluster.accelerator.id for o in train])
        return real(train, names, scope)

    monkeypatch.setattr(crossval, "_fits", spy)
    pairs, runs = crossval._plan_per_gpu(mixed, ["gemm_efficiency"])
    assert sorted(seen) == [["a100-sxm-80gb"] * 3, ["h100-sxm"] * 3]
    assert runs["llm-foundry / a100-sxm-80gb"] == [mixed[i].case.id for i in (4, 7, 11)]
    assert runs["llm-foundry / h100-sxm"] == [mixed[i].case.id for i in (0, 3, 15)]
    assert len(pairs) == len(mixed) - 6
    assert all(f is not None for _, f in pairs)
    few_a100 = [o for o in mixed if o.case.cluster.accelerator.id == "a100-sxm-80gb"][:3]
    assert crossval._plan_per_gpu(few_a100, ["gemm_efficiency"]) == ([], {})


def test_three_runs_keep_the_factor_that_explains_them_not_the_most_influential():
    """3 runs determine one factor: of the factors they determine, the fit keeps the one whose
    pattern over the runs matches what they measured. Runs made slower in attention only (truth
    0.7) are moved most by gemm_efficiency (long GEMMs dominate every MPT step), yet the fit must
    name attention_efficiency, and find it near 0.7 (the prior pulls a little toward 1)."""
    cases = _synthetic({"attention_efficiency": 0.7})
    obs = cal.observe([cases[i] for i in (0, 7, 15)], cal.DEFAULT_FACTORS["training"])
    names = list(cal.DEFAULT_FACTORS["training"])
    S, _, w = cal._rows(obs, names)
    rms = ((S ** 2).T @ w) ** 0.5
    assert names[int(rms.argmax())] == "gemm_efficiency"  # the old rule's choice
    fit = cal.linear_fit(obs, names, ("llm-foundry", "h100-sxm"))[0]
    assert list(fit.factors) == ["attention_efficiency"]
    assert 0.65 < fit.factors["attention_efficiency"] < 0.8


def test_rerun_runs_a_case_with_the_same_factors_once(observed, monkeypatch):
    ran: list[str] = []
    real = crossval.run_cases

    def spy(items, workers=1, pool=None):
        ran.extend(c.id for c, _ in items)
        return real(items, workers, pool)

    monkeypatch.setattr(crossval, "run_cases", spy)
    f, g = Factors({"gemm_efficiency": 0.9}), Factors({"gemm_efficiency": 0.8})
    a, b = observed[0], observed[1]
    reps = crossval.rerun([(a, f), (b, None), (a, f), (a, g)], 1, None)
    assert ran == [a.case.id, a.case.id]  # (a, f) once, (a, g) once, b not at all
    assert reps[0] is reps[2] and reps[1] is b.base and reps[3].predicted != reps[0].predicted
