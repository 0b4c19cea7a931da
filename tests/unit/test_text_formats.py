"""The text-dataset readers on tiny files written in each published format, every kind of bad row (named by file
and line, or skipped and listed), and the real files' published row counts."""
import gzip
import os
from collections import Counter

import pytest

from datamodules.text_formats import read_ag_news, read_mr, read_sms_spam, read_sst2, read_table, read_trec
from lightlab.base.errors import UserError
from tests.conftest import REAL_DATA

AG_NEWS = ('"3","Wall St. Bears Claw Back\\$1B","Short-sellers, Wall Street\'s dwindling\\band, are back."\n'
           '"1","Café talks","Leaders met in Zürich.\\\\Talks resume\\next week.\\"\n'
           '"4","Spam ""filters""","A new\\nuclear-free, spam, filter."\n\n\n')


def write(path, content: str | bytes, encoding: str = "utf-8"):
    path.write_bytes(content if isinstance(content, bytes) else content.encode(encoding))
    return path


def test_ag_news_csv_and_gzip_with_backslashes(tmp_path):
    plain = write(tmp_path / "test.csv", AG_NEWS)
    zipped = write(tmp_path / "test.csv.gz", gzip.compress(AG_NEWS.encode()))
    for path in (plain, zipped):
        table = read_ag_news(path)
        # "\$" is an escaped dollar; any other backslash run is a line break glued to the next word.
        assert table.texts == ["Wall St. Bears Claw Back$1B Short-sellers, Wall Street's dwindling band, are back.",
                               "Café talks Leaders met in Zürich. Talks resume next week.",
                               'Spam "filters" A new nuclear-free, spam, filter.']
        assert table.labels == [2, 0, 3]
        assert table.classes == ["World", "Sports", "Business", "Sci/Tech"]
        assert table.skipped == []


def test_sst2_and_its_unlabelled_test_split(tmp_path):
    table = read_sst2(write(tmp_path / "dev.tsv", 'sentence\tlabel\nit \'s a "charming" journey . \t1\n'
                                                  "a naïve , bleak mess \t0\n"))
    assert (table.texts, table.labels) == (['it \'s a "charming" journey .', "a naïve , bleak mess"], [1, 0])
    assert table.classes == ["negative", "positive"]
    with pytest.raises(UserError, match=r"test\.tsv has no labels.*unlabelled; use dev\.tsv"):
        read_sst2(write(tmp_path / "test.tsv", "index\tsentence\n0\tuneasy mishmash .\n"))


@pytest.mark.parametrize("labels, classes, expected_labels, expected_classes", [
    ("coarse", None, [5, 3, 5], ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]),
    ("fine", None, [2, 0, 1], ["HUM:ind", "NUM:date", "NUM:dist"]),
    ("fine", ["ABBR:exp", "HUM:ind", "NUM:date", "NUM:dist"], [3, 1, 2],
     ["ABBR:exp", "HUM:ind", "NUM:date", "NUM:dist"]),
])
def test_trec_coarse_and_fine(tmp_path, labels, classes, expected_labels, expected_classes):
    path = write(tmp_path / "train_5500.label", b"NUM:dist How far is it to Aspen ?\n"
                                                b"HUM:ind Who was Gal\xe9lil\xf0e ?\nNUM:date When was 1066 ?\n")
    table = read_trec(path, labels, classes)
    assert table.texts == ["How far is it to Aspen ?", "Who was Galélilðe ?", "When was 1066 ?"]
    assert (table.labels, table.classes) == (expected_labels, expected_classes)


def test_mr_negatives_first_in_cp1252(tmp_path):
    positive = write(tmp_path / "rt-polarity.pos", b"a caf\xe9 of delights \x97 . \nsmart and funny .\n")
    negative = write(tmp_path / "rt-polarity.neg", b"simplistic , silly and tedious . \n")
    table = read_mr(positive, negative)
    assert table.texts == ["simplistic , silly and tedious .", "a café of delights — .", "smart and funny ."]
    assert (table.labels, table.classes) == ([0, 1, 1], ["negative", "positive"])


def test_sms_spam(tmp_path):
    table = read_sms_spam(write(tmp_path / "SMSSpamCollection", "ham\tOk lar… see you at the café\n"
                                                                "spam\tWIN £1000 now! Text \"WIN\"\n\n"))
    assert (table.texts, table.labels) == (["Ok lar… see you at the café", 'WIN £1000 now! Text "WIN"'], [0, 1])
    assert table.classes == ["ham", "spam"]


@pytest.mark.parametrize("header, text_columns, label_column", [
    (True, ["title", "body"], "stars"), (False, [1, 2], 0), (False, ["1", "2"], "0")])
def test_table_by_names_and_indices_with_inferred_classes(tmp_path, header, text_columns, label_column):
    rows = 'good,Grand,"A fine, long película"\nbad,Dull, sleepy \nmeh,,Fine I guess\n'
    path = write(tmp_path / "reviews.csv", ("stars,title,body\n" if header else "") + rows)
    table = read_table(path, text_columns, label_column, header=header)
    assert table.texts == ["Grand A fine, long película", "Dull sleepy", "Fine I guess"]
    assert (table.labels, table.classes) == ([1, 0, 2], ["bad", "good", "meh"])


def test_table_tsv_in_latin1_with_given_classes(tmp_path):
    path = write(tmp_path / "mine.tsv", "text\tlabel\nrésumé\tb\n", encoding="latin-1")
    table = read_table(path, ["text"], "label", delimiter="\t", encoding="latin-1", classes=["a", "b"])
    assert (table.texts, table.labels, table.classes) == (["résumé"], [1], ["a", "b"])


def test_table_names_the_missing_column(tmp_path):
    path = write(tmp_path / "mine.csv", "text,label\nhello,a\n")
    with pytest.raises(UserError, match=r"mine\.csv has no column 'sentence': its header has columns 'text', 'label'"):
        read_table(path, ["sentence"], "label")


# One file per reader with `bad` written as one of its lines: (read, path, that line's number, good rows).
# The AG News one is gzipped, to check that line numbers survive decompression.
def ag_news(tmp_path, bad):
    content = f'"1","Café","Ok."\n"2","Sport","Ok."\n"3","Trade","Ok."\n{bad}\n"4","Tech","Ok."\n'
    return read_ag_news, write(tmp_path / "train.csv.gz", gzip.compress(content.encode())), 4, 4


def sst2(tmp_path, bad):
    return read_sst2, write(tmp_path / "train.tsv", f"sentence\tlabel\nfine and naïve\t1\n{bad}\ngood\t0\n"), 3, 2


def trec(tmp_path, bad):
    return read_trec, write(tmp_path / "train.label", f"NUM:dist How far ?\nHUM:ind Who ?\n{bad}\nLOC:city Where ?\n",
                            encoding="latin-1"), 3, 3


def mr(tmp_path, bad):
    negative = write(tmp_path / "rt-polarity.neg", "grim .\n")
    positive = write(tmp_path / "rt-polarity.pos", f"bright .\nwarm .\n{bad}\nsharp .\n", encoding="latin-1")
    return (lambda path, **options: read_mr(path, negative, **options)), positive, 3, 4


def sms_spam(tmp_path, bad):
    return read_sms_spam, write(tmp_path / "SMSSpamCollection", f"ham\tHi\nspam\tWin £5\n{bad}\nham\tBye\n"), 3, 3


def table(tmp_path, bad):
    path = write(tmp_path / "mine.csv", f"text,label\nfine ünïcode,a\n{bad}\nok,b\n")
    return (lambda path, **options: read_table(path, ["text"], "label", classes=["a", "b"], **options)), path, 3, 2


BAD_ROWS = [  # (reader, bad line, what the message says)
    (ag_news, '"1","Only two"', "expected 3 comma-separated columns"),
    (ag_news, '"2"," ","  "', "the text is empty"),
    (ag_news, '"5","Title","Text"', "label '5' is not one of the classes: 1 (World), 2 (Sports)"),
    (sst2, "too\tmany\ttabs", "expected 2 tab-separated columns (sentence, label), found 3"),
    (sst2, "  \t1", "the text is empty"),
    (sst2, "so-so\t2", "label '2' is not one of the classes: 0 (negative), 1 (positive)"),
    (trec, "NUM:count", "expected a label, a space and a question, found only 'NUM:count'"),
    (trec, "NUM:count  ", "the text is empty"),
    (trec, "XYZ:foo What ?", "label 'XYZ:foo' is not of the form COARSE:fine with COARSE one of ABBR, DESC"),
    (mr, " \t ", "the text is empty"),
    (sms_spam, "ham", "expected 2 tab-separated columns (label, message), found 1"),
    (sms_spam, "spam\t  ", "the text is empty"),
    (sms_spam, "eggs\tHello", "label 'eggs' is not one of the classes: ham, spam"),
    (table, "a,b,c", "expected 2 comma-separated columns (text, label), found 3"),
    (table, '"",a', "the text is empty"),
    (table, "hello,c", "label 'c' is not one of the classes: a, b"),
]


@pytest.mark.parametrize("make, bad, reason", BAD_ROWS)
def test_bad_row_is_named_or_skipped(tmp_path, make, bad, reason):
    read, path, line_number, good_rows = make(tmp_path, bad)
    with pytest.raises(UserError) as raised:
        read(path)
    assert f"{path} line {line_number}: {reason}" in str(raised.value)
    assert "data.bad_rows=skip" in str(raised.value)
    table = read(path, bad_rows="skip")
    assert len(table.skipped) == 1 and table.skipped[0].startswith(f"{path} line {line_number}: {reason}")
    assert len(table.texts) == len(table.labels) == good_rows


@pytest.mark.parametrize("make", [ag_news, sst2, sms_spam, table])
def test_bytes_in_the_wrong_encoding_always_stop(tmp_path, make):
    # "caf\xe9" is latin-1 (café), not UTF-8: the whole file is in the wrong encoding, so even skip stops.
    read, path, line_number, _ = make(tmp_path, "PLACEHOLDER")
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    raw = raw.replace(b"PLACEHOLDER", b'"2","caf\xe9","x"' if make is ag_news else b"caf\xe9\t1,a")
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    for bad_rows in ("error", "skip"):
        with pytest.raises(UserError, match=rf"{path.name} line {line_number}: bytes e9 are not valid utf-8"):
            read(path, bad_rows=bad_rows)


def test_options_files_and_mistakes_are_named(tmp_path):
    with pytest.raises(UserError, match=r"nowhere\.tsv not found"):
        read_sst2(tmp_path / "nowhere.tsv")
    path = write(tmp_path / "SMSSpamCollection", "ham\tHi\n")
    with pytest.raises(UserError, match=r"data\.bad_rows='ignore'"):
        read_sms_spam(path, bad_rows="ignore")
    with pytest.raises(UserError, match=r"data\.labels='medium'"):
        read_trec(path, labels="medium")


def test_real_files_have_their_published_counts():
    folders = ["ag_news", "sst2", "trec", "mr", "sms_spam"]
    missing = [folder for folder in folders if not (REAL_DATA / folder).is_dir()]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"real data missing in CI: {', '.join(missing)} in {REAL_DATA} (set DATA_DIR)")
        pytest.skip(f"real data not found in {REAL_DATA}: {', '.join(missing)} (set DATA_DIR)")

    def counts(table):
        return len(table.texts), sorted(Counter(table.classes[label] for label in table.labels).items())

    ag_news = read_ag_news(REAL_DATA / "ag_news" / "test.csv.gz")
    assert counts(ag_news) == (7600, sorted((name, 1900) for name in ag_news.classes))
    assert len(read_sst2(REAL_DATA / "sst2" / "train.tsv").texts) == 67349
    assert len(read_sst2(REAL_DATA / "sst2" / "dev.tsv").texts) == 872
    trec_train = read_trec(REAL_DATA / "trec" / "train_5500.label")
    assert (len(trec_train.texts), len(set(trec_train.labels))) == (5452, 6)
    assert len(read_trec(REAL_DATA / "trec" / "TREC_10.label").texts) == 500
    fine = read_trec(REAL_DATA / "trec" / "train_5500.label", labels="fine")
    assert len(fine.classes) == 50
    # The test split's fine labels all occur in training, so it reads with the training classes.
    assert len(read_trec(REAL_DATA / "trec" / "TREC_10.label", "fine", fine.classes).texts) == 500
    mr = read_mr(REAL_DATA / "mr" / "rt-polarity.pos", REAL_DATA / "mr" / "rt-polarity.neg")
    assert counts(mr) == (10662, [("negative", 5331), ("positive", 5331)])
    assert counts(read_sms_spam(REAL_DATA / "sms_spam" / "SMSSpamCollection")) == (5574, [("ham", 4827),
                                                                                          ("spam", 747)])
    for table in (ag_news, trec_train, fine, mr):
        assert table.skipped == []


def test_integer_labels_of_a_table_keep_numeric_order(tmp_path):
    rows = "".join(f"text {label},{label}\n" for label in (10, 2, 0, 1, 2))
    table = read_table(write(tmp_path / "numbers.csv", "text,label\n" + rows), ["text"], "label")
    assert table.classes == ["0", "1", "2", "10"] and table.labels == [3, 2, 0, 1, 2]
