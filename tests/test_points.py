"""Molmo point-text codec: exact formatting, lenient parsing, round trips."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from videomolmo.errors import ConfigError
from videomolmo.points import (
    NO_POINTS_TEXT,
    format_points,
    format_points_percent,
    parse_points,
    parse_points_percent,
    percent_to_pixel,
    pixel_to_percent,
)


def molmo_points_to_text(points, scale, label_text, alt_text):
    """Molmo's formatter as published in its data pipeline, restated here as the reference."""
    points = np.array(points, dtype=np.float64)
    points /= np.array(scale)[None, :]
    points = [[round(x, 1), round(y, 1)] for x, y in points]
    points.sort(key=lambda p: p[0] * 10000 + p[1])
    if len(points) == 1:
        x, y = points[0]
        return f'<point x="{x:0.1f}" y="{y:0.1f}" alt="{alt_text}">{label_text}</point>'
    parts = []
    for i, (x, y) in enumerate(points, start=1):
        parts.append(f'x{i}="{x:0.1f}"')
        parts.append(f'y{i}="{y:0.1f}"')
    return f'<points {" ".join(parts)} alt="{alt_text}">{label_text}</points>'


# ---------------------------------------------------------------- formatting


def test_single_point_exact_text():
    assert format_points([[100.0, 200.0]], 854, 480, "dog") == (
        '<point x="11.7" y="41.7" alt="dog">dog</point>'
    )


def test_multi_points_sorted_by_x_then_y():
    text = format_points([[100, 200], [50, 300], [50, 100]], 854, 480, "dogs")
    assert text == (
        '<points x1="5.9" y1="20.8" x2="5.9" y2="62.5" x3="11.7" y3="41.7" alt="dogs">dogs</points>'
    )


def test_none_text():
    assert format_points(np.zeros((0, 2)), 854, 480) == NO_POINTS_TEXT == "There are none."
    assert format_points([], 10, 10) == "There are none."


def test_alt_differs_from_label():
    assert format_points([[5, 5]], 10, 10, label="a cat", alt="cat") == (
        '<point x="50.0" y="50.0" alt="cat">a cat</point>'
    )


def test_integer_percent_option():
    assert format_points([[100, 200], [427, 240]], 854, 480, "x", decimals=0) == (
        '<points x1="12" y1="42" x2="50" y2="50" alt="x">x</points>'
    )
    assert np.allclose(parse_points_percent(format_points([[427, 240]], 854, 480, decimals=0)), [[50, 50]])


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 1, allow_nan=False), st.floats(0, 1, allow_nan=False)),
        min_size=1,
        max_size=8,
    ),
    st.integers(1, 4000),
    st.integers(1, 4000),
)
def test_matches_molmo_formatter_character_for_character(frac_points, w, h):
    px = np.array(frac_points) * np.array([w, h])
    assert format_points(px, w, h, "obj") == molmo_points_to_text(px, [w / 100, h / 100], "obj", "obj")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 2000)), min_size=1, max_size=6),
       st.sampled_from([100, 200, 854, 1000]))
def test_matches_molmo_on_rounding_ties(grid_points, size):
    # Percent values on a 0.05 grid are exactly the rounding ties where NumPy and Python differ.
    px = np.array(grid_points, dtype=np.float64) * 0.05 * size / 100
    assert format_points(px, size, size) == molmo_points_to_text(px, [size / 100, size / 100], "object", "object")


def test_rounds_like_molmo_numpy_floats():
    # Molmo rounds np.float64 values, whose round() is NumPy's (0.35 -> 0.4), not Python's (0.3).
    assert format_points([[0.35, 1.45]], 100, 100) == molmo_points_to_text(
        np.array([[0.35, 1.45]]), [1.0, 1.0], "object", "object"
    )
    assert format_points([[0.35, 1.45]], 100, 100) == '<point x="0.4" y="1.4" alt="object">object</point>'


def test_border_points_allowed_outside_rejected():
    assert format_points([[0, 0], [854, 480]], 854, 480) == (
        '<points x1="0.0" y1="0.0" x2="100.0" y2="100.0" alt="object">object</points>'
    )
    # A hair outside rounds to the border (and never prints "-0.0").
    assert format_points([[-1e-4, 0]], 854, 480) == '<point x="0.0" y="0.0" alt="object">object</point>'
    with pytest.raises(ValueError, match="inside the image"):
        format_points([[900, 10]], 854, 480)
    with pytest.raises(ValueError, match="finite"):
        format_points([[np.nan, 10]], 854, 480)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        format_points([[1, 2, 3]], 854, 480)


def test_bad_size_and_decimals():
    with pytest.raises(ConfigError):
        format_points([[1, 1]], 0, 480)
    with pytest.raises(ConfigError):
        parse_points("", 854, -1)
    with pytest.raises(ConfigError):
        format_points([[1, 1]], 10, 10, decimals=-1)


def test_percent_pixel_helpers():
    px = np.array([[427.0, 240.0], [0.0, 480.0]])
    pct = pixel_to_percent(px, 854, 480)
    assert np.allclose(pct, [[50, 50], [0, 100]])
    assert np.allclose(percent_to_pixel(pct, 854, 480), px)
    assert pixel_to_percent([], 854, 480).shape == (0, 2)
    assert percent_to_pixel([10, 20], 100, 200).tolist() == [[10.0, 40.0]]


# ---------------------------------------------------------------- parsing


def test_parse_both_forms_to_pixels():
    pts = parse_points('<point x="50.0" y="25.0" alt="a">a</point>', 200, 100)
    assert pts.dtype == np.float64 and pts.tolist() == [[100.0, 25.0]]
    pts = parse_points('<points x1="10" y1="20" x2="30.5" y2="40" alt="a">a</points>', 100, 100)
    assert pts.tolist() == [[10.0, 20.0], [30.5, 40.0]]


def test_parse_attribute_order_extra_text_and_several_tags():
    text = (
        'Sure! Here: <point alt="dog" y="20" x="10">dog</point> and also '
        "<points y2='4' x1='1' y1='2' x2='3' alt='dogs'>dogs</points>. Done."
    )
    assert parse_points_percent(text).tolist() == [[10, 20], [1, 2], [3, 4]]


def test_parse_ignores_label_and_alt_text():
    text = '<point x="6" y="5" alt="x=99 y=98">x="3" y="4"</point>'
    assert parse_points_percent(text).tolist() == [[6, 5]]


def test_parse_drops_out_of_range_and_nan():
    text = '<points x1="101" y1="2" x2="nan" y2="3" x3="4" y3="inf" x4="-1" y4="5" x5="7" y5="8">'
    assert parse_points_percent(text).tolist() == [[7, 8]]


def test_parse_truncated_keeps_complete_pairs_only():
    assert parse_points_percent('<points x1="10.0" y1="20.0" x2="30.0" y2="4').tolist() == [[10, 20]]
    assert parse_points_percent('<points x1="10.0" y1="20.0" x2="30.0"').tolist() == [[10, 20]]
    assert parse_points_percent('<point x="10.0" y="2').shape == (0, 2)
    assert parse_points_percent("<point x=10 y=2").shape == (0, 2)  # bare value cut at the end


def test_parse_none_and_garbage():
    for text in ["There are none.", "", "no idea", "<point>", "x=", None, b'<point x="1" y="2">']:
        out = parse_points_percent(text)
        assert out.shape[1] == 2 and out.dtype == np.float64
    assert parse_points_percent("There are none.").shape == (0, 2)
    assert parse_points_percent(b'<point x="1" y="2">').tolist() == [[1, 2]]


def test_parse_untagged_pairs_like_molmo_regex():
    assert parse_points_percent("the dog is at x=12, y=30 and x=1 y=2 ok").tolist() == [[12, 30], [1, 2]]


def test_parse_json_escaped_quotes():
    text = r'{"answer": "<point x=\"1.5\" y=\"2.5\" alt=\"a\">a</point>"}'
    assert parse_points_percent(text).tolist() == [[1.5, 2.5]]


def test_parse_count_answer():
    text = 'Counting the <points x1="1.0" y1="2.0" x2="3.0" y2="4.0" alt="cars">cars</points> shows a total of 2.'
    assert len(parse_points_percent(text)) == 2


# ---------------------------------------------------------------- properties

_points_pct = st.lists(
    st.tuples(st.floats(0, 100, allow_nan=False), st.floats(0, 100, allow_nan=False)),
    min_size=0,
    max_size=10,
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 1, allow_nan=False), st.floats(0, 1, allow_nan=False)),
        max_size=10,
    ),
    st.integers(1, 5000),
    st.integers(1, 5000),
    st.text(alphabet=st.characters(blacklist_characters='"<>'), max_size=12),
)
def test_round_trip_within_rounding(frac_points, w, h, label):
    px = np.array(frac_points, dtype=np.float64).reshape(-1, 2) * np.array([w, h])
    back = parse_points(format_points(px, w, h, label), w, h)
    assert back.shape == px.shape
    if len(px):
        # Sorted order in the text, so compare after sorting both the same way Molmo does.
        order = np.lexsort((np.round(px[:, 1] / h * 100, 1), np.round(px[:, 0] / w * 100, 1)))
        err = np.abs(back - px[order])
        assert (err[:, 0] <= 0.0005 * w + 1e-9).all()
        assert (err[:, 1] <= 0.0005 * h + 1e-9).all()


@settings(max_examples=150, deadline=None)
@given(_points_pct)
def test_output_is_sorted(pts):
    out = parse_points_percent(format_points_percent(pts))
    keys = [x * 10000 + y for x, y in out.tolist()]
    assert keys == sorted(keys)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_never_raises_on_any_text(text):
    out = parse_points_percent(text)
    assert out.ndim == 2 and out.shape[1] == 2
    assert np.isfinite(out).all() and (out >= 0).all() and (out <= 100).all()


@settings(max_examples=60, deadline=None)
@given(_points_pct.filter(lambda p: len(p) > 0), st.data())
def test_truncated_prefixes_never_raise_and_are_prefixes(pts, data):
    text = format_points_percent(pts)
    full = parse_points_percent(text)
    cut = data.draw(st.integers(0, len(text)))
    part = parse_points_percent(text[:cut])
    # What survives truncation is a prefix of the full answer, never a corrupted value.
    assert part.shape[1] == 2 and len(part) <= len(full)
    assert np.array_equal(part, full[: len(part)])
