"""Text classification: AG News, SST-2, TREC, MR, SMS spam, or a user's own CSV/TSV, as padded token ids.

Each dataset is read in its published format (datamodules/text_formats.py), split, tokenised, and given a
vocabulary built from the training split alone. The result (ids, lengths, labels per split, and the
vocabulary) is cached once per dataset and settings in `cache_dir`, never in the data folder, so later runs
start in a fraction of a second. The vocabulary and class names also travel in every checkpoint
(`state_dict`), so a network restored in a fresh process reads new text with the ids it was trained on.

Splits: a dataset's own test split when it has one (SST-2's is unlabelled, so its dev set is the test split);
otherwise `test_size` texts held out by `split_seed`. Validation is always `val_size` texts held out of the
training split by `split_seed`.
"""
import hashlib
import json
import logging
import os
from pathlib import Path

import pytorch_lightning as pl
import torch

from datamodules import text_formats
from datamodules.download import download_file
from datamodules.new_inputs import read_texts
from datamodules.sequence_batches import SequenceBatches
from datamodules.tensor_batches import batches_done_this_epoch, check_batch_sizes, process_shard, transfer_unless_there
from datamodules.vocabulary import TOKENIZERS, Vocabulary, padded_ids, tokenize
from lightlab.base.errors import UserError

CACHE_FORMAT = 1  # bump when the cached content changes meaning
log = logging.getLogger(__name__)


class TextClassificationDataModule(pl.LightningDataModule):
    # dataset -> its folder in data_dir and files per split (a tuple: the first that exists is read)
    DATASETS = {
        "ag_news": {"train": ("ag_news/train.csv", "ag_news/train.csv.gz"),
                    "test": ("ag_news/test.csv", "ag_news/test.csv.gz")},
        "sst2": {"train": ("sst2/train.tsv",), "test": ("sst2/dev.tsv",)},
        "trec": {"train": ("trec/train_5500.label",), "test": ("trec/TREC_10.label",)},
        "mr": {"train": ("mr/rt-polarity.pos",), "negative": ("mr/rt-polarity.neg",)},
        "sms_spam": {"train": ("sms_spam/SMSSpamCollection",)},
    }
    # AG News is the one text set with a standard download: the CSVs with the md5s torchtext also checks.
    AG_NEWS_MD5 = {"train.csv": "b1a00f826fdfbd249f79597b59e1dc12", "test.csv": "d52ea96a97a2d943681189a97654912d"}

    # No defaults where conf/data's text options differ (batch and split sizes, length, downloads): conf/ is their
    # one source.
    def __init__(self, dataset: str, data_dir: str, cache_dir: str, *, batch_size: int, val_size: int,
                 max_length: int, table: dict | None, download: bool, mirrors: list[str] | None,
                 eval_batch_size: int = 512, test_size: int = 1000, split_seed: int = 0, shuffle_seed: int = 0,
                 tokenizer: str = "basic", lowercase: bool = True, min_frequency: int = 1,
                 max_vocabulary_size: int | None = None, bucketing: bool = True, pool_batches: int = 50,
                 drop_last: bool = False, labels: str = "coarse", bad_rows: str = "error"):
        super().__init__()
        check_batch_sizes(batch_size, eval_batch_size)
        self.save_hyperparameters()
        if dataset not in self.DATASETS and dataset != "table":
            raise UserError(f"data.dataset={dataset!r} is not one of {', '.join([*self.DATASETS, 'table'])}.")
        if tokenizer not in TOKENIZERS:
            raise UserError(f"data.tokenizer={tokenizer!r}: choose one of {', '.join(TOKENIZERS)}.")
        if dataset == "table" and not (table or {}).get("train_file"):
            raise UserError("data.dataset=table needs data.table.train_file (and text_columns, label_column); "
                            "see conf/data/text_table.yaml.")
        self.root = Path(data_dir).expanduser()
        self.vocabulary: Vocabulary | None = None
        self.classes: list[str] = []
        self.predict_input: str | None = None  # mode=predict: a .txt file (or folder of them) of new texts
        self.prediction_ids: list[str] = []  # what predict_dataloader's samples are, in its order
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    # --- reading and caching -------------------------------------------------------------------------------
    def _files(self) -> dict[str, Path]:
        settings = self.hparams
        if settings.dataset == "table":
            files = {"train": settings.table["train_file"], "test": settings.table.get("test_file")}
            return {split: self.root / name for split, name in files.items() if name}
        found, missing = {}, []
        for split, candidates in self.DATASETS[settings.dataset].items():
            path = next((self.root / c for c in candidates if (self.root / c).is_file()), None)
            if path is None:
                missing.append(candidates[0])
            found[split] = path
        if missing and settings.dataset == "ag_news" and settings.download:
            for name in missing:
                self._download_ag_news(Path(name).name)
            return self._files()
        if missing:
            raise UserError(f"{settings.dataset}: {', '.join(missing)} not found in {self.root.resolve()}. Point "
                            f"paths.data_dir (environment variable DATA_DIR) at the folder that holds "
                            f"{Path(missing[0]).parent}/ with the dataset's published files.")
        return found

    def _download_ag_news(self, filename: str) -> None:
        mirrors = self.hparams.mirrors or []
        destination = self.root / "ag_news" / filename
        try:
            download_file(mirrors, filename, self.AG_NEWS_MD5[filename], destination)
        except UserError as error:
            raise UserError(f"ag_news/{filename} not found in {self.root.resolve()}, and downloading it failed "
                            f"({error}). Put the published train.csv and test.csv in {self.root / 'ag_news'} or "
                            f"point paths.data_dir (DATA_DIR) at a folder that has them.") from None

    def _read(self, split: str, files: dict[str, Path]) -> text_formats.TextTable:
        settings, path = self.hparams, files[split]
        if settings.dataset == "ag_news":
            return text_formats.read_ag_news(path, settings.bad_rows)
        if settings.dataset == "sst2":
            return text_formats.read_sst2(path, settings.bad_rows)
        if settings.dataset == "trec":
            classes = self.classes if split == "test" and settings.labels == "fine" else None
            return text_formats.read_trec(path, settings.labels, classes, settings.bad_rows)
        if settings.dataset == "mr":
            return text_formats.read_mr(path, files["negative"], settings.bad_rows)
        if settings.dataset == "sms_spam":
            return text_formats.read_sms_spam(path, settings.bad_rows)
        table = {k: v for k, v in settings.table.items() if k not in ("train_file", "test_file")}
        return text_formats.read_table(path, **table, classes=self.classes if split == "test" else None,
                                       bad_rows=settings.bad_rows)

    def _cache_path(self, files: dict[str, Path]) -> Path:
        """One cache file per (dataset files as they are now, every setting that changes the ids)."""
        settings = {k: v for k, v in self.hparams.items()
                    if k not in ("batch_size", "eval_batch_size", "shuffle_seed", "bucketing", "pool_batches",
                                 "drop_last", "data_dir", "cache_dir", "download", "mirrors")}
        stats = {split: [str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns]
                 for split, path in sorted(files.items())}
        key = json.dumps([CACHE_FORMAT, settings, stats], sort_keys=True, default=str)
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return Path(self.hparams.cache_dir).expanduser() / "text" / f"{self.hparams.dataset}-{digest}.pt"

    def prepare(self) -> None:
        """Read (or load from the cache) every split, the vocabulary and the class names; idempotent."""
        if self.splits:
            return
        files = self._files()
        cache = self._cache_path(files)
        if cache.is_file():
            try:
                saved = torch.load(cache, weights_only=True)
            except Exception:  # an unreadable cache is rebuilt, never trusted
                saved = None
            if saved and saved.get("format") == CACHE_FORMAT:
                self.vocabulary, self.classes = Vocabulary(saved["vocabulary"]), saved["classes"]
                self.splits = {name: tuple(tensors) for name, tensors in saved["splits"].items()}
                self._report_skipped(saved["skipped"])
                return
        self._build_splits(files)
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_name(f"{cache.name}.{os.getpid()}.part")  # renamed when whole: never half a cache
        torch.save({"format": CACHE_FORMAT, "vocabulary": self.vocabulary.tokens, "classes": self.classes,
                    "splits": {name: list(tensors) for name, tensors in self.splits.items()},
                    "skipped": self.skipped}, partial)
        os.replace(partial, cache)
        self._report_skipped(self.skipped)

    def _report_skipped(self, skipped: list[str]) -> None:
        if skipped:
            log.warning(f"{self.hparams.dataset}: skipped {len(skipped)} malformed rows (data.bad_rows=skip), "
                        f"e.g. {skipped[0]}")

    def _build_splits(self, files: dict[str, Path]) -> None:
        settings = self.hparams
        train = self._read("train", files)
        self.classes = train.classes
        texts, labels = train.texts, train.labels
        generator = torch.Generator().manual_seed(settings.split_seed)
        order = torch.randperm(len(texts), generator=generator).tolist()
        held_out, self.skipped = {}, list(train.skipped)
        if "test" in files:
            test = self._read("test", files)
            held_out["test"] = (test.texts, test.labels)
            self.skipped += test.skipped
        else:  # no test split of its own: hold one out first, the same texts whatever val_size is
            if not 0 < settings.test_size < len(texts) - 1:
                raise UserError(f"data.test_size={settings.test_size} must be between 1 and {len(texts) - 2} "
                                f"({settings.dataset} has {len(texts)} texts and no test split of its own).")
            held_out["test"] = ([texts[i] for i in order[:settings.test_size]],
                                [labels[i] for i in order[:settings.test_size]])
            order = order[settings.test_size:]
        if not 0 < settings.val_size < len(order):
            raise UserError(f"data.val_size={settings.val_size} must be between 1 and {len(order) - 1} "
                            f"(the training texts left after the split keep at least one to train on). Set "
                            f"data.val_size to a smaller number (a tenth of them is usual).")
        held_out["validate"] = ([texts[i] for i in order[:settings.val_size]],
                                [labels[i] for i in order[:settings.val_size]])
        fit = ([texts[i] for i in order[settings.val_size:]], [labels[i] for i in order[settings.val_size:]])
        tokenized = {"fit": [tokenize(t, settings.tokenizer, settings.lowercase) for t in fit[0]]}
        self.vocabulary = Vocabulary.build(tokenized["fit"], settings.min_frequency, settings.max_vocabulary_size)
        for name, (split_texts, split_labels) in {"fit": fit, **held_out}.items():
            tokens = tokenized.get(name) or [tokenize(t, settings.tokenizer, settings.lowercase) for t in split_texts]
            ids, lengths = padded_ids(tokens, self.vocabulary, settings.max_length)
            self.splits[name] = (ids, lengths, torch.tensor(split_labels, dtype=torch.int64))

    # --- what the rest of the framework asks of a DataModule -----------------------------------------------
    def prepare_data(self) -> None:
        self._files()  # downloads happen once, on the main process

    transfer_batch_to_device = transfer_unless_there

    def network_inputs(self) -> dict:
        """What a network is built from: reading the data (or its cache) is needed for the vocabulary's size."""
        self.prepare()
        return {"input_shape": [self.hparams.max_length], "num_classes": len(self.classes),
                "vocabulary_size": len(self.vocabulary)}

    def setup(self, stage: str) -> None:
        self.prepare()

    def _batches(self, split: str, batch_size: int, shuffle: bool, bucketing: bool) -> SequenceBatches:
        return SequenceBatches(self.splits[split], batch_size, shuffle, seed=self.hparams.shuffle_seed,
                               bucketing=bucketing, pool_batches=self.hparams.pool_batches,
                               drop_last=self.hparams.drop_last and shuffle, shard=process_shard(self))

    def train_dataloader(self) -> SequenceBatches:
        loader = self._batches("fit", self.hparams.batch_size, True, self.hparams.bucketing)
        loader.batches_done = batches_done_this_epoch(self)
        return loader

    def val_dataloader(self) -> SequenceBatches:
        return self._batches("validate", self.hparams.eval_batch_size, False, self.hparams.bucketing)

    def test_dataloader(self) -> SequenceBatches:
        return self._batches("test", self.hparams.eval_batch_size, False, self.hparams.bucketing)

    def predict_dataloader(self) -> SequenceBatches:
        """mode=predict: the test split, or the lines of `predict_input`, in their order (no bucketing)."""
        if self.predict_input is None:
            ids, lengths, labels = self.splits["test"]
            self.prediction_ids = [str(i) for i in range(len(labels))]
        else:  # encoded here, not in setup: a checkpoint's vocabulary is restored after setup; labels -1: unknown
            texts, self.prediction_ids = read_texts(self.predict_input)
            (ids, lengths), labels = self.encode(texts), torch.full((len(texts),), -1)
        return SequenceBatches((ids, lengths, labels), self.hparams.eval_batch_size, shuffle=False, bucketing=False)

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """New raw texts as (ids, lengths), with this data's tokenizer and vocabulary."""
        settings = self.hparams
        return padded_ids([tokenize(t, settings.tokenizer, settings.lowercase) for t in texts], self.vocabulary,
                          settings.max_length)

    # In every checkpoint: what turns raw text into the ids the network was trained on.
    def state_dict(self) -> dict:
        return {"vocabulary": self.vocabulary.tokens if self.vocabulary else [], "classes": self.classes}

    def load_state_dict(self, state_dict: dict) -> None:
        saved = Vocabulary(state_dict["vocabulary"])
        if self.vocabulary is not None and self.vocabulary.tokens != saved.tokens:
            raise UserError(f"the checkpoint's vocabulary ({len(saved)} tokens) differs from the one built from "
                            f"{self.hparams.dataset}'s training files now ({len(self.vocabulary)} tokens): the files "
                            f"or the data settings changed since it was saved. Resume with the same data.")
        self.vocabulary, self.classes = saved, state_dict["classes"]
