"""Figures are computed once, saved as netCDF and redrawn from the files alone."""
import numpy as np
import pytest
import xarray as xr
from matplotlib.figure import Figure
from scipy.stats import spearmanr

import repscope.analyses.measures
from repscope.analyses import AnalysisConfig, AnalysisError, analyse_maml, analyse_supervised, redraw
from repscope.analyses import figure_data as fd
from repscope.analyses.mds import mds_embedding
from repscope.analyses.pipeline import draw
from repscope.analyses.plots import plot_meta_change
from repscope.analyses.saving import load_netcdf
from test_analyses_data import make_record, make_supervised


@pytest.fixture(scope="module")
def record(data_root):
    return make_record(data_root, checkpoints=(0, 500, 1000, 1500), n_tasks=4, inner_steps=(0, 1, 5, 10))


@pytest.fixture(scope="module")
def saved(record, data_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    cfg = AnalysisConfig()
    maml = analyse_maml(record, cfg, out / "quick", "runs/quick")
    sup = analyse_supervised(make_supervised(data_root), cfg, out / "mnist", "runs/mnist")
    return out, maml, sup


def test_figure_values_against_direct_computation(record, saved):
    out, maml, _ = saved
    inner = maml["inner"]
    assert inner["rsa"].dims == ("layer", "checkpoint", "task", "inner_step")
    np.testing.assert_allclose(inner["rsa"].sel(inner_step=0), 0, atol=1e-12)
    np.testing.assert_allclose(inner["cka_linear"].sel(inner_step=0), 1, atol=1e-12)
    # one entry by hand: correlation RDMs of step 0 and step 10, 1 - Spearman
    x0 = record["head"].sel(checkpoint=1000, task=2, inner_step=0).values
    x1 = record["head"].sel(checkpoint=1000, task=2, inner_step=10).values
    r0, r1 = (1 - np.corrcoef(v)[np.triu_indices(len(v), 1)] for v in (x0, x1))
    assert float(inner["rsa"].sel(layer="head", checkpoint=1000, task=2, inner_step=10)) == pytest.approx(
        1 - spearmanr(r0, r1).statistic, abs=1e-10)
    # 1b: consecutive checkpoints (F2 picks its own pairs in the findings, nothing saved here)
    assert maml["meta"]["previous"].values.tolist() == [0, 500, 1000]
    pairs = fd.meta_change(record, ["rsa"], pairs=[(0, 1000), (500, 1500)])
    assert pairs["checkpoint"].values.tolist() == [1000, 1500] and pairs["previous"].values.tolist() == [0, 500]
    assert not (out / "quick" / "f2_meta_change.nc").exists()


def test_saved_results_reload_identically_and_redraw_without_recomputing(saved, monkeypatch):
    out, maml, _ = saved
    back = load_netcdf(out / "quick" / "fig1a.nc")
    xr.testing.assert_allclose(back["rsa"], maml["inner"]["rsa"])
    assert back.attrs["figure"] == "1a" and "analysis_config" in back.attrs

    def forbidden(*a, **k):
        raise AssertionError("redraw recomputed similarities")

    monkeypatch.setattr(repscope.analyses.measures, "compare", forbidden)
    monkeypatch.setattr(repscope.analyses.measures, "compare_all", forbidden)
    monkeypatch.setattr(fd, "compare", forbidden)
    monkeypatch.setattr(fd, "compare_all", forbidden)
    for f in (out / "quick").glob("*.png"):
        f.unlink()
    files = redraw(out)
    names = sorted(p.name for p in files)
    for fig in ("fig1a", "fig1b", "fig3", "fig4", "fig5"):
        assert f"{fig}.png" in names and f"{fig}.pdf" in names
        assert (out / "quick" / f"{fig}.png").stat().st_size > 1000
    assert "fig2.png" in names
    svg = redraw(out, formats=("svg",))
    assert svg and {p.suffix for p in svg} == {".svg"}
    with pytest.raises(AnalysisError, match="formats"):
        redraw(out, formats=("bogus",))


def test_every_saved_figure_draws_a_figure(saved):
    out, _, _ = saved
    for nc in sorted(out.rglob("fig*.nc")):
        fig = draw(load_netcdf(nc))
        assert isinstance(fig, Figure) and fig.axes


def test_rdm_of_rdms_and_mds_modes(record, saved):
    out, _, _ = saved
    fig3 = load_netcdf(out / "quick" / "fig3.nc")
    rdm = fig3["rdm_of_rdms"]
    n = 3 * 4 * 4  # the later two thirds of the checkpoints x tasks x inner steps
    assert rdm.shape == (2, n, n)  # all layers but the head
    np.testing.assert_allclose(rdm, rdm.transpose("layer", "condition_b", "condition"), atol=1e-12)
    # step 0 is shared by all tasks at a checkpoint: zero dissimilarity between them
    sel = rdm.isel(layer=0)
    z = (sel["inner_step"].values == 0)
    same_ck = sel["checkpoint"].values[:, None] == sel["checkpoint"].values[None, :]
    np.testing.assert_allclose(sel.values[np.ix_(z, z)][same_ck[np.ix_(z, z)]], 0, atol=1e-12)
    # paper mode = MDS on min-max scaled rows; precomputed mode respects the distances
    emb = mds_embedding(rdm, "precomputed")
    d_emb = np.linalg.norm(emb.values[0][:, None] - emb.values[0][None], axis=2)
    iu = np.triu_indices(n, 1)
    assert spearmanr(d_emb[iu], rdm.values[0][iu]).statistic > 0.8
    load = load_netcdf(out / "quick" / "fig5.nc")
    assert load["rdm_of_rdms"]["layer"].values.tolist() == ["head"]
    assert load.attrs["mds_mode"] == "paper"


def test_accuracy_and_meta_change_plots(saved):
    out, maml, _ = saved
    acc = load_netcdf(out / "quick" / "fig4.nc")
    assert acc["accuracy"].dims == ("checkpoint", "task")
    assert acc.attrs["inner_step"] == 5 and acc["task"].values.tolist() == [0, 1, 2, 3]  # the paper's text
    assert (acc["eval_lower"] < acc["eval_mean"]).all() and (acc["eval_mean"] < acc["eval_upper"]).all()
    fig = plot_meta_change(maml["meta"], yscale="log")
    assert fig.axes[0].get_yscale() == "log"


def test_figures_follow_the_papers_settings_unless_told_otherwise(saved, record, tmp_path):
    out, maml, sup = saved
    # figure 2 as the paper's mnist.py: Euclidean RDMs and RBF CKA; figures 1a/1b: correlation RDMs
    assert sorted(sup["supervised"].data_vars) == ["cka_rbf", "rsa"]
    assert '"rdm_method": "euclidean"' in sup["supervised"]["rsa"].attrs["options"]
    assert '"rdm_method": "correlation"' in maml["inner"]["rsa"].attrs["options"]
    # figure 1a: +-1 std over tasks as published, the title says so; SEM on request
    assert "+- 1 std over tasks" in draw(load_netcdf(out / "quick" / "fig1a.nc"))._suptitle.get_text()
    cfg = AnalysisConfig(measures=("rsa",), formats=("png",), band="sem",
                         figure_measures={"1a": ("cka_linear",)}, figure_rdm_method={"2": "cosine"})
    res = analyse_maml(record.isel(checkpoint=[0, 1]), cfg, tmp_path, "runs/x")
    assert list(res["inner"].data_vars) == ["cka_linear"] and list(res["meta"].data_vars) == ["rsa"]
    assert "1.96 SEM" in draw(load_netcdf(tmp_path / "fig1a.nc"))._suptitle.get_text()
    assert cfg.options("rsa", "2") == {"rdm_method": "cosine"}
    for bad, msg in (({"band": "ci"}, "band .--band. = 'ci'"), ({"figure_rdm_method": {"2": "l1"}}, "'2=l1'"),
                     ({"figure_measures": {"7": ("rsa",)}}, r"\['7'\] is not allowed"),
                     ({"figure_measures": {"2": ("cka",)}}, "of figure 2: Unknown measure 'cka'"),
                     ({"ci_unit": "alphabet"}, "ci_unit .--ci-unit. = 'alphabet'"),
                     ({"fig1b_gap": 0}, "fig1b_gap")):
        with pytest.raises(AnalysisError, match=msg):
            AnalysisConfig(**bad)


def test_supervised_figure_compares_every_step_with_initialisation(saved):
    _, _, sup = saved
    res = sup["supervised"]
    assert res["rsa"].dims == ("layer", "checkpoint")
    assert float(res["rsa"].isel(checkpoint=0).max()) == pytest.approx(0, abs=1e-12)
    # the synthetic control drifts more in late layers (the F1 pattern)
    last = res["rsa"].isel(checkpoint=-1)
    assert float(last.sel(layer="head")) > float(last.sel(layer="encoder.conv1"))


def test_a_miniimagenet_record_gives_figure_6(data_root, tmp_path):
    import json

    ds = make_record(data_root, checkpoints=(0, 1000), n_tasks=2, inner_steps=(0, 1), n_stimuli=10, metrics=False)
    ds.attrs["config"] = json.dumps({"kind": "maml", "run": {"dataset": "miniimagenet", "n_way": 5}})
    analyse_maml(ds, AnalysisConfig(measures=("rsa",), formats=("png",)), tmp_path, "runs/mini")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "fig6.nc" in names and "fig6.png" in names and "fig3.nc" not in names
    assert "fig4.nc" not in names  # no accuracy variables in this record
    assert load_netcdf(tmp_path / "fig6.nc").attrs["figure"] == "6"


def test_the_mds_of_figures_3_and_5_uses_the_configured_seed(data_root, tmp_path):
    ds = make_record(data_root, checkpoints=(0, 1000), n_tasks=2, inner_steps=(0, 1), n_stimuli=10, metrics=False)
    analyse_maml(ds, AnalysisConfig(measures=("rsa",), formats=("png",), seed=7), tmp_path, "runs/seed")
    for fig in ("fig3", "fig5"):
        saved = load_netcdf(tmp_path / f"{fig}.nc")
        assert saved["mds"].attrs["seed"] == 7
        xr.testing.assert_allclose(saved["mds"], mds_embedding(saved["rdm_of_rdms"], "paper", seed=7))


def test_figure_1b_at_a_fixed_gap_for_unevenly_spaced_checkpoints(record, tmp_path):
    cfg = AnalysisConfig(measures=("rsa",), formats=("png",), fig1b_gap=1000)
    res = analyse_maml(record, cfg, tmp_path, "runs/gap")
    assert res["meta"]["previous"].values.tolist() == [0, 500]
    assert res["meta"]["checkpoint"].values.tolist() == [1000, 1500]
    with pytest.raises(AnalysisError, match="fig1b_gap 700"):
        analyse_maml(record, AnalysisConfig(measures=("rsa",), formats=("png",), fig1b_gap=700), tmp_path, "x")
