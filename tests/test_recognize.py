"""verify (against a brute-force leave-one-out), recognize and search; real PETS09 crops and frames."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from _crops import FixedDetector, MeanColour, crop_of, write_frames, write_reference_crops
from _data import require_pets09
from _video import make_video

import daemon.recognize as rec
from daemon.boxes import box_iou
from daemon.config import EmbedderConfig, RecognitionConfig, RuntimeConfig, SSDLiteDetectorConfig
from daemon.detect import SSDLiteDetector
from daemon.embed import OnnxEmbedder
from daemon.embedding import EmbedOptions, embed
from daemon.enroll import enroll
from daemon.errors import DataError
from daemon.gallery import SIMILARITY_TOL, Gallery, meets
from daemon.motio import read_ground_truth, xywh_to_xyxy
from daemon.recognize import SearchOptions, recognize, search, verify

CPU = RuntimeConfig(providers=("CPUExecutionProvider",), intra_op_threads=1)


def _unit(v: list[float]) -> np.ndarray:
    a = np.asarray(v, np.float32)
    return a / np.linalg.norm(a)


def _clustered(seed: int, labels: int, per: list[int], noise: float, dim: int = 16) -> Gallery:
    rng = np.random.default_rng(seed)
    g = Gallery(dim, threshold=0.5)
    centres = rng.normal(size=(labels, dim))
    for i, n in enumerate(per):
        for _ in range(n):
            v = centres[i] + noise * rng.normal(size=dim)
            g.add(f"p{i}", v / np.linalg.norm(v))
    return g


def _brute(g: Gallery) -> list[tuple[bool | None, float | None, float | None]]:
    """(self_match, best_correct, best_wrong) per row, with plain loops."""
    e, labels = g.embeddings, g.labels
    out = []
    for i in range(len(labels)):
        others = [j for j in range(len(labels)) if j != i]
        sims = {j: float(e[i] @ e[j]) for j in others}
        correct = [sims[j] for j in others if labels[j] == labels[i]]
        wrong = [sims[j] for j in others if labels[j] != labels[i]]
        best = max(others, key=lambda j: sims[j]) if others else None
        self_match = None if not correct or best is None else labels[best] == labels[i]
        out.append((self_match, max(correct, default=None), max(wrong, default=None)))
    return out


def _brute_pairs(g: Gallery) -> dict[tuple[str, str], float]:
    e, labels = g.embeddings, g.labels
    pairs: dict[tuple[str, str], float] = {}
    for i, j in itertools.combinations(range(len(labels)), 2):
        if labels[i] != labels[j]:
            key = (min(labels[i], labels[j]), max(labels[i], labels[j]))
            pairs[key] = max(pairs.get(key, -2.0), float(e[i] @ e[j]))
    return pairs


# ---------------------------------------------------------------------------------------------- verify


@pytest.mark.parametrize("block", [rec.BLOCK_ELEMENTS, 7])
def test_verify_agrees_with_brute_force(monkeypatch: pytest.MonkeyPatch, block: int) -> None:
    monkeypatch.setattr(rec, "BLOCK_ELEMENTS", block)  # 7 values: one or two rows per block
    g = _clustered(1, 6, [3, 2, 4, 1, 2, 3], noise=1.2)
    report = verify(g, config=RecognitionConfig(confusable_pairs=4))
    for r, (self_match, correct, wrong) in zip(report.references, _brute(g), strict=True):
        assert r.self_match == self_match
        assert (
            r.best_correct == pytest.approx(correct, abs=1e-5)
            if correct is not None
            else r.best_correct is None
        )
        assert r.best_wrong == pytest.approx(wrong, abs=1e-5)
    expected = sorted(_brute_pairs(g).items(), key=lambda kv: -kv[1])[:4]
    got = [((p.label_a, p.label_b), p.similarity) for p in report.pairs]
    assert [k for k, _ in got] == [k for k, _ in expected]
    np.testing.assert_allclose([v for _, v in got], [v for _, v in expected], atol=1e-5)
    for p in report.pairs:  # the rows named are the pair's most similar rows
        assert float(g.embeddings[p.index_a] @ g.embeddings[p.index_b]) == pytest.approx(
            p.similarity, abs=1e-5
        )
    checked = [r for r in report.references if r.self_match is not None]
    assert report.checked == len(checked) == len(g) - 1
    assert report.rate == pytest.approx(sum(bool(r.self_match) for r in checked) / len(checked))


def test_verify_single_labels_mislabels_and_near_duplicates() -> None:
    g = Gallery(5, threshold=0.9)
    g.add("ann", _unit([1, 0, 0, 0, 0]))
    g.add("ann", _unit([1, 0.1, 0, 0, 0]))
    g.add("bob", _unit([0, 1, 0, 0, 0]))
    g.add("bob", _unit([1, 0.05, 0, 0, 0]))  # a photo of ann filed as bob
    g.add("cy", _unit([0, 0, 1, 0, 0]))  # one image only
    g.add("dee", _unit([0, 0, 0, 1, 0]))
    g.add("dee", _unit([0, 0, 0, 1, 0.1]))
    g.add("eve", _unit([0, 0, 0, 0, 1]))
    g.add("eve", _unit([0, 0, 0.1, 0, 1]))
    report = verify(g)
    by_index = {r.index: r for r in report.references}
    assert by_index[4].self_match is None and by_index[4].margin is None
    assert by_index[3].self_match is False and by_index[3].best_label == "ann"
    labels = {lc.label: lc for lc in report.labels}
    assert labels["cy"].rate is None and labels["cy"].checked == 0
    assert labels["bob"].matched < labels["bob"].checked
    advice = " | ".join(report.advice)
    assert "single reference ('cy')" in advice
    assert "row 3 of 'bob' is closer to 'ann'" in advice
    assert by_index[3].margin is not None and by_index[3].margin < 0  # closer to a wrong label
    assert "a query may match the wrong person" in advice
    assert report.pairs[0].label_a == "ann" and report.pairs[0].label_b == "bob"
    assert report.suggested_threshold is None  # a wrong match beats a correct one: nothing separates them
    text = report.text()
    assert "single" in text and "ann / bob" in text
    data = report.as_dict()
    assert json.loads(json.dumps(data))["per_reference"][3]["self_match"] is False


def test_verify_low_rate_blames_the_embedder() -> None:
    g = Gallery(3)
    rows: list[tuple[str, list[float]]] = [
        ("ann", [1, 0, 0]),
        ("bob", [1, 0.01, 0]),
        ("ann", [0, 1, 0]),
        ("bob", [0, 1, 0.01]),
    ]
    for label, v in rows:
        g.add(label, _unit(v))
    report = verify(g)
    assert report.rate == 0.0
    assert any("does not tell these people apart" in a for a in report.advice)


def test_verify_sound_gallery_suggests_a_threshold() -> None:
    g = _clustered(5, 4, [3, 3, 3, 3], noise=0.05)
    report = verify(g)
    assert report.rate == 1.0
    assert report.suggested_threshold is not None
    wrong = max(r.best_wrong for r in report.references if r.best_wrong is not None)
    correct = min(r.best_correct for r in report.references if r.best_correct is not None)
    assert wrong < report.suggested_threshold < correct
    assert any("looks sound" in a or "threshold" in a for a in report.advice)


def test_verify_near_duplicate_margin_advice() -> None:
    g = Gallery(3, threshold=0.999)
    g.add("ann", _unit([1, 0, 0]))
    g.add("ann", _unit([1, 0.2, 0]))
    g.add("bob", _unit([1, 0.25, 0.01]))
    g.add("bob", _unit([1, 0.5, 0]))
    report = verify(g, config=RecognitionConfig(margin_warn=0.05))
    margins = [r.margin for r in report.references if r.margin is not None]
    assert min(margins) < 0.05
    assert any("near-duplicates to the embedder" in a for a in report.advice)


def test_verify_empty_and_one_label() -> None:
    with pytest.raises(DataError, match="empty"):
        verify(Gallery(4))
    g = Gallery(2)
    g.add("solo", _unit([1, 0]))
    g.add("solo", _unit([1, 1]))
    report = verify(g)
    assert report.rate == 1.0 and report.pairs == () and report.references[0].best_wrong is None


def test_verify_counts_rows_exactly_copy_similarity_apart_as_copies_and_no_row_its_own() -> None:
    # rows of one label "at least COPY_SIMILARITY similar" are one image twice: exactly at it they are copies
    # (left out of each other's check: ann is then unchecked); a row is never counted a copy of itself (bob's
    # single row: 0). Mutants taking '>', and no longer leaving each row out of its own check (which the copy
    # rule then hid, but for the count), passed every test where the models were not fetched.
    c = np.float32(rec.COPY_SIMILARITY)
    g = Gallery(2)
    for label, v in [("ann", [1, 0]), ("ann", [c, np.sqrt(1 - c * c)]), ("bob", [0, 1])]:
        g.add(label, np.asarray(v, np.float32))
    assert float(g.embeddings[0] @ g.embeddings[1]) == float(c)
    report = verify(g)
    assert [r.copies for r in report.references] == [1, 1, 0]
    assert [r.self_match for r in report.references] == [None, None, None]


def test_verify_lists_every_pair_of_labels_up_to_confusable_pairs() -> None:
    # two labels are one pair to list (a mutant listing pairs only from three labels on passed every test)
    g = Gallery(3)
    s = float(np.sqrt(0.75))
    for label, v in [("ann", [1, 0, 0]), ("ann", [0.5, s, 0]), ("bob", [0, 0, 1]), ("bob", [0.5, 0, s])]:
        g.add(label, np.asarray(v, np.float32))
    (pair,) = verify(g).pairs  # cross similarities 0, 0.5 (rows 0 and 3), 0, 0.25
    assert (pair.label_a, pair.label_b, pair.similarity) == ("ann", "bob", 0.5)
    assert (pair.index_a, pair.index_b) == (0, 3)
    # a pair is listed though neither label is the other's closest: ann and bob are each closest to cy
    # (0.5), to each other 0 (a mutant counting only each row's closest other label passed every test)
    three = Gallery(3)
    half = float(np.sqrt(0.5))
    for label, v in [("ann", [1, 0, 0]), ("bob", [0, 1, 0]), ("cy", [0.5, 0.5, half])]:
        three.add(label, np.asarray(v, np.float32))
    pairs = verify(three, config=RecognitionConfig(confusable_pairs=3)).pairs
    assert [(p.label_a, p.label_b, p.similarity) for p in pairs] == [
        ("ann", "cy", 0.5),
        ("bob", "cy", 0.5),
        ("ann", "bob", 0.0),
    ]


def _ref(index: int, label: str, correct: float, wrong: float, wrong_label: str) -> rec.ReferenceCheck:
    """A checked reference whose best correct and best wrong match are ``correct`` and ``wrong``."""
    best = label if correct >= wrong else wrong_label
    return rec.ReferenceCheck(
        index, label, best == label, best, max(correct, wrong), correct, wrong, wrong_label
    )


def test_verify_margin_advice_takes_zero_and_leaves_out_the_bound_and_the_failures() -> None:
    # near-duplicate advice is for 0 <= margin < margin_warn: a margin of exactly 0 (a tie, still a self-match)
    # is warned of, one of exactly margin_warn is not, and a negative one is a failure, said by its own advice
    # (mutants taking 0 < m, m <= margin_warn, or dropping 0 <= m passed every test)
    refs = (
        _ref(0, "ann", 0.75, 0.75, "bob"),  # margin +0.000
        _ref(1, "cy", 0.75, 0.5, "dee"),  # margin +0.250, exactly margin_warn
        _ref(2, "eve", 0.5, 0.75, "fay"),  # margin -0.250: closer to fay
    )
    report = rec.VerifyReport(refs, (), (), threshold=0.25, margin_warn=0.25)
    assert [r.margin for r in refs] == [0.0, 0.25, -0.25]
    near = [a for a in rec.advise(report) if "near-duplicates" in a]
    assert len(near) == 1 and near[0].startswith("margin < 0.25 between 'ann' and 'bob' (+0.000)")
    assert any("row 2 of 'eve' is closer to 'fay'" in a for a in rec.advise(report))


def test_verify_threshold_advice_at_exactly_the_threshold() -> None:
    # a gallery search matches at similarity >= threshold, so a reference matching its own label at exactly
    # the threshold is recognised (no 'below the threshold' advice), and two labels whose closest references
    # are exactly at it do match the wrong person (advice); a wrong match as high as the lowest correct one
    # leaves no threshold that separates them (mutants taking <=, >, and > in suggested_threshold passed)
    refs = (_ref(0, "ann", 0.5, 0.25, "bob"), _ref(1, "bob", 0.75, 0.5, "ann"))
    pairs = (rec.ConfusablePair("ann", "bob", 0.5, 0, 1),)
    report = rec.VerifyReport(refs, (), pairs, threshold=0.5, margin_warn=0.05)
    advice = " | ".join(rec.advise(report))
    assert "below the threshold" not in advice
    assert "different labels reach the threshold 0.500 ('ann'/'bob' 0.500)" in advice
    assert report.suggested_threshold is None and "would separate" not in advice
    apart = rec.VerifyReport((refs[0], _ref(1, "bob", 0.75, 0.25, "ann")), (), (), 0.5, 0.05)
    assert apart.suggested_threshold == 0.375  # midway between 0.25 and 0.5


def test_verify_threshold_advice_compares_as_the_gallery_matches() -> None:
    """Regression: a gallery match needs similarity >= threshold less SIMILARITY_TOL (66388a6: float32 rounding),
    but verify's threshold advice compared without it: a reference that search matches to its own label at the
    threshold was said to match it 'only below the threshold', two labels that search confuses at it were not
    said to reach it, and a threshold under 2 SIMILARITY_TOL above the highest wrong match was offered as one
    that separates every correct from every wrong match (search would match that wrong one)."""
    t = 0.5 + SIMILARITY_TOL / 2
    g = Gallery(2, threshold=t)
    ann, other, bob = (
        _unit([1, 0]),
        np.array([0.5, np.sqrt(0.75)], np.float32),
        np.array([0.5, -np.sqrt(0.75)]),
    )
    g.add("ann", ann)
    g.add("ann", other)
    g.add("bob", bob)
    assert [(m.label, m.index) for m in g.search(other, k=2).matches] == [("ann", 1), ("ann", 0)]
    assert [(m.label, m.index) for m in g.search(bob, k=2).matches] == [("bob", 2), ("ann", 0)]
    report = verify(g)
    assert min(r.best_correct for r in report.references if r.best_correct is not None) == 0.5
    advice = " | ".join(report.advice)
    assert "below the threshold" not in advice, advice  # before: 'ann' only below it
    assert f"different labels reach the threshold {t:.3f} ('ann'/'bob' 0.500)" in advice, (
        advice
    )  # before: none
    tie = rec.VerifyReport(
        (_ref(0, "ann", 0.5, 0.5 - SIMILARITY_TOL, "bob"), _ref(1, "bob", 0.75, 0.25, "ann")),
        (),
        (),
        0.5,
        0.05,
    )
    assert tie.suggested_threshold is None  # before: 0.5 - SIMILARITY_TOL / 2, which matches the wrong one
    apart = rec.VerifyReport(
        (_ref(0, "ann", 0.5, 0.5 - 3 * SIMILARITY_TOL, "bob"), _ref(1, "bob", 0.75, 0.25, "ann")),
        (),
        (),
        0.5,
        0.05,
    )
    assert apart.suggested_threshold == 0.5 - 1.5 * SIMILARITY_TOL


def test_verify_of_a_sound_gallery_says_only_that() -> None:
    # the threshold already separates every correct from every wrong match: the advice says the gallery is
    # sound, and no other threshold (a mutant offering the suggested threshold whatever the advice passed)
    refs = (_ref(0, "ann", 0.75, 0.25, "bob"), _ref(1, "bob", 0.75, 0.25, "ann"))
    pairs = (rec.ConfusablePair("ann", "bob", 0.25, 0, 1),)
    report = rec.VerifyReport(refs, (), pairs, threshold=0.5, margin_warn=0.05)
    assert report.suggested_threshold == 0.5
    assert rec.advise(report) == (
        "every checked reference matches its own label, worst margin +0.500: the gallery looks sound",
    )


@pytest.mark.parametrize("failing", [5, 6])
def test_verify_advice_names_at_most_five_failures_and_says_how_many_more(failing: int) -> None:
    # MAX_ADVICE_ITEMS (5) failures are each named, and only past it a line says how many more (mutants
    # naming 4, or saying '... and 0 more' at exactly 5, passed every test)
    bad = [_ref(i, f"f{i}", 0.25, 0.5, f"g{i}") for i in range(failing)]  # each closer to g_i
    good = [_ref(failing + i, f"g{i}", 0.75, 0.5, f"f{i}") for i in range(failing)]  # rate 0.5: not low
    advice = rec.advise(rec.VerifyReport((*bad, *good), (), (), threshold=0.1, margin_warn=0.05))
    named = [a for a in advice if "is closer to" in a]
    assert [a.split(" is closer")[0] for a in named] == [f"reference row {i} of 'f{i}'" for i in range(5)]
    more = [a for a in advice if a.startswith("... and")]
    assert more == ([] if failing == 5 else ["... and 1 more references closer to another label (--json)"])


@pytest.mark.parametrize("singles", [5, 6])
def test_verify_advice_names_at_most_five_labels_and_says_how_many_more(singles: int) -> None:
    labels = tuple(rec.LabelCheck(f"s{i}", 1, 0, 0, None) for i in range(singles))
    (advice,) = rec.advise(rec.VerifyReport((), labels, (), threshold=0.5, margin_warn=0.05))
    names = "'s0', 's1', 's2', 's3', 's4'" + ("" if singles == 5 else " and 1 more")
    assert advice.startswith(f"{singles} label(s) have a single reference ({names}) and cannot self-match")


def test_verify_advice_lists_the_five_worst_margins_and_every_pair_over_the_threshold() -> None:
    # near-duplicate pairs: the five lowest margins (a pair's lowest of its references), lowest first; pairs
    # at or over the threshold: each named (mutants listing the highest margins, a pair's last margin, or the
    # first pair alone passed every test)
    margins = [0.0, 0.01, 0.02, 0.03, 0.04, 0.045]
    refs = [_ref(i, f"a{i}", 0.5, 0.5 - m, f"b{i}") for i, m in enumerate(margins)]
    refs.append(_ref(6, "a0", 0.5, 0.47, "b0"))  # a0/b0's other reference: margin 0.03
    pairs = (rec.ConfusablePair("a0", "b0", 0.6, 0, 9), rec.ConfusablePair("a1", "b1", 0.5, 1, 9))
    advice = rec.advise(rec.VerifyReport(tuple(refs), (), pairs, threshold=0.5, margin_warn=0.05))
    near = [a.split(":")[0] for a in advice if "near-duplicates" in a]
    assert near == [f"margin < 0.05 between 'a{i}' and 'b{i}' (+{m:.3f})" for i, m in enumerate(margins[:5])]
    assert any("reach the threshold 0.500 ('a0'/'b0' 0.600, 'a1'/'b1' 0.500)" in a for a in advice)


def test_verify_warns_of_labels_reaching_the_threshold_however_few_pairs_it_lists() -> None:
    """`verify --pairs N` (confusable_pairs) sets how many confusable pairs the report lists, but the advice
    that different labels reach the threshold was drawn from that list alone: --pairs 0 dropped it (a gallery
    where every label matched the others at 0.8, threshold 0.5, got no word of it) and --pairs 1 named one pair
    of three; the advice names the pairs at or over the threshold (up to MAX_ADVICE_ITEMS) whatever is listed."""
    g = Gallery(3, threshold=0.5)
    rows = {"ann": [[1.0, 0.0, 0.0], [0.9, 0.1, 0.0]], "bob": [[0.8, 0.6, 0.0], [0.7, 0.7, 0.0]]}
    rows["cat"] = [[0.8, 0.0, 0.6], [0.7, 0.0, 0.7]]
    for label, vs in rows.items():
        for v in vs:
            g.add(label, v)
    every = verify(g, config=RecognitionConfig(confusable_pairs=3))
    (reach,) = [a for a in every.advice if "different labels reach the threshold" in a]
    assert reach.count("/") == 3, reach
    for shown in (0, 1):
        report = verify(g, config=RecognitionConfig(confusable_pairs=shown))
        assert len(report.pairs) == shown
        assert reach in report.advice, report.advice


def test_verify_worst_margin_of_a_label_is_its_lowest() -> None:
    g = _clustered(3, 3, [4, 4, 4], noise=0.6)
    report = verify(g)
    for lc in report.labels:
        margins = [r.margin for r in report.references if r.label == lc.label and r.margin is not None]
        assert len(set(margins)) > 1 and lc.worst_margin == min(margins)


# ---------------------------------------------------------------------------------------------- recognise


def _colour_gallery() -> Gallery:
    g = Gallery(MeanColour.dim, threshold=0.5)
    for label, colour in [("red", (0, 0, 250)), ("green", (0, 250, 0)), ("blue", (250, 0, 0))]:
        crop = np.full((30, 10, 3), colour, np.uint8)
        g.add(label, embed(MeanColour(), crop).embedding)
    return g


def test_recognize_top_k_threshold_and_boxes() -> None:
    g = _colour_gallery()
    img = np.zeros((30, 20, 3), np.uint8)
    img[:, :10] = (0, 0, 240)
    img[:, 10:] = (230, 10, 0)
    report = recognize(MeanColour(), g, img, boxes=np.array([[0, 0, 10, 30], [10, 0, 20, 30]]), k=2)
    assert [r.best.label for r in report.recognitions if r.best] == ["red", "blue"]
    assert all(len(r.matches) <= 2 for r in report.recognitions)
    strict = recognize(MeanColour(), g, img, boxes=np.array([[0, 0, 10, 30]]), k=3, threshold=0.9999)
    assert all(m.similarity >= 0.9999 for m in strict.recognitions[0].matches)
    assert "red" in report.text() and report.as_dict()["queries"][0]["matches"][0]["label"] == "red"


def test_recognize_reports_a_given_threshold_of_zero() -> None:
    # the threshold given is the one used and reported, 0.0 too (a mutant reporting the gallery's 0.5 for a
    # given 0.0, 'threshold or the gallery's', passed every test): green is 0.002 from red and blue
    green = np.full((30, 10, 3), (0, 250, 0), np.uint8)
    report = recognize(MeanColour(), _colour_gallery(), green, k=3, threshold=0.0)
    assert report.threshold == 0.0 and report.as_dict()["threshold"] == 0.0
    assert len(report.recognitions[0].matches) == 3


def test_recognize_detector_and_dim_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), np.full((30, 10, 3), (0, 250, 0), np.uint8))
    det = FixedDetector([[0, 0, 10, 30]], [0.7])
    report = recognize(MeanColour(), _colour_gallery(), [path], options=EmbedOptions(detector=det))
    best = report.recognitions[0].best
    assert best is not None and best.label == "green" and report.recognitions[0].crop.source == str(path)
    with pytest.raises(DataError, match="8-d"):
        recognize(MeanColour(), Gallery(8), path)
    with pytest.raises(DataError, match=r"cannot decode image .*bad\.png"):
        (tmp_path / "bad.png").write_bytes(b"nope")
        recognize(MeanColour(), _colour_gallery(), tmp_path / "bad.png")


def test_recognize_given_a_video_says_it_is_one_as_the_cli_does(tmp_path: Path) -> None:
    """The CLI's recognize says a video is one and which commands take it; the API's said 'cannot decode image
    clip.mp4 (corrupt, empty or not an image)' for a list of paths, and for one path alone matched some of its
    frames as if they were photos. Both say what the CLI says (naming the gallery's file where it has one)."""
    clip = make_video(tmp_path / "clip.mp4", frames=3, size=(160, 120), people=1)
    for query in (clip.path, [clip.path], str(clip.path)):
        with pytest.raises(DataError) as e:
            recognize(MeanColour(), _colour_gallery(), query)
        assert str(e.value) == (
            f"{clip.path} is a video: recognize takes images (crops, or photos with --detect). To find the gallery's "
            f"people in it: reid-daemon search {clip.path} --gallery GALLERY --label NAME; to track everyone in it: "
            f"reid-daemon run --source {clip.path}"
        )
    saved = tmp_path / "people.npz"
    _colour_gallery().save(saved)
    with pytest.raises(DataError, match=f"--gallery {saved} --label NAME"):
        recognize(MeanColour(), Gallery.load(saved), [clip.path])


# ---------------------------------------------------------------------------------------------- search


def _query(colour: tuple[int, int, int]) -> np.ndarray:
    return embed(MeanColour(), np.full((30, 10, 3), colour, np.uint8)).embeddings


def test_search_folder_ranks_hits_and_writes_them(tmp_path: Path) -> None:
    target = tmp_path / "imgs"
    target.mkdir()
    for i, shade in enumerate([250, 120, 0]):
        img = np.zeros((40, 40, 3), np.uint8)
        img[:, :20] = (0, 0, shade)
        img[:, 20:] = (200, 200, 200)
        cv2.imwrite(str(target / f"img_{i}.png"), img)
    (target / "zz_bad.png").write_bytes(b"broken")
    det = FixedDetector([[0, 0, 20, 40], [20, 0, 40, 40]], [0.9, 0.8])
    opts = SearchOptions(threshold=0.0, limit=4, out=tmp_path / "hits")
    report = search(_query((0, 0, 250)), target, MeanColour(), det, opts)
    sims = [h.similarity for h in report.hits]
    assert len(report.hits) == 4 and sims == sorted(sims, reverse=True)
    assert report.hits[0].source.endswith("img_0.png") and report.hits[0].box == (0.0, 0.0, 20.0, 40.0)
    assert report.scanned == 3 and report.people == 6 and all(h.frame == -1 for h in report.hits)
    assert report.skipped and "zz_bad.png" in report.skipped[0][0]
    jpgs = sorted((tmp_path / "hits").glob("*.jpg"))
    assert len(jpgs) == 4 and jpgs[0].name.startswith("001_")
    assert cv2.imread(str(jpgs[0])) is not None
    index = json.loads((tmp_path / "hits" / "hits.json").read_text())
    assert [h["rank"] for h in index] == [1, 2, 3, 4]
    high = search(_query((0, 0, 250)), target, MeanColour(), det, SearchOptions(threshold=0.999, limit=10))
    assert all(h.similarity >= 0.999 for h in high.hits) and len(high.hits) < 4


RED, BLUE, GREY = (0, 0, 250), (250, 0, 0), (200, 200, 200)
HALVES = FixedDetector([[0, 0, 20, 40], [20, 0, 40, 40]], [0.9, 0.8])  # the left and the right person


def _two_people(folder: Path, lefts: list[tuple[int, int, int]], right: tuple[int, int, int]) -> Path:
    """Images img_0.png, img_1.png ... of two people: the left half in ``lefts[i]``, the right in ``right``."""
    folder.mkdir()
    for i, colour in enumerate(lefts):
        img = np.zeros((40, 40, 3), np.uint8)
        img[:, :20], img[:, 20:] = colour, right
        cv2.imwrite(str(folder / f"img_{i}.png"), img)
    return folder


def test_search_takes_the_best_over_the_query_rows(tmp_path: Path) -> None:
    # "a person's similarity is the best over them" (the query's views): a red and a blue view find the red
    # and the blue person alike, each at its own view's 1.0 (red . blue is 0.002; mutants taking the mean over
    # the rows, or the first row alone, passed every test)
    target = _two_people(tmp_path / "imgs", [RED, RED], BLUE)
    views = np.vstack([_query(RED), _query(BLUE)])
    report = search(views, target, MeanColour(), HALVES, SearchOptions(threshold=0.99, limit=10))
    assert sorted((Path(h.source).name, h.box[0]) for h in report.hits) == [
        ("img_0.png", 0.0),
        ("img_0.png", 20.0),
        ("img_1.png", 0.0),
        ("img_1.png", 20.0),
    ]
    assert all(h.similarity == pytest.approx(1.0, abs=1e-5) for h in report.hits)


def test_search_takes_a_hit_as_the_gallery_matches(tmp_path: Path) -> None:
    # Regression: search kept its own copy of the gallery's comparison (sims >= threshold - SIMILARITY_TOL) on
    # float32 similarities, where numpy compares a float32 array with a Python float in float32: the bound was
    # rounded to float32, so a person up to half a float32 step under it, whom the gallery's meets does not
    # match, was a hit, reported under the threshold less SIMILARITY_TOL. It compares with gallery.meets.
    target = _two_people(tmp_path / "imgs", [(0, 60, 250)], GREY)  # near red, not red
    query = _query(RED)
    every = search(query, target, MeanColour(), HALVES, SearchOptions(threshold=-1.0, limit=10))
    (exact,) = {h.similarity for h in every.hits if h.box[0] == 0.0}
    step = float(np.spacing(np.float32(exact)))
    over = exact + SIMILARITY_TOL + step / 4  # the person a quarter of a float32 step under the bound
    assert not meets(exact, over) and np.float32(over - SIMILARITY_TOL) == np.float32(exact)
    found = search(query, target, MeanColour(), HALVES, SearchOptions(threshold=over, limit=10))
    assert [h.similarity for h in found.hits if h.box[0] == 0.0] == []  # before: [exact]
    at = exact + SIMILARITY_TOL  # within the tolerance: a hit, as the gallery matches it
    assert meets(exact, at)
    found = search(query, target, MeanColour(), HALVES, SearchOptions(threshold=at, limit=10))
    assert [h.similarity for h in found.hits if h.box[0] == 0.0] == [exact]


def test_search_keeps_a_hit_exactly_at_the_threshold_and_equal_hits_in_scan_order(tmp_path: Path) -> None:
    # a person whose similarity is exactly the threshold is a hit (>=; a mutant taking '>' passed every test);
    # equal hits keep the scan order: the earlier images are kept when the limit is reached, and listed first
    # (mutants replacing an equal hit, or listing equal hits last found first, passed)
    target = _two_people(tmp_path / "imgs", [RED, RED, RED], GREY)  # three equal red people
    query = _query(RED)
    every = search(query, target, MeanColour(), HALVES, SearchOptions(threshold=-1.0, limit=10))
    red = {h.similarity for h in every.hits if h.box[0] == 0.0}
    (exact,) = red  # the same pixels: the same similarity
    at = search(query, target, MeanColour(), HALVES, SearchOptions(threshold=exact, limit=10))
    assert [(Path(h.source).name, h.similarity) for h in at.hits] == [
        ("img_0.png", exact),
        ("img_1.png", exact),
        ("img_2.png", exact),
    ]
    two = search(query, target, MeanColour(), HALVES, SearchOptions(threshold=exact, limit=2))
    assert [Path(h.source).name for h in two.hits] == ["img_0.png", "img_1.png"]


def test_search_keeps_the_earlier_of_equal_hits_when_a_better_one_comes_after(tmp_path: Path) -> None:
    # Regression: the hits' heap put the earliest of equal hits at its bottom, so a better hit found later
    # evicted it and kept the later one, where an equal hit found later was refused: of two equal people the
    # one kept depended on whether the better one came between them or after (limit 2: img_1 here, img_0
    # when the best came first). The earlier is kept either way.
    dim_red = (0, 0, 200)  # a little under the query's red: equal to each other, below img_2's exact red
    for name, lefts in {"after": [dim_red, dim_red, RED], "between": [dim_red, RED, dim_red]}.items():
        target = _two_people(tmp_path / name, lefts, GREY)
        two = search(_query(RED), target, MeanColour(), HALVES, SearchOptions(threshold=0.9, limit=2))
        best = "img_2.png" if name == "after" else "img_1.png"
        assert [Path(h.source).name for h in two.hits] == [best, "img_0.png"], name


def test_search_folder_names_the_files_that_are_not_images(tmp_path: Path) -> None:
    # Regression: a folder's .tiff / .gif snapshots (and any other file) were left out of the search without
    # a word: '2 images or frames' of a folder of four files.
    target = tmp_path / "imgs"
    target.mkdir()
    image = np.full((40, 40, 3), 200, np.uint8)
    for name in ("a.png", "b.jpg", "snap.tiff", "clip.gif"):
        cv2.imwrite(str(target / name), image) if name != "clip.gif" else (target / name).write_bytes(
            b"GIF89a"
        )
    (target / "notes").write_text("x")
    det = FixedDetector([[0, 0, 20, 40]], [0.9])
    report = search(_query((200, 200, 200)), target, MeanColour(), det, SearchOptions(threshold=0.0, limit=5))
    assert report.scanned == 2
    assert report.skipped == (
        (str(target / "clip.gif"), "not an image file (.gif)"),
        (str(target / "notes"), "not an image file (no extension)"),
        (str(target / "snap.tiff"), "not an image file (.tiff)"),
    )
    assert f"skipped {target / 'snap.tiff'}: not an image file (.tiff)" in report.text()


def test_search_video_reports_frames(tmp_path: Path) -> None:
    clip = make_video(tmp_path / "clip.mp4", frames=9, size=(64, 48), people=1)
    det = FixedDetector([[0, 0, 32, 48]], [0.8])
    report = search(_query((128, 128, 128)), clip.path, MeanColour(), det, SearchOptions(-1.0, 10, every=4))
    assert sorted(h.frame for h in report.hits) == [0, 4, 8]
    assert "frame" in report.text()


def test_search_options_take_the_configs_defaults(tmp_path: Path) -> None:
    # SearchOptions read every frame of a video (every=1) where RecognitionConfig says search reads every
    # video_every-th (5), and copied crop_context (0.25): defaults of their own beside the config's
    cfg = RecognitionConfig()
    clip = make_video(tmp_path / "clip.mp4", frames=2 * cfg.video_every + 1, size=(64, 48), people=1)
    det = FixedDetector([[0, 0, 32, 48]], [0.8])
    opts = SearchOptions(-1.0, 10)
    report = search(_query((128, 128, 128)), clip.path, MeanColour(), det, opts)
    assert sorted(h.frame for h in report.hits) == [0, cfg.video_every, 2 * cfg.video_every]
    assert opts.crop_context == cfg.crop_context


def test_search_bad_inputs(tmp_path: Path) -> None:
    det = FixedDetector([], [])
    with pytest.raises(DataError, match="not found"):
        search(_query((1, 2, 3)), tmp_path / "none", MeanColour(), det, SearchOptions(0.5, 5))
    with pytest.raises(DataError, match="8-d"):
        search(np.ones((1, 8), np.float32), tmp_path, MeanColour(), det, SearchOptions(0.5, 5))
    with pytest.raises(ValueError, match="zero vector"):
        search(np.zeros((1, 4), np.float32), tmp_path, MeanColour(), det, SearchOptions(0.5, 5))


def test_search_out_that_is_a_file_is_a_data_error(tmp_path: Path) -> None:
    # Regression: `search --out` naming an existing file ended in a FileExistsError traceback.
    (tmp_path / "taken").touch()
    with pytest.raises(DataError, match="cannot write the hits into"):
        rec.write_hits([], tmp_path / "taken")


def test_search_out_removes_only_the_files_an_earlier_search_wrote(tmp_path: Path) -> None:
    # Regression: search --out DIR deleted every file in DIR named like a hit crop (001_0.999_x.jpg), a user's
    # own photo included; it removes what the earlier search listed in its manifest, unchanged since, only
    target = _two_people(tmp_path / "imgs", [RED, RED, BLUE], GREY)
    out = tmp_path / "hits"
    out.mkdir()
    mine = out / "001_0.999_holiday.jpg"  # a name like a crop's
    mine.write_bytes(b"the user's photo")
    opts = SearchOptions(threshold=0.9, limit=3, out=out)
    first = search(_query(RED), target, MeanColour(), HALVES, opts)
    assert len(first.hits) == 2 and mine.read_bytes() == b"the user's photo"
    crops = sorted(p.name for p in out.glob("0*.jpg") if p != mine)
    assert len(crops) == 2
    # the user keeps one of the crops by writing over it: it is theirs now
    kept = out / crops[1]
    kept.write_bytes(b"edited by the user")
    second = search(_query(BLUE), target, MeanColour(), HALVES, replace(opts, limit=1))
    assert len(second.hits) == 1
    assert mine.read_bytes() == b"the user's photo" and kept.read_bytes() == b"edited by the user"
    assert not (out / crops[0]).exists()  # the earlier search's crop, unchanged: removed
    index = json.loads((out / "hits.json").read_text())
    assert [h["file"] for h in index] == [p.name for p in second.written if p.suffix == ".jpg"]
    assert sorted(p.name for p in out.glob("*.jpg")) == sorted([mine.name, kept.name, index[0]["file"]])


def test_search_out_names_the_crops_of_an_earlier_versions_search_it_leaves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A search of a version before the manifest listed no digest of its crops, so the next search leaves them
    (one may be a user's file by now) without a word, and once its hits.json is replaced nothing names them
    any more; the search says which stay, and writes its own beside them."""
    target = _two_people(tmp_path / "imgs", [RED], GREY)
    out = tmp_path / "hits"
    first = search(_query(RED), target, MeanColour(), HALVES, SearchOptions(0.9, 1, out=out))
    crop = first.written[0]
    (out / rec.SEARCH_MANIFEST).unlink()  # as an earlier version left the folder: crops and hits.json
    again = search(_query(RED), target, MeanColour(), HALVES, SearchOptions(0.9, 1, out=out))
    assert crop.is_file() and again.written[0].name == crop.name.replace(".jpg", "_2.jpg")
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert said == [
        f"{out} holds the hits of a search of an earlier version, which listed no digest of its crops: "
        f"{crop.name} stay (remove them by hand if they are not yours to keep); this search's crops are "
        "written beside them"
    ], said
    caplog.clear()
    search(_query(RED), target, MeanColour(), HALVES, SearchOptions(0.9, 1, out=out))  # listed now: quiet
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_search_out_never_writes_over_a_users_file(tmp_path: Path) -> None:
    target = _two_people(tmp_path / "imgs", [RED], GREY)
    out = tmp_path / "hits"
    first = search(_query(RED), target, MeanColour(), HALVES, SearchOptions(0.9, 1, out=out))
    name = first.written[0].name
    (out / rec.SEARCH_MANIFEST).unlink()  # the crop is not known as a search's any more: the user's
    again = search(_query(RED), target, MeanColour(), HALVES, SearchOptions(0.9, 1, out=out))
    assert (out / name).is_file() and again.written[0].name == name.replace(".jpg", "_2.jpg")
    (out / "hits.json").write_text("my notes")  # a user's hits.json: refused before the search, kept
    with pytest.raises(DataError, match=r"hits\.json was not written by a search"):
        search(_query(RED), target, MeanColour(), HALVES, SearchOptions(0.9, 1, out=out))
    assert (out / "hits.json").read_text() == "my notes"


# ---------------------------------------------------------------------------------------------- real


@pytest.fixture(scope="module")
def mobilenet(mobilenet_model: Path, tmp_path_factory: pytest.TempPathFactory) -> OnnxEmbedder:
    return OnnxEmbedder(EmbedderConfig(model=str(mobilenet_model)), CPU, tmp_path_factory.mktemp("m"))


def test_real_verify_matches_brute_force(mobilenet: OnnxEmbedder, tmp_path: Path) -> None:
    write_reference_crops(tmp_path / "refs", identities=8, per_identity=3)
    g = Gallery(mobilenet.dim, threshold=0.5)
    enroll(tmp_path / "refs", mobilenet, g)
    report = verify(g)
    brute = _brute(g)
    assert [r.self_match for r in report.references] == [b[0] for b in brute]
    assert report.checked == 24 and report.rate is not None
    assert report.rate > 1 / 8  # well above chance among 8 people
    assert report.advice and len(report.labels) == 8


def test_real_verify_of_references_enrolled_twice_is_that_of_once(
    mobilenet: OnnxEmbedder, tmp_path: Path
) -> None:
    """enroll --append of a folder already in the gallery (as enroll did before it skipped copies: a gallery of
    then, or rows added otherwise): each reference matched its own copy, so verify said 100 % self-match and
    offered a threshold that 'separates' the people; copies now check nothing."""
    write_reference_crops(tmp_path / "refs", identities=8, per_identity=3)
    once, twice = Gallery(mobilenet.dim), Gallery(mobilenet.dim)
    enroll(tmp_path / "refs", mobilenet, once)
    twice.add_many(once.labels * 2, np.concatenate([once.embeddings, once.embeddings]))
    a, b = verify(once), verify(twice)
    assert a.rate is not None and a.rate < 1.0
    assert b.rate == a.rate and b.suggested_threshold == a.suggested_threshold
    assert [r.self_match for r in b.references] == [r.self_match for r in a.references] * 2
    assert [r.copies for r in b.references] == [1] * 48 and not any(r.copies for r in a.references)
    assert any("48 reference(s)" in x and "enrolled twice" in x for x in b.advice)


def test_real_recognize_names_the_images_with_no_person(
    mobilenet: OnnxEmbedder, ssdlite_model: Path, tmp_path: Path
) -> None:
    # Regression: recognize a.jpg b.jpg --detect said nothing of b.jpg when no person was found in it (text
    # and JSON listed a's people only), as if b had not been given.
    write_reference_crops(tmp_path / "refs", identities=4, per_identity=2)
    g = Gallery(mobilenet.dim)
    enroll(tmp_path / "refs", mobilenet, g)
    (frame,) = write_frames(tmp_path / "frames", [100])
    blank = tmp_path / "blank.jpg"
    cv2.imwrite(str(blank), np.full((576, 768, 3), 120, np.uint8))
    detector = SSDLiteDetector(SSDLiteDetectorConfig(model=str(ssdlite_model)), CPU, tmp_path)
    report = recognize(mobilenet, g, [frame, blank], k=1, options=EmbedOptions(detector=detector))
    assert report.recognitions and {r.crop.source for r in report.recognitions} == {str(frame)}
    assert report.no_person == (str(blank),)
    assert report.text().endswith(f"{blank}: no person detected")
    assert report.as_dict()["no_person"] == [str(blank)]


def test_real_search_finds_the_query_person(
    mobilenet: OnnxEmbedder, ssdlite_model: Path, tmp_path: Path
) -> None:
    query_crop, _ = crop_of(100, 9)
    write_frames(tmp_path / "frames", [40, 100, 160])
    detector = SSDLiteDetector(SSDLiteDetectorConfig(model=str(ssdlite_model)), CPU, tmp_path)
    query = embed(mobilenet, [query_crop]).embeddings
    report = search(
        query, tmp_path / "frames", mobilenet, detector, SearchOptions(0.0, 5, out=tmp_path / "o")
    )
    best = report.hits[0]
    assert best.source.endswith("frame_0100.jpg") and best.similarity > 0.8
    gt = read_ground_truth(require_pets09() / "gt" / "gt.txt")
    on_frame = gt.select(gt.frame == 101)  # MOT frames are 1-based
    iou = box_iou(np.asarray([best.box], np.float32), xywh_to_xyxy(on_frame.xywh))[0]
    assert int(on_frame.track_id[int(np.argmax(iou))]) == 9 and iou.max() > 0.3  # the hit is person 9
    assert (tmp_path / "o" / "hits.json").is_file() and len(report.written) == len(report.hits) + 1
