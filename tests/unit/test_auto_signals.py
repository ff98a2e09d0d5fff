"""Properties of what auto-routing reads of a request: the complexity score and the keyword matcher."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from hypothesis import given, settings
from hypothesis import strategies as st

from routing.auto_signals import (
    MAX_KEYWORDS,
    MAX_READ_CHARS,
    asked_capabilities,
    clean_capabilities,
    clean_keywords,
    complexity,
    first_keyword,
    normal_keyword,
    words_of,
)

PROPERTY = settings(max_examples=300, deadline=None, database=None)
anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
prose = st.text(alphabet=st.sampled_from("abc why explain ?`\n\t -'É日1"), max_size=400)


@PROPERTY
@given(anything)
def test_the_score_is_between_0_and_1_for_anything(value):
    score = complexity(value)
    assert 0.0 <= score <= 1.0 and round(score, 2) == score


@PROPERTY
@given(prose)
def test_the_score_is_deterministic(text):
    assert complexity(text) == complexity(str(text))


@PROPERTY
@given(prose, prose, st.sampled_from([" ", "\n", "\t"]))
def test_the_score_never_falls_when_text_is_appended_after_a_space(text, more, space):
    assert complexity(text + space + more) >= complexity(text)


def test_the_score_grows_with_length_code_questions_and_reasoning_words():
    assert complexity("hi") < complexity("word " * 800) < complexity("word " * 1600) == pytest.approx(0.4)
    assert complexity("```py\nx\n```\n" * 4) == pytest.approx(0.3)  # four blocks; a few words add under 0.01
    assert complexity("why? explain? prove? compare? design?") == pytest.approx(0.30)
    assert complexity("why why why why why") < complexity("why explain prove compare design")  # different ones
    assert complexity("") == complexity(None) == complexity(["not", "text"]) == 0.0


def test_a_huge_prompt_is_read_only_up_to_the_bound():
    huge = "why? " * (MAX_READ_CHARS // 2)
    assert complexity(huge) == complexity(huge[:MAX_READ_CHARS])


@PROPERTY
@given(anything)
def test_words_and_capabilities_never_raise(value):
    words = words_of(value)
    assert words.startswith(" ") and words.endswith(" ")
    assert asked_capabilities(value) <= {"tools", "vision", "json"}


keyword = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9 '-]{0,30}", fullmatch=True)


@PROPERTY
@given(keyword, prose, prose)
def test_a_keyword_is_found_in_any_case_between_any_text(word, before, after):
    text = f"{before} {word.upper()} {after}"
    normal = normal_keyword(word)
    assert first_keyword(words_of(text), (normal,)) == normal


@PROPERTY
@given(st.lists(keyword, max_size=5), prose)
def test_matching_is_deterministic_and_finds_only_listed_keywords(words, text):
    normals = tuple(normal_keyword(w) for w in words)
    found = first_keyword(words_of(text), normals)
    assert found == first_keyword(words_of(text), normals)
    assert found == "" or found in normals


def test_keywords_match_whole_words_only():
    assert first_keyword(words_of("please decode this"), ("code",)) == ""
    assert first_keyword(words_of("Write CODE, now"), ("code",)) == "code"
    assert first_keyword(words_of("a step-by-step plan"), (normal_keyword("Step By  Step"),)) == "step by step"
    assert first_keyword(words_of("Python\u2014why\u3002"), ("why",)) == "why"  # an em dash, a CJK full stop
    assert first_keyword(words_of("my_python_var"), ("python",)) == ""  # "_" joins words, as in code


@PROPERTY
@given(st.lists(st.text(max_size=60), max_size=30))
def test_keyword_lists_are_cleaned_or_refused_clearly(value):
    try:
        kept = clean_keywords(value)
    except ValidationError as error:
        assert error.messages and all(message for message in error.messages)
        return
    assert len(kept) <= MAX_KEYWORDS and all(0 < len(k) <= 50 and k == " ".join(k.split()) for k in kept)


@pytest.mark.parametrize(
    "value",
    [["c++"], ["x" * 51], [f"w{i}" for i in range(21)], "code", [1], ["<script>"], ["---"]],
)
def test_bad_keywords_are_refused(value):
    with pytest.raises(ValidationError):
        clean_keywords(value)


def test_capabilities_are_checked_and_ordered():
    assert clean_capabilities(["json", "tools", "json"]) == ["tools", "json"]
    with pytest.raises(ValidationError, match="Unknown capability"):
        clean_capabilities(["audio"])


def test_the_capabilities_a_request_asks_for():
    image = {"role": "user", "content": [{"type": "text", "text": "what?"}, {"type": "image_url", "image_url": {}}]}
    assert asked_capabilities({"messages": [image]}) == {"vision"}
    assert asked_capabilities({"messages": [], "tools": [{"type": "function"}]}) == {"tools"}
    assert asked_capabilities({"messages": [], "response_format": {"type": "json_schema"}}) == {"json"}
    assert asked_capabilities({"messages": [], "response_format": {"type": ["json_object"]}}) == frozenset()
    assert asked_capabilities({"messages": [{"content": {"type": {"a": 1}}}], "tools": []}) == frozenset()
