from audit.redaction import preview, redact


def test_it_redacts_personal_data():
    text = "Mail jane@example.org or call +1 415-555-0132; SSN 123-45-6789; card 4111-1111-1111-1111."
    redacted = redact(text)
    assert redacted == "Mail [EMAIL] or call [PHONE]; SSN [SSN]; card [CARD]."


def test_it_leaves_numbers_that_are_not_card_numbers():
    assert "1234 5678 9012 3456" not in redact("card 4111 1111 1111 1111")
    assert redact("order 1234567890123 shipped") == "order 1234567890123 shipped"  # fails Luhn
    assert redact("version 1.2.3 at 10:30") == "version 1.2.3 at 10:30"


def test_it_redacts_keys_and_bearer_tokens():
    text = "use agk_abcdefghijklmnopqrstuvwxyz012345 or sk-ant-api03abcdefghijklmnop or Bearer eyJhbGciOiJIUzI1NiJ9.x"
    assert redact(text) == "use [SECRET] or [SECRET] or [SECRET]"


def test_a_preview_is_at_most_200_characters_and_redacts_at_the_edge():
    assert len(preview("x" * 1000)) == 200
    edge = "y" * 190 + " jane@example.org"
    assert "jane" not in preview(edge)
    assert preview(None) == ""
