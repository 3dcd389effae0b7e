"""Issue 24's minor findings, each pinned: wording (what is picked, which link parameter is wrong, what an emptied
field was), a picture uploaded as a checkpoint, the local certificate's "no gain", smoothing's cap explained, the
paper's identical rows "as printed", readable heatmap numbers, reference lines under the value labels."""

from __future__ import annotations

import json
from pathlib import Path

import app_helpers as H
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from app_lib import (
    compare_figures,
    compare_view,
    links,
    registry,
    state,
    train_view,
)
from app_lib import curvature_figures as cfig
from crc_core.data import load_dataset
from crc_core.errors import CheckpointError

TIMEOUT = 120
PAGE = "pages/2_Certify.py"


@pytest.fixture
def app_env(monkeypatch, tmp_path) -> Path:
    return H.use_small_models(monkeypatch, tmp_path)


def test_a_bad_switch_in_a_link_names_the_parameter():
    with pytest.raises(links.LinkError, match=r"the local-certificate switch \(local\) '7' is not 0 \(off\) or 1"):
        next(f for f in links.CERTIFY if f.name == "local").parse("7")


def test_a_field_put_back_says_what_it_was_and_what_it_is_now():
    (msg,) = [p for p in train_view.check_fields({"tr_epochs": 0}) if p.startswith("Epochs")]
    assert "0 is not allowed, so it is back at its default, 3." in msg and "was put back" not in msg
    (msg,) = [p for p in train_view.check_fields({"tr_epochs": ""}) if p.startswith("Epochs")]
    assert "it was empty, so it is back at its default, 3." in msg


def test_a_picture_uploaded_as_a_checkpoint_points_to_certify():
    png = H.png_bytes(np.zeros((28, 28), np.uint8))
    with pytest.raises(CheckpointError, match=r"is a picture, not a model checkpoint.*Certify page"):
        registry.open_upload(png, "photo.png")


def test_smoothing_cap_and_identical_paper_rows_are_explained():
    assert f"{compare_view.SMOOTHING_CAP:.3f}" == "0.800"
    assert "can never exceed 0.800" in compare_view.SMOOTHING_NOTE
    t = compare_view.PAPER_TABLE_5B
    same = t[(t["network"] == "3×[1024] sigmoid") & (t["training"] != "standard")]
    assert len(same) == 2 and same["CRC"].nunique() == 1 and all("as printed" in n for n in same["note"])


def test_heatmap_numbers_are_readable_and_lines_stay_under_labels():
    fig = cfig.pair_heatmap(np.arange(100.0).reshape(10, 10) + 1, [str(i) for i in range(10)], title="t",
                             colorbar_title="K")
    assert fig.data[0].textfont.size >= 12
    bars = compare_figures.methods_vs_attack({"crc": 1.0, "crown": 0.5}, compare_view.LABELS, attack_upper=1.2,
                                             rho=0.5)
    assert bars.layout.shapes and all(s.layer == "below" for s in bars.layout.shapes)
    spec = cfig.spectrum_histogram(np.linspace(-1, 1, 50), m=-1.0, M=1.0, K=1.5)
    minus_k = [a for a in spec.layout.annotations if a.text == "−K"]
    assert minus_k and all((a.yshift or 0) >= 12 for a in minus_k)  # clear of the axis's tick labels


def test_the_picked_image_is_named_in_plain_words(app_env):
    at = AppTest.from_file(str(H.REPO / PAGE), default_timeout=TIMEOUT)
    at.run()
    img = load_dataset("embedded", "test", limit=5).images[4].reshape(28, 28).numpy()
    at.file_uploader(key="crc_upload_image").set_value(("shoe.png", H.png_bytes(img), "image/png"))
    at.run()
    H.assert_clean(at)
    assert any(s.value.endswith("The certificate of the uploaded image shoe.png") for s in at.subheader)
    assert any("(now: the uploaded image shoe.png)" in e.label for e in at.expander)  # not "test image #0"
    import torch


    at = AppTest.from_file(str(H.REPO / PAGE), default_timeout=TIMEOUT)  # a drawing, in a session with no upload
    at.session_state[state.UPLOAD_IMAGE_KEY] = (state.DRAWING_NAME, torch.from_numpy(img.reshape(-1) / 255.0).float())
    at.session_state[state.USE_UPLOAD_KEY] = True
    at.run()
    H.assert_clean(at)
    assert any(s.value.endswith("The certificate of your drawing") for s in at.subheader)


def test_local_certificate_never_shows_a_signed_zero(app_env):
    at = AppTest.from_file(str(H.REPO / PAGE), default_timeout=TIMEOUT)
    at.query_params.update({"img": "1", "local": "1"})
    at.run()
    H.assert_clean(at)
    local = next(m for m in at.metric if m.label == "local radius")
    gain = float(local.value) - float(next(m for m in at.metric if m.label == "global radius").value)
    delta = json.loads(json.dumps(local.proto.delta))
    assert "+-" not in delta and "0.0000" not in delta
    if gain < 5e-5:
        assert delta == "no gain" and any("No gain here" in c.value for c in at.caption)


def test_metric_labels_fit_their_columns(app_env):
    """Truncated labels (issue 24): the labels of the Train outcome's five columns and the Hessian page's five
    are short enough for a 1280-pixel screen (≤ 22 characters; the details are in their help)."""
    from app_lib import train_sections

    src = Path(train_sections.__file__).read_text() + (H.REPO / "pages/4_Hessian.py").read_text()
    import re

    labels = re.findall(r"\.metric\(f?\"([^\"]+)\"", src)
    assert labels and all(len(lab) <= 22 for lab in labels), [lab for lab in labels if len(lab) > 22]


def test_gallery_orders():
    import pandas as pd

    from app_lib.certify_view import GALLERY_ORDERS, filter_gallery

    pool = pd.DataFrame({"index": range(5), "label": [0, 1, 2, 3, 4], "correct": [False, True, True, False, True],
                         "radius": [0.0, 0.2, 0.9, 0.0, 0.5]})
    names = [str(i) for i in range(5)]
    order = {o: filter_gallery(pool, names, "any", "any", "any", 0.5, o)["index"].tolist() for o in GALLERY_ORDERS}
    assert order["as in the test set"] == [0, 1, 2, 3, 4]
    assert order["correct first"] == [2, 4, 1, 0, 3]
    assert order["hardest first"] == [0, 3, 1, 4, 2]


def test_compare_csv_names_classes_and_a_larger_n_keeps_done_chunks():
    from types import SimpleNamespace

    import pandas as pd

    frame = pd.DataFrame({"index": [0, 1], "label": [2, 0], "pred": [2, 1], "correct": [True, False],
                          "radius_crc": [0.5, 0.0], "time_crc": [0.1, 0.1]})
    out = compare_view.csv_frame(frame, ["T-shirt", "Trouser", "Pullover"])
    assert out["label_name"].tolist() == ["Pullover", "T-shirt"] and out["pred_name"].tolist() == ["Pullover",
                                                                                                   "Trouser"]
    assert "time_crc_s_per_image_mean_of_chunk" in out and "time_crc" not in out
    alone = compare_view.csv_frame(frame, ["T-shirt", "Trouser", "Pullover"], each_image=True)
    assert "time_crc_s_this_image" in alone and not any(c.endswith("mean_of_chunk") for c in alone)
    chunk = compare_view.CHUNK
    done = [pd.DataFrame({"index": range(s, s + chunk)}) for s in range(0, 4 * chunk, chunk)]
    old = SimpleNamespace(methods=("crc", "crown"), frames=done, each_image=False)
    assert len(compare_view.reusable_frames(old, ("crc", "crown"), 100)) == 4  # N = 32 -> 100: 32 kept
    assert len(compare_view.reusable_frames(old, ("crc", "crown"), 2 * chunk)) == 2
    assert compare_view.reusable_frames(old, ("crc",), 100) == []  # other methods: nothing to keep
    assert compare_view.reusable_frames(old, ("crc", "crown"), 100, each_image=True) == []  # other timing
    fig = compare_figures.certified_accuracy_curves([0.0, 1.0], {"crc": [1.0, 0.5]}, compare_view.LABELS,
                                                    n_images=8, model="crt-2x256")
    assert "crt-2x256" in fig.layout.title.text
