"""The results store: run ids, atomic writes, JSON without NaN, unreadable records moved aside,
the DataFrame view (nested configs flattened), bad input."""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from igrlib.io import results
from igrlib.config import ConfigError

CONFIG = {"learning_rate": 0.1, "width": 50, "seed": 0, "model": "mlp", "thresholds": [1.0, 0.99]}


@pytest.fixture
def store(tmp_path) -> results.Store:
    return results.Store("unit", "smoke", root=tmp_path)


def _strict_json(text: str):
    """Parse JSON refusing NaN/Infinity, which are not JSON."""
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


# ------------------------------------------------------------------------------------- run ids


def test_run_id_is_the_sha256_of_the_canonical_json():
    text = json.dumps(CONFIG, sort_keys=True, separators=(",", ":"))
    assert results.canonical(CONFIG) == text
    assert results.run_id(CONFIG) == hashlib.sha256(text.encode()).hexdigest()[:16]
    # a literal pins the id across versions: a change would orphan every stored record
    assert results.run_id({"a": 1}) == hashlib.sha256(b'{"a":1}').hexdigest()[:16]


def test_run_id_ignores_key_order_and_python_vs_numpy_types():
    reordered = dict(reversed(list(CONFIG.items())))
    assert list(reordered) != list(CONFIG)
    assert results.run_id(reordered) == results.run_id(CONFIG)
    nested = {"outer": {"b": 2, "a": 1}, "x": 0}
    assert results.run_id(nested) == results.run_id({"x": 0, "outer": {"a": 1, "b": 2}})
    as_numpy = {**CONFIG, "learning_rate": np.float64(0.1), "width": np.int64(50),
                "thresholds": (1.0, 0.99)}
    assert results.run_id(as_numpy) == results.run_id(CONFIG)


def test_run_id_changes_with_any_value():
    ids = {results.run_id({**CONFIG, key: change}) for key, change in
           [("learning_rate", 0.2), ("width", 51), ("seed", 1), ("model", "resnet18")]}
    assert len(ids) == 4 and results.run_id(CONFIG) not in ids


# ------------------------------------------------------------------------------ put, get, done


def test_put_then_get_round_trips_with_provenance(store, tmp_path):
    path = store.put(CONFIG, status="ok", metrics={"test_acc": 0.97}, history={"loss": [2.3, 0.1]},
                     extra={"note": "x"}, wall_time_s=1.5)
    assert path == store.path / f"{results.run_id(CONFIG)}.json"
    assert store.path == tmp_path / "smoke" / "unit"
    rec = store.get(CONFIG)
    assert rec["id"] == results.run_id(CONFIG) and rec["experiment"] == "unit"
    assert rec["config"] == CONFIG and rec["status"] == "ok" and rec["status_step"] is None
    assert rec["metrics"] == {"test_acc": 0.97} and rec["history"] == {"loss": [2.3, 0.1]}
    assert rec["extra"] == {"note": "x"} and rec["error"] is None
    prov = rec["provenance"]
    assert prov["wall_time_s"] == 1.5
    assert {"git_commit", "packages", "python", "device", "date"} <= set(prov)
    assert prov["packages"]["jax"] and prov["device"]["platform"]


def test_done_only_for_final_statuses(store):
    assert store.get(CONFIG) is None and not store.done(CONFIG)
    store.put(CONFIG, status="failed", error="RuntimeError: boom")
    assert not store.done(CONFIG)  # failed runs are retried
    for status in ("ok", "diverged", "collapsed"):
        store.put(CONFIG, status=status, status_step=7)
        assert store.done(CONFIG)
        assert store.get(CONFIG)["status_step"] == 7


@pytest.mark.parametrize("bad", ["OK", "crashed", "", None])
def test_bad_status_is_config_error_and_writes_nothing(store, bad):
    with pytest.raises(ConfigError, match="status"):
        store.put(CONFIG, status=bad)
    assert not store.path.exists() or not any(store.path.iterdir())


@pytest.mark.parametrize("name", ["", "a/b", "../up", "with space"])
def test_bad_experiment_name_is_config_error(tmp_path, name):
    with pytest.raises(ConfigError, match="experiment"):
        results.Store(name, "smoke", root=tmp_path)


def test_unknown_profile_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="profile"):
        results.Store("unit", "laptop", root=tmp_path)


def test_default_root_is_the_results_dir_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("IGR_RESULTS_DIR", str(tmp_path / "elsewhere"))
    assert results.Store("unit", "cpu").path == (tmp_path / "elsewhere" / "cpu" / "unit").resolve()


# ------------------------------------------------------------------------------- NaN, atomic


def test_nan_and_inf_are_stored_as_null(store):
    metrics = {"a": float("nan"), "b": np.float32("inf"), "c": [1.0, float("-inf")],
               "d": np.asarray([np.nan, 2.0]), "e": np.int64(3)}
    path = store.put(CONFIG, status="diverged", metrics=metrics, history={"loss": [1.0, math.nan]},
                     status_step=12)
    rec = _strict_json(path.read_text())
    assert rec["metrics"] == {"a": None, "b": None, "c": [1.0, None], "d": [None, 2.0], "e": 3}
    assert rec["history"] == {"loss": [1.0, None]}


def test_numpy_and_jax_scalars_anywhere_in_a_record_are_stored_as_json(store):
    """Experiments hand over numpy/JAX values (a status step from ``np.argmax``, a metric from a
    jitted function, a NaN wall time): every field must come out as standard JSON."""
    path = store.put(CONFIG, status="diverged", status_step=np.int64(3),
                     metrics={"acc": jnp.float32(0.5), "curve": jnp.asarray([1.0, jnp.nan])},
                     wall_time_s=float("nan"))
    rec = _strict_json(path.read_text())
    assert rec["status_step"] == 3
    assert rec["metrics"] == {"acc": 0.5, "curve": [1.0, None]}
    assert rec["provenance"]["wall_time_s"] is None


def test_a_crash_before_the_rename_leaves_the_old_record_and_no_temp_file(store, monkeypatch):
    store.put(CONFIG, status="failed", error="first try")
    before = store.file(CONFIG).read_text()

    def crash(src, dst):
        raise KeyboardInterrupt("killed between write and rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        store.put(CONFIG, status="ok", metrics={"test_acc": 0.9})
    assert store.file(CONFIG).read_text() == before
    assert sorted(p.name for p in store.path.iterdir()) == [store.file(CONFIG).name]


def test_the_record_appears_only_once_complete(store, monkeypatch):
    """While the bytes are written and synced, the record's path holds the previous version."""
    store.put(CONFIG, status="failed", error="first try")
    seen = []
    real_fsync = os.fsync

    def watching_fsync(fd):
        seen.append(_strict_json(store.file(CONFIG).read_text())["status"])
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", watching_fsync)
    store.put(CONFIG, status="ok", metrics={"test_acc": 0.9})
    assert seen == ["failed"]
    assert store.get(CONFIG)["status"] == "ok"


def test_records_skip_leftover_temporary_files(store):
    store.put(CONFIG, status="ok", metrics={"test_acc": 0.9})
    # what a SIGKILL between mkstemp and os.replace leaves behind: a truncated temp file
    (store.path / ".tmp-abc123.json").write_text('{"id": "trunc')
    recs = list(store.records())
    assert [r["id"] for r in recs] == [results.run_id(CONFIG)]


# ----------------------------------------------------------------------------------- frame()


def test_frame_has_one_row_per_record_and_the_documented_columns(store):
    other = {**CONFIG, "seed": 1}
    store.put(CONFIG, status="ok", metrics={"test_acc": 0.97, "seed": 123.0},
              history={"test_acc": [0.1, 0.97]}, extra={"k": 1}, wall_time_s=2.0)
    store.put(other, status="diverged", status_step=40, metrics={"test_acc": float("nan")})
    df = store.frame()
    assert len(df) == 2
    expected = {"id", "status", "status_step", "error", "history", "extra", "wall_time_s",
                "provenance", "test_acc", "metric_seed", *CONFIG}
    assert set(df.columns) == expected
    row = df.set_index("id").loc[results.run_id(CONFIG)]
    assert row["status"] == "ok" and row["test_acc"] == 0.97 and row["seed"] == 0
    assert row["metric_seed"] == 123.0  # a metric never overwrites a config field
    assert row["history"] == {"test_acc": [0.1, 0.97]} and row["wall_time_s"] == 2.0
    bad = df.set_index("id").loc[results.run_id(other)]
    assert bad["status"] == "diverged" and bad["status_step"] == 40 and np.isnan(bad["test_acc"])


def test_frame_of_an_empty_store_is_empty(store):
    assert store.frame().empty
    assert list(store.records()) == []


def test_no_pickles_anywhere(store):
    store.put(CONFIG, status="ok", metrics={"test_acc": 0.9})
    files = list(Path(store.path).rglob("*"))
    assert files and all(f.suffix == ".json" for f in files)


def test_nested_sections_flatten_recursively_and_colliding_keys_get_their_section(store):
    nested = {"train": {"method": "egr", "seed": 3, "hparams": {"mu": 0.02, "lr": 0.1}},
              "measure": {"seed": 9, "sigmas": [0.0, 0.1]}, "seed": 1, "empty": {}}
    store.put(nested, status="ok", metrics={"mu": 5.0})
    row = store.frame().iloc[0]
    assert row["method"] == "egr" and row["lr"] == 0.1 and row["sigmas"] == [0.0, 0.1]
    assert row["mu"] == 0.02 and row["metric_mu"] == 5.0
    # a top-level key keeps its name; nested ones that collide take their section's name
    assert (row["seed"], row["train_seed"], row["measure_seed"]) == (1, 3, 9)
    assert row["empty"] == {}
    assert not {"train", "measure", "hparams"} & set(store.frame().columns)


def test_column_names_prefix_until_unique():
    paths = [("a", "x", "mu"), ("b", "x", "mu"), ("b", "nu"), ("nu",)]
    assert results.column_names(paths) == {("a", "x", "mu"): "a_x_mu", ("b", "x", "mu"): "b_x_mu",
                                           ("b", "nu"): "b_nu", ("nu",): "nu"}


def test_put_notes_the_group_the_run_was_trained_in(store):
    ids = [results.run_id(CONFIG), results.run_id({**CONFIG, "seed": 1})]
    store.put(CONFIG, status="ok", group=ids)
    assert store.get(CONFIG)["group"] == ids
    store.put(CONFIG, status="ok")
    assert store.get(CONFIG)["group"] is None


def test_device_false_leaves_jax_alone(store):
    store.put(CONFIG, status="failed", error="the job died", device=False)
    prov = store.get(CONFIG)["provenance"]
    assert prov["device"] is None and "git_commit" not in prov and prov["date"]


@pytest.mark.parametrize("damage", [
    b'{"id": "abc", "config": {"learning_r',                 # truncated: a full disk
    b"\xff\xfe not text",                                    # not UTF-8
    b'["a list"]',                                            # JSON, not a record
    b'{"id": "x", "config": {}, "status": "finished"}',       # a manual edit: unknown status
])
def test_an_unreadable_record_is_moved_aside_and_its_run_counts_as_missing(store, damage):
    other = {**CONFIG, "seed": 1}
    store.put(CONFIG, status="ok", metrics={"test_acc": 0.9})
    store.put(other, status="ok", metrics={"test_acc": 0.8})
    store.file(CONFIG).write_bytes(damage)
    with pytest.warns(RuntimeWarning, match=store.file(CONFIG).name) as caught:
        df = store.frame()
    assert len(caught) == 1 and "moved to" in str(caught[0].message)
    assert list(df["id"]) == [results.run_id(other)]  # the rest of the store still reads
    (kept,) = (store.path / "corrupt").iterdir()
    assert kept.name.startswith(store.file(CONFIG).name + ".") and kept.read_bytes() == damage
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once: the file is gone, nothing warns again
        assert store.get(CONFIG) is None and not store.done(CONFIG)
        assert len(store.frame()) == 1
    store.put(CONFIG, status="ok", metrics={"test_acc": 0.9})  # the next sweep redoes the run
    assert store.done(CONFIG)
