"""The `imagery` CLI as a script user sees it: outputs, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from evolve.export import read_metadata, rerender
from spark_runtime.store import RatingInput, Store
from tests.conftest import free_port
from ui.cli import main


def imagery(capsys, store: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--store", str(store), *args])
    out, err = capsys.readouterr()
    return code, out.strip(), err.strip()


@pytest.fixture()
def run(tmp_path: Path, capsys) -> Path:
    code, out, _ = imagery(
        capsys,
        tmp_path,
        "new",
        "--generator",
        "cppn",
        "--population",
        "6",
        "--size",
        "32",
        "--seed",
        "1",
        "--name",
        "demo",
    )
    assert code == 0 and len(out) == 12
    return tmp_path


def counts(store_dir: Path) -> tuple[int, ...]:
    with Store(store_dir) as store:
        runs = store.list_runs()
        snapshots = sum(
            len(store.history(b))
            for r in runs
            for b in store.list_branches(r.id)
            if b.head_snapshot_id
        )
        ratings = sum(
            len(store.ratings(s.id))
            for r in runs
            for b in store.list_branches(r.id)
            if b.head_snapshot_id
            for s in store.history(b)
        )
        branches = sum(len(store.list_branches(r.id)) for r in runs)
        objects = sum(1 for _ in store.objects.iter_objects())
        return len(runs), branches, snapshots, ratings, objects


def test_rate_evolve_fork_status_export_gc(run: Path, capsys, tmp_path: Path) -> None:
    assert imagery(capsys, run, "rate", "demo", "3=5", "1=4")[0] == 0
    assert imagery(capsys, run, "evolve", "demo")[1].endswith("generation 1")
    code, out, _ = imagery(capsys, run, "run", "demo", "--generations", "2", "--fitness", "novelty")
    assert code == 0 and out.endswith("generation 3")
    assert imagery(capsys, run, "fork", "demo@1", "--name", "alt")[0] == 0
    assert imagery(capsys, run, "evolve", "demo:alt")[1].endswith("generation 2")

    code, out, _ = imagery(capsys, run, "status", "demo", "--json")
    status = json.loads(out)
    branches = {b["name"]: b for b in status["branches"]}
    assert branches["main"]["generations"] == 4 and branches["alt"]["forked_from"] == 1
    assert branches["main"]["ratings"] == 2 + 2 * 6

    out_dir = tmp_path / "export"
    assert imagery(capsys, run, "export", "demo:alt@2", str(out_dir))[0] == 0
    pngs = sorted(out_dir.glob("*.png"))
    assert len(pngs) == 6
    meta = read_metadata(pngs[0])
    assert meta["generation"] == 2 and meta["branch"] == "alt" and meta["run"]["name"] == "demo"
    assert any(read_metadata(p)["lineage"] for p in pngs)  # bred children carry their ancestry
    with Image.open(pngs[0]) as exported:
        assert rerender(pngs[0]).tobytes() == exported.convert("RGB").tobytes()

    code, out, _ = imagery(capsys, run, "gc")
    assert code == 0 and out.startswith("removed 0 object(s)")


def test_gc_removes_what_no_branch_reaches(run: Path, capsys) -> None:
    imagery(capsys, run, "evolve", "demo")
    imagery(capsys, run, "undo", "demo")
    imagery(capsys, run, "rate", "demo", "5=5", "4=5")
    imagery(capsys, run, "evolve", "demo")  # a different generation 1; the old one is unreachable
    code, out, _ = imagery(capsys, run, "gc")
    assert code == 0 and not out.startswith("removed 0 ")


@pytest.mark.parametrize(
    "args, message",
    [
        (["rate", "nope", "1=5"], "unknown run 'nope'"),
        (["rate", "demo", "3=9"], "out of range 0..5"),
        (["rate", "demo", "3:5"], "malformed rating"),
        (["rate", "demo", "3=five"], "malformed score"),
        (["rate", "demo", "42=1"], "does not exist"),
        (["fork", "demo@7", "--name", "x"], "out of range"),
        (["fork", "demo@x", "--name", "x"], "bad generation"),
        (["export", "demo@3", "out"], "out of range"),
        (
            ["run", "demo", "--generations", "1", "--fitness", "target:/no/such.png"],
            "cannot read target image",
        ),
        (["run", "demo", "--generations", "1", "--fitness", "beauty"], "unknown fitness"),
        (["new", "--size", "0", "--name", "a"], "image size"),
        (["new", "--size", "100000", "--name", "b"], "image size"),
        (["new", "--population", "0", "--name", "c"], "population"),
        (["new", "--name", "demo"], "already exists"),
        (["new", "--generator", "gan", "--name", "d"], "unknown generator"),
        (["evolve", "demo", "--strength", "3"], "0..1"),
        (["evolve", "demo@0"], "evolve works from the branch head"),
        (["undo", "demo:main@0"], "undo works from the branch head"),
        (["run", "demo@0", "--generations", "1"], "a batch run works from the branch head"),
        (["export", "demo@0", "/dev/null"], "it is a file, not a folder"),
        (["evolve", "demo", "--lock", "wings"], "cannot lock"),
        (["fork", "demo@0", "--name", "main"], "already exists"),
        (["new", "--init-from", "demo@0", "--name", "x"], "cannot start from images"),
        (
            [
                "new",
                "--generator",
                "diffusion",
                "--model",
                "tiny",
                "--init-image",
                "/no/such.png",
                "--name",
                "y",
            ],
            "cannot read seed image",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(run: Path, capsys, args, message) -> None:
    before = counts(run)
    code, _, err = imagery(capsys, run, *args)
    assert code == 2
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert counts(run) == before


def test_unreadable_target_image(run: Path, capsys, tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    code, _, err = imagery(
        capsys, run, "run", "demo", "--generations", "1", "--fitness", f"target:{bad}"
    )
    assert code == 2 and "not a readable image" in err


def test_target_fitness_run_gets_closer(run: Path, capsys, tmp_path: Path) -> None:
    target = tmp_path / "t.png"
    Image.new("RGB", (32, 32), (250, 40, 40)).save(target)
    code, out, _ = imagery(
        capsys, run, "run", "demo", "--generations", "4", "--fitness", f"target:{target}"
    )
    assert code == 0
    with Store(run) as store:
        history = store.history(store.get_branch("demo"))
        best = [max(store.current_scores(s.id).values()) for s in history[:-1]]
    assert best[-1] > best[0]


def test_argument_errors_are_one_line(capsys, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--store", str(tmp_path), "new", "--population", "many"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "whole number" in err


def test_diffusion_run_starts_from_a_cppn_generation(run: Path, capsys) -> None:
    """The hybrid: evolved CPPN shapes seed img2img diffusion genomes."""
    assert imagery(capsys, run, "rate", "demo", "2=5")[0] == 0
    with Store(run) as store:
        store.add_ratings(
            store.get_branch("demo").head_snapshot_id,
            [RatingInput(kind="pick", position=2)],
            session="cli",
        )
    code, _, err = imagery(
        capsys,
        run,
        "new",
        "--generator",
        "diffusion",
        "--model",
        "tiny",
        "--prompt",
        "a glass sculpture",
        "--init-from",
        "demo@0",
        "--population",
        "2",
        "--size",
        "32",
        "--name",
        "sculpt",
    )
    assert code == 0, err
    with Store(run) as store:
        genomes = store.genomes(store.snapshot_at(store.get_branch("sculpt"), 0))
    assert all("strength" in g and "init_image" in g["tensors"] for g in genomes)


def test_ui_with_a_bad_database_says_so_before_starting_any_spark(tmp_path: Path, capsys, monkeypatch) -> None:
    import ui.app

    started = []
    monkeypatch.setattr(ui.app, "SessionSparks", lambda *a, **k: started.append(a))  # Ray would start here
    code, _, err = imagery(capsys, tmp_path, "--db", "bogus://x", "ui", "--sparks", "ray", "--port", str(free_port()))
    assert code == 2 and started == []
    assert err.strip() == "imagery: error: unsupported database 'bogus': use sqlite or postgresql"


def test_objects_behind_a_url_and_a_store_that_is_not_a_folder(tmp_path: Path, capsys) -> None:
    shared = f"memory://{tmp_path.name}-objects"
    code, run_id, _ = imagery(capsys, tmp_path, "--objects", shared, "new", "--population", "4", "--size", "32", "--name", "far")
    assert code == 0
    code, _, _ = imagery(capsys, tmp_path, "--objects", shared, "export", "far@0", str(tmp_path / "out"))
    assert code == 0 and len(list((tmp_path / "out").glob("*.png"))) == 4
    assert not (tmp_path / "objects").exists()  # the rows are here, the images behind the URL
    with Store(tmp_path, objects_url=shared) as store:
        images = store.history(store.get_branch(run_id))[0].images
        assert len(images) == 4 and all(store.objects.exists(sha) for sha in images)
    with pytest.raises(SystemExit) as exit_info:
        main(["--store", "s3://bucket/store", "status"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "put the objects behind a URL with --objects" in err
    assert not Path("s3:").exists()


def test_rate_names_a_generation_or_the_head(run: Path, capsys) -> None:
    assert imagery(capsys, run, "evolve", "demo")[0] == 0
    code, out, _ = imagery(capsys, run, "rate", "demo@0", "1=2")
    assert code == 0 and out.startswith("stored 1 rating(s) for generation 0 ")
    assert imagery(capsys, run, "rate", "demo", "2=4")[1].startswith("stored 1 rating(s) for generation 1 ")
    with Store(run) as store:
        first, head = store.history(store.get_branch("demo"))
        assert store.current_scores(first.id) == {1: 2.0} and store.current_scores(head.id) == {2: 4.0}


@pytest.mark.parametrize("grace", ["-1", "nan", "inf", "soon"])
def test_gc_grace_must_be_seconds(tmp_path: Path, capsys, grace: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--store", str(tmp_path), "gc", "--grace", grace])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and "seconds" in err[-1] and not (tmp_path / "objects").exists()


def test_ui_spark_idle_sets_when_a_sessions_spark_is_released(tmp_path: Path, capsys, monkeypatch) -> None:
    import ui.app
    from spark_runtime.spark import SparkError

    asked = []

    def sparks(spec, **options):
        asked.append((spec, options))
        raise SparkError("stop here: the options are what this test checks")

    monkeypatch.setattr(ui.app, "SessionSparks", sparks)
    code, _, err = imagery(capsys, tmp_path, "ui", "--sparks", "process:1", "--spark-idle", "5", "--port", str(free_port()))
    assert code == 2 and err == "imagery: error: stop here: the options are what this test checks"
    assert asked == [("process:1", {"idle_timeout_s": 5.0, "reap_interval_s": 2.5})]
    with pytest.raises(SystemExit) as exit_info:
        main(["--store", str(tmp_path), "ui", "--spark-idle", "-1"])
    assert exit_info.value.code == 2 and "seconds" in capsys.readouterr().err


def test_empty_store_variables_mean_the_defaults(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IMAGERY_OBJECTS", "")
    monkeypatch.setenv("IMAGERY_DB", "")
    code, _, _ = imagery(capsys, tmp_path / "st", "new", "--population", "2", "--size", "32", "--name", "e")
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["st"]  # no objects in the working folder
    assert sorted(p.name for p in (tmp_path / "st").iterdir() if not p.name.startswith("imagery.db-")) == ["imagery.db", "objects"]
