"""Drift between datasets: known shifts are flagged and nothing else, at small and large
sizes; every statistic equals scipy's on the same data; mistakes are named."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from kiln.errors import InvalidInput, NotFound
from kiln.monitoring import drift

SHIFTED = {"mean_shift", "scale_change", "moved_mass", "new_category"}


def pair(n: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference and current with four shifted columns and four stable ones."""
    rng = np.random.default_rng(seed)

    def sample(shifted: bool) -> pd.DataFrame:
        cats = ["a", "b", "c"]
        return pd.DataFrame(
            {
                "mean_shift": rng.normal(1.0 if shifted else 0.0, 1.0, n),
                "scale_change": rng.normal(0.0, 2.5 if shifted else 1.0, n),
                "moved_mass": rng.choice(
                    cats, n, p=[0.2, 0.3, 0.5] if shifted else [0.5, 0.3, 0.2]
                ),
                "new_category": rng.choice(
                    [*cats, "d"] if shifted else cats,
                    n,
                    p=[0.25, 0.25, 0.2, 0.3] if shifted else [0.4, 0.35, 0.25],
                ),
                "stable_float": rng.normal(5.0, 2.0, n),
                "stable_int": rng.integers(0, 50, n),
                "stable_text": rng.choice(cats, n, p=[0.5, 0.3, 0.2]),
                "stable_flag": rng.random(n) < 0.3,
            }
        )

    return sample(False), sample(True)


SIZES = [(500, "ks", "chi2"), (200_000, "wasserstein", "jensenshannon")]


@pytest.mark.parametrize(("n", "numeric", "categorical"), SIZES)
def test_the_defaults_flag_exactly_the_shifted_columns(
    n: int, numeric: str, categorical: str
) -> None:
    ref, cur = pair(n)
    result = drift(reference=ref, current=cur)
    assert set(result.drifted) == SHIFTED
    assert result.share_drifted == 0.5
    methods = {c.column: c.method for c in result.columns}
    assert methods["mean_shift"] == methods["stable_int"] == numeric
    assert methods["moved_mass"] == methods["stable_flag"] == categorical


def test_statistics_equal_scipys() -> None:
    ref, cur = pair(2_000, seed=3)
    everything = {
        **dict.fromkeys(["mean_shift", "scale_change", "stable_float", "stable_int"], "ks"),
        **dict.fromkeys(["moved_mass", "new_category", "stable_text", "stable_flag"], "chi2"),
    }
    result = drift(reference=ref, current=cur, method=everything)
    for column in ("mean_shift", "scale_change", "stable_float", "stable_int"):
        want = stats.ks_2samp(ref[column], cur[column])
        got = result[column]
        assert got.statistic == pytest.approx(want.statistic, rel=1e-12, abs=1e-15)
        assert got.p_value == pytest.approx(want.pvalue, rel=1e-9, abs=1e-300)
        w = drift(reference=ref, current=cur, columns=[column], method="wasserstein")[column]
        expected = stats.wasserstein_distance(ref[column], cur[column]) / np.std(ref[column])
        assert w.statistic == pytest.approx(expected, rel=1e-9)
    for column in ("moved_mass", "new_category", "stable_text", "stable_flag"):
        a = ref[column].astype(str).value_counts()
        b = cur[column].astype(str).value_counts()
        keys = sorted(set(a.index) | set(b.index))
        table = np.array([[a.get(k, 0) for k in keys], [b.get(k, 0) for k in keys]])
        want = stats.chi2_contingency(table)
        got = result[column]
        assert got.statistic == pytest.approx(want.statistic, rel=1e-12)
        assert got.p_value == pytest.approx(want.pvalue, rel=1e-9, abs=1e-300)
        js = drift(reference=ref, current=cur, columns=[column], method="jensenshannon")[column]
        assert js.statistic == pytest.approx(
            jensenshannon(table[0] / table[0].sum(), table[1] / table[1].sum(), base=2), rel=1e-12
        )


def test_psi_follows_its_formula() -> None:
    ref, cur = pair(5_000, seed=4)
    got = drift(reference=ref, current=cur, columns=["mean_shift"], method="psi")["mean_shift"]
    r, c = np.sort(ref.mean_shift.to_numpy()), np.sort(cur.mean_shift.to_numpy())
    edges = np.quantile(r, np.linspace(0, 1, 11)[1:-1])
    rs = np.maximum(np.histogram(r, [-np.inf, *edges, np.inf])[0] / r.size, 1e-4)
    cs = np.maximum(np.histogram(c, [-np.inf, *edges, np.inf])[0] / c.size, 1e-4)
    # searchsorted 'right' puts a value equal to an edge in the bin below, as histogram's
    # half-open bins [a, b) do not: continuous data has no such ties
    assert got.statistic == pytest.approx(float(np.sum((cs - rs) * np.log(cs / rs))), rel=1e-9)
    assert got.drifted and got.p_value is None and got.threshold == 0.2


def test_input_forms_missing_values_and_the_result(tmp_path: Path) -> None:
    ref, cur = pair(300, seed=5)
    cur.loc[:29, "stable_float"] = np.nan
    cur.loc[:59, "stable_text"] = None
    ref.to_parquet(tmp_path / "ref.parquet")
    (tmp_path / "parts").mkdir()
    cur.iloc[:100].to_parquet(tmp_path / "parts" / "0.parquet")
    cur.iloc[100:].to_parquet(tmp_path / "parts" / "1.parquet")
    from_paths = drift(reference=tmp_path / "ref.parquet", current=pa.Table.from_pandas(cur))
    from_frames = drift(reference=ref, current=cur)
    from_folder = drift(reference=str(tmp_path / "ref.parquet"), current=tmp_path / "parts")
    assert from_paths.to_dict() == from_frames.to_dict() == from_folder.to_dict()
    col = from_frames["stable_float"]
    assert col.current_count == 270 and col.missing_current == pytest.approx(0.1)
    assert from_frames["stable_text"].missing_current == pytest.approx(0.2)
    frame = from_frames.to_pandas()
    assert list(frame.columns)[:7] == [
        "column",
        "kind",
        "method",
        "statistic",
        "p_value",
        "threshold",
        "drifted",
    ]
    assert len(frame) == 8
    looser = drift(reference=ref, current=cur, thresholds={"ks": 1e-300, "chi2": 1e-300})
    assert looser.drifted == []


def test_mistakes_are_named(tmp_path: Path) -> None:
    ref, cur = pair(50)
    with pytest.raises(InvalidInput, match="unknown drift method 'kl'"):
        drift(reference=ref, current=cur, method="kl")
    with pytest.raises(
        InvalidInput, match="method 'chi2' does not compare numeric column 'mean_shift'"
    ):
        drift(reference=ref, current=cur, method={"mean_shift": "chi2"})
    with pytest.raises(InvalidInput, match="no column 'nope' in reference"):
        drift(reference=ref, current=cur, columns=["nope"])
    with pytest.raises(
        InvalidInput, match=r"column 'stable_int' is numeric in reference .* categorical"
    ):
        drift(reference=ref, current=cur.astype({"stable_int": str}))
    with pytest.raises(InvalidInput, match="the threshold of 'psi' must be a number"):
        drift(reference=ref, current=cur, thresholds={"psi": "high"})
    with pytest.raises(InvalidInput, match="thresholds names unknown method 'p'"):
        drift(reference=ref, current=cur, thresholds={"p": 0.1})
    with pytest.raises(InvalidInput, match="reference must be a pandas DataFrame"):
        drift(reference=[1, 2], current=cur)
    with pytest.raises(NotFound, match="current: no such file"):
        drift(reference=ref, current=tmp_path / "missing.parquet")
    with pytest.raises(InvalidInput, match="no column in common"):
        drift(reference=ref[["mean_shift"]], current=cur[["stable_int"]])
    with pytest.raises(InvalidInput, match="thresholds must map a method to its threshold"):
        drift(reference=ref, current=cur, thresholds=0.1)  # type: ignore[call-overload]
    with pytest.raises(InvalidInput, match="columns is empty"):
        drift(reference=ref, current=cur, columns=[])
    with pytest.raises(InvalidInput, match="reference has no columns"):
        drift(reference=ref[[]], current=cur)
    with pytest.raises(
        InvalidInput, match="column 'mean_shift' has infinite values in current: the Wasserstein"
    ):
        drift(
            reference=ref,
            current=cur.assign(mean_shift=np.r_[np.inf, cur.mean_shift[1:]]),
            columns=["mean_shift"],
            method="wasserstein",
        )


def test_edge_values_give_figures_not_errors() -> None:
    """Integers past 2**53, a constant reference, near-identical category shares, numpy
    thresholds and infinities under KS: figures, and a result that is valid JSON."""
    big = np.array([2**62, 1] * 50, dtype=np.int64)
    out = drift(
        reference=pd.DataFrame({"i": big, "k": np.ones(100)}),
        current=pd.DataFrame({"i": big[::-1], "k": np.r_[np.ones(99), 2.0]}),
        method="wasserstein",
        thresholds={"wasserstein": np.float32(0.5)},  # type: ignore[dict-item]
    )
    assert out["i"].statistic == 0.0 and not out["i"].drifted
    assert out["k"].statistic == np.inf and out["k"].drifted  # constant reference, current left
    as_json = json.loads(json.dumps(out.to_dict(), allow_nan=False))
    assert as_json["columns"][1]["statistic"] is None and as_json["drifted"] == ["k"]
    # shares equal but for one count in millions: scipy's square root of a rounding error
    # below zero is NaN (with a RuntimeWarning); it is no distance
    flags = np.zeros(102_248 + 7_281_249, dtype=bool)
    flags[:102_248] = True
    with np.errstate(invalid="ignore"):
        assert np.isnan(jensenshannon([102_248, 7_281_249], [102_248, 7_281_250], base=2))
    js = drift(
        reference=pa.table({"flag": flags}),
        current=pa.table({"flag": np.r_[flags, False]}),
        method="jensenshannon",
    )["flag"]
    assert js.statistic == 0.0 and not js.drifted
    ref, cur = pair(300, seed=7)
    inf = cur.assign(mean_shift=np.r_[np.inf, -np.inf, cur.mean_shift[2:]])
    got = drift(reference=ref, current=inf, columns=["mean_shift"])["mean_shift"]
    want_ks = stats.ks_2samp(ref.mean_shift, inf.mean_shift)
    assert got.statistic == pytest.approx(want_ks.statistic, rel=1e-12)
    assert got.p_value == pytest.approx(want_ks.pvalue, rel=1e-9, abs=1e-300)


def test_a_reference_profile_stands_for_the_reference_rows() -> None:
    """A model version's reference profile is compared with new data without reading the
    training rows again: the same columns flagged, statistics close to those on the rows
    (the histogram's bins are the approximation: finer bins, closer figures)."""
    from kiln.validation import profile

    ref, cur = pair(200_000, seed=6)
    reference = profile(ref)  # 100 bins per number
    on_rows = drift(reference=ref, current=cur)
    on_profile = drift(reference=reference, current=cur)
    assert set(on_profile.drifted) == set(on_rows.drifted) == SHIFTED
    for column in ("mean_shift", "scale_change", "stable_float", "stable_int"):
        got, want = on_profile[column], on_rows[column]
        assert got.method == want.method == "wasserstein"
        assert got.statistic == pytest.approx(want.statistic, abs=0.01)
        assert got.reference_count == want.reference_count == 200_000
    for column in ("moved_mass", "new_category", "stable_text", "stable_flag"):
        # every category is listed: the same table, the same figure
        assert on_profile[column].statistic == pytest.approx(on_rows[column].statistic)
    ks_rows = drift(reference=ref, current=cur, method="ks", columns=["mean_shift"])
    ks_profile = drift(reference=reference, current=cur, method="ks", columns=["mean_shift"])
    assert ks_profile["mean_shift"].statistic == pytest.approx(
        ks_rows["mean_shift"].statistic, abs=0.01
    )
    numbers = ["mean_shift", "scale_change", "stable_float", "stable_int"]
    psi = drift(reference=reference, current=cur, method="psi", columns=numbers)
    assert set(psi.drifted) >= {"mean_shift", "scale_change"}
    assert not {"stable_float", "stable_int"} & set(psi.drifted)
    # a profile that lists only some values: the rest are one "other" count on both sides
    few = profile(ref, top_k=2)
    assert drift(reference=few, current=cur, columns=["new_category"]).drifted == ["new_category"]


def test_a_column_with_no_values_on_a_side_is_not_compared_and_stops_nothing() -> None:
    ref, cur = pair(500)
    result = drift(reference=ref, current=cur.assign(stable_float=np.nan))
    empty = result["stable_float"]
    assert not empty.compared and empty.method == "none" and not empty.drifted
    assert math.isnan(empty.statistic) and empty.current_count == 0
    assert empty.missing_current == 1.0 and empty.reference_count == 500
    others = [c for c in result.columns if c.column != "stable_float"]
    assert all(c.compared for c in others)
    assert result.share_drifted == len(result.drifted) / len(others)
    assert (
        result.to_dict()["columns"][[c.column for c in result.columns].index("stable_float")][
            "statistic"
        ]
        is None
    )
