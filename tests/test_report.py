"""The HTML report is one self-contained file; every plot function draws and saves a PNG."""

import re

import numpy as np
import pytest
from matplotlib.figure import Figure

from syllabus.report import plots
from syllabus.report.html import PNG_SIGNATURE, Report

ROWS = [
    {"epoch": e, "train/loss": 1.0 / e, "val/loss": 1.2 / e, "train/accuracy": 0.5 + 0.04 * e, "val/accuracy": 0.45}
    for e in range(1, 6)
] + [{"epoch": 6, "train/loss": 0.15}]  # a row lacking most keys is skipped for them

PLOTS = {
    "plot_curves": lambda: plots.plot_curves(ROWS, ["train/loss", "val/loss"], title="Loss", ylabel="loss"),
    "plot_metric_grid": lambda: plots.plot_metric_grid(ROWS, ["loss", "accuracy", "macro_f1"]),
    "plot_overlaid": lambda: plots.plot_overlaid({"lr=0.1": ROWS, "lr=0.01": ROWS[:3]}, "val/loss"),
    "plot_overlaid_grid": lambda: plots.plot_overlaid_grid({"a": ROWS, "b": ROWS}, ["train/loss", "val/accuracy"]),
    "plot_confusion": lambda: plots.plot_confusion(np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]]), ["a", "b", "c"]),
    "plot_confusion_counts": lambda: plots.plot_confusion(
        np.eye(40, dtype=int) * 3, [f"c{i}" for i in range(40)], False
    ),
    "plot_bars": lambda: plots.plot_bars({"batch": 1.5, "layer": 2.25, "none": float("nan")}, "Time", "s"),
    "plot_grouped_bars": lambda: plots.plot_grouped_bars({"r1": {"train": 0.9, "val": 0.8}, "r2": {"train": 0.7}}),
    "plot_lines_per_group": lambda: plots.plot_lines_per_group({"seed0": [0.1, 0.5, 0.9], "seed1": [0.2, 0.4]}),
    "image_grid_float": lambda: plots.image_grid(np.random.default_rng(0).random((5, 8, 8, 3)), list("abcde"), 3),
    "image_grid_uint8_grey": lambda: plots.image_grid(np.arange(192, dtype=np.uint8).reshape(3, 8, 8)),
}


@pytest.mark.parametrize("make", PLOTS.values(), ids=PLOTS.keys())
def test_every_plot_draws_a_figure_that_saves_as_png(make, tmp_path):
    from PIL import Image

    fig = make()
    assert isinstance(fig, Figure)
    drawn = sum(len(ax.lines) + len(ax.patches) + len(ax.images) + len(ax.collections) for ax in fig.axes)
    assert drawn > 0  # something was drawn, not only empty axes
    width, height = (fig.get_size_inches() * plots.DPI).round().astype(int)
    path = plots.save_figure(fig, tmp_path / "sub" / "plot.png")
    assert path == tmp_path / "sub" / "plot.png" and path.read_bytes().startswith(PNG_SIGNATURE)
    pixels = np.asarray(Image.open(path).convert("L"))
    assert pixels.shape == (height, width) and pixels.std() > 5  # the figure's size, not a blank page


def test_curves_skip_rows_lacking_the_key():
    (ax,) = plots.plot_curves(ROWS, ["train/loss", "val/loss", "missing"]).axes
    lines = {line.get_label(): line.get_xdata() for line in ax.get_lines()}
    assert list(lines) == ["train/loss", "val/loss"]
    np.testing.assert_array_equal(lines["train/loss"], [1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(lines["val/loss"], [1, 2, 3, 4, 5])


def test_metric_grid_reads_split_slash_metric_keys():
    fig = plots.plot_metric_grid(ROWS, ["loss", "accuracy"], splits=("train", "val"))
    loss_ax, acc_ax = fig.axes[:2]
    loss = {line.get_label(): line.get_ydata() for line in loss_ax.get_lines()}
    np.testing.assert_allclose(loss["val"], [1.2 / e for e in range(1, 6)])
    assert [line.get_label() for line in acc_ax.get_lines()] == ["train", "val"]


def test_confusion_rows_are_normalized():
    fig = plots.plot_confusion(np.array([[3, 1], [0, 0]]), ["x", "y"])
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), [[0.75, 0.25], [0.0, 0.0]])


def test_image_grid_scales_uint8_and_clips_floats():
    fig = plots.image_grid(np.full((2, 4, 4, 3), 255, dtype=np.uint8), ncols=8)
    assert len(fig.axes) == 2
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), 1.0)
    fig = plots.image_grid(np.full((1, 4, 4, 3), 1.7))
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), 1.0)


def _demo_report(tmp_path):
    report = Report("Demo <run>", "subtitle & more", plots_dir=tmp_path / "plots")
    report.section("Results").text("Beware <script>alert('x')</script> in text.")
    report.table(
        [
            {"norm": "batch", "val/accuracy": 0.91234, "epochs": 10, "time": 12.5},
            {"norm": "layer", "val/accuracy": 0.87, "epochs": 10, "time": 11.0},
            {"norm": "none", "val/accuracy": 0.5},
        ],
        highlight_best={"val/accuracy": "max", "time": "min"},
    )
    report.section("Curves").figure(plots.plot_curves(ROWS, ["train/loss"]), "loss", caption="Training loss")
    report.link("metrics.jsonl", "raw metrics").details("config", {"lr": 0.1, "model": "resnet20"})
    return report


def test_report_is_one_self_contained_file(tmp_path):
    out = _demo_report(tmp_path).write(tmp_path / "report.html")
    page = out.read_text(encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plots", "report.html"]  # no temp file left
    assert (tmp_path / "plots" / "loss.png").read_bytes().startswith(PNG_SIGNATURE)
    assert page.count('src="data:image/png;base64,') == 1
    assert not re.search(r'(src|href)="(https?:)?//', page)  # no fetched resources
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert "<script>" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "<title>Demo &lt;run&gt;</title>" in page and "subtitle &amp; more" in page
    assert '<a href="metrics.jsonl">raw metrics</a>' in page
    assert "&quot;model&quot;: &quot;resnet20&quot;" in page


def test_best_cells_are_bold_and_formatted(tmp_path):
    page = _demo_report(tmp_path).render()
    assert '<td class="num best">0.9123</td>' in page  # max of val/accuracy
    assert '<td class="num">0.8700</td>' in page
    assert '<td class="num best">11.0000</td>' in page  # min of time; the blank cell is ignored
    assert '<td class="num">10</td>' in page  # integers are not float-formatted
    assert page.count(" best") == 2


def test_figure_names_must_be_unique_and_need_plots_dir(tmp_path):
    report = Report("t", plots_dir=tmp_path)
    report.figure(plots.plot_bars({"a": 1.0}), "bars")
    with pytest.raises(ValueError, match="already used"):
        report.figure(plots.plot_bars({"a": 1.0}), "bars")
    with pytest.raises(ValueError, match="plots_dir"):
        Report("t").figure(plots.plot_bars({"a": 1.0}), "bars")


def test_image_rejects_non_png_bytes():
    with pytest.raises(ValueError, match="PNG"):
        Report("t").image(b"GIF89a...")


def test_each_norm_at_its_best_learning_rate_is_chosen_on_validation_not_test():
    from pathlib import Path

    from syllabus.experiments.resnet_norms_report import best_lr_rows
    from syllabus.report.pages import Point

    def point(norm, lr, val, test):
        return Point(f"norm={norm},lr={lr}", Path("."), {"norm": norm, "lr": lr, "val/accuracy": val,
                                                         "test/accuracy": test, "test/macro_f1": test})

    rows = best_lr_rows([point("bn", 0.1, 0.9, 0.80), point("bn", 0.01, 0.8, 0.95),
                         point("none", 0.1, 0.1, 0.10), point("none", 0.01, 0.6, 0.55)])
    assert [(r["norm"], r["best lr (on val)"], r["test/accuracy"]) for r in rows] == \
        [("bn", 0.1, 0.80), ("none", 0.01, 0.55)]
