"""Text: recurrent models (padding invariance, every pooling), vocabulary, bucketed batches, the cache, the
DataModule on every dataset's format, and predictions from a checkpoint in a fresh process."""
import json
import subprocess
import sys

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from datamodules.sequence_batches import SequenceBatches
from datamodules.text import TextClassificationDataModule
from datamodules.vocabulary import PAD_ID, UNKNOWN_ID, Vocabulary, padded_ids, tokenize
from lightlab.base.errors import UserError
from lightlab.callbacks.feature_maps import FeatureMaps
from lightlab.run.compose import compose_config
from lightning_modules.networks.recurrent import RecurrentClassifier
from run import build
from tests.conftest import ROOT, options_reading_token_ids, require_real_data, run_cli, write_tiny_text

SEQUENCE_MODELS = options_reading_token_ids("model")[0]
TEXT_DATA = options_reading_token_ids("data")[0]

# The text DataModule's settings that conf/data sets (its constructor has no default for them).
TEXT_SETTINGS = dict(batch_size=64, max_length=64, table=None, download=False, mirrors=None)


@pytest.fixture
def text_data(tmp_path):
    return write_tiny_text(tmp_path / "data")


def text_overrides(data_dir, tmp_path, data="sst2", model="lstm"):
    return [f"data={data}", f"model={model}", f"paths.data_dir={data_dir}", f"paths.cache_dir={tmp_path / 'cache'}",
            f"paths.log_dir={tmp_path / 'logs'}", "data.val_size=40", "data.test_size=40", "data.batch_size=16",
            "model.embedding_dim=16", "model.hidden_size=16", "trainer.max_epochs=1"]


def test_every_sequence_model_and_text_dataset_is_found():
    assert SEQUENCE_MODELS == ["bilstm_attention", "gru", "lstm", "rnn"]
    assert TEXT_DATA == ["ag_news", "mr", "sms_spam", "sst2", "text_table", "trec"]


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("pooling", ["last", "mean", "max", "attention"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_logits_do_not_depend_on_padding_or_batch_neighbours(cell, pooling, bidirectional):
    torch.manual_seed(0)
    net = RecurrentClassifier([64], 3, vocabulary_size=50, cell=cell, embedding_dim=8, hidden_size=8, num_layers=2,
                              bidirectional=bidirectional, pooling=pooling).eval()
    short = torch.randint(2, 50, (5,))
    alone = net(short[None], torch.tensor([5]))
    batch = torch.full((3, 40), PAD_ID)
    batch[0] = torch.randint(2, 50, (40,))                 # a much longer neighbour
    batch[1, :5] = short
    batch[2, :12] = torch.randint(2, 50, (12,))
    together = net(batch, torch.tensor([40, 5, 12]))
    torch.testing.assert_close(together[1], alone[0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("model", SEQUENCE_MODELS)
def test_sequence_model_configs_build_and_one_step_lowers_the_loss(model, tmp_path):
    cfg = compose_config([f"model={model}", "data=sst2", "model.dropout=0"], output_dir=str(tmp_path))
    torch.manual_seed(0)
    net = instantiate(cfg.model, input_shape=[64], num_classes=2, vocabulary_size=100, _convert_="all")
    ids, lengths = torch.randint(2, 100, (16, 20)), torch.randint(1, 21, (16,))
    labels = torch.randint(0, 2, (16,))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    before = torch.nn.functional.cross_entropy(net(ids, lengths), labels)
    before.backward()
    optimizer.step()
    assert net(ids, lengths).shape == (16, 2)
    assert torch.nn.functional.cross_entropy(net(ids, lengths), labels) < before


def test_attention_weights_are_exposed_and_ignore_padding():
    net = RecurrentClassifier([64], 2, vocabulary_size=30, cell="lstm", pooling="attention", bidirectional=True).eval()
    with FeatureMaps(net, ["attention"]) as maps:
        net(torch.randint(2, 30, (2, 7)), torch.tensor([7, 3]))
    context, weights = maps["attention"]
    assert weights.shape == (2, 7) and context.shape == (2, 256)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2))
    assert (weights[1, 3:] == 0).all() and (weights[1, :3] > 0).all()


def test_tokenizer_and_vocabulary_come_from_the_training_split_only():
    assert tokenize("Don't STOP, now!") == ["don", "'", "t", "stop", ",", "now", "!"]
    assert tokenize("Don't STOP, now!", "whitespace", lowercase=False) == ["Don't", "STOP,", "now!"]
    train = [tokenize(t) for t in ["a b b c", "b c c c d"]]
    vocabulary = Vocabulary.build(train, min_frequency=2)
    assert vocabulary.tokens == ["<pad>", "<unk>", "c", "b"]  # by frequency; a and d seen once
    assert Vocabulary.build(train, max_size=3).tokens == ["<pad>", "<unk>", "c"]
    ids, lengths = padded_ids([["b", "zebra"], [], ["c"] * 10], vocabulary, max_length=4)
    assert ids.tolist() == [[3, UNKNOWN_ID, 0, 0], [UNKNOWN_ID, 0, 0, 0], [2, 2, 2, 2]]
    assert lengths.tolist() == [2, 1, 4]


def test_bucketed_batches_cover_every_text_once_with_similar_lengths():
    lengths = torch.randint(1, 61, (1000,), generator=torch.Generator().manual_seed(0))
    ids = torch.zeros(1000, 60, dtype=torch.int64)
    for row, length in enumerate(lengths):
        ids[row, :length] = row + 2  # each row's tokens name it
    labels = torch.arange(1000)
    epochs = {}
    for bucketing in (True, False):
        loader = SequenceBatches((ids, lengths, labels), batch_size=32, shuffle=True, seed=0, bucketing=bucketing,
                                 pool_batches=10)
        batches = list(loader)
        assert len(batches) == len(loader) == 32
        seen = torch.cat([batch_labels for _, _, batch_labels in batches])
        assert sorted(seen.tolist()) == list(range(1000))
        for batch_ids, batch_lengths, batch_labels in batches:  # aligned and trimmed to the batch's longest
            assert batch_ids.shape[1] == batch_lengths.max()
            assert (batch_ids[:, 0] == batch_labels + 2).all() and (batch_lengths == lengths[batch_labels]).all()
        padding = sum(int((b[0] == PAD_ID).sum()) for b in batches)
        epochs[bucketing] = (padding, [b[2].tolist() for b in batches])
        loader.sampler.set_epoch(1)
        assert [b[2].tolist() for b in loader] != epochs[bucketing][1]  # a new order every epoch
    assert epochs[True][0] < epochs[False][0] / 3  # bucketing removes most of the padding


def test_datamodule_caches_outside_the_data_folder_and_rereads_when_settings_change(text_data, tmp_path, monkeypatch):
    settings = dict(dataset="sst2", data_dir=str(text_data), cache_dir=str(tmp_path / "cache"), val_size=40,
                    **TEXT_SETTINGS)
    first = TextClassificationDataModule(**settings)
    first.setup("fit")
    caches = list((tmp_path / "cache" / "text").glob("sst2-*.pt"))
    assert len(caches) == 1 and not list(text_data.rglob("*.pt"))
    assert first.classes == ["negative", "positive"] and len(first.splits["validate"][0]) == 40
    assert len(first.splits["fit"][0]) == 260 and len(first.splits["test"][0]) == 80

    monkeypatch.setattr("datamodules.text_formats.read_sst2", lambda *a: pytest.fail("read despite the cache"))
    second = TextClassificationDataModule(**settings)
    second.setup("fit")
    for name in first.splits:
        for a, b in zip(first.splits[name], second.splits[name]):
            assert torch.equal(a, b)
    monkeypatch.undo()
    third = TextClassificationDataModule(**settings, max_vocabulary_size=5)
    third.setup("fit")
    assert (len(list((tmp_path / "cache" / "text").glob("sst2-*.pt"))) == 2
            and len(third.vocabulary) == 5 < len(first.vocabulary))
    # The vocabulary holds training-split tokens only: nothing seen only in validation or test.
    fit_tokens = {t for text_ids in first.splits["fit"][0] for t in text_ids.tolist()}
    assert set(range(len(first.vocabulary))) - {PAD_ID, UNKNOWN_ID} <= fit_tokens


@pytest.mark.parametrize("data", [d for d in TEXT_DATA if d != "text_table"])
def test_every_text_dataset_reads_its_format_and_trains(data, text_data, tmp_path):
    cfg = compose_config(text_overrides(text_data, tmp_path, data=data) + ["data.download=false"],
                         output_dir=str(tmp_path / "run"))
    datamodule, module, trainer = build(cfg)
    trainer.fit(module, datamodule=datamodule)
    expected_classes = {"sst2": 2, "trec": 6, "mr": 2, "sms_spam": 2, "ag_news": 4}[data]
    assert len(datamodule.classes) == expected_classes == module.hparams.num_classes
    assert torch.isfinite(trainer.callback_metrics["val/acc"])


def test_a_users_own_csv_is_read_from_config(tmp_path):
    rows = ["id,body,topic"] + [f"{i},{'great fun' if i % 2 else 'dull and slow'} {i},{'yes' if i % 2 else 'no'}"
                                for i in range(200)]
    (tmp_path / "mine.csv").write_text("\n".join(rows) + "\n")
    cfg = compose_config(text_overrides(tmp_path, tmp_path, data="text_table") + [
        "data.table.train_file=mine.csv", "data.table.text_columns=[body]", "data.table.label_column=topic",
        "trainer.max_epochs=4", "optimizer.lr=0.01"],
        output_dir=str(tmp_path / "run"))
    datamodule, module, trainer = build(cfg)
    trainer.fit(module, datamodule=datamodule)
    assert datamodule.classes == ["no", "yes"] and trainer.callback_metrics["val/acc"] > 0.9


def test_text_data_with_an_image_model_is_refused_by_name(text_data, tmp_path):
    overrides = [o for o in text_overrides(text_data, tmp_path, model="mlp") if not o.startswith("model.")]
    cfg = compose_config(overrides, output_dir=str(tmp_path / "run"))
    with pytest.raises(UserError, match="reads images, but this data gives token ids.*model=rnn, lstm, gru"):
        build(cfg)


def test_ag_news_is_downloaded_from_a_mirror_and_md5_verified(text_data, tmp_path, monkeypatch):
    import hashlib
    mirror = text_data / "ag_news"
    md5s = {name: hashlib.md5((mirror / name).read_bytes()).hexdigest() for name in ("train.csv", "test.csv")}
    monkeypatch.setattr(TextClassificationDataModule, "AG_NEWS_MD5", md5s)  # the published ones are checked alike
    data = TextClassificationDataModule("ag_news", str(tmp_path / "fresh"), str(tmp_path / "cache"), val_size=40,
                                        batch_size=64, max_length=64, table=None, download=True,
                                        mirrors=[f"file://{mirror}/"])
    data.setup("fit")
    assert (tmp_path / "fresh" / "ag_news" / "train.csv").read_bytes() == (mirror / "train.csv").read_bytes()
    monkeypatch.setattr(TextClassificationDataModule, "AG_NEWS_MD5", {"train.csv": "0" * 32, "test.csv": "0" * 32})
    with pytest.raises(UserError, match="downloading it failed.*md5"):
        TextClassificationDataModule("ag_news", str(tmp_path / "other"), str(tmp_path / "cache"), val_size=1000,
                                     batch_size=64, max_length=64, table=None, download=True,
                                     mirrors=[f"file://{mirror}/"]).setup("fit")


def test_sparse_embeddings_train_with_sparse_adam(text_data, tmp_path):
    cfg = compose_config(text_overrides(text_data, tmp_path)
                         + ["optimizer=sparse_adam", "model.sparse_embeddings=true"],
                         output_dir=str(tmp_path / "run"))
    datamodule, module, trainer = build(cfg)
    before = module.net.embedding.weight.detach().clone()
    trainer.fit(module, datamodule=datamodule)
    assert not torch.equal(before, module.net.embedding.weight) and torch.isfinite(trainer.callback_metrics["val/acc"])


@pytest.mark.runs
def test_predictions_after_a_restart_use_the_checkpoints_vocabulary(text_data, tmp_path):
    cfg = compose_config(text_overrides(text_data, tmp_path) + ["trainer.max_epochs=3", "optimizer.lr=0.01",
                                                                "callbacks.model_checkpoint=null"],
                         output_dir=str(tmp_path / "run"))
    pl.seed_everything(cfg.seed)  # as train() does: what the net learns must not depend on the tests run before
    datamodule, module, trainer = build(cfg)
    trainer.fit(module, datamodule=datamodule)
    sentences = ["the movie topic1 was very good", "TOPIC0 , and the plot", "an unseen zebra topic1", "topic0"]
    module.eval()
    with torch.no_grad():
        in_process = [datamodule.classes[i] for i in module.scores(*datamodule.encode(sentences)).argmax(1).tolist()]
    script = ("import json, sys; from lightlab.run.predict import predict_texts; "
              "print(json.dumps(predict_texts(sys.argv[1], json.loads(sys.argv[2]))))")
    # A fresh process whose data folder and cache are gone: the checkpoint alone must do.
    for path in sorted(text_data.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "run" / "checkpoints" / "last.ckpt"),
                             json.dumps(sentences)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == in_process
    assert in_process[0] == in_process[2] == "positive" and in_process[1] == in_process[3] == "negative"


@pytest.mark.data
@pytest.mark.parametrize("experiment,folder,minimum", [
    ("sst2_bilstm_attention", "sst2", 0.84), ("trec_lstm", "trec", 0.88), ("mr_gru", "mr", 0.75),
    ("sms_spam_lstm", "sms_spam", 0.97)])
@pytest.mark.runs
def test_text_experiment_on_real_data(experiment, folder, minimum, tmp_path):
    data = require_real_data(folder, inside="")
    result = run_cli(f"experiment={experiment}", "run_name=real", f"paths.data_dir={data}", f"paths.log_dir={tmp_path}",
                     f"paths.cache_dir={tmp_path / 'cache'}", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / experiment / "real" / "metrics.json").read_text())["metrics"]
    assert metrics["test/acc"] >= minimum
