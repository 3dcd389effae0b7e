"""The Home page's checkpoint upload: our own checkpoints load at once; foreign files are shown, then imported.

A foreign file (the paper's official checkpoints such as ``mnist_2_softplus_L2_1.58_EIGEN_0.005``, an
``nn.Sequential`` state dict, prefixed or wrapped dicts) is recognised by :func:`crc_core.importers.inspect_foreign`
(through :func:`app_lib.ui.open_upload`). The page then shows what was found (architecture, key layout, what the file
name says) and asks for what a state dict does not store, the activation and the dataset, pre-filled from an official
file name. On **Import** the file is converted into the user's models folder (:func:`app_lib.registry.import_upload`)
and becomes the picked model on every page. Every refusal is one sentence in an error box; the picked model stays.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from app_lib import catalogue, registry, state, texts, ui
from crc_core.activations import CURVATURE_ACTIVATIONS
from crc_core.importers import DATASET_SHAPES, NameHints, normalize_dataset, training_from_name

UPLOADER_KEY = "crc_upload_ckpt"
DONE_KEY = "crc_upload_done"  # file_id of the upload already handled (a rerun does not handle it again)
PENDING_KEY = "crc_import_pending"  # the ForeignUpload waiting for the user's confirmation
FLASH_KEY = "crc_flash"
ACTIVATION_KEY, DATASET_KEY, NAME_KEY = "crc_import_activation", "crc_import_dataset", "crc_import_name"
LOW_ACCURACY = 0.5  # a 10-class model below this on its own test images was most likely imported with wrong choices
SIBLING_GAP = 0.10  # another activation this much more accurate on the same weights: the choice is most likely wrong
CONFIRM_KEY = "crc_import_confirm"  # ((sha256, activation, dataset), doubts) shown and waiting for "Import anyway"
IMPORT_DATASETS = tuple(DATASET_SHAPES)  # the datasets a model can be imported for: ("mnist", "fashion-mnist")


def upload_section() -> None:
    """The upload box, the import prompt of a foreign file (when one waits) and the last outcome."""
    st.markdown("#### Upload a checkpoint")
    st.caption(texts.UPLOAD_CHECKPOINT)
    # No type filter: the paper's official files have no extension; the content decides (refused in one sentence).
    up = st.file_uploader("Checkpoint file", key=UPLOADER_KEY)
    if up is None:
        st.session_state.pop(PENDING_KEY, None)  # the file was removed: so is its prompt
    elif st.session_state.get(DONE_KEY) != up.file_id:
        st.session_state[DONE_KEY] = up.file_id
        st.session_state.pop(PENDING_KEY, None)
        with ui.guard("Upload refused"):
            got = catalogue.open_upload(up.getvalue(), up.name)
            if isinstance(got, registry.ForeignUpload):
                _start_prompt(got)
            else:
                st.session_state[FLASH_KEY] = ("success", f"Loaded {up.name}: it is now the picked model ({got.id}).")
                st.rerun()
    pending = st.session_state.get(PENDING_KEY)
    if isinstance(pending, registry.ForeignUpload):
        import_prompt(pending)
    if flash := st.session_state.pop(FLASH_KEY, None):
        kind, msg = flash if isinstance(flash, tuple) else ("success", flash)
        getattr(st, kind)(msg)


def defaults(upload: registry.ForeignUpload) -> tuple[str | None, str | None, str]:
    """(activation, dataset, name) an official file name gives (None where it says nothing usable here)."""
    hints = upload.foreign.hints
    act = hints.activation if hints is not None and hints.activation in CURVATURE_ACTIVATIONS else None
    ds = hints.dataset if hints is not None and hints.dataset in IMPORT_DATASETS else None
    name = hints.stem if hints is not None else registry.slug(registry.upload_stem(upload.filename)) or "imported"
    return act, ds, name


def _start_prompt(upload: registry.ForeignUpload) -> None:
    """Keep the upload and pre-fill the prompt's fields (from the file name, else the dataset in use)."""
    act, ds, name = defaults(upload)
    in_use = st.session_state.get(state.DATASET_KEY) or "embedded"
    st.session_state[PENDING_KEY] = upload
    st.session_state.pop(CONFIRM_KEY, None)
    st.session_state[ACTIVATION_KEY] = act or CURVATURE_ACTIVATIONS[0]
    st.session_state[DATASET_KEY] = ds or (normalize_dataset(in_use) if normalize_dataset(in_use) in
                                           IMPORT_DATASETS else "fashion-mnist")
    st.session_state[NAME_KEY] = name


def found_rows(upload: registry.ForeignUpload) -> dict[str, str]:
    """What the file holds, property -> value (the prompt's table)."""
    f = upload.foreign
    keys = [k for layer in f.layers for k in (layer.weight_key, layer.bias_key)]
    shown = keys if len(keys) <= 8 else [*keys[:6], "…"]
    layout = ", ".join(f"`{k}`" for k in shown) + ("" if len(keys) <= 8 else f" ({len(keys)} tensors)")
    if f.wrapper_key:
        layout += f" (under {f.wrapper_key!r})"
    rows = {
        "File": f"`{upload.filename}` ({f.scan.format} torch file, {f.scan.size_bytes:,} bytes, "
                f"{f.dtype.removeprefix('torch.')} weights, sha256 `{f.scan.sha256[:12]}…`)",
        "Architecture": f.describe(),
        "Key layout": layout,
        "File name says": name_hints_text(f.hints),
    }
    if f.ignored:
        rows["Left aside"] = ", ".join(f.ignored)
    return rows


def name_hints_text(hints: NameHints | None) -> str:
    """What an official file name states, in words (or that the name is not one)."""
    if hints is None:
        return "nothing (not an official file name): choose the activation and dataset below"
    kind, gamma, eps = training_from_name(hints)
    training = (f"CRT training, γ={gamma:g}, ε={eps:g}" if kind == "crt" and eps is not None and gamma is not None
                else f"curvature penalty γ={gamma:g}" if gamma is not None else "training not stated")
    return f"dataset {hints.dataset}, {hints.depth} layers, {hints.activation}; {training}"


def import_prompt(upload: registry.ForeignUpload) -> None:
    """What was found in a foreign upload and the fields that import it (activation, dataset, name). No form: Enter
    in the name field only takes the name. Import first reviews the choices (:func:`review`); a contradiction with
    the file name, or an accuracy far below what another activation gives, is a warning to confirm."""
    act, ds, _name = defaults(upload)
    with st.container(border=True, key="crc_import_prompt"):
        st.markdown("##### Import a network")
        st.info(texts.IMPORT_FOUND, icon=":material/input:")
        st.markdown("\n".join(f"- **{k}:** {v}" for k, v in found_rows(upload).items()))
        hints = upload.foreign.hints
        if hints is not None and hints.activation not in CURVATURE_ACTIVATIONS:
            st.warning(f"The file name says {hints.activation}, which has no curvature bound: the app certifies "
                       "softplus, sigmoid and tanh networks only.", icon=":material/warning:")
        c1, c2 = st.columns(2)
        activation = c1.selectbox("Activation", list(CURVATURE_ACTIVATIONS), key=ACTIVATION_KEY,
                                  help=_from_name_help(act, "activation"))
        dataset = c2.selectbox("Trained on", list(IMPORT_DATASETS), key=DATASET_KEY, format_func=_dataset_option,
                               help=_from_name_help(ds, "dataset"))
        name = st.text_input("Name in the model picker", key=NAME_KEY, max_chars=60)
        st.caption(_prefill_caption(act, ds))
        choice = (upload.sha256, str(activation), str(dataset))
        asked = st.session_state.get(CONFIRM_KEY)
        doubts = asked[1] if asked is not None and asked[0] == choice else None
        if doubts:
            st.warning("**Check before importing:** " + " ".join(doubts) + " Change the choice above, or import "
                       "anyway.", icon=":material/help:")
        b1, b2 = st.columns(2)
        go = b1.button("Import anyway" if doubts else "Import", type="primary", icon=":material/download:",
                       width="stretch", key="crc_import_go")
        cancel = b2.button("Cancel", width="stretch", key="crc_import_cancel")
    if cancel:
        st.session_state.pop(PENDING_KEY, None)
        st.session_state.pop(CONFIRM_KEY, None)
        st.rerun()
    if go:
        with ui.guard("Import refused"):
            if doubts is None:
                with st.spinner("Checking the choices on the test images…"):
                    found = review(upload, str(activation), str(dataset), catalogue.import_test_set(str(dataset)))
                if found:
                    st.session_state[CONFIRM_KEY] = (choice, found)
                    st.rerun()
            _do_import(upload, str(activation), str(dataset), str(name or ""), doubts or [])


def review(upload: registry.ForeignUpload, activation: str, dataset: str, test_set: Any | None) -> list[str]:
    """What speaks against importing with these choices, one sentence each (empty: nothing): the file name's
    activation or dataset contradicted; an accuracy far below another activation's (or very low), measured on
    every image of ``test_set`` (None: not on this machine, nothing measured)."""
    out: list[str] = []
    hints = upload.foreign.hints
    if hints is not None and hints.activation in CURVATURE_ACTIVATIONS and hints.activation != activation:
        out.append(f"The file name says **{hints.activation}**, you chose **{activation}**.")
    if hints is not None and hints.dataset in IMPORT_DATASETS and hints.dataset != dataset:
        out.append(f"The file name says it was trained on **{hints.dataset}**, you chose **{dataset}**.")
    if test_set is not None:
        accs = registry.accuracy_by_activation(upload, dataset, test_set)
        best = max(accs, key=accs.get)
        n = f"all {len(test_set):,} {test_set.name} test images"
        if best != activation and accs[best] - accs[activation] >= SIBLING_GAP:
            out.append(f"On {n}, **{activation}** gives {accs[activation]:.1%} accuracy but **{best}** gives "
                       f"{accs[best]:.1%}.")
    return out  # a low accuracy with every activation is said after the import (a warning, not a success)


def _do_import(upload: registry.ForeignUpload, activation: str, dataset: str, name: str, doubts: list[str]) -> None:
    with st.spinner(f"Importing {upload.filename}…"):
        ref, new = catalogue.import_upload(upload, activation=activation, dataset=dataset, name=name)
    st.session_state.pop(PENDING_KEY, None)
    st.session_state.pop(CONFIRM_KEY, None)
    where = "" if new else " (imported before with the same activation and dataset: that model is picked)"
    named = "" if ref.name == registry.upload_stem(upload.filename) else f" as {ref.name}"
    text = (f"Imported {upload.filename}{named}{where}: it is now the picked model on every page. "
            f"{_checked_note(ref, dataset)}.")
    low = "may be wrong" in text  # the accuracy measured at import is low
    st.session_state[FLASH_KEY] = ("warning", text + (" Imported although: " + " ".join(doubts) if doubts else "")) \
        if doubts or low else ("success", text)
    st.rerun()


def _from_name_help(value: Any, what: str) -> str:
    if value is not None:
        return f"Pre-filled from the file name; a state dict does not store the {what}."
    return f"A state dict does not store the {what} and the file name does not say it: choose it."


def _prefill_caption(act: str | None, ds: str | None) -> str:
    said = [w for w, v in (("activation", act), ("dataset", ds)) if v is not None]
    if len(said) == 2:
        return "Activation and dataset were read from the file name (the paper's naming). Check them and import."
    if said:
        return f"The {said[0]} was read from the file name; choose the rest, then import."
    return "The file name does not say how the network was built: choose its activation and dataset, then import."


def _dataset_option(name: str) -> str:
    found = any(normalize_dataset(n) == name for n in catalogue.dataset_names())
    title = catalogue.DATASET_TITLES.get(name, name)
    return f"{name} ({title}{'' if found else '; not found on this machine'})"


def _checked_note(ref: registry.ModelRef, dataset: str) -> str:
    """What the import measured: the accuracy on the dataset's test images, or that they are not on this machine."""
    metrics = catalogue.catalogue_metadata().get(ref.id, {}).get("metrics") or {}
    acc, n = metrics.get("test_accuracy"), metrics.get("test_images")
    if isinstance(acc, (int, float)) and isinstance(n, int):
        low = "; that low, the activation or the dataset may be wrong" if acc < LOW_ACCURACY else ""
        return f"Accuracy on all {n:,} {metrics.get('test_dataset')} test images: {acc:.1%}{low}"
    return (f"Its {dataset} test images are not found on this machine: put their IDX files in "
            f"$CRC_DATA_DIR/{dataset} to test it on them")

