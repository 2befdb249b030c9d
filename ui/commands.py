"""What each ``imagery`` subcommand does; ``cli.py`` only parses."""

from __future__ import annotations

import argparse
import re
import uuid
from pathlib import Path
from typing import Any

from evolve.engine import EngineError
from evolve.export import ExportError, export_snapshot, rerender
from evolve.fitness import FitnessError, parse_fitness
from evolve.session import RunSpec, Session, SessionError
from imagery import GeneratorError
from spark_runtime.spark import Spark, SparkError
from spark_runtime.sparks import make_pool, parse_sparks
from spark_runtime.store import Store, StoreError
from spark_runtime.store.engine import default_url, safe_url
from ui.progress import ProgressBar
from ui.refs import RefError, check_name, parse_ref

USER_ERRORS: tuple[type[BaseException], ...] = (
    SessionError,
    StoreError,
    RefError,
    FitnessError,
    GeneratorError,
    EngineError,
    ExportError,
    SparkError,
    FileNotFoundError,
    PermissionError,
)

_RATING = re.compile(r"^(\d+)=(.+)$")


def open_store(args: argparse.Namespace) -> Store:
    return Store(args.store, db_url=args.db, objects_url=args.objects)


def dispatch(args: argparse.Namespace) -> Any:
    handler = _HANDLERS[args.command]
    return handler(args)


def _generator_config(args: argparse.Namespace) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if args.generator == "cppn":
        if args.color:
            config["color"] = args.color
        if args.model or args.prompt:
            raise SessionError("--model and --prompt are for --generator diffusion")
    elif args.generator == "diffusion":
        if not args.model:
            raise SessionError("--generator diffusion needs --model PATH (a local folder, FILE.safetensors, or 'tiny')")
        config["model"] = args.model
        if args.model_config:
            config["model_config"] = args.model_config
        config["prompt"] = args.prompt or ""
        if args.negative:
            config["negative"] = args.negative
    return config


def cmd_new(args: argparse.Namespace) -> str:
    name = check_name("run", args.name) if args.name else f"{args.generator}-{uuid.uuid4().hex[:6]}"
    settings = {"mutation_strength": args.strength} if args.strength is not None else {}
    with open_store(args) as store:
        if args.population < 1:
            raise SessionError(f"population must be at least 1, got {args.population}")
        spec = RunSpec(
            name=name,
            generator=args.generator,
            generator_config=_generator_config(args),
            population=args.population,
            size=args.size,
            seed=args.seed,
            settings=settings,
            init_images=_init_images(store, args),
        )
        session = Session.create(store, spec, progress=ProgressBar("generation 0", args.population))
        return session.run.id


def _init_images(store: Store, args: argparse.Namespace) -> tuple[bytes, ...]:
    """Seed images for an img2img start: files, and/or a generation's picks (else all of it)."""
    images = []
    for path in args.init_image or []:
        try:
            images.append(Path(path).read_bytes())
        except OSError:
            raise SessionError(f"cannot read seed image {path!r}") from None
    if args.init_from:
        source, ref = _session(store, args.init_from)
        snapshot = _snapshot(source, ref)
        picks = sorted(store.current_picks(snapshot.id)) or range(len(snapshot.images))
        images.extend(store.objects.get(snapshot.images[i]) for i in picks)
    return tuple(images)


def _session(store: Store, text: str, spark: Spark | None = None) -> tuple[Session, Any]:
    ref = parse_ref(text)
    session = Session(store, ref.run, ref.branch, spark=spark, session_id="cli")
    return session, ref


def _head_session(store: Store, text: str, what: str, spark: Spark | None = None) -> Session:
    """The session of a ref that names a branch, not a generation: ``what`` works from the
    head (acting on the head when the ref named another generation would be a surprise)."""
    session, ref = _session(store, text, spark)
    if ref.generation is not None:
        raise SessionError(
            f"{what} works from the branch head: name RUN or RUN:BRANCH, not {text!r} "
            f"(fork a branch from generation {ref.generation} to go on from there)"
        )
    return session


def _snapshot(session: Session, ref: Any) -> Any:
    """The generation a ref names on the session's branch, or its head when it names none."""
    return session.store.snapshot_at(session.branch, ref.generation) if ref.generation is not None else session.head()


def cmd_run(args: argparse.Namespace) -> str:
    spec = parse_sparks(args.sparks)
    with open_store(args) as store:
        # A bad ref (an unknown run or branch, a generation) fails before any spark starts.
        run = _head_session(store, args.run, "a batch run").run
        fitness = parse_fitness(args.fitness, preference_loader=_preference_loader(store))
        # The sparks load the generator once, in parallel, and serve every generation.
        with make_pool(spec, run.target, run.generator_config) as pool:
            session = _head_session(store, args.run, "a batch run", spark=pool)
            bar = ProgressBar(f"{session.run.name}:{session.branch.name}", args.generations)
            head = session.run_auto(fitness, args.generations, progress=bar)
        return f"{session.run.name}:{session.branch.name} is at generation {head.generation}"


def _preference_loader(store: Store) -> Any:
    def load(ref: str) -> Any:
        from evolve.agent import PreferenceFitness

        return PreferenceFitness.from_store(store, ref)

    return load


def parse_ratings(items: list[str], n: int) -> dict[int, float | None]:
    scores: dict[int, float | None] = {}
    for item in items:
        match = _RATING.match(item.strip())
        if not match:
            raise SessionError(f"malformed rating {item!r}: use INDEX=SCORE, e.g. 3=5 (or 3=clear)")
        position, value = int(match[1]), match[2]
        if position >= n:
            raise SessionError(f"candidate {position} does not exist: this generation has candidates 0..{n - 1}")
        if value == "clear":
            scores[position] = None
            continue
        try:
            score = float(value)
        except ValueError:
            raise SessionError(f"malformed score in {item!r}: expected a number 0..5 or 'clear'") from None
        if not 0 <= score <= 5:
            raise SessionError(f"score {value} for candidate {position} is out of range 0..5")
        scores[position] = score
    return scores


def cmd_rate(args: argparse.Namespace) -> str:
    with open_store(args) as store:
        session, ref = _session(store, args.run)
        rated = _snapshot(session, ref)  # the head, or the generation the ref names
        scores = parse_ratings(args.ratings, len(rated.population))
        session.rate(scores, snapshot=rated)
        return f"stored {len(scores)} rating(s) for generation {rated.generation} of {session.run.name}:{session.branch.name}"


def cmd_evolve(args: argparse.Namespace) -> str:
    with open_store(args) as store:
        session = _head_session(store, args.run, "evolve")
        settings = session.settings()
        changes: dict[str, Any] = {}
        if args.strength is not None:
            changes["mutation_strength"] = args.strength
        if args.unlock:
            changes["locks"] = []
        if args.lock:
            changes["locks"] = sorted(set(args.lock))
        if changes:
            settings = settings.replace(**changes)
        bar = ProgressBar("rendering", settings.population_size)
        head = session.evolve(settings=settings, progress=bar)
        return f"{session.run.name}:{session.branch.name} is at generation {head.generation}"


def cmd_undo(args: argparse.Namespace) -> str:
    with open_store(args) as store:
        session = _head_session(store, args.run, "undo")
        head = session.undo()
        return f"{session.run.name}:{session.branch.name} is back at generation {head.generation}"


def cmd_fork(args: argparse.Namespace) -> str:
    name = check_name("branch", args.name)
    with open_store(args) as store:
        session, ref = _session(store, args.ref)
        generation = ref.generation if ref.generation is not None else session.head().generation
        forked = session.fork(generation, name)
        return f"branch {forked.branch.name!r} of {session.run.name} starts at generation {generation}"


def _run_status(store: Store, run: Any) -> dict[str, Any]:
    branches = []
    for branch in store.list_branches(run.id):
        info: dict[str, Any] = {"name": branch.name, "generations": 0, "head": None, "ratings": 0, "head_ratings": 0}
        if branch.head_snapshot_id:
            history = store.history(branch)
            ratings = store.ratings_of([s.id for s in history])  # one read, not one a generation
            counts = [len(ratings[s.id]) for s in history]
            info.update(
                generations=len(history),
                head=history[-1].generation,
                ratings=sum(counts),
                head_ratings=counts[-1],
                forked_from=None,
            )
            if branch.forked_from_snapshot_id:
                info["forked_from"] = store.get_snapshot(branch.forked_from_snapshot_id).generation
        branches.append(info)
    return {
        "id": run.id,
        "name": run.name,
        "generator": run.generator,
        "population": run.population_size,
        "size": run.size,
        "seed": run.seed,
        "branches": branches,
    }


def cmd_status(args: argparse.Namespace) -> Any:
    with open_store(args) as store:
        runs = [store.get_run(args.run)] if args.run else store.list_runs()
        data = [_run_status(store, run) for run in runs]
        if args.json:
            return data[0] if args.run else data
        if not data:
            return "no runs yet: start one with 'imagery new --name NAME'"
        lines = []
        for run in data:
            lines.append(f"{run['name']} ({run['id']}): {run['generator']}, population {run['population']}, {run['size']} px, seed {run['seed']}")
            for b in run["branches"]:
                fork = f", forked at generation {b['forked_from']}" if b.get("forked_from") is not None else ""
                lines.append(f"  {b['name']}: {b['generations']} generation(s), head {b['head']}, {b['ratings']} rating event(s) ({b['head_ratings']} on the head; a clear or re-score is one too){fork}")
        return "\n".join(lines)


def cmd_export(args: argparse.Namespace) -> str:
    with open_store(args) as store:
        session, ref = _session(store, args.ref)
        snapshot = _snapshot(session, ref)
        folder = Path(args.dir)
        if folder.exists() and not folder.is_dir():
            raise SessionError(f"cannot export to {args.dir!r}: it is a file, not a folder")
        try:
            paths = export_snapshot(store, session.run, session.branch.name, snapshot, folder)
        except OSError as exc:
            raise SessionError(f"cannot write to {args.dir!r}: {exc.strerror or exc}") from None
        return f"wrote {len(paths)} PNG(s) to {args.dir}"


def cmd_rerender(args: argparse.Namespace) -> str:
    image = rerender(args.png, args.size)
    try:
        image.save(args.out)
    except (OSError, ValueError) as exc:  # ValueError: a file name Pillow knows no format for
        raise SessionError(f"cannot write {args.out!r}: {getattr(exc, 'strerror', None) or exc}") from None
    return f"wrote {args.out} ({image.width}x{image.height})"


def cmd_gc(args: argparse.Namespace) -> str:
    with open_store(args) as store:
        report = store.gc(grace_seconds=args.grace)
        return f"removed {report.objects_removed} object(s), freed {report.bytes_freed} bytes, kept {report.objects_kept}"


def cmd_ui(args: argparse.Namespace) -> None:
    # Imported here: gradio takes seconds to import, and no other command needs it.
    from ui.app import serve

    serve(
        Path(args.store),
        args.db,
        objects_url=args.objects,
        host=args.host,
        port=args.port,
        auth=args.auth,
        auth_file=args.auth_file,
        sparks=args.sparks,
        spark_idle_s=args.spark_idle,
    )


def cmd_db(args: argparse.Namespace) -> str:
    # Imported here: only this command needs Alembic.
    from spark_runtime.store import migrations

    if not args.db:
        Path(args.store).mkdir(parents=True, exist_ok=True)
    url = args.db or default_url(Path(args.store))
    before, after = migrations.upgrade(url)
    if before == after:
        return f"database {safe_url(url)} is up to date (schema revision {after})"
    return f"upgraded database {safe_url(url)} from schema revision {before or 'none'} to {after}"


_HANDLERS = {
    "new": cmd_new,
    "run": cmd_run,
    "rate": cmd_rate,
    "evolve": cmd_evolve,
    "undo": cmd_undo,
    "fork": cmd_fork,
    "status": cmd_status,
    "export": cmd_export,
    "rerender": cmd_rerender,
    "gc": cmd_gc,
    "db": cmd_db,
    "ui": cmd_ui,
}
