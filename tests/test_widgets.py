"""bssn_book.widgets: static frames (count, order, HTML), argument errors, live ipywidgets mode."""
import base64
import json
import re
from html.parser import HTMLParser

import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bssn_book import widgets as W  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def bars(a=1, label="x"):
    "A figure that differs for every (a, label)."
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.bar([0, 1], [a, 2])
    ax.set_title(str(label))
    plt.close(fig)
    return fig


class Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def parse(html):
    p = Tags()
    p.feed(html)
    return p.tags


@pytest.fixture(scope="module")
def fig():
    return W.interactive_figure(bars, static=True, a=[1, 3, 5], label=["x", "y"])


def test_frames_count_and_defaults_first(fig):
    assert isinstance(fig, W.StaticFigure)
    assert fig.n_frames == 6 and fig.sizes == [3, 2]
    first = base64.b64encode(W.figure_png(bars(), dpi=80)).decode()
    assert fig.images[fig.index[0]] == first == fig.frame()
    assert base64.b64decode(fig.frame(a=5, label="y")).startswith(PNG)


def test_product_order(fig):
    # frame (i_a, i_label) sits at i_a * 2 + i_label, as the page's JavaScript computes it
    for ia, a in enumerate([1, 3, 5]):
        for il, label in enumerate(["x", "y"]):
            want = base64.b64encode(W.figure_png(bars(a=a, label=label), dpi=80)).decode()
            assert fig.images[fig.index[ia * 2 + il]] == want


def test_distinct_values_distinct_images(fig):
    assert len({fig.frame(a=a) for a in [1, 3, 5]}) == 3
    assert len({fig.frame(label=lab) for lab in ["x", "y"]}) == 2
    assert len(fig.images) == 6


def test_identical_frames_stored_once():
    f = W.interactive_figure(lambda a=1, unused=0: bars(a), static=True, a=[1, 2], unused=[0, 1, 2])
    assert f.n_frames == 6 and len(f.images) == 2
    assert f.index == [0, 0, 0, 1, 1, 1]


def test_html_structure(fig):
    html = fig._repr_html_()
    tags = parse(html)
    roots = [a for t, a in tags if "data-bssn-interactive" in a]
    assert len(roots) == 1 and roots[0]["data-bssn-interactive"] == "6"
    uid = roots[0]["id"]
    controls = [(t, a) for t, a in tags if "data-bssn-param" in a]
    assert [t for t, _ in controls] == ["input", "select"]  # numbers -> slider, words -> list
    assert controls[0][1]["type"] == "range" and controls[0][1]["max"] == "2"
    imgs = [a for t, a in tags if t == "img"]
    assert len(imgs) == 1 and imgs[0]["src"] == "data:image/png;base64," + fig.frame()
    scripts = [a for t, a in tags if t == "script"]
    assert scripts and not any("src" in a for a in scripts), "no external script"
    assert not re.search(r"https?://", html)
    ids = [a["id"] for _, a in tags if "id" in a]
    assert len(ids) == len(set(ids)) and all(i.startswith(uid) for i in ids)
    data = json.loads(re.search(r'<script type="application/json"[^>]*>(.*?)</script>', html, re.S).group(1))
    assert data["sizes"] == [3, 2] and data["labels"] == [["1", "3", "5"], ["x", "y"]]
    assert "<select" in html and 'selected' in html


def test_unique_ids_for_equal_figures():
    f1 = W.interactive_figure(bars, static=True, a=[1, 2])
    f2 = W.interactive_figure(bars, static=True, a=[1, 2])
    assert f1.uid != f2.uid
    assert f1.images == f2.images


def test_escaping():
    f = W.interactive_figure(bars, static=True, label=['<b>"q"</b>', "&"])
    html = f._repr_html_()
    assert "<b>" not in html.split("<script")[0]


def test_static_from_environment(monkeypatch):
    monkeypatch.setenv("BSSN_BOOK_STATIC", "1")
    assert W.static_mode()
    assert isinstance(W.interactive_figure(bars, a=[1, 2]), W.StaticFigure)
    monkeypatch.setenv("BSSN_BOOK_STATIC", "0")
    assert not W.static_mode()


def test_too_many_frames():
    with pytest.raises(ValueError, match="65 combinations.*MAX_FRAMES"):
        W.interactive_figure(bars, static=True, a=list(range(13)), label=list("abcde"))
    def tiny(a=0, label="x"):
        fig = plt.figure(figsize=(0.3, 0.3))
        plt.close(fig)
        return fig
    assert W.interactive_figure(tiny, static=True, dpi=20, a=list(range(32)), label=["x", "y"]).n_frames == 64


@pytest.mark.parametrize("choices,err,match", [
    ({}, ValueError, "at least one parameter"),
    ({"a": []}, ValueError, "empty"),
    ({"a": 3}, TypeError, "list of values"),
    ({"label": "xy"}, TypeError, "list of values"),
    ({"b": [1, 2]}, ValueError, "no parameter"),
])
def test_argument_errors(choices, err, match):
    with pytest.raises(err, match=match):
        W.interactive_figure(bars, static=True, **choices)


def test_error_names_combination():
    def fails(a=1, label="x"):
        if a == 3 and label == "y":
            raise ZeroDivisionError("boom")
        return bars(a, label)
    with pytest.raises(RuntimeError, match=r"fails\(a=3, label='y'\) raised ZeroDivisionError: boom") as e:
        W.interactive_figure(fails, static=True, a=[1, 3], label=["x", "y"])
    assert isinstance(e.value.__cause__, ZeroDivisionError)


def test_not_a_figure():
    with pytest.raises(TypeError, match=r"<lambda>\(a=2\) returned NoneType"):
        W.interactive_figure(lambda a=1: None if a == 2 else bars(a), static=True, a=[1, 2])


def test_live_mode_returns_widgets(monkeypatch):
    ipywidgets = pytest.importorskip("ipywidgets")
    monkeypatch.delenv("BSSN_BOOK_STATIC", raising=False)
    calls = []

    def fn(a=1, label="x"):
        calls.append((a, label))
        return bars(a, label)
    box = W.interactive_figure(fn, a=[1, 3, 5], label=["x", "y"])
    assert isinstance(box, ipywidgets.Widget) and isinstance(box, ipywidgets.VBox)
    assert isinstance(box.controls["a"], ipywidgets.SelectionSlider)
    assert isinstance(box.controls["label"], ipywidgets.Dropdown)
    assert isinstance(box.output, ipywidgets.Output)
    assert calls == [(1, "x")]  # the default is drawn once, at creation
    box.controls["label"].value = "y"
    box.controls["a"].value = 5
    assert calls[-1] == (5, "y") and len(calls) == 3
