"""Lesson: the paper's idea in seven steps, for a projector (1280×720); each step has its own link (?step=N)."""

import streamlit as st

from app_lib import lesson, sidebar, ui

sidebar.page_header("Lesson", ":material/school:", sidebar="collapsed")  # the figures get the whole width
N = len(lesson.STEPS)
if "lesson_step" not in st.session_state:  # read the link once, when the page opens from it
    st.session_state.lesson_step = lesson.step_from_query(st.query_params.get("step"))
step = st.session_state.lesson_step
st.query_params["step"] = str(step)  # the address bar is this step's shareable link


def go(delta: int) -> None:
    st.session_state.lesson_step = min(N, max(1, st.session_state.lesson_step + delta))


s = lesson.STEPS[step - 1]
st.markdown(f"#### Step {step} of {N} · {s.title}")
with ui.guard(f"Step {step}"), st.spinner("Training this step's small network once (a few seconds)..."):
    figs = lesson.figures(step)
    cols = st.columns([3, 3, 2] if len(figs) == 2 else [3, 2])  # figures left, text and buttons right
    for i, (col, fig) in enumerate(zip(cols, figs, strict=False)):
        col.plotly_chart(fig, width="stretch", key=f"lesson_{step}_{i}", config={"displaylogo": False})
    with cols[-1]:
        st.markdown(s.text)
        nav = st.columns(2)
        nav[0].button("Back", icon=":material/arrow_back:", on_click=go, args=(-1,), disabled=step == 1,
                      width="stretch", key="lesson_back")
        nav[1].button("Next", icon=":material/arrow_forward:", on_click=go, args=(1,), disabled=step == N,
                      width="stretch", type="primary", key="lesson_next")
        if step == N:
            st.markdown("**The same ideas on real images** (28×28 pixels, 784 dimensions): the Certify page.")
            sidebar.page_link(lesson.CERTIFY_PAGE, with_blurb=True)
        st.caption(f"Link to this step: ?step={step}")
