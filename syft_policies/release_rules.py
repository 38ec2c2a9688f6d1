"""What may leave a hospital: the checks behind the release policy, as plain functions.

``ReleasePolicy`` (a Syft custom output policy) calls these on the datasite after every
execution of an approved request. They live in the site's installed package, not in the
policy's shipped source, so a researcher cannot change the rules by editing the class.

An output is row-level data, and blocked, when it is or holds:

- a table (pandas DataFrame / Series / Index), or any other object an isolated worker
  could not send back as plain data (it arrives as a ``Withheld`` marker);
- an array, list or dict with more than ``max_rows`` entries along one axis (model weights
  are smaller: the LSTM's largest matrix has 128 rows);
- a string or bytes longer than ``max_text`` (an export: CSV, JSON, a pickle), unless the
  bytes are a CKKS ciphertext of at most ``max_rows`` values returned by one of the site's
  templates (HE analytics; the key is the custodian's, see ``he.custodian``): custom code
  could encrypt under a key of its own;
- an identifier-shaped string (UUID, SSN, Synthea M-id), as a value or as a key, or text
  that contains one;
- more than 8,192 bytes of text (UTF-8) or bytes in all (values and keys together), or more
  than 65,536 values in all, however they are nested (rows split into many small lists or
  byte strings are still rows): an integer counts once per 64 bits, and every node once,
  None and empty containers included (a shape of empty symbols is a code too); for
  custom code, which the site cannot vouch for, 2,048 and 1,024;
- an exact copy of private values: a run of ``min_run`` or more numbers equal to
  consecutive rows of an input column, or non-integer numbers most of which are exact
  values of a continuous input column (a list of "medians" that are really patients' values).

Counts are suppressed: a value under a count-like key (``n``, ``count`` ...) below
``min_cell`` becomes None, and a histogram (a dict of integer counts) loses its cells below
``min_cell``.
"""

from __future__ import annotations

import functools
import re
from contextvars import ContextVar
from typing import Any

import numpy as np

__all__ = ["find_row_level_data", "suppress_small_cells", "remember_inputs", "forget_inputs", "current_inputs",
           "release_settings"]

IDENTIFIER_INSIDE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
                               r"|(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)|(?<![0-9a-z])M?[0-9a-f]{32}(?![0-9a-z])",
                               re.IGNORECASE)
MAX_TOTAL_TEXT = 8192  # characters of text in one output, keys included
MAX_TOTAL_VALUES = 65536  # numbers in one output (the LSTM's weights are about 6,600)
# Custom code (an exact release, approved by two officers) gets a far narrower channel:
# an aggregate table, not a model, and nothing a clever encoding could fill with rows.
CUSTOM_TOTAL_TEXT = 2048
CUSTOM_TOTAL_VALUES = 1024
WORK_LIMIT = 4 * MAX_TOTAL_VALUES  # counting stops here: what a release could never hold
COUNT_KEYS = {"n", "count", "counts", "cases", "patients", "n_positive", "positives", "negatives"}

_INPUTS: ContextVar[tuple] = ContextVar("medsyft_release_inputs", default=())
_CUSTOM: ContextVar[bool] = ContextVar("medsyft_release_custom", default=False)


def remember_inputs(kwargs: dict, *, custom: bool = True) -> None:
    """Called by the datasite just before code runs: the tables it was given, and whether
    it is custom code (not one of the site's templates), whose outputs get the narrow limits."""
    _INPUTS.set(tuple(v for v in kwargs.values() if type(v).__name__ == "DataFrame"))
    _CUSTOM.set(custom)


def forget_inputs() -> None:
    """Called by the datasite when the execution (and its release policy) is over."""
    _INPUTS.set(())
    _CUSTOM.set(False)


def current_inputs() -> tuple:
    return _INPUTS.get()


class _PrivateIndex:
    """Every numeric input value, sorted once, so each output run is looked up by bisection."""

    def __init__(self, frames):
        values, where, self.columns, high = [], [], [], []
        for frame in frames:
            for name in frame.columns:
                if frame[name].dtype.kind in "fiu" and len(frame) >= 8:
                    col = frame[name].to_numpy(dtype="float64")
                    values.append(col)
                    where.append(np.stack([np.full(len(col), len(self.columns)), np.arange(len(col))], 1))
                    self.columns.append(col)
                    distinct = np.unique(col[np.isfinite(col)])
                    fractional = bool(np.any(distinct != np.round(distinct)))  # whole numbers are also counts
                    if fractional and len(distinct) >= 0.5 * len(col):  # an exact value points at one patient
                        high.append(distinct)
        flat = np.concatenate(values) if values else np.zeros(0)
        order = np.argsort(flat, kind="stable")
        self.sorted = flat[order]
        self.where = np.concatenate(where)[order] if values else np.zeros((0, 2), int)
        self.high = np.unique(np.concatenate(high)) if high else np.zeros(0)

    def run_length(self, seq: np.ndarray, min_run: int) -> int:
        lo, hi = np.searchsorted(self.sorted, seq[0], "left"), np.searchsorted(self.sorted, seq[0], "right")
        for c, s in self.where[lo:hi][:1000]:
            col = self.columns[c]
            k = min(len(seq), len(col) - s)
            # the matched window itself must say something: a run of one value (zeros at a
            # column's end, say) matches any histogram that starts with empty cells
            if k >= min_run and np.array_equal(col[s:s + k], seq[:k]) and len(np.unique(seq[:k])) >= 3:
                return int(k)
        return 0

    def share_of_exact_values(self, seq: np.ndarray) -> float:
        if not len(self.high):
            return 0.0
        pos = np.clip(np.searchsorted(self.high, seq), 0, len(self.high) - 1)
        return float((self.high[pos] == seq).mean())


def _sequences(value) -> list[np.ndarray]:
    """1-D numeric runs inside ``value``: each list, each row and column of each array."""
    out = []
    if isinstance(value, dict):
        for item in value.values():
            out.extend(_sequences(item))
        numbers = [v for v in value.values() if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)]
        if len(numbers) == len(value) and numbers:
            out.append(np.asarray(numbers, dtype="float64"))
    elif isinstance(value, (list, tuple)):
        try:
            arr = np.asarray(value, dtype="float64")
        except (TypeError, ValueError):
            for item in value:
                out.extend(_sequences(item))
            return out
        out.extend(_sequences(arr))
    elif isinstance(value, np.ndarray) and value.dtype.kind == "O" and value.ndim == 2:
        for column in value.T:  # a table turned into an object array: its numeric columns
            try:
                out.append(column.astype("float64"))
            except (TypeError, ValueError):
                pass
    elif isinstance(value, np.ndarray) and value.dtype.kind in "fiub" and value.size:
        arr = value.astype("float64", copy=False)
        if arr.ndim == 1:
            out.append(arr)
        elif arr.ndim == 2:
            out.extend(list(arr))
            out.extend(list(arr.T))
        else:
            out.append(arr.ravel())
    return out


def _copies(value, frames, *, min_run: int, share: float) -> str | None:
    index = None  # built only when some output run is long enough to be a copy
    for seq in _sequences(value):
        seq = seq[np.isfinite(seq)]
        if len(seq) < min_run or len(np.unique(seq)) < 3:  # constants and 0/1 flags say little alone
            continue
        index = index or _PrivateIndex(frames)
        if not index.columns:
            return None
        run = index.run_length(seq, min_run)
        if run:
            return f"{run} values are consecutive rows of a private column"
        fractional = seq[seq != np.round(seq)]  # whole numbers are also counts, which are fine
        if len(fractional) >= min_run and index.share_of_exact_values(fractional) >= share:
            return "most values are exact values of a private column"
    return None


class _Over(Exception):
    """An output over a limit: counting stops there."""


def _totals(value, *, ciphertexts: bool = False, text_limit: int | None = None,
            value_limit: int | None = None, max_text: int = 512, max_rows: int = 256) -> tuple[int, int]:
    """(bytes of text, count of values) in ``value``, keys included, counted by what each
    can carry: text by its UTF-8 bytes, a number once per 64 bits (a Python int can hold a
    table), and every node once, None and empty containers included (their mere shape
    is a code: four empty symbols carry two bits). With ``ciphertexts`` (the site's
    templates only) a CKKS ciphertext of at most ``max_rows`` values (the walk's exemption)
    counts as nothing. Counting
    stops as soon as a limit is passed, so a huge output costs no more than the limit."""
    text = values = 0
    stack = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if depth > 64:
            raise _Over("values nested more than 64 levels deep")
        if isinstance(v, str):
            text += max(1, len(v.encode("utf-8", "surrogatepass")))
        elif isinstance(v, (bytes, bytearray)):
            exempt = ciphertexts and len(v) > max_text and _small_ciphertext(bytes(v), max_rows)
            text += 0 if exempt else max(1, len(v))
        elif isinstance(v, np.ndarray):
            if v.dtype.kind in "OUS":
                values += 1
                stack.extend((item, depth + 1) for item in v.ravel())
            else:
                values += max(1, int(v.size))
        elif isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            values += max(1, -(-abs(int(v)).bit_length() // 64))
        elif isinstance(v, dict):
            values += 1
            stack.extend((item, depth + 1) for pair in v.items() for item in pair)
        elif isinstance(v, (list, tuple, set, frozenset)):
            values += 1
            stack.extend((item, depth + 1) for item in v)
        else:  # None, bool, float, other scalars and markers: one value each
            values += 1
        if text_limit is not None and text > text_limit:
            raise _Over(f"more than {text_limit} characters of text or bytes in all")
        if value_limit is not None and values > value_limit:
            raise _Over(f"more than {value_limit} values in all, structure included")
    return text, values


def find_row_level_data(value: Any, *, max_rows: int = 256, max_text: int = 512, frames=(),
                        min_run: int = 8, share: float = 0.8, custom: bool | None = None) -> str | None:
    """Why ``value`` must not leave the site, or None if it may. ``custom`` (default: what
    the datasite said of the running execution) applies the narrow limits of custom code."""
    custom = _CUSTOM.get() if custom is None else custom
    total_text, total_values = (CUSTOM_TOTAL_TEXT, CUSTOM_TOTAL_VALUES) if custom else (MAX_TOTAL_TEXT,
                                                                                        MAX_TOTAL_VALUES)

    def walk(v, path):
        where = path or "the output"
        kind = type(v).__name__
        if kind == "Withheld":  # what an isolated worker could not send as data (datasites.jobs.wire)
            kind = str(getattr(v, "kind", "object"))
            if kind not in ("DataFrame", "Series", "Index"):
                return f"{where} is a {kind} object, not data that may leave a site"
        if kind in ("DataFrame", "Series", "Index"):
            return f"{where} is a table ({kind})"
        shape = getattr(v, "shape", None)
        if shape is not None and len(shape) > 0 and max(shape) > max_rows:
            return f"{where} has {max(shape)} entries along one axis (more than {max_rows})"
        if isinstance(v, (str, bytes, bytearray)):
            if isinstance(v, (bytes, bytearray)) and len(v) > max_text and not custom \
                    and _small_ciphertext(bytes(v), max_rows):
                return None  # a template's CKKS ciphertext of at most max_rows values: only the key holder reads it
            if len(v) > max_text:
                return f"{where} is {len(v)} characters of text or bytes (an export; more than {max_text})"
            if isinstance(v, str) and IDENTIFIER_INSIDE.search(v):
                return f"{where} holds a patient identifier"
            return None
        if isinstance(v, (list, tuple, set, dict)) and len(v) > max_rows:
            return f"{where} holds {len(v)} items (more than {max_rows})"
        if isinstance(v, np.ndarray) and v.dtype.kind in "OUS":  # mixed rows: look at each cell
            for item in v.ravel():
                problem = walk(item, f"{where} (a cell)")
                if problem:
                    return problem
        if isinstance(v, dict):
            for key, item in v.items():
                for part in key if isinstance(key, tuple) else (key,):
                    if isinstance(part, str) and IDENTIFIER_INSIDE.search(part):
                        return f"a key of {where} looks like a patient identifier"
                problem = walk(item, f"{path}.{key}" if path else str(key))
                if problem:
                    return problem
        elif isinstance(v, (list, tuple, set)):
            for i, item in enumerate(v):
                problem = walk(item, f"{path}[{i}]")
                if problem:
                    return problem
        return None

    kind = "custom code's " if custom else ""
    try:  # sizes first, stopping early: a huge output is refused without walking all of it
        text, values = _totals(value, ciphertexts=not custom, text_limit=WORK_LIMIT, value_limit=WORK_LIMIT,
                               max_text=max_text, max_rows=max_rows)
    except _Over as over:
        return f"the output holds {over}"
    problem = walk(value, "")
    if problem is None:
        if text > total_text:
            problem = (f"the output holds {text} characters of text in all, counted in UTF-8 bytes "
                       f"({kind}limit {total_text}): rows as text")
        elif values > total_values:
            problem = f"the output holds {values} numbers in all, structure included ({kind}limit {total_values})"
    if problem is None and frames:
        problem = _copies(value, frames, min_run=min_run, share=share)
        if problem:
            problem = f"the output copies private data: {problem}"
    return problem


@functools.lru_cache(maxsize=256)  # the size count and the walk both ask about the same blobs
def _small_ciphertext(blob: bytes, max_rows: int) -> bool:
    """True for a TenSEAL CKKS vector (medsyft's HE parameters) holding at most ``max_rows`` values."""
    try:
        import tenseal as ts

        from he.custodian import parameter_context

        vector = ts.lazy_ckks_vector_from(blob)
        vector.link_context(parameter_context())
        # canonical: nothing rides along in fields the parser skips
        return 0 < vector.size() <= max_rows and vector.serialize() == blob
    except Exception:  # noqa: BLE001 - anything that does not parse is not a ciphertext
        return False


def _is_count(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def suppress_small_cells(value: Any, *, min_cell: int = 10) -> Any:
    """Counts below ``min_cell`` hidden: named counts become None, histogram cells are dropped."""
    if isinstance(value, dict):
        if len(value) >= 2 and all(_is_count(v) for v in value.values()) \
                and not any(str(k).lower() in COUNT_KEYS for k in value):
            return {k: v for k, v in value.items() if v == 0 or v >= min_cell}
        out = {}
        for key, item in value.items():
            small = _is_count(item) and 0 < item < min_cell
            out[key] = None if (small and str(key).lower() in COUNT_KEYS) else suppress_small_cells(
                item, min_cell=min_cell)
        return out
    if isinstance(value, list):
        return [suppress_small_cells(v, min_cell=min_cell) for v in value]
    return value


def release_settings(settings: dict | None) -> dict:
    """A request's ``ReleasePolicy`` settings as the site reads them everywhere (review,
    budget check, execution limit): whole numbers, ``limit`` and ``max_rows`` at least 1,
    ``min_cell`` at least 0. Anything else (0.5, "many", True, a huge number) is a
    ValueError, so no two readings of one request can disagree on what it may do."""
    out = {"limit": 1, "max_rows": 256, "min_cell": 10}
    for key, value in (settings or {}).items():
        if key not in out:
            continue
        if type(value) is not int or not (0 if key == "min_cell" else 1) <= value <= 1_000_000:
            raise ValueError(f"release policy {key} must be a whole number "
                             f"{'from 0' if key == 'min_cell' else 'from 1'} to 1000000")
        out[key] = value
    return out

