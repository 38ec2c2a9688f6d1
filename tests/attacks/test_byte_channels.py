"""Attack (red team round 3): pack a private table into bytes, big integers or ciphertexts
under a key of one's own, each piece under the per-item limits, and have it approved."""

from __future__ import annotations

import numpy as np


def pickled_in_chunks(patients):
    """The whole table pickled, in 512-byte pieces (the per-item limit), 200 to a list."""
    import pickle
    blob = pickle.dumps(patients)
    pieces = [blob[i:i + 512] for i in range(0, len(blob), 512)]
    return {f"part{k}": pieces[k * 200:(k + 1) * 200] for k in range(len(pieces) // 200 + 1)}


def one_big_number_per_patient_column(patients):
    """A column's bytes as integers of 4,000 digits, each one 'number'."""
    blob = "\n".join(patients["SSN"].astype(str)).encode()
    return [int.from_bytes(blob[i:i + 1600], "big") for i in range(0, len(blob), 1600)]


def test_bytes_and_big_integers_carry_no_table(attacker):
    outcome, message = attacker.attack(pickled_in_chunks)
    assert outcome == "refused" and "release policy" in message and "characters of text" in message, message
    outcome, message = attacker.attack(one_big_number_per_patient_column)  # Syft cannot even store it
    assert outcome == "refused" and "SSN" not in message and not any(c.isdigit() for c in message.split(":")[-1])


def test_the_narrow_limits_count_what_a_value_carries():
    from syft_policies.release_rules import find_row_level_data

    assert find_row_level_data([b"x" * 500] * 5, custom=True) is not None  # 2,500 bytes
    assert find_row_level_data([b"x" * 500] * 4, custom=True) is None
    assert find_row_level_data([2 ** 70000], custom=True) is not None  # one int, 1,094 words of 64 bits
    assert find_row_level_data([[2 ** 63 - 1] * 250] * 4, custom=True) is None  # 1,000 numbers of 64 bits
    assert find_row_level_data(np.zeros(1025), custom=True) is not None


def test_custom_code_gets_no_ciphertext_exemption():
    """CKKS ciphertexts pass the release policy only from the site's templates: custom code
    could encrypt rows under a secret key of its own (the federation's parameters, its key)."""
    import tenseal as ts

    from he.custodian import CKKS_PARAMETERS as p
    from syft_policies.release_rules import find_row_level_data

    mine = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=p["poly_modulus_degree"],
                      coeff_mod_bit_sizes=p["coeff_mod_bit_sizes"])
    mine.global_scale = 2 ** p["global_scale_bits"]
    rows = np.arange(512, dtype=float)
    ciphertexts = [ts.ckks_vector(mine, rows[i:i + 256].tolist()).serialize() for i in (0, 256)]
    assert find_row_level_data(ciphertexts, custom=False) is None  # a template's HE contribution
    why = find_row_level_data(ciphertexts, custom=True)
    assert why is not None and "characters of text or bytes" in why, why


def table_as_empty_symbols(patients):
    """Round 4: the compressed table as a shape of empty things (None, [], (), {}: two bits
    each), in lists of 256, so no value, text or byte is counted at all."""
    import pickle
    import zlib
    blob = zlib.compress(pickle.dumps(patients.head(40)))
    symbols = (None, [], (), {})
    stream = [symbols[(byte >> shift) & 3] for byte in blob for shift in (6, 4, 2, 0)]
    chunks = [stream[i:i + 256] for i in range(0, len(stream), 256)]
    return [chunks[i:i + 256] for i in range(0, len(chunks), 256)]


def test_the_shape_of_an_output_is_counted_too(attacker):
    outcome, message = attacker.attack(table_as_empty_symbols)
    assert outcome == "refused" and "release policy" in message and "structure included" in message, message


def test_text_is_counted_by_what_it_carries_and_huge_outputs_stop_early():
    import time

    from syft_policies.release_rules import find_row_level_data

    assert "UTF-8" in find_row_level_data(["\U00010000" * 300] * 2, custom=True)  # 600 characters, 2,400 bytes
    assert find_row_level_data(["é" * 500] * 2, custom=True) is None  # 2,000 bytes
    started = time.perf_counter()
    assert "more than" in find_row_level_data([[[None] * 256] * 256] * 256, custom=True)
    assert time.perf_counter() - started < 5  # generous: the count stops at its limit, not after 16.7 M nodes
