"""The report's unit gallery: one run's most and least selective units with their top images."""

from selectivity.report import build_report


def test_report_gallery_shows_the_chosen_layers(tiny_sweep, tiny_data, tmp_path):
    messages = []
    layers = ["act1", "layer3.2.act2"]
    page = build_report(
        tiny_sweep.path,
        tmp_path / "out",
        data=tiny_data,
        n_resamples=20,
        dpi=30,
        gallery=True,
        gallery_layers=layers,
        log=messages.append,
    ).read_text(encoding="utf-8")
    assert 'id="gallery"' in page and "Unit gallery" in page
    for layer in layers:
        assert (tmp_path / "out" / "figures" / f"gallery-{layer.replace('.', '-')}.png").is_file()
        assert f"{layer}: most and least selective units" in page
    # without the flag the section is left out
    plain = build_report(tiny_sweep.path, tmp_path / "plain", n_resamples=20, dpi=30).read_text(
        encoding="utf-8"
    )
    assert 'id="gallery"' not in plain
