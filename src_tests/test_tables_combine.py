"""f = [f_trad, f_SSL]: combining feature tables, writing them, and the combine/evaluate commands."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from napari_ssl_radiomics.cli import main
from napari_ssl_radiomics.core.tables import combine, read_table, write_table


def _tables(n=30, seed=0):
    rng = np.random.default_rng(seed)
    ids = [f"c{i:02d}" for i in range(n)]
    y = np.array(["H"] * (n - n // 3) + ["L"] * (n // 3))
    trad = pd.DataFrame(
        {
            "ID": ids,
            "Label": y,
            "Group": [f"g{i // 2}" for i in range(n)],
            "original_firstorder_Mean": rng.normal(size=n) + 3 * (y == "L"),
            "original_shape_Volume": rng.normal(size=n),
        }
    )
    ssl = pd.DataFrame({"ID": ids[::-1], **{f"ssl_{j:03d}": rng.normal(size=n) for j in range(3)}})
    return trad, ssl


def test_combine_joins_on_id_with_label_and_group_first():
    trad, ssl = _tables()
    both = combine([trad, ssl])
    assert list(both.columns) == [
        "ID",
        "Label",
        "Group",
        "original_firstorder_Mean",
        "original_shape_Volume",
        "ssl_000",
        "ssl_001",
        "ssl_002",
    ]
    assert list(both["ID"]) == list(trad["ID"])
    row = both.set_index("ID").loc["c05"]
    assert row["ssl_001"] == ssl.set_index("ID").loc["c05", "ssl_001"]
    # Label from whichever table holds it
    assert list(combine([ssl, trad])["Label"]) == list(trad.set_index("ID").loc[ssl["ID"], "Label"])


def test_combine_refuses_clashes_and_mismatches():
    trad, ssl = _tables()
    with pytest.raises(ValueError, match="both hold column"):
        combine({"a": trad, "b": trad.drop(columns=["Label", "Group"])})
    with pytest.raises(ValueError, match="Label differs"):
        combine({"a": trad, "b": ssl.assign(Label="H")})
    with pytest.raises(ValueError, match="lacks 1 of 30 IDs"):
        combine({"trad": trad, "ssl": ssl.iloc[1:]})


def test_write_and_read_round_trip_with_sidecar(tmp_path):
    trad, ssl = _tables()
    path, side = write_table(combine([trad, ssl]), tmp_path / "features.csv", None, checkpoint_sha256="abc")
    back = read_table(path)
    pd.testing.assert_frame_equal(back, combine([trad, ssl]), check_dtype=False)
    info = json.loads(side.read_text(encoding="utf-8"))
    assert side.name == "features.json" and info["checkpoint_sha256"] == "abc" and "versions" in info


def test_cli_combine_and_evaluate(tmp_path, capsys):
    trad, ssl = _tables(n=40)
    trad.to_csv(tmp_path / "trad.csv", index=False)
    ssl.to_csv(tmp_path / "ssl.csv", index=False)
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"ID": trad["ID"], "Image": "x.nii", "Mask": "y.nii", "Label": trad["Label"], "Group": ""}).to_csv(
        manifest, index=False
    )
    (tmp_path / "checkpoint.pt").write_bytes(b"weights")
    assert (
        main(
            [
                "combine",
                str(tmp_path / "trad.csv"),
                str(tmp_path / "ssl.csv"),
                "--out",
                str(tmp_path / "f.csv"),
                "--manifest",
                str(manifest),
                "--checkpoint",
                str(tmp_path / "checkpoint.pt"),
            ]
        )
        == 0
    )
    f = pd.read_csv(tmp_path / "f.csv", keep_default_na=False)
    assert f.shape == (40, 8) and (f["Group"] == "").all()
    side = json.loads((tmp_path / "f.json").read_text(encoding="utf-8"))
    assert side["sources"][0].endswith("trad.csv")
    assert side["checkpoint_sha256"] == hashlib.sha256(b"weights").hexdigest()

    out = tmp_path / "ev"
    code = main(
        [
            "evaluate",
            f"trad={tmp_path / 'trad.csv'}",
            f"ssl={tmp_path / 'ssl.csv'}",
            f"{tmp_path / 'trad.csv'}+{tmp_path / 'ssl.csv'}",
            "--out",
            str(out),
            "--label-fraction",
            "1.0",
            "--group",
            "",
        ]
    )
    assert code == 0
    results = pd.read_csv(out / "results.csv")
    assert list(dict.fromkeys(results["feature_set"])) == ["trad", "ssl", "trad+ssl"]
    assert set(results["label_fraction"]) == {1.0}
    assert "| trad+ssl |" in (out / "summary.md").read_text(encoding="utf-8")
    assert (
        json.loads((out / "evaluate.json").read_text(encoding="utf-8"))["feature_sets"]["trad+ssl"]["n_features"] == 5
    )

    assert main(["evaluate", str(tmp_path / "ssl.csv"), "--out", str(out)]) == 2
    assert "no 'Label' column" in capsys.readouterr().err


def test_table2_sets_are_trad_each_ssl_method_then_trad_plus_each():
    from napari_ssl_radiomics.core.tables import table2_sets

    labels = pd.DataFrame({"ID": ["a", "b"], "Label": ["0", "1"]})
    trad = pd.DataFrame({"ID": ["b", "a"], "original_x": [2.0, 1.0]})
    ssl = {
        "3DSiam": pd.DataFrame({"ID": ["a", "b"], "ssl_000": [0.1, 0.2]}),
        "3DSiam+SE": pd.DataFrame({"ID": ["a", "b"], "ssl_000": [0.3, 0.4]}),
    }
    sets = table2_sets(labels, trad, ssl)
    assert list(sets) == ["Trad.", "3DSiam", "3DSiam+SE", "Trad.+3DSiam", "Trad.+3DSiam+SE"]
    both = sets["Trad.+3DSiam+SE"]
    assert list(both.columns) == ["ID", "Label", "original_x", "ssl_000"]
    assert both.set_index("ID").loc["a", ["original_x", "ssl_000"]].tolist() == [1.0, 0.3]
    assert list(table2_sets(labels, None, ssl)) == ["3DSiam", "3DSiam+SE"]


def test_feature_sets_carry_id_and_the_non_empty_label_and_group_of_the_common_cases():
    from napari_ssl_radiomics.core.tables import feature_sets, label_columns

    cases = pd.DataFrame(
        {"ID": ["a", "b", "c"], "Label": ["0", "1", "1"], "Group": ["", " ", ""], "status": ["ok"] * 3}
    )
    assert list(label_columns(cases).columns) == ["ID", "Label"]  # a blank Group is left out
    assert list(label_columns(cases.assign(Group=["g1", "", "g2"])).columns) == ["ID", "Label", "Group"]
    assert list(label_columns(cases.drop(columns=["Label", "Group"])).columns) == ["ID"]

    trad = pd.DataFrame({"ID": ["b", "a", "c"], "original_x": [2.0, 1.0, 3.0]})
    ssl = {"3DSiam": pd.DataFrame({"ID": ["a", "b"], "ssl_000": [0.1, 0.2]})}  # c failed to encode
    sets, dropped = feature_sets(cases, trad, ssl)
    assert list(sets) == ["Trad.", "3DSiam", "Trad.+3DSiam"]
    assert dropped == ["c"]
    assert all(set(t["ID"]) == {"a", "b"} for t in sets.values())
    assert list(sets["Trad.+3DSiam"].columns) == ["ID", "Label", "original_x", "ssl_000"]
    only_trad, none_dropped = feature_sets(cases, trad, {})
    assert list(only_trad) == ["Trad."] and none_dropped == []
