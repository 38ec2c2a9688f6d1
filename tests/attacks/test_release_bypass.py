"""Attack: return rows as text that looks harmless to a per-value check (the red team's fourth finding)."""

from __future__ import annotations


def rows_as_sentences(patients):
    """Each patient as one short sentence, in lists of at most 200 (under the per-list limit)."""
    lines = [f"{r.FIRST} {r.LAST}; ssn {r.SSN}; born {r.BIRTHDATE}" for r in patients.itertuples()]
    return [lines[i:i + 200] for i in range(0, len(lines), 200)]


def names_only(patients):
    """No identifier inside: names and birth dates only, still rows."""
    return [[f"{r.FIRST} {r.LAST} {r.BIRTHDATE}" for r in chunk.itertuples()]
            for chunk in (patients.iloc[i:i + 100] for i in range(0, len(patients), 100))]


def test_rows_as_text_are_blocked_even_when_approved(attacker):
    for attack, why in ((rows_as_sentences, "patient identifier"), (names_only, "characters of text")):
        outcome, message = attacker.attack(attack)
        assert outcome == "refused" and "release policy" in message and why in message, message
