"""Text-classification datasets read from the files their authors publish, as (texts, labels, classes).

Every dataset has its own small format (AG News' escaped CSV, GLUE's tsv, TREC's `COARSE:fine question`, MR's
two files of sentences, ...). Each is read strictly: a row that does not fit stops the run with the file, the
line and the fix, instead of quietly becoming a wrong example. bad_rows="skip" leaves such rows out and lists
them in `skipped`, for files the user cannot fix. A file that does not decode in its encoding always stops the
run: when the encoding is wrong every line is suspect, not one.
"""
import csv
import gzip
import io
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

from lightlab.base.errors import UserError

AG_NEWS_CLASSES = ["World", "Sports", "Business", "Sci/Tech"]
TREC_COARSE_CLASSES = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
BAD_ROWS_FIX = "Fix or remove that line, or set data.bad_rows=skip to skip such lines."
DELIMITER_NAMES = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}


@dataclass
class TextTable:
    texts: list[str]
    labels: list[int]  # indices into `classes`
    classes: list[str]
    skipped: list[str]  # one "<file> line N: <reason>" per row left out by bad_rows="skip"


class _Rows:
    """Accepts good rows, and raises or records bad ones. `accepted` maps a label as written in the file to
    its class name; None means the classes are whatever labels the file holds."""

    def __init__(self, bad_rows: str, accepted: dict[str, str] | None = None):
        if bad_rows not in ("error", "skip"):
            raise UserError(f"data.bad_rows={bad_rows!r}: choose 'error' (stop at the first bad row, naming its "
                            f"file and line) or 'skip' (leave bad rows out and list them).")
        self.bad_rows, self.accepted = bad_rows, accepted
        self.texts: list[str] = []
        self.class_names: list[str] = []
        self.skipped: list[str] = []

    def reject(self, path: Path, line_number: int, reason: str) -> None:
        where = f"{path} line {line_number}: {reason}"
        if self.bad_rows == "error":
            raise UserError(f"{where}. {BAD_ROWS_FIX}")
        self.skipped.append(where)

    def add(self, path: Path, line_number: int, text: str, label: str) -> None:
        text, label = text.strip(), label.strip()
        if not text:
            return self.reject(path, line_number, "the text is empty")
        if not label:
            return self.reject(path, line_number, "the label is empty")
        if self.accepted is not None and label not in self.accepted:
            listing = ", ".join(written if written == name else f"{written} ({name})"
                                for written, name in self.accepted.items())
            return self.reject(path, line_number, f"label {label!r} is not one of the classes: {listing}")
        self.texts.append(text)
        self.class_names.append(self.accepted[label] if self.accepted is not None else label)

    def table(self) -> TextTable:
        found = set(self.class_names)
        # Integer labels ("0".."10") in numeric order, so class i is label i; other labels alphabetically.
        numeric = all(name.lstrip("-").isdigit() for name in found)
        classes = list(self.accepted.values()) if self.accepted is not None else sorted(
            found, key=int if numeric else None)
        index = {name: position for position, name in enumerate(classes)}
        return TextTable(self.texts, [index[name] for name in self.class_names], classes, self.skipped)


def _read_text(path: Path, encoding: str, fix_encoding: str) -> str:
    """The whole file decoded strictly, so a wrong encoding is caught at its first bad byte, with its line."""
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as file:
            raw = file.read()
    except FileNotFoundError:
        raise UserError(f"{path} not found. Check the file name, or point paths.data_dir (environment variable "
                        f"DATA_DIR) at the folder that holds it.") from None
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise UserError(f"{path} could not be read ({error or type(error).__name__}): it is truncated, corrupt "
                        f"or not a file. Replace it with a good copy.") from None
    try:
        text = raw.decode(encoding)
    except LookupError:
        raise UserError(f"data.table.encoding={encoding!r} is not an encoding Python knows; use e.g. utf-8, "
                        f"latin-1 or cp1252.") from None
    except UnicodeDecodeError as error:
        line_number = raw.count(b"\n", 0, error.start) + 1
        raise UserError(f"{path} line {line_number}: bytes {raw[error.start:error.end].hex(' ')} are not valid "
                        f"{encoding}, the encoding this file is read in, so the file is in another encoding or "
                        f"damaged. {fix_encoding}") from None
    return text.removeprefix("\ufeff")  # a byte-order mark is not part of the first field


def _lines(text: str) -> list[str]:
    # split("\n"), not splitlines(): latin-1 files hold 0x85 (NEL) and 0x0c bytes that splitlines() would
    # treat as line breaks, shifting every line number after them.
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    while lines and lines[-1] == "":
        lines.pop()
    return lines


def _csv_rows(path: Path, text: str, delimiter: str) -> list[tuple[int, list[str]]]:
    """(line number where the row starts, fields) per row; a quoted field may span lines."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows = []
    while True:
        line_number = reader.line_num + 1
        try:
            rows.append((line_number, next(reader)))
        except StopIteration:
            break
        except csv.Error as error:
            raise UserError(f"{path} line {line_number}: not valid CSV ({error}). Fix that line.") from None
    while rows and not rows[-1][1]:  # blank lines at the end
        rows.pop()
    return rows


def _published_fix(encoding: str) -> str:
    return f"The published file is {encoding}: replace this copy with the published one."


def _column_count_error(expected: int, separator: str, columns: str, found: int) -> str:
    return f"expected {expected} {separator}-separated columns ({columns}), found {found}"


def _clean_ag_news(field: str) -> str:
    # AG News writes "$" as "\$" and each line break of the original article as "\" ("\\" between paragraphs),
    # glued to the next word: "a\nuclear-capable" is "a", break, "nuclear". So every backslash run becomes a
    # space; reading "\n" as an escape would eat the first letter of the word after it.
    return re.sub(r"\\+", " ", field.replace("\\$", "$"))


def read_ag_news(path: Path, bad_rows: str = "error") -> TextTable:
    """AG News' train.csv / test.csv (or .csv.gz): class index 1-4, title, description; no header."""
    path = Path(path)
    rows = _Rows(bad_rows, {str(index + 1): name for index, name in enumerate(AG_NEWS_CLASSES)})
    for line_number, fields in _csv_rows(path, _read_text(path, "utf-8", _published_fix("UTF-8")), ","):
        if len(fields) != 3:
            rows.reject(path, line_number,
                        _column_count_error(3, "comma", "class index, title, description", len(fields)))
            continue
        label, title, description = fields
        rows.add(path, line_number, f"{_clean_ag_news(title).strip()} {_clean_ag_news(description).strip()}", label)
    return rows.table()


def read_sst2(path: Path, bad_rows: str = "error") -> TextTable:
    """GLUE's SST-2 train.tsv / dev.tsv: header `sentence<TAB>label`, then one sentence and 0/1 per line."""
    path = Path(path)
    rows = _Rows(bad_rows, {"0": "negative", "1": "positive"})
    lines = _lines(_read_text(path, "utf-8", _published_fix("UTF-8")))
    if not lines:
        raise UserError(f"{path} is empty: an SST-2 file starts with the header line 'sentence<TAB>label'. "
                        f"Replace it with the published GLUE file.")
    header = lines[0].split("\t")
    if "label" not in header:
        raise UserError(f"{path} has no labels: its header has columns {', '.join(header)} and no 'label'. GLUE's "
                        f"SST-2 test split (test.tsv) is unlabelled; use dev.tsv to evaluate.")
    if "sentence" not in header:
        raise UserError(f"{path} line 1: the header has columns {', '.join(header)} and no 'sentence'. An SST-2 "
                        f"file starts with the line 'sentence<TAB>label'; replace it with the published GLUE file.")
    sentence_column, label_column = header.index("sentence"), header.index("label")
    for line_number, line in enumerate(lines[1:], start=2):
        # Split on tabs only: sentences hold quote characters that CSV quoting would misread.
        fields = line.split("\t")
        if len(fields) != len(header):
            rows.reject(path, line_number, _column_count_error(len(header), "tab", ", ".join(header), len(fields)))
            continue
        rows.add(path, line_number, fields[sentence_column], fields[label_column])
    return rows.table()


def read_trec(path: Path, labels: str = "coarse", classes: list[str] | None = None,
              bad_rows: str = "error") -> TextTable:
    """Li & Roth's TREC question files: `COARSE:fine question` per line, latin-1. labels="coarse" gives the 6
    coarse classes; "fine" the 50 `COARSE:fine` ones (`classes`, else those found in this file)."""
    path = Path(path)
    if labels == "coarse":
        accepted = {name: name for name in TREC_COARSE_CLASSES}
    elif labels == "fine":
        accepted = None if classes is None else {str(name): str(name) for name in classes}
    else:
        raise UserError(f"data.labels={labels!r}: choose 'coarse' (6 classes) or 'fine' (50 classes) for TREC.")
    rows = _Rows(bad_rows, accepted)
    for line_number, line in enumerate(_lines(_read_text(path, "latin-1", _published_fix("latin-1"))), start=1):
        token, space, question = line.partition(" ")
        if not space:
            rows.reject(path, line_number, f"expected a label, a space and a question, found only {token!r}")
            continue
        coarse, colon, fine = token.partition(":")
        if not (colon and fine) or coarse not in TREC_COARSE_CLASSES:
            rows.reject(path, line_number, f"label {token!r} is not of the form COARSE:fine with COARSE one of "
                                           f"{', '.join(TREC_COARSE_CLASSES)}")
            continue
        rows.add(path, line_number, question, coarse if labels == "coarse" else token)
    return rows.table()


def read_mr(positive_path: Path, negative_path: Path, bad_rows: str = "error") -> TextTable:
    """Pang & Lee's rt-polarity.pos and .neg: one sentence per line, cp1252 (Windows quotes and dashes in
    0x80-0x9f, which latin-1 would turn into control characters). Negatives first, in file order."""
    rows = _Rows(bad_rows, {"negative": "negative", "positive": "positive"})
    for path, label in ((Path(negative_path), "negative"), (Path(positive_path), "positive")):
        for line_number, line in enumerate(_lines(_read_text(path, "cp1252", _published_fix("cp1252"))), 1):
            rows.add(path, line_number, line, label)
    return rows.table()


def read_sms_spam(path: Path, bad_rows: str = "error") -> TextTable:
    """The SMS Spam Collection: `ham<TAB>text` or `spam<TAB>text` per line, UTF-8, no header."""
    path = Path(path)
    rows = _Rows(bad_rows, {"ham": "ham", "spam": "spam"})
    for line_number, line in enumerate(_lines(_read_text(path, "utf-8", _published_fix("UTF-8"))), start=1):
        fields = line.split("\t")
        if len(fields) != 2:
            rows.reject(path, line_number, _column_count_error(2, "tab", "label, message", len(fields)))
            continue
        rows.add(path, line_number, fields[1], fields[0])
    return rows.table()


def read_table(path: Path, text_columns: list[str | int], label_column: str | int, delimiter: str = ",",
               header: bool = True, encoding: str = "utf-8", classes: list[str] | None = None,
               bad_rows: str = "error") -> TextTable:
    """A user's own CSV/TSV. Columns are header names (header=True) or 0-based indices; several text columns
    are joined with a space. The classes are `classes`, else the sorted label strings found in the file."""
    path = Path(path)
    rows = _Rows(bad_rows, None if classes is None else {str(name): str(name) for name in classes})
    if isinstance(text_columns, (str, int)):  # one column given bare rather than as a list
        text_columns = [text_columns]
    if delimiter in ("\\t", "tab"):  # a tab written as the two characters \t, as YAML single quotes leave it
        delimiter = "\t"
    if len(delimiter) != 1:
        raise UserError(f"data.table.delimiter={delimiter!r} must be one character, e.g. ',' or '\\t'.")
    fix_encoding = (f"Re-save it as {encoding}, or set data.table.encoding to the encoding it is in "
                    f"(e.g. latin-1 or cp1252).")
    table = _csv_rows(path, _read_text(path, encoding, fix_encoding), delimiter)
    if header:
        if not table:
            raise UserError(f"{path} is empty, but data.table.header=true expects a header line naming the "
                            f"columns. Add the header and rows, or check the file name.")
        names = [name.strip() for name in table[0][1]]
        table = table[1:]
    else:
        names = []
    width = len(names) if header else len(table[0][1]) if table else 0

    def column_index(column: str | int) -> int:
        if isinstance(column, str) and column in names:
            return names.index(column)
        if isinstance(column, str) and not header and column.strip().isdigit():
            column = int(column)
        if isinstance(column, str):
            having = f"its header has columns {', '.join(map(repr, names))}" if header else \
                "data.table.header=false, so columns are 0-based indices"
            raise UserError(f"{path} has no column {column!r}: {having}. Set data.table.text_columns and "
                            f"data.table.label_column to {'header names or ' if header else ''}column indices.")
        if not 0 <= column < width:
            raise UserError(f"column {column} is out of range: {path} has {width} columns (indices 0 to "
                            f"{width - 1}). Fix data.table.text_columns or data.table.label_column.")
        return column

    text_indices = [column_index(column) for column in text_columns]
    label_index = column_index(label_column)
    separator = DELIMITER_NAMES.get(delimiter, repr(delimiter))
    columns = ", ".join(names) if header else "as in the first line"
    for line_number, fields in table:
        if len(fields) != width:
            rows.reject(path, line_number, _column_count_error(width, separator, columns, len(fields)))
            continue
        text = " ".join(piece for piece in (fields[index].strip() for index in text_indices) if piece)
        rows.add(path, line_number, text, fields[label_index])
    return rows.table()
