"""Evaluation metrics on hand-computed examples."""
import pytest

from acerag_megatron.inference.metrics import (
    best_score, classification_score, exact_match, extract_option, normalize_answer, qa_f1)
from acerag_megatron.inference.rouge import lcs_words, rouge_l_f
from acerag_megatron.inference.tasks import get_task, score_generation, scored_text


def test_normalize_answer():
    assert normalize_answer("  The Eiffel-Tower, in PARIS!  ") == "eiffeltower in paris"
    assert normalize_answer("an apple a day") == "apple day"
    # articles are dropped only as whole words
    assert normalize_answer("Theatre anathema") == "theatre anathema"


def test_exact_match_and_multiple_golds():
    assert exact_match("The Beatles.", "beatles") == 1.0
    assert exact_match("Beatles band", "beatles") == 0.0
    assert best_score("exact_match", "Paris", ["London", "paris"]) == 1.0
    assert best_score("exact_match", "Rome", ["London", "paris"]) == 0.0
    assert best_score("exact_match", "Rome", []) == 0.0


def test_qa_f1():
    # pred tokens [barack, obama, president], gold [barack, obama] -> P 2/3, R 1 -> F1 0.8
    assert qa_f1("Barack Obama, the president", "Barack Obama") == pytest.approx(0.8)
    assert qa_f1("nothing", "Barack Obama") == 0.0
    # repeated tokens count with multiplicity: pred [a1 x x] vs gold [x]: common 1, P 1/3, R 1 -> 0.5
    assert qa_f1("y x x", "x") == pytest.approx(0.5)
    assert best_score("qa_f1", "Barack Obama", ["Obama", "Barack Obama"]) == 1.0


def test_rouge_l_hand_example():
    # ref words {the cat lay on a mat} (6), hyp {the cat sat on mat} (5, 'the' twice),
    # LCS word set {the cat on mat} (4): R 4/6, P 4/5.
    p, r = 4 / 5, 4 / 6
    assert rouge_l_f("the cat sat on the mat", "the cat lay on a mat") == pytest.approx(2 * p * r / (p + r + 1e-8))
    assert rouge_l_f("", "the cat") == 0.0
    assert rouge_l_f("...", "the cat") == 0.0
    assert rouge_l_f("the cat", "the cat") == pytest.approx(1.0, abs=1e-7)


def test_rouge_l_sentence_union():
    # Two hypothesis sentences each cover part of the reference: union LCS = {w1 w2 w3 w5}.
    hyp = "w1 w2 w6 w7 w8. w1 w3 w8 w9 w5"
    ref = "w1 w2 w3 w4 w5"
    p, r = 4 / 8, 4 / 5  # hyp distinct words: w1 w2 w3 w5 w6 w7 w8 w9
    assert rouge_l_f(hyp, ref) == pytest.approx(2 * p * r / (p + r + 1e-8))
    # tie-breaking: on ties the backtrack drops the last word of y, so the match on x's last word wins
    assert lcs_words(["a", "b"], ["b", "a"]) == ["b"]


def test_classification_score():
    classes = ["card arrival", "card", "pin blocked"]
    assert classification_score("label: pin blocked", "pin blocked", all_classes=classes) == 1.0
    # 'card' is a proper substring of the gold 'card arrival' and is discarded
    assert classification_score("Card arrival", "card arrival", all_classes=classes) == 1.0
    # three class names occur (card arrival, card, pin blocked) -> a third of the credit
    assert classification_score("pin blocked or card arrival", "pin blocked", all_classes=classes) == pytest.approx(1 / 3)
    assert classification_score("pin blocked, not card", "pin blocked", all_classes=classes) == 0.5
    assert classification_score("nothing", "pin blocked", all_classes=classes) == 0.0
    with pytest.raises(ValueError):
        classification_score("x", "y", all_classes=None)


def test_option_extraction():
    assert extract_option("arc_challenge", " According to Doc 2, the answer is (C).") == "C"
    assert extract_option("arc_challenge", "Answer: 3") == "3"
    assert extract_option("piqa", "Document 1 says B") == "B"
    assert extract_option("social_i_qa", "none here") == ""
    with pytest.raises(ValueError):
        extract_option("nq", "A")


def test_task_table_and_first_line():
    assert get_task("hotpotqa").max_new_tokens == 32 and get_task("hotpotqa").metric == "qa_f1"
    assert get_task("nq").retrieval and get_task("nq").max_new_tokens == 128
    assert get_task("gov_report").max_new_tokens == 512 and get_task("gov_report").metric == "rouge_l"
    assert get_task("banking77").metric == "classification" and get_task("banking77").icl
    assert get_task("piqa").options and get_task("piqa").retrieval
    with pytest.raises(ValueError, match="unknown dataset"):
        get_task("squad")
    nq = get_task("nq")
    assert scored_text(nq, "Paris\nIt is the capital.") == "Paris"
    assert score_generation(nq, "Paris\nLondon", ["London", "Paris"]) == 1.0
    assert score_generation(nq, "\nParis", ["Paris"]) == 0.0  # empty first line scores nothing
    arc = get_task("arc_challenge")
    assert score_generation(arc, "The answer is B.\nA", ["B"]) == 1.0
