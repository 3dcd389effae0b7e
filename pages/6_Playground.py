"""Playground: the paper in two dimensions. Train a small net on a toy dataset, pick a point, and see every
certificate's disc to scale beside the TRUE distance to the boundary."""

import streamlit as st

from app_lib import links, plots, sidebar, ui
from app_lib import playground as pg
from app_lib import playground_figures as pf

sidebar.page_header("Playground", ":material/toys:", sidebar="collapsed")  # the figures get the whole width
links.sync(pg.link_fields())  # a shared link opened: its dataset, net and point; then mirror them into the URL
st.session_state.setdefault("pg_arch", "2×[32]")
st.markdown("### Playground: certificates you can see")
st.caption("A 2-D toy dataset, a small net trained by the same loop as the image models, and every certificate drawn "
           "to scale around a point you pick, beside the TRUE distance to the boundary (exact in two dimensions). "
           "The address bar is a link to this view.")
links.notes()
plane_col, side = st.columns([3, 2])

# ------------------------------------------------------------------------------------------------ settings
with side.expander("Dataset and network: change and press Train", icon=":material/tune:"), \
        st.form("pg_form", border=False):
    c = st.columns(3)
    dataset = c[0].selectbox("Dataset", pg.TOYS, key="pg_dataset")
    size = c[1].number_input("Points", value=300, step=50, key="pg_size", help="Points per split (train, test).")
    noise = c[2].number_input("Noise", value=0.1, step=0.02, format="%.2f", key="pg_noise",
                              help="Standard deviation of the Gaussian noise, in the plane's units (≥ 0).")
    c = st.columns(3)
    seed = c[0].number_input("Seed", value=0, step=1, key="pg_seed")
    classes = c[1].number_input("Classes", value=3, step=1, key="pg_classes", help="blobs and spirals: 2 to 4.")
    epochs = c[2].number_input("Epochs", value=40, min_value=1, max_value=300, step=10, key="pg_epochs")
    c = st.columns(2)
    arch = c[0].selectbox("Net", list(pg.ARCHITECTURES), key="pg_arch")
    act = c[1].selectbox("Activation", pg.ACTIVATIONS, key="pg_act")
    control = st.radio("Regularized control (same data, same seed)", ["none", "gamma", "crt"],
                       format_func=lambda v: {"none": "none", **pg.KIND_LABELS}[v], horizontal=True,
                       key="pg_control", help="γ adds γ·K to the loss (K: the curvature bound); CRT also trains "
                                              "on curvature-attack points at radius ε.")
    c = st.columns(3)
    gamma = c[0].number_input("γ", value=0.02, min_value=0.0, step=0.01, format="%.3f", key="pg_gamma")
    eps = c[1].number_input("CRT ε", value=0.3, min_value=0.01, step=0.05, key="pg_eps")
    go_train = c[2].form_submit_button("Train", type="primary", icon=":material/play_arrow:", width="stretch")

live_status, live_chart = side.empty(), plane_col.empty()
with ui.guard("Training"):
    run = pg.ToyRun(dataset, int(size), float(noise), int(seed), int(classes), pg.ARCHITECTURES[arch], act,
                    epochs=int(epochs), gamma=float(gamma), eps=float(eps))
    if pg.TOY_KEY not in st.session_state and not go_train:  # first visit: this net, trained once per process
        with st.spinner("Training the network (once per setting; a few seconds)..."):
            st.session_state[pg.TOY_KEY] = [pg.train_toy(run)]
    if go_train:
        toys = [pg.train_live(run, live_status.progress(0.0), live_chart)]
        if control != "none":
            toys.append(pg.train_live(run.control(control), live_status.progress(0.0), live_chart))
        st.session_state[pg.TOY_KEY] = toys
        live_chart.empty()

toys = st.session_state.get(pg.TOY_KEY)
if not toys:
    st.stop()
toy = toys[0]

# ------------------------------------------------------------------------------------------------ the point
pg.apply_click(st.session_state)  # a click on the plane (last run) becomes the typed coordinates
for key, value in zip(("pg_x", "pg_y"), pg.default_point(toy).tolist(), strict=True):
    st.session_state.setdefault(key, value)
p = side.columns(2)
x = p[0].number_input("Point x", step=0.05, format="%.3f", key="pg_x",
                      help="Click anywhere on the plane (a 49×49 grid of invisible targets) or type coordinates.")
y = p[1].number_input("Point y", step=0.05, format="%.3f", key="pg_y")

view = None
with ui.guard("The point"):
    x0 = pg.check_point(toy, float(x), float(y))
    view = pg.point_view(toy, x0)
    fig = pf.regions_figure(pg.regions(toy.key, toy), toy.train.images, toy.train.labels, toy.train.class_names,
                            title=f"{toy.run.label()}: test accuracy {toy.test_accuracy:.0%} (equal axes: discs "
                                  "to scale)", view=view, clickable=True)
    plane_col.plotly_chart(fig, width="stretch", key=pg.CLICK_KEY, on_select="rerun", selection_mode="points",
                           config={"displaylogo": False})
    with side:
        st.markdown(f"**Point ({x:.3f}, {y:.3f})**: class {view.pred}. Every disc is a certificate of the net "
                    "(deterministic, against every other class): none may hold a point of another class.")
        st.dataframe(pg.gap_rows(view), hide_index=True, width="stretch")
        st.caption(f"TRUE distance: dense polar search, {view.truth.resolution}; exact to that grid (the point it "
                   f"returns is another class's, so it is an upper end). Computed in {view.seconds:.2f} s.")
        if view.K_ub is not None:
            st.caption(f"CRC against class {view.target} uses K_ub = {view.K_ub:.3g}, a proven bound on the "
                       "curvature of z_y − z_t everywhere; the violet path is the curvature attack's worst point "
                       "for growing ρ.")

# ------------------------------------------------------------------------------------------------ more views
tabs = st.tabs(["Side by side with the control", "Curvature: K_ub vs measured", "ReLU: linear pieces",
                "Training curves"])
with tabs[0], ui.guard("Side by side"):
    if len(toys) < 2:
        st.info("Choose a regularized control (γ or CRT) under 'Dataset and network' and press Train: it is trained "
                "on the same data with the same seed and shown here beside this net, with the same point.")
    else:
        cols = st.columns(2)
        for col, t in zip(cols, toys, strict=True):
            v = pg.point_view(t, pg.check_point(t, float(x), float(y)))
            col.plotly_chart(pf.regions_figure(pg.regions(t.key, t), t.train.images, t.train.labels,
                                               t.train.class_names, title=t.run.label(), view=v),
                             width="stretch", key=f"pg_side_{t.key}")
            col.caption(pg.side_caption(v))
with tabs[1], ui.guard("Curvature"):
    if toy.model.activation_name == "relu":
        st.info("A ReLU net has no curvature bound: see the next tab.")
    elif view is None:
        st.info("Pick a point inside the plotted square: its class pair is the one whose curvature is shown.")
    else:
        cv = pg.curvature_view(toy.key, toy, view.pred, pg.target_for(view))
        ui.plot(pf.curvature_figure(cv), key="pg_curv")
        st.caption(pg.curvature_caption(cv))
with tabs[2], ui.guard("ReLU"):
    if toy.model.activation_name != "relu":
        st.info("Train a net with the ReLU activation to see its linear pieces.")
    else:
        ui.plot(pf.pieces_figure(pg.regions(toy.key, toy), pg.pieces(toy.key, toy)), key="pg_pieces")
        st.markdown(pg.RELU_TEXT)
with tabs[3]:
    for t in toys:
        ui.plot(plots.training_curves(t.events, title=f"{t.run.label()}: {t.seconds:.1f} s"), key=f"pg_c_{t.key}")
