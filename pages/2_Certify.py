"""Certify: pick an image -> certified radius, closest boundary point, margin along the path, attack at ρ."""

import dataclasses
import hashlib

import pandas as pd
import streamlit as st
import torch

from app_lib import analysis, ui
from crc_core import plots
from crc_core.attack import curvature_attack
from crc_core.certify import certify
from crc_core.hessian import margin_and_grad

POOL = 120  # test images certified for the gallery (once per model)
SHOW = 24  # thumbnails shown

ctx = ui.page_setup("Certify", ":material/verified_user:")
st.title("Certify: how far is this image from changing class?")
st.caption("Pick an image. The certificate is a radius r with a proof that no change of the image smaller than r "
           "(ℓ2 norm) can change the prediction; the attack looks for a change that does.")
ui.explain(
    """
* **Certified radius (all classes)**: the smallest, over every other class t, of the radius certified against t.
  Nothing closer than this can change the prediction. This is the certificate of the classifier.
* **Runner-up radius**: the paper certifies only against the class with the second-highest score. It is never
  smaller than the all-class radius, and it is not a guarantee for the classifier.
* **Exact**: the optimizer reached a point x_b *on* the decision boundary at exactly the certified distance, so the
  radius is the true distance to the boundary (primal = dual, paper Theorem 1).
* **Interval**: the true distance to the boundary lies between the certified radius and the distance of the closest
  point found where another class wins.
* **ρ**: an attack budget. *Certified at ρ* means radius ≥ ρ. Algorithm 2 (the curvature attack) looks for the
  worst image within distance ρ; *provably worst* means its dual certifies that nothing inside the ball does better.
"""
)

with ui.guard("Certify"):
    ds = ctx.test_set()
    names = ds.class_names
    model, dev = ctx.model, ctx.device
    table = ctx.bounds("auto")
    top = st.columns([2, 1, 1])
    with top[0]:
        rho = ui.persistent(st.slider, "ρ: the attack budget (ℓ2 distance)", "crc_rho", 0.5, min_value=0.05,
                            max_value=3.0, step=0.05, help="The paper uses ρ = 0.5 for MNIST/Fashion-MNIST.")
    with top[1]:
        mode = ui.persistent(st.selectbox, "Certificate solver", "crc_mode", "fast", options=["fast", "paper"],
                             valid=lambda v: v in ("fast", "paper"),
                             help="fast: our accelerated solver; paper: Algorithm 1 as published (slower). "
                                  "Both give sound radii.")

    @st.cache_resource(show_spinner="Certifying the gallery images (once per model)…", max_entries=8)
    def _pool(key: str, dataset: str, mode: str, device: str, _model, _table) -> tuple[pd.DataFrame, object]:
        """Certificates of the first POOL test images (one batched call): the gallery's table, and the
        certificates themselves so that picking a gallery image costs nothing."""
        x, y = ds.images[:POOL].to(device), ds.labels[:POOL].to(device)
        with torch.no_grad():
            batch = certify(_model, x, y, mode=mode, bounds=_table)
        df = batch.to_frame()
        df.insert(0, "index", range(len(df)))
        return df, batch

    def _row(batch, i: int):
        """Image i of a certificate batch, as a batch of one (tensor fields sliced)."""
        return dataclasses.replace(batch, **{f.name: getattr(batch, f.name)[i:i + 1]
                                             for f in dataclasses.fields(batch)
                                             if isinstance(getattr(batch, f.name), torch.Tensor)})

    # ------------------------------------------------------------------ pick an image
    st.subheader("1 · Pick an image")
    tab_gallery, tab_upload = st.tabs(["Test-image gallery", "Upload your own image"])
    with tab_gallery:
        pool, pool_certs = _pool(ctx.key, ctx.dataset, mode, str(dev), model, table)
        f1, f2, f3 = st.columns(3)
        cls = f1.selectbox("Class", ["any", *names], key="crc_f_class")
        outcome = f2.selectbox("Prediction", ["any", "correct", "wrong"], key="crc_f_outcome")
        at_rho = f3.selectbox(f"At ρ = {rho:g}", ["any", "certified", "not certified"], key="crc_f_cert")
        sel = pool
        if cls != "any":
            sel = sel[sel["label"] == names.index(cls)]
        if outcome != "any":
            sel = sel[sel["correct"] == (outcome == "correct")]
        if at_rho != "any":
            ok = sel["correct"] & (sel["radius"] >= rho)
            sel = sel[ok if at_rho == "certified" else ~ok]
        st.caption(f"{len(sel)} of the first {len(pool)} test images match; showing up to {SHOW}. "
                   "✓/✗: correct or wrong prediction; r: certified radius (all classes). Click a number to pick.")
        shown = sel.head(SHOW)
        per_row = 12
        for start in range(0, len(shown), per_row):
            cols = st.columns(per_row, gap="small")
            for col, (_, row) in zip(cols, shown.iloc[start:start + per_row].iterrows()):
                i = int(row["index"])
                with col:
                    st.image(analysis.to_png_array(ds.images[i]), width="stretch",
                             caption=f"{'✓' if row['correct'] else '✗'} r={row['radius']:.2f}")
                    if st.button(f"#{i}", key=f"pick_{i}", width="stretch",
                                 type="primary" if i == st.session_state.get(ui.IMAGE_KEY) else "secondary"):
                        st.session_state[ui.IMAGE_KEY] = i
                        st.session_state[ui.USE_UPLOAD_KEY] = False
                        st.rerun()
        if sel.empty:
            st.info("No image matches these filters: loosen them.")
    with tab_upload:
        st.caption(f"A picture of any size up to {analysis.MAX_PIXELS / 1e6:.0f} megapixels (PNG, JPEG, BMP, GIF, "
                   "WebP, or a .npy array of grey values in [0, 1] or 0–255). The models take 28×28 grey images, "
                   "so it is turned grey, padded to a square with its background colour (the shape is kept) and "
                   "resized to 28×28. Fashion-MNIST objects are light on a dark background: 'auto' inverts a "
                   "picture whose background is light, such as a dark drawing on white paper.")
        u1, u2 = st.columns([3, 1])
        up = u1.file_uploader("Image file", type=["png", "jpg", "jpeg", "bmp", "gif", "webp", "npy"],
                              key="crc_upload_image")
        colours = u2.radio("Colours", ["auto", "keep", "invert"], key="crc_invert_mode",
                           help="auto: invert when the picture's background (its border) is light; keep: use the "
                                "grey values as they are; invert: always swap light and dark.")
        if up is not None:
            with ui.guard("Upload refused"):
                data = up.getvalue()
                sig = (hashlib.sha1(data).hexdigest(), up.name, colours)
                memo = st.session_state.get("crc_upload_prepared")
                if memo is None or memo[0] != sig:  # decode once per file and colour choice, not on every rerun
                    invert = {"auto": "auto", "keep": False, "invert": True}[colours]
                    memo = (sig, analysis.read_upload(data, up.name, invert=invert))
                    st.session_state["crc_upload_prepared"] = memo
                done = memo[1]
                x_up = done.x
                prev = st.session_state.get(ui.UPLOAD_IMAGE_KEY)
                if prev is None or prev[0] != up.name or not torch.equal(prev[1], x_up):
                    st.session_state[ui.UPLOAD_IMAGE_KEY] = (up.name, x_up)
                    st.session_state[ui.USE_UPLOAD_KEY] = True
                p1, p2, p3 = st.columns([1, 1, 3])
                p1.image(done.square, width="stretch", caption="your picture in grey, padded to a square")
                p2.image(analysis.to_png_array(x_up), width="stretch", caption="what the model sees: 28×28")
                p3.caption(done.note)
        if st.session_state.get(ui.UPLOAD_IMAGE_KEY) is not None:
            ui.persistent(st.toggle, "Analyse the uploaded image", ui.USE_UPLOAD_KEY, True)

    x, label, what = ui.picked_image(ds)
    image_key = what if label is not None else "upload:" + hashlib.sha1(x.numpy().tobytes()).hexdigest()[:16]

    # ------------------------------------------------------------------ certificate of the picked image
    @st.cache_resource(show_spinner="Certifying…", max_entries=64)
    def _certify_one(key: str, image_key: str, mode: str, device: str, _model, _x, _label, _table):
        lab = None if _label is None else torch.tensor([_label], device=device)
        with torch.no_grad():
            return certify(_model, _x[None].to(device), lab, mode=mode, bounds=_table)

    index = st.session_state.get(ui.IMAGE_KEY, 0)
    if label is not None and isinstance(index, int) and index < POOL:
        cert = _row(pool_certs, index)  # already certified with the gallery
    else:
        cert = _certify_one(ctx.key, image_key, mode, str(dev), model, x, label, table)
    pred, radius = int(cert.pred[0]), float(cert.radius[0])
    logits = cert.logits[0].detach().cpu()
    ru = int(cert.runner_up[0])
    ru_rad = float(cert.runner_up_radius[0])
    upper = float(cert.upper[0])
    correct = bool(cert.correct[0])
    exact = bool(cert.exact[0])
    target = int(cert.target[0])
    prob = torch.softmax(logits.double(), 0)[pred].item()

    st.subheader(f"2 · The certificate of {what}")
    head = st.columns([1, 6])
    with head[0]:
        st.image(analysis.to_png_array(x), width="stretch", caption=what)
    with head[1]:
        m = st.columns(5)
        m[0].metric("prediction", names[pred], f"{prob:.0%} confident", delta_color="off", delta_arrow="off")
        m[1].metric("true label", names[label] if label is not None else "unknown",
                    ("correct" if correct else "wrong") if label is not None else None,
                    delta_color="normal" if correct else "inverse", delta_arrow="off")
        m[2].metric("certified radius", f"{radius:.4f}",
                    f"against {names[target]}" if target >= 0 else None, delta_color="off", delta_arrow="off",
                    help="The smallest radius over all other classes: the guarantee for the classifier.")
        m[3].metric("runner-up radius", f"{ru_rad:.4f}" if ru_rad == ru_rad else "—",
                    f"against {names[ru]}", delta_color="off", delta_arrow="off",
                    help="The paper's radius: against the class with the second-highest score only.")
        m[4].metric("exact?", "yes" if exact else "no",
                    help="Yes: the boundary point x_b is at exactly the certified distance (primal = dual).")
        if not correct:
            st.warning("This image is misclassified, so there is nothing to certify: its radius is 0 by definition "
                       "(the prediction is already wrong).")
        elif upper == float("inf"):
            st.info(f"The true distance to the decision boundary is **at least {radius:.4f}**; the solver found no "
                    "point where another class wins, so there is no upper end to the interval yet.")
        else:
            st.info(f"The true distance to the decision boundary lies in **[{radius:.4f}, {upper:.4f}]**: "
                    f"certified radius ≤ distance ≤ distance of the closest point found where another class "
                    f"wins{' (the two ends meet: the certificate is exact)' if exact else ''}.")
    c1, c2 = st.columns(2)
    with c1:
        ui.plot(plots.radii_bar(cert.radii[0], names, pred=pred, runner_up=ru, rho=rho,
                                exact=cert.exact_t[0]), key="radii")
    with c2:
        ui.plot(plots.margins_bar(logits, names, pred=pred, label=label), key="margins")

    if correct and target >= 0:
        xb = cert.x_boundary[0].detach().cpu().float()
        d_b = float((xb - x).norm())
        st.markdown(f"**The closest boundary point found**, x_b, for target *{names[target]}* "
                    f"(distance {d_b:.4f}); the boundary is where z_{names[pred]} = z_{names[target]}.")
        ui.plot(plots.boundary_triptych(x, xb, distance=d_b), key="triptych")
        direction = xb - x
        if float(direction.norm()) < 1e-9:  # no boundary point: follow the margin's steepest descent
            _, g = margin_and_grad(model, x[None].to(dev), torch.tensor([pred], device=dev),
                                   torch.tensor([target], device=dev))
            direction = -g[0].cpu()
        s_max = 1.5 * max(d_b, rho, radius, 1e-3)
        line = analysis.margin_line(model, x, direction, pred, target, s_max)
        ui.plot(plots.margin_along_path(line.s, line.f_target, line.f_any, radius=radius, rho=rho,
                                        boundary_distance=d_b if d_b > 1e-9 else None,
                                        target_name=names[target]), key="path")
        st.caption("Along this straight line the margin reaches 0 at x_b. The green band is the certified radius: "
                   "inside it the margin cannot reach 0 in *any* direction, not only along this line.")

    # ------------------------------------------------------------------ at rho
    st.subheader(f"3 · At ρ = {rho:g}")
    if not correct:
        st.info("Misclassified: not certified at any ρ.")
    else:
        certified = radius >= rho

        @st.cache_resource(show_spinner="Running the curvature attack (Algorithm 2)…", max_entries=64)
        def _attack(key: str, image_key: str, rho: float, device: str, _model, _x, pred: int, _table):
            ts = torch.tensor([t for t in range(_model.n_classes) if t != pred], device=device)
            n = ts.numel()
            res = curvature_attack(_model, _x[None].to(device).expand(n, -1), torch.full((n,), pred, device=device),
                                   ts, rho, bounds=_table)
            return ts.cpu(), res

        ts, res = _attack(ctx.key, image_key, float(rho), str(dev), model, x, pred, table)
        margins = res.margin.detach().cpu()
        k = int(margins.argmin())
        fooled = bool(res.fooled[k])
        a1, a2, a3 = st.columns(3)
        a1.metric(f"certified at ρ = {rho:g}?", "yes" if certified else "no",
                  f"radius {radius:.3f} {'≥' if certified else '<'} ρ",
                  delta_color="normal" if certified else "inverse", delta_arrow="off")
        a2.metric("attack changed the class?", "yes" if fooled else "no",
                  f"strongest target: {names[int(ts[k])]}", delta_color="inverse" if fooled else "normal",
                  delta_arrow="off")
        a3.metric("attack provably worst case?", "yes" if bool(res.success[k]) else "no",
                  help="Success flag of Algorithm 2: the attack point is on the sphere of radius ρ and its dual "
                       "certifies that no point in the ball has a lower margin (paper Theorem 2).")
        if certified and fooled:  # would contradict soundness: say so loudly
            st.error("Certified yet fooled: this should never happen. Please report it with the model and image.")
        elif certified:
            st.success(f"Certified: no image within ℓ2 distance {rho:g} of this one is classified differently.")
        elif fooled:
            st.warning(f"Not robust at ρ = {rho:g}: the attack found an image {float(res.distance[k]):.3f} away "
                       f"that is classified as {names[int(ts[k])]}.")
        else:
            st.info("Not certified, but the attack did not change the class either: the truth lies in the gap "
                    "between the certified radius and the best attack.")
        rows = pd.DataFrame({
            "target": [names[int(t)] for t in ts],
            "margin after attack": margins.numpy(),
            "distance used": res.distance.detach().cpu().numpy(),
            "class changed": res.fooled.cpu().numpy(),
            "provably worst case": res.success.cpu().numpy(),
        }).sort_values("margin after attack")
        with st.expander("The attack against every target class"):
            st.dataframe(rows, hide_index=True)
            xa = res.x[k].detach().cpu()
            ui.plot(plots.image_heatmaps([x, xa, xa - x], ["x0", f"attack (target {names[int(ts[k])]})",
                                                           "attack − x0"], diverging=[False, False, True]),
                    key="attack_images")
